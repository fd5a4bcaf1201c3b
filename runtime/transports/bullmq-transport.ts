import { DelayedError, FlowProducer, Job, Queue, Worker, WaitingChildrenError, type FlowJob, type JobsOptions } from 'bullmq';
import { Cluster } from 'ioredis';
import { RedisRunStore } from '../stores/redis-run-store.js';
import { CellLayoutError, Cells, cellsFromEnv, DEFAULT_CLUSTER_CELLS } from '../stores/cells.js';
import { createRedis, type RedisClient, type RedisConnection } from '../redis-url.js';
import type { ConsumeOptions, Consumer, Transport } from './transport.js';
import type { ChildJob, Task, TaskHandler, TaskResult } from './task.js';

export interface BullMQTransportOptions {
  /**
   * A Redis URL (`redis://127.0.0.1:6379`, or `redis+cluster://host:port,host:port` for a Redis Cluster),
   * ioredis options, or an ioredis `Redis` or `Cluster` (the transport makes its own connections like it).
   */
  connection?: RedisConnection;
  /** Prefix of every key, without braces: on a cluster the runtime adds a hash tag per cell. */
  prefix?: string;
  /**
   * How many cells runs are spread over (see cells.ts): each cell is a hash slot with its own queues,
   * so on a Redis Cluster the cells spread the runs over the masters. Default `$PALISADE_CELLS`, else 12
   * on a cluster and 1 on one Redis. Every process of a deployment must use the same number: the first one pins it in Redis and
   * the others refuse to start with another.
   */
  cells?: number;
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

/** How long closing waits for Redis to answer QUIT before it drops the connection. */
const QUIT_WAIT_MS = 2000;

/** How soon a consumer that could not read the cell layout (Redis away) asks again. */
const LAYOUT_RETRY_MS = 500;

/** How many of a queue's latest failed jobs each worker checks were reported. */
const FAILURES_SWEPT = 100;

/**
 * Agents as BullMQ queues on Redis or a Redis Cluster: a queue per agent and cell, delegation as parent
 * and child jobs (always in the run's cell, so a flow stays in one slot).
 */
export class BullMQTransport implements Transport {
  readonly kind = 'redis' as const;
  readonly store: RedisRunStore;
  readonly prefix: string;
  readonly cells: Cells;
  private readonly redis: RedisClient;
  private readonly connectionSpec: RedisConnection;
  private readonly queues = new Map<string, Queue>();
  private flows: FlowProducer | undefined;
  private layout: Promise<void> | undefined;
  /** Each consumer's Workers (one per cell) with the connection made for them (which BullMQ does not close) and their sweep of failed jobs. */
  private readonly workers = new Map<Worker[], { connection: RedisClient; sweeping: NodeJS.Timeout }>();
  private readonly jobOptions: JobsOptions;
  private readonly lockDurationMs: number;
  private readonly maxStalledCount: number;

  constructor(options: BullMQTransportOptions = {}) {
    const connection = options.connection ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
    this.prefix = options.prefix ?? 'palisade';
    // Producers fail fast rather than queueing commands forever while Redis is away.
    this.connectionSpec = connection;
    this.redis = this.connect({ maxRetriesPerRequest: 2 });
    const clustered = this.redis instanceof Cluster;
    const cells = options.cells ?? cellsFromEnv() ?? (clustered ? DEFAULT_CLUSTER_CELLS : 1);
    this.cells = new Cells(this.prefix, cells, clustered || cells > 1);
    this.store = new RedisRunStore(this.redis, { prefix: this.prefix, cells: this.cells, retentionMs: options.retentionMs });
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    this.maxStalledCount = options.maxStalledCount ?? 5;
    this.jobOptions = {
      attempts: options.attempts ?? 3,
      backoff: { type: 'exponential', delay: options.backoffMs ?? 500 },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    };
  }

  private connect(extra: { maxRetriesPerRequest: number | null }): RedisClient {
    const redis = createRedis(this.connectionSpec, extra);
    redis.on('error', () => {
      // ioredis reconnects by itself; commands issued meanwhile reject with the cause.
    });
    return redis;
  }

  /** The connection this transport's producers use; for callers that need Redis directly (tests, admin). */
  get connection(): RedisClient {
    return this.redis;
  }

