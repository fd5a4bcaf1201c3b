/**
 * The audit log: an append-only, hash-chained Redis stream that records every decision and action,
 * attributed to the principal and the chain of agents.
 *
 * Layout (one hash slot when the prefix is hash-tagged, e.g. `{palisade}`):
 * - `${prefix}:audit`       a stream with one entry per record. The stream id is `<seq>-0`, so an entry
 *                           is found by its sequence number, and a second head can never be started.
 * - `${prefix}:audit:head`  a hash `{ seq, hash }`: the last record's sequence number and hash. It moves
 *                           in the same Lua script that adds the entry, so it detects a removed tail.
 * - `${prefix}:audit:line`, `${prefix}:audit:line:alive`  appenders waiting their turn under contention
 *                           (scheduling only: empty, hence absent, when nobody waits).
 *
 * Each record holds `seq` (1, 2, 3 ...), `at` (the writer's clock, ms), `writer` (the component that
 * wrote it), the fields of {@link AuditEntryInput}, `prev` (the previous record's hash; 64 zeros for
 * seq 1), `hash`, and when the writer has a key, `kid` and `mac`:
 *
 *     hash = hex(SHA-256(prev + "\n" + canonicalJson(record without hash, mac and streamId)))
 *     mac  = hex(HMAC-SHA-256(writer's secret, hash))
 *
 * canonicalJson is RFC 8785 (JCS) for the values a record holds: object keys sorted by UTF-16 code
 * units, no whitespace, ECMAScript number formatting. The hash covers `prev`, so a MAC binds its record
 * to its place in the chain: rewriting the chain after a keyed record breaks that record's MAC. The
 * stream entry is `r` (that canonical JSON, exactly as hashed), `hash` and `mac`; a reader recomputes
 * the hash from the record it parses, not from the text.
 *
 * What it protects against: anyone who can write to Redis can rewrite the whole chain and the head,
 * so without keys the chain proves integrity only against partial tampering (an edit, a deletion, an
 * insertion, a reordering, a cut tail) and, together with an exported copy or a recorded head hash,
 * against everything before that point. Writers with a key make their records unforgeable by a
 * Redis-only attacker: verify with the keys (`palisade audit verify --keys <dir>`).
 *
 * Records hold ids, names, verdicts, reasons and risk, never content or secrets: callers must not put
 * prompts, replies, tool arguments or results in `detail` (it is capped at 8 KiB to make misuse loud).
 */
