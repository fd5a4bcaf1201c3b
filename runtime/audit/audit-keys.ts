/**
 * The keys that check the audit log, as files, read from a folder or one file:
 *
 * - Writer key files: any `*.json` with a `writer` member, e.g. a component's key file from `palisade keys
 *   generate` (`{ version, component, writer, keys, audit: { kid, secret } }`) or just
 *   `{ "writer": "billing", "audit": { "kid": "...", "secret": "<base64 of 32 random bytes>" } }`. The audit
 *   secret (standard base64, at least 16 bytes) checks the writer's records, signed or, from before
 *   signatures, MAC'd; it also lets its holder sign as that writer. Files without `audit` are skipped.
 *   Keep a retired key's file (same writer, old kid) for as long as records it signed are kept.
 * - `audit.pub.json` (written by `palisade audit keys`): `{ "kind": "palisade.audit.public-keys",
 *   "version": 1, "writers": { <writer>: { <kid>: <Ed25519 public key, base64url> } }, "anchors": { <kid>:
 *   <public key> } }`: all a verifier needs, and nothing that signs. Give it to the edge and to auditors.
 * - `anchor.key.json` (written by `palisade audit keys`): `{ "kind": "palisade.audit.anchor-key", "version": 1,
 *   "kid", "privateKey": <PKCS#8 DER, base64>, "createdAt" }`: the anchoring key, for whoever anchors only.
 *
 * Agent names cannot hold a dot, so these two never collide with an agent's `<agent>.json`.
 */
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { WRITER_NAME, type AuditKeys } from './audit-record.js';
import { newSigningKey, publicKeyFromText, publicKeyText, recordSigningKey } from './audit-signing.js';
import type { AnchorPublicKeys, AnchorSigner } from './anchors.js';
import { AuditKeyError, shown, type AuditPublicKeys } from './record-auth.js';

export { AuditKeyError };

export const PUBLIC_KEYS_FILE = 'audit.pub.json';
export const ANCHOR_KEY_FILE = 'anchor.key.json';
const PUBLIC_KIND = 'palisade.audit.public-keys';
const ANCHOR_KIND = 'palisade.audit.anchor-key';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Key ids start with a letter or digit: no `__proto__` and the like as a member name. */
const KID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const Writer = z.string().regex(WRITER_NAME, 'a writer name is lowercase ASCII letters, digits, _ and -, starting with a letter, at most one ":"');
const Kid = z.string().regex(KID, 'a key id is 1-64 letters, digits, _ . or -, starting with a letter or digit');

const WriterFileSchema = z.looseObject({
  writer: Writer,
  audit: z.looseObject({ kid: Kid, secret: z.string().regex(BASE64, 'expected standard base64 with padding') }).optional(),
});
const PublicFileSchema = z
  .object({
    kind: z.literal(PUBLIC_KIND),
    version: z.literal(1),
    writers: z.record(Writer, z.record(Kid, z.string())),
    anchors: z.record(Kid, z.string()),
  })
  .strict();
const AnchorKeySchema = z.object({ kind: z.literal(ANCHOR_KIND), version: z.literal(1), kid: Kid, privateKey: z.string().regex(BASE64), createdAt: z.string() }).strict();

/** What verifies the log: the writers' public keys, perhaps their secrets (records from before signatures), the anchors' public keys. */
export interface AuditVerifyKeys {
  publicKeys: AuditPublicKeys;
  secrets?: AuditKeys;
  anchorKeys?: AnchorPublicKeys;
}

export interface LoadedAuditKeys extends AuditVerifyKeys {
  secrets: AuditKeys;
  anchorKeys: Map<string, KeyObject>;
  /** The anchoring key, when `anchor.key.json` was among the files. */
  anchorSigner?: AnchorSigner;
  /** Writer keys (writer and kid) found. */
  count: number;
  writers: number;
  /** Writers whose secret was read (each could be impersonated by this process). */
  secretWriters: string[];
}

const issues = (error: z.ZodError): string => error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ');

async function keyFiles(path: string): Promise<string[]> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new AuditKeyError(`cannot read the key directory ${path}: ${(error as Error).message}`);
  }
  if (!info.isDirectory()) return [path];
  return (await readdir(path))
    .filter((n) => n.endsWith('.json'))
    .sort()
    .map((n) => join(path, n));
}