  /**
   * Pins the number of cells in Redis the first time, and checks it every time after: two processes that
   * disagreed would look for the same run in different cells.
   */
  ready(): Promise<void> {
    this.layout ??= (async () => {
      const key = `${this.prefix}:cells`;
      await this.redis.set(key, String(this.cells.count), 'NX');
      const pinned = await this.redis.get(key);
      if (pinned !== String(this.cells.count)) {
        throw new CellLayoutError(`the runs under prefix '${this.prefix}' are kept in ${pinned} cells, but this process was set up with ${this.cells.count}: give every process the same 'cells' (or a new prefix)`);
      }
    })();
    // A failure to reach Redis is not an answer: ask again next time.
    this.layout.catch((error: unknown) => {
      if (!(error instanceof CellLayoutError)) this.layout = undefined;
    });
    return this.layout;
  }

  private queue(cell: number, agent: string): Queue {
    const id = `${cell}\0${agent}`;
    let queue = this.queues.get(id);
    if (!queue) {
      queue = new Queue(queueName(agent), { connection: this.redis, prefix: this.cells.all[cell]! });
      queue.on('error', () => {
        // Producer calls reject with the cause; the event would only repeat it.
      });
      this.queues.set(id, queue);
    }
    return queue;
  }

  async enqueue(runId: string, queue: string, jobId: string, payload: unknown): Promise<void> {
    await this.ready();
    await this.queue(this.cells.of(runId), queue).add('envelope', payload, { ...this.jobOptions, jobId });
  }

  async enqueueSequence(runId: string, steps: ChildJob[]): Promise<void> {
    if (steps.length === 0) return;
    await this.ready();
    const prefix = this.cells.prefixOf(runId);
    // A BullMQ flow runs children before their parent: the first step is the deepest child.
    let flow: FlowJob | undefined;
    for (const step of steps) {
      const node: FlowJob = {
        name: 'envelope',
        queueName: queueName(step.queue),
        prefix,
        data: step.payload,
        opts: { ...this.jobOptions, jobId: step.jobId, ignoreDependencyOnFailure: true },
        ...(flow ? { children: [flow] } : {}),
      };
      flow = node;
    }
    this.flows ??= new FlowProducer({ connection: this.redis, prefix: this.prefix });
    await this.flows.add(flow!);
  }

  async wake(runId: string, queue: string, jobId: string): Promise<boolean> {
    const job = await Job.fromId(this.queue(this.cells.of(runId), queue), jobId);
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
    // Workers block on Redis, so they wait out an outage instead of failing commands.
    const connection = this.connect({ maxRetriesPerRequest: null });
    // One Worker per cell (a BullMQ queue lives in one slot). Each takes its share of the agent's concurrency,
    // rounded up so a cell never starves, and a shared count keeps the jobs running at once within it.
    const concurrency = Math.max(1, Math.ceil(options.concurrency / this.cells.count));
    const run = this.cells.count === 1 ? handler : limited(handler, options.concurrency);
    const workers = this.cells.all.map((_, cell) => this.cellWorker(cell, queue, run, connection, concurrency));
    const reported = new Set<string>();
    const report = (job: Job, message: string) => {
      if (!job.id || reported.has(job.id)) return;
      reported.add(job.id);
      options.onFailed?.(job.id, job.data, new Error(failureReason(job, message)));
    };
    for (const worker of workers) {
      worker.on('failed', (job, error) => {
        if (!job) return;
        // Final when it is in the failed set: attempts used up, or stalled too often (a worker died with it each time).
        void job.getState().then(
          (state) => state === 'failed' && report(job, error.message),
          () => undefined,
        );
      });
      worker.on('error', () => {
        // Connection errors: the worker reconnects and redelivery covers lost work.
      });
    }
    // The 'failed' event reaches only the process that failed the job; if that one dies before it is
    // handled, the run would wait forever. Every worker therefore also reports the queue's latest
    // failures when it starts and then every lock period (reporting is idempotent: a run ends once).
    const sweep = async () => {
      const found = new Set<string>();
      let complete = true;
      for (let cell = 0; cell < this.cells.count; cell++) {
        const q = this.queue(cell, queue);
        try {
          for (const id of await q.getRanges(['failed'], 0, FAILURES_SWEPT - 1)) {
            found.add(id);
            if (reported.has(id)) continue;
            const job = await Job.fromId(q, id);
            if (job) report(job, job.failedReason);
          }
        } catch {
          // A cell out of reach (its master failing over) is swept next time; the others are swept now.
          complete = false;
        }
      }
      if (complete) for (const id of reported) if (!found.has(id)) reported.delete(id);
    };
    const sweeping = setInterval(() => void sweep().catch(() => undefined), this.lockDurationMs).unref();
    // Workers take jobs only once the cell layout is known to match the deployment's (see `ready`); a
    // mismatch leaves them stopped, and `announce` (which Runtime.startWorkers awaits) says why.
    const start = (): void => {
      void this.ready().then(
        () => {
          if (!this.workers.has(workers)) return;
          for (const worker of workers) void worker.run().catch(() => undefined);
          void sweep().catch(() => undefined);
        },
        (error: unknown) => {
          if (error instanceof CellLayoutError || !this.workers.has(workers)) return clearInterval(sweeping);
          // Redis is not there yet: ask again shortly, as the Workers would have.
          setTimeout(start, LAYOUT_RETRY_MS).unref();
        },
      );
    };
    start();
    this.workers.set(workers, { connection, sweeping });
    return {
      close: async (timeoutMs = 10_000) => {
        clearInterval(sweeping);
        if (!this.workers.delete(workers)) return;
        await Promise.all(
          workers.map(async (worker) => {
            let timer: NodeJS.Timeout | undefined;
            const graceful = worker.close().then(() => true);
            const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
            const closed = await Promise.race([graceful, timedOut]);
            clearTimeout(timer);
            if (!closed) await worker.close(true);
          }),
        );
        connection.disconnect();
      },
    };
  }