import { createHash, createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';

export const AUDIT_ACTIONS = [
  'guard.decision',
  'tool.executed',
  'tool.failed',
  'handoff',
  'delegation',
  'delegation.answered',
  'run.started',
  'run.completed',
  'run.failed',
  'run.cancelled',
  'envelope.refused',
  'label.declassified',
  'approval.requested',
  'approval.decided',
  'approval.resolved',
  'rollback.started',
  'rollback.step',
  'rollback.completed',
  'key.rotated',
] as const;

export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** What a caller records. Ids and names only: no prompts, replies, tool arguments, results or secrets. */
export interface AuditEntryInput {
  runId: string;
  /** The principal's id. */
  principal: string;
  tenant?: string;
  /** The agents so far, first to last. */
  chain: string[];
  /** The agent that acted or decided, when there is one. */
  agent?: string;
  action: AuditAction;
  /** What the action was about: a tool, a target agent, a key id ... */
  subject?: string;
  /** allow / block / escalate / redact, executed / failed, refused ... */
  outcome: string;
  reasons?: string[];
  risk?: number;
  /** Small, caller-provided facts (ids, counts, labels). Never content: it is stored as is, in clear. */
  detail?: Record<string, unknown>;
}

/** A stored record: the input plus the chain fields. */
export interface AuditRecord extends AuditEntryInput {
  seq: number;
  /** When the writer appended it (its own clock, ms since the epoch). */
  at: number;
  /** The component that wrote it, e.g. `agent:billing` or `edge`. */
  writer: string;
  /** The previous record's hash; 64 zeros for seq 1. */
  prev: string;
  hash: string;
  /** The id of the writer's key that made `mac`. */
  kid?: string;
  /** HMAC-SHA-256 of `hash` with the writer's key, hex. */
  mac?: string;
  /** The Redis stream id (`<seq>-0`); not covered by the hash. */
  streamId: string;
}

export interface AuditHead {
  seq: number;
  hash: string;
}

export type AuditProblemKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'bad-mac' | 'truncated' | 'malformed';

export interface AuditProblem {
  seq: number;
  streamId: string;
  problem: AuditProblemKind;
  detail: string;
}

export interface VerifyReport {
  ok: boolean;
  /** Stream entries read. */
  entries: number;
  problems: AuditProblem[];
  /** The head key as read at the end (null: missing; undefined: not known, e.g. for an export). */
  head: AuditHead | null | undefined;
  /** Records whose MAC was checked and matched. */
  macsVerified: number;
}

/** Writer → key id → secret. */
export type AuditKeys = Record<string, Record<string, Buffer>>;

export interface VerifyOptions {
  /** The writers' keys: a record from a writer listed here needs a valid MAC. */
  keys?: AuditKeys;
  /** Also fail records from writers that have no key in `keys`. */
  requireMac?: boolean;
}

export interface AuditLogOptions {
  redis: Redis;
  /** Key prefix shared with the queues; hash-tag it (`{palisade}`) for Redis Cluster. */
  prefix: string;
  /** The component id written into every record, e.g. `agent:billing` or `edge`. */
  writer: string;
  /** The writer's own HMAC key (at least 16 bytes; 32 random bytes recommended). */
  key?: { kid: string; secret: Buffer };
  /** How long `append` keeps trying while other writers go first, in ms; default 10 000. */
  timeoutMs?: number;
  /** The cap on `detail`, as canonical JSON, in bytes. */
  maxDetailBytes?: number;
}

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

export class AuditError extends Error {
  override readonly name = 'AuditError';
}

export const GENESIS_HASH = '0'.repeat(64);
const PAGE = 1000;
const MAX_BATCH = 64;
/** A waiting appender that has not asked again for this long drops out of the line. */
const WAITER_TTL_MS = 2000;
/** A waiter asks again this often even when not told its turn has come (a lost message, a dead front). */
const WAITER_POLL_MS = 25;
/** The connection that hears about turns closes when no append has waited for this long. */
const TURN_IDLE_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Canonical JSON and hashing

/** Lone surrogates cannot survive UTF-8 storage; replace them (with U+FFFD) as Redis would, so hashes stay stable. */
const wellFormed = (s: string): string => (s.isWellFormed() ? s : s.toWellFormed());

/**
 * Canonical JSON (RFC 8785 / JCS for JSON values): object keys sorted by UTF-16 code units, no
 * whitespace, numbers as ECMAScript prints them. `undefined` object members are left out, as in
 * JSON.stringify; non-finite numbers, bigints and other non-JSON values throw.
 */
export function canonicalJson(value: unknown): string {
  const out = canon(value);
  if (out === undefined) throw new TypeError('canonicalJson: the value is not JSON');
  return out;
}

function canon(value: unknown): string | undefined {
  if (value === null) return 'null';
  if (typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') value = (value as { toJSON(): unknown }).toJSON();
  switch (typeof value) {
    case 'string':
      return JSON.stringify(wellFormed(value));
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${value} is not a JSON number`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'bigint':
      throw new TypeError('canonicalJson: bigint is not JSON');
    default: {
      if (value === null) return 'null';
      // Appending to one string: every audit record is canonicalised on the hot path.
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + (canon(value[i]) ?? 'null');
        return `${out}]`;
      }
      const obj = value as Record<string, unknown>;
      let out = '{';
      let first = true;
      for (const k of Object.keys(obj).sort()) {
        const v = canon(obj[k]);
        if (v === undefined) continue;
        out += (first ? '' : ',') + quotedKey(k) + ':' + v;
        first = false;
      }
      return `${out}}`;
    }
  }
}

/** Object keys are few and repeat (the same field names in every envelope): each is quoted once. */
const quotedKeys = new Map<string, string>();
function quotedKey(k: string): string {
  let quoted = quotedKeys.get(k);
  if (quoted === undefined) {
    quoted = JSON.stringify(wellFormed(k));
    // Bounded: keys from data (arguments, attributes) must not grow it without limit.
    if (k.length <= 64 && quotedKeys.size < 4096) quotedKeys.set(k, quoted);
  }
  return quoted;
}

// The one-shot hash: no Hash object per record (about half the cost for a record's few hundred bytes).
const sha256 = (text: string): string => hash('sha256', text, 'hex');
const hmac = (secret: Buffer, recordHash: string): string => createHmac('sha256', secret).update(recordHash, 'utf8').digest('hex');

/** The fields the hash covers: everything but `hash`, `mac` and `streamId`. */
export function hashedBody(record: Omit<AuditRecord, 'hash' | 'mac' | 'streamId'> & { hash?: string; mac?: string; streamId?: string }): Record<string, unknown> {
  const { hash: _hash, mac: _mac, streamId: _streamId, ...body } = record;
  return body;
}

/** The hash a record should carry: SHA-256 of `prev + "\n" + canonicalJson(body)`, hex. */
export function computeHash(record: Omit<AuditRecord, 'hash' | 'mac' | 'streamId'> & { hash?: string; mac?: string; streamId?: string }): string {
  return sha256(`${record.prev}\n${canonicalJson(hashedBody(record))}`);
}

/**
 * `canonicalJson(hashedBody(record))` for a record this process prepared, assembled from its fields in
 * sorted key order with the JSON-valued ones already canonical: appending hashes every record once per
 * attempt, and contended appends retry.
 */
function canonicalBody(body: Omit<StoredRecord, 'hash' | 'mac'>, json: { chain: string; reasons?: string; detail?: string }): string {
  const str = (v: string) => JSON.stringify(v);
  const parts: string[] = [`"action":${str(body.action)}`];
  if (body.agent !== undefined) parts.push(`"agent":${str(body.agent)}`);
  parts.push(`"at":${JSON.stringify(body.at)}`, `"chain":${json.chain}`);
  if (json.detail !== undefined) parts.push(`"detail":${json.detail}`);
  if (body.kid !== undefined) parts.push(`"kid":${str(body.kid)}`);
  parts.push(`"outcome":${str(body.outcome)}`, `"prev":${str(body.prev)}`, `"principal":${str(body.principal)}`);
  if (json.reasons !== undefined) parts.push(`"reasons":${json.reasons}`);
  if (body.risk !== undefined) parts.push(`"risk":${JSON.stringify(body.risk)}`);
  parts.push(`"runId":${str(body.runId)}`, `"seq":${JSON.stringify(body.seq)}`);
  if (body.subject !== undefined) parts.push(`"subject":${str(body.subject)}`);
  if (body.tenant !== undefined) parts.push(`"tenant":${str(body.tenant)}`);
  parts.push(`"writer":${str(body.writer)}`);
  return `{${parts.join(',')}}`;
}

/** The MAC a writer with `secret` puts on a record with this hash. */
export const computeMac = (secret: Buffer, hash: string): string => hmac(secret, hash);

// ---------------------------------------------------------------------------------------------
// Records in the stream: `r` (the hashed body, canonical JSON), `hash` and `mac`. Entries written
// before December 2026 hold one field per record field instead (arrays and `detail` as canonical
// JSON); both are read.

const HEX64 = /^[0-9a-f]{64}$/;

const InputSchema = z
  .object({
    runId: z.string().min(1),
    principal: z.string().min(1),
    tenant: z.string().optional(),
    chain: z.array(z.string()),
    agent: z.string().optional(),
    action: z.enum(AUDIT_ACTIONS),
    subject: z.string().optional(),
    outcome: z.string().min(1),
    reasons: z.array(z.string()).optional(),
    risk: z.number().optional(),
    // Kept as given (no copying), so keys such as "__proto__" survive and the hash stays stable.
    detail: z.custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'expected an object').optional(),
  })
  .strict();

const RecordSchema = InputSchema.extend({
  seq: z.number().int().positive(),
  at: z.number().int().nonnegative(),
  writer: z.string().min(1),
  prev: z.string().regex(HEX64),
  hash: z.string().regex(HEX64),
  kid: z.string().min(1).optional(),
  mac: z.string().regex(HEX64).optional(),
}).strict();

/** Field order in the stream (and in exported lines). */
const FIELDS = ['seq', 'at', 'writer', 'runId', 'principal', 'tenant', 'chain', 'agent', 'action', 'subject', 'outcome', 'reasons', 'risk', 'detail', 'prev', 'hash', 'kid', 'mac'] as const;
type Field = (typeof FIELDS)[number];
const JSON_FIELDS = new Set<Field>(['chain', 'reasons', 'detail']);
const FIELD_SET = new Set<string>(FIELDS);

type StoredRecord = Omit<AuditRecord, 'streamId'>;

/**
 * A record as the field list of its stream entry (without the stream id): the hashed body as one field,
 * which Redis stores and the writer sends far more cheaply than a field per member. `body` is
 * `canonicalJson(hashedBody(record))` when the caller has it already.
 */
export function toFields(record: Omit<AuditRecord, 'streamId'> & { streamId?: string }, body: string = canonicalJson(hashedBody(record))): string[] {
  return record.mac === undefined ? ['r', body, 'hash', record.hash] : ['r', body, 'hash', record.hash, 'mac', record.mac];
}

/** A JSON object's members, or none. */
function parsedObject(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The older layout's fields (one per record field, as strings) for an entry written as `r`, `hash`, `mac`; or why they cannot be had. */
function expanded(flat: string[]): string[] | string {
  const out: string[] = [];
  let body: string | undefined;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    if (flat[i] !== 'r') out.push(flat[i]!, flat[i + 1]!);
    else if (body === undefined) body = flat[i + 1];
    else return "field 'r' appears twice";
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body!);
  } catch {
    return 'its body (r) is not JSON';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'its body (r) is not a JSON object';
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    const numeric = k === 'seq' || k === 'at' || k === 'risk';
    if (JSON_FIELDS.has(k as Field)) out.push(k, JSON.stringify(v));
    else if (numeric ? typeof v === 'number' : typeof v === 'string') out.push(k, String(v));
    else return `its body's '${k}' is not a ${numeric ? 'number' : 'string'}`;
  }
  return out;
}

