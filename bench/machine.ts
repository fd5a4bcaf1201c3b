/** The machine a bench run measured on (CPU, memory, Node, Redis, library versions, load) and the commit it ran. */
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Redis } from 'ioredis';
import { info } from './redis-probe.js';
import { round } from './stats.js';

function gitDescription(): { commit?: string; dirtyFiles?: number } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean).length;
    return { commit, dirtyFiles: dirty };
  } catch {
    return {};
  }
}

async function packageVersion(name: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

export async function machine(admin: Redis, redisUrl: string) {
  const server = await info(admin, 'server');
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: { version: server.redis_version, mode: server.redis_mode, url: redisUrl.replace(/\/\/[^@/]*@/, '//***@') },
    bullmq: await packageVersion('bullmq'),
    ioredis: await packageVersion('ioredis'),
    loadAverageAtStart: os.loadavg().map((l) => round(l, 2)),
    git: gitDescription(),
  };
}
