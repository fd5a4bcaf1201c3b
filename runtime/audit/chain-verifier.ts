import { computeHash, GENESIS_HASH, HEX64, type AuditHead, type AuditRecord } from './audit-record.js';
import { latestAnchor, type Anchor, type AnchorSet } from './anchors.js';
import { AuditKeyError, RecordAuthenticator, type AuthOptions, type AuthProblemKind } from './record-auth.js';
import { INT, parseExportLine, seqOfStreamId, type VerifyItem } from './record-fields.js';

/**
 * What can be wrong: the chain's own (modified ... malformed); who wrote a record (bad-mac: a signature or
 * MAC that does not hold, or a keyed writer's record without one; unsigned: a writer without a configured
 * key; unverifiable: an HMAC record and no secret to check it; bad-writer: a name that is not a plain one);
 * bad-anchor: an anchor line that is not a valid, signed anchor of this log.
 */
export type AuditProblemKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'truncated' | 'malformed' | AuthProblemKind | 'bad-anchor';

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
  /** Records whose signature (or, written before signatures, MAC) was checked and matched. */
  macsVerified: number;
  /** Records of writers without a key, let pass by `allowUnsigned` (0 otherwise: they are problems). */
  unsigned: number;
  /** Records taken on a verified anchor's word (see AuthOptions). */
  vouched: number;
  /** Writers with a configured key. */
  writers: number;
  /** The latest valid anchor (null: anchors were given, none valid; undefined: none were given). */
  anchor: Anchor | null | undefined;
  /** Records after the latest anchor: they could be cut unnoticed. */
  sinceAnchor?: number;
}

/**
 * Every record needs a valid signature (or MAC) from the key configured for exactly its writer, unless
 * `allowUnsigned` is set; with neither keys nor `allowUnsigned`, verifying refuses to start.
 */
export interface VerifyOptions extends AuthOptions {
  /** The default now; kept so that callers written before it was still compile. */
  requireMac?: true;
  /** Start after this place (a verified anchor): the records up to it are not read. */
  from?: AuditHead;
  /** Anchors to check the log against: every anchored record must be there, unchanged. */
  anchors?: AnchorSet;
}

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
  private last: Place = { seq: 0, hash: GENESIS_HASH, streamId: '' };
  private beforeLast: Place = { seq: -1, hash: '', streamId: '' };
  private held: VerifyItem | undefined;
  /** Places left empty: entries missing here were deleted, unless they turn up later (moved). */
  private readonly gaps: Array<{ from: number; to: number; prevHash: string; streamId: string }> = [];
  /** Entries that did not chain where they stood: inserted, unless their place turns up later (moved). */
  private readonly suspects: Array<{ record: AuditRecord; problem: AuditProblem }> = [];
  /** The last entry competes with the one before it for the same seq; the head decides. */
  private fork: { record: AuditRecord; previous: Place } | undefined;

  private readonly auth: RecordAuthenticator;
  private readonly anchorsAt = new Map<number, Anchor[]>();
  private readonly matched = new Set<Anchor>();

  constructor(private readonly options: VerifyOptions = {}) {
    const anchors = options.anchors;
    const vouchedThrough = options.vouchedThrough ?? (anchors?.anchors ?? []).reduce((most, a) => (a.verified && a.seq > most ? a.seq : most), 0);
    this.auth = new RecordAuthenticator({ ...options, vouchedThrough }, (e, problem, detail) => this.add(e.seq, e.streamId, problem, detail));
    if (this.auth.writers === 0 && !options.allowUnsigned) {
      throw new AuditKeyError("verifying the audit log needs the writers' keys (keys or publicKeys); without them nothing shows who wrote a record (allowUnsigned: development logs only)");
    }
    if (options.from) this.last = { seq: options.from.seq, hash: options.from.hash, streamId: '' };
    for (const problem of anchors?.problems ?? []) this.add(0, '', 'bad-anchor', problem);
    for (const a of anchors?.anchors ?? []) {
      if (options.from && a.seq <= options.from.seq) continue;
      const list = this.anchorsAt.get(a.seq) ?? [];
      list.push(a);
      this.anchorsAt.set(a.seq, list);
    }
  }

  push(item: VerifyItem): void {
    if (this.held) this.process(this.held, item);
    this.held = item;
  }

  finish(head: AuditHead | null | undefined): VerifyReport {
    if (this.held) this.process(this.held, undefined);
    this.held = undefined;
    this.auth.finish();
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
    this.checkAnchors();
    if (head === null) {
      if (this.entries > 0 || this.options.from) this.add(0, '', 'malformed', 'the head key is missing although the stream has entries');
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
    const anchor = this.options.anchors ? (latestAnchor(this.options.anchors.anchors) ?? null) : undefined;
    return {
      ok: problems.length === 0,
      entries: this.entries,
      problems,
      head,
      macsVerified: this.auth.verified,
      unsigned: this.auth.unsigned,
      vouched: this.auth.vouched,
      writers: this.auth.writers,
      anchor,
      ...(anchor ? { sinceAnchor: Math.max(0, this.last.seq - anchor.seq) } : {}),
    };
  }

  /** Every anchored record must be in the log as it was: one past the end was cut, one that differs was rewritten. */
  private checkAnchors(): void {
    let cut: Anchor | undefined;
    for (const [seq, list] of this.anchorsAt) {
      for (const a of list) {
        if (this.matched.has(a)) continue;
        if (seq > this.last.seq) {
          if (!cut || seq > cut.seq) cut = a;
          continue;
        }
        this.add(seq, '', 'modified', `seq ${seq} was anchored ${new Date(a.at).toISOString()} with hash ${a.hash.slice(0, 12)}…, and the log no longer holds that record: it was rewritten before the anchor`);
      }
    }
    if (cut) {
      const from = this.last.seq + 1;
      this.add(from, '', 'truncated', `seq ${cut.seq} was anchored ${new Date(cut.at).toISOString()} but the log ends at seq ${this.last.seq}: ${from === cut.seq ? `seq ${from} was` : `seq ${from}..${cut.seq} were`} cut from the end (and the head moved back)`);
    }
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
    this.auth.push(e);
    for (const a of this.anchorsAt.get(e.seq) ?? []) if (a.hash === e.hash && selfOk) this.matched.add(a);
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

/** Verifies exported JSONL lines (an external copy). Without `head` or anchors, a cut end of the log goes unnoticed. */
export async function verifyExport(lines: AsyncIterable<string> | Iterable<string>, options: VerifyOptions & { head?: AuditHead } = {}): Promise<VerifyReport> {
  const v = new ChainVerifier(options);
  for await (const line of lines) if (line.trim() !== '') v.push(parseExportLine(line));
  return v.finish(options.head);
}
