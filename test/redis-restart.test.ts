import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { TransportUnavailableError } from '../runtime/errors.js';
import { pingRedis } from '../runtime/redis-url.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/** A Redis of the test's own, with every write on disk before it is acknowledged. */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if ((await pingRedis(url, 200)) === undefined) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server on ${port} did not start`);
}

describe('Redis restarts mid-load (its own redis-server, AOF on)', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  });

  it('accepted runs resume and finish after Redis returns; producers get a clear error while it is down', { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'palisade-redis-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const port = await freePort();
    let redis = await startRedis(port, dir);
    cleanup.push(async () => {
      redis.kill('SIGKILL');
    });
    const effects = new Map<string, number>();
    const book = defineTool({
      name: 'book',
      description: 'book a slot (slow)',
      input: z.object({ slot: z.string() }),
      effect: 'write',
      run: async ({ slot }, ctx) => {
        await new Promise((r) => setTimeout(r, 300));
        effects.set(ctx.idempotencyKey, (effects.get(ctx.idempotencyKey) ?? 0) + 1);
        return `booked ${slot}`;
      },
    });
    const front = defineAgent({ name: 'front', instructions: 'hand off', handoffs: ['booker'], model: new ScriptedModel({ script: () => ({ calls: [{ name: 'transfer_to_booker', args: {} }] }) }) });
    const booker = defineAgent({
      name: 'booker',
      instructions: 'book',
      tools: [book],
      model: new ScriptedModel({ script: (c) => (c.called('book') ? `done: ${String(c.result('book'))}` : { calls: [{ name: 'book', args: { slot: c.lastUser } }] }) }),
    });
    const transport = new BullMQTransport({ connection: `redis://127.0.0.1:${port}`, prefix: 'restart', lockDurationMs: 1000, backoffMs: 100, attempts: 10 });
    const rt = new Runtime({ agents: [front, booker], transport });
    cleanup.push(() => rt.close({ timeoutMs: 1000 }));
    await rt.startWorkers({ concurrency: 8 });

    const runs: Run[] = [];
    for (let i = 0; i < 40; i++) runs.push(await rt.start('front', `slot-${i}`, { principal: { id: 'u' } }));
    // Crash Redis while runs are in flight.
    await new Promise((r) => setTimeout(r, 500));
    redis.kill('SIGKILL');
    await once(redis, 'exit');
    const doneBeforeCrash = effects.size;
    expect(doneBeforeCrash).toBeLessThan(40);
    expect(doneBeforeCrash).toBeGreaterThan(0);

    // While it is down a producer gets a clear error, promptly, instead of hanging.
    const startedAt = Date.now();
    const refused = await rt.start('front', 'slot-down', { principal: { id: 'u' } }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(TransportUnavailableError);
    expect((refused as Error).message).toMatch(/^Redis did not answer, so the run was not started/);
    expect(Date.now() - startedAt).toBeLessThan(15_000);

    redis = await startRedis(port, dir);
    // Every run accepted before the crash finishes; each booking happened for its run.
    const results = await Promise.all(runs.map((run) => run.result({ timeoutMs: 60_000 })));
    expect(results.map((r) => r.output)).toEqual(runs.map((_, i) => `done: booked slot-${i}`));
    // A redelivered call reuses its key (the downstream system would deduplicate on it): one key per run.
    expect(effects.size).toBe(40);
    // And new runs work again.
    await expect((await rt.start('front', 'slot-after', { principal: { id: 'u' } })).result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'done: booked slot-after' });
  });
});
