import type { Agent } from '../../agents/agent.js';
import { auditEntryFor, type AuditSink } from '../audit/audit-trail.js';
import type { Envelope } from '../envelope.js';
import type { RunEventInput } from '../events.js';
import type { Task, TaskResult } from '../transports/task.js';
import { claimMarker } from './message-ids.js';
import type { AgentLoopOptions } from './options.js';

/** How long a model call or tool may run before the events buffered ahead of it are written on their own. */
const EVENTS_DUE_MS = 20;

/** The run events and audit entries of one activation, buffered and written in order. */
export class ActivationEvents {
  private readonly auditing: Promise<void>[] = [];
  /** Audit entries not yet handed to the log. */
  private readonly unaudited: Array<{ sink: AuditSink; entry: Parameters<AuditSink['append']>[0] }> = [];
  /** Run events not yet written, the batch being written, and what stopped writing them. */
  private readonly events: Array<{ event: RunEventInput; at: number }> = [];
  private eventsWritten: Promise<void> | undefined;
  /** A write of the buffered events set for later, while the activation waits on a model or a tool. */
  private eventsDue: NodeJS.Timeout | undefined;
  private eventFailure: unknown;
  private auditFailure: unknown;

  constructor(
    private readonly options: AgentLoopOptions,
    private readonly task: Task,
    private readonly envelope: Envelope,
    private readonly agent: Agent,
  ) {}

  private get store() {
    return this.options.transport.store;
  }

  /**
   * Records a run event and its audit entry. Neither is awaited here: events of one activation are
   * buffered and go to Redis in order, in one write with each model turn's usage, when a model call or
   * tool is still busy after {@link EVENTS_DUE_MS}, or at the end; audit appends go together (the log
   * batches concurrent appends). The activation writes them all before the run ends and before it
   * returns, and fails if one cannot be.
   */
  emit(event: RunEventInput): void {
    this.audit(event);
    this.events.push({ event: { ...event, agent: this.agent.name } as RunEventInput, at: Date.now() });
  }

  /** Buffers the event's audit entry, when it has one, for the log's next batch. */
  audit(event: RunEventInput): void {
    const e = this.envelope;
    const entry = auditEntryFor(event, { runId: e.runId, principal: e.principal, chain: e.chain, agent: this.agent.name });
    const sink = entry && this.options.audit?.(this.agent.name);
    if (sink) this.unaudited.push({ sink, entry: entry! });
  }

  /**
   * Writes the buffered events and audit entries if the model or tool about to be awaited is still
   * busy after {@link EVENTS_DUE_MS}: followers see a slow step's progress while it runs, and a quick
   * step's events go with the next write instead of in one of their own.
   */
  sendEventsSoon(): void {
    this.eventsDue ??= setTimeout(() => this.sendEvents(), EVENTS_DUE_MS).unref();
  }

  /** Starts writing the buffered events and audit entries without waiting. */
  sendEvents(): void {
    clearTimeout(this.eventsDue);
    this.eventsDue = undefined;
    if (this.events.length > 0 && this.eventFailure === undefined && !this.eventsWritten) {
      // Cleared once settled (never before it is set: a write that fails at once must not leave a settled promise behind).
      const written: Promise<void> = this.writeEvents().finally(() => {
        if (this.eventsWritten === written) this.eventsWritten = undefined;
      });
      this.eventsWritten = written;
    }
    this.sendAudit();
  }

  sendAudit(): void {
    // Appended in one tick, they go to the log as one batch.
    for (const { sink, entry } of this.unaudited.splice(0)) this.auditing.push(sink.append(entry).then(() => undefined, (error: unknown) => void (this.auditFailure ??= error)));
  }

  private async writeEvents(): Promise<void> {
    try {
      while (this.events.length > 0) await this.store.appendEvents(this.envelope.runId, this.events.splice(0));
    } catch (error) {
      this.eventFailure = error;
    }
  }

  /** Records an event and waits until it is written: for what others read at once (a run's last event, a rollback's start). */
  async emitNow(event: RunEventInput): Promise<void> {
    this.emit(event);
    await this.flushEvents();
  }

  /**
   * Waits until every event emitted so far is in the run's stream; throws what kept one out. With
   * `finished`, the last of them go in one write with the mark that the activation's message is done
   * and the result its job returns (sealed: a redelivery believes only a mark this agent made).
   */
  async flushEvents(finished?: TaskResult): Promise<void> {
    if (finished) await this.store.finishMessage(this.envelope.runId, await this.unwritten(), this.envelope.receiver, this.envelope.messageId, claimMarker(this.options.auth, this.envelope, this.task.id, finished));
    this.sendEvents();
    while (this.eventsWritten) await this.eventsWritten;
    if (this.eventFailure !== undefined) throw this.eventFailure;
  }

  /**
   * Takes the buffered events for a write of the caller's own, once any write in progress is done (so
   * events stay in order) and instead of a write set for later; throws what kept an earlier one out.
   */
  async unwritten(): Promise<Array<{ event: RunEventInput; at: number }>> {
    clearTimeout(this.eventsDue);
    this.eventsDue = undefined;
    while (this.eventsWritten) await this.eventsWritten;
    if (this.eventFailure !== undefined) throw this.eventFailure;
    return this.events.splice(0);
  }

  async flushAudit(): Promise<void> {
    this.sendEvents();
    await this.awaitAudit();
  }

  /** Waits for the audit entries handed to the log so far; throws what kept one out. */
  async awaitAudit(): Promise<void> {
    await Promise.all(this.auditing.splice(0));
    if (this.auditFailure !== undefined) throw new Error(`the audit log could not be written: ${this.auditFailure instanceof Error ? this.auditFailure.message : String(this.auditFailure)}`);
  }
}
