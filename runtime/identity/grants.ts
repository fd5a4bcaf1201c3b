import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { LRUCache } from 'lru-cache';
import { GrantClaimSchema, type Envelope, type Grant, type GrantClaim } from '../envelope.js';
import type { EdgeKeys } from './edge-keys.js';

/** Signed data is prefixed with what it is, so a signature over one kind of thing is never taken for another. */
const GRANT = 'palisade.grant\0';

/** The SHA-256 of a run's first messages as the edge sent them: the grant binds them. */
export const inputDigest = (messagesAsSent: string): string => createHash('sha256').update(messagesAsSent).digest('base64url');

/**
 * The edge's grants: it signs one per run, and each worker verifies it once and remembers it (a process
 * that signed it remembers it as it signs), so a later hop of the same run pays a map lookup and a
 * string comparison, not a signature check.
 */
export class Grants {
  /** Verified (or self-signed) grants by signature, with the exact claim text that signature covers. */
  private readonly verified = new LRUCache<string, { kid: string; text: string; claim: GrantClaim }>({ max: 10_000 });

  constructor(private readonly keys: EdgeKeys) {}

  /** The grant for a run's start envelope (which must be complete but for its MAC), valid until `expiresAt`. */
  issue(start: Envelope, expiresAt: number): Grant {
    const claim: GrantClaim = {
      runId: start.runId,
      principal: start.principal,
      budget: start.budget,
      agent: start.receiver,
      messageId: start.messageId,
      input: inputDigest(JSON.stringify(start.messages)),
      issuedAt: start.issuedAt,
      expiresAt,
    };
    const text = JSON.stringify(claim);
    const { kid, sig } = this.keys.sign(GRANT + text);
    const grant = { claim: text, kid, sig };
    // This process made the signature, so it needs no check (~100 µs): workers running beside the edge
    // take the grant as if they had verified it. The claim is read back from its text, as a check reads it.
    this.read(grant);
    return grant;
  }

  /** What an authentic grant says, or why it cannot be believed. */
  claimOf(grant: Grant): GrantClaim | string {
    const known = this.verified.get(grant.sig);
    if (known && known.text === grant.claim && known.kid === grant.kid) return known.claim;
    const bad = this.keys.verify(GRANT + grant.claim, grant);
    return bad ?? this.read(grant);
  }

  /** The claim of an authentic grant, remembered by its signature; or why it cannot be read. */
  private read(grant: Grant): GrantClaim | string {
    let parsed;
    try {
      parsed = GrantClaimSchema.safeParse(JSON.parse(grant.claim));
    } catch {
      return 'its claim is not JSON';
    }
    // Signed by the edge, so this would be the edge's own bug; refused all the same.
    if (!parsed.success) return `its claim is malformed: ${parsed.error.issues[0]?.path.join('.') || '(root)'}: ${parsed.error.issues[0]?.message ?? 'invalid'}`;
    this.verified.set(grant.sig, { kid: grant.kid, text: grant.claim, claim: parsed.data });
    return parsed.data;
  }

  /**
   * Why an envelope does not fit its (authentic) grant: another run or principal, more budget, or, for
   * a start envelope, anything but the very message the edge granted (its agent, id, messages, time,
   * budget, and no hops yet). `messagesAsSent` is the envelope's messages as read from the job.
   */
  mismatch(claim: GrantClaim, envelope: Envelope, messagesAsSent: () => string): string | undefined {
    if (claim.runId !== envelope.runId) return 'the grant is for another run';
    if (!isDeepStrictEqual(claim.principal, envelope.principal)) return 'the principal differs from the one the edge granted';
    const b = envelope.budget;
    if (claim.budget.tokens !== undefined && (b.tokens === undefined || b.tokens > claim.budget.tokens)) return 'the token budget exceeds what the edge granted';
    if (claim.budget.deadline !== undefined && (b.deadline === undefined || b.deadline > claim.budget.deadline)) return 'the deadline is later than the edge granted';
    if (claim.budget.costUsd !== undefined && (b.costUsd === undefined || b.costUsd > claim.budget.costUsd)) return 'the cost budget exceeds what the edge granted';
    if (envelope.kind !== 'start') return envelope.hops > 0 ? undefined : `a '${envelope.kind}' envelope must count at least one hop`;
    if (envelope.receiver !== claim.agent || envelope.messageId !== claim.messageId) return 'the grant is for another start message (another agent or message id)';
    if (envelope.hops !== 0 || envelope.depth !== 0) return 'a start envelope has no hops and no depth';
    if (envelope.issuedAt !== claim.issuedAt || !isDeepStrictEqual(envelope.budget, claim.budget)) return 'the start envelope differs from the one the edge granted (time or budget)';
    if (inputDigest(messagesAsSent()) !== claim.input) return 'the start envelope carries other messages than the edge granted';
    return undefined;
  }
}
