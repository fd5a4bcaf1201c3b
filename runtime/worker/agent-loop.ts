import { createHash } from 'node:crypto';
import { z } from 'zod';
import { auditEntryFor, failRun, recordRunEvent } from '../audit/audit-trail.js';
import type { Envelope } from '../envelope.js';
import type { RunEventInput } from '../events.js';
import { startRollback } from '../rollback.js';
import type { Task, TaskOutcome, TaskResult } from '../transports/task.js';
import { Activation } from './activation.js';
import { claimMarker } from './message-ids.js';
import type { AgentLoopOptions } from './options.js';
import { sentForm } from '../identity/envelope-auth.js';
import { byteSize, checkpointLimit, JobDataSchema, SavedSchema, type JobData, type Progress } from './progress.js';

/** Who an envelope that is not authentic is attributed to: no principal, tenant or run it names. */
const UNAUTHENTICATED = 'unauthenticated';

/** Runs one agent activation: model turns, guarded tool calls, handoffs and delegations. */
export class AgentLoop {
  constructor(private readonly options: AgentLoopOptions) {}

  private get store() {
    return this.options.transport.store;
  }

  async handle(task: Task): Promise<TaskOutcome> {
    const compensation = this.options.compensator?.accepts(task);
    if (compensation) return this.options.compensator!.handle(task);
    const admitted = this.admit(task);
    if ('rejected' in admitted) return this.reject(task, admitted.rejected);
    const { data, messageBytes } = admitted;
    const { envelope } = data;
    const refused = this.authenticate(task, data, admitted.sent);
    if (refused) return this.refuse(task, envelope, refused, false);
    const auth = this.options.auth;
    const { claim, run, marker, saved } = await this.store.claimForRun(envelope.runId, envelope.receiver, envelope.messageId, claimMarker(auth, envelope, task.id));
    if (claim === 'replay') return this.refuse(task, envelope, `message ${envelope.messageId} was already accepted: a replay`);
    // A message is taken up again, or answered from its mark, only on a claim this agent made itself.
    const forged = claim === 'new' ? undefined : auth?.checkClaim(envelope.receiver, envelope.messageId, marker!);
    if (forged) return this.refuseForGood(task, envelope, `it is not acted on again: ${forged}`);
    // Finished, but the worker stopped before the queue heard: the same job gets the same result, and nothing runs again.
    if (claim === 'finished') return { type: 'done', result: marker!.result! };
    let stored = saved === undefined ? undefined : this.readSaved(envelope, saved, messageBytes);
    // Taken before (its job or the run store holds progress this agent saved), yet its claim was gone: acting again could repeat it.
    if (claim === 'new' && (data.progress !== undefined || (stored !== undefined && typeof stored !== 'string'))) {
      return this.refuseForGood(task, envelope, 'its saved progress is on record but its claim is gone: it is not acted on again');
    }
    const agent = this.options.agents.get(envelope.receiver)!;
    if (!run) return this.reject(task, `no run ${envelope.runId} exists`);
    if (run.status !== 'running') {
      if (run.status === 'cancelled') await this.rollBackCancelled(envelope);
      const cancelled: TaskResult = { status: 'cancelled', error: `run is ${run.status}` };
      await this.store.completeMessage(envelope.runId, envelope.receiver, envelope.messageId, claimMarker(auth, envelope, task.id, cancelled));
      return { type: 'done', result: cancelled };
    }
    if (typeof stored === 'string') {
      // The job itself is authentic: its run goes on as if nothing had been saved (what deleting the copy would give
      // an attacker anyway), and the refusal is on record.
      await this.recordRefusal(task, envelope, `its saved progress was not believed, so it starts again from the job: ${stored}`);
      stored = undefined;
    }
    const progress = stored && (!data.progress || stored.version > data.progress.version) ? stored : data.progress;
    // Authentic but too old (a long outage): the run cannot go on, and says so. Only an activation that
    // waited (marked so in its authenticated checkpoint) may be resumed for long, counted from its claim:
    // a claim's marker and checkpoint copied while it ran and restored later are refused after that.
    const parked = progress?.parked === true;
    const stale = auth?.staleness(envelope, !parked) ?? (claim === 'redelivery' ? auth?.claimStaleness(marker!, parked) : undefined);
    if (stale) return this.reject(task, stale, true);
    const activation = new Activation(this.options, task, envelope, agent, messageBytes, claim === 'new');
    // The activation marks its message done itself, with its last events.
    return activation.resume(progress);
  }

