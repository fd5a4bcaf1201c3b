import type { z } from 'zod';
import type { ApprovalState } from '../../approval.js';
import { mayDecide } from '../../approvals.js';
import type { Principal } from '../../principal.js';
import { EDGE_PERMISSIONS } from '../access.js';
import type { ServerContext } from '../context.js';
import { forbidden, notFound } from '../errors.js';
import { defineRoute, type Route } from '../route.js';
import { ApprovalIdParams, ApprovalListOut, ApprovalOut, DecideBody, DecisionOut } from '../schemas.js';

/** Why the caller may not decide, or undefined. A principal with a tenant decides only its tenant's requests. */
function refusal(ctx: ServerContext, caller: Principal, state: ApprovalState): string | undefined {
  if (caller.tenant !== undefined && caller.tenant !== state.request.principal.tenant) return `'${caller.id}' may decide requests of tenant '${caller.tenant}' only`;
  return mayDecide(ctx.policy, caller, state);
}

function approvalOut(ctx: ServerContext, caller: Principal, state: ApprovalState): z.input<typeof ApprovalOut> {
  // The request's auth MAC and job coordinates are the workers' business, not the approver's.
  const { auth: _auth, jobId: _jobId, callId: _callId, argsHash: _argsHash, ...request } = state.request;
  const decision = state.decision && {
    status: state.decision.status,
    ...(state.decision.by ? { by: state.decision.by } : {}),
    at: state.decision.at,
    ...(state.decision.note !== undefined ? { note: state.decision.note } : {}),
  };
  return { request, ...(decision ? { decision } : {}), mayDecide: !state.decision && refusal(ctx, caller, state) === undefined };
}

export function approvalRoutes(ctx: ServerContext): Route[] {
  const desk = ctx.runtime.approvals;
  const decide = (approve: boolean): Route =>
    defineRoute({
      method: 'POST',
      url: `/v1/approvals/:id/${approve ? 'approve' : 'deny'}`,
      tag: 'approvals',
      summary: approve ? 'Approve a request: the waiting run checks it again and goes on' : 'Deny a request',
      params: ApprovalIdParams,
      body: DecideBody,
      ok: { status: 200, description: 'the decision is recorded and the waiting run woken', schema: DecisionOut },
      errors: [403, 404, 409],
      handler: async ({ principal, params, body }) => {
        const state = await desk.get(params.id);
        if (principal.tenant !== undefined && principal.tenant !== state.request.principal.tenant) throw forbidden(refusal(ctx, principal, state)!);
        // The desk refuses self-approval, missing permissions and stale requests; the waiting worker checks again.
        const decision = await desk.decide(params.id, { by: principal, approve, ...(body.reason ? { note: body.reason } : {}) });
        return { approvalId: decision.approvalId, status: decision.status, by: principal.id, at: decision.at };
      },
    });

  return [
    defineRoute({
      method: 'GET',
      url: '/v1/approvals',
      tag: 'approvals',
      summary: 'Pending requests the caller may decide',
      ok: { status: 200, description: 'oldest first', schema: ApprovalListOut },
      handler: async ({ principal }) => {
        const pending = await desk.pending();
        return pending.filter((s) => refusal(ctx, principal, s) === undefined).map((s) => approvalOut(ctx, principal, s));
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/approvals/:id',
      tag: 'approvals',
      summary: 'One request and its decision (for its approvers, the run’s principal and holders of read:runs)',
      params: ApprovalIdParams,
      ok: { status: 200, description: 'the request', schema: ApprovalOut },
      errors: [404],
      handler: async ({ principal, params }) => {
        const state = await desk.get(params.id);
        const { request } = state;
        const own = request.principal.id === principal.id && request.principal.tenant === principal.tenant;
        const visible = own || refusal(ctx, principal, state) === undefined || ctx.access.reaches(principal, request.principal, EDGE_PERMISSIONS.readRuns);
        if (!visible) throw notFound(`no approval request '${params.id}' that you may see`);
        return approvalOut(ctx, principal, state);
      },
    }),

    decide(true),
    decide(false),
  ];
}
