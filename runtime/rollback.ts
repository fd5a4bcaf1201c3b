import { createHash, randomUUID } from 'node:crypto';
import { SpanStatusCode } from '@opentelemetry/api';
import { z } from 'zod';
import type { Agent } from '../agents/agent.js';
import { extractTrace } from '../tracing/propagation.js';
import { inSpan, tracer } from '../tracing/spans.js';
import { ATTR } from '../tracing/attributes.js';
import { recordRunEvent, type AuditSink } from './audit/audit-trail.js';
import { AuthSchema, EnvelopeSchema } from './envelope.js';
import { SignatureSchema } from './identity/edge-keys.js';
import type { EnvelopeAuth } from './identity/envelope-auth.js';
import type { Quote, RollbackTrigger, RunEventInput } from './events.js';
import { heldMarker, type ActionRecord, type ClaimMarker, type CompensationRecord } from './stores/run-store.js';
import type { Transport } from './transports/transport.js';
import type { ChildJob, Task, TaskOutcome } from './transports/task.js';

/** One step of a rollback: undo one action, in the worker of the agent that did it. */
export const CompensationOrderSchema = z
  .object({
    rollbackId: z.string().min(1).max(64),
    runId: z.string().uuid(),
    agent: z.string().min(1).max(64),
    /** The action's idempotency key in the run's action log. */
    key: z.string().min(1).max(64),
    /** 0 for the newest action; the last step reports the whole rollback. */
    step: z.number().int().nonnegative(),
    steps: z.number().int().positive(),
    trigger: z.enum(['failure', 'cancel', 'operator']),
    /** The operator who ordered it. */
    by: z.string().max(256).optional(),
    reason: z.string().max(2000),
    issuedAt: z.number().int().positive(),
    trace: EnvelopeSchema.shape.trace,
    /** The edge's signature, on an operator's order: no worker can make one. */
    signature: SignatureSchema.optional(),
    /** On a failure or cancel order: the agent whose worker saw the run end, and its MAC on a link it shares with `agent`. */
    endedBy: z.string().min(1).max(64).optional(),
    auth: AuthSchema.optional(),
  })
  .strict();
export type CompensationOrder = z.infer<typeof CompensationOrderSchema>;

const CompensationJobSchema = z.object({ compensate: CompensationOrderSchema }).strict();

export interface StartRollbackOptions {
  transport: Transport;
  runId: string;
  trigger: RollbackTrigger;
  reason: string;
  /** The operator, for `operator` rollbacks. */
  by?: string;
  /**
   * The edge's keys: an operator's order must be signed by the edge for the agent that undoes something to act on it.
   * A worker's keys, with `endedBy`: a failure or cancel order must be sealed by the worker that saw the run end.
   */
  auth?: EnvelopeAuth;
  /** The agent whose worker saw the run fail or be cancelled, for failure and cancel orders. */
  endedBy?: string;
  trace?: CompensationOrder['trace'];
  /** Where `rollback.started` (and, with nothing to undo, `rollback.completed`) is recorded; the run's event stream by default. */
  emit?: (event: RunEventInput) => Promise<void>;
}

export interface RollbackStarted {
  rollbackId: string;
  /** Actions in the log, each of which gets a compensation step. */
  actions: number;
}

/**
 * Undoes a run's side effects, newest first: one job per logged action, each on the queue of the
 * agent that acted (only its worker holds the tool's credentials), each starting after the one
 * before it has finished. A failure or cancel rolls back once (later calls return undefined); an
 * operator may roll back again, and what was undone already is reported, not undone twice.
 */
