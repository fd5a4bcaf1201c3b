import type { TokenUsage } from '../../agents/model.js';
import type { Label } from '../../agents/label.js';
import type { ApprovalDecision, ApprovalRequest, ApprovalState } from '../approvals/approval.js';
import type { RunEvent, RunEventInput } from '../events.js';
import type { Principal } from '../../agents/principal.js';
import type { TaskResult } from '../transports/task.js';

export type RunStatus = 'running' | 'completed' | 'failed' | 'cancelled';

export interface RunRecord {
  id: string;
  agent: string;
  status: RunStatus;
  principal: Principal;
  createdAt: number;
  updatedAt: number;
  output?: string;
  error?: string;
  usage: TokenUsage;
}

/** The outcome of one tool call, kept so a redelivered job reuses it instead of running the tool again. */
export interface ToolCallRecord {
  content: string;
  isError: boolean;
  label: Label;
  flags?: string[];
  /** The executing agent's MAC over the record, so a record written into Redis by anyone else is not believed. */
  auth?: { kid: string; mac: string };
}

/** One side effect in a run's action log: what a rollback undoes, newest first. */
export interface ActionRecord {
  runId: string;
  /** The call's idempotency key. */
  key: string;
  /** Who the run acted for: the compensation acts for them too. */
  principal: Principal;
  agent: string;
  tool: string;
  callId: string;
  /** The validated arguments and the tool's output, as JSON: what `compensate` receives. */
  args: unknown;
  output: unknown;
  at: number;
  /** The agent's own MAC: only the agent that did it can undo it, and only as it was done. */
  auth?: { kid: string; mac: string };
}

/** What became of one action in a rollback. */
export interface CompensationRecord {
  status: 'undone' | 'failed' | 'not_undone';
  message?: string;
  rollbackId: string;
  at: number;
  /** The MAC of the agent that undid it, bound to the run and the action's key. */
  auth?: { kid: string; mac: string };
}

export interface StoredEvent {
  id: string;
  event: RunEvent;
}

export interface EventCursor {
  /** The next events in order, waiting up to `blockMs` when there are none yet. */
  read(blockMs: number): Promise<StoredEvent[]>;
  close(): Promise<void>;
}

/**
 * `new` the first time a worker takes a message; `redelivery` when the same job comes back
 * unfinished (a crash, a delegation resuming); `finished` when the same job comes back after its
 * message was finished but before the queue heard (a crash in between); `replay` when another job carries it.
 */
export type MessageClaim = 'new' | 'redelivery' | 'finished' | 'replay';

/**
 * What a message's claim holds: the job that took it and, once that job finished, the result it gave,
 * with the receiving agent's own MAC over both. The store keeps it as given; the worker checks it.
 */
export interface ClaimMarker {
  jobId: string;
  result?: TaskResult;
  /** When the claim was taken, and a random nonce: an unfinished claim is then unique, and its age known. */
  at?: number;
  nonce?: string;
  auth?: { kid: string; mac: string };
}

const MARKER = '\0claim\0';

/** A marker as a claim holds it: no job id starts with NUL, so it never equals a bare job id. */
export function markerText(marker: ClaimMarker): string {
  return `${MARKER}${marker.jobId}\0${JSON.stringify({ result: marker.result, at: marker.at, nonce: marker.nonce, auth: marker.auth })}`;
}

/** The marker a claim holds, whichever job took it; undefined for a bare job id or what cannot be read. */
export function heldMarker(held: string | undefined): ClaimMarker | undefined {
  if (!held?.startsWith(MARKER)) return undefined;
  const end = held.indexOf('\0', MARKER.length);
  if (end < 0) return undefined;
  return readClaim(held, held.slice(MARKER.length, end)).marker;
}

/**
 * What a message's claim, as read back (`held`, null when this delivery just took it), means for the
 * job `jobId`. A bare job id, or a marker of this job that cannot be read, is a claim without a MAC.
 */
export function readClaim(held: string | null | undefined, jobId: string): { claim: MessageClaim; marker?: ClaimMarker } {
  if (held === null || held === undefined) return { claim: 'new' };
  if (held === jobId) return { claim: 'redelivery', marker: { jobId } };
  const prefix = `${MARKER}${jobId}\0`;
  if (!held.startsWith(prefix)) return { claim: 'replay' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(held.slice(prefix.length));
  } catch {
    // Read as a claim without a MAC: the worker refuses it.
  }
  const { result, at, nonce, auth } = (parsed !== null && typeof parsed === 'object' ? parsed : {}) as { result?: unknown; at?: unknown; nonce?: unknown; auth?: { kid?: unknown; mac?: unknown } | null };
  const mac = typeof auth?.kid === 'string' && typeof auth.mac === 'string' ? { auth: { kid: auth.kid, mac: auth.mac } } : {};
  const when = typeof at === 'number' && typeof nonce === 'string' ? { at, nonce } : {};
  if (result === undefined) return { claim: 'redelivery', marker: { jobId, ...when, ...mac } };
  if (result === null || typeof result !== 'object' || Array.isArray(result)) return { claim: 'redelivery', marker: { jobId } };
  return { claim: 'finished', marker: { jobId, result: result as TaskResult, ...when, ...mac } };
}

