/**
 * Anchors: signed checkpoints of the audit log's head, kept outside Redis.
 *
 * The head lives in Redis, so an attacker who can write Redis can cut records from the end and move the
 * head back, and the chain alone cannot tell. An anchor is `{ v, log, seq, hash, at, verified, kid, sig }`:
 * the head's seq and hash at time `at`, signed with an anchoring key (Ed25519) that Redis never sees, and
 * stored where the operator chooses (by default an append-only JSONL file). Verifying against the anchors
 * finds any anchored record missing or different: a cut end, or a rewrite of anything before an anchor.
 * What is written after the last anchor is protected by the writers' signatures only: it can still be cut.
 *
 * `verified` says that whoever took the anchor had checked every record up to it (signatures and chain):
 * a verifier that cannot check a record itself (written with an HMAC before records were signed, and only
 * public keys at hand) takes that anchor's word for it. `log` names the log (its key prefix), so an anchor
 * of one deployment's log is not taken for another's.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { HEX64, SIG64 } from './audit-record.js';
import { anchorSignatureValid, signAnchorBody } from './audit-signing.js';
import { canonicalJson } from './canonical-json.js';

export interface Anchor {
  v: 1;
  /** The log's key prefix. */
  log: string;
  seq: number;
  hash: string;
  /** When it was taken (ms since the epoch). */
  at: number;
  /** Every record up to `seq` was checked by the anchorer (signatures, chain). */
  verified: boolean;
  kid: string;
  /** Ed25519 over the rest, base64url. */
  sig: string;
}

const AnchorSchema = z
  .object({
    v: z.literal(1),
    log: z.string().min(1),
    seq: z.number().int().positive(),
    hash: z.string().regex(HEX64),
    at: z.number().int().nonnegative(),
    verified: z.boolean(),
    kid: z.string().min(1).max(64),
    sig: z.string().regex(SIG64),
  })
  .strict();

export interface AnchorSigner {
  kid: string;
  privateKey: KeyObject;
}

/** Anchor key id → public key. */
export type AnchorPublicKeys = ReadonlyMap<string, KeyObject>;

export function signAnchor(signer: AnchorSigner, fields: Pick<Anchor, 'log' | 'seq' | 'hash' | 'at' | 'verified'>): Anchor {
  const unsigned = { v: 1 as const, log: fields.log, seq: fields.seq, hash: fields.hash, at: fields.at, verified: fields.verified, kid: signer.kid };
  return { ...unsigned, sig: signAnchorBody(signer.privateKey, canonicalJson(unsigned)) };
}

export const anchorLine = (a: Anchor): string => JSON.stringify({ v: a.v, log: a.log, seq: a.seq, hash: a.hash, at: a.at, verified: a.verified, kid: a.kid, sig: a.sig });

