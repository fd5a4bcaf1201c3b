/**
 * Who wrote each record: checks, in stream order, that every record is vouched for by the key configured
 * for exactly the writer it names — a signature over its run (or, for records written before signatures,
 * an HMAC) — and that the name is a plain one (WRITER_NAME). The chain itself is chain-verifier.ts's.
 */
import { timingSafeEqual, type KeyObject } from 'node:crypto';
import { computeMac, MAX_SIGNED_RUN, WRITER_NAME, type AuditKeys, type AuditRecord } from './audit-record.js';
import { publicKeyText, recordSigningKey, runSignatureValid } from './audit-signing.js';

/** Writer → key id → the writer's public record-verification key. */
export type AuditPublicKeys = Record<string, Record<string, KeyObject>>;

/** What checks one writer's records under one key id: its public key and, when known, its secret (which also checks records written before signatures). */
interface WriterKey {
  publicKey: KeyObject;
  secret?: Buffer;
}

export type AuthProblemKind = 'bad-mac' | 'unsigned' | 'unverifiable' | 'bad-writer';

export interface AuthOptions {
  /** Writers' audit secrets (from their key files). */
  keys?: AuditKeys;
  /** Writers' public keys (audit.pub.json): enough for every signed record. */
  publicKeys?: AuditPublicKeys;
  /** Records of writers without a configured key pass (counted as unsigned): development logs only. */
  allowUnsigned?: boolean;
  /** Records up to this seq are vouched for by a verified anchor: an HMAC record there needs no secret. */
  vouchedThrough?: number;
  /** Also take the anchor's word for the signatures up to `vouchedThrough` (the chain must still lead to it). */
  trustVouched?: boolean;
}

/** A name as it is, with everything but printable ASCII spelled as \uXXXX: a look-alike must show. */
export const shown = (name: string): string => `'${name.replace(/[^\x20-\x26\x28-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}'`;

/** The keys by writer and key id, in maps (no prototype lookups), with a secret's public half derived. */
function keyTable(options: AuthOptions): Map<string, Map<string, WriterKey>> {
  const table = new Map<string, Map<string, WriterKey>>();
  const slot = (writer: string, kid: string): WriterKey | undefined => table.get(writer)?.get(kid);
  const put = (writer: string, kid: string, key: WriterKey): void => {
    if (!table.has(writer)) table.set(writer, new Map());
    table.get(writer)!.set(kid, key);
  };
  for (const [writer, kids] of Object.entries(options.publicKeys ?? {})) for (const [kid, publicKey] of Object.entries(kids)) put(writer, kid, { publicKey });
  for (const [writer, kids] of Object.entries(options.keys ?? {})) {
    for (const [kid, secret] of Object.entries(kids)) {
      const publicKey = recordSigningKey(secret);
      const known = slot(writer, kid);
      if (known && publicKeyText(known.publicKey) !== publicKeyText(publicKey)) throw new AuditKeyError(`the public key of writer ${shown(writer)} key '${kid}' is not the one its secret gives`);
      put(writer, kid, { publicKey, secret });
    }
  }
  return table;
}

/** The keys given do not fit together: a configuration problem, not tampering. */
export class AuditKeyError extends Error {
  override readonly name = 'AuditKeyError';
}

/** Throws AuditKeyError when a secret's public half is not the public key listed for the same writer and key id. */
export function checkAuditKeys(options: Pick<AuthOptions, 'keys' | 'publicKeys'>): void {
  keyTable(options);
}

type Report = (record: AuditRecord, problem: AuthProblemKind, detail: string) => void;

export class RecordAuthenticator {
  /** Records whose signature or MAC was checked and matched. */
  verified = 0;
  /** Records of writers without a key, let pass by `allowUnsigned`. */
  unsigned = 0;
  /** Records taken on a verified anchor's word. */
  vouched = 0;
  readonly writers: number;
  private readonly keys: Map<string, Map<string, WriterKey>>;
  /** The writer's consecutive records seen since its last signature: the next one that signs vouches for them. */
  private run: AuditRecord[] = [];

