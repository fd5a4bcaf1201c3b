/**
 * Cluster: the guarded chain on the single Redis and on a private 3-master Redis Cluster this section
 * starts, in interleaved rounds, with what an operator sizes a deployment by: throughput, Node and Redis
 * CPU per hop, Redis commands and bytes per hop, how the work spreads over the masters, and the size of
 * the envelope a hop carries.
 */
import calculateSlot from 'cluster-key-slot';
import type { Redis } from 'ioredis';
import { createRedis, masters, type RedisClient } from '../runtime/redis-url.js';
import { Cells } from '../runtime/stores/cells.js';
import type { RedisClusterHandle } from '../test/support/redis-cluster.js';
import { HOPS, palisadeGuarded, type Harness, type ScenarioConfig, type SectionOptions } from './scenarios.js';
import { deleteKeys, diffStats, serverStats, type ServerStats } from './redis-probe.js';
import { drive } from './drive.js';
import { fmt, median, round, table } from './stats.js';

export type ClusterSystemId = 'single' | 'cluster';

const NAMES: Record<ClusterSystemId, string> = { single: 'single Redis', cluster: 'Redis Cluster, 3 masters' };
const MASTERS = 3;
/** Completed jobs read per agent queue (and cell) for the envelope's size. */
const ENVELOPES_PER_QUEUE = 5;
/** Commands shown by name in the report; the rest are in the JSON. */
const TOP_COMMANDS = 10;

export interface ClusterSample {
  system: ClusterSystemId;
  round: number;
  chains: number;
  hops: number;
  elapsedMs: number;
  chainsPerSec: number;
  hopsPerSec: number;
  nodeCpuMsPerHop: number;
  /** INFO deltas over the measured chains, per server (the one, or each master by host:port). */
  servers: Record<string, ServerStats>;
  /** Bytes of the job data (the envelope as stored) of completed jobs, by agent. */
  envelopeBytes: Record<string, number[]>;
}

export interface ClusterMeasured {
  samples: ClusterSample[];
  /** Cells the transport spread the runs over on the cluster (as it pinned them in Redis). */
  cells: number;
  /** Cells on each master (host:port): a master's share of the runs is its cells' share. */
  cellsPerMaster: Record<string, number>;
  /** Worker slots per agent on each system: on a cluster the transport gives each cell's Worker a share, at least 1. */
  workerSlotsPerAgent: Record<ClusterSystemId, number>;
}

/** The section's outcome: measured, or why the cluster could not be started. */
export type ClusterResult = ClusterMeasured | { skipped: string };

export interface ClusterOptions extends SectionOptions {
  /** Hands the cluster's stop to the bench's cleanup (throws if the bench is already stopping). */
  track: (stop: () => Promise<void>) => Promise<void>;
}

/** Starts the test suite's local cluster helper without the SIGTERM listener it installs for vitest. */
async function startCluster(): Promise<RedisClusterHandle> {
  // The helper kills its nodes on SIGTERM and then re-sends the signal, which would end the bench before
  // its own cleanup (keys on the shared Redis) is done. The bench stops the cluster in that cleanup, and
  // the helper's 'exit' hook, which stays, kills the nodes however the process ends.
  const before = new Set(process.listeners('SIGTERM'));
  const { startRedisCluster } = await import('../test/support/redis-cluster.js');
  for (const listener of process.listeners('SIGTERM')) if (!before.has(listener)) process.off('SIGTERM', listener);
  return startRedisCluster({ masters: MASTERS });
}

/** How long cleanup waits for a harness being set up before it stops the cluster anyway. */
const SETUP_GRACE_MS = 15_000;

/** Resolves once `promise` settles, or after `ms`. */
function settled(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    promise.then(done, done);
  });
}

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);

const nodeName = (redis: Redis): string => `${redis.options.host}:${redis.options.port}`;

async function snapshot(servers: Redis[]): Promise<Record<string, ServerStats>> {
  const stats = await Promise.all(servers.map((s) => serverStats(s)));
  return Object.fromEntries(servers.map((s, i) => [nodeName(s), stats[i]!]));
}