export async function startRollback(options: StartRollbackOptions): Promise<RollbackStarted | undefined> {
  const { transport, runId, trigger } = options;
  const store = transport.store;
  const rollbackId =
    trigger === 'operator' ? randomUUID().replace(/-/g, '') : createHash('sha256').update(`${runId}\0rollback\0${trigger}`).digest('base64url').slice(0, 22);
  if (trigger !== 'operator' && (await store.claimMessage(runId, 'rollback', rollbackId, 'start')) !== 'new') return undefined;
  const emit = options.emit ?? ((event: RunEventInput) => store.appendEvent(runId, event));
  const actions = await store.listActions(runId);
  await emit({ type: 'rollback.started', rollbackId, trigger, actions: actions.length, ...(options.by ? { by: options.by } : {}) });
  if (actions.length === 0) {
    await emit({ type: 'rollback.completed', rollbackId, undone: 0, failed: 0, notUndone: 0 });
    return { rollbackId, actions: 0 };
  }
  const issuedAt = Date.now();
  const steps: ChildJob[] = [...actions].reverse().map((action, step) => {
    const order: CompensationOrder = {
      rollbackId,
      runId,
      agent: action.agent,
      key: action.key,
      step,
      steps: actions.length,
      trigger,
      ...(options.by ? { by: options.by } : {}),
      reason: options.reason.slice(0, 2000),
      issuedAt,
      ...(options.trace ? { trace: options.trace } : {}),
    };
    const compensate = !options.auth ? order : trigger === 'operator' ? options.auth.sealOrder(order) : options.endedBy ? options.auth.sealEndOrder({ ...order, endedBy: options.endedBy }) : order;
    return { queue: action.agent, jobId: `rb-${rollbackId}-${step}`, payload: { compensate } };
  });
  await transport.enqueueSequence(runId, steps);
  return { rollbackId, actions: actions.length };
}

export interface CompensatorOptions {
  agents: ReadonlyMap<string, Agent>;
  transport: Transport;
  auth?: EnvelopeAuth;
  audit?: (agent: string) => AuditSink | undefined;
  /** The triggers this worker's policy rolls back on; an order for another is refused. */
  rollbackOn: ReadonlySet<RollbackTrigger>;
}

/** How long an order may wait in its queue before a worker acts on it. */
const ORDER_LIFETIME_MS = 24 * 3600_000;

type Outcome = (Pick<CompensationRecord, 'status' | 'message'> | { status: 'already_undone'; message?: string }) & { quote?: Quote };

/** Runs compensation steps in the worker that owns the tool, after checking the order and the action it undoes. */
export class Compensator {
  constructor(private readonly options: CompensatorOptions) {}

  private get store() {
    return this.options.transport.store;
  }

  accepts(task: Task): boolean {
    return typeof task.data === 'object' && task.data !== null && 'compensate' in task.data;
  }

