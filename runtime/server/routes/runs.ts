import type { Principal } from '../../../agents/principal.js';
import { clearanceFor, eventFor, readerOf } from '../../event-view.js';
import type { RunRecord } from '../../stores/run-store.js';
import { EDGE_PERMISSIONS, type EdgePermission } from '../access.js';
import { visibleRun, type ServerContext } from '../context.js';
import { forbidden } from '../errors.js';
import { defineRoute, type Route } from '../route.js';
import { listRuns } from '../run-index.js';
import { jaegerSearchUrl, runOut, summarizeChain } from '../run-summary.js';
import { CancelBody, CancelledOut, ListRunsQuery, RollbackBody, RollbackOut, RunDetailOut, RunIdParams, RunListOut, startRunBody, StartedOut } from '../schemas.js';

export function runRoutes(ctx: ServerContext): Route[] {
  const { access } = ctx;
  // What runs quote reaches a caller only as far as the policy clears them, as for a reply; a run's principal gets its output.
  const clearanceOf = clearanceFor(ctx.policy);
  /** The run, when the caller may act on it under `permission`: 404 when it may not see it, 403 when it sees it but may not act. */
  const runToActOn = async (principal: Principal, runId: string, permission: EdgePermission, what: string): Promise<RunRecord> => {
    const { run } = await visibleRun(ctx, principal, runId, permission);
    if (!access.reaches(principal, run.principal, permission)) throw forbidden(`'${principal.id}' may not ${what}: that needs ${permission}`);
    return run;
  };
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/runs',
      tag: 'runs',
      summary: 'Start a run at an agent, acting for the caller',
      body: startRunBody(ctx.maxInputChars),
      ok: { status: 202, description: 'the run is queued; follow it at /v1/runs/{id}/events', schema: StartedOut },
      handler: async ({ principal, body, reply }) => {
        // The run acts for the verified caller; the body has no say in who that is (unknown fields are refused).
        const run = await ctx.runtime.start(body.agent, body.input, { principal });
        void reply.header('location', `/v1/runs/${run.id}`);
        return { runId: run.id, status: 'running' as const };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/runs',
      tag: 'runs',
      summary: "Recent runs: the caller's own, or every run for holders of read:runs (others' outputs only in each run's own view)",
      query: ListRunsQuery,
      ok: { status: 200, description: 'newest first', schema: RunListOut },
      handler: async ({ principal, query }) => {
        const operator = access.holds(principal, EDGE_PERMISSIONS.readRuns);
        const page = await listRuns({
          redis: ctx.redis,
          logs: ctx.logs,
          store: ctx.store,
          limit: query.limit,
          ...(query.before !== undefined ? { before: query.before } : {}),
          candidate: (r) => (operator ? principal.tenant === undefined || r.tenant === principal.tenant : r.principal === principal.id),
          visible: (run) => access.reaches(principal, run.principal, EDGE_PERMISSIONS.readRuns),
        });
        return { runs: page.runs.map((run) => runOut(run, readerOf(principal, run.principal, clearanceOf))), ...(page.next !== undefined ? { next: page.next } : {}) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/runs/:id',
      tag: 'runs',
      summary: 'A run: its record and what happened along its chain of agents',
      params: RunIdParams,
      ok: { status: 200, description: 'the run', schema: RunDetailOut },
      errors: [404],
      handler: async ({ principal, params }) => {
        const { run, as } = await visibleRun(ctx, principal, params.id);
        const events = (await ctx.store.listEvents(run.id)).map((e) => e.event);
        const reader = readerOf(principal, run.principal, clearanceOf);
        const to = run.status === 'running' ? Date.now() : run.updatedAt;
        const detail = {
          ...runOut(run, reader, events),
          ...summarizeChain(events.map((e) => eventFor(e, reader))),
          ...(ctx.jaeger ? { traceUrl: jaegerSearchUrl(ctx.jaeger.url, ctx.jaeger.service, run.id, { from: run.createdAt, to }) } : {}),
        };
        if (as !== 'approver') return detail;
        // Approvers decide on the request's redacted arguments; the run's own words (which may carry personal data) stay with its principal and operators.
        const { input: _input, output: _output, error: _error, ...redacted } = detail;
        return { ...redacted, redacted: true };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/runs/:id/cancel',
      tag: 'runs',
      summary: 'Cancel a run at its next step (own runs, or any with cancel:runs)',
      params: RunIdParams,
      body: CancelBody,
      ok: { status: 200, description: 'whether this request ended the run', schema: CancelledOut },
      errors: [403, 404],
      handler: async ({ principal, params, body }) => {
        const run = await runToActOn(principal, params.id, EDGE_PERMISSIONS.cancelRuns, 'cancel runs of others');
        const cancelled = await ctx.runtime.run(run.id).cancel(body.reason ?? `cancelled by ${principal.id}`);
        const now = await ctx.store.getRun(run.id);
        return { runId: run.id, cancelled, status: now?.status ?? run.status };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/runs/:id/rollback',
      tag: 'runs',
      summary: "Undo a run's side effects, newest first (needs rollback:runs)",
      params: RunIdParams,
      body: RollbackBody,
      ok: { status: 202, description: 'the compensations are queued; rollback.completed in the run events reports the outcome', schema: RollbackOut },
      errors: [403, 404],
      handler: async ({ principal, params, body }) => {
        const run = await runToActOn(principal, params.id, EDGE_PERMISSIONS.rollbackRuns, 'roll back runs');
        const started = await ctx.runtime.rollback(run.id, { by: principal.id, ...(body.reason !== undefined ? { reason: body.reason } : {}) });
        return { runId: run.id, rollbackId: started.rollbackId, actions: started.actions };
      },
    }),
  ];
}
