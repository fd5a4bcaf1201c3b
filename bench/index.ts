/**
 * `npm run bench`: what Palisade's runtime costs over raw BullMQ, measured in one run on one Redis and
 * reported as ratios against the baseline measured in the same run. See BENCHMARKS.md.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { deleteKeys, diffStats, info, installCommandCounter, serverStats, startCounting, stopCounting, type CommandCounts, type ServerStats } from './redis-probe.js';
import { HOPS, palisadeBullMQ, palisadeEmbedded, palisadeGuarded, rawBullMQ, writeChainKeys, type Harness, type ScenarioConfig } from './scenarios.js';
import { benchScale } from './scale.js';
import { fmt, median, percentile, round, table } from './stats.js';
import { benchPipeline } from './pipeline.js';
import { benchScanners } from './scanners.js';
import { startOtlpReceiver } from './otlp-receiver.js';
import { setupTracing } from '../tracing/setup.js';

const num = (name: string, fallback: number): number => {
  const value = Number(process.env[name]);
  return process.env[name] !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
};

const config = {
  redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  /** Rounds of (raw, Palisade) measured back to back, the order alternating each round. */
  rounds: num('BENCH_ROUNDS', 5),
  /** Chains per system per round, all started at once through the in-flight bound. */
  chains: num('BENCH_CHAINS', 1000),
  /** Chains in flight at most (a semaphore on the producer side). */
  inflight: num('BENCH_INFLIGHT', 64),
  /** Worker concurrency per queue (per agent), the same for raw and Palisade. */
  concurrency: num('BENCH_CONCURRENCY', 8),
  /** Untimed chains per system before round 1 (JIT warm-up of ioredis, BullMQ, zod, the runtime). */
  warmupPass: num('BENCH_WARMUP_PASS', 1000),
  /** Untimed chains after each set-up (connections, Lua script caches). */
  warmup: num('BENCH_WARMUP', 50),
  /** Chains run one at a time per system per round, for unloaded hop latency. */
  serialChains: num('BENCH_SERIAL', 40),
  /** Chains per Redis command-count probe (after the timed rounds). */
  probeChains: num('BENCH_PROBE', 100),
  payloadBytes: num('BENCH_PAYLOAD_BYTES', 2048),
  chainTimeoutMs: 60_000,
  totalTimeoutMs: num('BENCH_TIMEOUT_MS', 600_000),
};

type SystemId = 'raw' | 'palisade' | 'keys' | 'policy' | 'guarded' | 'embedded';
const SYSTEMS: readonly SystemId[] = ['raw', 'palisade', 'keys', 'policy', 'guarded', 'embedded'];
const NAMES: Record<SystemId, string> = {
  raw: 'raw BullMQ (baseline)',
  palisade: 'Palisade, no guards',
  keys: 'Palisade, link keys only',
  policy: 'Palisade, policy only',
  guarded: 'Palisade guarded (keys, policy, audit)',
  embedded: 'Palisade embedded (no Redis)',
};
type Mode = 'load' | 'serial';

const started = new Date();
const basePrefix = `palisade-bench-${randomBytes(4).toString('hex')}`;
/** Every key prefix this run used: all are swept at the end, also on failure. */
const prefixes: string[] = [];
const openHarnesses = new Set<Harness>();
const log = (line: string) => process.stderr.write(`${line}\n`);

// A ~2 KB text: the user message of a Palisade run, the body of a raw job.
const sentence = 'Please look into my order and route this request to whoever can resolve it; details follow. ';
const payload = sentence.repeat(Math.ceil(config.payloadBytes / sentence.length)).slice(0, config.payloadBytes);

const scenario: ScenarioConfig = { redisUrl: config.redisUrl, concurrency: config.concurrency, payload, chainTimeoutMs: config.chainTimeoutMs };

/** Link keys of the edge and the chain's agents, for the guarded system (a temporary folder). */
let keysDir: string | undefined;

/** Set once the bench gives up (failure, timeout, signal): nothing new may be opened after cleanup. */
let stopping = false;

