import { flowsTo } from '../../agents/label.js';
import { describeLabel, permissionsOf, permits } from '../../guards/builtin/context.js';
import { replyClearance } from '../../guards/builtin/flow.js';
import type { Policy } from '../../guards/policy/policy.js';
import { approvalDigest, ApprovalDecisionSchema, ApprovalRequestSchema, type ApprovalDecision, type ApprovalState, type ReviewedApproval } from './approval.js';
import { recordRunEvent, type AuditSink } from '../audit/audit-trail.js';
import type { EnvelopeAuth } from '../identity/envelope-auth.js';
import type { RunEventInput } from '../events.js';
import { PrincipalSchema, type Principal, type PrincipalInput } from '../../agents/principal.js';
import type { Transport } from '../transports/transport.js';

/**
 * A decision that cannot be made: unknown request, already decided or expired, a decider without the
 * permission, a request that fails verification (`unverifiable`), or an edge without its keys (`invalid`).
 */
export class ApprovalError extends Error {
  override readonly name = 'ApprovalError';
  constructor(
    message: string,
    readonly code: 'not_found' | 'decided' | 'expired' | 'forbidden' | 'invalid' | 'unverifiable',
  ) {
    super(message);
  }
}

export interface ApprovalsOptions {
  transport: Transport;
  /** The policy whose roles say who holds `approve:...` permissions. */
  policy?: Policy;
  /** The edge's keys: requests are checked before they are shown or decided, and decisions signed for the waiting agent, which refuses one without. */
  auth?: EnvelopeAuth;
  /** The edge's audit log. */
  audit?: AuditSink;
}

export interface DecideOptions {
  /** The decider, from verified credentials. */
  by: PrincipalInput;
  approve: boolean;
  note?: string;
}

/**
 * Why a principal may not see a request's content (its arguments, sources, quoted reasons, the
 * approver's note), or undefined: its label is above what the policy clears them for, as for a
 * reply to them. Without a policy nothing is withheld (and nobody may decide).
 */
export function notClearedFor(policy: Policy | undefined, reader: Principal, request: ApprovalState['request']): string | undefined {
  if (!policy) return undefined;
  const clearance = replyClearance(policy.clearance, reader.roles);
  if (flowsTo(request.label, clearance)) return undefined;
  return `'${reader.id}' is not cleared to see what it approves: the request is ${describeLabel(request.label)}, above their clearance (${describeLabel(clearance)})`;
}

/**
 * Whether a principal may decide on a request, and why not: a request that failed verification may
 * not be decided by anyone, nor one the decider is not cleared to read (nobody approves blind).
 */
export function mayDecide(policy: Policy | undefined, by: Principal, state: ApprovalState & { verification?: ReviewedApproval['verification'] }): string | undefined {
  return lacksAuthority(policy, by, state) ?? notClearedFor(policy, by, state.request);
}

/** Why a principal is not among a request's approvers (whether or not cleared to read it), or undefined. */
export function lacksAuthority(policy: Policy | undefined, by: Principal, state: ApprovalState & { verification?: ReviewedApproval['verification'] }): string | undefined {
  const { request } = state;
  if (state.verification?.status === 'refused') return `the request failed verification: ${state.verification.problem}`;
  if (!policy || !permits(permissionsOf(policy, by.roles), request.permission)) return `'${by.id}' lacks the permission ${request.permission}`;
  if (!request.selfApproval && by.id === request.principal.id) return `'${by.id}' started this run and may not decide on its own request`;
  return undefined;
}

/** The approvers' side: what waits for a decision, and deciding it. The waiting worker checks the decision again. */
export class Approvals {
  constructor(private readonly options: ApprovalsOptions) {}

  private get store() {
    return this.options.transport.store;
  }

  /**
   * Requests waiting for a decision, oldest first (expired ones stay until their worker notices), each
   * with its verification; one too malformed to show is left out (`get` says why).
   */
  async pending(): Promise<ReviewedApproval[]> {
    const states = await this.store.pendingApprovals();
    return states.flatMap((state) => {
      const reviewed = this.review(state, state.request?.id);
      return typeof reviewed === 'string' ? [] : [reviewed];
    });
  }

  /** One request with its verification. */
  async get(id: string): Promise<ReviewedApproval> {
    return (await this.load(id)).reviewed;
  }

