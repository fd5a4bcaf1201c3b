import type { RunStore } from '../stores/run-store.js';
import type { ChildJob, TaskHandler } from './task.js';

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
  /** Resolves once the transport can be used as set up; rejects for good when it never can (another process laid the runs out differently). */
  ready(): Promise<void>;
  /** Adds a job of run `runId` (which decides where it is kept); a job id that already exists in that queue is not added twice. */
  enqueue(runId: string, queue: string, jobId: string, payload: unknown): Promise<void>;
  /** Adds jobs of run `runId` that run one after another, each after the one before it has finished (whatever its outcome); each reads its predecessor's result as its only child. */
  enqueueSequence(runId: string, steps: ChildJob[]): Promise<void>;
  /** Delivers a parked job of run `runId` now instead of at its time; false when no such job is parked. */
  wake(runId: string, queue: string, jobId: string): Promise<boolean>;
  consume(queue: string, handler: TaskHandler, options: ConsumeOptions): Consumer;
  /** Agents whose workers have announced themselves (for producers that hold no definitions). */
  announce(agents: string[]): Promise<void>;
  knownAgents(): Promise<string[]>;
  close(): Promise<void>;
}