  async handle(task: Task): Promise<TaskOutcome> {
    const parsed = CompensationJobSchema.safeParse(task.data);
    if (!parsed.success) return { type: 'done', result: { status: 'rejected', error: `malformed rollback order: ${parsed.error.issues[0]?.message ?? 'invalid'}` } };
    const order = parsed.data.compensate;
    const agent = this.options.agents.get(order.agent);
    if (order.agent !== task.queue || !agent) return { type: 'done', result: { status: 'rejected', error: `a rollback order for '${order.agent}' arrived on the queue of '${task.queue}'` } };
    const run = await this.store.getRun(order.runId);
    if (!run) return { type: 'done', result: { status: 'rejected', error: `no run ${order.runId} exists` } };
    const ctx = { runId: order.runId, principal: run.principal, chain: [agent.name], agent: agent.name };
    const emit = (event: RunEventInput) => recordRunEvent(this.store, this.options.audit?.(agent.name), event, ctx, order.by ? { orderedBy: order.by } : undefined);
    const refused = this.refusal(order, (task.data as { compensate: CompensationOrder }).compensate, run.status);
    if (refused) {
      await emit({ type: 'envelope.rejected', reason: `rollback order refused: ${refused}` });
      return { type: 'done', result: { status: 'rejected', error: refused } };
    }
    const actions = (await this.store.listActions(order.runId)).slice(0, order.steps);
    const action = actions.find((a) => a.key === order.key);
    const step = await this.claim(agent.name, order);
    const span = tracer().startSpan(
      `palisade.compensate ${action?.tool ?? order.key}`,
      { attributes: { [ATTR.GEN_AI_AGENT_NAME]: agent.name, [ATTR.PALISADE_RUN_ID]: order.runId, 'palisade.rollback.id': order.rollbackId, 'palisade.rollback.trigger': order.trigger } },
      extractTrace(order.trace),
    );
    const outcome = await inSpan(span, async () => {
      const result = 'outcome' in step ? step.outcome : await this.undo(agent, order, action);
      span.setAttribute('palisade.rollback.outcome', result.status);
      if (result.status === 'failed' || result.status === 'not_undone') span.setStatus({ code: SpanStatusCode.ERROR, message: result.message ?? result.status });
      return result;
    });
    if (outcome.status !== 'already_undone') {
      const record: CompensationRecord = { status: outcome.status, ...(outcome.message ? { message: outcome.message } : {}), rollbackId: order.rollbackId, at: Date.now() };
      await this.store.putCompensation(order.runId, order.key, this.options.auth?.sealCompensation(agent.name, order.runId, order.key, record) ?? record);
    }
    if ('taken' in step) await this.store.completeMessage(order.runId, agent.name, step.stepId, this.marker(agent.name, step.stepId, step.taken.jobId, outcome.status));
    await emit({
      type: 'action.compensated',
      rollbackId: order.rollbackId,
      tool: action?.tool ?? 'unknown',
      callId: action?.callId ?? order.key,
      status: outcome.status,
      ...(outcome.message ? { message: outcome.message } : {}),
      ...(outcome.quote ? { quote: outcome.quote } : {}),
    });
    if (order.step === order.steps - 1) await emit({ type: 'rollback.completed', rollbackId: order.rollbackId, ...(await this.summary(order.runId, actions)) });
    return { type: 'done', result: { status: 'completed', output: outcome.status } };
  }

  /**
   * Claims the order's step, as a message is claimed, with this agent's own MAC: each action is
   * undone at most once. A step claimed before is not run again unless its claim, authentic, says the
   * last attempt failed or had nothing to undo (a later order retries it); one claimed without an
   * authentic outcome (a crash mid-undo, or a forgery) is reported, never run twice.
   */
  private async claim(agent: string, order: CompensationOrder): Promise<{ stepId: string; taken: ClaimMarker } | { outcome: Outcome }> {
    const stepId = createHash('sha256').update(`undo\0${order.runId}\0${order.key}`).digest('base64url').slice(0, 22);
    const taken = this.marker(agent, stepId, `${order.rollbackId}.${order.step}`);
    const { claim, held } = await this.store.claimForRun(order.runId, agent, stepId, taken);
    if (claim === 'new') return { stepId, taken };
    const prior = heldMarker(held);
    const forged = prior ? this.options.auth?.checkClaim(agent, stepId, prior) : 'it cannot be read';
    const last = forged === undefined ? prior?.result?.output : undefined;
    if (last === 'undone') return { outcome: { status: 'already_undone' } };
    if (claim === 'replay' && (last === 'failed' || last === 'not_undone') && (await this.store.swapClaim(order.runId, agent, stepId, held!, taken))) return { stepId, taken };
    const why = forged ? `its claim is not believed (${forged})` : last ? 'this order already took it' : 'an earlier attempt’s outcome is not on record';
    return { outcome: { status: 'failed', message: `the step was attempted before and is not run again: ${why}` } };
  }

