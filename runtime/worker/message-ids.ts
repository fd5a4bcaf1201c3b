import { createHash } from 'node:crypto';
import type { ToolCall } from '../../agents/model.js';

/** Stable, queue-safe id for a message derived from its parent and the step that produced it. */
export function deriveMessageId(parent: string, step: string): string {
  return createHash('sha256').update(parent).update('\0').update(step).digest('base64url').slice(0, 22);
}

/** The idempotency key of one tool call: its step, and what it calls with what, so a different call never reuses it. */
export const toolCallKey = (messageId: string, stepKey: string, call: ToolCall): string => deriveMessageId(messageId, `${stepKey}\0${call.name}\0${call.arguments}`);
