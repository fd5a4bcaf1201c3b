/**
 * An audit record: what a caller records, the chain fields its writer adds, and how it is hashed and MACed.
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
 * to its place in the chain: rewriting the chain after a keyed record breaks that record's MAC.
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
  /** The id of the writer's key that made `mac`. */
  kid?: string;
  /** HMAC-SHA-256 of `hash` with the writer's key, hex. */
  mac?: string;
  /** The Redis stream id (`<seq>-0`); not covered by the hash. */
  streamId: string;
}

/** A record as its stream entry holds it: without the stream id. */
export type StoredRecord = Omit<AuditRecord, 'streamId'>;

export interface AuditHead {
  seq: number;
  hash: string;
}

/** Writer → key id → secret. */
export type AuditKeys = Record<string, Record<string, Buffer>>;

export const GENESIS_HASH = '0'.repeat(64);
export const HEX64 = /^[0-9a-f]{64}$/;

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
}).strict();

/**
 * The hash of a record whose hashed body, as canonical JSON, is `body`: SHA-256 of `prev + "\n" + body`, hex.
 * The one-shot hash: no Hash object per record (about half the cost for a record's few hundred bytes).
 */
export const chainHash = (prev: string, body: string): string => hash('sha256', `${prev}\n${body}`, 'hex');

/** The fields the hash covers: everything but `hash`, `mac` and `streamId`. */
export function hashedBody(record: Omit<AuditRecord, 'hash' | 'mac' | 'streamId'> & { hash?: string; mac?: string; streamId?: string }): Record<string, unknown> {
  const { hash: _hash, mac: _mac, streamId: _streamId, ...body } = record;
  return body;
}

/** The hash a record should carry: SHA-256 of `prev + "\n" + canonicalJson(body)`, hex. */
export function computeHash(record: Omit<AuditRecord, 'hash' | 'mac' | 'streamId'> & { hash?: string; mac?: string; streamId?: string }): string {
  return chainHash(record.prev, canonicalJson(hashedBody(record)));
}

/**
 * `canonicalJson(hashedBody(record))` for a record this process prepared, assembled from its fields in
 * sorted key order with the JSON-valued ones already canonical: appending hashes every record once per
 * attempt, and contended appends retry.
 */
export function canonicalBody(body: Omit<StoredRecord, 'hash' | 'mac'>, json: { chain: string; reasons?: string; detail?: string }): string {
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
export const computeMac = (secret: Buffer, recordHash: string): string => createHmac('sha256', secret).update(recordHash, 'utf8').digest('hex');
