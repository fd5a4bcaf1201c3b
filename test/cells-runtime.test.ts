import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { AuditLogs, InvalidCursorError } from '../runtime/audit/audit-logs.js';
import type { AuditRecord } from '../runtime/audit/audit-record.js';
import { createRedis } from '../runtime/redis-url.js';
import { Runtime } from '../runtime/runtime.js';
import { Cells } from '../runtime/stores/cells.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { runAuditCli } from './support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

// Cells work the same on one Redis (a tag is only a name there), so their routing is tested here on
// every run, and on a real cluster in cluster.test.ts.
const prefixes: string[] = [];
const fresh = (name: string): string => {
  const prefix = uniquePrefix(name);
  prefixes.push(prefix);
  return prefix;
};
const redis = createRedis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(async () => {
  for (const prefix of prefixes) await deleteKeys(prefix);
  redis.disconnect();
});

const principal = { id: 'user-1', roles: ['customer'] };

describe('runs spread over cells (4 cells on one Redis)', () => {
  it('runs handoff chains whose runs land in several cells, each run whole in its own, and keeps concurrency within what the agent was given', { timeout: 60_000 }, async () => {
    const prefix = fresh('cells');
    let running = 0;
    let most = 0;
    const slow = defineTool({
      name: 'slow',
      description: 'takes a while',
      input: z.object({}),
      effect: 'read',
      run: async () => {
        most = Math.max(most, ++running);
        await delay(40);
        running--;
        return 'done';
      },
    });
    const runtime = new Runtime({
      transport: new BullMQTransport({ connection: REDIS_URL, prefix, cells: 4, backoffMs: 20 }),
      agents: [
        defineAgent({ name: 'front', instructions: 'x', handoffs: ['back'], model: new ScriptedModel({ script: () => ({ calls: [{ name: 'transfer_to_back' }] }) }) }),
        defineAgent({
          name: 'back',
          instructions: 'x',
          tools: [slow],
          model: new ScriptedModel({ script: (c) => (c.messages.some((m) => m.role === 'tool' && m.name === 'slow') ? 'finished' : { calls: [{ name: 'slow' }] }) }),
        }),
      ],
    });
    try {
      await runtime.startWorkers({ concurrency: 2 });
      const runs = await Promise.all(Array.from({ length: 16 }, (_, i) => runtime.start('front', `request ${i}`, { principal })));
      for (const run of runs) await expect(run.result()).resolves.toMatchObject({ output: 'finished' });
      // One agent's concurrency (2) holds across its four cell Workers.
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(2);
      const cells = new Cells(prefix, 4);
      const used = new Set(runs.map((r) => cells.of(r.id)));
      expect(used.size).toBeGreaterThan(1);
      for (const run of runs) {
        const own = cells.prefixOf(run.id);
        expect(await redis.exists(`${own}:run:${run.id}`)).toBe(1);
        expect(await redis.exists(`${prefix}:run:${run.id}`)).toBe(0);
      }
      expect(await redis.get(`${prefix}:cells`)).toBe('4');

      // The audit CLI takes the layout from the operator, and Redis must agree with it.
      const cli = (...args: string[]) => runAuditCli(['verify', '--allow-unsigned', '--unanchored', '--redis', REDIS_URL, '--prefix', prefix, ...args]);
      const fine = await cli('--cells', '4');
      expect(fine.code, fine.out.join('\n')).toBe(0);
      expect(fine.out.filter((l) => l.startsWith('audit log intact:'))).toHaveLength(4);
      expect((await cli()).error).toMatch(/Redis says .* keeps 4 cells, but this command reads 1/);
      // Someone with Redis access drops the pin and plants a genuine chain where a 1-cell reading would look.
      await redis.del(`${prefix}:cells`);
      for (const part of ['audit', 'audit:head']) await redis.copy(`${cells.all[0]}:${part}`, `${prefix}:${part}`);
      expect((await cli()).error).toMatch(/audit chains under .* that a deployment of 1 cell does not keep: .*\{c0\./);
      expect((await cli('--cells', '4')).error).toMatch(new RegExp(`does not keep: ${prefix}:audit:head`));
    } finally {
      await runtime.close({ timeoutMs: 1000 });
    }
  });

  it('takes the number of cells from PALISADE_CELLS when the code sets none, as every process of a deployment can be told it', async () => {
    const before = process.env.PALISADE_CELLS;
    const prefix = fresh('env-cells');
    try {
      process.env.PALISADE_CELLS = '3';
      const fromEnv = new BullMQTransport({ connection: REDIS_URL, prefix });
      const given = new BullMQTransport({ connection: REDIS_URL, prefix, cells: 5 });
      expect([fromEnv.cells.count, given.cells.count]).toEqual([3, 5]);
      await Promise.all([fromEnv.close(), given.close()]);
      expect((await runAuditCli(['verify', '--allow-unsigned', '--unanchored', '--redis', REDIS_URL, '--prefix', prefix])).out.filter((l) => l.startsWith('audit log intact:'))).toHaveLength(3);
      process.env.PALISADE_CELLS = 'many';
      expect(() => new BullMQTransport({ connection: REDIS_URL, prefix })).toThrow(/PALISADE_CELLS must be a whole number/);
      expect((await runAuditCli(['verify', '--allow-unsigned', '--unanchored', '--redis', REDIS_URL, '--prefix', prefix])).error).toMatch(/PALISADE_CELLS must be/);
    } finally {
      if (before === undefined) delete process.env.PALISADE_CELLS;
      else process.env.PALISADE_CELLS = before;
    }
  });

  it('lists the records of every cell exactly once across pages, newest first within each log, however the writers interleave', { timeout: 60_000 }, async () => {
    const prefix = fresh('listing');
    const cells = new Cells(prefix, 3);
    const logs = new AuditLogs(cells, { redis, writer: 'edge' });
    const connections = Array.from({ length: 6 }, () => createRedis(REDIS_URL));
    const writers = connections.map((conn, w) => new AuditLogs(cells, { redis: conn, writer: 'edge' }).as(w % 2 ? 'edge' : 'agent:front'));
    try {
      // Concurrent writers on separate connections: records of one log commit in an order their times need not follow.
      await Promise.all(
        Array.from({ length: 120 }, (_, i) =>
          writers[i % writers.length]!.append({ runId: `run-${i % 17}`, principal: 'p', chain: ['front'], action: 'run.started', outcome: 'ok' }),
        ),
      );
      for (const limit of [1, 7, 50]) {
        const seen: AuditRecord[] = [];
        let before: number | string | undefined;
        for (let pages = 0; pages < 200; pages++) {
          const page = await logs.page(redis, {
            ...(before !== undefined ? { before } : {}),
            limit,
            maxScan: 1000,
            take: (item) => ('record' in item ? (seen.push(item.record), true) : false),
          });
          if (page.next === undefined) break;
          before = page.next;
        }
        const keys = seen.map((r) => `${cells.of(r.runId)}:${r.seq}`);
        expect(new Set(keys).size).toBe(120);
        expect(keys).toHaveLength(120);
      }
      await expect(logs.page(redis, { before: '12', limit: 5, maxScan: 10, take: () => true })).rejects.toThrow(/3 sequence numbers/);
      // Past what a double holds exactly: refused, not turned into a stream id Redis rejects.
      await expect(logs.page(redis, { before: '9999999999999999.1.1', limit: 5, maxScan: 10, take: () => true })).rejects.toThrow(InvalidCursorError);
    } finally {
      await logs.close();
      for (const conn of connections) conn.disconnect();
    }
  });
});
