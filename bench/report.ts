/**
 * What `npm run bench` prints: the summary of a run's samples and probes (saved in its JSON too) and the
 * tables of the report, from throughput and hop latency to tracing, scale and the content scanners.
 */
import { HOPS } from './scenarios.js';
import type { RunMemory, ScaleRound } from './scale.js';
import type { ScannerBench } from './scanners.js';
import type { PeersResult, PeersSummary } from './peers.js';
import { SYSTEMS, type Mode, type Probe, type Sample, type SystemId } from './measurements.js';
import { fmt, latencyStats, median, round, table } from './stats.js';

const NAMES: Record<SystemId, string> = {
  raw: 'raw BullMQ (baseline)',
  palisade: 'Palisade, no guards',
  keys: 'Palisade, link keys only',
  policy: 'Palisade, policy only',
  guarded: 'Palisade guarded (keys, policy, audit)',
  embedded: 'Palisade embedded (no Redis)',
};

export function summarize(samples: Sample[], probes: Probe[]) {
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

export type Summary = ReturnType<typeof summarize>;

const signed = (n: number) => `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n), 2)}`;

/** The run's settings the report's headings state. */
export interface RunSettings {
  rounds: number;
  chains: number;
  inflight: number;
  concurrency: number;
  payloadBytes: number;
  serialChains: number;
}

export function report(summary: Summary, config: RunSettings): string {
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

export interface TracingRound {
  round: number;
  offChainsPerSec: number;
  onChainsPerSec: number;
  spans: number;
}

export function tracingReport(rounds: TracingRound[], chains: number, medianRatio: number): string {
  return `Tracing cost — Palisade guarded, ${chains} chains per round, tracing off vs on (every span sampled, OTLP/HTTP to a local receiver)\n\n${table(
    ['round', 'off chains/s', 'on chains/s', 'on / off', 'spans exported'],
    rounds.map((t) => [String(t.round), fmt(t.offChainsPerSec), fmt(t.onChainsPerSec), `${(t.onChainsPerSec / t.offChainsPerSec).toFixed(2)}×`, fmt(t.spans)]),
    ['l', 'r', 'r', 'r', 'r'],
  )}\n\nMedian on/off ratio: ${medianRatio.toFixed(2)}×`;
}

export function scaleReport(scale: { rounds: ScaleRound[]; memory: RunMemory }, concurrency: number, rounds: number): string {
  const scaleOf = (processes: number) => median(scale.rounds.filter((r) => r.processes === processes).map((r) => r.chainsPerSec));
  return `Scale — Palisade guarded, workers in separate processes (total concurrency ${concurrency} per agent, split between them), producer in the bench process; median of ${rounds} rounds\n\n${table(
    ['worker processes', 'chains/s', 'vs 1 process'],
    [1, 2].map((p) => [String(p), fmt(scaleOf(p)), `${(scaleOf(p) / scaleOf(1)).toFixed(2)}×`]),
    ['l', 'r', 'r'],
  )}\n\nRedis memory (used_memory) per run, ${scale.memory.runs} runs: ${fmt(scale.memory.inFlightBytesPerRun / 1024, 1)} KiB while queued, ${fmt(scale.memory.finishedBytesPerRun / 1024, 1)} KiB once finished (default retention: run records, events and audit log 7 days, finished jobs 1 hour)`;
}

export function scannersReport(scanners: ScannerBench): string {
  const rows = Object.keys(scanners.throughputMBps).map((name) => [name, fmt(scanners.throughputMBps[name]!, 1), fmt(scanners.worstMs[name]!, 0)]);
  return `Content scanners — MB/s on ~1 MB of prose, and the slowest crafted 1 MB input (ms; goal: under 1000, linear)\n\n${table(['scanner', 'MB/s', 'worst 1 MB ms'], rows, ['l', 'r', 'r'])}`;
}

export function peersReport(summary: PeersSummary, result: PeersResult, config: { rounds: number; peersChains: number; inflight: number; concurrency: number; payloadBytes: number }): string {
  const ratio = (r: number | undefined) => (r === undefined || !Number.isFinite(r) ? '—' : `${fmt(r, 2)}×`);
  const cpu = (ms: number | undefined) => (ms === undefined ? '—' : fmt(ms, 3));
  const notes = [
    ...result.skipped.map((s) => `${s.system} skipped: ${s.reason}`),
    ...(result.postgresCpuNote ? [result.postgresCpuNote] : []),
  ];
  return [
    `Peers — the same workload in every system: agents a → b → c, each one tool call ({"orderId":"A-1042"} → a small JSON object) then a handoff, c replies; a scripted model that answers at once; a ${config.payloadBytes} B user message. Median of ${config.rounds} rounds × ${config.peersChains} chains, ${config.inflight} in flight; worker concurrency ${config.concurrency} per agent in raw BullMQ and Palisade, every chain in flight at once in the in-memory frameworks, pg's default pool of 10 for PostgresSaver. Ratios are medians of per-round chains/s ratios; server CPU is the whole server's, other clients included`,
    '',
    table(
      ['system', 'durable', 'guarded', 'chains/s', 'Node CPU ms/hop', 'server CPU ms/hop', 'total CPU ms/hop', 'vs OpenAI Agents SDK', 'vs raw BullMQ', 'tool calls/chain', 'model turns/chain'],
      summary.map((s) => [
        s.name,
        s.durable,
        s.guarded,
        fmt(s.chainsPerSec),
        cpu(s.nodeCpuMsPerHop),
        s.server ? `${cpu(s.serverCpuMsPerHop)} (${s.server})` : '—',
        cpu(s.totalCpuMsPerHop),
        ratio(s.ratios.sdk),
        ratio(s.ratios.raw),
        fmt(s.toolCallsPerChain, 2),
        // Raw BullMQ has no model: its workers run the tool step directly.
        s.id === 'raw' ? '—' : fmt(s.modelTurnsPerChain, 2),
      ]),
      ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    'Peers — chains/s of the row ÷ chains/s of the column (median of per-round ratios)',
    '',
    table(
      ['system', ...summary.map((s) => s.name)],
      summary.map((s) => [s.name, ...summary.map((o) => ratio(s.ratios[o.id]))]),
      ['l', ...summary.map(() => 'r' as const)],
    ),
    ...(notes.length ? ['', ...notes] : []),
  ].join('\n');
}
