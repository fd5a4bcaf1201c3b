import { randomUUID } from 'node:crypto';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { checkAgentGraph, type Agent } from '../agents/agent.js';
import { ALLOW } from '../guards/decision.js';
import type { GuardPipeline } from '../guards/guard-event.js';
import type { Guard } from '../guards/guard.js';
import { Pipeline } from '../guards/pipeline.js';
import type { Policy } from '../guards/policy/policy.js';
import { createPolicyPipeline, type CompiledPolicy } from '../guards/policy/policy-pipeline.js';
import { checkPolicyNames, type NamesElsewhere } from '../guards/policy/load-policy.js';
import { BOTTOM } from '../agents/label.js';
import { AgentLoop } from './worker/agent-loop.js';
import type { ApprovalSettings } from './worker/options.js';
import type { JobData } from './worker/progress.js';
import { Approvals } from './approvals/approvals.js';
import { Compensator, startRollback, type RollbackStarted } from './rollback.js';
import type { RollbackTrigger } from './events.js';
import { permissionsOf, permits } from '../guards/builtin/context.js';
import { BudgetSchema, ENVELOPE_VERSION, EnvelopeSchema, type Budget, type Envelope } from './envelope.js';
import { InvalidRunInputError, isRedisUnavailable, TransportUnavailableError, UnknownAgentError } from './errors.js';
import { PrincipalSchema, type PrincipalInput } from '../agents/principal.js';
import { Run } from './run.js';
import { clearanceFor, contextLabel } from './event-view.js';
import { AuditLogs } from './audit/audit-logs.js';
import { auditEntryFor, failRun, recordRunEvent, type AuditSink } from './audit/audit-trail.js';
import { EnvelopeAuth } from './identity/envelope-auth.js';
import { EDGE, KeyError, type Keyring } from './identity/keyring.js';
import { BullMQTransport } from './transports/bullmq-transport.js';
import type { Consumer, Transport } from './transports/transport.js';
import { ATTR, RUN_SPAN } from '../tracing/attributes.js';
import { injectTrace } from '../tracing/propagation.js';
import { recordError, tracer } from '../tracing/spans.js';

export interface RuntimeOptions {
  /** Agent definitions this process knows: needed to run workers; producers may omit them. */
  agents?: Agent[];
  /** Defaults to BullMQ on the Redis at REDIS_URL (or 127.0.0.1:6379). */
  transport?: Transport;
  /** The organisation's policy: builds the guard pipeline and sets limits. Load files with `loadPolicy`. */
  policy?: Policy | CompiledPolicy;
  /** Your own guards, run after the policy's built-in ones. */
  guards?: Guard[];
  /** A pipeline of your own instead of the policy's; without either, every step is decided `allow`. */
  pipeline?: GuardPipeline;
  /**
   * Agents and tools that other processes serve under the same policy. Every agent and tool the
   * policy names must be one of `agents` (and their tools) or listed here, or the runtime refuses to
   * start: a rule or clearance for a name that matches nothing would silently not apply.
   */
  servedElsewhere?: NamesElsewhere;
  /** Largest job payload a worker accepts (bytes). */
  maxMessageBytes?: number;
  /**
   * This process's link keys (`palisade keys generate`): the edge's to start runs, each served
   * agent's to work. Without them nothing is authenticated, which is for development only.
   */
  keys?: Keyring;
}

export interface StartOptions {
  /** Who the run acts for, from verified credentials. */
  principal: PrincipalInput;
  budget?: Budget;
}

export interface WorkerOptions {
  /** Which of the known agents this process serves; all of them by default. */
  agents?: string[];
  /** Jobs per agent processed at once. */
  concurrency?: number;
}