async function open(system: SystemId, prefix: string | undefined): Promise<Harness> {
  if (stopping) throw new Error('the bench is stopping');
  if (prefix) prefixes.push(prefix);
  const harness =
    system === 'raw'
      ? await rawBullMQ(scenario, prefix!)
      : system === 'palisade'
        ? await palisadeBullMQ(scenario, prefix!)
        : system === 'guarded'
          ? await palisadeGuarded(scenario, prefix!, keysDir!)
          : system === 'keys' || system === 'policy'
            ? await palisadeGuarded(scenario, prefix!, keysDir!, [system])
            : await palisadeEmbedded(scenario);
  openHarnesses.add(harness);
  // Opened while cleanup ran: close it here, as cleanup no longer will.
  if (stopping) {
    await close(harness);
    throw new Error('the bench is stopping');
  }
  return harness;
}

async function close(harness: Harness): Promise<void> {
  if (!openHarnesses.delete(harness)) return;
  await harness.close();
}

/** Runs `n` chains with at most `inflight` at once; latency of each chain in ms. */
async function drive(harness: Harness, n: number, inflight: number): Promise<{ elapsedMs: number; latencies: number[] }> {
  let next = 0;
  let failed = false;
  const latencies: number[] = [];
  const lane = async () => {
    while (!failed && next < n) {
      next += 1;
      const t = performance.now();
      try {
        await harness.runChain();
      } catch (error) {
        failed = true;
        throw error;
      }
      latencies.push(performance.now() - t);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(inflight, n) }, lane));
  return { elapsedMs: performance.now() - t0, latencies };
}

interface Sample {
  system: SystemId;
  round: number;
  mode: Mode;
  chains: number;
  elapsedMs: number;
  chainsPerSec: number;
  hopsPerSec: number;
  /** Per-chain latency ÷ hops, ms. */
  hopLatencyMs: number[];
  nodeCpuMsPerHop: number;
  /** Of the whole Redis server (other clients of a shared Redis included). */
  redisCpuMsPerHop?: number;
  eventLoopUtilization: number;
}

async function measure(admin: Redis, harness: Harness, system: SystemId, roundNo: number, mode: Mode): Promise<Sample> {
  const n = mode === 'load' ? config.chains : config.serialChains;
  const inflight = mode === 'load' ? config.inflight : 1;
  const usesRedis = system !== 'embedded';
  const redisCpuSeconds = async () => {
    const cpu = await info(admin, 'cpu');
    return Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys);
  };
  const redisBefore = usesRedis ? await redisCpuSeconds() : 0;
  const cpuBefore = process.cpuUsage();
  const eluBefore = performance.eventLoopUtilization();
  const { elapsedMs, latencies } = await drive(harness, n, inflight);
  const cpu = process.cpuUsage(cpuBefore);
  const elu = performance.eventLoopUtilization(eluBefore);
  const redisAfter = usesRedis ? await redisCpuSeconds() : undefined;
  const hops = n * harness.hops;
  const sample: Sample = {
    system,
    round: roundNo,
    mode,
    chains: n,
    elapsedMs,
    chainsPerSec: (n / elapsedMs) * 1000,
    hopsPerSec: (hops / elapsedMs) * 1000,
    hopLatencyMs: latencies.map((l) => l / harness.hops),
    nodeCpuMsPerHop: (cpu.user + cpu.system) / 1000 / hops,
    eventLoopUtilization: elu.utilization,
  };
  if (redisAfter !== undefined) sample.redisCpuMsPerHop = ((redisAfter - redisBefore) * 1000) / hops;
  return sample;
}

type ProbeMode = Mode | 'attributed';

interface Probe {
  system: SystemId;
  mode: ProbeMode;
  chains: number;
  hops: number;
  client: CommandCounts;
  server: ServerStats;
}

