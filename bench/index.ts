/**
 * `npm run bench`: what Palisade's runtime costs over raw BullMQ, measured in one run on one Redis and
 * reported as ratios against the baseline measured in the same run. See BENCHMARKS.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { deleteKeys, diffStats, info, installCommandCounter, serverStats, startCounting, stopCounting, type CommandCounts } from './redis-probe.js';
import { HOPS, palisadeBullMQ, palisadeEmbedded, palisadeGuarded, rawBullMQ, writeChainKeys, type Harness, type ScenarioConfig } from './scenarios.js';
import { SYSTEMS, type Mode, type Probe, type ProbeMode, type Sample, type SystemId } from './measurements.js';
import { machine } from './machine.js';
import { peersReport, report, scaleReport, scannersReport, summarize, tracingReport, type TracingRound } from './report.js';
import { benchScale } from './scale.js';
import { fmt, latencyStats, median, percentile, round } from './stats.js';
import { benchPipeline } from './pipeline.js';
import { benchSignatures } from './signatures.js';
import { benchScanners } from './scanners.js';
import { startOtlpReceiver } from './otlp-receiver.js';
import { drive } from './drive.js';
import { benchPeers, summarizePeers } from './peers.js';
import { benchCluster, clusterReport, summarizeCluster } from './cluster.js';
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
  /** The peers section (`bench/peers.ts`): off with BENCH_PEERS=0, alone with BENCH_PEERS_ONLY=1. */
  peers: process.env.BENCH_PEERS !== '0' || process.env.BENCH_PEERS_ONLY === '1',
  peersOnly: process.env.BENCH_PEERS_ONLY === '1',
  peersChains: num('BENCH_PEERS_CHAINS', 500),
  peersWarmupPass: num('BENCH_PEERS_WARMUP_PASS', 300),
  postgresUrl: process.env.BENCH_POSTGRES_URL ?? 'postgresql://postgres@127.0.0.1:5432/test',
  /** The cluster section (`bench/cluster.ts`): off with BENCH_CLUSTER=0, alone with BENCH_CLUSTER_ONLY=1. */
  cluster: process.env.BENCH_CLUSTER !== '0' || process.env.BENCH_CLUSTER_ONLY === '1',
  clusterOnly: process.env.BENCH_CLUSTER_ONLY === '1',
  clusterChains: num('BENCH_CLUSTER_CHAINS', 500),
  clusterWarmupPass: num('BENCH_CLUSTER_WARMUP_PASS', 300),
  chainTimeoutMs: 60_000,
  totalTimeoutMs: num('BENCH_TIMEOUT_MS', 900_000),
};

const started = new Date();
const basePrefix = `palisade-bench-${randomBytes(4).toString('hex')}`;
/** Every key prefix this run used: all are swept at the end, also on failure. */
const prefixes: string[] = [];
const openHarnesses = new Set<Harness>();
/** Stops of what else a run starts (the cluster section's Redis Cluster), for cleanup. */
const stops = new Set<() => Promise<void>>();
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
  return register(harness);
}

/** Tracks an open harness, so that cleanup closes it if the bench is abandoned. */
async function register(harness: Harness): Promise<Harness> {
  openHarnesses.add(harness);
  // Opened while cleanup ran: close it here, as cleanup no longer will.
  if (stopping) {
    await close(harness);
    throw new Error('the bench is stopping');
  }
  return harness;
}

/** Hands a stop to cleanup; if cleanup already ran, stops at once, as cleanup no longer will. */
async function track(stop: () => Promise<void>): Promise<void> {
  stops.add(stop);
  if (stopping) {
    await stop();
    throw new Error('the bench is stopping');
  }
}

/** Harnesses being closed: a second close waits for the first, so that what they run on (the cluster) outlives them. */
const closing = new Map<Harness, Promise<void>>();