/** How many of the `cells` cells under `prefix` each master holds, from the cluster's slot map. */
async function cellsPerMaster(client: RedisClient, prefix: string, cells: number): Promise<Record<string, number>> {
  const ranges = await client.cluster('SLOTS');
  const counts: Record<string, number> = {};
  for (const cell of new Cells(prefix, cells).all) {
    const slot = calculateSlot(`${cell}:x`);
    const owner = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2];
    const node = owner ? `${owner[0]}:${owner[1]}` : 'unassigned';
    counts[node] = (counts[node] ?? 0) + 1;
  }
  return counts;
}

/** The job data of a few completed jobs of every agent queue under `prefix` (every cell's), in bytes. */
async function envelopeBytes(servers: Redis[], prefix: string): Promise<Record<string, number[]>> {
  const bytes: Record<string, number[]> = {};
  for (const server of servers) {
    let cursor = '0';
    do {
      const [next, keys] = await server.scan(cursor, 'MATCH', `${prefix}:*agent.*:completed`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const agent = /:agent\.([^:]+):completed$/.exec(key)?.[1];
        if (!agent) continue;
        const queue = key.slice(0, -':completed'.length);
        for (const id of await server.zrevrange(key, 0, ENVELOPES_PER_QUEUE - 1)) {
          const data = await server.hget(`${queue}:${id}`, 'data');
          if (data !== null) (bytes[agent] ??= []).push(Buffer.byteLength(data));
        }
      }
    } while (cursor !== '0');
  }
  return bytes;
}

