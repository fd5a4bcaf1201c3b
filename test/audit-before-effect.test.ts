import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { AuditLog } from '../runtime/audit/audit-log.js';
import type { AuditRecord } from '../runtime/audit/audit-record.js';
import { createRedis } from '../runtime/redis-url.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const prefix = uniquePrefix('before-effect');
const redis = createRedis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(async () => {
  await deleteKeys(prefix);
  redis.disconnect();
});

describe('no effect without its record', () => {
  it('has the decision that allowed a write in the audit log before the tool runs, and not yet for a read', { timeout: 30_000 }, async () => {
    const log = new AuditLog({ redis, prefix, writer: 'edge' });
    const seen: Record<string, AuditRecord[]> = {};
    const decisionsFor = async (runId: string, tool: string) => (await log.read({ runId, count: 1000 })).filter((r) => r.action === 'guard.decision' && r.subject === tool && r.detail?.stage === 'tool_call');
    const tools = ['lookup', 'refund'].map((name) =>
      defineTool({
        name,
        description: name,
        input: z.object({}),
        effect: name === 'refund' ? 'write' : 'read',
        run: async (_args, ctx) => {
          seen[name] = await decisionsFor(ctx.runId, name);
          return 'ok';
        },
      }),
    );
    const runtime = new Runtime({
      transport: new BullMQTransport({ connection: REDIS_URL, prefix }),
      agents: [
        defineAgent({
          name: 'desk',
          instructions: 'x',
          tools,
          model: new ScriptedModel({ script: (c) => (c.messages.some((m) => m.role === 'tool' && m.name === 'refund') ? 'done' : c.messages.some((m) => m.role === 'tool') ? { calls: [{ name: 'refund' }] } : { calls: [{ name: 'lookup' }] }) }),
        }),
      ],
    });
    try {
      await runtime.startWorkers();
      const run = await runtime.start('desk', 'refund me', { principal: { id: 'u', roles: [] } });
      await expect(run.result()).resolves.toMatchObject({ output: 'done' });
      expect(seen.refund?.map((r) => r.outcome)).toEqual(['allow']);
      // A read waits for nothing: its decision goes with the next write (this is what the write's wait costs).
      expect(seen.lookup).toEqual([]);
      expect((await decisionsFor(run.id, 'lookup')).map((r) => r.outcome)).toEqual(['allow']);
    } finally {
      await runtime.close({ timeoutMs: 1000 });
      await log.close();
    }
  });
});