/** A failure to reach Redis, as the error a producer can act on (retry later); other errors pass through. */
function unavailable(error: unknown): unknown {
  if (!isRedisUnavailable(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new TransportUnavailableError(`Redis did not answer, so the run was not started (${message}); try again when it is back`, { cause: error });
}

const noGuards: GuardPipeline = { evaluate: async () => ALLOW };

/** Starts runs and hosts agent workers over one transport. */
export class Runtime {
  readonly transport: Transport;
  private readonly agents: ReadonlyMap<string, Agent>;
  private readonly loop: AgentLoop;
  private readonly consumers: Consumer[] = [];
  private readonly maxMessageBytes: number;
  private readonly policy: Policy | undefined;
  private readonly auth: EnvelopeAuth | undefined;
  /** One log per process: its writers (the edge, each agent served) share its batches and its view of the head. */
  private auditLogs: AuditLogs | undefined;
  private readonly auditSinks = new Map<string, AuditSink>();
  private readonly auditFor: (writer: string) => AuditSink | undefined;
  private approvalDesk: Approvals | undefined;

  constructor(options: RuntimeOptions = {}) {
    const agents = options.agents ?? [];
    checkAgentGraph(agents);
    const compiled = options.policy && ('policy' in options.policy ? options.policy : { policy: options.policy });
    // Where the policy meets the agents: a name in it that names none of them is an error, not a rule that never applies.
    // (Checked before anything is opened, so a refusal leaves no connection behind.)
    if (compiled) checkPolicyNames(compiled, agents, options.servedElsewhere);
    this.agents = new Map(agents.map((a) => [a.name, a]));
    this.transport = options.transport ?? new BullMQTransport();
    this.maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
    this.policy = compiled?.policy;
    const pipeline =
      options.pipeline ??
      (compiled
        ? createPolicyPipeline({ ...compiled, agents, guards: options.guards })
        : options.guards?.length
          ? new Pipeline({ guards: options.guards })
          : noGuards);
    this.auth = options.keys ? new EnvelopeAuth(options.keys) : undefined;
    const transport = this.transport;
    // The audit log lives in Redis; the embedded transport keeps none.
    this.auditFor = (writer: string) => {
      if (!(transport instanceof BullMQTransport)) return undefined;
      let sink = this.auditSinks.get(writer);
      if (!sink) {
        this.auditLogs ??= new AuditLogs(transport.cells, { redis: transport.connection, writer });
        sink = this.auditLogs.as(writer, options.keys?.audit.get(writer));
        this.auditSinks.set(writer, sink);
      }
      return sink;
    };
    const policy = this.policy;
    const approvals: ApprovalSettings | undefined = policy && {
      ...policy.approvals,
      permits: (principal, permission) => permits(permissionsOf(policy, principal.roles), permission),
    };
    const rollbackOn = new Set<RollbackTrigger>([
      ...(policy?.rollback.onFailure ? (['failure'] as const) : []),
      ...(policy?.rollback.onCancel ? (['cancel'] as const) : []),
      'operator',
    ]);
    this.loop = new AgentLoop({
      approvals,
      rollbackOn,
      compensator: new Compensator({ agents: this.agents, transport: this.transport, auth: this.auth, audit: this.auditFor, rollbackOn }),
      auth: this.auth,
      audit: this.auditFor,
      agents: this.agents,
      transport: this.transport,
      pipeline,
      maxMessageBytes: this.maxMessageBytes,
      declassify: (agent) => this.policy?.declassify[agent],
    });
  }

  /** Begins a run at `agent` for `principal`; the returned handle follows it to the end. */
  async start(agent: string | Agent, input: string, options: StartOptions): Promise<Run> {
    const name = typeof agent === 'string' ? agent : agent.name;
    if (!this.agents.has(name)) {
      const known = [...new Set([...this.agents.keys(), ...(await this.transport.knownAgents())])].sort();
      if (!known.includes(name)) throw new UnknownAgentError(name, known);
    }
    const principal = PrincipalSchema.safeParse(options.principal);
    if (!principal.success) throw new InvalidRunInputError(`invalid principal: ${principal.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const budget = BudgetSchema.safeParse(this.budgetFor(options.budget ?? {}));
    if (!budget.success) throw new InvalidRunInputError(`invalid budget: ${budget.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    if (typeof input !== 'string' || input.length === 0) throw new InvalidRunInputError('input must be a non-empty string');
    const runId = randomUUID();
    const now = Date.now();
    // The run's root span: every activation, in whichever worker, descends from it through the envelopes.
    const span = tracer().startSpan(
      RUN_SPAN,
      { kind: SpanKind.SERVER, root: true, attributes: { [ATTR.PALISADE_RUN_ID]: runId, [ATTR.PALISADE_PRINCIPAL_ID]: principal.data.id, [ATTR.GEN_AI_AGENT_NAME]: name } },
      ROOT_CONTEXT,
    );
    try {
      const traceContext = injectTrace(trace.setSpan(ROOT_CONTEXT, span));
      return await this.enqueueStart(runId, now, name, input, principal.data, budget.data, traceContext);
    } catch (error) {
      recordError(span, error);
      throw error;
    } finally {
      span.end();
    }
  }

  private async enqueueStart(
    runId: string,
    now: number,
    name: string,
    input: string,
    principal: Envelope['principal'],
    budget: Budget,
    traceContext: Envelope['trace'],
  ): Promise<Run> {
    const envelope: Envelope = {
      v: ENVELOPE_VERSION,
      kind: 'start',
      runId,
      messageId: runId,
      sender: 'edge',
      receiver: name,
      principal,
      chain: [name],
      depth: 0,
      hops: 0,
      budget,
      label: BOTTOM,
      messages: [{ role: 'user', content: input }],
      ...(traceContext ? { trace: traceContext } : {}),
      issuedAt: now,
    };
    const payload: JobData = { envelope: this.auth ? this.sealAtEdge(envelope) : envelope };
    const size = Buffer.byteLength(JSON.stringify(payload));
    if (size > this.maxMessageBytes) throw new InvalidRunInputError(`input of ${size} bytes exceeds the message limit of ${this.maxMessageBytes}`);
    const store = this.transport.store;
    const started = { type: 'run.started', agent: name, input, principal: principal.id } as const;
    try {
      // Nothing is written before the layout is known to be the deployment's: a run must not land in a cell nobody reads.
      await this.transport.ready();
      await store.createRun({ id: runId, agent: name, principal, createdAt: now }, started);
    } catch (error) {
      throw unavailable(error);
    }
    try {
      await this.auditFor(EDGE)?.append(auditEntryFor(started, { runId, principal, chain: [name] })!);
      await this.transport.enqueue(runId, name, runId, payload);
    } catch (error) {
      // The record exists but no worker will see the run: end it, if Redis lets us, so it does not look alive.
      await failRun(store, this.auditFor(EDGE), 'the run could not be queued', { runId, principal, chain: [name] }).catch(() => undefined);
      throw unavailable(error);
    }
    return new Run(runId, store, true, clearanceFor(this.policy));
  }

  /** The edge signs its grant of principal, budget and this first message (once per run), then MACs the first hop. */
  private sealAtEdge(envelope: Envelope): Envelope {
    const auth = this.auth!;
    if (!auth.keyring.has(EDGE, envelope.receiver)) throw new InvalidRunInputError(`this process holds no edge key for '${envelope.receiver}': load the edge's key file to start runs`);
    if (!auth.keyring.edge.canSign) throw new InvalidRunInputError("this process holds no signing key of the edge: load the edge's key file (edge.json; run `palisade keys generate` again if it predates edge signatures)");
    return auth.sealStart(envelope);
  }

  /** The policy's budget fills what the starter left open and caps what it asked for. */
  private budgetFor(requested: Budget): Budget {
    const limit = this.policy?.limits.budget;
    if (!limit) return requested;
    const tokens = [requested.tokens, limit.tokens].filter((t): t is number => t !== undefined);
    const deadlines = [requested.deadline, limit.deadlineMs !== undefined ? Date.now() + limit.deadlineMs : undefined].filter((d): d is number => d !== undefined);
    return {
      ...requested,
      ...(tokens.length ? { tokens: Math.min(...tokens) } : {}),
      ...(deadlines.length ? { deadline: Math.min(...deadlines) } : {}),
    };
  }

  /** Approval requests and decisions; deciding needs the edge's keys when the workers have keys. */
  get approvals(): Approvals {
    this.approvalDesk ??= new Approvals({ transport: this.transport, policy: this.policy, auth: this.auth, audit: this.auditFor(EDGE) });
    return this.approvalDesk;
  }

  /**
   * Undoes what a run did, newest first, each action in the worker of the agent that did it.
   * Returns once the steps are queued; `rollback.completed` in the run's events reports the outcome.
   */
  async rollback(runId: string, options: { by: string; reason?: string }): Promise<RollbackStarted> {
    const run = await this.transport.store.getRun(runId);
    if (!run) throw new InvalidRunInputError(`no run ${runId} exists`);
    const audit = this.auditFor(EDGE);
    const started = await startRollback({
      transport: this.transport,
      runId,
      trigger: 'operator',
      by: options.by,
      reason: options.reason ?? `rolled back by ${options.by}`,
      auth: this.auth,
      emit: (event) => recordRunEvent(this.transport.store, audit, event, { runId, principal: run.principal, chain: [run.agent] }),
    });
    return started!;
  }

  /** A handle on an existing run by id. */
  run(runId: string): Run {
    // It reads as the run's principal, cleared by the policy as for a reply to them.
    return new Run(runId, this.transport.store, false, clearanceFor(this.policy));
  }

  /** Serves agents' queues in this process. */
  async startWorkers(options: WorkerOptions = {}): Promise<string[]> {
    const names = options.agents ?? [...this.agents.keys()];
    const unknown = names.filter((n) => !this.agents.has(n));
    if (unknown.length > 0) throw new UnknownAgentError(unknown[0]!, [...this.agents.keys()]);
    // A worker must be able to check the edge's signatures and write approval requests the edge can check.
    const missing = this.auth && names.map((n) => this.auth!.keyring.missingForWorker(n)).find((m) => m !== undefined);
    if (missing) throw new KeyError(missing);
    for (const name of names) {
      this.consumers.push(
        this.transport.consume(name, (task) => this.loop.handle(task), {
          concurrency: options.concurrency ?? 8,
          onFailed: (_jobId, data, error) => void this.onJobFailed(data, error),
        }),
      );
    }
    await this.transport.announce(names);
    return names;
  }

  /** A job that failed outside the loop's control (it stalled too often, Redis errors): the run must not hang. */
  private async onJobFailed(data: unknown, error: Error): Promise<void> {
    const raw = (data as { envelope?: unknown } | undefined)?.envelope;
    const parsed = EnvelopeSchema.safeParse(raw);
    // Only a job that is what it claims to be may end its run: forged data must not end someone else's.
    if (!parsed.success || parsed.data.kind === 'delegate') return;
    if (this.auth?.check(raw as Record<string, unknown>, parsed.data)) return;
    const envelope = parsed.data;
    const reason = `${envelope.receiver} failed`;
    const ctx = { runId: envelope.runId, principal: envelope.principal, chain: envelope.chain, agent: envelope.receiver };
    // The error may quote what the run carried (a model's or a guard's error text): it goes with the most its context held.
    const events = await this.transport.store.listEvents(envelope.runId).catch(() => []);
    const quote = { text: error.message, label: contextLabel(events.map((e) => e.event), envelope.label) };
    if (await failRun(this.transport.store, this.auditFor(envelope.receiver), reason, ctx, quote).catch(() => false)) {
      if (this.policy?.rollback.onFailure) {
        await startRollback({ transport: this.transport, runId: envelope.runId, trigger: 'failure', reason, auth: this.auth, endedBy: envelope.receiver }).catch(() => undefined);
      }
    }
  }

  /** Stops workers (waiting up to `timeoutMs` for jobs in hand) and closes the transport. */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    await Promise.all(this.consumers.splice(0).map((c) => c.close(options.timeoutMs ?? 10_000)));
    await this.auditLogs?.close();
    this.auditLogs = undefined;
    this.auditSinks.clear();
    await this.transport.close();
  }
}
