import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLogs } from '../runtime/audit/audit-logs.js';
import { runDemo } from '../runtime/cli/demo.js';
import { masters } from '../runtime/redis-url.js';
import type { Run } from '../runtime/run.js';
import type { RunRecord } from '../runtime/stores/run-store.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { CellLayoutError } from '../runtime/stores/cells.js';
import { COMPLETING_REQUESTS, startSupportCluster, type SupportCluster } from './chaos/supervisor.js';
import { runAuditCli } from './support/audit-cli.js';
import { startRedisCluster, type RedisClusterHandle } from './support/redis-cluster.js';
import { uniquePrefix } from './support/redis.js';

/** Enough runs that, spread over 12 cells (4 per master), every master of 3 gets some (a miss has odds of about 3·(2/3)^40). */
const RUNS = 40;

describe('Redis Cluster: one deployment spread over the masters of a real 3-master cluster', () => {
  let cluster: RedisClusterHandle;
  let support: SupportCluster | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
  }, 90_000);
  afterAll(async () => {
    await support?.close();
    await cluster?.stop();
  }, 60_000);

  it('runs the support demo end to end: worker processes per agent, approvals, rollback, every run as expected', { timeout: 240_000 }, async () => {
    const before = process.env.REDIS_URL;
    process.env.REDIS_URL = cluster.url;
    const lines: string[] = [];
    try {
      const result = await runDemo({ out: (line) => lines.push(line) });
      expect(result.transport, lines.join('\n')).toBe('redis');
      expect(
        result.runs.filter((r) => !r.asExpected),
        lines.join('\n'),
      ).toEqual([]);
      expect(result.runs.length).toBeGreaterThanOrEqual(5);
    } finally {
      if (before === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = before;
    }
  });

  it(`${RUNS} support runs with workers killed at random: every run ends, no refund twice, runs and script calls on every master, each cell's audit chain intact, anchored and verified per cell by the CLI`, { timeout: 300_000 }, async () => {
    await cluster.resetStats();
    support = await startSupportCluster('cluster-chaos', { CHAOS_P: '0.03' }, cluster.url);
    const { prefix, producer, redis, supervisor } = support;
    const runs: Run[] = [];
    for (let i = 0; i < RUNS; i++) runs.push(await producer.start('triage', COMPLETING_REQUESTS[i % COMPLETING_REQUESTS.length]!, { principal: { id: `customer-${i}`, roles: ['customer'] } }));
    const deadline = Date.now() + 240_000;
    let records: Array<RunRecord | undefined> = [];
    for (;;) {
      records = await Promise.all(runs.map((r) => r.record()));
      if (records.every((r) => r && r.status !== 'running') || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(records.filter((r) => !r || r.status === 'running').map((r) => r?.id)).toEqual([]);
    for (const r of records.filter((r) => r!.status === 'failed')) expect(r!.error, r!.id).toMatch(/\S/);
    expect(records.filter((r) => r!.status === 'completed').length).toBeGreaterThan(RUNS / 2);
    const effects = await redis.lrange(`${prefix}:effects`, 0, -1);
    expect(effects.length).toBe(new Set(effects).size);
    const crashes = Object.values(await redis.hgetall(`${prefix}:crashes`)).reduce((a, b) => a + Number(b), 0);
    expect(crashes).toBeGreaterThan(0);
    expect(supervisor.restarts).toBeGreaterThan(0);

    // The runs are spread: every master holds run records, and ran Palisade's scripts and BullMQ's.
    const perMaster: number[] = [];
    for (const node of await masters(redis)) {
      let cursor = '0';
      let found = 0;
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:{*}:run:*`, 'COUNT', 1000);
        cursor = next;
        found += keys.filter((k) => /:run:[^:]+$/.test(k)).length;
      } while (cursor !== '0');
      perMaster.push(found);
    }
    expect(perMaster).toHaveLength(3);
    expect(perMaster.reduce((a, b) => a + b, 0)).toBe(RUNS);
    for (const n of perMaster) expect(n).toBeGreaterThan(0);
    const stats = await cluster.commandStats();
    for (const port of cluster.ports) {
      const calls = stats.get(port)!;
      expect(calls.evalsha ?? 0, `scripts on ${port}`).toBeGreaterThan(0);
      expect((calls.bzpopmin ?? 0) + (calls.blmove ?? 0), `blocking fetches on ${port}`).toBeGreaterThan(0);
    }

    // One chain per cell, each intact, together holding every run's start.
    const logs = new AuditLogs((producer.transport as BullMQTransport).cells, { redis, writer: 'edge' });
    let started = 0;
    for (const { log } of logs.all) {
      const report = await log.verify({ allowUnsigned: true });
      expect(report.problems).toEqual([]);
      started += (await log.read({ count: 100_000 })).filter((r) => r.action === 'run.started').length;
    }
    expect(started).toBe(RUNS);

    // The operator's view: `palisade audit anchor` and `verify` over every cell, each chain with its own anchor file.
    const keys = support.keysDir;
    expect((await runAuditCli(['keys', '--keys', keys])).code).toBe(0);
    const anchorFile = join(keys, 'anchors.jsonl');
    const conn = ['--redis', cluster.url, '--prefix', prefix];
    const anchored = await runAuditCli(['anchor', '--keys', keys, '--anchors', anchorFile, '--full', ...conn]);
    expect(anchored.code, anchored.out.join('\n')).toBe(0);
    expect(anchored.out.filter((l) => /^anchored seq \d+ .* \(cell \d+, /.test(l)).length).toBeGreaterThanOrEqual(3);
    const verified = await runAuditCli(['verify', '--keys', keys, '--anchors', anchorFile, ...conn]);
    expect(verified.code, verified.out.join('\n')).toBe(0);
    expect(verified.out.filter((l) => l.startsWith('audit log intact:'))).toHaveLength(12);
    // One run's records, found in its own cell's log.
    const tail = await runAuditCli(['tail', '--run', runs[0]!.id, '-n', '5', ...conn]);
    expect(tail.out.length).toBeGreaterThan(0);
    expect(tail.out.every((l) => l.includes(`run:${runs[0]!.id}`))).toBe(true);
    expect((await runAuditCli(['tail', ...conn])).error).toMatch(/keeps 12 cells.*--cell 0 to 11/);
  });

  it('closes a transport whose cluster has gone away, instead of waiting for an answer that never comes', { timeout: 60_000 }, async () => {
    const doomed = await startRedisCluster({ masters: 3 });
    const transport = new BullMQTransport({ connection: doomed.url, prefix: uniquePrefix('gone') });
    try {
      await transport.enqueue('r1', 'a', 'j1', { hello: 'world' });
    } finally {
      await doomed.stop();
    }
    const closing = transport.close().then(() => 'closed');
    await expect(Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 20_000, 'still closing'))])).resolves.toBe('closed');
  });

  it('refuses a process whose number of cells differs from the one the deployment pinned', async () => {
    const prefix = uniquePrefix('cells');
    const first = new BullMQTransport({ connection: cluster.url, prefix });
    const second = new BullMQTransport({ connection: cluster.url, prefix, cells: 8 });
    try {
      await first.announce(['a']);
      await expect(second.announce(['a'])).rejects.toThrow(CellLayoutError);
      await expect(second.enqueue('r1', 'a', 'j1', {})).rejects.toThrow(/kept in 12 cells, but this process was set up with 8/);
    } finally {
      await second.close();
      await first.close();
    }
  });
});
