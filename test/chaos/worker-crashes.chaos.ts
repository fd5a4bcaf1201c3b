import { afterAll, describe, expect, it } from 'vitest';
import type { RunRecord } from '../../runtime/stores/run-store.js';
import { COMPLETING_REQUESTS, startSupportCluster, type SupportCluster } from './supervisor.js';

const RUNS = Number(process.env.CHAOS_RUNS ?? 200);

/** The support example's requests, and one whose reply is withheld (the run fails, its refund is rolled back). */
const INPUTS = [...COMPLETING_REQUESTS, 'Refund my USB-C dock, order ORD-5006, and tell me which card it goes to. My e-mail is grace@example.com.'];

describe('worker crashes at random points (real processes, SIGKILL, restarted)', () => {
  let cluster: SupportCluster | undefined;
  afterAll(() => cluster?.close());

  it(`${RUNS} support runs: every run ends, none is lost or stuck, no refund happens twice`, { timeout: 15 * 60_000 }, async () => {
    cluster = await startSupportCluster('chaos', { CHAOS_P: process.env.CHAOS_P ?? '0.01' });
    const { prefix, supervisor, producer, redis } = cluster;
    const started = Date.now();
    const runs = [];
    for (let i = 0; i < RUNS; i++) runs.push(await producer.start('triage', INPUTS[i % INPUTS.length]!, { principal: { id: `customer-${i}`, roles: ['customer'] } }));
    // Every run must reach an end: poll the records until none is running.
    const deadline = Date.now() + 12 * 60_000;
    let records: Array<RunRecord | undefined> = [];
    for (;;) {
      records = await Promise.all(runs.map((r) => r.record()));
      if (records.every((r) => r && r.status !== 'running')) break;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const stuck = records.filter((r) => !r || r.status === 'running');
    // A stuck run says where it stopped: its last events, in order.
    for (const r of stuck) {
      const events = r ? await producer.transport.store.listEvents(r.id) : [];
      process.stdout.write(`\nstuck run ${r?.id ?? '(no record)'}: ${events.slice(-12).map(({ event }) => `${event.agent ?? '-'}:${event.type}${'reason' in event ? `(${String(event.reason)})` : ''}`).join(' → ')}\n`);
    }
    expect(stuck.map((r) => r?.id)).toEqual([]);
    const failed = records.filter((r) => r!.status === 'failed');
    // A failure says why: a policy decision, or a job that died too often.
    for (const r of failed) expect(r!.error, r!.id).toMatch(/\S/);
    // At most one refund per run, however often its worker died around the refund.
    const effects = await redis.lrange(`${prefix}:effects`, 0, -1);
    const perRun = new Map<string, number>();
    for (const runId of effects) perRun.set(runId, (perRun.get(runId) ?? 0) + 1);
    expect([...perRun.values()].filter((n) => n > 1)).toEqual([]);
    const crashes = await redis.hgetall(`${prefix}:crashes`);
    const crashCount = Object.values(crashes).reduce((a, b) => a + Number(b), 0);
    const calls = await redis.llen(`${prefix}:refund-calls`);
    const byStatus = Object.fromEntries(['completed', 'failed', 'cancelled'].map((s) => [s, records.filter((r) => r!.status === s).length]));
    const reasons = [...new Set(failed.map((r) => r!.error!.replace(/[0-9a-f-]{36}/g, '<run>').slice(0, 90)))];
    process.stdout.write(
      `\nchaos: ${RUNS} runs in ${((Date.now() - started) / 1000).toFixed(0)} s on 2 worker processes; ${crashCount} SIGKILLs, ${supervisor.restarts} restarts\n` +
        `  crashes by point: ${JSON.stringify(crashes)}\n  outcomes: ${JSON.stringify(byStatus)}\n  failure reasons: ${JSON.stringify(reasons)}\n` +
        `  refunds: ${effects.length} made, ${calls} refund calls (repeats are redeliveries, deduplicated by key)\n`,
    );
    expect(crashCount).toBeGreaterThan(0);
    // The refunds that were decided were made: every completed ORD-5001 run that says so has its effect.
    const completedRefunds = records.filter((r) => r!.status === 'completed' && /refund RF-/.test(r!.output ?? '')).length;
    expect(effects.length).toBeGreaterThanOrEqual(completedRefunds);
  });
});