  /** Progress a worker saved in the run store, or why it cannot be believed. */
  private readSaved(envelope: Envelope, saved: string, messageBytes: number): Progress | string {
    const size = messageBytes + Buffer.byteLength(saved);
    if (size > checkpointLimit(this.options.maxMessageBytes)) return `saved progress of ${size} bytes exceeds the limit of ${checkpointLimit(this.options.maxMessageBytes)}`;
    let raw: unknown;
    try {
      raw = JSON.parse(saved);
    } catch {
      return 'the saved progress is not JSON';
    }
    const parsed = SavedSchema.safeParse(raw);
    if (!parsed.success) return `malformed saved progress: ${parsed.error.issues[0]?.path.join('.') || '(root)'}: ${parsed.error.issues[0]?.message ?? 'invalid'}`;
    const forged = this.options.auth?.checkCheckpoint(envelope.receiver, envelope.messageId, (raw as { progress: unknown }).progress, parsed.data.progressAuth);
    if (forged) return forged;
    const { from } = parsed.data.progress;
    if (from !== undefined && from > envelope.messages.length) return `malformed saved progress: it builds on ${from} messages, the envelope has ${envelope.messages.length}`;
    return parsed.data.progress;
  }

  /** The first worker to see a cancelled run undoes its side effects, when the policy says so. */
  private async rollBackCancelled(envelope: Envelope): Promise<void> {
    if (!this.options.rollbackOn?.has('cancel')) return;
    const ctx = { runId: envelope.runId, principal: envelope.principal, chain: envelope.chain, agent: envelope.receiver };
    const emit = (event: RunEventInput) => recordRunEvent(this.store, this.options.audit?.(envelope.receiver), event, ctx);
    const sealed = { auth: this.options.auth, endedBy: envelope.receiver };
    await startRollback({ transport: this.options.transport, runId: envelope.runId, trigger: 'cancel', reason: 'the run was cancelled', trace: envelope.trace, emit, ...sealed });
  }

  /** Why the job's envelope and checkpoint cannot be believed, if they cannot. */
  private authenticate(task: Task, data: JobData, sent: string | undefined): string | undefined {
    const auth = this.options.auth;
    if (!auth) return undefined;
    const raw = task.data as { envelope: Record<string, unknown>; progress?: unknown };
    const refused = auth.check(raw.envelope, data.envelope, sent);
    if (refused) return refused;
    if (raw.progress !== undefined) return auth.checkCheckpoint(data.envelope.receiver, data.envelope.messageId, raw.progress, data.progressAuth);
    return undefined;
  }

  /** A security refusal: nothing runs, and the run is not ended (a forger must not be able to end it); it is on record. */
  private async refuse(task: Task, envelope: Envelope, reason: string, authentic = true): Promise<TaskOutcome> {
    await this.recordRefusal(task, envelope, reason, authentic);
    return { type: 'done', result: { status: 'rejected', error: reason } };
  }

  /**
   * A refusal that is the message's end: its claim then holds this agent's mark of it, so no later
   * delivery of the job acts on the message either (each would get the same refusal).
   */
  private async refuseForGood(task: Task, envelope: Envelope, reason: string): Promise<TaskOutcome> {
    await this.recordRefusal(task, envelope, reason);
    const result: TaskResult = { status: 'rejected', error: reason };
    await this.store.completeMessage(envelope.runId, envelope.receiver, envelope.messageId, claimMarker(this.options.auth, envelope, task.id, result));
    return { type: 'done', result };
  }