export type VerifyItem = { streamId: string; record: AuditRecord } | { streamId: string; error: string; fields?: Record<string, string> };

const INT = /^(0|[1-9][0-9]*)$/;

/** Parses a stream entry strictly: any field it cannot account for makes it malformed. */
export function fromFields(streamId: string, entry: string[]): VerifyItem {
  // No prototype: a field named __proto__ is a field like any other (and an unexpected one).
  const fields: Record<string, string> = Object.create(null) as Record<string, string>;
  const fail = (error: string): VerifyItem => ({ streamId, error, fields });
  let flat = entry;
  if (entry.some((f, i) => i % 2 === 0 && f === 'r')) {
    const out = expanded(entry);
    if (typeof out === 'string') {
      // What can be read of it still places it in the chain (seq, prev, hash), as for the older layout.
      for (let i = 0; i + 1 < entry.length; i += 2) {
        if (entry[i] !== 'r') fields[entry[i]!] = entry[i + 1]!;
        else for (const [k, v] of Object.entries(parsedObject(entry[i + 1]!))) fields[k] = typeof v === 'string' ? v : (JSON.stringify(v) ?? '');
      }
      return fail(out);
    }
    flat = out;
  }
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const k = flat[i]!;
    if (Object.hasOwn(fields, k)) return fail(`field '${k}' appears twice`);
    fields[k] = flat[i + 1]!;
  }
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (!FIELD_SET.has(k)) return fail(`unexpected field '${k}'`);
    if (k === 'seq' || k === 'at') {
      if (!INT.test(v)) return fail(`${k} '${v}' is not a whole number`);
      raw[k] = Number(v);
    } else if (k === 'risk') {
      const n = Number(v);
      if (!Number.isFinite(n) || String(n) !== v) return fail(`risk '${v}' is not a number`);
      raw[k] = n;
    } else if (JSON_FIELDS.has(k as Field)) {
      try {
        raw[k] = JSON.parse(v);
      } catch {
        return fail(`${k} is not JSON`);
      }
    } else raw[k] = v;
  }
  return fromObject(streamId, raw, fields);
}