export async function benchCluster(options: ClusterOptions): Promise<ClusterResult> {
  const { admin, config, log } = options;
  log(`  cluster: starting a local ${MASTERS}-master Redis Cluster…`);
  let cluster: RedisClusterHandle;
  try {
    cluster = await startCluster();
  } catch (error) {
    // Like Postgres for the peers: a prerequisite of this machine, not a failure of what is measured.
    const skipped = `the local Redis Cluster did not start: ${(error as Error).message.split('\n')[0]}`;
    log(`  cluster: skipped (${skipped})`);
    return { skipped };
  }
  let clusterAdmin: RedisClient | undefined;
  /** A harness being set up when the bench is abandoned: on a stopped cluster its set-up would never end. */
  let settingUp: Promise<unknown> | undefined;
  const stop = async () => {
    // Let a set-up finish (the bench's registry then closes it) before the cluster goes; the client goes
    // first too, as a command of it still waiting on a stopped cluster would keep the process up.
    if (settingUp) await settled(settingUp, SETUP_GRACE_MS);
    clusterAdmin?.disconnect();
    await cluster.stop();
  };
  try {
    await options.track(stop);
    clusterAdmin = createRedis(cluster.url, { maxRetriesPerRequest: 2 });
    clusterAdmin.on('error', () => undefined);
    const systems: Record<ClusterSystemId, { owner: RedisClient; nodes: Redis[]; config: ScenarioConfig }> = {
      single: { owner: admin, nodes: [admin], config },
      cluster: { owner: clusterAdmin, nodes: await masters(clusterAdmin), config: { ...config, redisUrl: cluster.url } },
    };
    log(`  cluster: masters ${systems.cluster.nodes.map(nodeName).join(', ')}`);

    /** Runs `fn` on a fresh guarded harness of `system` under its own prefix, closed and its keys deleted after. */
    const withHarness = async <T>(system: ClusterSystemId, tag: string, fn: (harness: Harness, prefix: string) => Promise<T>): Promise<T> => {
      const { owner, config: systemConfig } = systems[system];
      const prefix = `${options.prefix}-${tag}-${system}`;
      const setup = (async () => options.register(await palisadeGuarded(systemConfig, prefix, options.keysDir)))();
      settingUp = setup;
      const harness = await setup.finally(() => (settingUp = undefined));
      try {
        return await fn(harness, prefix);
      } finally {
        await options.close(harness);
        await deleteKeys(owner, prefix);
      }
    };

    let cells = NaN;
    const measure = (system: ClusterSystemId, roundNo: number) =>
      withHarness(system, `r${roundNo}`, async (harness, prefix): Promise<ClusterSample> => {
        const { owner, nodes } = systems[system];
        await drive(harness, options.warmup, options.inflight);
        // Deltas around the measured chains only: on the shared Redis, other clients' traffic in that window counts too.
        const before = await snapshot(nodes);
        const cpuBefore = process.cpuUsage();
        const { elapsedMs } = await drive(harness, options.chains, options.inflight);
        const cpu = process.cpuUsage(cpuBefore);
        const after = await snapshot(nodes);
        if (system === 'cluster') cells = Number(await owner.get(`${prefix}:cells`));
        const hops = options.chains * harness.hops;
        return {
          system,
          round: roundNo,
          chains: options.chains,
          hops,
          elapsedMs,
          chainsPerSec: (options.chains / elapsedMs) * 1000,
          hopsPerSec: (hops / elapsedMs) * 1000,
          nodeCpuMsPerHop: (cpu.user + cpu.system) / 1000 / hops,
          servers: Object.fromEntries(Object.keys(after).map((node) => [node, diffStats(before[node]!, after[node]!)])),
          envelopeBytes: await envelopeBytes(nodes, prefix),
        };
      });

    log(`  cluster: warm-up pass (${options.warmupPass} chains per system, untimed)…`);
    for (const system of ['single', 'cluster'] as const) await withHarness(system, 'warmup', (harness) => drive(harness, options.warmupPass, options.inflight));
    const samples: ClusterSample[] = [];
    for (let r = 1; r <= options.rounds; r++) {
      // Alternate which system goes first, so drift on a shared machine does not favour one.
      for (const system of r % 2 ? (['single', 'cluster'] as const) : (['cluster', 'single'] as const)) {
        const sample = await measure(system, r);
        samples.push(sample);
        const redisCpu = sum(Object.values(sample.servers).map((s) => s.cpuSeconds));
        log(
          `  round ${r} ${system.padEnd(7)} ${fmt(sample.chainsPerSec).padStart(5)} chains/s  ${fmt(sample.hopsPerSec).padStart(6)} hops/s  ` +
            `Node ${fmt(sample.nodeCpuMsPerHop, 3)} ms/hop  Redis ${fmt((redisCpu * 1000) / sample.hops, 3)} ms/hop`,
        );
      }
    }
    return {
      samples,
      cells,
      cellsPerMaster: await cellsPerMaster(clusterAdmin, options.prefix, cells),
      // The transport splits an agent's concurrency over its cells' Workers, each getting at least 1.
      workerSlotsPerAgent: { single: config.concurrency, cluster: cells * Math.max(1, Math.ceil(config.concurrency / cells)) },
    };
  } finally {
    await stop();
  }
}

