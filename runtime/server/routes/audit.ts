import { cellStores, readAnchors } from '../../audit/anchors.js';
import type { AuditRecord } from '../../audit/audit-record.js';
import type { VerifyReport } from '../../audit/chain-verifier.js';
import { EDGE_PERMISSIONS } from '../access.js';
import type { ServerContext } from '../context.js';
import { forbidden } from '../errors.js';
import { defineRoute, type Route } from '../route.js';
import { AuditOut, AuditQuery } from '../schemas.js';

/** Records one query reads at most while filtering, so a rare filter costs a bounded scan; `next` continues it. */
const MAX_SCAN = 20_000;
const MAX_PROBLEMS = 100;

type Status = 'verified' | 'unanchored' | 'unverified' | 'tampered';

export function auditRoutes(ctx: ServerContext): Route[] {
  // Verifying reads and hashes the whole log: concurrent queries share one pass, and a result serves for a short while.
  let last: { at: number; report: Promise<{ report: VerifyReport; status: Status }> } | undefined;
  const { keys, anchors } = ctx.audit;
  // Without the writers' public keys only the edge's own records can be checked: the rest is unverified, not tampered.
  const everyWriter = keys !== undefined && Object.keys(keys.publicKeys).length > 0;
  const check = async (): Promise<{ report: VerifyReport; status: Status }> => {
    const stores = anchors && cellStores(anchors.store, ctx.logs.cells.count);
    const report = await ctx.logs.verify(async (prefix, cell) => ({
      ...(keys ? { keys: keys.secrets ?? {}, publicKeys: keys.publicKeys } : {}),
      ...(everyWriter ? {} : { allowUnsigned: true }),
      ...(anchors && stores ? { anchors: await readAnchors([stores[cell]!], anchors.keys, prefix) } : {}),
      // Signatures up to a verified anchor were checked by its anchorer; the chain must still lead to it.
      trustVouched: true,
    }));
    // A log that no anchor pins yet is no better than one without anchors.
    const anchored = anchors !== undefined && (report.anchor || report.entries === 0);
    return { report, status: !report.ok ? 'tampered' : !everyWriter ? 'unverified' : !anchored ? 'unanchored' : 'verified' };
  };
  const verified = (): Promise<{ report: VerifyReport; status: Status }> => {
    if (last && Date.now() - last.at < ctx.auditVerifyReuseMs) return last.report;
    const report = check();
    const entry = { at: Date.now(), report };
    last = entry;
    report.catch(() => {
      if (last === entry) last = undefined;
    });
    return report;
  };
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/audit',
      tag: 'audit',
      summary: 'Audit records, newest first, and whether the hash chain is intact (needs read:audit)',
      query: AuditQuery,
      ok: { status: 200, description: "records matching the filters, and the verification of the whole log (every writer's signatures with the keys the server was given, the anchors; at most a few seconds old)", schema: AuditOut },
      errors: [403],
      handler: async ({ principal, query }) => {
        if (!ctx.access.holds(principal, EDGE_PERMISSIONS.readAudit)) throw forbidden(`'${principal.id}' may not read the audit log: that needs ${EDGE_PERMISSIONS.readAudit}`);
        const matches = (r: AuditRecord): boolean =>
          (query.runId === undefined || r.runId === query.runId) &&
          (query.principal === undefined || r.principal === query.principal) &&
          (query.action === undefined || r.action === query.action) &&
          (principal.tenant === undefined || r.tenant === principal.tenant);
        const entries: AuditRecord[] = [];
        const { next } = await ctx.logs.page(ctx.redis, {
          ...(query.before !== undefined ? { before: query.before } : {}),
          limit: query.limit,
          maxScan: MAX_SCAN,
          take: (item) => {
            if (!('record' in item) || !matches(item.record)) return false;
            entries.push(item.record);
            return true;
          },
        });
        const { report, status } = await verified();
        const ok = status === 'verified';
        // The whole log holds every tenant's records: a tenant's auditor learns whether it is intact, not what it holds.
        const verification =
          principal.tenant !== undefined
            ? { ok, status, problemCount: report.problems.length, problems: [] }
            : {
                ok,
                status,
                entries: report.entries,
                // Checked here, or by whoever took the verified anchor that vouches for them.
                macsVerified: report.macsVerified + report.vouched,
                unsigned: report.unsigned,
                head: report.head ?? null,
                ...(report.anchor !== undefined ? { anchor: report.anchor && { seq: report.anchor.seq, at: report.anchor.at, verified: report.anchor.verified } } : {}),
                ...(report.sinceAnchor !== undefined ? { sinceAnchor: report.sinceAnchor } : {}),
                problemCount: report.problems.length,
                problems: report.problems.slice(0, MAX_PROBLEMS).map((p) => ({ seq: p.seq, problem: p.problem, detail: p.detail })),
              };
        return {
          entries: entries.map(({ streamId: _streamId, ...r }) => r),
          ...(next !== undefined ? { next } : {}),
          verification,
        };
      },
    }),
  ];
}
