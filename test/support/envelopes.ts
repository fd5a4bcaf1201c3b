import { label } from '../../agents/label.js';
import type { EnvelopeAuth } from '../../runtime/identity/envelope-auth.js';
import type { Envelope } from '../../runtime/envelope.js';
import { EDGE } from '../../runtime/identity/keyring.js';
import type { Principal } from '../../agents/principal.js';

/** A run's first envelope as the edge sends it: to `receiver`, with the edge's signed grant, sealed. */
export function sealedStart(edge: EnvelopeAuth, start: { runId: string; receiver: string; principal: Principal; input: string; now: number }): Envelope {
  const { runId, receiver, principal, input, now } = start;
  const base: Envelope = {
    v: 1,
    kind: 'start',
    runId,
    messageId: runId,
    sender: EDGE,
    receiver,
    principal,
    chain: [receiver],
    depth: 0,
    hops: 0,
    budget: { tokens: 1000 },
    label: label(),
    messages: [{ role: 'user', content: input }],
    issuedAt: now,
  };
  return edge.sealStart(base);
}
