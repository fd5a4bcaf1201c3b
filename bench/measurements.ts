/** The systems a bench run compares, and what it records of each: timed samples and Redis command probes. */
import type { CommandCounts, ServerStats } from './redis-probe.js';

export type SystemId = 'raw' | 'palisade' | 'keys' | 'policy' | 'guarded' | 'embedded';
export const SYSTEMS: readonly SystemId[] = ['raw', 'palisade', 'keys', 'policy', 'guarded', 'embedded'];
export type Mode = 'load' | 'serial';

export interface Sample {
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

export type ProbeMode = Mode | 'attributed';

export interface Probe {
  system: SystemId;
  mode: ProbeMode;
  chains: number;
  hops: number;
  client: CommandCounts;
  server: ServerStats;
}