  /**
   * Puts a refusal on record: in the run's events (when the run exists) and in the audit log. An
   * envelope that is not `authentic` names no one: the worker would otherwise sign, as the agent, a
   * record for whichever principal, tenant and sender a forger wrote; it is known by its digest only.
   */
  private async recordRefusal(task: Task, envelope: Envelope, reason: string, authentic = true): Promise<void> {
    const event = { type: 'envelope.rejected', agent: task.queue, reason } as const;
    if (await this.store.getRun(envelope.runId)) await this.store.appendEvent(envelope.runId, event);
    const audit = this.options.audit?.(task.queue);
    if (!audit) return;
    if (authentic) {
      const entry = auditEntryFor(event, { runId: envelope.runId, principal: envelope.principal, chain: envelope.chain, agent: task.queue });
      if (entry) await audit.append({ ...entry, detail: { sender: envelope.sender, messageId: envelope.messageId } });
      return;
    }
    const digest = createHash('sha256').update(JSON.stringify((task.data as { envelope?: unknown }).envelope ?? null)).digest('base64url');
    const entry = auditEntryFor(
      { type: 'envelope.rejected', agent: task.queue, reason: 'an envelope that is not authentic was refused' },
      { runId: UNAUTHENTICATED, principal: { id: UNAUTHENTICATED, roles: [], attrs: {} }, chain: [task.queue], agent: task.queue },
    );
    if (entry) await audit.append({ ...entry, detail: { claimed: true, digest } });
  }

  /** Checks size and shape, and that the envelope is for the agent this queue serves. */
  private admit(task: Task): { data: JobData; messageBytes: number; sent?: string } | { rejected: string } {
    let size: number;
    let messageSize: number;
    let sent: string | undefined;
    try {
      // The envelope is serialised once: against the message limit, as part of the whole job, and as the text its MAC covers.
      const data = task.data;
      const envelope = data !== null && typeof data === 'object' && !Array.isArray(data) ? (data as { envelope?: unknown }).envelope : undefined;
      if (envelope !== null && typeof envelope === 'object' && !Array.isArray(envelope)) {
        const form = sentForm(envelope);
        sent = form.text;
        messageSize = form.bytes;
      } else messageSize = byteSize(envelope ?? null);
      size = envelope === undefined ? byteSize(data) : messageSize + byteSize({ ...(data as object), envelope: undefined });
    } catch (error) {
      // Nesting deep enough to exhaust the stack: refused like any other malformed data.
      return { rejected: `malformed job data: it cannot be read (${error instanceof Error ? error.message : String(error)})` };
    }
    if (messageSize > this.options.maxMessageBytes) return { rejected: `message of ${messageSize} bytes exceeds the limit of ${this.options.maxMessageBytes}` };
    if (size > checkpointLimit(this.options.maxMessageBytes)) return { rejected: `job data of ${size} bytes exceeds the limit of ${checkpointLimit(this.options.maxMessageBytes)}` };
    const parsed = JobDataSchema.safeParse(task.data);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      return { rejected: `malformed job data: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid'}` };
    }
    const { envelope } = parsed.data;
    if (envelope.receiver !== task.queue) return { rejected: `envelope for '${envelope.receiver}' arrived on the queue of '${task.queue}'` };
    if (!this.options.agents.has(envelope.receiver)) return { rejected: `this worker does not serve agent '${envelope.receiver}'` };
    if (envelope.chain[envelope.chain.length - 1] !== envelope.receiver) return { rejected: 'chain does not end with the receiver' };
    const from = parsed.data.progress?.from;
    if (from !== undefined && from > envelope.messages.length) return { rejected: `malformed job data: the checkpoint builds on ${from} messages, the envelope has ${envelope.messages.length}` };
    return { data: parsed.data, messageBytes: messageSize, ...(sent !== undefined ? { sent } : {}) };
  }

  /** Refuses a job without running anything; the run, if one can be named, fails and says why. */
  private async reject(task: Task, reason: string, authentic = false): Promise<TaskOutcome> {
    const runId = (task.data as { envelope?: { runId?: unknown } } | undefined)?.envelope?.runId;
    const run = typeof runId === 'string' && z.string().uuid().safeParse(runId).success ? await this.store.getRun(runId) : undefined;
    if (run) {
      const audit = this.options.audit?.(task.queue);
      // Attributed to the run's own principal (from its record): the job's claims are not believed.
      const ctx = { runId: run.id, principal: run.principal, chain: [task.queue], agent: task.queue };
      const record = (event: RunEventInput, detail?: Record<string, unknown>) => recordRunEvent(this.store, audit, event, ctx, detail);
      await record({ type: 'envelope.rejected', reason }, { claimed: !authentic });
      // With authentication on, unauthenticated junk must not be able to end someone's run.
      if (authentic || !this.options.auth) await failRun(this.store, audit, `message refused: ${reason}`, ctx);
    }
    return { type: 'done', result: { status: 'rejected', error: reason } };
  }
}