  constructor(
    private readonly options: AuthOptions,
    private readonly report: Report,
  ) {
    this.keys = keyTable(options);
    this.writers = this.keys.size;
  }

  push(e: AuditRecord): void {
    if (!WRITER_NAME.test(e.writer)) {
      this.flush();
      this.report(e, 'bad-writer', `writer ${shown(e.writer)} is not a plain writer name (lowercase ASCII letters, digits, _ and -, at most one ':'): a look-alike of a real writer cannot be told apart on screen`);
      return;
    }
    if (this.options.trustVouched && e.seq <= (this.options.vouchedThrough ?? 0)) {
      this.flush();
      this.vouched++;
      return;
    }
    const mine = this.keys.get(e.writer);
    if (!mine || e.kid === undefined) {
      this.flush();
      if (mine) this.report(e, 'bad-mac', `it carries no signature, but writer ${shown(e.writer)} has a key: not written by it`);
      else if (this.options.allowUnsigned) this.unsigned++;
      else this.report(e, 'unsigned', `no key is configured for writer ${shown(e.writer)}: nothing shows who wrote it`);
      return;
    }
    const key = mine.get(e.kid);
    if (!key) {
      this.flush();
      this.report(e, 'bad-mac', `writer ${shown(e.writer)} has no key ${shown(e.kid)}`);
      return;
    }
    if (e.mac !== undefined) return this.checkMac(e, key);
    const last = this.run[this.run.length - 1];
    if (last && (last.writer !== e.writer || last.kid !== e.kid || last.seq + 1 !== e.seq)) this.flush();
    this.run.push(e);
    if (this.run.length > MAX_SIGNED_RUN) this.uncovered(this.run.shift()!);
    if (e.sig !== undefined || e.signs !== undefined) this.checkSignature(e, key);
  }

  /** Records still waiting for a signature at the end of the log were not signed by their writer. */
  finish(): void {
    this.flush();
  }

  private flush(): void {
    for (const r of this.run) this.uncovered(r);
    this.run = [];
  }

  private uncovered(r: AuditRecord): void {
    this.report(r, 'bad-mac', `no signature of writer ${shown(r.writer)} covers it: not written by it, or the record that signed for it is gone`);
  }

  private checkSignature(e: AuditRecord, key: WriterKey): void {
    const run = this.run;
    this.run = [];
    const n = e.signs ?? 0;
    const valid = e.sig !== undefined && n >= 1 && n <= run.length && runSignatureValid(key.publicKey, e.hash, n, e.sig);
    if (!valid) {
      const why = e.sig === undefined || e.signs === undefined ? 'it has half a signature (sig and signs go together)' : n > run.length ? `its signature claims ${n} records, only ${run.length} of its writer's precede it` : `the signature does not match key ${shown(e.kid!)} of writer ${shown(e.writer)}`;
      for (const r of run) this.report(r, 'bad-mac', r === e ? why : `the signature of seq ${e.seq} that should cover it is not valid`);
      return;
    }
    for (const r of run.slice(0, run.length - n)) this.uncovered(r);
    this.verified += n;
  }

  private checkMac(e: AuditRecord, key: WriterKey): void {
    this.flush();
    if (e.sig !== undefined || e.signs !== undefined) {
      this.report(e, 'bad-mac', 'it carries both a MAC and a signature');
      return;
    }
    if (key.secret) {
      if (timingSafeEqual(Buffer.from(computeMac(key.secret, e.hash), 'hex'), Buffer.from(e.mac!, 'hex'))) this.verified++;
      else this.report(e, 'bad-mac', `the MAC does not match key ${shown(e.kid!)} of writer ${shown(e.writer)}`);
      return;
    }
    if (e.seq <= (this.options.vouchedThrough ?? 0)) this.vouched++;
    else this.report(e, 'unverifiable', `written with an HMAC, before records were signed: only writer ${shown(e.writer)}'s secret checks it (palisade audit verify --keys <folder of key files>; palisade audit anchor --full then vouches for it)`);
  }
}