  /** The Worker of one cell's queue of `queue`: children it adds go to queues of the same cell. */
  private cellWorker(cell: number, queue: string, handler: TaskHandler, connection: RedisClient, concurrency: number): Worker {
    const maxAttempts = this.jobOptions.attempts ?? 1;
    return new Worker(
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
            await this.queue(cell, child.queue).add('envelope', child.payload, {
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
        prefix: this.cells.all[cell]!,
        concurrency,
        autorun: false,
        lockDuration: this.lockDurationMs,
        stalledInterval: this.lockDurationMs,
        maxStalledCount: this.maxStalledCount,
      },
    );
  }

  async announce(agents: string[]): Promise<void> {
    // A process whose cells disagree with the deployment's fails here, before it says it serves anything.
    await this.ready();
    if (agents.length === 0) return;
    const now = String(Date.now());
    await this.redis.hset(`${this.prefix}:agents`, Object.fromEntries(agents.map((a) => [a, now])));
  }

  async knownAgents(): Promise<string[]> {
    return (await this.redis.hkeys(`${this.prefix}:agents`)).sort();
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.workers].map(async ([workers, { connection, sweeping }]) => {
        clearInterval(sweeping);
        await Promise.all(workers.map((worker) => worker.close(true)));
        connection.disconnect();
      }),
    );
    this.workers.clear();
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
    await this.flows?.close();
    this.flows = undefined;
    await this.store.close();
    // QUIT waits for an answer; from a cluster whose nodes are gone none comes, and closing must not hang.
    let timer: NodeJS.Timeout | undefined;
    const quit = this.redis.quit().then(
      () => undefined,
      () => undefined,
    );
    await Promise.race([quit, new Promise<void>((resolve) => (timer = setTimeout(resolve, QUIT_WAIT_MS)))]);
    clearTimeout(timer);
    this.redis.disconnect();
  }
}

/** `handler`, running at most `max` tasks at once; the others wait their turn in arrival order. */
function limited(handler: TaskHandler, max: number): TaskHandler {
  let running = 0;
  const queued: Array<() => void> = [];
  return async (task) => {
    if (running >= max) await new Promise<void>((resolve) => queued.push(resolve));
    else running++;
    try {
      return await handler(task);
    } finally {
      // The slot passes straight to the next in line, or is given back.
      const next = queued.shift();
      if (next) next();
      else running--;
    }
  };
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
