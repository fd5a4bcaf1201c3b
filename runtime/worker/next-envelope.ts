import type { ChatMessage } from '../../agents/model.js';
import { injectTrace } from '../../tracing/propagation.js';
import type { Envelope } from '../envelope.js';
import type { ActivationState } from './activation-state.js';
import { deriveMessageId } from './message-ids.js';

/** The envelope of a handoff or delegation this activation sends, sealed when envelopes are authenticated. */
export function nextEnvelope(act: ActivationState, kind: 'handoff' | 'delegate', target: string, stepKey: string, messages: ChatMessage[], share = 1): Envelope {
  const e = act.envelope;
  const spent = act.progress.usage.inputTokens + act.progress.usage.outputTokens;
  const { auth: _received, trace: _parent, ...carried } = e;
  // The next activation's span is a child of this one's: the context rides in the (authenticated) envelope.
  const traceContext = injectTrace(act.ctx);
  const next: Envelope = {
    ...carried,
    ...(traceContext ? { trace: traceContext } : {}),
    kind,
    messageId: deriveMessageId(e.messageId, stepKey),
    sender: act.agent.name,
    receiver: target,
    chain: [...e.chain, target],
    depth: kind === 'delegate' ? e.depth + 1 : e.depth,
    hops: e.hops + act.progress.sent + 1,
    // Delegations of one turn split what is left, so a fan-out cannot multiply the budget.
    budget: { ...e.budget, ...(e.budget.tokens !== undefined ? { tokens: Math.floor(Math.max(0, e.budget.tokens - spent) / share) } : {}) },
    label: act.progress.label,
    messages,
    issuedAt: Date.now(),
  };
  return act.options.auth ? act.options.auth.seal(next) : next;
}
