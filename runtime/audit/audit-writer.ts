import { randomBytes, type KeyObject } from 'node:crypto';
import { duplicateRedis, type RedisClient } from '../redis-url.js';
import { APPEND_LUA, APPEND_SHA } from './append-script.js';
import {
  AuditEntrySchema,
  canonicalBody,
  chainHash,
  GENESIS_HASH,
  MAX_SIGNED_RUN,
  WRITER_NAME,
  type AuditEntryInput,
  type AuditHead,
  type AuditRecord,
  type StoredRecord,
} from './audit-record.js';
import { recordSigningKey, signRun } from './audit-signing.js';
import { canonicalJson, wellFormed } from './canonical-json.js';
import { toFields } from './record-fields.js';

export interface AuditWriterOptions {
  redis: RedisClient;
  /** Key prefix of the log's keys: on a Redis Cluster, a cell's (with its hash tag; see cells.ts). */
  prefix: string;
  /** The component id written into every record, e.g. `agent:billing` or `edge` (see WRITER_NAME). */
  writer: string;
  /** The writer's own audit secret from its key file (at least 16 bytes; 32 random bytes recommended): its records are signed with the key derived from it. */
  key?: { kid: string; secret: Buffer };
  /** How long `append` keeps trying while other writers go first, in ms; default 10 000. */
  timeoutMs?: number;
  /** The cap on `detail`, as canonical JSON, in bytes. */
  maxDetailBytes?: number;
}

export class AuditError extends Error {
  override readonly name = 'AuditError';
}

const MAX_BATCH = MAX_SIGNED_RUN;
/** A waiting appender that has not asked again for this long drops out of the line. */
const WAITER_TTL_MS = 2000;
/** A waiter asks again this often even when not told its turn has come (a lost message, a dead front). */
const WAITER_POLL_MS = 25;
/** The connection that hears about turns closes when no append has waited for this long. */
const TURN_IDLE_MS = 5000;

type Prepared = Omit<StoredRecord, 'seq' | 'prev' | 'hash' | 'mac' | 'sig' | 'signs'>;
/** A writer's key as it signs: its id and the Ed25519 key derived from its secret. */
interface Signer {
  kid: string;
  key: KeyObject;
}

/** A batch's place in the line of writers: unique across processes (a random prefix per process) without asking the OS each time. */
const TOKEN_PREFIX = `${randomBytes(9).toString('base64url')}.`;
let tokens = 0;
/** An entry with its JSON-valued fields already in canonical form: they are hashed and stored as is, perhaps more than once. */
interface PreparedEntry {
  entry: Prepared;
  json: { chain: string; reasons?: string; detail?: string };
  /** The writer's key: the last record of each run of its records in a batch is signed with it. */
  signer?: Signer;
}
interface Pending {
  entry: PreparedEntry;
  resolve: (record: AuditRecord) => void;
  reject: (error: unknown) => void;
}

/** The writer's signer, after checking its name and key: a writer that could pass for another must not write at all. */
function signerOf(writer: string, key: AuditWriterOptions['key']): Signer | undefined {
  if (!writer) throw new AuditError('an audit writer needs a non-empty id');
  if (!WRITER_NAME.test(writer)) throw new AuditError(`audit writer ${JSON.stringify(writer)} is not a plain name: lowercase ASCII letters, digits, _ and -, starting with a letter, at most one ':'`);
  if (!key) return undefined;
  if (!key.kid) throw new AuditError('an audit key needs a non-empty kid');
  if (key.secret.length < 16) throw new AuditError('an audit key secret needs at least 16 bytes');
  return { kid: wellFormed(key.kid), key: recordSigningKey(key.secret) };
}

/**
 * The writing side of the audit log: validates and prepares entries, sends those made in the same tick
 * as one batch, and chains each batch onto the head with the append script, taking turns with other
 * writers under contention.
 */
export class AuditWriter {
  readonly streamKey: string;
  readonly headKey: string;
  private readonly lineKey: string;
  private readonly aliveKey: string;
  private readonly turnChannel: string;
  readonly writer: string;
  private readonly redis: RedisClient;
  private readonly signer: Signer | undefined;
  private readonly timeoutMs: number;
  private readonly maxDetailBytes: number;
  private readonly pending: Pending[] = [];
  private draining = false;
  /** The head after this instance's last append: the first guess for the next one. */
  private knownHead: AuditHead | undefined;
  /** Under contention: a subscriber to the turn channel, and the heads it brought for our waiting batches. */
  private turns: { conn: RedisClient; ready: Promise<void>; idle?: NodeJS.Timeout } | undefined;
  private readonly waiting = new Map<string, { head?: AuditHead; wake?: () => void }>();

  constructor(options: AuditWriterOptions) {
    this.signer = signerOf(options.writer, options.key);
    this.redis = options.redis;
    this.streamKey = `${options.prefix}:audit`;
    this.headKey = `${options.prefix}:audit:head`;
    this.lineKey = `${options.prefix}:audit:line`;
    this.aliveKey = `${options.prefix}:audit:line:alive`;
    this.turnChannel = `${options.prefix}:audit:turn`;
    this.writer = options.writer;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxDetailBytes = options.maxDetailBytes ?? 8192;
  }

