import type { RedisClient } from '../redis-url.js';
import type { AnchorPublicKeys, AnchorStore } from '../audit/anchors.js';
import type { AuditVerifyKeys } from '../audit/audit-keys.js';
import type { AuditLogs } from '../audit/audit-logs.js';
import type { Policy } from '../../guards/policy/policy.js';
import type { Principal } from '../../agents/principal.js';
import type { RunRecord, RunStore } from '../stores/run-store.js';
import type { Runtime } from '../runtime.js';
import type { ApprovalState } from '../approvals/approval.js';
import { mayDecide } from '../approvals/approvals.js';
import { Access, EDGE_PERMISSIONS, type EdgePermission } from './access.js';
import { notFound } from './errors.js';

/** What the routes share: the edge's runtime, its Redis, the policy and the server's settings. */
export interface ServerContext {
  runtime: Runtime;
  store: RunStore;
  redis: RedisClient;
  prefix: string;
  /** The deployment's audit logs, one per cell, for reading (this instance never appends). */
  logs: AuditLogs;
  policy: Policy | undefined;
  access: Access;
  maxInputChars: number;
  jaeger?: { url: string; service: string };
  /** What the audit log is verified with: the writers' keys (none: the API calls the log unverified), and the anchors' store and public keys (none: unanchored). */
  audit: { keys?: AuditVerifyKeys; anchors?: { store: AnchorStore; keys: AnchorPublicKeys } };
  /** How long one wait for new run events blocks, in ms. */
  eventPollMs: number;
  /** An idle event stream sends a comment this often, so proxies keep it open. */
  heartbeatMs: number;
  /** Event streams one principal may hold open at once, across every edge sharing the Redis. */
  maxStreamsPerPrincipal: number;
  /** An event stream ends after this long; the client resumes with Last-Event-ID. */
  streamLifetimeMs: number;
  /** How long one verification of the audit log answers queries (ms). */
  auditVerifyReuseMs: number;
  /** The open event streams, ended when the server closes. */
  streams: Set<AbortController>;
}

/**
 * Whether the caller is an approver of the run: asked to decide one of its pending requests (they see
 * the run they are asked about), or the one who decided one (they follow what their decision did).
 */
async function approverOf(ctx: ServerContext, caller: Principal, runId: string): Promise<boolean> {
  const sameTenant = (s: ApprovalState) => caller.tenant === undefined || caller.tenant === s.request.principal.tenant;
  const pending = await ctx.runtime.approvals.pending();
  if (pending.some((s) => s.request.runId === runId && sameTenant(s) && mayDecide(ctx.policy, caller, s) === undefined)) return true;
  const requested = (await ctx.store.listEvents(runId)).flatMap(({ event }) => (event.type === 'approval.requested' ? [event.approvalId] : []));
  for (const id of requested) {
    const state = await ctx.store.getApproval(id);
    const by = state?.decision?.by;
    if (state && by && by.id === caller.id && by.tenant === caller.tenant && sameTenant(state)) return true;
  }
  return false;
}

/** How the caller reaches a run: as its principal, through an edge permission, or as one of its approvers. */
export type RunAccess = 'principal' | 'operator' | 'approver';

/**
 * The run, if the caller may see it: its principal, a holder of `read:runs` (or of `via`, for the
 * route that needs it), or one of its approvers. Otherwise 404, so ids are not confirmed.
 */
export async function visibleRun(ctx: ServerContext, caller: Principal, runId: string, via?: EdgePermission): Promise<{ run: RunRecord; as: RunAccess }> {
  const run = await ctx.store.getRun(runId);
  if (run) {
    if (caller.id === run.principal.id && caller.tenant === run.principal.tenant) return { run, as: 'principal' };
    if (ctx.access.reaches(caller, run.principal, EDGE_PERMISSIONS.readRuns) || (via && ctx.access.reaches(caller, run.principal, via))) return { run, as: 'operator' };
    if (await approverOf(ctx, caller, runId)) return { run, as: 'approver' };
  }
  throw notFound(`no run '${runId}' that you may see`);
}
