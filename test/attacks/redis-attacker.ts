import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { REDIS_URL } from '../support/redis.js';

/**
 * What an attacker with Redis access does, with the clients anyone has (ioredis, BullMQ): read and
 * write keys, queue jobs, promote a parked one. It holds no key file; a test that gives it one
 * loads that file itself.
 */
export class RedisAttacker {
  readonly redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  private readonly queues = new Map<string, Queue>();

  constructor(readonly prefix: string) {}

  private queue(agent: string): Queue {
    let queue = this.queues.get(agent);
    if (!queue) {
      queue = new Queue(`agent.${agent}`, { connection: this.redis, prefix: this.prefix });
      this.queues.set(agent, queue);
    }
    return queue;
  }

  /** Puts a job on an agent's queue, as a worker or the edge would. */
  async enqueue(agent: string, jobId: string, data: unknown): Promise<void> {
    await this.queue(agent).add('envelope', data, { jobId });
  }

  /** Wakes a parked (delayed) job now, as the edge does after a decision. */
  async promote(agent: string, jobId: string): Promise<void> {
    const job = await Job.fromId(this.queue(agent), jobId);
    // The job may wake on its own between the check and the promote (the edge woke it first): then there is nothing to do.
    if (job && (await job.isDelayed()))
      await job.promote().catch(async (error: unknown) => {
        if (await job.isDelayed()) throw error;
      });
  }

  /** The data of every job of an agent's queue still in Redis (finished ones stay an hour). */
  async jobData(agent: string): Promise<unknown[]> {
    const out: unknown[] = [];
    for (const key of await this.redis.keys(`${this.prefix}:agent.${agent}:*`)) {
      if ((await this.redis.type(key)) !== 'hash') continue;
      const data = await this.redis.hget(key, 'data');
      if (data) out.push(JSON.parse(data));
    }
    return out;
  }

  /** A run record, as the edge writes one when it starts a run. */
  async plantRun(runId: string, agent: string, principal: object): Promise<void> {
    const now = Date.now();
    await this.redis.hset(`${this.prefix}:run:${runId}`, { id: runId, agent, status: 'running', principal: JSON.stringify(principal), createdAt: now, updatedAt: now });
  }

  async close(): Promise<void> {
    for (const queue of this.queues.values()) await queue.close();
    this.redis.disconnect();
  }
}
