import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSupportAgents } from '../../examples/support/system.js';
import { EDGE, generateKeys, loadKeyring } from '../../runtime/identity/keyring.js';
import { Runtime } from '../../runtime/runtime.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { createRedis, type RedisClient } from '../../runtime/redis-url.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';

/** Requests of the support example that complete (no approval, no withheld reply). */
export const COMPLETING_REQUESTS = [
  'I was charged twice for order ORD-5001, please refund me. My e-mail is ada@example.com.',
  "My headphones won't pair over bluetooth.",
  'Refund ORD-5002 please, my e-mail is ada@example.com',
  'Please refund my monitor, order ORD-5003. My e-mail is grace@example.com.',
];

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface SupervisorOptions {
  prefix: string;
  keysDir: string;
  workers: number;
  env?: Record<string, string>;
  redisUrl?: string;
}

/** Keeps N chaos-worker processes running: one that dies is started again, as a process manager would. */
export class Supervisor {
  readonly processes: ChildProcess[] = [];
  restarts = 0;
  private stopping = false;

  constructor(private readonly options: SupervisorOptions) {}

  private spawnOne(slot: number): Promise<void> {
    // node itself with tsx as a loader, so SIGKILL reaches the worker and not a wrapper.
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/chaos-worker.ts', this.options.prefix, this.options.keysDir], {
      cwd: root,
      env: { ...process.env, REDIS_URL: this.options.redisUrl ?? REDIS_URL, ...this.options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.processes[slot] = child;
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr = (stderr + String(d)).slice(-4000)));
    child.on('exit', (code, signal) => {
      if (this.stopping) return;
      if (signal !== 'SIGKILL') process.stderr.write(`chaos worker exited (${code ?? signal}): ${stderr}\n`);
      this.restarts += 1;
      setTimeout(() => void this.spawnOne(slot), 100);
    });
    return new Promise((resolve) => child.stdout!.on('data', (d) => String(d).includes('ready') && resolve()));
  }

  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.options.workers }, (_, i) => this.spawnOne(i)));
  }

  /** Resident memory of each live worker, in MB (from /proc). */
  async rssMb(): Promise<number[]> {
    const sizes = await Promise.all(
      this.processes.map(async (p) => {
        const status = await readFile(`/proc/${p.pid}/status`, 'utf8').catch(() => '');
        const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
        return Math.round(kb / 1024);
      }),
    );
    return sizes;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.processes.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            const timer = setTimeout(() => p.kill('SIGKILL'), 3000);
            p.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            p.kill('SIGTERM');
          }),
      ),
    );
  }
}

/** The support example on 2 supervised worker processes with fresh keys, a producer (the edge) and a Redis client. */
export interface SupportCluster {
  prefix: string;
  /** Every component's key files (deleted by `close`). */
  keysDir: string;
  supervisor: Supervisor;
  producer: Runtime;
  redis: RedisClient;
  /** Stops everything and deletes the keys, in Redis and on disk. */
  close(): Promise<void>;
}

export async function startSupportCluster(name: string, env: Record<string, string>, redisUrl = REDIS_URL): Promise<SupportCluster> {
  const prefix = uniquePrefix(name);
  const keysDir = await mkdtemp(join(tmpdir(), `palisade-${name}-keys-`));
  await generateKeys(keysDir, createSupportAgents());
  const supervisor = new Supervisor({ prefix, keysDir, workers: 2, env, redisUrl });
  await supervisor.start();
  const producer = new Runtime({ keys: await loadKeyring(keysDir, [EDGE]), transport: new BullMQTransport({ connection: redisUrl, prefix }) });
  const redis = createRedis(redisUrl);
  return {
    prefix,
    keysDir,
    supervisor,
    producer,
    redis,
    close: async () => {
      await supervisor.stop();
      await producer.close();
      redis.disconnect();
      await deleteKeys(prefix, redisUrl);
      await rm(keysDir, { recursive: true, force: true });
    },
  };
}
