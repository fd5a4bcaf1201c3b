/**
 * A bench worker process: `tsx bench/worker-process.ts <prefix> <keysDir> <concurrency>` serves the
 * guarded a → b → c chain (keys, the bench policy, audit log) until SIGTERM, and prints `ready` once
 * its workers listen. The producer lives in the bench process.
 */
import { CHAIN_COMPONENTS, guardedRuntime } from './scenarios.js';

const [prefix, keysDir, concurrency = '8'] = process.argv.slice(2);
if (!prefix || !keysDir) throw new Error('usage: worker-process.ts <prefix> <keysDir> [concurrency]');
const runtime = await guardedRuntime({ redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }, prefix, keysDir, CHAIN_COMPONENTS.filter((c) => c !== 'edge'));
await runtime.startWorkers({ concurrency: Number(concurrency) });
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void runtime.close({ timeoutMs: 5000 }).finally(() => process.exit(0));
});
