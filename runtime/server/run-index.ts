import type { RedisClient } from '../redis-url.js';
import type { AuditRecord } from '../audit/audit-record.js';
import type { AuditLogs, ListCursor } from '../audit/audit-logs.js';
import { EDGE } from '../identity/keyring.js';
import type { RunRecord, RunStore } from '../stores/run-store.js';

/** How many audit records one listing reads at most, so a caller with few runs in a long log costs a bounded scan. */
const MAX_SCAN = 20_000;

export interface RunPage {
  runs: RunRecord[];
  /** Where to continue below (see `AuditLogs.page`). */
  next?: ListCursor;
}

/**
 * Recent runs, newest first, found through the audit logs' `run.started` records (the edge writes one
 * per run it starts), so the run stores need no index of their own. Each run is read back from its
 * record, and `visible` decides on the record, not on the audit entry. With several cells the logs are
 * merged by time (see `AuditLogs.page`).
 */
export async function listRuns(options: {
  redis: RedisClient;
  logs: AuditLogs;
  store: RunStore;
  limit: number;
  before?: ListCursor;
  /** Cheap pre-filter on the audit record (e.g. the caller's own principal id). */
  candidate: (record: AuditRecord) => boolean;
  visible: (run: RunRecord) => boolean;
}): Promise<RunPage> {
  const runs: RunRecord[] = [];
  const { next } = await options.logs.page(options.redis, {
    ...(options.before !== undefined ? { before: options.before } : {}),
    limit: options.limit,
    maxScan: MAX_SCAN,
    take: async (item) => {
      if (!('record' in item)) return false;
      const r = item.record;
      if (r.action !== 'run.started' || r.writer !== EDGE || !options.candidate(r)) return false;
      const run = await options.store.getRun(r.runId);
      if (!run || !options.visible(run)) return false;
      runs.push(run);
      return true;
    },
  });
  return { runs, ...(next !== undefined ? { next } : {}) };
}
