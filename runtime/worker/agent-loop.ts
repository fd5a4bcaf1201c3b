import { createHash } from 'node:crypto';
import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import { z } from 'zod';
import { delegateToolName, handoffToolName, type Agent } from '../../agents/agent.js';
import { ChatMessageSchema, ModelCallError, type AssistantMessage, type ChatMessage, type TokenUsage, type ToolCall, type ToolSpec } from '../../agents/model.js';
import type { AnyTool } from '../../agents/tool.js';
import type { Decision } from '../../guards/decision.js';
import type { ContextItem, GuardEvent, GuardPipeline } from '../../guards/guard-event.js';
import { BOTTOM, LabelSchema, join, leq, meet, type Label } from '../../agents/label.js';
import { redact, scan } from '../../guards/content/scanner.js';
import { approverPermission, type ApprovalDecision, type ApprovalRequest } from '../approvals/approval.js';
import type { Principal } from '../../agents/principal.js';
import { startRollback, type Compensator } from '../rollback.js';
import type { RollbackTrigger } from '../events.js';
import { AuthSchema, EnvelopeSchema, type Envelope } from '../envelope.js';
import type { EnvelopeAuth } from '../identity/envelope-auth.js';
import { auditEntryFor, failRun, recordRunEvent, type AuditSink } from '../audit/audit-trail.js';
import type { RunEventInput } from '../events.js';
import type { RunStatus, SavedProgress } from '../stores/run-store.js';
import { ATTR, GUARD_DECISION_EVENT, OPERATION } from '../../tracing/attributes.js';
import { extractTrace, injectTrace } from '../../tracing/propagation.js';
import { inSpan, labelAttributes, recordError, setContent, tracer } from '../../tracing/spans.js';
import { isRedisUnavailable } from '../errors.js';
import { type Transport } from '../transports/transport.js';
import { RetryableError, type ChildJob, type Task, type TaskOutcome, type TaskResult } from '../transports/task.js';

/** The worker's own progress through one activation, saved so a redelivery resumes it. */
const ProgressSchema = z.object({
  messages: z.array(ChatMessageSchema),
  turns: z.number().int().nonnegative(),
  label: LabelSchema,
  usage: z.object({ inputTokens: z.number(), outputTokens: z.number() }),
  awaiting: z.array(z.object({ callId: z.string(), agent: z.string(), jobId: z.string() })).default([]),
  /** Handoffs and delegations this activation has sent, so hop counts are per run, not per path. */
  sent: z.number().int().nonnegative().default(0),
  /**
   * As saved: `messages` holds only what follows the envelope's first `from` messages, which the job
   * already carries (and which are authenticated with it); saving them twice would double every checkpoint.
   */
  from: z.number().int().nonnegative().optional(),
  /**
   * Counts saves. Progress is saved in the run store with each model turn and after tool calls, and in
   * the job when the activation waits (delegations, approvals): a redelivery resumes from the newer.
   */
  version: z.number().int().nonnegative().default(0),
});
type Progress = z.infer<typeof ProgressSchema>;

/** Progress as saved: without the messages it shares with the envelope. */
function compacted(progress: Progress, envelope: Envelope): Progress {
  const { messages } = progress;
  let from = 0;
  while (from < messages.length && from < envelope.messages.length && messages[from] === envelope.messages[from]) from++;
  return { ...progress, messages: messages.slice(from), from };
}

/** Saved progress with the messages it shares with the envelope put back. */
function restored(saved: Progress, envelope: Envelope): Progress {
  const { from, ...progress } = saved;
  if (from === undefined) return progress;
  return { ...progress, messages: [...envelope.messages.slice(0, from), ...saved.messages] };
}

const SavedSchema = z.object({ progress: ProgressSchema, progressAuth: AuthSchema.optional() }).strict();
type Saved = z.infer<typeof SavedSchema>;
const JobDataSchema = z.object({ envelope: EnvelopeSchema, progress: ProgressSchema.optional(), progressAuth: AuthSchema.optional() }).strict();
export type JobData = z.infer<typeof JobDataSchema>;

const DelegateArgsSchema = z.object({ input: z.string().min(1) }).strict();

export interface AgentLoopOptions {
  agents: ReadonlyMap<string, Agent>;
  transport: Transport;
  pipeline: GuardPipeline;
  /** Serialized job data above this size is refused before anything runs. */
  maxMessageBytes: number;
  /** Authenticates envelopes, checkpoints and answers; without it nothing is authenticated (development only). */
  auth?: EnvelopeAuth;
  /** The audit log each agent writes to, when there is one. */
  audit?: (agent: string) => AuditSink | undefined;
  /** The policy's explicit cap on the label of an agent's answers to its callers. */
  declassify?: (agent: string) => { to: Label; reason: string } | undefined;
  /** How escalations are decided; without it an `escalate` is a block. */
  approvals?: ApprovalSettings;
  /** When the side effects of a run that ends this way are undone. */
  rollbackOn?: ReadonlySet<RollbackTrigger>;
  /** Runs compensation jobs (see `rollback.ts`). */
  compensator?: Compensator;
}

export interface ApprovalSettings {
  timeoutMs: number;
  onDeny: 'continue' | 'fail';
  selfApproval: boolean;
  /** Whether the principal holds a permission under the current policy. */
  permits(principal: Principal, permission: string): boolean;
}

/** An activation that waits for a human decision: it is set aside (no worker slot) until then. */
class Parked extends Error {
  readonly benign = true;
  constructor(
    readonly until: number,
    /** Whether the decision has arrived (it may have come before the job was set aside). */
    readonly ready: () => Promise<boolean>,
  ) {
    super('waiting for approval');
  }
}

/**
 * A model's tool calls as the conversation can carry them: a call with a missing or malformed
 * name, id or arguments is kept (the model is told it failed) under a placeholder name, a fresh id
 * and its arguments as text, so one bad reply cannot poison every later hop.
 */
function wellFormedCalls(calls: unknown, turn: number): ToolCall[] {
  if (!Array.isArray(calls)) return [];
  const seen = new Set<string>();
  return calls.map((raw, i) => {
    const c = (raw ?? {}) as { id?: unknown; name?: unknown; arguments?: unknown };
    const name = typeof c.name === 'string' && /^[\w.-]{1,200}$/.test(c.name) ? c.name : 'invalid_tool_name';
    let id = typeof c.id === 'string' && c.id.length > 0 && c.id.length <= 200 ? c.id : `call_${turn}_${i}`;
    if (seen.has(id)) id = `${id.slice(0, 180)}_dup${i}`;
    seen.add(id);
    const args = typeof c.arguments === 'string' ? c.arguments : (JSON.stringify(c.arguments ?? {}) ?? '{}');
    return { id, name, arguments: args };
  });
}

/** A worker's saved activation (the envelope plus the conversation since) may grow past one message, up to this. */
const checkpointLimit = (maxMessageBytes: number): number => 16 * maxMessageBytes;

/** How long a model call or tool may run before the events buffered ahead of it are written on their own. */
const EVENTS_DUE_MS = 20;

