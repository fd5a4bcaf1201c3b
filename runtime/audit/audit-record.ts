/**
 * An audit record: what a caller records, the chain fields its writer adds, and how it is hashed and signed.
 *
 * Each record holds `seq` (1, 2, 3 ...), `at` (the writer's clock, ms), `writer` (the component that
 * wrote it), the fields of {@link AuditEntryInput}, `prev` (the previous record's hash; 64 zeros for
 * seq 1), `hash`, and when the writer has a key, `kid`; the last record of each run of a writer's records
 * in one append also carries `sig` and `signs`:
 *
 *     hash = hex(SHA-256(prev + "\n" + canonicalJson(record without hash, mac, sig, signs and streamId)))
 *     sig  = base64url(Ed25519(writer's record-signing key, "palisade audit run v1\n" + signs + "\n" + hash))
 *
 * `signs` is how many records the signature vouches for, ending with its own: consecutive seqs, one
 * writer, one key, of any runIds (audit-signing.ts). One signature per run of records keeps the cost of
 * signing off each record; the hash covers `prev`, so it binds every record of the run, and all before,
 * to their place. A signature may thus vouch for records of other runIds too: an export of one runId's
 * records alone (`export --run`) shows their hashes, not always the records that sign for them.
 * Records written by earlier versions, before records were signed, carry `mac` = hex(HMAC-SHA-256(secret,
 * hash)) instead; they are still read and verified with the writer's secret, or vouched for by a verified anchor.
 *
 * canonicalJson is RFC 8785 (JCS) for the values a record holds: object keys sorted by UTF-16 code
 * units, no whitespace, ECMAScript number formatting.
 */
import { createHmac, hash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';

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
  /** The id of the writer's key that signs its records. */
  kid?: string;
  /** Records written before signatures: HMAC-SHA-256 of `hash` with the writer's secret, hex. */
  mac?: string;
  /** The writer's Ed25519 signature over `signs` and `hash`, base64url; not covered by the hash. */
  sig?: string;
  /** How many records `sig` vouches for, ending with this one; not covered by the hash. */
  signs?: number;
  /** The Redis stream id (`<seq>-0`); not covered by the hash. */
  streamId: string;
}

/** A record as its stream entry holds it: without the stream id. */
export type StoredRecord = Omit<AuditRecord, 'streamId'>;

export interface AuditHead {
  seq: number;
  hash: string;
}

/** Writer → key id → the audit secret of its key file (it also derives the writer's signing key). */
export type AuditKeys = Record<string, Record<string, Buffer>>;

export const GENESIS_HASH = '0'.repeat(64);
export const HEX64 = /^[0-9a-f]{64}$/;
/** An Ed25519 signature, base64url without padding. */
export const SIG64 = /^[A-Za-z0-9_-]{86}$/;
/** The most records one signature vouches for: an append sends at most this many. */
export const MAX_SIGNED_RUN = 64;

/**
 * What a writer may be called: lowercase ASCII letters, digits, `_` and `-`, starting with a letter, with
 * at most one `:` (`edge`, `billing`, `agent:billing`). Anything else (capitals, other scripts, zero-width
 * or bidirectional controls, look-alikes) could pass for a real writer on screen, so it is refused when
 * written, when keys are loaded and when the log is verified.
 */
export const WRITER_NAME = /^[a-z][a-z0-9_-]{0,62}(?::[a-z][a-z0-9_-]{0,62})?$/;

export const AuditEntrySchema = z
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

export const AuditRecordSchema = AuditEntrySchema.extend({
  seq: z.number().int().positive(),
  at: z.number().int().nonnegative(),
  writer: z.string().min(1),
  prev: z.string().regex(HEX64),
  hash: z.string().regex(HEX64),
  kid: z.string().min(1).optional(),
  mac: z.string().regex(HEX64).optional(),
  sig: z.string().regex(SIG64).optional(),
  signs: z.number().int().positive().optional(),
}).strict();

/**
 * The hash of a record whose hashed body, as canonical JSON, is `body`: SHA-256 of `prev + "\n" + body`, hex.
 * The one-shot hash: no Hash object per record (about half the cost for a record's few hundred bytes).
 */
export const chainHash = (prev: string, body: string): string => hash('sha256', `${prev}\n${body}`, 'hex');

/** A record with or without the fields its hash does not cover. */
export type HashedRecord = Omit<AuditRecord, 'hash' | 'mac' | 'sig' | 'signs' | 'streamId'> & { hash?: string; mac?: string; sig?: string; signs?: number; streamId?: string };

/** The fields the hash covers: everything but `hash`, `mac`, `sig`, `signs` and `streamId`. */
export function hashedBody(record: HashedRecord): Record<string, unknown> {
  const { hash: _hash, mac: _mac, sig: _sig, signs: _signs, streamId: _streamId, ...body } = record;
  return body;
}

/** The hash a record should carry: SHA-256 of `prev + "\n" + canonicalJson(body)`, hex. */
export function computeHash(record: HashedRecord): string {
  return chainHash(record.prev, canonicalJson(hashedBody(record)));
}

/**
 * `canonicalJson(hashedBody(record))` for a record this process prepared, assembled from its fields in
 * sorted key order with the JSON-valued ones already canonical: appending hashes every record once per
 * attempt, and contended appends retry.
 */
export function canonicalBody(body: Omit<StoredRecord, 'hash' | 'mac' | 'sig' | 'signs'>, json: { chain: string; reasons?: string; detail?: string }): string {
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

/** The MAC a writer with `secret` put on a record with this hash, before records were signed. */
export const computeMac = (secret: Buffer, recordHash: string): string => createHmac('sha256', secret).update(recordHash, 'utf8').digest('hex');
