import { randomBytes } from 'node:crypto';
import { Job, Queue, QueueEvents } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SupportBackend } from '../../examples/support/backend.js';
import type { RunEvent } from '../../runtime/events.js';
import type { Runtime } from '../../runtime/runtime.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';
import { RedisAttacker } from './redis-attacker.js';
import { startSupportWorkers, type SupportWorkers } from './support-workers.js';
const ada = { id: 'ada', roles: ['customer'], attrs: {} };

/** The shop, counting every reversal the compensation asks of it (each one is a real effect). */
class CountingBackend extends SupportBackend {
  reversals = 0;
  override reverseRefund(refundId: string): void {
    this.reversals += 1;
    super.reverseRefund(refundId);
  }
}

/**
 * Issue 18, red-team finding A: an attacker with Redis access (no key file) replays compensation
 * orders. Each agent runs in its own runtime with its own key file, the policy rolls back on failure
 * and cancel, and the edge holds edge.json only.
 */
describe('compensations cannot be replayed (real Redis, BullMQ)', () => {
  const prefix = uniquePrefix('rollback-replay');
  const backend = new CountingBackend();
  let system: SupportWorkers;
  let edge: Runtime;
  let attacker: RedisAttacker;
  let billingQueue: Queue;
  let billingEvents: QueueEvents;

  beforeAll(async () => {
    system = await startSupportWorkers(prefix, backend);
    edge = system.edge;
    attacker = new RedisAttacker(prefix);
    billingQueue = new Queue('agent.billing', { connection: attacker.redis, prefix });
    billingEvents = new QueueEvents('agent.billing', { connection: { url: REDIS_URL }, prefix });
    await billingEvents.waitUntilReady();
  });

  afterEach(() => {
    for (const refund of backend.activeRefunds()) backend.reverseRefund(refund.id);
    backend.reversals = 0;
  });

  afterAll(async () => {
    await Promise.all([billingQueue.close(), billingEvents.close()]);
    await system.close();
    await attacker.close();
    await deleteKeys(prefix);
  });

  const eventsWhen = (runId: string, done: (events: RunEvent[]) => boolean) => system.eventsWhen(runId, done);
  const compensated = (events: RunEvent[]) => events.filter((e): e is Extract<RunEvent, { type: 'action.compensated' }> => e.type === 'action.compensated');

  async function refundedRun(): Promise<string> {
    const run = await edge.start('triage', 'Refund ORD-5001 please, ada@example.com', { principal: ada });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: expect.stringMatching(/RF-\d+/) });
    return run.id;
  }

  /** BullMQ's own retry of a finished job, waiting until it has finished again. */
  async function retryFinished(jobId: string): Promise<void> {
    const job = (await Job.fromId(billingQueue, jobId))!;
    const before = job.finishedOn ?? 0;
    await job.retry('completed');
    await job.waitUntilFinished(billingEvents, 10_000).catch(() => undefined);
    for (;;) {
      const again = await Job.fromId(billingQueue, jobId);
      if (again?.finishedOn && again.finishedOn > before) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('the edge’s genuine order, replayed after the compensation records are deleted: the refund is reversed once', async () => {
    const runId = await refundedRun();
    const started = await edge.rollback(runId, { by: 'ops-1', reason: 'chargeback' });
    await eventsWhen(runId, (e) => e.some((x) => x.type === 'rollback.completed' && x.rollbackId === started.rollbackId));
    expect(backend.reversals).toBe(1);

    const jobId = `rb-${started.rollbackId}-0`;
    const order = (await Job.fromId(billingQueue, jobId))!.data as unknown;
    for (let i = 0; i < 3; i++) {
      await attacker.redis.del(`${prefix}:run:${runId}:compensations`);
      await retryFinished(jobId);
    }
    // The same order under a job id of the attacker's choosing.
    await attacker.redis.del(`${prefix}:run:${runId}:compensations`);
    await attacker.enqueue('billing', `rb-copy-${randomBytes(4).toString('hex')}`, order);
    const events = await eventsWhen(runId, (e) => compensated(e).length === 5);
    expect(backend.reversals).toBe(1);
    expect(compensated(events).map((e) => e.status)).toEqual(['undone', 'already_undone', 'already_undone', 'already_undone', 'already_undone']);
  });

  it('a claim planted or rewritten for the step: the step is reported as attempted and not run again', async () => {
    const runId = await refundedRun();
    const [action] = await edge.transport.store.listActions(runId);
    // The attacker cannot know the step's claim key without the action's key, which is in Redis: it
    // rewrites every claim of billing to an unfinished one of its own making before the rollback.
    const started = await edge.rollback(runId, { by: 'ops-1' });
    await eventsWhen(runId, (e) => e.some((x) => x.type === 'rollback.completed' && x.rollbackId === started.rollbackId));
    for (const key of await attacker.redis.keys(`${prefix}:seen:billing:*`)) {
      const held = (await attacker.redis.get(key))!;
      if (held.includes(`${started.rollbackId}.0`)) await attacker.redis.set(key, held.replace('"output":"undone"', '"output":"failed"'));
    }
    const again = await edge.rollback(runId, { by: 'ops-1' });
    const events = await eventsWhen(runId, (e) => e.some((x) => x.type === 'rollback.completed' && x.rollbackId === again.rollbackId));
    const second = compensated(events).filter((e) => e.rollbackId === again.rollbackId);
    expect(second).toEqual([expect.objectContaining({ callId: action!.callId, status: 'failed', message: expect.stringMatching(/attempted before and is not run again: its claim is not believed/) })]);
    expect(backend.reversals).toBe(1);
  });

  it('a hand-made failure order, with the run’s status set to failed, enqueued twice: refused, nothing reversed', async () => {
    const runId = await refundedRun();
    const [action] = await edge.transport.store.listActions(runId);
    await attacker.redis.hset(`${prefix}:run:${runId}`, 'status', 'failed');
    const order = { rollbackId: 'forged', runId, agent: 'billing', key: action!.key, step: 0, steps: 1, trigger: 'failure', reason: 'it failed', issuedAt: Date.now() };
    // Unsealed, and claiming to be sealed by billing with a MAC of its own making.
    const forged = [order, { ...order, endedBy: 'billing', auth: { kid: 'k1', mac: randomBytes(32).toString('base64url') } }];
    for (const [i, compensate] of forged.entries()) await attacker.enqueue('billing', `rb-forged-${i}-${randomBytes(4).toString('hex')}`, { compensate });
    const events = await eventsWhen(runId, (e) => e.filter((x) => x.type === 'envelope.rejected').length === 2);
    const reasons = events.flatMap((e) => (e.type === 'envelope.rejected' ? [e.reason] : []));
    expect(reasons[0]).toMatch(/rollback order refused: the rollback order is not authentic: it is not sealed by the worker that saw the run end/);
    expect(reasons[1]).toMatch(/rollback order refused: the rollback order is not authentic/);
    expect(compensated(events)).toHaveLength(0);
    expect(backend.reversals).toBe(0);
  });
});