const byteSize = (value: unknown): number => Buffer.byteLength(JSON.stringify(value) ?? '');

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** Stable, queue-safe id for a message derived from its parent and the step that produced it. */
export function deriveMessageId(parent: string, step: string): string {
  return createHash('sha256').update(parent).update('\0').update(step).digest('base64url').slice(0, 22);
}

/** The idempotency key of one tool call: its step, and what it calls with what, so a different call never reuses it. */
export const toolCallKey = (messageId: string, stepKey: string, call: ToolCall): string => deriveMessageId(messageId, `${stepKey}\0${call.name}\0${call.arguments}`);

const textOf = (value: unknown): string => (typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null'));

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
    const refused = this.authenticate(task, data);
    if (refused) return this.refuse(task, envelope, refused);
    const { claim, run, result, saved } = await this.store.claimForRun(envelope.receiver, envelope.messageId, task.id, envelope.runId);
    // Finished, but the worker stopped before the queue heard: the same job gets the same result, and nothing runs again.
    if (claim === 'finished' && result) return { type: 'done', result };
    if (claim === 'replay') return this.refuse(task, envelope, `message ${envelope.messageId} was already accepted: a replay`);
    const agent = this.options.agents.get(envelope.receiver)!;
    if (!run) return this.reject(task, `no run ${envelope.runId} exists`);
    if (run.status !== 'running') {
      if (run.status === 'cancelled') await this.rollBackCancelled(envelope);
      const cancelled: TaskResult = { status: 'cancelled', error: `run is ${run.status}` };
      await this.store.completeMessage(envelope.receiver, envelope.messageId, task.id, cancelled);
      return { type: 'done', result: cancelled };
    }
    let stored = saved === undefined ? undefined : this.readSaved(envelope, saved, messageBytes);
    if (typeof stored === 'string') {
      // The job itself is authentic: its run goes on as if nothing had been saved (what deleting the copy would give
      // an attacker anyway), and the refusal is on record.
      await this.recordRefusal(task, envelope, `its saved progress was not believed, so it starts again from the job: ${stored}`);
      stored = undefined;
    }
    const progress = stored && (!data.progress || stored.version > data.progress.version) ? stored : data.progress;
    // Authentic but too old (a long outage): the run cannot go on, and says so.
    const stale = this.options.auth?.staleness(envelope, progress === undefined);
    if (stale) return this.reject(task, stale, true);
    const activation = new Activation(this.options, task, envelope, agent, messageBytes);
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
    await startRollback({ transport: this.options.transport, runId: envelope.runId, trigger: 'cancel', reason: 'the run was cancelled', trace: envelope.trace, emit });
  }

  /** Why the job's envelope and checkpoint cannot be believed, if they cannot. */
  private authenticate(task: Task, data: JobData): string | undefined {
    const auth = this.options.auth;
    if (!auth) return undefined;
    const raw = task.data as { envelope: Record<string, unknown>; progress?: unknown };
    const refused = auth.check(raw.envelope, data.envelope);
    if (refused) return refused;
    if (raw.progress !== undefined) return auth.checkCheckpoint(data.envelope.receiver, data.envelope.messageId, raw.progress, data.progressAuth);
    return undefined;
  }

  /** A security refusal: nothing runs, and the run is not ended (a forger must not be able to end it); it is on record. */
  private async refuse(task: Task, envelope: Envelope, reason: string): Promise<TaskOutcome> {
    await this.recordRefusal(task, envelope, reason);
    return { type: 'done', result: { status: 'rejected', error: reason } };
  }

  /** Puts a refusal on record: in the run's events (when the run exists) and in the audit log. */
  private async recordRefusal(task: Task, envelope: Envelope, reason: string): Promise<void> {
    const event = { type: 'envelope.rejected', agent: task.queue, reason } as const;
    if (await this.store.getRun(envelope.runId)) await this.store.appendEvent(envelope.runId, event);
    // Attributed to the principal and chain the envelope claims: they are what the forger tried to use.
    const entry = auditEntryFor(event, { runId: envelope.runId, principal: envelope.principal, chain: envelope.chain, agent: task.queue });
    if (entry) await this.options.audit?.(task.queue)?.append({ ...entry, detail: { claimed: true, sender: envelope.sender, messageId: envelope.messageId } });
  }

  /** Checks size and shape, and that the envelope is for the agent this queue serves. */
  private admit(task: Task): { data: JobData; messageBytes: number } | { rejected: string } {
    let size: number;
    let messageSize: number;
    try {
      // The envelope is serialised once: against the message limit, and as part of the whole job.
      const data = task.data;
      const envelope = data !== null && typeof data === 'object' && !Array.isArray(data) ? (data as { envelope?: unknown }).envelope : undefined;
      messageSize = byteSize(envelope ?? null);
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
    return { data: parsed.data, messageBytes: messageSize };
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

/** One delivery of one envelope to one agent. */
class Activation {
  private readonly auditing: Promise<void>[] = [];
  /** Audit entries not yet handed to the log. */
  private readonly unaudited: Array<{ sink: AuditSink; entry: Parameters<AuditSink['append']>[0] }> = [];
  /** Run events not yet written, the batch being written, and what stopped writing them. */
  private readonly events: Array<{ event: RunEventInput; at: number }> = [];
  private eventsWritten: Promise<void> | undefined;
  /** A write of the buffered events set for later, while the activation waits on a model or a tool. */
  private eventsDue: NodeJS.Timeout | undefined;
  private eventFailure: unknown;
  /** The run's status as the last model turn's write saw it: the next cancellation check need not ask again. */
  private statusSeen: RunStatus | undefined;
  private auditFailure: unknown;
  private progress!: Progress;
  private readonly runId: string;
  /** The activation's span and the context its children start in (no-ops while tracing is off). */
  private span!: Span;
  private ctx!: Context;

  constructor(
    private readonly options: AgentLoopOptions,
    private readonly task: Task,
    private readonly envelope: Envelope,
    private readonly agent: Agent,
    /** The envelope's serialised size: a saved activation is it plus the progress since. */
    private readonly messageBytes: number,
  ) {
    this.runId = envelope.runId;
  }

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
  private emit(event: RunEventInput): void {
    this.audit(event);
    this.events.push({ event: { ...event, agent: this.agent.name } as RunEventInput, at: Date.now() });
  }

  /** Buffers the event's audit entry, when it has one, for the log's next batch. */
  private audit(event: RunEventInput): void {
    const e = this.envelope;
    const entry = auditEntryFor(event, { runId: this.runId, principal: e.principal, chain: e.chain, agent: this.agent.name });
    const sink = entry && this.options.audit?.(this.agent.name);
    if (sink) this.unaudited.push({ sink, entry: entry! });
  }

  /**
   * Writes the buffered events and audit entries if the model or tool about to be awaited is still
   * busy after {@link EVENTS_DUE_MS}: followers see a slow step's progress while it runs, and a quick
   * step's events go with the next write instead of in one of their own.
   */
  private sendEventsSoon(): void {
    this.eventsDue ??= setTimeout(() => this.sendEvents(), EVENTS_DUE_MS).unref();
  }

  /** Starts writing the buffered events and audit entries without waiting. */
  private sendEvents(): void {
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

  private sendAudit(): void {
    // Appended in one tick, they go to the log as one batch.
    for (const { sink, entry } of this.unaudited.splice(0)) this.auditing.push(sink.append(entry).then(() => undefined, (error: unknown) => void (this.auditFailure ??= error)));
  }

  private async writeEvents(): Promise<void> {
    try {
      while (this.events.length > 0) await this.store.appendEvents(this.runId, this.events.splice(0));
    } catch (error) {
      this.eventFailure = error;
    }
  }

  /** Records an event and waits until it is written: for what others read at once (a run's last event, a rollback's start). */
  private async emitNow(event: RunEventInput): Promise<void> {
    this.emit(event);
    await this.flushEvents();
  }

  /**
   * Waits until every event emitted so far is in the run's stream; throws what kept one out. With
   * `finished`, the last of them go in one write with the mark that the activation's message is done
   * and the result its job returns.
   */
  private async flushEvents(finished?: TaskResult): Promise<void> {
    if (finished) await this.store.finishMessage(this.runId, await this.unwritten(), this.envelope.receiver, this.envelope.messageId, this.task.id, finished);
    this.sendEvents();
    while (this.eventsWritten) await this.eventsWritten;
    if (this.eventFailure !== undefined) throw this.eventFailure;
  }

  /** The turn's usage, every event buffered so far and the progress that holds the reply, in one write. */
  private async recordTurn(usage: TokenUsage): Promise<void> {
    let saved: SavedProgress | undefined;
    let tooLarge: unknown;
    try {
      saved = this.savedProgress();
    } catch (error) {
      // The turn's usage and events are still recorded; the activation then fails.
      tooLarge = error;
    }
    const events = await this.unwritten();
    this.sendAudit();
    this.statusSeen = await this.store.recordTurn(this.runId, usage, events, saved);
    if (tooLarge !== undefined) throw tooLarge;
  }

  /**
   * Takes the buffered events for a write of the caller's own, once any write in progress is done (so
   * events stay in order) and instead of a write set for later; throws what kept an earlier one out.
   */
  private async unwritten(): Promise<Array<{ event: RunEventInput; at: number }>> {
    clearTimeout(this.eventsDue);
    this.eventsDue = undefined;
    while (this.eventsWritten) await this.eventsWritten;
    if (this.eventFailure !== undefined) throw this.eventFailure;
    return this.events.splice(0);
  }

  private async flushAudit(): Promise<void> {
    this.sendEvents();
    await this.awaitAudit();
  }

  /** Waits for the audit entries handed to the log so far; throws what kept one out. */
  private async awaitAudit(): Promise<void> {
    await Promise.all(this.auditing.splice(0));
    if (this.auditFailure !== undefined) throw new Error(`the audit log could not be written: ${this.auditFailure instanceof Error ? this.auditFailure.message : String(this.auditFailure)}`);
  }

  private async guard(
    event: Omit<GuardEvent, 'runId' | 'principal' | 'agent' | 'chain' | 'depth' | 'hops' | 'label'>,
    subject?: string,
    parent: Context = this.ctx,
  ): Promise<Decision> {
    const span = tracer().startSpan(
      `${OPERATION.APPLY_GUARDRAIL} ${event.stage}`,
      { attributes: { [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.APPLY_GUARDRAIL, [ATTR.PALISADE_GUARD_STAGE]: event.stage, [ATTR.GEN_AI_AGENT_NAME]: this.agent.name } },
      parent,
    );
    return inSpan(span, async () => {
      const decision = await this.evaluateGuard(event, subject);
      if (span.isRecording()) {
        span.addEvent(GUARD_DECISION_EVENT, {
          [ATTR.PALISADE_GUARD_VERDICT]: decision.verdict,
          [ATTR.PALISADE_GUARD_REASONS]: decision.reasons.join('; '),
          [ATTR.PALISADE_GUARD_RISK]: decision.risk,
          ...labelAttributes(this.progress.label),
        });
        span.setAttribute(ATTR.PALISADE_GUARD_VERDICT, decision.verdict);
      }
      return decision;
    });
  }

  private async evaluateGuard(event: Omit<GuardEvent, 'runId' | 'principal' | 'agent' | 'chain' | 'depth' | 'hops' | 'label'>, subject?: string): Promise<Decision> {
    const e = this.envelope;
    const spent = this.progress.usage.inputTokens + this.progress.usage.outputTokens;
    const decision: Decision & { decided?: string; mode?: string } = await this.options.pipeline.evaluate({
      ...event,
      runId: e.runId,
      principal: e.principal,
      agent: this.agent.name,
      chain: e.chain,
      depth: e.depth,
      hops: e.hops + this.progress.sent,
      label: this.progress.label,
      budget: { tokensLeft: e.budget.tokens !== undefined ? e.budget.tokens - spent : undefined, deadline: e.budget.deadline },
      agentTools: [...this.agent.tools.keys()],
      ...(event.stage === 'tool_call' ? { history: this.history() } : {}),
    });
    this.emit({
      type: 'guard.decision',
      stage: event.stage,
      verdict: decision.verdict,
      reasons: decision.reasons,
      risk: decision.risk,
      subject,
      ...(decision.mode === 'monitor' ? { monitored: decision.decided } : {}),
    });
    if (decision.labels) this.progress.label = join(this.progress.label, decision.labels);
    return decision;
  }

  /** The context as sources with their own labels: the principal's request, tool results, delegates' answers. */
  private history(): ContextItem[] {
    const e = this.envelope;
    // A delegate's question was written by its caller, whose context may hold untrusted content.
    const asked = e.kind === 'delegate' ? e.label : BOTTOM;
    const items: ContextItem[] = [];
    for (const m of this.progress.messages) {
      if (m.role === 'user') items.push({ source: 'user', content: m.content, label: asked });
      else if (m.role === 'tool' && (!m.isError || m.label)) {
        items.push({ source: m.name.startsWith('ask_') ? 'agent' : 'tool', name: m.name, content: m.content, label: m.label ?? BOTTOM, ...(m.flags ? { flags: m.flags } : {}) });
      }
    }
    return items;
  }

  async resume(saved: Progress | undefined): Promise<TaskOutcome> {
    const e = this.envelope;
    // The parent is the span that sent the envelope, in whichever process that ran.
    const parent = extractTrace(e.trace);
    this.span = tracer().startSpan(
      `${OPERATION.INVOKE_AGENT} ${this.agent.name}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.INVOKE_AGENT,
          [ATTR.GEN_AI_AGENT_NAME]: this.agent.name,
          [ATTR.PALISADE_RUN_ID]: e.runId,
          [ATTR.PALISADE_PRINCIPAL_ID]: e.principal.id,
          [ATTR.PALISADE_CHAIN]: [...e.chain],
          'palisade.envelope.kind': e.kind,
          'palisade.resumed': saved !== undefined,
        },
      },
      parent,
    );
    this.ctx = trace.setSpan(parent, this.span);
    try {
      const outcome = await this.activate(saved);
      // A finished activation's last events and the mark that its message is done go in one write.
      await this.flushEvents(outcome.type === 'done' ? outcome.result : undefined);
      await this.flushAudit();
      if (outcome.type === 'park' && this.span.isRecording()) this.span.addEvent('palisade.approval.waiting', { 'palisade.approval.until': new Date(outcome.until).toISOString() });
      if (this.span.isRecording()) {
        this.span.setAttributes({ 'palisade.outcome': outcome.type === 'done' ? outcome.result.status : outcome.type, ...(this.progress ? labelAttributes(this.progress.label) : {}) });
        if (outcome.type === 'done' && (outcome.result.status === 'failed' || outcome.result.status === 'rejected')) this.span.setStatus({ code: SpanStatusCode.ERROR });
      }
      return outcome;
    } catch (error) {
      recordError(this.span, error);
      await this.flushEvents().catch(() => undefined);
      await this.flushAudit().catch(() => undefined);
      if (isRedisUnavailable(error)) throw new RetryableError(`Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      throw error;
    } finally {
      this.span.end();
    }
  }

  private async activate(saved: Progress | undefined): Promise<TaskOutcome> {
    const e = this.envelope;
    const resumed = saved !== undefined;
    this.progress = saved ? restored(saved, e) : { messages: e.messages, turns: 0, label: e.label, usage: { inputTokens: 0, outputTokens: 0 }, awaiting: [], sent: 0, version: 0 };
    try {
      this.emit({ type: 'agent.started', kind: e.kind, chain: e.chain, resumed });
      if (!resumed) {
        const incoming = e.messages[e.messages.length - 1];
        const decision = await this.guard({ stage: 'receive', content: incoming && 'content' in incoming ? (incoming.content ?? '') : '' });
        if (decision.verdict !== 'allow' && decision.verdict !== 'redact') return this.fail(`message refused at receive: ${decision.reasons.join('; ') || decision.verdict}`);
        if (decision.verdict === 'redact' && decision.content !== undefined && incoming?.role === 'user') {
          this.progress.messages = [...e.messages.slice(0, -1), { role: 'user', content: decision.content }];
        }
      }
      if (this.progress.awaiting.length > 0) await this.collectDelegations();
      return await this.loop();
    } catch (error) {
      if (error instanceof Parked) return { type: 'park', until: error.until, checkpoint: this.jobData(), ready: error.ready };
      // Redis went away: nothing can be recorded now, and the run is not at fault. The job is
      // retried, or redelivered once Redis is back (its lock lapses); the checkpoint resumes it.
      if (isRedisUnavailable(error)) throw new RetryableError(`Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      if (error instanceof RetryableError && this.task.attempt < this.task.maxAttempts) {
        this.emit({ type: 'model.error', message: error.message, willRetry: true });
        throw error;
      }
      return this.fail(error instanceof Error ? error.message : String(error));
    }
  }

  private async loop(): Promise<TaskOutcome> {
    let checked = false;
    for (;;) {
      const last = this.progress.messages[this.progress.messages.length - 1];
      if (last?.role === 'assistant' && last.toolCalls?.length) {
        const outcome = await this.answerToolCalls(last, this.progress.messages.length - 1);
        if (outcome) return outcome;
        continue;
      }
      if (last?.role === 'assistant') return this.finish(last.content ?? '');
      // The first turn of a delivery follows handle()'s own check; later turns look again for a cancel.
      if (checked) {
        const stopped = await this.stopped();
        if (stopped) return stopped;
      }
      checked = true;
      if (this.envelope.budget.deadline !== undefined && Date.now() > this.envelope.budget.deadline) return this.fail('the run passed its deadline');
      const spent = this.progress.usage.inputTokens + this.progress.usage.outputTokens;
      if (this.envelope.budget.tokens !== undefined && spent >= this.envelope.budget.tokens) {
        return this.fail(`the run's token budget is spent (${spent} of ${this.envelope.budget.tokens} tokens)`);
      }
      if (this.progress.turns >= this.agent.maxTurns) return this.fail(`agent '${this.agent.name}' reached its limit of ${this.agent.maxTurns} model turns`);
      await this.modelTurn();
    }
  }

  /** The outcome when the run has ended meanwhile (a cancel): this activation stops. */
  private async stopped(): Promise<TaskOutcome | undefined> {
    const status = this.statusSeen ?? (await this.store.getRun(this.runId))?.status;
    this.statusSeen = undefined;
    if (status === 'running') return undefined;
    if (status === 'cancelled' && this.options.rollbackOn?.has('cancel')) {
      await startRollback({ transport: this.options.transport, runId: this.runId, trigger: 'cancel', reason: 'the run was cancelled', trace: injectTrace(this.ctx), emit: (event) => this.emitNow(event) });
    }
    return { type: 'done', result: { status: 'cancelled', error: `run is ${status ?? 'gone'}` } };
  }

  private toolSpecs(): ToolSpec[] {
    const specs = [...this.agent.tools.values()].map((t) => t.spec);
    const describe = (name: string) => this.options.agents.get(name)?.description ?? name;
    // A delegated agent answers its caller; handing the conversation elsewhere would orphan the caller.
    if (this.envelope.kind !== 'delegate') {
      for (const target of this.agent.handoffs) {
        specs.push({
          name: handoffToolName(target),
          description: `Hand the conversation over to the '${target}' agent, which continues it. ${describe(target)}`,
          parameters: { type: 'object', properties: { reason: { type: 'string' } }, additionalProperties: false },
        });
      }
    }
    for (const target of this.agent.delegates) {
      specs.push({
        name: delegateToolName(target),
        description: `Ask the '${target}' agent and wait for its answer. ${describe(target)}`,
        parameters: { type: 'object', properties: { input: { type: 'string', description: 'What to ask' } }, required: ['input'], additionalProperties: false },
      });
    }
    return specs;
  }

  private async modelTurn(): Promise<void> {
    let response;
    const model = this.agent.model;
    const span = tracer().startSpan(
      `${OPERATION.CHAT} ${model.model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.CHAT,
          [ATTR.GEN_AI_REQUEST_MODEL]: model.model,
          [ATTR.GEN_AI_PROVIDER_NAME]: model.provider,
          [ATTR.GEN_AI_AGENT_NAME]: this.agent.name,
        },
      },
      this.ctx,
    );
    try {
      setContent(span, 'gen_ai.input.messages', JSON.stringify(this.progress.messages));
      this.sendEventsSoon();
      response = await model.generate({ system: this.agent.instructions, messages: this.progress.messages, tools: this.toolSpecs(), runId: this.runId });
      setContent(span, 'gen_ai.output.messages', JSON.stringify([{ role: 'assistant', content: response.content, toolCalls: response.toolCalls }]));
      if (span.isRecording()) {
        span.setAttributes({
          'gen_ai.response.model': response.model,
          [ATTR.GEN_AI_USAGE_INPUT_TOKENS]: response.usage.inputTokens,
          [ATTR.GEN_AI_USAGE_OUTPUT_TOKENS]: response.usage.outputTokens,
        });
      }
    } catch (error) {
      recordError(span, error);
      if (error instanceof ModelCallError && error.retryable) throw new RetryableError(`model call failed: ${error.message}`, { cause: error });
      throw new Error(`model call failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    } finally {
      span.end();
    }
    this.progress.turns += 1;
    this.progress.usage = {
      inputTokens: this.progress.usage.inputTokens + response.usage.inputTokens,
      outputTokens: this.progress.usage.outputTokens + response.usage.outputTokens,
    };
    const toolCalls = wellFormedCalls(response.toolCalls, this.progress.turns);
    const content = typeof response.content === 'string' ? response.content : null;
    const message: AssistantMessage = { role: 'assistant', content, ...(toolCalls.length ? { toolCalls } : {}) };
    this.progress.messages = [...this.progress.messages, message];
    this.emit({
      type: 'model.response',
      model: response.model,
      toolCalls: toolCalls.map((c) => c.name),
      text: Boolean(content),
      inputTokens: response.usage.inputTokens,
      outputTokens: response.usage.outputTokens,
    });
    // Saved with the turn: from here a redelivery replays this reply instead of asking the model again.
    await this.recordTurn(response.usage);
  }

  /** Refuses a saved activation that outgrows the message limit (a redelivery could not read it back). */
  private checkSize(size: number): void {
    const limit = checkpointLimit(this.options.maxMessageBytes);
    if (size > limit) throw new Error(`the conversation grew to ${size} bytes, over the limit of ${limit} for a saved activation`);
  }

  /** This worker's progress as saved, a newer version each time: authenticated, without the messages the envelope carries. */
  private saved(): Saved {
    this.progress.version += 1;
    const progress = compacted(this.progress, this.envelope);
    const auth = this.options.auth?.sealCheckpoint(this.agent.name, this.envelope.messageId, progress);
    return { progress, ...(auth ? { progressAuth: auth } : {}) };
  }

  /** The progress to keep in the run store; the job itself is not rewritten, so the envelope is not saved again. */
  private savedProgress(): SavedProgress {
    const data = JSON.stringify(this.saved());
    this.checkSize(this.messageBytes + Buffer.byteLength(data));
    return { receiver: this.agent.name, messageId: this.envelope.messageId, data };
  }

  /** The job's data for an activation that waits: the envelope exactly as received (its MAC covers it as sent) and this worker's progress. */
  private jobData(): JobData {
    return { envelope: (this.task.data as { envelope: Envelope }).envelope, ...this.saved() };
  }

  /** {@link jobData}, refused when it outgrows the message limit. */
  private checkpointData(): JobData {
    const data = this.jobData();
    this.checkSize(byteSize(data));
    return data;
  }

  /** Answers every call of one assistant message; returns an outcome when the activation ends or waits. */
  private async answerToolCalls(message: AssistantMessage, index: number): Promise<TaskOutcome | undefined> {
    const answered = new Set(this.progress.messages.slice(index + 1).flatMap((m) => (m.role === 'tool' ? [m.toolCallId] : [])));
    const children: ChildJob[] = [];
    for (const call of message.toolCalls ?? []) {
      if (answered.has(call.id) || this.progress.awaiting.some((a) => a.callId === call.id)) continue;
      // A cancel between two calls of one turn stops the rest of the turn.
      const stopped = await this.stopped();
      if (stopped) return stopped;
      const stepKey = `${index}.${call.id}`;
      const handoff = this.envelope.kind !== 'delegate' ? this.agent.handoffs.find((t) => handoffToolName(t) === call.name) : undefined;
      const delegate = this.agent.delegates.find((t) => delegateToolName(t) === call.name);
      if (handoff) {
        const rest = (message.toolCalls ?? []).filter((c) => c !== call && !answered.has(c.id));
        const outcome = await this.handOff(call, handoff, stepKey, rest);
        if (outcome) return outcome;
      } else if (delegate) {
        const fanOut = (message.toolCalls ?? []).filter((c) => this.agent.delegates.some((t) => delegateToolName(t) === c.name)).length;
        const child = await this.delegate(call, delegate, stepKey, fanOut);
        if (child) children.push(child);
      } else {
        await this.callTool(call, stepKey);
      }
    }
    if (children.length > 0) return { type: 'await', children, checkpoint: this.checkpointData() };
    await this.store.saveProgress(this.savedProgress());
    return undefined;
  }

  private answer(call: ToolCall, content: string, isError = false, label?: Label, flags?: string[]): void {
    this.progress.messages = [
      ...this.progress.messages,
      { role: 'tool', toolCallId: call.id, name: call.name, content, ...(isError ? { isError } : {}), ...(label ? { label } : {}), ...(flags?.length ? { flags } : {}) },
    ];
  }

  private async callTool(call: ToolCall, stepKey: string): Promise<void> {
    const tool = this.agent.tools.get(call.name);
    const key = toolCallKey(this.envelope.messageId, stepKey, call);
    const stored = await this.store.getToolCall(this.runId, key);
    const forged = stored && this.options.auth?.checkToolCall(this.agent.name, key, stored);
    if (forged) {
      // Neither believed nor run again: running it could repeat a side effect.
      this.emit({ type: 'envelope.rejected', reason: `tool call ${call.id}: ${forged}` });
      return this.answer(call, `Error: the recorded result of '${call.name}' failed authentication and was discarded.`, true);
    }
    if (stored) {
      this.emit({ type: 'tool.called', tool: call.name, callId: call.id, replayed: true });
      this.progress.label = join(this.progress.label, stored.label);
      return this.answer(call, stored.content, stored.isError, stored.label, stored.flags);
    }
    const result = tool ? await this.executeTool(tool, call, key) : { content: `Error: there is no tool named '${call.name}'.`, isError: true, label: BOTTOM };
    if (!tool) this.emit({ type: 'tool.error', tool: call.name, callId: call.id, message: 'unknown tool' });
    await this.store.putToolCall(this.runId, key, this.options.auth ? this.options.auth.sealToolCall(this.agent.name, key, result) : result);
    this.answer(call, result.content, result.isError, result.label, result.flags);
  }

  private async executeTool(tool: AnyTool, call: ToolCall, idempotencyKey: string): Promise<{ content: string; isError: boolean; label: Label; flags?: string[] }> {
    const span = tracer().startSpan(
      `${OPERATION.EXECUTE_TOOL} ${tool.name}`,
      {
        attributes: {
          [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.EXECUTE_TOOL,
          [ATTR.GEN_AI_TOOL_NAME]: tool.name,
          [ATTR.GEN_AI_TOOL_CALL_ID]: call.id,
          [ATTR.GEN_AI_AGENT_NAME]: this.agent.name,
          'palisade.tool.effect': tool.effect,
        },
      },
      this.ctx,
    );
    return inSpan(span, async () => {
      setContent(span, 'gen_ai.tool.call.arguments', call.arguments);
      const result = await this.runTool(tool, call, idempotencyKey, trace.setSpan(this.ctx, span));
      setContent(span, 'gen_ai.tool.call.result', result.content);
      if (span.isRecording()) {
        span.setAttributes(labelAttributes(result.label));
        if (result.isError) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      return result;
    });
  }

  private async runTool(tool: AnyTool, call: ToolCall, idempotencyKey: string, spanCtx: Context): Promise<{ content: string; isError: boolean; label: Label; flags?: string[] }> {
    const toolError = async (message: string) => {
      this.emit({ type: 'tool.error', tool: tool.name, callId: call.id, message });
      return { content: `Error: ${message}`, isError: true, label: BOTTOM };
    };
    let raw: unknown;
    try {
      raw = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
    } catch {
      return toolError(`the arguments for '${tool.name}' are not valid JSON`);
    }
    const parsed = tool.input.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      return toolError(`invalid arguments for '${tool.name}': ${issues}`);
    }
    const args = parsed.data as Record<string, unknown>;
    const meta = { name: tool.name, effect: tool.effect, risk: tool.risk, requires: tool.requires, returns: tool.returns };
    const priorCalls = this.progress.messages.filter((m) => m.role === 'tool' && m.name === tool.name).length;
    const decision = await this.guard({ stage: 'tool_call', tool: meta, args, priorCalls }, tool.name, spanCtx);
    if (decision.verdict === 'escalate') {
      const shown = JSON.stringify(args);
      const approval = await this.approval({ kind: 'tool', subject: tool.name, callId: call.id, id: deriveMessageId(idempotencyKey, 'approval'), shown, exact: shown, decision });
      if (approval !== 'approved') return toolError(`the call to '${tool.name}' was not approved: ${approval.refused}`);
    } else if (decision.verdict !== 'allow') {
      // Arguments are not rewritten: a redaction here would run the tool on what the guard withheld.
      return toolError(`the call to '${tool.name}' was not allowed: ${decision.reasons.join('; ') || decision.verdict}`);
    }
    this.emit({ type: 'tool.called', tool: tool.name, callId: call.id, replayed: false });
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let output: unknown;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          controller.abort();
          reject(new Error(`'${tool.name}' did not finish within ${tool.timeoutMs} ms`));
        }, tool.timeoutMs);
      });
      const ctx = { runId: this.runId, agent: this.agent.name, principal: this.envelope.principal, callId: call.id, idempotencyKey, signal: controller.signal };
      this.sendEventsSoon();
      output = await Promise.race([Promise.resolve().then(() => tool.run(args, ctx)), timeout]);
    } catch (error) {
      // The error text may come from the outside world (an HTTP body): it carries the tool's labels.
      this.progress.label = join(this.progress.label, tool.returns);
      const failed = await toolError(`'${tool.name}' failed: ${error instanceof Error ? error.message : String(error)}`);
      return { ...failed, label: tool.returns };
    } finally {
      clearTimeout(timer);
    }
    this.progress.label = join(this.progress.label, tool.returns);
    if (tool.effect !== 'read') await this.recordAction(tool, call, idempotencyKey, args, output);
    const resultDecision = await this.guard({ stage: 'tool_result', tool: meta, args, content: textOf(output) }, tool.name, spanCtx);
    const own = resultDecision.labels ? join(tool.returns, resultDecision.labels) : tool.returns;
    if (resultDecision.verdict === 'block' || resultDecision.verdict === 'escalate') {
      return toolError(`the result of '${tool.name}' was withheld: ${resultDecision.reasons.join('; ') || resultDecision.verdict}`);
    }
    const content = resultDecision.verdict === 'redact' && resultDecision.content !== undefined ? resultDecision.content : textOf(output);
    this.emit({ type: 'tool.result', tool: tool.name, callId: call.id, label: this.progress.label });
    return { content, isError: false, label: own, ...(resultDecision.flags?.length ? { flags: resultDecision.flags } : {}) };
  }

  /**
   * An escalated action: `approved` when a permitted human approved exactly this call in time;
   * otherwise the refusal. Without a decision yet, the activation parks until one (or the timeout).
   * With `onDeny: fail` a refusal ends the run instead.
   */
  private async approval(ask: {
    kind: ApprovalRequest['kind'];
    subject: string;
    callId: string;
    id: string;
    /** The arguments for the approver's eyes (redacted before they are stored). */
    shown: string;
    /** The exact arguments the approval binds to. */
    exact: string;
    decision: Decision;
  }): Promise<'approved' | { refused: string }> {
    const settings = this.options.approvals;
    if (!settings) return { refused: `it needs approval and no approvals are configured (${ask.decision.reasons.join('; ') || 'escalate'})` };
    const auth = this.options.auth;
    const argsHash = sha256(`${ask.kind}\0${ask.subject}\0${ask.exact}`);
    const decided = async () => Boolean((await this.store.getApproval(ask.id))?.decision);
    const state = await this.store.getApproval(ask.id);
    if (!state) {
      const now = Date.now();
      const request: ApprovalRequest = {
        id: ask.id,
        runId: this.runId,
        agent: this.agent.name,
        jobId: this.task.id,
        kind: ask.kind,
        subject: ask.subject,
        callId: ask.callId,
        arguments: redact(ask.shown, scan(ask.shown, { injection: false })),
        argsHash,
        reasons: ask.decision.reasons,
        risk: ask.decision.risk,
        label: this.progress.label,
        chain: [...this.envelope.chain],
        principal: this.envelope.principal,
        permission: approverPermission(ask.kind, ask.subject),
        selfApproval: settings.selfApproval,
        requestedAt: now,
        expiresAt: now + settings.timeoutMs,
      };
      // A redelivery that lost the race to create it simply waits for the same request.
      if (await this.store.createApproval(auth ? auth.sealApprovalRequest(request) : request)) {
        this.emit({ type: 'approval.requested', approvalId: request.id, kind: ask.kind, subject: ask.subject, reasons: request.reasons, risk: request.risk, expiresAt: request.expiresAt });
      }
      throw new Parked(request.expiresAt, decided);
    }
    const { request } = state;
    let decision = state.decision;
    if (!decision) {
      if (Date.now() < request.expiresAt) throw new Parked(request.expiresAt, decided);
      const expired: ApprovalDecision = { approvalId: request.id, status: 'expired', at: Date.now(), argsHash: request.argsHash };
      if (await this.store.decideApproval(auth ? auth.sealDecision(this.agent.name, expired) : expired)) {
        this.emit({ type: 'approval.decided', approvalId: request.id, subject: request.subject, status: 'expired' });
      }
      decision = (await this.store.getApproval(ask.id))?.decision ?? expired;
    }
    const invalid = this.invalidDecision(request, decision, argsHash);
    const outcome = invalid ? 'invalid' : decision.status;
    const refused =
      invalid ??
      (decision.status === 'denied'
        ? `denied by ${decision.by?.id ?? 'an approver'}${decision.note ? `: ${decision.note}` : ''}`
        : decision.status === 'expired'
          ? `nobody decided within ${Math.round((request.expiresAt - request.requestedAt) / 1000)} s`
          : undefined);
    this.emit({ type: 'approval.resolved', approvalId: request.id, subject: request.subject, outcome, ...(refused ? { reason: refused } : {}) });
    this.traceWait(request, decision, outcome);
    if (refused === undefined) return 'approved';
    if (settings.onDeny === 'fail') throw new Error(`${request.kind === 'tool' ? 'the call to' : 'the handoff to'} '${request.subject}' was not approved: ${refused}`);
    return { refused };
  }

  /** Why a stored request or decision cannot be acted on: forged, for other arguments, or by someone not allowed to decide. */
  private invalidDecision(request: ApprovalRequest, decision: ApprovalDecision, argsHash: string): string | undefined {
    const auth = this.options.auth;
    const forged = auth && (auth.checkApprovalRequest(request) ?? auth.checkDecision(this.agent.name, decision));
    if (forged) return forged;
    if (request.argsHash !== argsHash || decision.argsHash !== argsHash || request.agent !== this.agent.name || request.runId !== this.runId) {
      return 'the decision is for another call';
    }
    if (decision.status !== 'approved') return undefined;
    const by = decision.by;
    if (!by) return 'an approval must name its approver';
    // Checked against the current policy, not the one in force when the request was made.
    if (!this.options.approvals!.permits(by, request.permission)) return `'${by.id}' lacks ${request.permission}`;
    if (!this.options.approvals!.selfApproval && by.id === this.envelope.principal.id) return `'${by.id}' may not approve their own request`;
    return undefined;
  }

  /** The wait as a span from the request to the decision, so a trace shows where the time went. */
  private traceWait(request: ApprovalRequest, decision: ApprovalDecision, outcome: string): void {
    const span = tracer().startSpan(
      `palisade.approval ${request.subject}`,
      {
        startTime: request.requestedAt,
        attributes: {
          'palisade.approval.id': request.id,
          'palisade.approval.kind': request.kind,
          'palisade.approval.outcome': outcome,
          ...(decision.by ? { 'palisade.approval.by': decision.by.id } : {}),
          [ATTR.GEN_AI_AGENT_NAME]: this.agent.name,
        },
      },
      this.ctx,
    );
    if (outcome !== 'approved') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
    span.end(Math.max(decision.at, request.requestedAt));
  }

  /** Logs a side effect with what a compensation needs, authenticated by this agent. */
  private async recordAction(tool: AnyTool, call: ToolCall, key: string, args: Record<string, unknown>, output: unknown): Promise<void> {
    const record = {
      runId: this.runId,
      key,
      agent: this.agent.name,
      tool: tool.name,
      callId: call.id,
      principal: this.envelope.principal,
      args,
      output: output === undefined ? null : (JSON.parse(JSON.stringify(output)) as unknown),
      at: Date.now(),
    };
    await this.store.recordAction(this.runId, this.options.auth ? this.options.auth.sealAction(record) : record);
  }

  private nextEnvelope(kind: 'handoff' | 'delegate', target: string, stepKey: string, messages: ChatMessage[], share = 1): Envelope {
    const e = this.envelope;
    const spent = this.progress.usage.inputTokens + this.progress.usage.outputTokens;
    const { auth: _received, trace: _parent, ...carried } = e;
    // The next activation's span is a child of this one's: the context rides in the (authenticated) envelope.
    const traceContext = injectTrace(this.ctx);
    const next: Envelope = {
      ...carried,
      ...(traceContext ? { trace: traceContext } : {}),
      kind,
      messageId: deriveMessageId(e.messageId, stepKey),
      sender: this.agent.name,
      receiver: target,
      chain: [...e.chain, target],
      depth: kind === 'delegate' ? e.depth + 1 : e.depth,
      hops: e.hops + this.progress.sent + 1,
      // Delegations of one turn split what is left, so a fan-out cannot multiply the budget.
      budget: { ...e.budget, ...(e.budget.tokens !== undefined ? { tokens: Math.floor(Math.max(0, e.budget.tokens - spent) / share) } : {}) },
      label: this.progress.label,
      messages,
      issuedAt: Date.now(),
    };
    return this.options.auth ? this.options.auth.seal(next) : next;
  }

  private async handOff(call: ToolCall, target: string, stepKey: string, unanswered: ToolCall[]): Promise<TaskOutcome | undefined> {
    const conversation = this.conversationText();
    const decision = await this.guard({ stage: 'handoff', target: { agent: target, mode: 'handoff' }, content: conversation }, target);
    if (decision.verdict === 'escalate') {
      const id = deriveMessageId(this.envelope.messageId, `${stepKey}\0approval`);
      const approval = await this.approval({ kind: 'handoff', subject: target, callId: call.id, id, shown: conversation, exact: conversation, decision });
      if (approval !== 'approved') {
        this.answer(call, `Error: the handoff to '${target}' was not approved: ${approval.refused}`, true);
        return undefined;
      }
    } else if (decision.verdict !== 'allow') {
      // A handoff carries the whole conversation, which is not rewritten: anything but allow stops it.
      this.answer(call, `Error: the handoff to '${target}' was not allowed: ${decision.reasons.join('; ') || decision.verdict}`, true);
      return undefined;
    }
    const before = this.progress.messages;
    this.answer(call, `Transferred to ${target}.`);
    // Model APIs reject a conversation with unanswered calls, and the receiver must not inherit them.
    for (const other of unanswered) if (!this.progress.messages.some((m) => m.role === 'tool' && m.toolCallId === other.id)) this.answer(other, 'Not executed: the conversation was handed off.', true);
    const envelope = this.nextEnvelope('handoff', target, stepKey, this.progress.messages);
    // Checked here: the receiver would refuse it unread, and could not tell anyone why.
    const size = byteSize({ envelope });
    if (size > this.options.maxMessageBytes) {
      this.progress.messages = before;
      this.answer(call, `Error: the conversation (${size} bytes) is over the message limit of ${this.options.maxMessageBytes} and cannot be handed to '${target}'.`, true);
      return undefined;
    }
    this.progress.sent += 1;
    await this.options.transport.enqueue(target, envelope.messageId, { envelope } satisfies JobData);
    this.emit({ type: 'handoff', to: target });
    return { type: 'done', result: { status: 'handed_off', label: this.progress.label, usage: this.progress.usage } };
  }

  /** What a handoff passes on, as text for the content guards: every message of the conversation. */
  private conversationText(): string {
    return this.progress.messages.map((m) => (m.role === 'assistant' ? [m.content ?? '', ...(m.toolCalls ?? []).map((c) => c.arguments)].join('\n') : m.content)).join('\n');
  }

  private async delegate(call: ToolCall, target: string, stepKey: string, fanOut: number): Promise<ChildJob | undefined> {
    let input: string;
    try {
      input = DelegateArgsSchema.parse(JSON.parse(call.arguments)).input;
    } catch {
      this.answer(call, `Error: '${call.name}' takes {"input": "<question>"}.`, true);
      return undefined;
    }
    const decision = await this.guard({ stage: 'handoff', target: { agent: target, mode: 'delegate', fanOut }, content: input }, target);
    if (decision.verdict === 'escalate') {
      const id = deriveMessageId(this.envelope.messageId, `${stepKey}\0approval`);
      const approval = await this.approval({ kind: 'delegate', subject: target, callId: call.id, id, shown: input, exact: input, decision });
      if (approval !== 'approved') {
        this.answer(call, `Error: asking '${target}' was not approved: ${approval.refused}`, true);
        return undefined;
      }
    } else if (decision.verdict === 'block') {
      this.answer(call, `Error: asking '${target}' was not allowed: ${decision.reasons.join('; ') || decision.verdict}`, true);
      return undefined;
    }
    const content = decision.verdict === 'redact' && decision.content !== undefined ? decision.content : input;
    const envelope = this.nextEnvelope('delegate', target, stepKey, [{ role: 'user', content }], fanOut);
    const size = byteSize({ envelope });
    if (size > this.options.maxMessageBytes) {
      this.answer(call, `Error: the question (${size} bytes) is over the message limit of ${this.options.maxMessageBytes}.`, true);
      return undefined;
    }
    this.progress.sent += 1;
    this.progress.awaiting = [...this.progress.awaiting, { callId: call.id, agent: target, jobId: envelope.messageId }];
    this.emit({ type: 'delegation.started', to: target, callId: call.id });
    return { queue: target, jobId: envelope.messageId, payload: { envelope } satisfies JobData };
  }

  private async collectDelegations(): Promise<void> {
    const results = await this.task.childResults();
    const assistant = [...this.progress.messages].reverse().find((m): m is AssistantMessage => m.role === 'assistant');
    const missing = this.progress.awaiting.filter((p) => !results.has(p.jobId));
    for (const pending of this.progress.awaiting) {
      // A child that was never added (the worker died first) is asked again: its job id is deterministic.
      if (!results.has(pending.jobId)) continue;
      let result: TaskResult | undefined = results.get(pending.jobId);
      const auth = this.options.auth;
      // An outcome without an answer (cancelled, refused before the delegate ran) carries nothing to believe and no MAC.
      if (auth && result && result.status !== 'completed' && !result.auth) result = { status: result.status, error: `no answer (${result.status})` };
      const forged = result?.auth || result?.status === 'completed' ? auth?.checkResult(pending.agent, this.agent.name, pending.jobId, result!) : undefined;
      if (forged) {
        this.emit({ type: 'envelope.rejected', reason: `answer of '${pending.agent}': ${forged}` });
        result = { status: 'rejected', error: 'its answer failed authentication' };
      }
      const call = assistant?.toolCalls?.find((c) => c.id === pending.callId) ?? { id: pending.callId, name: delegateToolName(pending.agent), arguments: '{}' };
      this.emit({ type: 'delegation.completed', to: pending.agent, callId: pending.callId, status: result?.status ?? 'failed' });
      let answerLabel = result?.label;
      const cap = answerLabel && this.options.declassify?.(pending.agent);
      if (answerLabel && cap && !leq(answerLabel, cap.to)) {
        // Declassification lowers confidentiality only: an untrusted answer stays untrusted.
        const lowered = { ...meet(answerLabel, cap.to), integrity: answerLabel.integrity };
        this.emit({ type: 'label.declassified', from: answerLabel, to: lowered, reason: cap.reason, source: pending.agent });
        answerLabel = lowered;
      }
      if (answerLabel) this.progress.label = join(this.progress.label, answerLabel);
      // What the delegate sent counts toward this run's hops, so a limit holds across sibling delegations.
      if (result?.hops) this.progress.sent += result.hops;
      if (result?.usage) {
        this.progress.usage = {
          inputTokens: this.progress.usage.inputTokens + result.usage.inputTokens,
          outputTokens: this.progress.usage.outputTokens + result.usage.outputTokens,
        };
      }
      if (result?.status === 'completed') this.answer(call, result.output ?? '', false, answerLabel);
      else this.answer(call, `Error: '${pending.agent}' could not answer: ${result?.error ?? 'it failed'}`, true);
    }
    this.progress.awaiting = [];
    if (missing.length > 0) this.emit({ type: 'model.error', message: `asking ${missing.map((m) => m.agent).join(', ')} again: the delegation was not found`, willRetry: true });
  }

  private async finish(text: string): Promise<TaskOutcome> {
    const decision = await this.guard({ stage: 'output', content: text });
    if (decision.verdict === 'block' || decision.verdict === 'escalate') return this.fail(`reply withheld: ${decision.reasons.join('; ') || decision.verdict}`);
    const output = decision.verdict === 'redact' && decision.content !== undefined ? decision.content : text;
    const result: TaskResult = { status: 'completed', output, label: this.progress.label, usage: this.progress.usage };
    if (this.envelope.kind === 'delegate') return { type: 'done', result: this.answerToCaller(result) };
    await this.endRun('completed', { output }, { type: 'run.completed', output });
    return { type: 'done', result };
  }

  /**
   * Ends the run unless it has ended already. What the run did is in its audit trail before it ends,
   * and in its stream in the same write as the end, for anyone who reads them once it is over.
   */
  private async endRun(status: 'completed' | 'failed', detail: { output?: string; error?: string }, ended: RunEventInput): Promise<boolean> {
    this.sendAudit();
    await this.awaitAudit();
    const events = await this.unwritten();
    const event = { ...ended, agent: this.agent.name } as RunEventInput;
    if (!(await this.store.finishRun(this.runId, status, detail, { events, ended: event }))) return false;
    this.audit(ended);
    return true;
  }

  private async fail(error: string): Promise<TaskOutcome> {
    // A delegated agent's failure is its caller's tool error, not the run's end.
    if (this.envelope.kind !== 'delegate' && (await this.endRun('failed', { error }, { type: 'run.failed', error }))) {
      if (this.options.rollbackOn?.has('failure')) {
        await startRollback({ transport: this.options.transport, runId: this.runId, trigger: 'failure', reason: error, trace: injectTrace(this.ctx), emit: (event) => this.emitNow(event) });
      }
    } else if (this.envelope.kind === 'delegate') {
      this.emit({ type: 'tool.error', tool: delegateToolName(this.agent.name), callId: this.envelope.messageId, message: error });
    }
    const result: TaskResult = { status: 'failed', error, label: this.progress.label, usage: this.progress.usage };
    return { type: 'done', result: this.envelope.kind === 'delegate' ? this.answerToCaller(result) : result };
  }

  /** A delegate's answer, authenticated for its caller (the previous agent of the chain) and this question. */
  private answerToCaller(answer: TaskResult): TaskResult {
    const result = { ...answer, hops: this.progress.sent };
    const caller = this.envelope.chain[this.envelope.chain.length - 2];
    return this.options.auth && caller ? this.options.auth.sealResult(this.agent.name, caller, this.envelope.messageId, result) : result;
  }
}
