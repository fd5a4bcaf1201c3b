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

/** How a message's claim is held once finished: no job id starts with NUL, so no other job's claim equals it. */
export function finishedClaim(jobId: string, result: TaskResult): string {
  return `${finishedPrefix(jobId)}${JSON.stringify(result)}`;
}

/** What every finished claim of this job starts with. */
export function finishedPrefix(jobId: string): string {
  return `\0done\0${jobId}\0`;
}

/** The result a claim holds when it is this job's finished claim. */
export function finishedResult(held: string | null | undefined, jobId: string): TaskResult | undefined {
  const prefix = finishedPrefix(jobId);
  return held?.startsWith(prefix) ? (JSON.parse(held.slice(prefix.length)) as TaskResult) : undefined;
}

/** What a worker learns first of every job: its claim, the run, and for a `finished` claim the result it gave. */
export interface RunClaim {
  claim: MessageClaim;
  run: RunRecord | undefined;
  result?: TaskResult;
  /** For a `redelivery`, the progress its worker last saved ({@link SavedProgress}), if any. */
  saved?: string;
}

/**
 * A worker's progress through one message, saved so a redelivery of its job resumes there. The store
 * keeps it as given (the worker authenticates it) until the message is finished.
 */
export interface SavedProgress {
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
  claimMessage(receiver: string, messageId: string, jobId: string): Promise<Exclude<MessageClaim, 'finished'>>;
  /** Claims the job's message and reads the run (and for a redelivery its saved progress), in one round trip. */
  claimForRun(receiver: string, messageId: string, jobId: string, runId: string): Promise<RunClaim>;
  /** Marks a message finished with the result its job gave (its saved progress is dropped): that job gets it again, any other delivery is a replay. */
  completeMessage(receiver: string, messageId: string, jobId: string, result: TaskResult): Promise<void>;
  /** `appendEvents` and `completeMessage` in one write: an activation's last events and the end of its message. */
  finishMessage(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>, receiver: string, messageId: string, jobId: string, result: TaskResult): Promise<void>;
  getToolCall(runId: string, key: string): Promise<ToolCallRecord | undefined>;
  putToolCall(runId: string, key: string, record: ToolCallRecord): Promise<void>;
  /** Appends to the run's action log; a redelivery may append the same key again (readers keep the first). */
  recordAction(runId: string, record: ActionRecord): Promise<void>;
  /** The run's action log in the order the actions happened, one entry per key. */
  listActions(runId: string): Promise<ActionRecord[]>;
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