/** The anchor a line holds, when it is one of `log`'s signed with one of `keys`; else why it is not. */
export function parseAnchorLine(line: string, keys: AnchorPublicKeys, log: string): Anchor | string {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  const parsed = AnchorSchema.safeParse(raw);
  if (!parsed.success) return `not an anchor: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(line)'}: ${i.message}`).join('; ')}`;
  const { sig, ...rest } = parsed.data;
  if (rest.log !== log) return `an anchor of the log '${rest.log}', not of '${log}'`;
  const key = keys.get(rest.kid);
  if (!key) return `signed with anchor key '${rest.kid}', which is not configured`;
  if (!anchorSignatureValid(key, canonicalJson(rest), sig)) return `its signature does not match anchor key '${rest.kid}'`;
  return { ...rest, sig };
}

/** Where anchors are kept. A file by default; any store an attacker with Redis cannot write will do. */
export interface AnchorStore {
  /** Where, for messages. */
  readonly name: string;
  append(line: string): Promise<void>;
  /** Every line, oldest first, blank ones included (none when nothing was stored yet). */
  lines(): AsyncIterable<string>;
  /** The last line, if any. */
  last(): Promise<string | undefined>;
  /**
   * The store of one cell's log, for a deployment with several cells (one audit chain each, see
   * audit-logs.ts): each chain's anchors continue one another, so each needs a line of its own.
   */
  forCell?(cell: number): AnchorStore;
}

/** The store of each cell's anchors: the store itself with one cell, else its `forCell` (refused without one). */
export function cellStores(store: AnchorStore, cells: number): AnchorStore[] {
  if (cells === 1) return [store];
  const forCell = store.forCell?.bind(store);
  if (!forCell) throw new Error(`anchoring a deployment of ${cells} cells needs an anchor store with one line per cell (forCell); ${store.name} has none`);
  return Array.from({ length: cells }, (_, cell) => forCell(cell));
}

const TAIL_BYTES = 64 * 1024;

const missing = (error: unknown): boolean => (error as NodeJS.ErrnoException).code === 'ENOENT';

/** An append-only JSONL file, one anchor a line, each written with O_APPEND and flushed to disk before it counts. */
export class FileAnchorStore implements AnchorStore {
  readonly name: string;

  constructor(readonly path: string) {
    this.name = path;
  }

  /** `anchors.jsonl` → `anchors.cell-3.jsonl`, beside it. */
  forCell(cell: number): FileAnchorStore {
    const dot = this.path.lastIndexOf('.');
    const slash = this.path.lastIndexOf('/');
    return new FileAnchorStore(dot > slash + 1 ? `${this.path.slice(0, dot)}.cell-${cell}${this.path.slice(dot)}` : `${this.path}.cell-${cell}`);
  }

  async append(line: string): Promise<void> {
    const file = await open(this.path, 'a+', 0o600);
    try {
      const { size } = await file.stat();
      // A line cut short (a crash mid-write) must not swallow the next anchor: it stays, and verify names it.
      let sep = '';
      if (size > 0) {
        const { buffer } = await file.read(Buffer.alloc(1), 0, 1, size - 1);
        if (buffer[0] !== 0x0a) sep = '\n';
      }
      await file.appendFile(`${sep}${line}\n`);
      await file.datasync();
    } finally {
      await file.close();
    }
  }

  async *lines(): AsyncIterable<string> {
    const input = createReadStream(this.path, 'utf8');
    const opened = await new Promise<unknown>((resolve) => {
      input.once('open', () => resolve(undefined));
      input.once('error', resolve);
    });
    if (opened !== undefined) {
      if (missing(opened)) return;
      throw opened;
    }
    yield* createInterface({ input, crlfDelay: Infinity });
  }

  async last(): Promise<string | undefined> {
    let file;
    try {
      file = await open(this.path, 'r');
    } catch (error) {
      if (missing(error)) return undefined;
      throw error;
    }
    try {
      const { size } = await file.stat();
      const length = Math.min(size, TAIL_BYTES);
      const { buffer } = await file.read(Buffer.alloc(length), 0, length, size - length);
      return buffer
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .pop();
    } finally {
      await file.close();
    }
  }
}

/** The valid anchors of a store, and what is wrong with the other lines (each one a problem: nothing may be slipped in). */
export interface AnchorSet {
  anchors: Anchor[];
  problems: string[];
}

export async function readAnchors(stores: readonly AnchorStore[], keys: AnchorPublicKeys, log: string): Promise<AnchorSet> {
  const set: AnchorSet = { anchors: [], problems: [] };
  for (const store of stores) {
    let n = 0;
    for await (const line of store.lines()) {
      n++;
      if (line.trim() === '') continue;
      const anchor = parseAnchorLine(line, keys, log);
      if (typeof anchor === 'string') set.problems.push(`${store.name} line ${n}: ${anchor}`);
      else set.anchors.push(anchor);
    }
  }
  return set;
}

/** The anchor with the highest seq (the latest head anchored), if any. */
export const latestAnchor = (anchors: readonly Anchor[]): Anchor | undefined => anchors.reduce<Anchor | undefined>((best, a) => (!best || a.seq > best.seq || (a.seq === best.seq && a.at > best.at) ? a : best), undefined);