/** Per-hop figures of one system: medians over rounds, breakdowns pooled over rounds. */
function summarizeSystem(samples: ClusterSample[]) {
  const perRound = (f: (s: ServerStats) => number) => median(samples.map((s) => sum(Object.values(s.servers).map(f)) / s.hops));
  const hops = sum(samples.map((s) => s.hops));
  const nodes = [...new Set(samples.flatMap((s) => Object.keys(s.servers)))].sort();
  const pooled = (node: string, f: (s: ServerStats) => number) => sum(samples.map((s) => (s.servers[node] ? f(s.servers[node]) : 0)));
  const calls = (s: ServerStats) => sum(Object.values(s.calls));
  const byCommand: Record<string, number> = {};
  for (const s of samples) for (const server of Object.values(s.servers)) for (const [name, n] of Object.entries(server.calls)) byCommand[name] = (byCommand[name] ?? 0) + n;
  const totalCalls = sum(nodes.map((n) => pooled(n, calls)));
  const totalCpu = sum(nodes.map((n) => pooled(n, (s) => s.cpuSeconds)));
  const envelopes: Record<string, number[]> = {};
  for (const s of samples) for (const [agent, bytes] of Object.entries(s.envelopeBytes)) (envelopes[agent] ??= []).push(...bytes);
  const envelopeBytesByAgent = Object.fromEntries(Object.keys(envelopes).sort().map((agent) => [agent, round(sum(envelopes[agent]!) / envelopes[agent]!.length, 0)]));
  return {
    chainsPerSec: round(median(samples.map((s) => s.chainsPerSec)), 1),
    hopsPerSec: round(median(samples.map((s) => s.hopsPerSec)), 1),
    perRoundChainsPerSec: samples.map((s) => round(s.chainsPerSec, 1)),
    nodeCpuMsPerHop: round(median(samples.map((s) => s.nodeCpuMsPerHop)), 4),
    /** Summed over the servers (every master of the cluster). */
    redisCpuMsPerHop: round(perRound((s) => s.cpuSeconds * 1000), 4),
    commandsPerHop: round(perRound(calls), 2),
    bytesInPerHop: round(perRound((s) => s.netInputBytes), 0),
    bytesOutPerHop: round(perRound((s) => s.netOutputBytes), 0),
    commandsPerHopByName: Object.fromEntries(
      Object.entries(byCommand)
        .sort((a, b) => b[1] - a[1])
        .map(([name, n]) => [name, round(n / hops, 3)]),
    ),
    /** Each server's share of the commands and CPU, and its own figures per hop (of all the system's hops). */
    servers: nodes.map((node) => ({
      node,
      commandsShare: round(pooled(node, calls) / totalCalls, 3),
      cpuShare: round(pooled(node, (s) => s.cpuSeconds) / totalCpu, 3),
      commandsPerHop: round(pooled(node, calls) / hops, 2),
      cpuMsPerHop: round((pooled(node, (s) => s.cpuSeconds) * 1000) / hops, 4),
      bytesInPerHop: round(pooled(node, (s) => s.netInputBytes) / hops, 0),
      bytesOutPerHop: round(pooled(node, (s) => s.netOutputBytes) / hops, 0),
    })),
    envelopeBytesByAgent,
  };
}

export function summarizeCluster(result: ClusterMeasured) {
  const of = (system: ClusterSystemId) => result.samples.filter((s) => s.system === system);
  const rounds = [...new Set(result.samples.map((s) => s.round))].sort((a, b) => a - b);
  // Each ratio pairs the two systems' samples of one round, measured back to back.
  const ratios = rounds.flatMap((r) => {
    const single = of('single').find((s) => s.round === r);
    const cluster = of('cluster').find((s) => s.round === r);
    return single && cluster ? [cluster.chainsPerSec / single.chainsPerSec] : [];
  });
  return {
    single: summarizeSystem(of('single')),
    cluster: summarizeSystem(of('cluster')),
    /** Median over rounds of cluster chains/s ÷ single chains/s in the same round. */
    ratio: round(median(ratios), 3),
    perRoundRatio: ratios.map((r) => round(r, 3)),
  };
}

const kb = (bytes: number) => fmt(bytes / 1024, 1);
/** Hops/s one Redis core serves at a CPU cost per hop. */
const perCore = (msPerHop: number) => (msPerHop > 0 ? fmt(1000 / msPerHop) : '—');

