/**
 * Scale: guarded Palisade with its workers in 1 and in 2 separate processes (the producer, in the bench
 * process, only starts runs and waits for them), and the Redis memory a run holds while in flight and
 * once finished under the default retention.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { EDGE } from '../runtime/identity/keyring.js';
import { guardedRuntime, type ScenarioConfig } from './scenarios.js';
import { deleteKeys, info } from './redis-probe.js';

const WORKER = fileURLToPath(new URL('./worker-process.ts', import.meta.url));
const TSX = fileURLToPath(new URL('../node_modules/tsx/dist/cli.mjs', import.meta.url));
const principal = { id: 'bench-user', roles: ['bench'] };

export interface ScaleRound {
  processes: number;
  chainsPerSec: number;
}

export interface RunMemory {
  runs: number;
  /** Bytes of `used_memory` per run queued and not yet picked up (no worker running). */
  inFlightBytesPerRun: number;
  /** Bytes per run once every run finished, with what the default retention keeps. */
  finishedBytesPerRun: number;
}

function startWorker(prefix: string, keysDir: string, concurrency: number, redisUrl: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [TSX, WORKER, prefix, keysDir, String(concurrency)], {
    env: { ...process.env, REDIS_URL: redisUrl },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`a bench worker process exited with ${code} before it was ready`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve(child);
    });
  });
}

async function stopWorkers(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.removeAllListeners('exit');
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
        }),
    ),
  );
}

/** Runs `n` chains with at most `inflight` at once through a producer-only runtime. */
async function driveRuns(start: () => Promise<{ result(o: { timeoutMs: number }): Promise<unknown> }>, n: number, inflight: number, timeoutMs: number): Promise<number> {
  let next = 0;
  const lane = async () => {
    while (next < n) {
      next += 1;
      const run = await start();
      await run.result({ timeoutMs });
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(inflight, n) }, lane));
  return (n / (performance.now() - t0)) * 1000;
}

export async function benchScale(options: {
  admin: Redis;
  config: ScenarioConfig;
  keysDir: string;
  prefix: string;
  chains: number;
  inflight: number;
  rounds: number;
  warmup: number;
  log: (line: string) => void;
}): Promise<{ rounds: ScaleRound[]; memory: RunMemory }> {
  const { admin, config, keysDir, log } = options;
  const rounds: ScaleRound[] = [];
  for (let r = 1; r <= options.rounds; r++) {
    for (const processes of r % 2 ? [1, 2] : [2, 1]) {
      const prefix = `${options.prefix}-r${r}-p${processes}`;
      const producer = await guardedRuntime(config, prefix, keysDir, [EDGE]);
      // The same total worker concurrency either way: the processes split it.
      const children = await Promise.all(Array.from({ length: processes }, () => startWorker(prefix, keysDir, Math.ceil(config.concurrency / processes), config.redisUrl)));
      try {
        const start = () => producer.start('a', config.payload, { principal });
        await driveRuns(start, options.warmup, options.inflight, config.chainTimeoutMs);
        const rate = await driveRuns(start, options.chains, options.inflight, config.chainTimeoutMs);
        rounds.push({ processes, chainsPerSec: rate });
        log(`  round ${r} guarded, ${processes} worker process${processes > 1 ? 'es' : ''}: ${rate.toFixed(0)} chains/s`);
      } finally {
        await stopWorkers(children);
        await producer.close({ timeoutMs: 5000 });
        await deleteKeys(admin, prefix);
      }
    }
  }
  const memory = await runMemory(options);
  return { rounds, memory };
}

async function usedMemory(admin: Redis): Promise<number> {
  return Number((await info(admin, 'memory')).used_memory);
}

/** Starts runs with no worker up (they wait in the queue), then lets one worker process finish them all. */
async function runMemory(options: { admin: Redis; config: ScenarioConfig; keysDir: string; prefix: string; chains: number }): Promise<RunMemory> {
  const { admin, config, keysDir } = options;
  const prefix = `${options.prefix}-memory`;
  const producer = await guardedRuntime(config, prefix, keysDir, [EDGE]);
  const runs = options.chains;
  let children: ChildProcess[] = [];
  try {
    const before = await usedMemory(admin);
    const started = [];
    for (let i = 0; i < runs; i++) started.push(await producer.start('a', config.payload, { principal }));
    const queued = await usedMemory(admin);
    children = [await startWorker(prefix, keysDir, config.concurrency, config.redisUrl)];
    await Promise.all(started.map((run) => run.result({ timeoutMs: config.chainTimeoutMs * 4 })));
    const finished = await usedMemory(admin);
    return { runs, inFlightBytesPerRun: (queued - before) / runs, finishedBytesPerRun: (finished - before) / runs };
  } finally {
    await stopWorkers(children);
    await producer.close({ timeoutMs: 5000 });
    await deleteKeys(admin, prefix);
  }
}
