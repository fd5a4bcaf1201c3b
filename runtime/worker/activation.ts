import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import { delegateToolName, handoffToolName, type Agent } from '../../agents/agent.js';
import type { Label } from '../../agents/label.js';
import type { AssistantMessage, ToolCall } from '../../agents/model.js';
import { ATTR, OPERATION } from '../../tracing/attributes.js';
import { extractTrace, injectTrace } from '../../tracing/propagation.js';
import { labelAttributes, recordError, tracer } from '../../tracing/spans.js';
import type { Envelope } from '../envelope.js';
import { isRedisUnavailable } from '../errors.js';
import { fullText, type RunEventInput, type Stated } from '../events.js';
import { startRollback } from '../rollback.js';
import type { RunStatus } from '../stores/run-store.js';
import { RetryableError, type ChildJob, type Task, type TaskOutcome, type TaskResult } from '../transports/task.js';
import { ActivationEvents } from './activation-events.js';
import type { ActivationState } from './activation-state.js';
import { Parked } from './approval-wait.js';
import { checkpointData, jobData, savedProgress } from './checkpoint.js';
import { collectDelegations, delegate } from './delegation.js';
import { guard, refusal } from './guard-step.js';
import { handOff } from './handoff.js';
import { callSteps } from './message-ids.js';
import { modelTurn } from './model-turn.js';
import type { AgentLoopOptions } from './options.js';
import { restored, type Progress } from './progress.js';
import { callTool, ClaimLost } from './tool-call.js';

/** One delivery of one envelope to one agent: model turns, guarded tool calls, handoffs and delegations. */
export class Activation implements ActivationState {
  readonly events: ActivationEvents;
  statusSeen: RunStatus | undefined;
  progress!: Progress;
  readonly runId: string;
  /** The activation's span and the context its children start in (no-ops while tracing is off). */
  private span!: Span;
  ctx!: Context;

  constructor(
    readonly options: AgentLoopOptions,
    readonly task: Task,
    readonly envelope: Envelope,
    readonly agent: Agent,
    readonly messageBytes: number,
    readonly firstDelivery: boolean,
  ) {
    this.runId = envelope.runId;
    this.events = new ActivationEvents(options, task, envelope, agent);
  }

