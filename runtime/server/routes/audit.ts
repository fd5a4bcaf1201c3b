import { AuditLog } from '../../audit/audit-log.js';
import type { AuditRecord } from '../../audit/audit-record.js';
import type { VerifyReport } from '../../audit/chain-verifier.js';
import { fromFields } from '../../audit/record-fields.js';
import { EDGE } from '../../identity/keyring.js';
import { EDGE_PERMISSIONS } from '../access.js';
import type { ServerContext } from '../context.js';
import { forbidden } from '../errors.js';
import { defineRoute, type Route } from '../route.js';
import { AuditOut, AuditQuery } from '../schemas.js';

const PAGE = 500;
/** Records one query reads at most while filtering, so a rare filter costs a bounded scan; `next` continues it. */
const MAX_SCAN = 20_000;
const MAX_PROBLEMS = 100;

export function auditRoutes(ctx: ServerContext): Route[] {
  // Reading only: this instance never appends, so its writer name matters not.
  const log = new AuditLog({ redis: ctx.redis, prefix: ctx.prefix, writer: EDGE });
  // Verifying reads and hashes the whole log: concurrent queries share one pass, and a result serves for a short while.
  let last: { at: number; report: Promise<VerifyReport> } | undefined;
  const verified = (): Promise<VerifyReport> => {
    if (last && Date.now() - last.at < ctx.auditVerifyReuseMs) return last.report;
    const report = log.verify(ctx.auditKeys ? { keys: ctx.auditKeys } : {});
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
      ok: { status: 200, description: "records matching the filters, and the verification of the whole log (the edge's own MACs checked; at most a few seconds old)", schema: AuditOut },
      errors: [403],
      handler: async ({ principal, query }) => {
        if (!ctx.access.holds(principal, EDGE_PERMISSIONS.readAudit)) throw forbidden(`'${principal.id}' may not read the audit log: that needs ${EDGE_PERMISSIONS.readAudit}`);
        const matches = (r: AuditRecord): boolean =>
          (query.runId === undefined || r.runId === query.runId) &&
          (query.principal === undefined || r.principal === query.principal) &&
          (query.action === undefined || r.action === query.action) &&
          (principal.tenant === undefined || r.tenant === principal.tenant);
        const entries: AuditRecord[] = [];
        let end = query.before !== undefined ? `(${query.before}-0` : '+';
        let next: number | undefined;
        let scanned = 0;
        scan: while (scanned < MAX_SCAN) {
          const rows = await ctx.redis.xrevrange(`${ctx.prefix}:audit`, end, '-', 'COUNT', PAGE);
          if (rows.length === 0) {
            next = undefined;
            break;
          }
          scanned += rows.length;
          for (const [id, flat] of rows) {
            const item = fromFields(id, flat);
            next = Number(id.split('-')[0]);
            if ('record' in item && matches(item.record)) {
              entries.push(item.record);
              if (entries.length >= query.limit) break scan;
            }
          }
          end = `(${rows[rows.length - 1]![0]}`;
        }
        const report = await verified();
        // The whole log holds every tenant's records: a tenant's auditor learns whether it is intact, not what it holds.
        const verification =
          principal.tenant !== undefined
            ? { ok: report.ok, problemCount: report.problems.length, problems: [] }
            : {
                ok: report.ok,
                entries: report.entries,
                macsVerified: report.macsVerified,
                head: report.head ?? null,
                problemCount: report.problems.length,
                problems: report.problems.slice(0, MAX_PROBLEMS).map((p) => ({ seq: p.seq, problem: p.problem, detail: p.detail })),
              };
        return {
          entries: entries.map(({ streamId: _streamId, ...r }) => r),
          ...(next !== undefined && next > 1 ? { next } : {}),
          verification,
        };
      },
    }),
  ];
}
