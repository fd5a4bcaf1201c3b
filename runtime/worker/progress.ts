import { z } from 'zod';
import { ChatMessageSchema } from '../../agents/model.js';
import { LabelSchema } from '../../agents/label.js';
import { AuthSchema, EnvelopeSchema, type Envelope } from '../envelope.js';

/** The worker's own progress through one activation, saved so a redelivery resumes it. */
const ProgressSchema = z.object({
  messages: z.array(ChatMessageSchema),
  turns: z.number().int().nonnegative(),
  label: LabelSchema,
  usage: z.object({ inputTokens: z.number(), outputTokens: z.number() }),
  awaiting: z.array(z.object({ callId: z.string(), agent: z.string(), jobId: z.string() })).default([]),
  /** Handoffs and delegations this activation has sent, so hop counts are per run, not per path. */
  sent: z.number().int().nonnegative().default(0),
  /**
   * As saved: `messages` holds only what follows the envelope's first `from` messages, which the job
   * already carries (and which are authenticated with it); saving them twice would double every checkpoint.
   */
  from: z.number().int().nonnegative().optional(),
  /**
   * Counts saves. Progress is saved in the run store with each model turn and after tool calls, and in
   * the job when the activation waits (delegations, approvals): a redelivery resumes from the newer.
   */
  version: z.number().int().nonnegative().default(0),
  /**
   * Set in the checkpoint an activation leaves in its job when it waits (delegations, approvals): only
   * such an activation may be resumed up to `maxActivationMs` after its claim; any other, `maxAgeMs`.
   */
  parked: z.boolean().optional(),
});
export type Progress = z.infer<typeof ProgressSchema>;

/** Progress as saved: without the messages it shares with the envelope. */
export function compacted(progress: Progress, envelope: Envelope): Progress {
  const { messages } = progress;
  let from = 0;
  while (from < messages.length && from < envelope.messages.length && messages[from] === envelope.messages[from]) from++;
  return { ...progress, messages: messages.slice(from), from };
}

/** Saved progress with the messages it shares with the envelope put back. */
export function restored(saved: Progress, envelope: Envelope): Progress {
  const { from, ...progress } = saved;
  if (from === undefined) return progress;
  return { ...progress, messages: [...envelope.messages.slice(0, from), ...saved.messages] };
}

export const SavedSchema = z.object({ progress: ProgressSchema, progressAuth: AuthSchema.optional() }).strict();
export type Saved = z.infer<typeof SavedSchema>;
export const JobDataSchema = z.object({ envelope: EnvelopeSchema, progress: ProgressSchema.optional(), progressAuth: AuthSchema.optional() }).strict();
export type JobData = z.infer<typeof JobDataSchema>;

/** A worker's saved activation (the envelope plus the conversation since) may grow past one message, up to this. */
export const checkpointLimit = (maxMessageBytes: number): number => 16 * maxMessageBytes;

export const byteSize = (value: unknown): number => Buffer.byteLength(JSON.stringify(value) ?? '');
