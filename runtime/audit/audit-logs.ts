import type { RedisClient } from '../redis-url.js';
import type { Cells } from '../stores/cells.js';
import type { AuditEntryInput, AuditRecord } from './audit-record.js';
import { AuditLog, type AuditLogOptions } from './audit-log.js';
import type { VerifyOptions, VerifyReport } from './chain-verifier.js';
import { fromFields, seqOfStreamId, type VerifyItem } from './record-fields.js';

const PAGE = 500;

/** Where a listing goes on: a sequence number with one log, one per log (`<seq>.<seq>.…`) with several. */
export type ListCursor = number | string;

export class InvalidCursorError extends Error {
  override readonly name = 'InvalidCursorError';
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
   * Each log is read in its own order (newest seq first) and the logs are merged by record time for
   * display; the cursor holds each log's place, so no entry is missed or repeated across pages however
   * the writers' clocks disagree. With one log it is that log's sequence number, as it always was; with
   * several, `<seq>.<seq>.…` one per cell (0: that log is done).
   */
  async page(redis: RedisClient, options: { before?: ListCursor; limit: number; maxScan: number; take: (item: VerifyItem) => boolean | Promise<boolean> }): Promise<{ next?: ListCursor }> {
    const bounds = this.bounds(options.before);
    const buffers = this.logs.map((): Array<{ item: VerifyItem; seq: number; at: number }> => []);
    let taken = 0;
    let scanned = 0;
    for (;;) {
      await Promise.all(
        this.logs.map(async (log, i) => {
          if (buffers[i]!.length > 0 || bounds[i] === 0) return;
          const end = bounds[i] === Infinity ? '+' : `(${bounds[i]}-0`;
          const rows = await redis.xrevrange(log.streamKey, end, '-', 'COUNT', PAGE);
          if (rows.length === 0) bounds[i] = 0;
          // An entry that does not parse has no time: it is taken first, so the listing moves past it (verify reports it).
          for (const [id, flat] of rows) {
            const item = fromFields(id, flat);
            buffers[i]!.push({ item, seq: seqOfStreamId(id), at: 'record' in item ? item.record.at : Infinity });
          }
        }),
      );
      let newest = -1;
      buffers.forEach((buffer, i) => {
        if (buffer.length > 0 && (newest < 0 || buffer[0]!.at > buffers[newest]![0]!.at)) newest = i;
      });
      if (newest < 0) return {};
      if (taken >= options.limit || scanned >= options.maxScan) return { next: this.cursor(bounds) };
      const { item, seq } = buffers[newest]!.shift()!;
      bounds[newest] = seq;
      scanned++;
      if (await options.take(item)) taken++;
    }
  }

  /** Each log's exclusive upper bound (Infinity: from its newest entry; 0: nothing left) from a cursor. */
  private bounds(before: ListCursor | undefined): number[] {
    if (before === undefined) return this.logs.map(() => Infinity);
    const parts = String(before)
      .split('.')
      .map((p) => (p === '' ? Infinity : Number(p)));
    if (parts.length !== this.logs.length || parts.some((n) => n !== Infinity && (!Number.isSafeInteger(n) || n < 0))) {
      throw new InvalidCursorError(`not a cursor of this deployment's ${this.logs.length === 1 ? 'log (a sequence number)' : `${this.logs.length} logs (${this.logs.length} sequence numbers joined by '.')`}: ${JSON.stringify(String(before)).slice(0, 80)}`);
    }
    return parts;
  }

  private cursor(bounds: number[]): ListCursor {
    return bounds.length === 1 ? bounds[0]! : bounds.map((b) => (b === Infinity ? '' : String(b))).join('.');
  }

  async close(): Promise<void> {
    await Promise.all(this.logs.map((log) => log.close()));
  }
}
