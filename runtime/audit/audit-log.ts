/**
 * The audit log: an append-only, hash-chained Redis stream that records every decision and action,
 * attributed to the principal and the chain of agents.
 *
 * Layout (one hash slot on a Redis Cluster: the prefix is then a cell's, with its hash tag; see cells.ts):
 * - `${prefix}:audit`       a stream with one entry per record. The stream id is `<seq>-0`, so an entry
 *                           is found by its sequence number, and a second head can never be started.
 * - `${prefix}:audit:head`  a hash `{ seq, hash }`: the last record's sequence number and hash. It moves
 *                           in the same Lua script that adds the entry, so it detects a removed tail.
 * - `${prefix}:audit:line`, `${prefix}:audit:line:alive`  appenders waiting their turn under contention
 *                           (scheduling only: empty, hence absent, when nobody waits).
 *
 * Records are described in audit-record.ts, their stream entries in record-fields.ts.
 *
 * What it protects against: anyone who can write to Redis can rewrite the whole chain and the head.
 * Each writer signs its records (Ed25519, a key derived from its key file's audit secret), so a Redis-only
 * attacker cannot forge, alter or reattribute one, and verifying refuses records no configured writer
 * signed. Cutting records from the end and moving the head back leaves a valid chain, so the head is also
 * anchored outside Redis (anchors.ts): what was anchored must still be there. What the attacker can still
 * do is cut the records written since the last anchor (and move the head back), or stop appends.
 * Verify with `palisade audit verify --keys <dir> --anchors <file>`.
 *
 * Records hold ids, names, verdicts, reasons and risk, never content or secrets: callers must not put
 * prompts, replies, tool arguments or results in `detail` (it is capped at 8 KiB to make misuse loud).
 */
import { duplicateRedis, type RedisClient } from '../redis-url.js';
import type { AuditEntryInput, AuditHead, AuditRecord } from './audit-record.js';
import { AuditWriter, type AuditWriterOptions } from './audit-writer.js';
import { ChainVerifier, type VerifyOptions, type VerifyReport } from './chain-verifier.js';
import { exportLine, fromFields, seqOfStreamId, type VerifyItem } from './record-fields.js';

/** The log's options are its writer's: reading needs only the connection and the prefix. */
export type AuditLogOptions = AuditWriterOptions;

export interface ReadOptions {
  /** The first sequence number (inclusive); default 1. */
  from?: number;
  /** At most this many records; default 100. */
  count?: number;
  runId?: string;
}

export interface FollowOptions {
  /** Yield records after this sequence number; default: the end of the log when following starts. */
  after?: number;
  runId?: string;
  /** How long one XREAD blocks; default 5000 ms. */
  blockMs?: number;
  /** Stops following (the iterator ends). */
  signal?: AbortSignal;
}

const PAGE = 1000;

export class AuditLog {
  readonly streamKey: string;
  readonly headKey: string;
  readonly writer: string;
  private readonly redis: RedisClient;
  private readonly appender: AuditWriter;

  constructor(options: AuditLogOptions) {
    this.appender = new AuditWriter(options);
    this.redis = options.redis;
    this.streamKey = this.appender.streamKey;
    this.headKey = this.appender.headKey;
    this.writer = this.appender.writer;
  }

  /**
   * Appends one record and resolves with it once it is in Redis. Safe with any number of writers and
   * processes: each append is a compare-and-set on the head; under contention writers take turns,
   * first come first served (see append-script.ts). Appends made concurrently through one instance go
   * to Redis together, in call order, so share one instance per writer in a process. Rejects with
   * AuditError on an invalid entry or after `timeoutMs` without a turn.
   *
   * Under contention an instance opens a second connection (to hear when its turn comes); it closes
   * itself after 5 s without contention, or call `close()` on shutdown.
   */
  append(entry: AuditEntryInput): Promise<AuditRecord> {
    return this.appender.append(entry);
  }

  /**
   * Appends as another writer, with that writer's key, through this instance: the writers of one process
   * (the edge and each agent it serves) then share one batch and one view of the head, instead of taking
   * turns on the head against each other.
   */
  as(writer: string, key?: AuditLogOptions['key']): { append(entry: AuditEntryInput): Promise<AuditRecord> } {
    return this.appender.as(writer, key);
  }

  /** Closes the connection this log opened to hear about its turn under contention (the caller's connection stays open). */
  async close(): Promise<void> {
    return this.appender.close();
  }

  /** The head key: the last record's seq and hash (null when the log is empty or the key is gone). */
  async head(): Promise<AuditHead | null> {
    const [seq, hash] = await this.redis.hmget(this.headKey, 'seq', 'hash');
    if (seq === null || seq === undefined) return null;
    return { seq: Number(seq), hash: hash ?? '' };
  }

  private async page(start: string, count = PAGE): Promise<VerifyItem[]> {
    const rows = await this.redis.xrange(this.streamKey, start, '+', 'COUNT', count);
    return rows.map(([id, flat]) => fromFields(id, flat));
  }

