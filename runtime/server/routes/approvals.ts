import type { z } from 'zod';
import type { ApprovalState, ReviewedApproval } from '../../approvals/approval.js';
import { ApprovalError, lacksAuthority, notClearedFor } from '../../approvals/approvals.js';
import { cleared, clearanceFor, readerOf, WITHHELD } from '../../event-view.js';
import type { Principal } from '../../../agents/principal.js';
import { EDGE_PERMISSIONS } from '../access.js';
import type { ServerContext } from '../context.js';
import { forbidden, notFound } from '../errors.js';
import { defineRoute, type Route } from '../route.js';
import { ApprovalIdParams, ApprovalListOut, ApprovalOut, DecideBody, DecisionOut } from '../schemas.js';

/**
 * Why the caller is not among a request's approvers, or undefined. A principal with a tenant decides
 * only its tenant's requests; a request that failed verification nobody may decide (a state without
 * its verification asks about the caller's permission alone).
 */
function notApprover(ctx: ServerContext, caller: Principal, state: ApprovalState | ReviewedApproval): string | undefined {
  if (caller.tenant !== undefined && caller.tenant !== state.request.principal.tenant) return `'${caller.id}' may decide requests of tenant '${caller.tenant}' only`;
  return lacksAuthority(ctx.policy, caller, state);
}

/** Why the caller may not decide: not an approver, or an approver not cleared to read what they would approve. */
const refusal = (ctx: ServerContext, caller: Principal, state: ApprovalState | ReviewedApproval): string | undefined =>
  notApprover(ctx, caller, state) ?? notClearedFor(ctx.policy, caller, state.request);

/**
 * The request as `caller` may see it. Its arguments, sources and the approver's note are content of
 * the request's label, its quoted reasons of the quote's: a reader the policy does not clear for them
 * (as for a reply to them: the run's principal, an operator, an approver alike) gets `withheld`
 * instead. The stored request keeps them whole: that is what its agent MAC'd and a decision binds.
 */
function approvalOut(ctx: ServerContext, caller: Principal, state: ReviewedApproval): z.input<typeof ApprovalOut> {
  // The request's auth MAC and job coordinates are the workers' business, not the approver's.
  const { auth: _auth, jobId: _jobId, callId: _callId, argsHash: _argsHash, sources, quote, ...stored } = state.request;
  const { verification } = state;
  const reader = readerOf(caller, undefined, clearanceFor(ctx.policy));
  const shown = cleared(reader, stored.label);
  const quoted = quote !== undefined && cleared(reader, quote.label);
  const withheld = !shown || (quote !== undefined && !quoted);
  // What failed verification may have been written by anyone: its free text is not passed on as if the agent had.
  const request =
    verification.status === 'refused'
      ? { ...stored, arguments: '', reasons: [], sources: [] }
      : { ...stored, arguments: shown ? stored.arguments : '', sources: shown ? (sources ?? []) : [], reasons: quoted ? [...stored.reasons, quote.text] : stored.reasons };
  const note = state.decision?.note;
  const decision = verification.status !== 'refused' && state.decision && {
    status: state.decision.status,
    // The approver's id only: their roles, tenant and attributes are not the run owner's business.
    ...(state.decision.by ? { by: { id: state.decision.by.id } } : {}),
    at: state.decision.at,
    ...(note !== undefined && shown ? { note } : {}),
  };
  return {
    request,
    ...(decision ? { decision } : {}),
    mayDecide: !state.decision && refusal(ctx, caller, state) === undefined,
    verification,
    ...(verification.status !== 'refused' && withheld ? { withheld: WITHHELD } : {}),
  };
}

export function approvalRoutes(ctx: ServerContext): Route[] {
  const desk = ctx.runtime.approvals;
  /** The request, for its run's principal, its approvers and holders of read:runs; one 404 for everyone else, whether or not it exists. */
  const visibleApproval = async (id: string, caller: Principal): Promise<ReviewedApproval> => {
    const state = await desk.get(id).catch((error: unknown) => {
      if (error instanceof ApprovalError && error.code === 'not_found') return undefined;
      throw error;
    });
    const request = state?.request;
    const own = request !== undefined && request.principal.id === caller.id && request.principal.tenant === caller.tenant;
    // An approver not cleared for its content still sees the request (content withheld), and may not decide it.
    const approver = state !== undefined && notApprover(ctx, caller, { request: state.request }) === undefined;
    if (state && request && (own || approver || ctx.access.reaches(caller, request.principal, EDGE_PERMISSIONS.readRuns))) return state;
    throw notFound(`no approval request '${id}' that you may see`);
  };
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
        const state = await visibleApproval(params.id, principal);
        // Refused before the desk says whether it is decided or expired: that, and who decided, is for those who may decide.
        // Nobody approves blind: an approver not cleared to read the request is refused here (403), as by the desk.
        const refused = refusal(ctx, principal, { request: state.request });
        if (refused) throw forbidden(refused);
        // The desk refuses unverifiable requests, self-approval, missing permissions and stale requests; the waiting worker checks again.
        const decision = await desk.decide(params.id, { by: principal, approve, ...(body.reason ? { note: body.reason } : {}) });
        return { approvalId: decision.approvalId, status: decision.status, by: principal.id, at: decision.at };
      },
    });

  return [
    defineRoute({
      method: 'GET',
      url: '/v1/approvals',
      tag: 'approvals',
      summary: 'Pending requests the caller may decide (those that failed verification flagged, content above the caller\'s clearance withheld)',
      ok: { status: 200, description: 'oldest first', schema: ApprovalListOut },
      handler: async ({ principal }) => {
        const pending = await desk.pending();
        return pending.filter((s) => notApprover(ctx, principal, { request: s.request }) === undefined).map((s) => approvalOut(ctx, principal, s));
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
        return approvalOut(ctx, principal, await visibleApproval(params.id, principal));
      },
    }),

    decide(true),
    decide(false),
  ];
}
