import type { TokenUsage } from '../agents/model.js';
import type { Label } from '../guards/label.js';
import type { RunStore } from './run-store.js';

/** What one agent activation returns; a delegating parent reads its children's results. */
export interface TaskResult {
  status: 'completed' | 'handed_off' | 'failed' | 'cancelled' | 'rejected';
  output?: string;
  error?: string;
  label?: Label;
  usage?: TokenUsage;
  /** Handoffs and delegations the delegate (and its own delegates) sent: they count toward the run's hops. */
  hops?: number;
  /** A delegate's MAC over its answer, with the key of the link delegate → caller. */
  auth?: { kid: string; mac: string };
}

export interface ChildJob {
  queue: string;
  jobId: string;
  payload: unknown;
}

/** One delivery of a job to a handler. */
export interface Task {
  readonly id: string;
  readonly queue: string;
  /** The raw job data: unverified until the handler checks it. */
  readonly data: unknown;
  /** 1 on first delivery; higher after a retry or a crash. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Results of children this job awaited, by child job id; `undefined` for a child that failed outright. */
  childResults(): Promise<Map<string, TaskResult | undefined>>;
}

export type TaskOutcome =
  | { type: 'done'; result: TaskResult }
  /** Suspend without holding a worker slot until every child has finished, then deliver again. */
  | { type: 'await'; children: ChildJob[]; checkpoint: unknown }
  /**
   * Set the job aside without holding a worker slot until `until` (epoch ms) or an earlier `wake`,
   * then deliver again. `ready` is asked once the job is set aside: a wake that came before could not find it.
   */
  | { type: 'park'; until: number; checkpoint: unknown; ready: () => Promise<boolean> };

export type TaskHandler = (task: Task) => Promise<TaskOutcome>;

/** A handler error that a retry may cure (a model's 429, a dropped connection). */
export class RetryableError extends Error {
  override readonly name = 'RetryableError';
}

export interface ConsumeOptions {
  concurrency: number;
  /** Called when a job fails for good outside the handler's control (stalled too often, unknown error). */
  onFailed?: (jobId: string, data: unknown, error: Error) => void;
}

export interface Consumer {
  /** Stops taking jobs, waits up to `timeoutMs` for active ones, then abandons them (they will be redelivered). */
  close(timeoutMs?: number): Promise<void>;
}

/** How envelopes move between agents. BullMQ on Redis in production; an in-process twin for demos and tests. */
export interface Transport {
  readonly kind: 'redis' | 'embedded';
  readonly store: RunStore;
  /** Adds a job; a job id that already exists in that queue is not added twice. */
  enqueue(queue: string, jobId: string, payload: unknown): Promise<void>;
  /** Adds jobs that run one after another, each after the one before it has finished (whatever its outcome); each reads its predecessor's result as its only child. */
  enqueueSequence(steps: ChildJob[]): Promise<void>;
  /** Delivers a parked job now instead of at its time; false when no such job is parked. */
  wake(queue: string, jobId: string): Promise<boolean>;
  consume(queue: string, handler: TaskHandler, options: ConsumeOptions): Consumer;
  /** Agents whose workers have announced themselves (for producers that hold no definitions). */
  announce(agents: string[]): Promise<void>;
  knownAgents(): Promise<string[]>;
  close(): Promise<void>;
}