export function clusterReport(result: ClusterResult, config: { rounds: number; clusterChains: number; inflight: number; concurrency: number; payloadBytes: number }): string {
  if ('skipped' in result) return `Cluster — skipped: ${result.skipped}`;
  const summary = summarizeCluster(result);
  const systems = (['single', 'cluster'] as const).map((id) => ({ id, ...summary[id] }));
  const { single, cluster } = summary;
  const commands = Object.keys(cluster.commandsPerHopByName)
    .concat(Object.keys(single.commandsPerHopByName))
    .filter((name, i, all) => all.indexOf(name) === i)
    .sort((a, b) => (cluster.commandsPerHopByName[b] ?? 0) - (cluster.commandsPerHopByName[a] ?? 0) || a.localeCompare(b))
    .slice(0, TOP_COMMANDS);
  const envelope = (s: typeof single) => {
    const agents = Object.entries(s.envelopeBytesByAgent);
    return `${agents.map(([agent, bytes]) => `${agent} ${fmt(bytes)} B`).join(', ')} (mean ${fmt(sum(agents.map(([, b]) => b)) / agents.length)} B)`;
  };
  return [
    `Cluster — Palisade guarded (keys, policy, audit) on the single Redis and on a local ${MASTERS}-master Redis Cluster started by the bench (${result.cells} cells), interleaved; median of ${config.rounds} rounds × ${config.clusterChains} chains of ${HOPS} hops, ${config.inflight} chains in flight, concurrency ${config.concurrency} per agent (worker slots per agent: ${result.workerSlotsPerAgent.single} on the single Redis, ${result.workerSlotsPerAgent.cluster} on the cluster, one Worker per cell), ${config.payloadBytes} B payload. Redis figures are INFO deltas around each round's measured chains: on the single Redis they include any other client's traffic in that window; the cluster is the bench's own`,
    '',
    table(
      ['system', 'chains/s', 'hops/s', 'vs single (median of per-round ratios)', 'chains/s per round', 'Node CPU ms/hop', 'Redis CPU ms/hop (all masters)', 'hops/s per Redis core', 'Redis commands/hop (with those scripts run)', 'KB sent to Redis/hop', 'KB back/hop'],
      systems.map((s) => [
        NAMES[s.id],
        fmt(s.chainsPerSec),
        fmt(s.hopsPerSec),
        s.id === 'single' ? '1.00×' : `${fmt(summary.ratio, 2)}×`,
        s.perRoundChainsPerSec.map((v) => fmt(v)).join(' / '),
        fmt(s.nodeCpuMsPerHop, 3),
        fmt(s.redisCpuMsPerHop, 3),
        perCore(s.redisCpuMsPerHop),
        fmt(s.commandsPerHop, 1),
        kb(s.bytesInPerHop),
        kb(s.bytesOutPerHop),
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    `"hops/s per Redis core" = 1000 ÷ Redis CPU ms/hop: the hops/s one Redis core serves at the measured cost, if the hops spread evenly (on a cluster, each master core adds about that many). Envelope (job data of one hop, as stored, mean of completed jobs) — single: ${envelope(single)}; cluster: ${envelope(cluster)}`,
    '',
    `Cluster — each master's share (pooled over rounds; per hop = of all the cluster's hops). A run stays in its cell, so a master's share follows its share of the cells; the busiest master is the cluster's Redis ceiling`,
    '',
    table(
      ['master', 'cells', 'commands %', 'Redis CPU %', 'commands/hop', 'Redis CPU ms/hop', 'KB sent/hop', 'KB back/hop', 'cluster hops/s when this master core is full'],
      cluster.servers.map((s) => [s.node, String(result.cellsPerMaster[s.node] ?? 0), `${fmt(s.commandsShare * 100, 1)}%`, `${fmt(s.cpuShare * 100, 1)}%`, fmt(s.commandsPerHop, 2), fmt(s.cpuMsPerHop, 3), kb(s.bytesInPerHop), kb(s.bytesOutPerHop), perCore(s.cpuMsPerHop)]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    `Redis commands per hop by command (INFO commandstats, pooled over rounds; top ${TOP_COMMANDS} on the cluster). Redis counts the commands a Lua script runs as well as the script's own call (evalsha)`,
    '',
    table(
      ['command', NAMES.single, NAMES.cluster],
      [
        ...commands.map((name) => [name, fmt(single.commandsPerHopByName[name] ?? 0, 2), fmt(cluster.commandsPerHopByName[name] ?? 0, 2)]),
        ['**total**', fmt(sum(Object.values(single.commandsPerHopByName)), 2), fmt(sum(Object.values(cluster.commandsPerHopByName)), 2)],
      ],
      ['l', 'r', 'r'],
    ),
  ].join('\n');
}
