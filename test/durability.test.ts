import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import type { RunEvent } from '../runtime/events.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { PolicySchema } from '../guards/policy/policy.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const root = fileURLToPath(new URL('..', import.meta.url));
// The worker runs as node itself (tsx as a loader), so SIGKILL reaches it and not a wrapper that would orphan it.
const nodeArgs = ['--import', 'tsx'];
const principal = { id: 'user-1', roles: [] };

/**
 * Real worker processes, killed for real, with authenticated envelopes: at-least-once delivery must not
 * become at-least-twice effects, and a redelivery after a crash is not a replay.
 */
describe('durability across worker crashes (real Redis, separate processes)', () => {
  let prefix: string;
  let producer: Runtime;
  let redis: Redis;
  const workers: ChildProcess[] = [];

  function startWorker(agents: string, crash = '', env: Record<string, string> = {}): Promise<ChildProcess> {
    const child = spawn(process.execPath, [...nodeArgs, 'test/fixtures/durable-worker.ts', prefix, agents, crash], {
      cwd: root,
      env: { ...process.env, REDIS_URL, KEYS_DIR: keysDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    workers.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    return new Promise((resolve, reject) => {
      child.stdout!.on('data', (d) => String(d).includes('ready') && resolve(child));
      child.on('exit', (code, signal) => reject(new Error(`worker exited early (${code ?? signal}): ${stderr}`)));
    });
  }

  const exited = (child: ChildProcess) => new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));

  /** Starts the run with a worker of `agent` that kills itself at `crash`, waits for the kill, then starts a healthy worker. */
  async function killedOnceAt<T>(agent: string, crash: string, startRun: () => Promise<T>): Promise<T> {
    const first = await startWorker(agent, crash);
    const run = await startRun();
    await exited(first);
    expect(first.signalCode).toBe('SIGKILL');
    await startWorker(agent);
    return run;
  }

  let keysDir: string;
  beforeAll(async () => {
    keysDir = await mkdtemp(join(tmpdir(), 'palisade-durable-keys-'));
    // The fixture's agent graph, without starting its module's side effects here.
    await generateKeys(keysDir, [
      { name: 'payer', handoffs: [], delegates: [] },
      { name: 'payer2', handoffs: [], delegates: [] },
      { name: 'boss', handoffs: [], delegates: ['slowpoke'] },
      { name: 'slowpoke', handoffs: [], delegates: [] },
      { name: 'refunder', handoffs: [], delegates: [] },
      { name: 'randompayer', handoffs: [], delegates: [] },
    ]);
  });

  beforeEach(async () => {
    prefix = uniquePrefix('durable');
    // The producer is also the approvers' edge: it holds the policy that says who may approve.
    producer = new Runtime({
      keys: await loadKeyring(keysDir, [EDGE]),
      policy: PolicySchema.parse({ version: 1, roles: { finance: ['approve:tool:refund'] } }),
      transport: new BullMQTransport({ connection: REDIS_URL, prefix }),
    });
    redis = new Redis(REDIS_URL);
  });

  afterEach(async () => {
    for (const w of workers.splice(0)) {
      w.kill('SIGKILL');
      await exited(w);
    }
    await producer.close();
    redis.disconnect();
    await deleteKeys(prefix);
  });

  it('a worker killed right after a side effect: the redelivered call reuses the idempotency key, the effect happens once', async () => {
    const run = await killedOnceAt('payer', 'after-effect', () => producer.start('payer', 'pay', { principal }));
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'paid' });

    const executions = await redis.lrange(`${prefix}:executions`, 0, -1);
    expect(executions).toHaveLength(2);
    expect(executions[0]).toBe(executions[1]);
    expect(await redis.keys(`${prefix}:effect:*`)).toHaveLength(1);
  });

  /** A payer whose model names its calls with random ids (as OpenAI and Anthropic do), killed at `crash`; its saved reply is then lost. */
  async function killedAndForgotten(crash: string): Promise<string> {
    const first = await startWorker('randompayer', crash);
    const run = await producer.start('randompayer', 'pay', { principal });
    await exited(first);
    // What a failover that lost the last writes, or an attacker with Redis, would do: the redelivery asks the model again.
    expect(await redis.del(`${prefix}:progress:randompayer:${run.id}`)).toBe(1);
    await startWorker('randompayer');
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'paid' });
    return run.id;
  }

  it('model-chosen call ids, a worker killed right after the payment and its saved reply lost: the model names the call anew, the key stays, the effect happens once', async () => {
    await killedAndForgotten('after-effect');
    const executions = await redis.lrange(`${prefix}:executions`, 0, -1);
    expect(executions).toHaveLength(2);
    expect(executions[0]).toBe(executions[1]);
    expect(await redis.keys(`${prefix}:effect:*`)).toHaveLength(1);
  });

  it('model-chosen call ids, a worker killed once the payment was in the action log and its saved reply lost: the payment is answered from the log, not made again', async () => {
    const runId = await killedAndForgotten('after-action');
    expect(await redis.llen(`${prefix}:executions`)).toBe(1);
    const [action] = await producer.transport.store.listActions(runId);
    const replayed = (await producer.transport.store.listEvents(runId)).map((e) => e.event).filter((e) => e.type === 'tool.called' && e.replayed);
    expect(replayed).toHaveLength(1);
    // Asked again, the model named the same call differently.
    expect((replayed[0] as { callId: string }).callId).not.toBe(action!.callId);
  });

  it('a worker killed after the call was recorded: the redelivery resumes from the checkpoint and does not call the tool again', async () => {
    const first = await startWorker('payer2', 'second-turn');
    const run = await producer.start('payer2', 'pay', { principal });
    await exited(first);
    await startWorker('payer2');
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'paid' });
    expect(await redis.llen(`${prefix}:executions`)).toBe(1);
    const events: RunEvent[] = [];
    for await (const e of run.events()) events.push(e);
    expect(events.filter((e) => e.type === 'agent.started').map((e) => (e as { resumed: boolean }).resumed)).toEqual([false, true]);
  });

  it('a delegating agent holds no worker slot while it waits, and its wait survives a restart', async () => {
    const boss = await startWorker('boss', '', { CONCURRENCY: '1' });
    await startWorker('slowpoke');
    const runs = [await producer.start('boss', 'one', { principal }), await producer.start('boss', 'two', { principal })];

    // With one slot, both runs can only be waiting on their delegates if waiting holds no slot.
    for (const run of runs) {
      for await (const e of run.events({ pollMs: 100 })) if (e.type === 'delegation.started') break;
    }
    boss.kill('SIGKILL');
    await exited(boss);
    await redis.set(`${prefix}:gate`, 'open');
    await startWorker('boss', '', { CONCURRENCY: '1' });
    for (const run of runs) await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'boss got: slow answer' });
  });

  it('a worker killed after it finished a message but before the queue heard: the redelivery returns the same answer, nothing runs again', async () => {
    await redis.set(`${prefix}:gate`, 'open');
    await startWorker('boss');
    const run = await killedOnceAt('slowpoke', 'after-finish', () => producer.start('boss', 'one', { principal }));
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'boss got: slow answer' });
    const events: RunEvent[] = [];
    for await (const e of run.events()) events.push(e);
    expect(events.filter((e) => e.type === 'envelope.rejected')).toEqual([]);
    // The delegate ran once: its redelivery was answered from the finished mark.
    expect(events.filter((e) => e.type === 'agent.started' && e.agent === 'slowpoke')).toHaveLength(1);
  });

  it('approval after a worker restart: the paused run waits in Redis (no worker), resumes in a new process, and the effect happens once even if that one dies mid-call', async () => {
    const first = await startWorker('refunder');
    const run = await producer.start('refunder', 'refund please', { principal });
    for await (const e of run.events({ pollMs: 100 })) if (e.type === 'approval.requested') break;
    const [pending] = await producer.approvals.pending();
    expect(pending!.request).toMatchObject({ runId: run.id, subject: 'refund', arguments: '{"amount":500}', permission: 'approve:tool:refund' });
    // Parked as a delayed job: it holds no worker slot.
    const queue = new Queue('agent.refunder', { connection: redis, prefix });
    // The request is written just before the job is set aside: wait for the move.
    let counts = await queue.getJobCounts('delayed', 'active', 'wait');
    for (let i = 0; i < 50 && counts.delayed === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      counts = await queue.getJobCounts('delayed', 'active', 'wait');
    }
    expect(counts).toEqual({ delayed: 1, active: 0, wait: 0 });

    first.kill('SIGKILL');
    await exited(first);
    await producer.approvals.decide(pending!.request.id, { by: { id: 'fin-1', roles: ['finance'] }, approve: true, note: 'ok' });
    // Woken, but nobody serves the queue yet; the next worker dies right after the refund.
    const second = await startWorker('refunder', 'after-refund');
    await exited(second);
    expect(second.signalCode).toBe('SIGKILL');
    await startWorker('refunder');
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'refund: {"refunded":500}' });
    await queue.close();

    const refunds = await redis.lrange(`${prefix}:refunds`, 0, -1);
    // Called twice (the second worker died after the effect), with one key: one refund.
    expect(refunds).toHaveLength(2);
    expect(new Set(refunds).size).toBe(1);
    expect(await redis.keys(`${prefix}:refund:*`)).toHaveLength(1);
    const events: RunEvent[] = [];
    for await (const e of run.events()) events.push(e);
    const types = events.map((e) => e.type);
    expect(types.filter((t) => t === 'approval.requested')).toHaveLength(1);
    expect(events.find((e) => e.type === 'approval.decided')).toMatchObject({ status: 'approved', by: 'fin-1' });
    expect(events.filter((e) => e.type === 'approval.resolved').every((e) => (e as { outcome: string }).outcome === 'approved')).toBe(true);
    expect(types.indexOf('approval.decided')).toBeLessThan(types.indexOf('tool.called'));
  });
});
