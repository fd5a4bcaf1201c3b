import { permissionsOf, permits } from '../../guards/builtin/context.js';
import type { Policy } from '../../guards/policy/policy.js';
import type { ApprovalDecision, ApprovalState } from './approval.js';
import { recordRunEvent, type AuditSink } from '../audit/audit-trail.js';
import type { EnvelopeAuth } from '../identity/envelope-auth.js';
import type { RunEventInput } from '../events.js';
import { EDGE } from '../identity/keyring.js';
import { PrincipalSchema, type Principal, type PrincipalInput } from '../../agents/principal.js';
import type { Transport } from '../transports/transport.js';

/** A decision that cannot be made: unknown request, already decided or expired, or a decider without the permission. */
export class ApprovalError extends Error {
  override readonly name = 'ApprovalError';
  constructor(
    message: string,
    readonly code: 'not_found' | 'decided' | 'expired' | 'forbidden' | 'invalid',
  ) {
    super(message);
  }
}

export interface ApprovalsOptions {
  transport: Transport;
  /** The policy whose roles say who holds `approve:...` permissions. */
  policy?: Policy;
  /** The edge's keys: a decision is authenticated for the waiting agent, which refuses one without. */
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

/** Whether a principal may decide on a request, and why not. */
export function mayDecide(policy: Policy | undefined, by: Principal, state: ApprovalState): string | undefined {
  const { request } = state;
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

  /** Requests waiting for a decision, oldest first (expired ones stay until their worker notices). */
  pending(): Promise<ApprovalState[]> {
    return this.store.pendingApprovals();
  }

  async get(id: string): Promise<ApprovalState> {
    const state = await this.store.getApproval(id);
    if (!state) throw new ApprovalError(`no approval request '${id}'`, 'not_found');
    return state;
  }

  /** Records an approval or denial and wakes the waiting run. */
  async decide(id: string, options: DecideOptions): Promise<ApprovalDecision> {
    const by = PrincipalSchema.safeParse(options.by);
    if (!by.success) throw new ApprovalError(`invalid decider: ${by.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, 'invalid');
    const state = await this.get(id);
    const { request } = state;
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
    };
    const auth = this.options.auth;
    if (auth && !auth.keyring.has(EDGE, request.agent)) throw new ApprovalError(`this process holds no edge key for '${request.agent}': load the edge's key file to decide`, 'invalid');
    if (!(await this.store.decideApproval(auth ? auth.sealDecision(request.agent, decision) : decision))) {
      const now = await this.store.getApproval(id);
      throw new ApprovalError(`request '${id}' was decided meanwhile (${now?.decision?.status ?? 'unknown'})`, 'decided');
    }
    const event: RunEventInput = { type: 'approval.decided', approvalId: id, subject: request.subject, status: decision.status, by: by.data.id, ...(note ? { note } : {}) };
    await recordRunEvent(this.store, this.options.audit, event, { runId: request.runId, principal: request.principal, chain: request.chain });
    await this.options.transport.wake(request.agent, request.jobId);
    return decision;
  }
}
