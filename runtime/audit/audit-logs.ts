import type { RedisClient } from '../redis-url.js';
import type { Cells } from '../stores/cells.js';
import type { AuditEntryInput, AuditRecord } from './audit-record.js';
import { AuditLog, type AuditLogOptions } from './audit-log.js';
import type { VerifyOptions, VerifyReport } from './chain-verifier.js';
import { fromFields, seqOfStreamId, type VerifyItem } from './record-fields.js';

const PAGE = 500;

/** A record as a listing meets it, and the cursor that continues the listing after it (`before`). */
export interface Listed {
  item: VerifyItem;
  cursor: number;
}

/**
 * A deployment's audit logs: one hash chain per cell (see cells.ts), each a complete {@link AuditLog}
 * under its cell's prefix, so a run's records are one chain in order and appends of runs in different
 * cells never wait on one head. With one cell it is the single log under the prefix, as it always was.
 * Anchors name each log by its prefix, so each chain is anchored and verified on its own.
 */
export class AuditLogs {
  private readonly logs: AuditLog[];

  constructor(
    readonly cells: Cells,
    options: Omit<AuditLogOptions, 'prefix'> & { redis: RedisClient },
  ) {
    this.logs = cells.all.map((prefix) => new AuditLog({ ...options, prefix }));
  }

  /** The log that holds a run's records. */
  of(runId: string): AuditLog {
    return this.logs[this.cells.of(runId)]!;
  }

  /** Every cell's log, in cell order; each one's `prefix` names it in anchors. */
  get all(): ReadonlyArray<{ prefix: string; log: AuditLog }> {
    return this.logs.map((log, cell) => ({ prefix: this.cells.all[cell]!, log }));
  }

  /** Appends as `writer` (see `AuditLog.as`) to the log of each entry's run. */
  as(writer: string, key?: AuditLogOptions['key']): { append(entry: AuditEntryInput): Promise<AuditRecord> } {
    const sinks = this.logs.map((log) => log.as(writer, key));
    return { append: (entry) => sinks[this.cells.of(entry.runId)]!.append(entry) };
  }

  /**
   * Every log's entries, newest first, older than `before`. With one log the cursor is the sequence
   * number, as it always was. With several it is the record's time in ms, merged across the logs: a
   * caller that ends a page must end it where the cursor changes (records written in the same
   * millisecond share one), and entries that do not parse have no time and are left to `verify`.
   */
  async *newestFirst(redis: RedisClient, before?: number): AsyncGenerator<Listed> {
    if (this.logs.length === 1) {
      let end = before !== undefined ? `(${before}-0` : '+';
      for (;;) {
        const rows = await redis.xrevrange(this.logs[0]!.streamKey, end, '-', 'COUNT', PAGE);
        for (const [id, flat] of rows) yield { item: fromFields(id, flat), cursor: seqOfStreamId(id) };
        if (rows.length < PAGE) return;
        end = `(${rows[rows.length - 1]![0]}`;
      }
    }
    const readers = this.logs.map((log) => newestOf(redis, log.streamKey, before));
    const heads = await Promise.all(readers.map((r) => r.next()));
    for (;;) {
      let newest = -1;
      heads.forEach((head, i) => {
        if (!head.done && (newest < 0 || head.value.record.at > (heads[newest]!.value as { record: AuditRecord }).record.at)) newest = i;
      });
      if (newest < 0) return;
      const { value } = heads[newest]! as IteratorYieldResult<{ streamId: string; record: AuditRecord }>;
      yield { item: value, cursor: value.record.at };
      heads[newest] = await readers[newest]!.next();
    }
  }

  /**
   * Verifies every log (each with the options `optionsFor` gives it, e.g. its own anchors) and sums the
   * reports up: intact when every log is; each problem names its log; the anchor is the oldest of the
   * logs' latest ones (null when a log with records has none), since that is what still could be cut.
   */
  async verify(optionsFor: (prefix: string, cell: number) => VerifyOptions | Promise<VerifyOptions>): Promise<VerifyReport> {
    const reports = await Promise.all(this.all.map(async ({ prefix, log }, cell) => ({ prefix, report: await log.verify(await optionsFor(prefix, cell)) })));
    if (reports.length === 1) return reports[0]!.report;
    const sum = (field: 'entries' | 'macsVerified' | 'unsigned' | 'vouched') => reports.reduce((n, { report }) => n + report[field], 0);
    const used = reports.filter(({ report }) => report.entries > 0).map(({ report }) => report);
    const anchors = used.map((r) => r.anchor);
    const anchor = anchors.includes(null) ? null : anchors.includes(undefined) ? undefined : anchors.reduce((oldest, a) => (!oldest || a!.at < oldest.at ? a : oldest), undefined);
    const since = used.map((r) => r.sinceAnchor).filter((n): n is number => n !== undefined);
    return {
      ok: reports.every(({ report }) => report.ok),
      entries: sum('entries'),
      problems: reports.flatMap(({ prefix, report }) => report.problems.map((p) => ({ ...p, detail: `${prefix}: ${p.detail}` }))),
      // No one head stands for several chains.
      head: undefined,
      macsVerified: sum('macsVerified'),
      unsigned: sum('unsigned'),
      vouched: sum('vouched'),
      writers: Math.max(...reports.map(({ report }) => report.writers)),
      anchor,
      ...(since.length > 0 ? { sinceAnchor: since.reduce((a, b) => a + b, 0) } : {}),
    };
  }

  /**
   * A page of a newest-first listing: takes entries until `take` has accepted `limit` of them or
   * `maxScan` were read, and says where the next page starts (absent when the logs are exhausted).
   * With several logs a page ends only where the time changes, so the next one misses nothing.
   */
  async page(redis: RedisClient, options: { before?: number; limit: number; maxScan: number; take: (item: VerifyItem) => boolean | Promise<boolean> }): Promise<{ next?: number }> {
    const ties = this.logs.length > 1;
    let taken = 0;
    let scanned = 0;
    let next: number | undefined;
    for await (const { item, cursor } of this.newestFirst(redis, options.before)) {
      if ((taken >= options.limit || scanned >= options.maxScan) && cursor !== next) return { next: next! };
      scanned++;
      next = cursor;
      if (await options.take(item)) taken++;
      if (!ties && (taken >= options.limit || scanned >= options.maxScan)) return { next };
    }
    return {};
  }

  async close(): Promise<void> {
    await Promise.all(this.logs.map((log) => log.close()));
  }
}

/** One log's records, newest first, written before `before` (ms). A log's order is its seq order, which its writers' clocks follow closely enough to merge by. */
async function* newestOf(redis: RedisClient, key: string, before?: number): AsyncGenerator<{ streamId: string; record: AuditRecord }> {
  let end = '+';
  for (;;) {
    const rows = await redis.xrevrange(key, end, '-', 'COUNT', PAGE);
    for (const [id, flat] of rows) {
      const item = fromFields(id, flat);
      if ('record' in item && (before === undefined || item.record.at < before)) yield item;
    }
    if (rows.length < PAGE) return;
    end = `(${rows[rows.length - 1]![0]}`;
  }
}
