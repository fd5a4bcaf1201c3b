import { performance } from 'node:perf_hooks';
import type { Harness } from './scenarios.js';

/** Runs `n` chains with at most `inflight` at once; latency of each chain in ms. */
export async function drive(harness: Harness, n: number, inflight: number): Promise<{ elapsedMs: number; latencies: number[] }> {
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
