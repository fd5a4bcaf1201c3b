import type { TokenUsage } from '../../agents/model.js';
import type { Label } from '../../agents/label.js';

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