/** Counts Redis commands (client side, and INFO commandstats deltas server side) for `n` chains. */
async function probe(admin: Redis, harness: Harness, system: SystemId, mode: ProbeMode, n: number): Promise<Probe> {
  const before = await serverStats(admin);
  // Attribution captures a stack per round trip: a separate pass, so it does not skew the plain counts.
  startCounting({ attribute: mode === 'attributed' });
  let client: CommandCounts;
  try {
    await drive(harness, n, mode === 'serial' ? 1 : config.inflight);
  } finally {
    client = stopCounting();
  }
  const after = await serverStats(admin);
  return { system, mode, chains: n, hops: n * harness.hops, client, server: diffStats(before, after) };
}

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

async function machine(admin: Redis) {
  const server = await info(admin, 'server');
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: { version: server.redis_version, mode: server.redis_mode, url: config.redisUrl.replace(/\/\/[^@/]*@/, '//***@') },
    bullmq: await packageVersion('bullmq'),
    ioredis: await packageVersion('ioredis'),
    loadAverageAtStart: os.loadavg().map((l) => round(l, 2)),
    git: gitDescription(),
  };
}

const latencyStats = (values: number[]) => ({
  n: values.length,
  p50: round(percentile(values, 50), 3),
  p90: round(percentile(values, 90), 3),
  p99: round(percentile(values, 99), 3),
  max: round(Math.max(...values), 3),
});

function summarize(samples: Sample[], probes: Probe[]) {
  const of = (system: SystemId, mode: Mode) => samples.filter((s) => s.system === system && s.mode === mode);
  const rounds = [...new Set(samples.map((s) => s.round))].sort((a, b) => a - b);
  // Ratios pair the raw and Palisade samples of one round, measured back to back.
  const ratio = (system: SystemId) =>
    rounds.flatMap((r) => {
      const raw = of('raw', 'load').find((s) => s.round === r);
      const other = of(system, 'load').find((s) => s.round === r);
      return raw && other ? [other.chainsPerSec / raw.chainsPerSec] : [];
    });
  const systems = SYSTEMS.map((system) => {
    const load = of(system, 'load');
    const serial = of(system, 'serial');
    const ratios = ratio(system);
    return {
      system,
      chainsPerSec: round(median(load.map((s) => s.chainsPerSec)), 1),
      hopsPerSec: round(median(load.map((s) => s.hopsPerSec)), 1),
      perRoundChainsPerSec: load.map((s) => round(s.chainsPerSec, 1)),
      /** Median over rounds of (this system's chains/s ÷ raw chains/s in the same round). */
      ratioVsRaw: round(median(ratios), 3),
      perRoundRatioVsRaw: ratios.map((r) => round(r, 3)),
      hopLatencyMs: {
        load: latencyStats(load.flatMap((s) => s.hopLatencyMs)),
        serial: latencyStats(serial.flatMap((s) => s.hopLatencyMs)),
      },
      nodeCpuMsPerHop: round(median(load.map((s) => s.nodeCpuMsPerHop)), 4),
      redisCpuMsPerHop: system === 'embedded' ? undefined : round(median(load.map((s) => s.redisCpuMsPerHop ?? NaN)), 4),
      eventLoopUtilization: round(median(load.map((s) => s.eventLoopUtilization)), 3),
    };
  });
  const redis = probes.map((p) => ({
    system: p.system,
    mode: p.mode,
    chains: p.chains,
    hops: p.hops,
    client: {
      commandsPerHop: round(p.client.totalCommands / p.hops, 2),
      roundTripsPerHop: round(p.client.roundTrips / p.hops, 2),
      connectionsUsed: p.client.connections,
      perHop: Object.fromEntries(Object.entries(p.client.commands).map(([k, v]) => [k, round(v / p.hops, 2)])),
      totals: p.client.commands,
      ...(p.client.sites
        ? {
            roundTripsPerHopBySite: Object.fromEntries(
              Object.entries(p.client.sites).map(([site, byCommand]) => [
                site,
                Object.fromEntries(Object.entries(byCommand).map(([k, v]) => [k, round(v / p.hops, 2)])),
              ]),
            ),
          }
        : {}),
    },
    server: {
      note: 'INFO commandstats / stats / cpu deltas: includes any other client of this Redis during the window',
      callsPerHop: round(Object.values(p.server.calls).reduce((a, b) => a + b, 0) / p.hops, 2),
      perHop: Object.fromEntries(Object.entries(p.server.calls).map(([k, v]) => [k, round(v / p.hops, 2)])),
      newConnectionsPerChain: round(p.server.connectionsReceived / p.chains, 2),
      redisCpuMsPerHop: round((p.server.cpuSeconds * 1000) / p.hops, 4),
    },
  }));
  return { systems, redis };
}

