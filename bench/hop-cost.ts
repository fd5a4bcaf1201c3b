/**
 * One system's cost per hop, in a process of its own: `tsx bench/hop-cost.ts <raw|palisade|guarded> [chains]`
 * runs 500 chains to warm up, then `chains` (default 2000) with 64 in flight, and prints one JSON line:
 * chains/s, Node CPU of this process and Redis server CPU, each per hop. `bench/compare.sh` runs it by
 * turns in two commits' trees, so a change is measured against what came before on the same machine.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { deleteKeys } from './redis-probe.js';
import { HOPS, palisadeBullMQ, palisadeGuarded, rawBullMQ, writeChainKeys, type Harness, type ScenarioConfig } from './scenarios.js';

const SYSTEMS = ['raw', 'palisade', 'guarded'] as const;
type System = (typeof SYSTEMS)[number];

const [system = 'guarded', chainsArg = '2000'] = process.argv.slice(2);
if (!SYSTEMS.includes(system as System)) throw new Error(`usage: hop-cost.ts <${SYSTEMS.join('|')}> [chains]`);
const chains = Number(chainsArg);
const config: ScenarioConfig = { redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', concurrency: 8, payload: 'x'.repeat(2048), chainTimeoutMs: 60_000 };
const prefix = `palisade-hopcost-${process.pid}-${Date.now()}`;
const admin = new Redis(config.redisUrl);
const keysDir = await mkdtemp(join(tmpdir(), 'palisade-hopcost-'));

/** Redis's own CPU seconds so far (user + system). */
async function redisCpu(): Promise<number> {
  const text = await admin.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(text)?.[1] ?? NaN);
  return field('used_cpu_sys') + field('used_cpu_user');
}

async function drive(harness: Harness, n: number): Promise<void> {
  let started = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (started++ < n) await harness.runChain();
    }),
  );
}

let harness: Harness | undefined;
try {
  await writeChainKeys(keysDir);
  harness = system === 'raw' ? await rawBullMQ(config, prefix) : system === 'palisade' ? await palisadeBullMQ(config, prefix) : await palisadeGuarded(config, prefix, keysDir);
  await drive(harness, 500);
  const redisBefore = await redisCpu();
  const cpuBefore = process.cpuUsage();
  const t0 = performance.now();
  await drive(harness, chains);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const redisSeconds = (await redisCpu()) - redisBefore;
  const hops = chains * HOPS;
  console.log(
    JSON.stringify({
      system,
      chains,
      chainsPerSec: chains / seconds,
      nodeCpuMsPerHop: (cpu.user + cpu.system) / 1000 / hops,
      redisCpuMsPerHop: (redisSeconds * 1000) / hops,
    }),
  );
} finally {
  await harness?.close();
  await deleteKeys(admin, prefix);
  admin.disconnect();
  await rm(keysDir, { recursive: true, force: true });
}
process.exit(0);