  private async *items(from = 1): AsyncGenerator<VerifyItem> {
    let start = `${Math.max(1, Math.floor(from))}-0`;
    for (;;) {
      const page = await this.page(start);
      yield* page;
      if (page.length < PAGE) return;
      start = `(${page[page.length - 1]!.streamId}`;
    }
  }

  /** Records from `from` on, in order (entries that do not parse are skipped: `verify` reports them). */
  async read(options: ReadOptions = {}): Promise<AuditRecord[]> {
    const count = options.count ?? 100;
    const out: AuditRecord[] = [];
    if (count <= 0) return out;
    for await (const item of this.items(options.from)) {
      if (!('record' in item)) continue;
      if (options.runId !== undefined && item.record.runId !== options.runId) continue;
      out.push(item.record);
      if (out.length >= count) break;
    }
    return out;
  }

  /** The last `n` records (optionally of one run, and up to seq `to`), oldest first. */
  async tail(n: number, options: { runId?: string; to?: number } = {}): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    if (n <= 0) return out;
    let end = options.to !== undefined ? String(options.to) : '+';
    for (;;) {
      const rows = await this.redis.xrevrange(this.streamKey, end, '-', 'COUNT', options.runId === undefined ? n - out.length : PAGE);
      for (const [id, flat] of rows) {
        const item = fromFields(id, flat);
        if (!('record' in item) || (options.runId !== undefined && item.record.runId !== options.runId)) continue;
        out.push(item.record);
        if (out.length >= n) return out.reverse();
      }
      if (rows.length === 0) return out.reverse();
      end = `(${rows[rows.length - 1]![0]}`;
    }
  }

  /** The seq of the last entry in the stream (0 when empty). */
  async lastSeq(): Promise<number> {
    const rows = await this.redis.xrevrange(this.streamKey, '+', '-', 'COUNT', 1);
    return rows[0] ? seqOfStreamId(rows[0][0]) : 0;
  }

  /** Records as they are appended, until `signal` aborts. Holds its own connection while iterating. */
  async *follow(options: FollowOptions = {}): AsyncGenerator<AuditRecord> {
    const { signal } = options;
    if (signal?.aborted) return;
    let last = options.after !== undefined ? `${options.after}-0` : `${await this.lastSeq()}-0`;
    // A blocking XREAD occupies its connection, so following takes its own.
    const conn = duplicateRedis(this.redis, { lazyConnect: true });
    const stop = (): void => conn.disconnect();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      try {
        await conn.connect();
      } catch (error) {
        if (signal?.aborted) return;
        throw error;
      }
      while (!signal?.aborted) {
        let reply: [string, [string, string[]][]][] | null;
        try {
          reply = (await conn.xread('COUNT', 500, 'BLOCK', options.blockMs ?? 5000, 'STREAMS', this.streamKey, last)) as typeof reply;
        } catch (error) {
          if (signal?.aborted) return;
          throw error;
        }
        for (const [id, flat] of reply?.[0]?.[1] ?? []) {
          last = id;
          const item = fromFields(id, flat);
          if ('record' in item && (options.runId === undefined || item.record.runId === options.runId)) yield item.record;
        }
      }
    } finally {
      signal?.removeEventListener('abort', stop);
      conn.disconnect();
    }
  }

  /**
   * Writes the log as JSONL, one entry per line with every field (hashes and MACs included), in
   * stream order, so `verifyExport` or any other verifier can check it. A `runId` filter exports that
   * run's records only: their hashes and old MACs can be checked, the chain between them cannot, nor a
   * signature that another run's record carries for them (a writer signs its consecutive records at once).
   * `out` may return a promise (e.g. to wait for a file stream to drain); it is awaited.
   * Resolves with the number of lines written.
   */
  async export(out: (line: string) => void | Promise<void>, filter: { runId?: string; from?: number } = {}): Promise<number> {
    let n = 0;
    for await (const item of this.items(filter.from)) {
      if (filter.runId !== undefined && !('record' in item && item.record.runId === filter.runId)) continue;
      await out(exportLine(item));
      n++;
    }
    return n;
  }

  /**
   * Reads the log in pages (from the start, or after `options.from`) and checks every link, the head,
   * every record's signature and the anchors. Throws AuditKeyError without keys unless `allowUnsigned`.
   */
  async verify(options: VerifyOptions): Promise<VerifyReport> {
    const v = new ChainVerifier(options);
    let cursor = options.from ? `(${options.from.seq}-0` : '-';
    let head: AuditHead | null = null;
    for (;;) {
      let page = await this.page(cursor);
      if (page.length === 0) {
        // The head moves with the stream in one script: read it, then make sure no entry came since.
        head = await this.head();
        page = await this.page(cursor);
        if (page.length === 0) break;
      }
      for (const item of page) v.push(item);
      cursor = `(${page[page.length - 1]!.streamId}`;
    }
    return v.finish(head);
  }
}