async function close(harness: Harness): Promise<void> {
  if (openHarnesses.delete(harness)) closing.set(harness, harness.close().finally(() => closing.delete(harness)));
  await closing.get(harness);
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

async function main(admin: Redis): Promise<void> {
  installCommandCounter();
  keysDir = await mkdtemp(join(os.tmpdir(), 'palisade-bench-keys-'));
  await writeChainKeys(keysDir);
  const description = await machine(admin, config.redisUrl);
  log(`bench: ${description.cpuModel}, ${description.cores} cores, node ${description.node}, redis ${description.redis.version}; prefix ${basePrefix}`);

  const clusterSection = () =>
    benchCluster({
      admin,
      config: scenario,
      keysDir: keysDir!,
      prefix: `${basePrefix}-cluster`,
      rounds: config.rounds,
      chains: config.clusterChains,
      inflight: config.inflight,
      warmupPass: config.clusterWarmupPass,
      warmup: config.warmup,
      register,
      close,
      track,
      log,
    });
  if (config.clusterOnly) {
    process.stdout.write(`\n${clusterReport(await clusterSection(), config)}\n\n`);
    return;
  }

  const peers = config.peers
    ? await benchPeers({
        admin,
        config: scenario,
        keysDir,
        prefix: `${basePrefix}-peers`,
        postgresUrl: config.postgresUrl,
        rounds: config.rounds,
        chains: config.peersChains,
        inflight: config.inflight,
        warmupPass: config.peersWarmupPass,
        warmup: config.warmup,
        register,
        close,
        log,
      })
    : undefined;
  const peersTable = peers && peersReport(summarizePeers(peers), peers, config);
  if (config.peersOnly) {
    process.stdout.write(`\n${peersTable}\n\n`);
    return;
  }

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
  const tracingRounds: TracingRound[] = [];
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
  const tracingTable = tracingReport(tracingRounds, config.chains, tracingRatio);

  log('  scale: guarded workers in 1 and 2 processes; Redis memory per run…');
  prefixes.push(`${basePrefix}-scale`);
  const scaleRounds = Math.min(config.rounds, 3);
  const scale = await benchScale({
    admin,
    config: scenario,
    keysDir: keysDir!,
    prefix: `${basePrefix}-scale`,
    chains: config.chains,
    inflight: config.inflight,
    rounds: scaleRounds,
    warmup: config.warmup,
    log,
  });
  const scaleTable = scaleReport(scale, config.concurrency, scaleRounds);

  const cluster = config.cluster ? await clusterSection() : undefined;

  log('  guard pipeline cost per stage…');
  const guards = await benchPipeline();
  log("  the edge's signatures: per run, per hop…");
  const signatures = await benchSignatures();
  const summary = summarize(samples, probes);
  log('  content scanners (ordinary text, crafted 1 MB inputs)…');
  const scanners = await benchScanners();
  const text = `${report(summary, config)}\n\n${tracingTable}\n\n${scaleTable}\n\n${guards.table}\n\n${signatures.table}\n\n${scannersReport(scanners)}${peersTable ? `\n\n${peersTable}` : ''}${cluster ? `\n\n${clusterReport(cluster, config)}` : ''}`;
  process.stdout.write(`\n${text}\n\n`);

  const result = {
    timestamp: started.toISOString(),
    durationSec: round((Date.now() - started.getTime()) / 1000, 1),
    config: { ...config, hopsPerChain: HOPS, redisUrl: description.redis.url, postgresUrl: config.postgresUrl.replace(/(\/\/[^:@/]*):[^@/]*@/, '$1:***@') },
    machine: { ...description, loadAverageAtEnd: os.loadavg().map((l) => round(l, 2)) },
    summary,
    tracing: { rounds: tracingRounds, medianOnOffRatio: round(tracingRatio, 3) },
    scale: {
      rounds: scale.rounds.map((r) => ({ ...r, chainsPerSec: round(r.chainsPerSec, 1) })),
      memory: { ...scale.memory, inFlightBytesPerRun: Math.round(scale.memory.inFlightBytesPerRun), finishedBytesPerRun: Math.round(scale.memory.finishedBytesPerRun) },
    },
    guardPipeline: guards.stages,
    signatures: signatures.costs.map((c) => ({ ...c, p50us: round(c.p50us, 1), p99us: round(c.p99us, 1) })),
    scanners,
    cluster: cluster && ('skipped' in cluster ? cluster : { summary: summarizeCluster(cluster), ...cluster }),
    peers: peers && { summary: summarizePeers(peers), skipped: peers.skipped, postgresCpuNote: peers.postgresCpuNote, samples: peers.samples },
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
  await Promise.allSettled([...stops].map((stop) => stop()));
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
// Listening with `on` until cleanup is done: the OpenAI Agents SDK (peers) exits the process on a signal
// once it is the only listener left, which cut cleanup short. A second signal ends the bench at once.
let signalled = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (signalled) process.exit(130);
  signalled = true;
  process.exitCode = 130;
  abandon(new Error(`interrupted by ${signal}`));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

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