/** Reads writer key files, audit.pub.json and anchor.key.json from a folder (every `*.json`) or one file. */
export async function loadAuditKeys(path: string): Promise<LoadedAuditKeys> {
  const secrets: AuditKeys = {};
  const publics: AuditPublicKeys = {};
  const anchorKeys = new Map<string, KeyObject>();
  let anchorSigner: AnchorSigner | undefined;
  const addPublic = (file: string, writer: string, kid: string, key: KeyObject): void => {
    const mine = (publics[writer] ??= {});
    const seen = mine[kid];
    if (seen && publicKeyText(seen) !== publicKeyText(key)) throw new AuditKeyError(`${file}: writer ${shown(writer)} key ${shown(kid)} is defined twice with different keys`);
    mine[kid] = key;
  };
  const addAnchorKey = (file: string, kid: string, key: KeyObject): void => {
    const seen = anchorKeys.get(kid);
    if (seen && publicKeyText(seen) !== publicKeyText(key)) throw new AuditKeyError(`${file}: anchor key ${shown(kid)} is defined twice with different keys`);
    anchorKeys.set(kid, key);
  };
  for (const file of await keyFiles(path)) {
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(file, 'utf8'));
    } catch (error) {
      throw new AuditKeyError(`${file}: ${(error as Error).message}`);
    }
    const kind = typeof raw === 'object' && raw !== null ? (raw as { kind?: unknown }).kind : undefined;
    try {
      if (kind === PUBLIC_KIND) {
        const parsed = PublicFileSchema.safeParse(raw);
        if (!parsed.success) throw new AuditKeyError(`${file}: ${issues(parsed.error)}`);
        for (const [writer, kids] of Object.entries(parsed.data.writers)) for (const [kid, x] of Object.entries(kids)) addPublic(file, writer, kid, publicKeyFromText(x));
        for (const [kid, x] of Object.entries(parsed.data.anchors)) addAnchorKey(file, kid, publicKeyFromText(x));
      } else if (kind === ANCHOR_KIND) {
        const parsed = AnchorKeySchema.safeParse(raw);
        if (!parsed.success) throw new AuditKeyError(`${file}: ${issues(parsed.error)}`);
        if (anchorSigner) throw new AuditKeyError(`${file}: a second anchoring key (the first is '${anchorSigner.kid}'): keep one`);
        const privateKey = createPrivateKey({ key: Buffer.from(parsed.data.privateKey, 'base64'), format: 'der', type: 'pkcs8' });
        if (privateKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${file}: the anchoring key is not an Ed25519 key`);
        anchorSigner = { kid: parsed.data.kid, privateKey };
        addAnchorKey(file, parsed.data.kid, createPublicKey(privateKey));
      } else {
        const parsed = WriterFileSchema.safeParse(raw);
        if (!parsed.success) throw new AuditKeyError(`${file}: ${issues(parsed.error)}`);
        const { writer, audit } = parsed.data;
        if (!audit) continue;
        const secret = Buffer.from(audit.secret, 'base64');
        if (secret.length < 16) throw new AuditKeyError(`${file}: audit.secret is ${secret.length} bytes; at least 16 are needed (32 recommended)`);
        const mine = (secrets[writer] ??= {});
        const seen = mine[audit.kid];
        if (seen && !seen.equals(secret)) throw new AuditKeyError(`${file}: writer ${shown(writer)} key ${shown(audit.kid)} is defined twice with different secrets`);
        mine[audit.kid] = secret;
      }
    } catch (error) {
      if (error instanceof AuditKeyError) throw error;
      throw new AuditKeyError(`${file}: ${(error as Error).message}`);
    }
  }
  // A secret's public half must agree with a public key listed for the same writer and kid.
  for (const [writer, kids] of Object.entries(secrets)) for (const [kid, secret] of Object.entries(kids)) addPublic(PUBLIC_KEYS_FILE, writer, kid, recordSigningKey(secret));
  const count = Object.values(publics).reduce((n, kids) => n + Object.keys(kids).length, 0);
  return { secrets, publicKeys: publics, anchorKeys, ...(anchorSigner ? { anchorSigner } : {}), count, writers: Object.keys(publics).length, secretWriters: Object.keys(secrets) };
}

/** loadAuditKeys for a command: a problem with the keys goes to `fail` (a usage error); anything else is thrown. */
export async function loadAuditKeysOr(path: string, fail: (message: string) => never): Promise<LoadedAuditKeys> {
  try {
    return await loadAuditKeys(path);
  } catch (error) {
    if (error instanceof AuditKeyError) fail(error.message);
    throw error;
  }
}

/** What `no keys` means for someone who has to fix it. */
export const NO_KEYS_HINT = 'expected writer key files (*.json from palisade keys generate) or audit.pub.json (from palisade audit keys)';

const newKid = (): string => `a${new Date().toISOString().slice(0, 10).replace(/-/g, '')}${randomBytes(4).toString('hex')}`;

/**
 * Writes `audit.pub.json` in `dir`: the public keys of every writer whose key file is there (and those it
 * listed before, so retired keys keep verifying), and of every anchoring key; creates `anchor.key.json`
 * when there is none, or a new one with `newAnchorKey` (the old one's public key stays listed).
 */
export async function writeAuditKeys(dir: string, options: { newAnchorKey?: boolean } = {}): Promise<{ publicFile: string; anchorFile: string; anchorCreated: boolean; writers: number; count: number }> {
  const loaded = await loadAuditKeys(dir);
  if (loaded.count === 0) throw new AuditKeyError(`no audit keys in ${dir}: ${NO_KEYS_HINT}; run palisade keys generate first`);
  const anchorFile = join(dir, ANCHOR_KEY_FILE);
  let signer = loaded.anchorSigner;
  const anchorCreated = !signer || options.newAnchorKey === true;
  if (anchorCreated) {
    signer = { kid: newKid(), privateKey: newSigningKey() };
    const file = { kind: ANCHOR_KIND, version: 1, kid: signer.kid, privateKey: signer.privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'), createdAt: new Date().toISOString() };
    await writeFile(anchorFile, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
    loaded.anchorKeys.set(signer.kid, createPublicKey(signer.privateKey));
  }
  const writers: Record<string, Record<string, string>> = {};
  for (const writer of Object.keys(loaded.publicKeys).sort()) {
    writers[writer] = {};
    for (const [kid, key] of Object.entries(loaded.publicKeys[writer]!)) writers[writer][kid] = publicKeyText(key);
  }
  const anchors = Object.fromEntries([...loaded.anchorKeys].map(([kid, key]) => [kid, publicKeyText(key)]));
  const publicFile = join(dir, PUBLIC_KEYS_FILE);
  await writeFile(publicFile, `${JSON.stringify({ kind: PUBLIC_KIND, version: 1, writers, anchors }, null, 2)}\n`, { mode: 0o644 });
  return { publicFile, anchorFile, anchorCreated, writers: loaded.writers, count: loaded.count };
}