type Summary = ReturnType<typeof summarize>;

const signed = (n: number) => `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n), 2)}`;

function report(summary: Summary): string {
  const sys = (id: SystemId) => summary.systems.find((s) => s.system === id)!;
  const raw = sys('raw');
  const pal = sys('palisade');
  const grd = sys('guarded');
  const out: string[] = [];
  out.push(
    `Throughput — median of ${config.rounds} rounds × ${config.chains} chains of ${HOPS} hops, ${config.inflight} chains in flight, concurrency ${config.concurrency} per queue, ${config.payloadBytes} B payload`,
    '',
    table(
      ['system', 'chains/s', 'hops/s', 'vs raw (median of per-round ratios)', 'chains/s per round'],
      summary.systems.map((s) => [
        NAMES[s.system],
        fmt(s.chainsPerSec),
        fmt(s.hopsPerSec),
        s.system === 'raw' ? '1.00×' : `${fmt(s.ratioVsRaw, 2)}×${s.system === 'embedded' ? ' (for scale)' : ` (${fmt(1 / s.ratioVsRaw, 1)}× slower)`}`,
        s.perRoundChainsPerSec.map((v) => fmt(v)).join(' / '),
      ]),
      ['l', 'r', 'r', 'r', 'r'],
    ),
    '',
    `Hop latency — per-chain end-to-end latency ÷ ${HOPS} hops, ms (all rounds pooled). "load": the throughput runs above; "serial": one chain at a time (${config.serialChains} per round)`,
    '',
    table(
      ['system', 'load p50', 'load p99', 'serial p50', 'serial p99'],
      [
        ...summary.systems.map((s) => [NAMES[s.system], fmt(s.hopLatencyMs.load.p50, 2), fmt(s.hopLatencyMs.load.p99, 2), fmt(s.hopLatencyMs.serial.p50, 2), fmt(s.hopLatencyMs.serial.p99, 2)]),
        ...[pal, grd].map((s) => [`${NAMES[s.system]} − raw`, ...(['load', 'serial'] as const).flatMap((m) => (['p50', 'p99'] as const).map((q) => signed(s.hopLatencyMs[m][q] - raw.hopLatencyMs[m][q])))]),
      ],
      ['l', 'r', 'r', 'r', 'r'],
    ),
  );
  const load = (id: SystemId) => summary.redis.find((p) => p.system === id && p.mode === 'load');
  const rawProbe = load('raw');
  const palProbe = load('palisade');
  const grdProbe = load('guarded');
  out.push(
    '',
    'Cost per hop under load (Node CPU: this process, producer and workers; Redis CPU: the whole server)',
    '',
    table(
      ['system', 'Node CPU ms/hop', 'Redis CPU ms/hop', 'event loop busy', 'Redis commands/hop', 'round trips/hop', 'new connections/chain'],
      summary.systems.map((s) => {
        const p = load(s.system);
        return [
          NAMES[s.system],
          fmt(s.nodeCpuMsPerHop, 3),
          s.redisCpuMsPerHop === undefined ? '—' : fmt(s.redisCpuMsPerHop, 3),
          `${fmt(s.eventLoopUtilization * 100)}%`,
          p ? fmt(p.client.commandsPerHop, 1) : '—',
          p ? fmt(p.client.roundTripsPerHop, 1) : '—',
          p ? fmt(p.server.newConnectionsPerChain, 2) : '—',
        ];
      }),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    'What each protection adds to Palisade with no guards (the audit log is on in all of them), per hop under load',
    '',
    table(
      ['protection', 'Node CPU ms/hop added', 'Redis CPU ms/hop added', 'chains/s vs no guards'],
      (['keys', 'policy', 'guarded'] as const).map((id) => {
        const s = sys(id);
        return [
          id === 'guarded' ? 'link keys and policy (guarded)' : id === 'keys' ? 'link keys (MACs on envelopes, checkpoints, audit records)' : 'policy (every guard, Cedar, content scanners)',
          signed(s.nodeCpuMsPerHop - pal.nodeCpuMsPerHop),
          s.redisCpuMsPerHop === undefined || pal.redisCpuMsPerHop === undefined ? '—' : signed(s.redisCpuMsPerHop - pal.redisCpuMsPerHop),
          `${fmt(s.chainsPerSec / pal.chainsPerSec, 2)}×`,
        ];
      }),
      ['l', 'r', 'r', 'r'],
    ),
    '',
    "What bounds the ratio. Raw BullMQ keeps both Node and Redis busy on this machine, so a system reaches a ratio r only if its Node CPU and its Redis CPU per hop are each at most 1/r of raw's. The ceilings are the hops/s one whole core of each would allow at the measured cost per hop, over raw's measured hops/s: the measured ratio is at most the smaller",
    '',
    table(
      ['system', 'Node CPU per hop ÷ raw', 'Redis CPU per hop ÷ raw', 'ceiling from Node (1 core)', 'ceiling from Redis (1 core)', 'measured'],
      summary.systems
        .filter((s) => s.system !== 'raw' && s.system !== 'embedded')
        .map((s) => {
          const ceiling = (msPerHop: number | undefined) => (msPerHop === undefined || !(msPerHop > 0) ? '—' : `${fmt(1000 / msPerHop / raw.hopsPerSec, 2)}×`);
          return [
            NAMES[s.system],
            `${fmt(s.nodeCpuMsPerHop / raw.nodeCpuMsPerHop, 1)}×`,
            s.redisCpuMsPerHop === undefined || raw.redisCpuMsPerHop === undefined ? '—' : `${fmt(s.redisCpuMsPerHop / raw.redisCpuMsPerHop, 1)}×`,
            ceiling(s.nodeCpuMsPerHop),
            ceiling(s.redisCpuMsPerHop),
            `${fmt(s.ratioVsRaw, 2)}×`,
          ];
        }),
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  if (rawProbe && palProbe && grdProbe) {
    const names = [...new Set([...Object.keys(grdProbe.client.perHop), ...Object.keys(palProbe.client.perHop), ...Object.keys(rawProbe.client.perHop)])];
    names.sort((a, b) => (grdProbe.client.perHop[b] ?? 0) - (grdProbe.client.perHop[a] ?? 0) || a.localeCompare(b));
    out.push(
      '',
      `Redis commands per hop by command, under load (client-side count over ${palProbe.chains} chains; MULTI…EXEC and pipelines are one round trip)`,
      '',
      table(
        ['command', 'raw BullMQ', 'Palisade', 'Palisade guarded'],
        [
          ...names.map((n) => [n, ...[rawProbe, palProbe, grdProbe].map((p) => fmt(p.client.perHop[n] ?? 0, 2))]),
          ['**total commands**', ...[rawProbe, palProbe, grdProbe].map((p) => fmt(p.client.commandsPerHop, 2))],
          ['**round trips**', ...[rawProbe, palProbe, grdProbe].map((p) => fmt(p.client.roundTripsPerHop, 2))],
        ],
        ['l', 'r', 'r', 'r'],
      ),
    );
  }
  const attributed = summary.redis.find((p) => p.system === 'guarded' && p.mode === 'attributed');
  const sites = attributed?.client.roundTripsPerHopBySite;
  if (attributed && sites) {
    const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
    out.push(
      '',
      `Palisade guarded: round trips per hop by call site (stack of each command, ${attributed.chains} chains; a site's pipeline is named by its first command)`,
      '',
      table(
        ['call site', 'round trips/hop', 'commands'],
        [
          ...Object.entries(sites).map(([site, byCommand]) => [
            site,
            fmt(sum(byCommand), 2),
            Object.entries(byCommand)
              .map(([c, v]) => `${c} ${fmt(v, 2)}`)
              .join(', '),
          ]),
          ['**total**', fmt(attributed.client.roundTripsPerHop, 2), ''],
        ],
        ['l', 'r', 'l'],
      ),
    );
  }
  return out.join('\n');
}

async function main(admin: Redis): Promise<void> {
  installCommandCounter();
  keysDir = await mkdtemp(join(os.tmpdir(), 'palisade-bench-keys-'));
  await writeChainKeys(keysDir);
  const description = await machine(admin);
  log(`bench: ${description.cpuModel}, ${description.cores} cores, node ${description.node}, redis ${description.redis.version}; prefix ${basePrefix}`);
  const samples: Sample[] = [];
  const probes: Probe[] = [];

  const runSystem = async (system: SystemId, roundNo: number) => {
    const harness = await open(system, system === 'embedded' ? undefined : `${basePrefix}-r${roundNo}-${system}`);
    try {
      await drive(harness, config.warmup, config.inflight);
      const load = await measure(admin, harness, system, roundNo, 'load');
      const serial = await measure(admin, harness, system, roundNo, 'serial');
      samples.push(load, serial);
      log(
        `  round ${roundNo} ${system.padEnd(8)} ${fmt(load.chainsPerSec).padStart(6)} chains/s  ${fmt(load.hopsPerSec).padStart(6)} hops/s  ` +
          `serial p50 ${fmt(percentile(serial.hopLatencyMs, 50), 2)} ms/hop`,
      );
    } finally {
      await close(harness);
      const prefix = prefixes[prefixes.length - 1];
      if (system !== 'embedded' && prefix) await deleteKeys(admin, prefix);
    }
  };

  // An untimed pass over every system first: round 1 would otherwise pay for JIT warm-up of whichever goes first.
  log(`  warm-up pass (${config.warmupPass} chains per system, untimed)…`);
  for (const system of SYSTEMS) {
    const harness = await open(system, system === 'embedded' ? undefined : `${basePrefix}-warmup-${system}`);
    try {
      await drive(harness, config.warmupPass, config.inflight);
    } finally {
      await close(harness);
      const prefix = prefixes[prefixes.length - 1];
      if (system !== 'embedded' && prefix) await deleteKeys(admin, prefix);
    }
  }

  for (let r = 1; r <= config.rounds; r++) {
    // Alternate which system goes first, so drift on a shared machine does not favour one.
    const order: SystemId[] = r % 2 === 1 ? ['raw', 'palisade', 'keys', 'policy', 'guarded', 'embedded'] : ['guarded', 'policy', 'keys', 'palisade', 'raw', 'embedded'];
    for (const system of order) await runSystem(system, r);
  }

  log('  probing Redis commands per hop…');
  for (const system of ['raw', 'palisade', 'guarded'] as const) {
    const prefix = `${basePrefix}-probe-${system}`;
    const harness = await open(system, prefix);
    try {
      await drive(harness, Math.min(config.warmup, 10), config.inflight);
      probes.push(await probe(admin, harness, system, 'load', config.probeChains));
      probes.push(await probe(admin, harness, system, 'serial', Math.min(config.probeChains, 20)));
      probes.push(await probe(admin, harness, system, 'attributed', Math.min(config.probeChains, 30)));
    } finally {
      await close(harness);
      await deleteKeys(admin, prefix);
    }
  }

  // Tracing on versus off, alternating in the same run; every span is sampled and exported to a local receiver.
  log('  tracing cost (Palisade guarded, tracing off vs on)…');
  const receiver = await startOtlpReceiver();
  const tracingRounds: Array<{ round: number; offChainsPerSec: number; onChainsPerSec: number; spans: number }> = [];
  try {
    for (let r = 1; r <= 3; r++) {
      const rates: Record<'off' | 'on', number> = { off: 0, on: 0 };
      let spans = 0;
      for (const mode of r % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const prefix = `${basePrefix}-tracing-r${r}-${mode}`;
        const tracing = mode === 'on' ? setupTracing({ endpoint: receiver.url, serviceName: 'palisade-bench' }) : undefined;
        const harness = await open('guarded', prefix);
        try {
          await drive(harness, config.warmup, config.inflight);
          const before = receiver.spans();
          const { elapsedMs } = await drive(harness, config.chains, config.inflight);
          rates[mode] = (config.chains / elapsedMs) * 1000;
          if (tracing) {
            await tracing.forceFlush();
            spans = receiver.spans() - before;
          }
        } finally {
          await close(harness);
          await tracing?.shutdown();
          await deleteKeys(admin, prefix);
        }
      }
      tracingRounds.push({ round: r, offChainsPerSec: rates.off, onChainsPerSec: rates.on, spans });
      log(`  round ${r} tracing off ${fmt(rates.off)} chains/s, on ${fmt(rates.on)} chains/s (${spans} spans exported)`);
    }
  } finally {
    await receiver.close();
  }
  const tracingRatio = median(tracingRounds.map((t) => t.onChainsPerSec / t.offChainsPerSec));
  const tracingTable = `Tracing cost — Palisade guarded, ${config.chains} chains per round, tracing off vs on (every span sampled, OTLP/HTTP to a local receiver)\n\n${table(
    ['round', 'off chains/s', 'on chains/s', 'on / off', 'spans exported'],
    tracingRounds.map((t) => [String(t.round), fmt(t.offChainsPerSec), fmt(t.onChainsPerSec), `${(t.onChainsPerSec / t.offChainsPerSec).toFixed(2)}×`, fmt(t.spans)]),
    ['l', 'r', 'r', 'r', 'r'],
  )}\n\nMedian on/off ratio: ${tracingRatio.toFixed(2)}×`;

  log('  scale: guarded workers in 1 and 2 processes; Redis memory per run…');
  prefixes.push(`${basePrefix}-scale`);
  const scale = await benchScale({
    admin,
    config: scenario,
    keysDir: keysDir!,
    prefix: `${basePrefix}-scale`,
    chains: config.chains,
    inflight: config.inflight,
    rounds: Math.min(config.rounds, 3),
    warmup: config.warmup,
    log,
  });
  const scaleOf = (processes: number) => median(scale.rounds.filter((r) => r.processes === processes).map((r) => r.chainsPerSec));
  const scaleTable = `Scale — Palisade guarded, workers in separate processes (total concurrency ${config.concurrency} per agent, split between them), producer in the bench process; median of ${Math.min(config.rounds, 3)} rounds\n\n${table(
    ['worker processes', 'chains/s', 'vs 1 process'],
    [1, 2].map((p) => [String(p), fmt(scaleOf(p)), `${(scaleOf(p) / scaleOf(1)).toFixed(2)}×`]),
    ['l', 'r', 'r'],
  )}\n\nRedis memory (used_memory) per run, ${scale.memory.runs} runs: ${fmt(scale.memory.inFlightBytesPerRun / 1024, 1)} KiB while queued, ${fmt(scale.memory.finishedBytesPerRun / 1024, 1)} KiB once finished (default retention: run records, events and audit log 7 days, finished jobs 1 hour)`;

  log('  guard pipeline cost per stage…');
  const guards = await benchPipeline();
  const summary = summarize(samples, probes);
  log('  content scanners (ordinary text, crafted 1 MB inputs)…');
  const scanners = await benchScanners();
  const scannerRows = Object.keys(scanners.throughputMBps).map((name) => [name, fmt(scanners.throughputMBps[name]!, 1), fmt(scanners.worstMs[name]!, 0)]);
  const scannerTable = `Content scanners — MB/s on ~1 MB of prose, and the slowest crafted 1 MB input (ms; goal: under 1000, linear)\n\n${table(['scanner', 'MB/s', 'worst 1 MB ms'], scannerRows, ['l', 'r', 'r'])}`;
  const text = `${report(summary)}\n\n${tracingTable}\n\n${scaleTable}\n\n${guards.table}\n\n${scannerTable}`;
  process.stdout.write(`\n${text}\n\n`);

  const result = {
    timestamp: started.toISOString(),
    durationSec: round((Date.now() - started.getTime()) / 1000, 1),
    config: { ...config, hopsPerChain: HOPS, redisUrl: description.redis.url },
    machine: { ...description, loadAverageAtEnd: os.loadavg().map((l) => round(l, 2)) },
    summary,
    tracing: { rounds: tracingRounds, medianOnOffRatio: round(tracingRatio, 3) },
    scale: {
      rounds: scale.rounds.map((r) => ({ ...r, chainsPerSec: round(r.chainsPerSec, 1) })),
      memory: { ...scale.memory, inFlightBytesPerRun: Math.round(scale.memory.inFlightBytesPerRun), finishedBytesPerRun: Math.round(scale.memory.finishedBytesPerRun) },
    },
    guardPipeline: guards.stages,
    scanners,
    samples: samples.map(({ hopLatencyMs, ...s }) => ({
      ...s,
      elapsedMs: round(s.elapsedMs, 1),
      chainsPerSec: round(s.chainsPerSec, 1),
      hopsPerSec: round(s.hopsPerSec, 1),
      nodeCpuMsPerHop: round(s.nodeCpuMsPerHop, 4),
      redisCpuMsPerHop: s.redisCpuMsPerHop === undefined ? undefined : round(s.redisCpuMsPerHop, 4),
      eventLoopUtilization: round(s.eventLoopUtilization, 3),
      hopLatencyMs: latencyStats(hopLatencyMs),
    })),
    table: text,
  };
  const dir = new URL('./results/', import.meta.url);
  await mkdir(dir, { recursive: true });
  const file = `${started.toISOString().replace(/:/g, '-')}.json`;
  const json = `${JSON.stringify(result, null, 2)}\n`;
  await writeFile(new URL(file, dir), json);
  await writeFile(new URL('latest.json', dir), json);
  log(`bench: wrote bench/results/${file} and bench/results/latest.json (${result.durationSec} s)`);
}

/** Closes whatever is still open and deletes every key this run wrote. */
async function cleanup(admin: Redis): Promise<void> {
  stopping = true;
  await Promise.allSettled([...openHarnesses].map((h) => close(h)));
  let deleted = 0;
  for (const prefix of prefixes) deleted += await deleteKeys(admin, prefix).catch(() => 0);
  if (keysDir) await rm(keysDir, { recursive: true, force: true });
  // Anything under the run's base prefix that a prefix list might have missed.
  deleted += await deleteKeys(admin, `${basePrefix}*`).catch(() => 0);
  if (deleted > 0) log(`bench: cleanup removed ${deleted} leftover keys`);
}

const admin = new Redis(config.redisUrl, { maxRetriesPerRequest: 2 });
admin.on('error', () => undefined);

// A timeout or a signal abandons the run; the same cleanup as for a failure follows.
let abandon: (error: Error) => void = () => undefined;
const abandoned = new Promise<never>((_, reject) => (abandon = reject));
const watchdog = setTimeout(() => abandon(new Error(`bench did not finish within ${config.totalTimeoutMs} ms`)), config.totalTimeoutMs);
const onSignal = (signal: NodeJS.Signals) => {
  process.exitCode = 130;
  abandon(new Error(`interrupted by ${signal}`));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

try {
  const work = main(admin);
  // Once abandoned, main fails as its harnesses close under it: expected, not an unhandled rejection.
  work.catch(() => undefined);
  await Promise.race([work, abandoned]);
} catch (error) {
  process.exitCode ??= 1;
  log(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
} finally {
  clearTimeout(watchdog);
  log('bench: cleaning up');
  await cleanup(admin);
  await admin.quit().catch(() => admin.disconnect());
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  // Everything is closed: the process ends by itself. If a handle leaked, say so rather than hang.
  setTimeout(() => {
    log('bench: handles still open 10 s after cleanup; exiting');
    process.exit(process.exitCode ?? 1);
  }, 10_000).unref();
}
