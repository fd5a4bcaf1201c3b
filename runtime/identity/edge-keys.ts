import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { KeyError } from './key-error.js';

/**
 * One of the edge's Ed25519 key pairs. Only the edge's key file holds a private key (the newest);
 * every key file holds the public keys, old ones included, so what was signed before a rotation
 * still verifies.
 */
export const EdgeKeySchema = z
  .object({
    kid: z.string().regex(/^[A-Za-z0-9_-]{4,64}$/),
    /** SPKI DER, base64. */
    publicKey: z.string().min(40).max(200),
    /** PKCS#8 DER, base64: in the edge's file only. */
    privateKey: z.string().min(40).max(200).optional(),
    createdAt: z.string(),
  })
  .strict();
export type EdgeKey = z.infer<typeof EdgeKeySchema>;

/** The edge's signature over something it alone may say: a grant, an approver's decision, a rollback order. */
export const SignatureSchema = z.object({ kid: z.string().max(64), sig: z.string().max(128) }).strict();
export type Signature = z.infer<typeof SignatureSchema>;

/** A new key pair for the edge. */
export function newEdgeKey(kid: string, createdAt: string): EdgeKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return {
    kid,
    publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
    privateKey: privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    createdAt,
  };
}

/** The edge's keys as one process holds them: public keys to verify, and the signing key in the edge alone. */
export class EdgeKeys {
  private readonly publicKeys = new Map<string, KeyObject>();
  private readonly signing: { kid: string; key: KeyObject } | undefined;

  constructor(entries: readonly EdgeKey[]) {
    let newest: EdgeKey | undefined;
    for (const entry of entries) {
      if (this.publicKeys.has(entry.kid)) continue;
      let key: KeyObject;
      try {
        key = createPublicKey({ key: Buffer.from(entry.publicKey, 'base64'), format: 'der', type: 'spki' });
      } catch (error) {
        throw new KeyError(`the edge's public key '${entry.kid}' cannot be read: ${(error as Error).message}`);
      }
      if (key.asymmetricKeyType !== 'ed25519') throw new KeyError(`the edge's public key '${entry.kid}' is not an Ed25519 key`);
      this.publicKeys.set(entry.kid, key);
      if (entry.privateKey && (!newest || entry.createdAt > newest.createdAt)) newest = entry;
    }
    if (newest) {
      const key = createPrivateKey({ key: Buffer.from(newest.privateKey!, 'base64'), format: 'der', type: 'pkcs8' });
      const derived = createPublicKey(key).export({ type: 'spki', format: 'der' }).toString('base64');
      if (derived !== newest.publicKey) throw new KeyError(`the edge's private key '${newest.kid}' does not match its public key`);
      this.signing = { kid: newest.kid, key };
    }
  }

  /** Whether this process is the edge: it holds a private key. */
  get canSign(): boolean {
    return this.signing !== undefined;
  }

  /** Whether any public key is held: without one, nothing the edge says can be believed. */
  get canVerify(): boolean {
    return this.publicKeys.size > 0;
  }

  sign(data: string): Signature {
    if (!this.signing) throw new KeyError("this process holds no signing key of the edge: only the edge's key file (edge.json) has one");
    return { kid: this.signing.kid, sig: sign(null, Buffer.from(data), this.signing.key).toString('base64url') };
  }

  /** Why the signature cannot be believed, or undefined when the edge made it with a key still kept. */
  verify(data: string, signature: Signature | undefined): string | undefined {
    if (!signature) return 'it carries no signature of the edge';
    const key = this.publicKeys.get(signature.kid);
    if (!key) return `no public key '${signature.kid}' of the edge`;
    const sig = Buffer.from(signature.sig, 'base64url');
    if (sig.length !== 64 || !verify(null, Buffer.from(data), key, sig)) return `the edge's signature does not match (key ${signature.kid})`;
    return undefined;
  }
}