  get store() {
    return this.options.transport.store;
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
      await this.events.flushEvents(outcome.type === 'done' ? outcome.result : undefined);
      await this.events.flushAudit();
      if (outcome.type === 'park' && this.span.isRecording()) this.span.addEvent('palisade.approval.waiting', { 'palisade.approval.until': new Date(outcome.until).toISOString() });
      if (this.span.isRecording()) {
        this.span.setAttributes({ 'palisade.outcome': outcome.type === 'done' ? outcome.result.status : outcome.type, ...(this.progress ? labelAttributes(this.progress.label) : {}) });
        if (outcome.type === 'done' && (outcome.result.status === 'failed' || outcome.result.status === 'rejected')) this.span.setStatus({ code: SpanStatusCode.ERROR });
      }
      return outcome;
    } catch (error) {
      recordError(this.span, error);
      await this.events.flushEvents().catch(() => undefined);
      await this.events.flushAudit().catch(() => undefined);
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
      this.events.emit({ type: 'agent.started', kind: e.kind, chain: e.chain, resumed });
      if (!resumed) {
        const incoming = e.messages[e.messages.length - 1];
        const decision = await guard(this, { stage: 'receive', content: incoming && 'content' in incoming ? (incoming.content ?? '') : '' });
        if (decision.verdict !== 'allow' && decision.verdict !== 'redact') return this.fail(refusal('message refused at receive', decision));
        if (decision.verdict === 'redact' && decision.content !== undefined && incoming?.role === 'user') {
          this.progress.messages = [...e.messages.slice(0, -1), { role: 'user', content: decision.content }];
        }
      }
      if (this.progress.awaiting.length > 0) await collectDelegations(this);
      return await this.loop();
    } catch (error) {
      if (error instanceof Parked) return { type: 'park', until: error.until, checkpoint: jobData(this), ready: error.ready };
      if (error instanceof ClaimLost) {
        this.events.emit({ type: 'envelope.rejected', reason: error.message });
        return { type: 'done', result: { status: 'rejected', error: error.message } };
      }
      // Redis went away: nothing can be recorded now, and the run is not at fault. The job is
      // retried, or redelivered once Redis is back (its lock lapses); the checkpoint resumes it.
      if (isRedisUnavailable(error)) throw new RetryableError(`Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      if (error instanceof RetryableError && this.task.attempt < this.task.maxAttempts) {
        const said = this.thrown('the model call failed', error.cause ?? error);
        this.events.emit({ type: 'model.error', message: said.message, ...(said.quote ? { quote: said.quote } : {}), willRetry: true });
        throw error;
      }
      return this.fail(this.thrown('stopped by an error', error));
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
      await modelTurn(this);
    }
  }

  /** The outcome when the run has ended meanwhile (a cancel): this activation stops. */
  private async stopped(): Promise<TaskOutcome | undefined> {
    const status = this.statusSeen ?? (await this.store.getRun(this.runId))?.status;
    this.statusSeen = undefined;
    if (status === 'running') return undefined;
    if (status === 'cancelled' && this.options.rollbackOn?.has('cancel')) {
      await startRollback({ transport: this.options.transport, runId: this.runId, trigger: 'cancel', reason: 'the run was cancelled', trace: injectTrace(this.ctx), emit: (event) => this.events.emitNow(event), auth: this.options.auth, endedBy: this.agent.name });
    }
    return { type: 'done', result: { status: 'cancelled', error: `run is ${status ?? 'gone'}` } };
  }

  /** Answers every call of one assistant message; returns an outcome when the activation ends or waits. */
  private async answerToolCalls(message: AssistantMessage, index: number): Promise<TaskOutcome | undefined> {
    const answered = new Set(this.progress.messages.slice(index + 1).flatMap((m) => (m.role === 'tool' ? [m.toolCallId] : [])));
    const children: ChildJob[] = [];
    const steps = callSteps(this.progress.messages, index);
    for (const [i, call] of (message.toolCalls ?? []).entries()) {
      if (answered.has(call.id) || this.progress.awaiting.some((a) => a.callId === call.id)) continue;
      // A cancel between two calls of one turn stops the rest of the turn.
      const stopped = await this.stopped();
      if (stopped) return stopped;
      const stepKey = steps[i]!;
      const handoff = this.envelope.kind !== 'delegate' ? this.agent.handoffs.find((t) => handoffToolName(t) === call.name) : undefined;
      const delegated = this.agent.delegates.find((t) => delegateToolName(t) === call.name);
      if (handoff) {
        const rest = (message.toolCalls ?? []).filter((c) => c !== call && !answered.has(c.id));
        const outcome = await handOff(this, call, handoff, stepKey, rest);
        if (outcome) return outcome;
      } else if (delegated) {
        const fanOut = (message.toolCalls ?? []).filter((c) => this.agent.delegates.some((t) => delegateToolName(t) === c.name)).length;
        const child = await delegate(this, call, delegated, stepKey, fanOut);
        if (child) children.push(child);
      } else {
        await callTool(this, call, stepKey);
      }
    }
    if (children.length > 0) return { type: 'await', children, checkpoint: checkpointData(this) };
    await this.store.saveProgress(savedProgress(this));
    return undefined;
  }

  answer(call: ToolCall, content: string, isError = false, label?: Label, flags?: string[]): void {
    this.progress.messages = [
      ...this.progress.messages,
      { role: 'tool', toolCallId: call.id, name: call.name, content, ...(isError ? { isError } : {}), ...(label ? { label } : {}), ...(flags?.length ? { flags } : {}) },
    ];
  }

  private async finish(text: string): Promise<TaskOutcome> {
    const decision = await guard(this, { stage: 'output', content: text });
    if (decision.verdict === 'block' || decision.verdict === 'escalate') return this.fail(refusal('reply withheld', decision));
    const output = decision.verdict === 'redact' && decision.content !== undefined ? decision.content : text;
    const result: TaskResult = { status: 'completed', output, label: this.progress.label, usage: this.progress.usage };
    if (this.envelope.kind === 'delegate') return { type: 'done', result: this.answerToCaller(result) };
    await this.endRun('completed', { output }, { type: 'run.completed', output, label: this.progress.label });
    return { type: 'done', result };
  }

  /**
   * Ends the run unless it has ended already. What the run did is in its audit trail before it ends,
   * and in its stream in the same write as the end, for anyone who reads them once it is over.
   */
  private async endRun(status: 'completed' | 'failed', detail: { output?: string; error?: string }, ended: RunEventInput): Promise<boolean> {
    this.events.sendAudit();
    await this.events.awaitAudit();
    const events = await this.events.unwritten();
    const event = { ...ended, agent: this.agent.name } as RunEventInput;
    if (!(await this.store.finishRun(this.runId, status, detail, { events, ended: event }))) return false;
    this.events.audit(ended);
    return true;
  }

  /** A thrown error as events state it: its text may quote a model, a tool or a guard, so it goes with the context's label. The caller of a delegate is told it as thrown. */
  private thrown(what: string, error: unknown): Stated {
    const text = error instanceof Error ? error.message : String(error);
    return { message: what, quote: { text, label: this.progress.label }, told: text };
  }

  /** Ends the run as failed, or answers the caller of a delegate with the failure. */
  private async fail(why: string | Stated): Promise<TaskOutcome> {
    const said: Stated = typeof why === 'string' ? { message: why } : why;
    const quote = said.quote ? { quote: said.quote } : {};
    // The record and the audit log get our own words; the event adds what they quote, for readers cleared for it.
    if (this.envelope.kind !== 'delegate' && (await this.endRun('failed', { error: said.message }, { type: 'run.failed', error: said.message, ...quote }))) {
      if (this.options.rollbackOn?.has('failure')) {
        await startRollback({ transport: this.options.transport, runId: this.runId, trigger: 'failure', reason: said.message, trace: injectTrace(this.ctx), emit: (event) => this.events.emitNow(event), auth: this.options.auth, endedBy: this.agent.name });
      }
    } else if (this.envelope.kind === 'delegate') {
      // A delegated agent's failure is its caller's tool error, not the run's end.
      this.events.emit({ type: 'tool.error', tool: delegateToolName(this.agent.name), callId: this.envelope.messageId, message: said.message, ...quote });
    }
    // The caller's model gets the whole text, with the context's label joined into its own.
    const result: TaskResult = { status: 'failed', error: fullText(said), label: this.progress.label, usage: this.progress.usage };
    return { type: 'done', result: this.envelope.kind === 'delegate' ? this.answerToCaller(result) : result };
  }

  /** A delegate's answer, authenticated for its caller (the previous agent of the chain) and this question. */
  private answerToCaller(answer: TaskResult): TaskResult {
    const result = { ...answer, hops: this.progress.sent };
    const caller = this.envelope.chain[this.envelope.chain.length - 2];
    return this.options.auth && caller ? this.options.auth.sealResult(this.agent.name, caller, this.envelope.messageId, result) : result;
  }
}
