/**
 * Taking anchors: reads the log since the last anchor (or all of it), checks it, and appends a signed
 * anchor of the head to the store. Run periodically by the edge (`palisade serve --anchor-file`) and on
 * demand by `palisade audit anchor`; both may share a store.
 */
import { createPublicKey } from 'node:crypto';
import type { AuditLog } from './audit-log.js';
import { anchorLine, parseAnchorLine, readAnchors, signAnchor, type Anchor, type AnchorPublicKeys, type AnchorSigner, type AnchorStore } from './anchors.js';
import type { AuditProblem, VerifyReport } from './chain-verifier.js';
import type { AuditKeys } from './audit-record.js';
import type { AuditPublicKeys } from './record-auth.js';

export interface AnchoringOptions {
  log: AuditLog;
  /** The log's name in its anchors: its key prefix. */
  prefix: string;
  store: AnchorStore;
  signer: AnchorSigner;
  /** To read back the anchors already stored (the signer's own public key is added). */
  anchorKeys: AnchorPublicKeys;
  /** The writers' keys; without any, anchors pin the head but are never `verified`. */
  keys?: AuditKeys;
  publicKeys?: AuditPublicKeys;
}

/** The log is broken in a way that makes its head no fact to sign: the problems say where. */
export class AnchorRefusedError extends Error {
  override readonly name = 'AnchorRefusedError';
  constructor(
    message: string,
    readonly problems: AuditProblem[] = [],
  ) {
    super(message);
  }
}

export type AnchorResult = { anchor: Anchor; report: VerifyReport; checked: 'since the last anchor' | 'the whole log' } | { skipped: string };

/** Problems that say who wrote a record, not where it stands: the head is still a fact, just not a verified one. */
const AUTHORSHIP = new Set(['bad-mac', 'unsigned', 'unverifiable', 'bad-writer']);

/**
 * Anchors the head. By default it reads only what came after the last anchor, which it must continue;
 * the new anchor is `verified` when that one was and every record since is authenticated. `full` reads
 * the whole log and checks it against every stored anchor: how an operator starts (or restarts, after an
 * upgrade from HMAC records, with the writers' secrets) a line of verified anchors.
 */
export async function takeAnchor(options: AnchoringOptions & { full?: boolean }): Promise<AnchorResult> {
  const { log, store, prefix } = options;
  const anchorKeys = new Map(options.anchorKeys);
  anchorKeys.set(options.signer.kid, createPublicKey(options.signer.privateKey));
  const lastLine = await store.last();
  let latest: Anchor | undefined;
  if (lastLine !== undefined) {
    const parsed = parseAnchorLine(lastLine, anchorKeys, prefix);
    if (typeof parsed === 'string') throw new AnchorRefusedError(`the last line of ${store.name} is not a valid anchor (${parsed}): remove it or restore the file, then anchor again`);
    latest = parsed;
  }
  const head = await log.head();
  if (!head) return { skipped: 'the audit log is empty' };
  if (latest && head.seq < latest.seq) {
    throw new AnchorRefusedError(`the head (seq ${head.seq}) is behind the last anchor (seq ${latest.seq}, ${new Date(latest.at).toISOString()}): records were cut from the end; run palisade audit verify`);
  }
  const from = options.full ? undefined : latest;
  const report = await log.verify({
    ...(options.keys ? { keys: options.keys } : {}),
    ...(options.publicKeys ? { publicKeys: options.publicKeys } : {}),
    allowUnsigned: true,
    ...(from ? { from: { seq: from.seq, hash: from.hash } } : { anchors: await readAnchors([store], anchorKeys, prefix) }),
  });
  const broken = report.problems.filter((p) => !AUTHORSHIP.has(p.problem));
  if (broken.length > 0) {
    const p = broken[0]!;
    throw new AnchorRefusedError(`the audit log is broken (${broken.length} problem${broken.length === 1 ? '' : 's'}; seq ${p.seq} ${p.problem}: ${p.detail}): no anchor taken; run palisade audit verify`, broken);
  }
  const at = report.head;
  if (!at) return { skipped: 'the audit log is empty' };
  const verified = report.problems.length === 0 && report.unsigned === 0 && report.writers > 0 && (from === undefined || from.verified);
  if (latest && at.seq === latest.seq && at.hash === latest.hash && (latest.verified || !verified)) return { skipped: `nothing was appended since the last anchor (seq ${at.seq})` };
  const anchor = signAnchor(options.signer, { log: prefix, seq: at.seq, hash: at.hash, at: Date.now(), verified });
  await store.append(anchorLine(anchor));
  return { anchor, report, checked: from ? 'since the last anchor' : 'the whole log' };
}

/** Anchors every `everyMs`, one at a time, starting at once; errors go to `onError` and the next period tries again. */
export class PeriodicAnchoring {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly options: AnchoringOptions & { everyMs: number; onAnchor?: (result: AnchorResult) => void; onError: (error: unknown) => void },
  ) {}

  start(): void {
    this.tick();
  }

  private tick(): void {
    if (this.stopped) return;
    this.running = takeAnchor(this.options).then(
      (result) => this.options.onAnchor?.(result),
      (error: unknown) => this.options.onError(error),
    );
    void this.running.finally(() => {
      if (this.stopped) return;
      this.timer = setTimeout(() => this.tick(), this.options.everyMs);
      this.timer.unref();
    });
  }

  /** Stops, after the anchor being taken (if any) is written. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
