import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { afterEach, describe, expect, it } from 'vitest';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { RunFailedError } from '../runtime/errors.js';
import type { RunEvent } from '../runtime/events.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const principal = { id: 'user-1', roles: [] };
const agents = [defineAgent({ name: 'solo', instructions: 'x', model: new ScriptedModel({ script: () => 'fine' }) })];

/**
 * A job can fail for good in a process that dies before it handles BullMQ's 'failed' event (it
 * detected the stall, then was killed). The run must still end: every worker reports the queue's
 * latest failures when it starts.
 */
describe('a job that failed for good while nobody reported it', () => {
  const prefix = uniquePrefix('failed-jobs');
  let runtime: Runtime | undefined;
  afterEach(async () => {
    await runtime?.close({ timeoutMs: 2000 });
    await deleteKeys(prefix);
  });

  it('ends its run, with the reason, once a worker of its queue starts', async () => {
    runtime = new Runtime({ agents, transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    const run = await runtime.start('solo', 'go', { principal });

    // Something other than a Palisade worker fails the job, and nothing hears of it.
    const queue = new Queue('agent.solo', { connection: { url: REDIS_URL }, prefix });
    const outsider = new Worker(
      'agent.solo',
      async () => {
        throw new UnrecoverableError('the process running it was lost');
      },
      { connection: { url: REDIS_URL }, prefix },
    );
    for (let i = 0; i < 100 && (await queue.getFailedCount()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await outsider.close();
    await queue.close();
    expect((await run.record())?.status).toBe('running');

    await runtime.startWorkers();
    const error = await run.result({ timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RunFailedError);
    expect((error as Error).message).toMatch(/solo failed: the process running it was lost/);
    const events: RunEvent[] = [];
    for await (const e of run.events()) events.push(e);
    expect(events.filter((e) => e.type === 'run.failed')).toHaveLength(1);
  });
});
