import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EDGE, generateKeys, loadKeyring } from '../runtime/keyring.js';
import type { RunEvent } from '../runtime/events.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
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

  let keysDir: string;
  beforeAll(async () => {
    keysDir = await mkdtemp(join(tmpdir(), 'palisade-durable-keys-'));
    // The fixture's agent graph, without starting its module's side effects here.
    await generateKeys(keysDir, [
      { name: 'payer', handoffs: [], delegates: [] },
      { name: 'payer2', handoffs: [], delegates: [] },
      { name: 'boss', handoffs: [], delegates: ['slowpoke'] },
      { name: 'slowpoke', handoffs: [], delegates: [] },
    ]);
  });

  beforeEach(async () => {
    prefix = uniquePrefix('durable');
    producer = new Runtime({ keys: await loadKeyring(keysDir, [EDGE]), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
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
    const first = await startWorker('payer', 'after-effect');
    const run = await producer.start('payer', 'pay', { principal });
    await exited(first);
    expect(first.signalCode).toBe('SIGKILL');
    await startWorker('payer');
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'paid' });

    const executions = await redis.lrange(`${prefix}:executions`, 0, -1);
    expect(executions).toHaveLength(2);
    expect(executions[0]).toBe(executions[1]);
    expect(await redis.keys(`${prefix}:effect:*`)).toHaveLength(1);
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
});