function fromObject(streamId: string, raw: Record<string, unknown>, fields?: Record<string, string>): VerifyItem {
  const parsed = RecordSchema.safeParse(raw);
  if (!parsed.success) {
    return { streamId, error: parsed.error.issues.map((i) => `${i.path.join('.') || '(record)'}: ${i.message}`).join('; '), ...(fields ? { fields } : {}) };
  }
  return { streamId, record: { ...(parsed.data as StoredRecord), streamId } };
}

/** Parses one exported JSONL line back into a verifier item. */
export function parseExportLine(line: string): VerifyItem {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { streamId: '', error: 'the line is not JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { streamId: '', error: 'the line is not a JSON object' };
  const { streamId, malformed, fields, ...rest } = raw as Record<string, unknown>;
  const id = typeof streamId === 'string' ? streamId : '';
  if (malformed !== undefined) return { streamId: id, error: String(malformed), ...(isStringRecord(fields) ? { fields } : {}) };
  return fromObject(id, rest);
}

const isStringRecord = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

/** One exported line: the record with every field, or the raw fields of an entry that does not parse. */
export function exportLine(item: VerifyItem): string {
  if ('record' in item) {
    const { streamId, ...rest } = item.record;
    const ordered: Record<string, unknown> = { streamId };
    for (const f of FIELDS) if (rest[f] !== undefined) ordered[f] = rest[f];
    return JSON.stringify(ordered);
  }
  return JSON.stringify({ streamId: item.streamId, malformed: item.error, fields: item.fields ?? {} });
}

const seqOfStreamId = (id: string): number => {
  const n = Number(id.split('-')[0]);
  return Number.isSafeInteger(n) ? n : 0;
};

// ---------------------------------------------------------------------------------------------
// Verification

interface Place {
  seq: number;
  hash: string;
  streamId: string;
}

/**
 * Checks a sequence of entries, in stream order, one at a time (memory stays small however long the
 * log). Feed it with `push`, then call `finish` with the head key (null: the key is missing;
 * undefined: not known, which skips the checks of the end of the log).
 */
export class ChainVerifier {
  private readonly problems: AuditProblem[] = [];
  private entries = 0;
  private macsVerified = 0;
  private last: Place = { seq: 0, hash: GENESIS_HASH, streamId: '' };
  private beforeLast: Place = { seq: -1, hash: '', streamId: '' };
  private held: VerifyItem | undefined;
  /** Places left empty: entries missing here were deleted, unless they turn up later (moved). */
  private readonly gaps: Array<{ from: number; to: number; prevHash: string; streamId: string }> = [];
  /** Entries that did not chain where they stood: inserted, unless their place turns up later (moved). */
  private readonly suspects: Array<{ record: AuditRecord; problem: AuditProblem }> = [];
  /** The last entry competes with the one before it for the same seq; the head decides. */
  private fork: { record: AuditRecord; previous: Place } | undefined;

  constructor(private readonly options: VerifyOptions = {}) {}

  push(item: VerifyItem): void {
    if (this.held) this.process(this.held, item);
    this.held = item;
  }

  finish(head: AuditHead | null | undefined): VerifyReport {
    if (this.held) this.process(this.held, undefined);
    this.held = undefined;
    if (this.fork) {
      const { record, previous } = this.fork;
      if (head && head.hash === record.hash) {
        this.add(previous.seq, previous.streamId, 'inserted', `a second entry claims seq ${previous.seq}; the head continues from the other one (stream id ${record.streamId})`);
        this.last = { seq: record.seq, hash: record.hash, streamId: record.streamId };
      } else {
        this.add(record.seq, record.streamId, 'inserted', `a second entry claims seq ${record.seq} (the first is at stream id ${previous.streamId}); the head does not continue from it`);
      }
    }
    for (const g of this.gaps) {
      const count = g.to - g.from + 1;
      this.add(g.from, g.streamId, 'deleted', count === 1 ? `seq ${g.from} is missing` : `seq ${g.from}..${g.to} are missing (${count} entries)`);
    }
    if (head === null) {
      if (this.entries > 0) this.add(0, '', 'malformed', 'the head key is missing although the stream has entries');
    } else if (head !== undefined) {
      const last = this.last;
      if (head.seq > last.seq) {
        const n = head.seq - last.seq;
        this.add(last.seq + 1, '', 'truncated', `the head records seq ${head.seq} but the chain ends at seq ${last.seq}: ${n === 1 ? `seq ${head.seq} was` : `seq ${last.seq + 1}..${head.seq} were`} removed from the end`);
      } else if (head.seq === last.seq && head.hash !== last.hash) {
        this.add(last.seq, last.streamId, 'modified', `the head records hash ${head.hash.slice(0, 12)}… for seq ${head.seq} but the entry has ${last.hash.slice(0, 12)}…: the entry was altered and rehashed, or the head rewritten`);
      } else if (head.seq < last.seq) {
        this.add(head.seq + 1, '', 'inserted', `entries after the head (seq ${head.seq + 1}..${last.seq}) were not appended through the log`);
      }
    }
    const problems = this.problems.map((p, i) => ({ p, i })).sort((a, b) => a.p.seq - b.p.seq || a.i - b.i).map(({ p }) => p);
    return { ok: problems.length === 0, entries: this.entries, problems, head, macsVerified: this.macsVerified };
  }

  private add(seq: number, streamId: string, problem: AuditProblemKind, detail: string): AuditProblem {
    const p = { seq, streamId, problem, detail };
    this.problems.push(p);
    return p;
  }

  private accept(record: AuditRecord, seq: number): void {
    this.beforeLast = this.last;
    this.last = { seq, hash: record.hash, streamId: record.streamId };
  }

  private checkMac(e: AuditRecord): void {
    const known = this.options.keys?.[e.writer];
    if (!known) {
      if (this.options.requireMac) this.add(e.seq, e.streamId, 'bad-mac', `no key is known for writer '${e.writer}'`);
      return;
    }
    if (e.mac === undefined || e.kid === undefined) {
      this.add(e.seq, e.streamId, 'bad-mac', `no MAC, but writer '${e.writer}' has a key: not written by it`);
      return;
    }
    const secret = known[e.kid];
    if (!secret) {
      this.add(e.seq, e.streamId, 'bad-mac', `writer '${e.writer}' has no key '${e.kid}'`);
      return;
    }
    if (!timingSafeEqual(Buffer.from(hmac(secret, e.hash), 'hex'), Buffer.from(e.mac, 'hex'))) {
      this.add(e.seq, e.streamId, 'bad-mac', `the MAC does not match key '${e.kid}' of writer '${e.writer}'`);
      return;
    }
    this.macsVerified++;
  }

  private process(item: VerifyItem, next: VerifyItem | undefined): void {
    this.entries++;
    if (!('record' in item)) {
      const f = item.fields ?? {};
      const seq = f.seq !== undefined && INT.test(f.seq) ? Number(f.seq) : seqOfStreamId(item.streamId);
      this.add(seq, item.streamId, 'malformed', item.error);
      // When what is left of it still holds its place in the chain, keep the chain going through it.
      if (seq === this.last.seq + 1 && f.prev === this.last.hash && f.hash !== undefined && HEX64.test(f.hash)) {
        this.beforeLast = this.last;
        this.last = { seq, hash: f.hash, streamId: item.streamId };
      }
      return;
    }
    const e = item.record;
    const n = next && 'record' in next ? next.record : undefined;
    let selfOk = false;
    try {
      selfOk = computeHash(e) === e.hash;
    } catch {
      // not canonicalizable: counts as modified
    }
    if (!selfOk) this.add(e.seq, e.streamId, 'modified', 'its content does not match its hash: a field was changed after it was written');
    this.checkMac(e);
    const last = this.last;

    // In its place.
    if (e.prev === last.hash && (e.seq === last.seq + 1 || !selfOk)) return this.accept(e, last.seq + 1);

    // Not ahead of the chain: a rival for the last place, an entry moved later, or a copy.
    if (e.seq <= last.seq) {
      if (e.seq === last.seq && e.prev === this.beforeLast.hash) {
        if (n && n.prev === e.hash) {
          this.add(last.seq, last.streamId, 'inserted', `a second entry claims seq ${last.seq}; the chain continues from the other one (stream id ${e.streamId})`);
          this.last = { seq: e.seq, hash: e.hash, streamId: e.streamId };
          return;
        }
        if (next === undefined) {
          this.fork = { record: e, previous: last };
          return;
        }
        this.add(e.seq, e.streamId, 'inserted', `a second entry claims seq ${e.seq} (the first is at stream id ${last.streamId}); the chain does not continue from it`);
        return;
      }
      const gap = this.gaps.find((g) => g.from === e.seq && g.prevHash === e.prev);
      if (gap) {
        this.add(e.seq, e.streamId, 'reordered', `seq ${e.seq} stands after seq ${last.seq} in the stream: it was moved later`);
        gap.from++;
        gap.prevHash = e.hash;
        if (gap.from > gap.to) this.gaps.splice(this.gaps.indexOf(gap), 1);
        return;
      }
      this.add(e.seq, e.streamId, 'inserted', `seq ${e.seq} comes after seq ${last.seq} and fills no gap: a copy or a forgery`);
      return;
    }

    // Ahead of its place, or not chained to the entry before it.
    if (n && n.seq === last.seq + 1 && n.prev === last.hash) {
      // The next entry continues the chain without this one.
      const detail =
        e.seq === last.seq + 1
          ? `it claims seq ${e.seq} but does not chain to seq ${last.seq}, and the next entry does`
          : `it claims seq ${e.seq} after seq ${last.seq}, and the next entry continues the chain without it`;
      this.suspects.push({ record: e, problem: this.add(e.seq, e.streamId, 'inserted', detail) });
      return;
    }
    // Entries seen earlier than their place, which it now is.
    for (;;) {
      const at = this.suspects.findIndex((s) => s.record.seq === this.last.seq + 1 && s.record.prev === this.last.hash);
      if (at < 0) break;
      const s = this.suspects.splice(at, 1)[0]!;
      s.problem.problem = 'reordered';
      s.problem.detail = `seq ${s.record.seq} stands earlier in the stream than its place after seq ${this.last.seq}: it was moved earlier`;
      this.accept(s.record, s.record.seq);
    }
    const now = this.last;
    if (e.prev === now.hash && e.seq === now.seq + 1) return this.accept(e, e.seq);
    if (e.seq === now.seq + 1) {
      this.add(
        now.seq,
        now.streamId,
        'modified',
        `seq ${e.seq} chains to hash ${e.prev.slice(0, 12)}… but seq ${now.seq} has ${now.hash.slice(0, 12)}…: seq ${now.seq} was altered and rehashed (or seq ${e.seq}'s prev was)`,
      );
      return this.accept(e, e.seq);
    }
    if (e.prev === now.hash) {
      this.add(e.seq, e.streamId, 'modified', `it chains to seq ${now.seq} but claims seq ${e.seq}: its seq was altered and rehashed`);
      return this.accept(e, now.seq + 1);
    }
    this.gaps.push({ from: now.seq + 1, to: e.seq - 1, prevHash: now.hash, streamId: e.streamId });
    return this.accept(e, e.seq);
  }
}

/** Verifies exported JSONL lines (an external copy). Without `head`, a cut end of the log goes unnoticed. */
export async function verifyExport(lines: AsyncIterable<string> | Iterable<string>, options: VerifyOptions & { head?: AuditHead } = {}): Promise<VerifyReport> {
  const v = new ChainVerifier(options);
  for await (const line of lines) if (line.trim() !== '') v.push(parseExportLine(line));
  return v.finish(options.head);
}

// ---------------------------------------------------------------------------------------------
// The log

/*
 * Compare-and-set append of a batch, with a waiting line for fairness.
 *
 * KEYS: stream, head, line (sorted set of waiting appends by arrival), alive (hash: waiter -> expiry).
 * ARGV: genesis hash, expected seq, expected hash, token (one per batch), waiter ttl ms, n, turn
 * channel, then per entry: field count, stream id, fields...; then the new head's seq and hash.
 *
 * Writers race optimistically while nobody waits. A writer that loses the race joins the line; while
 * the line is not empty only its first member may append, so under contention appends go first come,
 * first served and nobody starves. Whoever appends (or finds a dead first waiter) publishes
 * "<token> <seq> <hash>" on the turn channel for the waiter now first, which then appends at once on
 * that head. A waiter that stops asking (a crashed process) drops out after ttl.
 *
 * Returns {1} when appended, else {0, seq, hash, ahead}: the current head and how many wait before
 * the caller (0: retry at once).
 */
const APPEND_LUA = `
local seq = redis.call('HGET', KEYS[2], 'seq')
local hash = redis.call('HGET', KEYS[2], 'hash')
if not seq then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('PALISADE_AUDIT the audit head ' .. KEYS[2] .. ' is missing but the stream exists: refusing to start a second chain (run palisade audit verify)')
  end
  seq = '0'
  hash = ARGV[1]
elseif not hash then
  return redis.error_reply('PALISADE_AUDIT the audit head ' .. KEYS[2] .. ' has no hash (run palisade audit verify)')
end
local token = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[5])
local first = false
local purged = false
while true do
  local f = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not f then break end
  if f == token or tonumber(redis.call('HGET', KEYS[4], f) or '0') > now then
    first = f
    break
  end
  redis.call('ZREM', KEYS[3], f)
  redis.call('HDEL', KEYS[4], f)
  purged = true
end
if purged and first and first ~= token then redis.call('PUBLISH', ARGV[7], first .. ' ' .. seq .. ' ' .. hash) end
local function wait()
  if not redis.call('ZSCORE', KEYS[3], token) then
    redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000000 + tonumber(t[2]), token)
  end
  redis.call('HSET', KEYS[4], token, expires)
  return {0, seq, hash, redis.call('ZRANK', KEYS[3], token)}
end
if first and first ~= token then return wait() end
if seq ~= ARGV[2] or hash ~= ARGV[3] then return wait() end
local i = 8
for e = 1, tonumber(ARGV[6]) do
  local nf = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], ARGV[i + 1], unpack(ARGV, i + 2, i + 1 + nf))
  i = i + 2 + nf
end
redis.call('HSET', KEYS[2], 'seq', ARGV[#ARGV - 1], 'hash', ARGV[#ARGV])
if first then
  redis.call('ZREM', KEYS[3], token)
  redis.call('HDEL', KEYS[4], token)
  local nxt = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if nxt then redis.call('PUBLISH', ARGV[7], nxt .. ' ' .. ARGV[#ARGV - 1] .. ' ' .. ARGV[#ARGV]) end
end
return {1}`;
const APPEND_SHA = createHash('sha1').update(APPEND_LUA).digest('hex');

type Prepared = Omit<StoredRecord, 'seq' | 'prev' | 'hash' | 'mac'>;

/** A batch's place in the line of writers: unique across processes (a random prefix per process) without asking the OS each time. */
const TOKEN_PREFIX = `${randomBytes(9).toString('base64url')}.`;
let tokens = 0;
/** An entry with its JSON-valued fields already in canonical form: they are hashed and stored as is, perhaps more than once. */
interface PreparedEntry {
  entry: Prepared;
  json: { chain: string; reasons?: string; detail?: string };
  /** The writer's key, for the record's MAC. */
  secret?: Buffer;
}
interface Pending {
  entry: PreparedEntry;
  resolve: (record: AuditRecord) => void;
  reject: (error: unknown) => void;
}


function checkSigner(writer: string, key: AuditLogOptions['key']): void {
  if (!writer) throw new AuditError('an audit writer needs a non-empty id');
  if (key) {
    if (!key.kid) throw new AuditError('an audit key needs a non-empty kid');
    if (key.secret.length < 16) throw new AuditError('an audit key secret needs at least 16 bytes');
  }
}

const signingKey = (key: AuditLogOptions['key']): { kid: string; secret: Buffer } | undefined => (key ? { kid: wellFormed(key.kid), secret: Buffer.from(key.secret) } : undefined);

export class AuditLog {
  readonly streamKey: string;
  readonly headKey: string;
  private readonly lineKey: string;
  private readonly aliveKey: string;
  private readonly turnChannel: string;
  readonly writer: string;
  private readonly redis: Redis;
  private readonly key: { kid: string; secret: Buffer } | undefined;
  private readonly timeoutMs: number;
  private readonly maxDetailBytes: number;
  private readonly pending: Pending[] = [];
  private draining = false;
  /** The head after this instance's last append: the first guess for the next one. */
  private knownHead: AuditHead | undefined;
  /** Under contention: a subscriber to the turn channel, and the heads it brought for our waiting batches. */
  private turns: { conn: Redis; ready: Promise<void>; idle?: NodeJS.Timeout } | undefined;
  private readonly waiting = new Map<string, { head?: AuditHead; wake?: () => void }>();

  constructor(options: AuditLogOptions) {
    checkSigner(options.writer, options.key);
    this.redis = options.redis;
    this.streamKey = `${options.prefix}:audit`;
    this.headKey = `${options.prefix}:audit:head`;
    this.lineKey = `${options.prefix}:audit:line`;
    this.aliveKey = `${options.prefix}:audit:line:alive`;
    this.turnChannel = `${options.prefix}:audit:turn`;
    this.writer = wellFormed(options.writer);
    this.key = signingKey(options.key);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxDetailBytes = options.maxDetailBytes ?? 8192;
  }

  /**
   * Appends one record and resolves with it once it is in Redis. Safe with any number of writers and
   * processes: each append is a compare-and-set on the head; under contention writers take turns,
   * first come first served (see the script above). Appends made concurrently through one instance go
   * to Redis together, in call order, so share one instance per writer in a process. Rejects with
   * AuditError on an invalid entry or after `timeoutMs` without a turn.
   *
   * Under contention an instance opens a second connection (to hear when its turn comes); it closes
   * itself after 5 s without contention, or call `close()` on shutdown.
   */
  append(entry: AuditEntryInput): Promise<AuditRecord> {
    return this.enqueue(entry, this.writer, this.key);
  }

  /**
   * Appends as another writer, with that writer's key, through this instance: the writers of one process
   * (the edge and each agent it serves) then share one batch and one view of the head, instead of taking
   * turns on the head against each other.
   */
  as(writer: string, key?: AuditLogOptions['key']): { append(entry: AuditEntryInput): Promise<AuditRecord> } {
    checkSigner(writer, key);
    const name = wellFormed(writer);
    const signing = signingKey(key);
    return { append: (entry) => this.enqueue(entry, name, signing) };
  }

  private enqueue(entry: AuditEntryInput, writer: string, key: { kid: string; secret: Buffer } | undefined): Promise<AuditRecord> {
    let prepared: PreparedEntry;
    try {
      prepared = this.prepare(entry, writer, key);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.pending.push({ entry: prepared, resolve, reject });
      // Start on the next microtask, so appends made in the same tick go to Redis as one batch.
      if (this.pending.length === 1) queueMicrotask(() => void this.drain());
    });
  }

  private prepare(entry: AuditEntryInput, writer: string, key: { kid: string; secret: Buffer } | undefined): PreparedEntry {
    const parsed = InputSchema.safeParse(entry);
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
      kid: key?.kid,
    };
    for (const k of Object.keys(out) as (keyof Prepared)[]) if (out[k] === undefined) delete out[k];
    const json: PreparedEntry['json'] = { chain: canonicalJson(out.chain) };
    if (out.reasons) json.reasons = canonicalJson(out.reasons);
    if (detailJson !== undefined) json.detail = detailJson;
    return { entry: out, json, ...(key ? { secret: key.secret } : {}) };
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

  /** The batch's records on `head`, and each one's hashed body as it is stored. */
  private chainFrom(head: AuditHead, entries: PreparedEntry[]): { records: AuditRecord[]; bodies: string[] } {
    let { seq, hash } = head;
    const bodies: string[] = [];
    const records = entries.map(({ entry, json, secret }) => {
      seq += 1;
      // One copy per record: entries vary in shape, and each spread of one is a slow, generic copy.
      const record = { ...entry, seq, prev: hash } as AuditRecord;
      const body = canonicalBody(record, json);
      bodies.push(body);
      record.hash = sha256(`${hash}\n${body}`);
      record.streamId = `${seq}-0`;
      if (secret) record.mac = hmac(secret, record.hash);
      hash = record.hash;
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
      const conn = this.redis.duplicate();
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

  /** Closes the connection this log opened to hear about its turn under contention (the caller's connection stays open). */
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
    const conn = this.redis.duplicate({ lazyConnect: true });
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
   * run's records only: their hashes and MACs can be checked, the chain between them cannot.
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

  /** Reads the whole log in pages and checks every link, the head and, given keys, every MAC. */
  async verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    const v = new ChainVerifier(options);
    let cursor = '-';
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