  /** The request as read (what MACs and digests cover) and as reviewed, from one read. */
  private async load(id: string): Promise<{ raw: ApprovalState; reviewed: ReviewedApproval }> {
    const raw = await this.store.getApproval(id);
    if (!raw) throw new ApprovalError(`no approval request '${id}'`, 'not_found');
    const reviewed = this.review(raw, id);
    if (typeof reviewed === 'string') throw new ApprovalError(`request '${id}' cannot be shown: ${reviewed}`, 'unverifiable');
    return { raw, reviewed };
  }

  /**
   * Checks a request as read from Redis: its shape, that the agent it names wrote it (its MAC on the
   * link agent → edge) under this id, and that its decision, if any, is authentic. Returns why it
   * cannot even be shown (malformed), or the request with what the check found.
   */
  private review(raw: ApprovalState, id: string | undefined): ReviewedApproval | string {
    const request = ApprovalRequestSchema.safeParse(raw.request);
    if (!request.success) return `it is malformed (${request.error.issues[0]?.path.join('.') || '(root)'}: ${request.error.issues[0]?.message ?? 'invalid'})`;
    const decision = raw.decision === undefined ? undefined : ApprovalDecisionSchema.safeParse(raw.decision);
    const state: ApprovalState = { request: request.data, ...(decision?.success ? { decision: decision.data } : {}) };
    const auth = this.options.auth;
    if (!auth) return { ...state, verification: { status: 'unauthenticated' } };
    const problem =
      (request.data.id !== id ? `it is stored under another id ('${id}')` : undefined) ??
      // The MACs cover the request and decision as their writers wrote them, which the store's JSON.parse gives back.
      auth.checkApprovalRequest(raw.request) ??
      (decision && !decision.success ? 'its decision is malformed' : undefined) ??
      (raw.decision ? auth.checkDecision(request.data.agent, raw.decision) : undefined) ??
      (raw.decision && raw.decision.requestDigest !== approvalDigest(raw.request) ? 'its decision was made on another request' : undefined);
    return { ...state, verification: problem ? { status: 'refused', problem } : { status: 'verified' } };
  }

  /**
   * Records an approval or denial and wakes the waiting run. Only a verified request is decided, and
   * the decision binds its digest: the waiting agent acts only if it is the request it wrote.
   */
  async decide(id: string, options: DecideOptions): Promise<ApprovalDecision> {
    const by = PrincipalSchema.safeParse(options.by);
    if (!by.success) throw new ApprovalError(`invalid decider: ${by.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, 'invalid');
    const auth = this.options.auth;
    if (auth && !auth.keyring.edge.canSign) throw new ApprovalError(`this process holds no signing key of the edge: load the edge's key file (edge.json) to decide`, 'invalid');
    const { raw, reviewed: state } = await this.load(id);
    const { request } = state;
    if (state.verification.status === 'refused') throw new ApprovalError(`request '${id}' cannot be decided: it failed verification (${state.verification.problem})`, 'unverifiable');
    if (state.decision) throw new ApprovalError(`request '${id}' was already ${state.decision.status}${state.decision.by ? ` by ${state.decision.by.id}` : ''}`, 'decided');
    if (Date.now() >= request.expiresAt) throw new ApprovalError(`request '${id}' expired at ${new Date(request.expiresAt).toISOString()}`, 'expired');
    const run = await this.store.getRun(request.runId);
    if (run?.status !== 'running') throw new ApprovalError(`the run of request '${id}' has ended (${run?.status ?? 'gone'})`, 'expired');
    const forbidden = mayDecide(this.options.policy, by.data, state);
    if (forbidden) throw new ApprovalError(forbidden, 'forbidden');
    const note = options.note?.trim().slice(0, 2000);
    const decision: ApprovalDecision = {
      approvalId: id,
      status: options.approve ? 'approved' : 'denied',
      by: by.data,
      at: Date.now(),
      ...(note ? { note } : {}),
      argsHash: request.argsHash,
      requestDigest: approvalDigest(raw.request),
    };
    if (!(await this.store.decideApproval(auth ? auth.sealDecision(request.agent, decision) : decision))) {
      const now = await this.store.getApproval(id);
      throw new ApprovalError(`request '${id}' was decided meanwhile (${now?.decision?.status ?? 'unknown'})`, 'decided');
    }
    // The note is free text about the request: quoted with its label, so only readers cleared for it read it.
    const event: RunEventInput = { type: 'approval.decided', approvalId: id, subject: request.subject, status: decision.status, by: by.data.id, ...(note ? { quote: { text: note, label: request.label } } : {}) };
    await recordRunEvent(this.store, this.options.audit, event, { runId: request.runId, principal: request.principal, chain: request.chain });
    await this.options.transport.wake(request.runId, request.agent, request.jobId);
    return decision;
  }
}