  /** The marker of a step's claim by order `jobId`, unfinished or with its outcome, under this agent's MAC. */
  private marker(agent: string, stepId: string, jobId: string, outcome?: string): ClaimMarker {
    const auth = this.options.auth;
    if (outcome !== undefined) {
      const result = { status: 'completed' as const, output: outcome };
      return { jobId, result, ...(auth ? { auth: auth.sealClaim(agent, stepId, jobId, result) } : {}) };
    }
    const taken = { at: Date.now(), nonce: randomUUID() };
    return { jobId, ...taken, ...(auth ? { auth: auth.sealClaim(agent, stepId, jobId, undefined, taken) } : {}) };
  }

  /**
   * Why this worker must not act on the order. `raw` is the order as read from the job, which its
   * signature or MAC covers. A failure or cancel order counts only sealed by the worker that saw the
   * run end: the run's status alone, which anyone with Redis can write, does not make one.
   */
  private refusal(order: CompensationOrder, raw: CompensationOrder, runStatus: string): string | undefined {
    const auth = this.options.auth;
    if (order.trigger !== 'operator') {
      if (!this.options.rollbackOn.has(order.trigger)) return `this worker's policy does not roll back on ${order.trigger}`;
      const expected = order.trigger === 'failure' ? 'failed' : 'cancelled';
      if (runStatus !== expected) return `the run is ${runStatus}, not ${expected}`;
    }
    const forged = order.trigger === 'operator' ? auth?.checkOrder(raw) : auth?.checkEndOrder(raw);
    if (forged) return forged;
    // An authentic order replayed long after: an operator orders again instead.
    return Date.now() - order.issuedAt > ORDER_LIFETIME_MS ? `the order was issued more than ${ORDER_LIFETIME_MS / 3600_000} h ago` : undefined;
  }

  private async undo(agent: Agent, order: CompensationOrder, action: ActionRecord | undefined): Promise<Outcome> {
    if (!action) return { status: 'failed', message: 'the action is not in the run’s action log' };
    const forged = this.options.auth?.checkAction(action);
    if (forged) return { status: 'failed', message: forged };
    if (action.agent !== agent.name || action.runId !== order.runId) return { status: 'failed', message: 'the action belongs to another agent or run' };
    const tool = agent.tools.get(action.tool);
    if (!tool?.compensate) return { status: 'not_undone', message: `'${action.tool}' has no compensation` };
    const args = tool.input.safeParse(action.args);
    if (!args.success) return { status: 'failed', message: `the logged arguments no longer fit '${tool.name}'` };
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          controller.abort();
          reject(new Error(`the compensation of '${tool.name}' did not finish within ${tool.timeoutMs} ms`));
        }, tool.timeoutMs);
      });
      // The undo acts for the same principal, and is itself idempotent on its own key.
      const ctx = { runId: order.runId, agent: agent.name, principal: action.principal, callId: action.callId, idempotencyKey: `${action.key}.undo`, signal: controller.signal };
      await Promise.race([Promise.resolve().then(() => tool.compensate!(args.data, action.output, ctx)), timeout]);
      return { status: 'undone' };
    } catch (error) {
      // What the compensation threw may quote what the tool handles: it goes with the tool's labels, apart from our words.
      return { status: 'failed', message: `the compensation of '${tool.name}' failed`, quote: { text: error instanceof Error ? error.message : String(error), label: tool.returns } };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * What the rollback did, from the records each agent sealed: one written by anyone else counts as a
   * failure. Another agent's record is checked where this process holds its key; the summary is a report.
   */
  private async summary(runId: string, actions: readonly ActionRecord[]) {
    const auth = this.options.auth;
    const records = await Promise.all(
      actions.map(async (a) => {
        const record = await this.store.getCompensation(runId, a.key);
        const checkable = auth?.keyring.has(a.agent, a.agent);
        return record && !(checkable && auth!.checkCompensation(a.agent, runId, a.key, record)) ? record : undefined;
      }),
    );
    const count = (status: CompensationRecord['status']) => records.filter((r) => r?.status === status).length;
    return { undone: count('undone'), failed: actions.length - count('undone') - count('not_undone'), notUndone: count('not_undone') };
  }
}
