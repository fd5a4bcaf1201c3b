import { createHash, randomBytes } from 'node:crypto';
import type { ChatMessage, ToolCall } from '../../agents/model.js';
import { canonicalJson } from '../audit/canonical-json.js';
import type { Envelope } from '../envelope.js';
import type { EnvelopeAuth } from '../identity/envelope-auth.js';
import type { ClaimMarker } from '../stores/run-store.js';
import type { TaskResult } from '../transports/task.js';

/** Stable, queue-safe id for a message derived from its parent and the step that produced it. */
export function deriveMessageId(parent: string, step: string): string {
  return createHash('sha256').update(parent).update('\0').update(step).digest('base64url').slice(0, 22);
}

/** A call's arguments as one text whatever the model's spacing or key order; text that is not JSON stays as it is. */
function argumentsText(call: ToolCall): string {
  try {
    return canonicalJson(call.arguments.trim() === '' ? {} : JSON.parse(call.arguments));
  } catch {
    return call.arguments;
  }
}

/**
 * The step of each call of the assistant message at `index`: what it calls, with what, and how many
 * identical calls came before it in the conversation. Not the model's call id: a model asked again
 * (its saved reply lost after a redelivery) chooses new ids, but a call it repeats is the same step,
 * in whichever turn or order it comes, while a second identical call is a step of its own.
 */
export function callSteps(messages: readonly ChatMessage[], index: number): string[] {
  const seen = new Map<string, number>();
  const steps: string[] = [];
  for (let i = 0; i <= index; i++) {
    const message = messages[i];
    if (message?.role !== 'assistant') continue;
    for (const call of message.toolCalls ?? []) {
      const what = `${call.name}\0${argumentsText(call)}`;
      const before = seen.get(what) ?? 0;
      seen.set(what, before + 1);
      if (i === index) steps.push(`${what}\0${before}`);
    }
  }
  return steps;
}

/** The idempotency key of one tool call: its message and its step, so a different call never reuses it. */
export const toolCallKey = (messageId: string, stepKey: string): string => deriveMessageId(messageId, `call\0${stepKey}`);

/**
 * The marker of the envelope's claim by the job `jobId` (with the result it gave, once finished), sealed
 * by the receiving agent. An unfinished one says when it was taken, with a nonce: a redelivery's age
 * counts from it, so a copy restored later does not resume the activation for long.
 */
export function claimMarker(auth: EnvelopeAuth | undefined, envelope: Envelope, jobId: string, result?: TaskResult): ClaimMarker {
  const taken = result ? undefined : { at: Date.now(), nonce: randomBytes(12).toString('base64url') };
  return { jobId, ...(result ? { result } : taken), ...(auth ? { auth: auth.sealClaim(envelope.receiver, envelope.messageId, jobId, result, taken) } : {}) };
}