/** What a worker learns first of every job: its claim, the run, and what the message left behind. */
export interface RunClaim {
  claim: MessageClaim;
  run: RunRecord | undefined;
  /** For a `redelivery` or `finished` claim: the marker the claim holds, for the worker to authenticate. */
  marker?: ClaimMarker;
  /**
   * The progress saved for the message ({@link SavedProgress}), if any: a redelivery resumes from it; a
   * `new` claim that finds some means the message had been claimed before and its claim was lost.
   */
  saved?: string;
  /** The claim as it was held before this delivery, whichever job took it (for {@link RunStore.swapClaim}). */
  held?: string;
}

/**
 * A worker's progress through one message, saved so a redelivery of its job resumes there. The store
 * keeps it as given (the worker authenticates it) until the message is finished.
 */
export interface SavedProgress {
  runId: string;
  receiver: string;
  messageId: string;
  data: string;
}

/** The events that go with a run's end ({@link RunStore.finishRun}). */
export interface EndRecord {
  events?: ReadonlyArray<{ event: RunEventInput; at: number }>;
  ended?: RunEventInput;
}

/** Durable run state: the run record, its event stream and its tool-call results. */
export interface RunStore {
  /** Creates a running run; its first event, when given, goes in the same write. */
  createRun(record: Omit<RunRecord, 'updatedAt' | 'usage' | 'status'>, first?: RunEventInput): Promise<void>;
  getRun(runId: string): Promise<RunRecord | undefined>;
  /**
   * A model turn, in one write: the tokens it used, added to the run's, the events emitted so far
   * (each keeps its `at`) and the progress that holds its reply. Returns the run's status as of that
   * write; undefined when the run is gone.
   */
  recordTurn(runId: string, usage: TokenUsage, events: ReadonlyArray<{ event: RunEventInput; at: number }>, saved?: SavedProgress): Promise<RunStatus | undefined>;
  /** Saves a worker's progress through a message, replacing what it saved before. */
  saveProgress(saved: SavedProgress): Promise<void>;
  /**
   * Moves a running run to a terminal status; false when it had already ended (first writer wins).
   * In the same write: `events` (what happened before, appended either way) and `ended` (the event
   * that says how it ended, appended only by the writer that ends it).
   */
  finishRun(runId: string, status: Exclude<RunStatus, 'running'>, detail: { output?: string; error?: string }, record?: EndRecord): Promise<boolean>;
  appendEvent(runId: string, event: RunEventInput): Promise<void>;
  /** Appends several events in order in one write; each keeps the time it happened (`at`). */
  appendEvents(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>): Promise<void>;
  /** Resolves true once the run has ended (now or within `blockMs`), false when it has not by then. */
  waitForEnd(runId: string, blockMs: number): Promise<boolean>;
  /** A reader of the run's events from the beginning; each reader holds its own connection while open. */
  openEvents(runId: string): EventCursor;
  /** Every event the run has so far, oldest first, without waiting and without a connection of its own. */
  listEvents(runId: string): Promise<StoredEvent[]>;
  /** Records that something took a one-time step (`new`), took it again with the same id (`redelivery`), or another did (`replay`). */
  claimMessage(runId: string, receiver: string, messageId: string, jobId: string): Promise<Exclude<MessageClaim, 'finished'>>;
  /** Claims the job's message with `held` (the marker of a job that took it) and reads the run and the saved progress, in one round trip. */
  claimForRun(runId: string, receiver: string, messageId: string, held: ClaimMarker): Promise<RunClaim>;
  /** Replaces the claim `held` (as read back) with `next`; false when the claim holds anything else by then. */
  swapClaim(runId: string, receiver: string, messageId: string, held: string, next: ClaimMarker): Promise<boolean>;
  /** Marks a message finished with the marker of the result its job gave (its saved progress is dropped): that job gets it again, any other delivery is a replay. */
  completeMessage(runId: string, receiver: string, messageId: string, finished: ClaimMarker): Promise<void>;
  /** `appendEvents` and `completeMessage` in one write: an activation's last events and the end of its message. */
  finishMessage(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>, receiver: string, messageId: string, finished: ClaimMarker): Promise<void>;
  getToolCall(runId: string, key: string): Promise<ToolCallRecord | undefined>;
  putToolCall(runId: string, key: string, record: ToolCallRecord): Promise<void>;
  /** Appends to the run's action log; a redelivery may append the same key again (readers keep the first). */
  recordAction(runId: string, record: ActionRecord): Promise<void>;
  /** The run's action log in the order the actions happened, one entry per key. */
  listActions(runId: string): Promise<ActionRecord[]>;
  /** Every entry of the run's action log under one key, in order (whoever wrote them: the reader checks). */
  actionsOf(runId: string, key: string): Promise<ActionRecord[]>;
  getCompensation(runId: string, key: string): Promise<CompensationRecord | undefined>;
  putCompensation(runId: string, key: string, record: CompensationRecord): Promise<void>;
  /** Stores a new request; false when one with its id exists. */
  createApproval(request: ApprovalRequest): Promise<boolean>;
  getApproval(id: string): Promise<ApprovalState | undefined>;
  /** Requests without a decision, oldest first. */
  pendingApprovals(): Promise<ApprovalState[]>;
  /** Records the decision unless there already is one; false when another decision was first. */
  decideApproval(decision: ApprovalDecision): Promise<boolean>;
  close(): Promise<void>;
}

/** A redelivered call may have logged its action twice: the first entry of each key counts. */
export function firstOfEachKey(actions: readonly ActionRecord[]): ActionRecord[] {
  const seen = new Set<string>();
  return actions.filter((a) => !seen.has(a.key) && Boolean(seen.add(a.key)));
}
