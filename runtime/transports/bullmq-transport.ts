import { DelayedError, FlowProducer, Job, Queue, Worker, WaitingChildrenError, type FlowJob, type JobsOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { RedisRunStore } from '../stores/redis-run-store.js';
import type { ConsumeOptions, Consumer, Transport } from './transport.js';
import type { ChildJob, Task, TaskHandler, TaskResult } from './task.js';

export interface BullMQTransportOptions {
  /** A Redis URL (`redis://127.0.0.1:6379`) or ioredis options. */
  connection?: string | RedisOptions;
  /** Prefix of every key; `{palisade}` keeps one run's keys in one Redis Cluster slot. */
  prefix?: string;
  /** Deliveries of one job before it fails for good (retryable errors and crashes). */
  attempts?: number;
  /** First retry delay; it doubles each time. */
  backoffMs?: number;
  /** How long a finished run's state is kept in Redis. */
  retentionMs?: number;
  /** Worker lock; a worker that dies is detected after about this long and its job redelivered. */
  lockDurationMs?: number;
  /**
   * How many times a job may be found abandoned by a dead worker before it fails for good (its run
   * then fails with the reason). One crash abandons every job the process held, not only the culprit.
   */
  maxStalledCount?: number;
}

const queueName = (agent: string): string => `agent.${agent}`;

/** How many of a queue's latest failed jobs each worker checks were reported. */
const FAILURES_SWEPT = 100;

/** Agents as BullMQ queues on one Redis: a queue per agent, delegation as parent and child jobs. */
export class BullMQTransport implements Transport {
  readonly kind = 'redis' as const;
  readonly store: RedisRunStore;
  readonly prefix: string;
  private readonly redis: Redis;
  private readonly connectionSpec: string | RedisOptions;
  private readonly queues = new Map<string, Queue>();
  private flows: FlowProducer | undefined;
  /** Each worker with the connection made for it (which BullMQ does not close) and its sweep of failed jobs. */
  private readonly workers = new Map<Worker, { connection: Redis; sweeping: NodeJS.Timeout }>();
  private readonly jobOptions: JobsOptions;
  private readonly lockDurationMs: number;
  private readonly maxStalledCount: number;

  constructor(options: BullMQTransportOptions = {}) {
    const connection = options.connection ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
    this.prefix = options.prefix ?? 'palisade';
    // Producers fail fast rather than queueing commands forever while Redis is away.
    this.connectionSpec = connection;
    this.redis = this.connect({ maxRetriesPerRequest: 2 });
    this.store = new RedisRunStore(this.redis, { prefix: this.prefix, retentionMs: options.retentionMs });
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    this.maxStalledCount = options.maxStalledCount ?? 5;
    this.jobOptions = {
      attempts: options.attempts ?? 3,
      backoff: { type: 'exponential', delay: options.backoffMs ?? 500 },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    };
  }

  private connect(extra: RedisOptions): Redis {
    const spec = this.connectionSpec;
    const redis = typeof spec === 'string' ? new Redis(spec, extra) : new Redis({ ...spec, ...extra });
    redis.on('error', () => {
      // ioredis reconnects by itself; commands issued meanwhile reject with the cause.
    });
    return redis;
  }

  /** The connection this transport's producers use; for callers that need Redis directly (tests, admin). */
  get connection(): Redis {
    return this.redis;
  }

  private queue(agent: string): Queue {
    let queue = this.queues.get(agent);
    if (!queue) {
      queue = new Queue(queueName(agent), { connection: this.redis, prefix: this.prefix });
      queue.on('error', () => {
        // Producer calls reject with the cause; the event would only repeat it.
      });
      this.queues.set(agent, queue);
    }
    return queue;
  }

  async enqueue(queue: string, jobId: string, payload: unknown): Promise<void> {
    await this.queue(queue).add('envelope', payload, { ...this.jobOptions, jobId });
  }

  async enqueueSequence(steps: ChildJob[]): Promise<void> {
    if (steps.length === 0) return;
    // A BullMQ flow runs children before their parent: the first step is the deepest child.
    let flow: FlowJob | undefined;
    for (const step of steps) {
      const node: FlowJob = {
        name: 'envelope',
        queueName: queueName(step.queue),
        data: step.payload,
        opts: { ...this.jobOptions, jobId: step.jobId, ignoreDependencyOnFailure: true },
        ...(flow ? { children: [flow] } : {}),
      };
      flow = node;
    }
    this.flows ??= new FlowProducer({ connection: this.redis, prefix: this.prefix });
    await this.flows.add(flow!);
  }

  async wake(queue: string, jobId: string): Promise<boolean> {
    const job = await Job.fromId(this.queue(queue), jobId);
    if (!job || !(await job.isDelayed())) return false;
    try {
      await job.promote();
      return true;
    } catch {
      // It left the delayed set meanwhile (its time came, or another waker was first).
      return false;
    }
  }

  consume(queue: string, handler: TaskHandler, options: ConsumeOptions): Consumer {
    const maxAttempts = this.jobOptions.attempts ?? 1;
    // Workers block on Redis, so they wait out an outage instead of failing commands.
    const connection = this.connect({ maxRetriesPerRequest: null });
    const worker = new Worker(
      queueName(queue),
      async (job: Job, token?: string) => {
        const task: Task = {
          id: job.id ?? '',
          queue,
          get data() {
            return job.data;
          },
          attempt: job.attemptsMade + 1,
          maxAttempts,
          childResults: () => childResults(job),
        };
        for (;;) {
          const outcome = await handler(task);
          if (outcome.type === 'done') return outcome.result;
          if (outcome.type === 'park') {
            // A delayed job holds no worker slot and survives restarts; its time is the wait's deadline.
            await job.updateData(outcome.checkpoint);
            await job.moveToDelayed(outcome.until, token);
            if (await outcome.ready()) await job.promote().catch(() => undefined);
            throw new DelayedError();
          }
          // Children first: their ids are deterministic, so a crash before the checkpoint re-adds nothing twice.
          for (const child of outcome.children) {
            await this.queue(child.queue).add('envelope', child.payload, {
              ...this.jobOptions,
              jobId: child.jobId,
              parent: { id: job.id ?? '', queue: job.queueQualifiedName },
              // A child that fails for good must wake its parent, which reports it to the model.
              ignoreDependencyOnFailure: true,
            });
          }
          await job.updateData(outcome.checkpoint);
          if (await job.moveToWaitingChildren(token ?? '')) throw new WaitingChildrenError();
          // Every child had already finished: carry on in this delivery.
        }
      },
      {
        connection,
        prefix: this.prefix,
        concurrency: options.concurrency,
        lockDuration: this.lockDurationMs,
        stalledInterval: this.lockDurationMs,
        maxStalledCount: this.maxStalledCount,
      },
    );
    const reported = new Set<string>();
    const report = (job: Job, message: string) => {
      if (!job.id || reported.has(job.id)) return;
      reported.add(job.id);
      options.onFailed?.(job.id, job.data, new Error(failureReason(job, message)));
    };
    worker.on('failed', (job, error) => {
      if (!job) return;
      // Final when it is in the failed set: attempts used up, or stalled too often (a worker died with it each time).
      void job.getState().then(
        (state) => state === 'failed' && report(job, error.message),
        () => undefined,
      );
    });
    // The 'failed' event reaches only the process that failed the job; if that one dies before it is
    // handled, the run would wait forever. Every worker therefore also reports the queue's latest
    // failures when it starts and then every lock period (reporting is idempotent: a run ends once).
    const sweep = async () => {
      const ids = new Set(await this.queue(queue).getRanges(['failed'], 0, FAILURES_SWEPT - 1));
      for (const id of reported) if (!ids.has(id)) reported.delete(id);
      for (const id of ids) {
        if (reported.has(id)) continue;
        const job = await Job.fromId(this.queue(queue), id);
        if (job) report(job, job.failedReason);
      }
    };
    const sweeping = setInterval(() => void sweep().catch(() => undefined), this.lockDurationMs).unref();
    void sweep().catch(() => undefined);
    worker.on('error', () => {
      // Connection errors: the worker reconnects and redelivery covers lost work.
    });
    this.workers.set(worker, { connection, sweeping });
    return {
      close: async (timeoutMs = 10_000) => {
        clearInterval(sweeping);
        if (!this.workers.delete(worker)) return;
        let timer: NodeJS.Timeout | undefined;
        const graceful = worker.close().then(() => true);
        const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
        const closed = await Promise.race([graceful, timedOut]);
        clearTimeout(timer);
        if (!closed) await worker.close(true);
        connection.disconnect();
      },
    };
  }

  async announce(agents: string[]): Promise<void> {
    if (agents.length === 0) return;
    const now = String(Date.now());
    await this.redis.hset(`${this.prefix}:agents`, Object.fromEntries(agents.map((a) => [a, now])));
  }

  async knownAgents(): Promise<string[]> {
    return (await this.redis.hkeys(`${this.prefix}:agents`)).sort();
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.workers].map(async ([worker, { connection, sweeping }]) => {
        clearInterval(sweeping);
        await worker.close(true);
        connection.disconnect();
      }),
    );
    this.workers.clear();
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
    await this.flows?.close();
    this.flows = undefined;
    await this.store.close();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** Why a job failed for good, as its run reports it. */
function failureReason(job: Job, message: string): string {
  return /stalled more than allowable limit/.test(message) ? `its worker died while running it ${job.stalledCounter} times (${message})` : message;
}

async function childResults(job: Job): Promise<Map<string, TaskResult | undefined>> {
  const [values, failures] = await Promise.all([job.getChildrenValues<TaskResult>(), job.getIgnoredChildrenFailures()]);
  // Keys are `prefix:queue:jobId`; job ids cannot contain ':'.
  const byId = new Map<string, TaskResult | undefined>();
  for (const [key, value] of Object.entries(values)) byId.set(key.slice(key.lastIndexOf(':') + 1), value);
  for (const key of Object.keys(failures)) byId.set(key.slice(key.lastIndexOf(':') + 1), undefined);
  return byId;
}