  /** Appends one record as this writer (see `AuditLog.append`). */
  append(entry: AuditEntryInput): Promise<AuditRecord> {
    return this.enqueue(entry, this.writer, this.signer);
  }

  /** Appends as another writer, with that writer's key, through this instance (see `AuditLog.as`). */
  as(writer: string, key?: AuditWriterOptions['key']): { append(entry: AuditEntryInput): Promise<AuditRecord> } {
    const signer = signerOf(writer, key);
    return { append: (entry) => this.enqueue(entry, writer, signer) };
  }

  private enqueue(entry: AuditEntryInput, writer: string, signer: Signer | undefined): Promise<AuditRecord> {
    let prepared: PreparedEntry;
    try {
      prepared = this.prepare(entry, writer, signer);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.pending.push({ entry: prepared, resolve, reject });
      // Start on the next microtask, so appends made in the same tick go to Redis as one batch.
      if (this.pending.length === 1) queueMicrotask(() => void this.drain());
    });
  }

  private prepare(entry: AuditEntryInput, writer: string, signer: Signer | undefined): PreparedEntry {
    const parsed = AuditEntrySchema.safeParse(entry);
    if (!parsed.success) throw new AuditError(`invalid audit entry: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(entry)'}: ${i.message}`).join('; ')}`);
    const input = parsed.data;
    // Normalize exactly as a reader will see it after the round trip through Redis.
    let detail: Record<string, unknown> | undefined;
    let detailJson: string | undefined;
    try {
      detailJson = input.detail === undefined ? undefined : canonicalJson(JSON.parse(JSON.stringify(input.detail)));
      detail = detailJson === undefined ? undefined : (JSON.parse(detailJson) as Record<string, unknown>);
    } catch (error) {
      throw new AuditError(`invalid audit entry: detail is not JSON: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (detailJson !== undefined) {
      const size = Buffer.byteLength(detailJson);
      if (size > this.maxDetailBytes) throw new AuditError(`audit detail is ${size} bytes, over the ${this.maxDetailBytes}-byte cap: record ids and facts, not content`);
    }
    const text = (s: string | undefined): string | undefined => (s === undefined ? undefined : wellFormed(s));
    const out: Prepared = {
      at: Date.now(),
      writer,
      runId: wellFormed(input.runId),
      principal: wellFormed(input.principal),
      tenant: text(input.tenant),
      chain: input.chain.map(wellFormed),
      agent: text(input.agent),
      action: input.action,
      subject: text(input.subject),
      outcome: wellFormed(input.outcome),
      reasons: input.reasons?.map(wellFormed),
      risk: input.risk === undefined ? undefined : input.risk === 0 ? 0 : input.risk, // -0 prints as 0
      detail,
      kid: signer?.kid,
    };
    for (const k of Object.keys(out) as (keyof Prepared)[]) if (out[k] === undefined) delete out[k];
    const json: PreparedEntry['json'] = { chain: canonicalJson(out.chain) };
    if (out.reasons) json.reasons = canonicalJson(out.reasons);
    if (detailJson !== undefined) json.detail = detailJson;
    return { entry: out, json, ...(signer ? { signer } : {}) };
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, MAX_BATCH);
        try {
          const records = await this.commit(batch.map((p) => p.entry));
          batch.forEach((p, i) => p.resolve(records[i]!));
        } catch (error) {
          for (const p of batch) p.reject(error);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * The batch's records on `head`, and each one's hashed body as it is stored. The last record of each run
   * of a signer's records (consecutive ones, of whichever runIds, at most MAX_SIGNED_RUN) signs for them all:
   * a batch of concurrent activations holds a few records of each of many runIds, and one signature per
   * runId as well came to one for nearly every record (8 for the 10 records of a 3-agent chain).
   */
  private chainFrom(head: AuditHead, entries: PreparedEntry[]): { records: AuditRecord[]; bodies: string[] } {
    let { seq, hash } = head;
    const bodies: string[] = [];
    let runStart = 0;
    const records = entries.map(({ entry, json, signer }, i) => {
      seq += 1;
      // One copy per record: entries vary in shape, and each spread of one is a slow, generic copy.
      const record = { ...entry, seq, prev: hash } as AuditRecord;
      const body = canonicalBody(record, json);
      bodies.push(body);
      record.hash = chainHash(hash, body);
      record.streamId = `${seq}-0`;
      hash = record.hash;
      const next = entries[i + 1];
      if (next === undefined || next.signer !== signer || i + 1 - runStart >= MAX_SIGNED_RUN) {
        if (signer) {
          record.signs = i + 1 - runStart;
          record.sig = signRun(signer.key, record.hash, record.signs);
        }
        runStart = i + 1;
      }
      return record;
    });
    return { records, bodies };
  }

  private async commit(entries: PreparedEntry[]): Promise<AuditRecord[]> {
    let head = this.knownHead ?? { seq: 0, hash: GENESIS_HASH };
    const token = `${TOKEN_PREFIX}${(tokens += 1).toString(36)}`;
    const deadline = Date.now() + this.timeoutMs;
    let chained: { head: AuditHead; records: AuditRecord[]; args: string[] } | undefined;
    // Registered before the first attempt: the turn message can arrive before the reply that says to wait.
    this.waiting.set(token, {});
    try {
      for (;;) {
        if (!chained || chained.head.seq !== head.seq || chained.head.hash !== head.hash) chained = this.buildArgs(head, entries, token);
        const reply = (await this.script(chained.args)) as [number, string?, string?, number?];
        if (reply[0] === 1) {
          const last = chained.records[chained.records.length - 1]!;
          this.knownHead = { seq: last.seq, hash: last.hash };
          return chained.records;
        }
        // Another writer went first: rechain on the head it left, at once if we are first in line,
        // else when told our turn has come (or after a short while, to stay in line).
        head = { seq: Number(reply[1]), hash: String(reply[2]) };
        if (Date.now() > deadline) {
          await this.redis.multi().zrem(this.lineKey, token).hdel(this.aliveKey, token).exec().catch(() => undefined);
          throw new AuditError(`audit append gave up after ${this.timeoutMs} ms: other writers kept the head busy`);
        }
        if (Number(reply[3] ?? 0) > 0) head = (await this.awaitTurn(token)) ?? head;
      }
    } finally {
      if (this.waiting.delete(token) && this.waiting.size === 0) this.idleTurns();
    }
  }

  private buildArgs(head: AuditHead, entries: PreparedEntry[], token: string): { head: AuditHead; records: AuditRecord[]; args: string[] } {
    const { records, bodies } = this.chainFrom(head, entries);
    const args: string[] = [GENESIS_HASH, String(head.seq), head.hash, token, String(WAITER_TTL_MS), String(records.length), this.turnChannel];
    records.forEach((r, i) => {
      const fields = toFields(r, bodies[i]);
      args.push(String(fields.length), r.streamId, ...fields);
    });
    const last = records[records.length - 1]!;
    args.push(String(last.seq), last.hash);
    return { head, records, args };
  }

  /** Waits until the turn channel says this batch is first in line (with the head to chain on), or a poll interval. */
  private async awaitTurn(token: string): Promise<AuditHead | undefined> {
    let slot = this.waiting.get(token);
    if (!slot) this.waiting.set(token, (slot = {}));
    await this.listenForTurns();
    const ready = slot;
    if (!slot.head) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, WAITER_POLL_MS);
        ready.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    slot.wake = undefined;
    const head = slot.head;
    slot.head = undefined;
    return head;
  }

  private async listenForTurns(): Promise<void> {
    if (this.turns?.idle) {
      clearTimeout(this.turns.idle);
      this.turns.idle = undefined;
    }
    if (!this.turns) {
      const conn = duplicateRedis(this.redis);
      conn.on('error', () => undefined); // it reconnects; until then waiters poll
      conn.on('message', (_channel: string, message: string) => {
        const [token, seq, hash] = message.split(' ');
        const slot = token !== undefined ? this.waiting.get(token) : undefined;
        if (!slot || seq === undefined || hash === undefined) return;
        slot.head = { seq: Number(seq), hash };
        slot.wake?.();
      });
      const ready = conn.subscribe(this.turnChannel).then(
        () => undefined,
        () => undefined,
      );
      this.turns = { conn, ready };
    }
    await this.turns.ready;
  }

  private idleTurns(): void {
    const turns = this.turns;
    if (!turns || turns.idle) return;
    turns.idle = setTimeout(() => {
      if (this.turns === turns && this.waiting.size === 0) {
        this.turns = undefined;
        turns.conn.disconnect();
      }
    }, TURN_IDLE_MS);
    turns.idle.unref();
  }

  /** Closes the connection this writer opened to hear about its turn under contention (the caller's connection stays open). */
  async close(): Promise<void> {
    const turns = this.turns;
    this.turns = undefined;
    if (turns) {
      clearTimeout(turns.idle);
      turns.conn.disconnect();
    }
  }

  private async script(args: string[]): Promise<unknown> {
    try {
      try {
        return await this.redis.evalsha(APPEND_SHA, 4, this.streamKey, this.headKey, this.lineKey, this.aliveKey, ...args);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return await this.redis.eval(APPEND_LUA, 4, this.streamKey, this.headKey, this.lineKey, this.aliveKey, ...args);
      }
    } catch (error) {
      if (error instanceof Error && error.message.includes('PALISADE_AUDIT')) throw new AuditError(error.message.replace(/^.*PALISADE_AUDIT /, ''));
      if (error instanceof Error && /XADD is equal or smaller/.test(error.message)) {
        throw new AuditError(`the audit stream ${this.streamKey} already has entries past the head ${this.headKey}: run palisade audit verify`);
      }
      throw error;
    }
  }
}
