/**
 * Ed25519 (node:crypto) signatures on audit records and on anchors.
 *
 * A writer's record-signing key is derived from the audit secret its key file already holds (HKDF-SHA-256),
 * so key files keep their format and workers need nothing new. What checks a writer's records is the public
 * half, which lets nobody forge them: a verifier (the HTTP edge, an auditor) holds public keys only
 * (`palisade audit keys` writes them to audit.pub.json). Signing costs tens of µs where an HMAC costs a few,
 * so a writer signs once per run of its records in an append, not once per record (audit-record.ts).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, sign, verify, type KeyObject } from 'node:crypto';

/** The DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The Ed25519 private key whose seed is `seed` (32 bytes). */
const fromSeed = (seed: Buffer): KeyObject => createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });

/** The record-signing key of a writer whose key file holds the audit secret `secret`. */
export function recordSigningKey(secret: Buffer): KeyObject {
  return fromSeed(Buffer.from(hkdfSync('sha256', secret, 'palisade', 'audit record signing key, Ed25519', 32)));
}

/** The public key (from a private or public key) as text: the JWK `x`, base64url of its 32 bytes. */
export function publicKeyText(key: KeyObject): string {
  const jwk = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new TypeError('not an Ed25519 key');
  return jwk.x;
}

/** An Ed25519 public key from its text (base64url of 32 bytes). */
export function publicKeyFromText(x: string): KeyObject {
  if (!/^[A-Za-z0-9_-]{43}$/.test(x)) throw new TypeError('an Ed25519 public key is 32 bytes, base64url (43 characters)');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
}

/** A new Ed25519 private key (for anchoring). */
export const newSigningKey = (): KeyObject => generateKeyPairSync('ed25519').privateKey;

/** What a record's signature covers: how many records it vouches for and the last one's hash (which covers the rest). */
const runMessage = (recordHash: string, signs: number): Buffer => Buffer.from(`palisade audit run v1\n${signs}\n${recordHash}`);

export const signRun = (key: KeyObject, recordHash: string, signs: number): string => sign(null, runMessage(recordHash, signs), key).toString('base64url');

export const runSignatureValid = (key: KeyObject, recordHash: string, signs: number, sig: string): boolean => verify(null, runMessage(recordHash, signs), key, Buffer.from(sig, 'base64url'));

/** Anchors are signed under their own domain, so no record signature can pass for an anchor's or the reverse. */
const anchorMessage = (body: string): Buffer => Buffer.from(`palisade audit anchor v1\n${body}`);

export const signAnchorBody = (key: KeyObject, body: string): string => sign(null, anchorMessage(body), key).toString('base64url');

export const anchorSignatureValid = (key: KeyObject, body: string, sig: string): boolean => verify(null, anchorMessage(body), key, Buffer.from(sig, 'base64url'));
