import { MemoryRunStore } from '../stores/memory-run-store.js';
import type { ConsumeOptions, Consumer, Transport } from './transport.js';
import type { ChildJob, Task, TaskHandler, TaskResult } from './task.js';

export interface EmbeddedTransportOptions {
  attempts?: number;
  backoffMs?: number;
}

interface EmbeddedJob {
  id: string;
  queue: string;
  data: unknown;
  attemptsMade: number;
  parent?: EmbeddedJob;
  pendingChildren: Set<string>;
  childValues: Map<string, TaskResult | undefined>;
  state: 'waiting' | 'active' | 'waiting-children' | 'delayed' | 'completed' | 'failed';
  result?: TaskResult;
  /** The timer of a parked job. */
  wakeTimer?: NodeJS.Timeout;
}

interface EmbeddedQueue {
  handler?: TaskHandler;
  options?: ConsumeOptions;
  waiting: EmbeddedJob[];
  active: Set<Promise<void>>;
}

/**
 * Queues in this process with BullMQ's semantics (job-id dedupe, retries, parent and child jobs).
 * Nothing survives the process: it is for demos without Redis and fast tests of users' agents.
 */
export class EmbeddedTransport implements Transport {
  readonly kind = 'embedded' as const;
  readonly store = new MemoryRunStore();
  private readonly queues = new Map<string, EmbeddedQueue>();
  private readonly jobs = new Map<string, EmbeddedJob>();
  private readonly announced = new Set<string>();
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(options: EmbeddedTransportOptions = {}) {
    this.attempts = options.attempts ?? 3;
    this.backoffMs = options.backoffMs ?? 50;
  }

  private queue(name: string): EmbeddedQueue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = { waiting: [], active: new Set() };
      this.queues.set(name, queue);
    }
    return queue;
  }

  async ready(): Promise<void> {}

  async enqueue(_runId: string, queue: string, jobId: string, payload: unknown): Promise<void> {
    this.add(queue, jobId, payload);
  }

  async enqueueSequence(_runId: string, steps: ChildJob[]): Promise<void> {
    // The last step waits for the one before it, and so on down to the first, which runs now.
    let parent: EmbeddedJob | undefined;
    for (const step of [...steps].reverse()) {
      const job = this.add(step.queue, step.jobId, step.payload, parent, false);
      parent?.pendingChildren.add(job.id);
      if (parent) parent.state = 'waiting-children';
      parent = job;
    }
    if (parent) this.schedule(parent);
  }

  async wake(_runId: string, queue: string, jobId: string): Promise<boolean> {
    return this.wakeJob(this.jobs.get(`${queue}/${jobId}`));
  }

  private wakeJob(job: EmbeddedJob | undefined): boolean {
    if (!job || job.state !== 'delayed') return false;
    clearTimeout(job.wakeTimer);
    this.timers.delete(job.wakeTimer!);
    this.schedule(job);
    return true;
  }

  private add(queue: string, jobId: string, payload: unknown, parent?: EmbeddedJob, start = true): EmbeddedJob {
    const existing = this.jobs.get(`${queue}/${jobId}`);
    if (existing) return existing;
    const job: EmbeddedJob = {
      id: jobId,
      queue,
      data: structuredClone(payload),
      attemptsMade: 0,
      parent,
      pendingChildren: new Set(),
      childValues: new Map(),
      state: 'waiting',
    };
    this.jobs.set(`${queue}/${jobId}`, job);
    if (start) this.schedule(job);
    return job;
  }

  private schedule(job: EmbeddedJob, delayMs = 0): NodeJS.Timeout | undefined {
    job.state = 'waiting';
    const deliver = () => {
      this.queue(job.queue).waiting.push(job);
      this.pump(job.queue);
    };
    // setTimeout(0) waits at least 1 ms; a job due now only needs to wait for the current task.
    if (delayMs === 0) return void setImmediate(deliver);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      deliver();
    }, delayMs);
    this.timers.add(timer);
    return timer;
  }

  private pump(name: string): void {
    const queue = this.queue(name);
    const { handler, options } = queue;
    if (!handler || !options) return;
    while (queue.active.size < options.concurrency && queue.waiting.length > 0) {
      const job = queue.waiting.shift()!;
      const running = this.process(job, handler, options).finally(() => {
        queue.active.delete(running);
        this.pump(name);
      });
      queue.active.add(running);
    }
  }

  private async process(job: EmbeddedJob, handler: TaskHandler, options: ConsumeOptions): Promise<void> {
    job.state = 'active';
    const task: Task = {
      id: job.id,
      queue: job.queue,
      get data() {
        return job.data;
      },
      attempt: job.attemptsMade + 1,
      maxAttempts: this.attempts,
      childResults: async () => new Map(job.childValues),
    };
    try {
      const outcome = await handler(task);
      if (outcome.type === 'done') return this.finish(job, 'completed', outcome.result);
      job.data = structuredClone(outcome.checkpoint);
      if (outcome.type === 'park') {
        job.wakeTimer = this.schedule(job, Math.max(1, outcome.until - Date.now()));
        job.state = 'delayed';
        if (await outcome.ready()) this.wakeJob(job);
        return;
      }
      for (const child of outcome.children) {
        const added = this.add(child.queue, child.jobId, child.payload, job);
        if (added.state === 'completed' || added.state === 'failed') job.childValues.set(added.id, added.result);
        else job.pendingChildren.add(added.id);
      }
      if (job.pendingChildren.size === 0) this.schedule(job);
      else job.state = 'waiting-children';
    } catch (error) {
      job.attemptsMade += 1;
      if (job.attemptsMade < this.attempts) return void this.schedule(job, this.backoffMs * 2 ** (job.attemptsMade - 1));
      options.onFailed?.(job.id, job.data, error instanceof Error ? error : new Error(String(error)));
      this.finish(job, 'failed', undefined);
    }
  }

  private finish(job: EmbeddedJob, state: 'completed' | 'failed', result: TaskResult | undefined): void {
    job.state = state;
    job.result = result;
    const parent = job.parent;
    if (!parent) return;
    parent.childValues.set(job.id, result);
    parent.pendingChildren.delete(job.id);
    if (parent.pendingChildren.size === 0 && parent.state === 'waiting-children') this.schedule(parent);
  }

  consume(queue: string, handler: TaskHandler, options: ConsumeOptions): Consumer {
    const q = this.queue(queue);
    if (q.handler) throw new Error(`queue '${queue}' already has a consumer in this process`);
    q.handler = handler;
    q.options = options;
    this.pump(queue);
    return {
      close: async (timeoutMs = 10_000) => {
        q.handler = undefined;
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled([...q.active]),
          new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
        ]);
        clearTimeout(timer);
      },
    };
  }

  async announce(agents: string[]): Promise<void> {
    for (const agent of agents) this.announced.add(agent);
  }

  async knownAgents(): Promise<string[]> {
    return [...this.announced].sort();
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const queue of this.queues.values()) queue.handler = undefined;
    await this.store.close();
  }
}
