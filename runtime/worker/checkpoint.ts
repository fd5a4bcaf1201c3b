import type { TokenUsage } from '../../agents/model.js';
import type { Envelope } from '../envelope.js';
import type { SavedProgress } from '../stores/run-store.js';
import type { ActivationState } from './activation-state.js';
import { byteSize, checkpointLimit, compacted, type JobData, type Saved } from './progress.js';

/** Refuses a saved activation that outgrows the message limit (a redelivery could not read it back). */
function checkSize(act: ActivationState, size: number): void {
  const limit = checkpointLimit(act.options.maxMessageBytes);
  if (size > limit) throw new Error(`the conversation grew to ${size} bytes, over the limit of ${limit} for a saved activation`);
}

/** This worker's progress as saved (`parks` when the activation waits), a newer version each time: authenticated, without the messages the envelope carries. */
function saved(act: ActivationState, parks = false): Saved {
  act.progress.version += 1;
  // Once it has waited, an activation keeps the longer limit for the rest of its life.
  if (parks) act.progress.parked = true;
  const progress = compacted(act.progress, act.envelope);
  const auth = act.options.auth?.sealCheckpoint(act.agent.name, act.envelope.messageId, progress);
  return { progress, ...(auth ? { progressAuth: auth } : {}) };
}

/** The progress to keep in the run store; the job itself is not rewritten, so the envelope is not saved again. */
export function savedProgress(act: ActivationState): SavedProgress {
  const data = JSON.stringify(saved(act));
  checkSize(act, act.messageBytes + Buffer.byteLength(data));
  return { runId: act.envelope.runId, receiver: act.agent.name, messageId: act.envelope.messageId, data };
}

/** The job's data for an activation that waits: the envelope exactly as received (its MAC covers it as sent) and this worker's progress. */
export function jobData(act: ActivationState): JobData {
  return { envelope: (act.task.data as { envelope: Envelope }).envelope, ...saved(act, true) };
}

/** {@link jobData}, refused when it outgrows the message limit. */
export function checkpointData(act: ActivationState): JobData {
  const data = jobData(act);
  checkSize(act, byteSize(data));
  return data;
}

/** The turn's usage, every event buffered so far and the progress that holds the reply, in one write. */
export async function recordTurn(act: ActivationState, usage: TokenUsage): Promise<void> {
  let progress: SavedProgress | undefined;
  let tooLarge: unknown;
  try {
    progress = savedProgress(act);
  } catch (error) {
    // The turn's usage and events are still recorded; the activation then fails.
    tooLarge = error;
  }
  const events = await act.events.unwritten();
  act.events.sendAudit();
  act.statusSeen = await act.store.recordTurn(act.runId, usage, events, progress);
  if (tooLarge !== undefined) throw tooLarge;
}
