import type { RedisClient } from '../redis-url.js';
import type { AuditRecord } from '../audit/audit-record.js';
import { fromFields } from '../audit/record-fields.js';
import { EDGE } from '../identity/keyring.js';
import type { RunRecord, RunStore } from '../stores/run-store.js';

/** How many audit records one listing reads at most, so a caller with few runs in a long log costs a bounded scan. */
const MAX_SCAN = 20_000;
const PAGE = 500;

export interface RunPage {
  runs: RunRecord[];
  /** The audit sequence number to continue below. */
  next?: number;
}

/**
 * Recent runs, newest first, found through the audit log's `run.started` records (the edge writes one
 * per run it starts), so the run stores need no index of their own. Each run is read back from its
 * record, and `visible` decides on the record, not on the audit entry.
 */
export async function listRuns(options: {
  redis: RedisClient;
  prefix: string;
  store: RunStore;
  limit: number;
  before?: number;
  /** Cheap pre-filter on the audit record (e.g. the caller's own principal id). */
  candidate: (record: AuditRecord) => boolean;
  visible: (run: RunRecord) => boolean;
}): Promise<RunPage> {
  const key = `${options.prefix}:audit`;
  let end = options.before !== undefined ? `(${options.before}-0` : '+';
  const runs: RunRecord[] = [];
  let scanned = 0;
  let lastSeq: number | undefined;
  while (scanned < MAX_SCAN) {
    const rows = await options.redis.xrevrange(key, end, '-', 'COUNT', PAGE);
    if (rows.length === 0) return { runs };
    scanned += rows.length;
    for (const [id, flat] of rows) {
      const item = fromFields(id, flat);
      lastSeq = Number(id.split('-')[0]);
      if (!('record' in item)) continue;
      const r = item.record;
      if (r.action !== 'run.started' || r.writer !== EDGE || !options.candidate(r)) continue;
      const run = await options.store.getRun(r.runId);
      if (!run || !options.visible(run)) continue;
      runs.push(run);
      if (runs.length >= options.limit) return { runs, next: r.seq };
    }
    end = `(${rows[rows.length - 1]![0]}`;
  }
  return { runs, ...(lastSeq !== undefined ? { next: lastSeq } : {}) };
}
