import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';

/**
 * A throwaway Redis Cluster of local redis-server processes, for tests that must run against real
 * slot routing (hash tags, cross-slot errors, MOVED) rather than a single node.
 */

export interface RedisClusterOptions {
  /** At least 3: `redis-cli --cluster create` refuses fewer. Defaults to 3. */
  masters?: number;
}

export interface RedisClusterHandle {
  readonly ports: number[];
  readonly nodes: Array<{ host: string; port: number }>;
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` */
  readonly url: string;
  /** Per port: lowercased command name (`set`, `evalsha`, `cluster|slots`) to calls since the last reset. */
  commandStats(): Promise<Map<number, Record<string, number>>>;
  /** CONFIG RESETSTAT on every node. */
  resetStats(): Promise<void>;
  /** Stops every node and removes the temp dir. Safe to call more than once. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const SLOTS = 16384;
// Each node also listens on its cluster bus port, fixed by Redis at port + 10000.
const BUS_PORT_OFFSET = 10000;
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 3000;
const LOG_TAIL_LINES = 20;

const execFileAsync = promisify(execFile);

// A test process that ends without calling stop() must not leave redis-servers behind.
const emergencyStops = new Set<() => void>();
const stopAllNow = (): void => {
  for (const stopNow of emergencyStops) stopNow();
};
process.on('exit', stopAllNow);
// Vitest's forks pool ends its workers with SIGTERM, which skips 'exit'. Once this listener is gone,
// re-sending the signal ends the process just as it would have without it.
process.once('SIGTERM', () => {
  stopAllNow();
  process.kill(process.pid, 'SIGTERM');
});

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const portIsFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });

/**
 * Ports whose bus ports are free too. Both stay below the kernel's ephemeral range (32768+ on Linux),
 * so outgoing connections cannot grab them between this check and redis-server binding them; the
 * random base keeps test files that start clusters in parallel apart.
 */
async function pickPorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  const base = 10_000 + Math.floor(Math.random() * 12_000);
  for (let port = base; port < 22_000 && ports.length < count; port++) {
    if ((await portIsFree(port)) && (await portIsFree(port + BUS_PORT_OFFSET))) ports.push(port);
  }
  if (ports.length < count) throw new Error(`found only ${ports.length} of ${count} free port pairs for a Redis Cluster from ${base}`);
  return ports;
}

async function requireBinary(name: string): Promise<void> {
  try {
    await execFileAsync(name, ['--version']);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${name} is not installed (not found on PATH); it is needed to run a local Redis Cluster for tests`);
    throw error;
  }
}

/** Runs `fn` on a fresh single-node connection, closed afterwards. Fails fast rather than retrying. */
async function withNode<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis({ host: HOST, port, lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  // Failures reach the caller through connect() or the command; this only silences ioredis' own logging.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

const slotsCovered = (slots: Array<[number, number, ...unknown[]]>): number => slots.reduce((sum, [start, end]) => sum + end - start + 1, 0);

function parseCommandStats(info: string): Record<string, number> {
  const stats: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) stats[match[1]!.toLowerCase()] = Number(match[2]);
  return stats;
}

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) throw new Error(`a Redis Cluster needs at least 3 masters, got ${masters}`);
  await requireBinary('redis-server');
  await requireBinary('redis-cli');

  const ports = await pickPorts(masters);
  const dir = await mkdtemp(join(tmpdir(), 'palisade-redis-cluster-'));
  const logPath = (port: number): string => join(dir, `redis-${port}.log`);
  const children: ChildProcess[] = [];

  const stopNow = (): void => {
    for (const child of children) if (isRunning(child)) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  emergencyStops.add(stopNow);

  const stopChild = async (child: ChildProcess): Promise<void> => {
    if (!isRunning(child)) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    try {
      await exited;
    } finally {
      clearTimeout(killer);
    }
  };
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await Promise.all(children.map(stopChild));
      await rm(dir, { recursive: true, force: true });
      emergencyStops.delete(stopNow);
    })();
    return stopping;
  };

  const logTails = async (): Promise<string> => {
    const tails = await Promise.all(
      ports.map(async (port) => {
        const log = await readFile(logPath(port), 'utf8').catch(() => '(no log)');
        return `--- ${HOST}:${port} (last ${LOG_TAIL_LINES} log lines) ---\n${log.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n')}`;
      }),
    );
    return tails.join('\n');
  };
  const fail = async (message: string): Promise<never> => {
    throw new Error(`Redis Cluster on ports ${ports.join(', ')} failed to start: ${message}\n${await logTails()}`);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  /** Polls until `ready` holds; gives up early if a node died, since it will never hold then. */
  const waitUntil = async (what: string, ready: () => Promise<boolean>): Promise<void> => {
    for (;;) {
      const dead = children.find((child) => !isRunning(child));
      if (dead) await fail(`redis-server on port ${ports[children.indexOf(dead)]} exited (${dead.exitCode ?? dead.signalCode}) while waiting for ${what}`);
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) await fail(`timed out after ${START_TIMEOUT_MS} ms waiting for ${what}`);
      await delay(100);
    }
  };

  try {
    for (const port of ports) {
      const log = openSync(logPath(port), 'a');
      try {
        const args = [
          ...['--port', String(port), '--bind', HOST],
          ...['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '5000'],
          ...['--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'],
        ];
        const child = spawn('redis-server', args, { stdio: ['ignore', log, log] });
        // A failed spawn sets exitCode, which waitUntil reports with the logs; this only keeps the event from throwing.
        child.on('error', () => undefined);
        children.push(child);
      } finally {
        closeSync(log);
      }
    }

    await waitUntil('every node to answer PING', async () => {
      const answers = await Promise.all(ports.map((port) => withNode(port, (redis) => redis.ping())));
      return answers.every((answer) => answer === 'PONG');
    });

    const addresses = ports.map((port) => `${HOST}:${port}`);
    try {
      await execFileAsync('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], { timeout: Math.max(deadline - Date.now(), 1000) });
    } catch (error) {
      const { stdout, stderr, message } = error as { stdout?: string; stderr?: string; message: string };
      await fail(`redis-cli --cluster create failed: ${message}\n${stdout ?? ''}${stderr ?? ''}`);
    }

    // redis-cli returns once the nodes agree on slots, but a master keeps cluster_state:fail for about 2 s after
    // it started, and other nodes can learn slot owners over the bus later still; each node must say so itself.
    await waitUntil(`cluster_state:ok and all ${SLOTS} slots on every node`, async () => {
      const views = await Promise.all(
        ports.map((port) => withNode(port, async (redis) => ({ info: await redis.cluster('INFO'), slots: await redis.cluster('SLOTS') }))),
      );
      return views.every(({ info, slots }) => /^cluster_state:ok\r?$/m.test(info) && slotsCovered(slots) === SLOTS);
    });
  } catch (error) {
    await stop();
    throw error;
  }

  const nodes = ports.map((port) => ({ host: HOST, port }));
  return {
    ports,
    nodes,
    url: `redis+cluster://${nodes.map(({ host, port }) => `${host}:${port}`).join(',')}`,
    async commandStats() {
      const stats = await Promise.all(ports.map((port) => withNode(port, async (redis) => parseCommandStats(await redis.info('commandstats')))));
      return new Map(ports.map((port, i) => [port, stats[i]!]));
    },
    async resetStats() {
      await Promise.all(ports.map((port) => withNode(port, (redis) => redis.config('RESETSTAT'))));
    },
    stop,
  };
}
