import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Queue, Worker, type Job, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { defineAgent, type Agent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';

export interface ScenarioConfig {
  redisUrl: string;
  /** Jobs per queue (agent) processed at once, as `Runtime.startWorkers({ concurrency })`. */
  concurrency: number;
  /** The ~2 KB text every chain carries. */
  payload: string;
  /** A chain that has not finished after this long fails the bench. */
  chainTimeoutMs: number;
}

/** One system under test, set up and ready: `runChain` drives one 3-hop chain to its end. */
export interface Harness {
  readonly name: string;
  /** Agent activations (jobs processed) per chain. */
  readonly hops: number;
  runChain(): Promise<void>;
  close(): Promise<void>;
}

export const HOPS = 3;
export const OUTPUT = 'c: done, the chain is complete.';

// BullMQTransport's job options, so the baseline pays for the same BullMQ features (custom job ids,
// retries, retention of finished jobs) and the ratio isolates what Palisade adds on top.
const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
};
const LOCK_MS = 30_000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface RawJob {
  chain: string;
  hop: number;
  body: string;
  /** What `step` added on the way (the peers bench carries tool results here). */
  results?: string[];
}

/**
 * Raw BullMQ: queues A → B → C on one Redis; each worker adds the next job (same 2 KB payload) on the
 * next queue, the last one completes the chain. Workers in this process, like Palisade's below. `step`,
 * if given, runs in each worker on the job's data before it is passed on (hop 0, 1, 2).
 */
export async function rawBullMQ(config: ScenarioConfig, prefix: string, step?: (hop: number, data: RawJob) => RawJob): Promise<Harness> {
  const names = ['raw.a', 'raw.b', 'raw.c'];
  const producer = new Redis(config.redisUrl, { maxRetriesPerRequest: 2 });
  const queues = names.map((name) => new Queue<RawJob>(name, { connection: producer, prefix }));
  const waiting = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  const workers: Array<{ worker: Worker<RawJob>; connection: Redis }> = names.map((name, index) => {
    const connection = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
    const worker = new Worker<RawJob>(
      name,
      async (job: Job<RawJob>) => {
        const next = queues[index + 1];
        const current = step ? step(index, job.data) : job.data;
        if (next) {
          const data: RawJob = { ...current, hop: index + 1 };
          await next.add('hop', data, { ...JOB_OPTIONS, jobId: `${job.data.chain}.${index + 1}` });
          return { status: 'forwarded' };
        }
        waiting.get(job.data.chain)?.resolve();
        return { status: 'completed' };
      },
      { connection, prefix, concurrency: config.concurrency, lockDuration: LOCK_MS, stalledInterval: LOCK_MS, maxStalledCount: 3 },
    );
    worker.on('failed', (job, error) => {
      if (job) waiting.get(job.data.chain)?.reject(error);
    });
    worker.on('error', () => undefined);
    return { worker, connection };
  });
  await Promise.all(workers.map(({ worker }) => worker.waitUntilReady()));
  const first = queues[0]!;
  return {
    name: 'raw BullMQ',
    hops: HOPS,
    async runChain() {
      const chain = randomUUID();
      const done = new Promise<void>((resolve, reject) => waiting.set(chain, { resolve, reject }));
      try {
        await first.add('hop', { chain, hop: 0, body: config.payload }, { ...JOB_OPTIONS, jobId: `${chain}.0` });
        await withTimeout(done, config.chainTimeoutMs, `raw chain ${chain}`);
      } finally {
        waiting.delete(chain);
      }
    },
    async close() {
      // Chains still waiting (the bench was abandoned) fail now rather than hold their timers.
      for (const { reject } of waiting.values()) reject(new Error('the raw BullMQ harness closed'));
      await Promise.all(
        workers.map(async ({ worker, connection }) => {
          await worker.close();
          connection.disconnect();
        }),
      );
      await Promise.all(queues.map((q) => q.close()));
      await producer.quit().catch(() => producer.disconnect());
    },
  };
}

/** a → b → c: a and b hand off at once, c replies with a fixed text. Each agent makes one model turn. */
export function chainAgents(): Agent[] {
  return [
    defineAgent({
      name: 'a',
      description: 'First hop: hands the conversation to b.',
      instructions: 'Hand the conversation over to b.',
      model: new ScriptedModel({ script: () => ({ calls: [{ name: 'transfer_to_b', args: { reason: 'next hop' } }] }) }),
      handoffs: ['b'],
    }),
    defineAgent({
      name: 'b',
      description: 'Second hop: hands the conversation to c.',
      instructions: 'Hand the conversation over to c.',
      model: new ScriptedModel({ script: () => ({ calls: [{ name: 'transfer_to_c', args: { reason: 'next hop' } }] }) }),
      handoffs: ['c'],
    }),
    defineAgent({
      name: 'c',
      description: 'Last hop: answers.',
      instructions: 'Answer with a fixed text.',
      model: new ScriptedModel({ script: () => OUTPUT }),
    }),
  ];
}

const principal = { id: 'bench-user', roles: ['bench'] };

export function palisadeHarness(name: string, runtime: Runtime, config: ScenarioConfig): Harness {
  const active = new Set<Run>();
  return {
    name,
    hops: HOPS,
    async runChain() {
      const run = await runtime.start('a', config.payload, { principal });
      active.add(run);
      try {
        const result = await run.result({ timeoutMs: config.chainTimeoutMs });
        if (result.output !== OUTPUT) throw new Error(`run ${run.id} answered ${JSON.stringify(result.output)}`);
      } finally {
        active.delete(run);
      }
    },
    async close() {
      // Runs still going (the bench was abandoned) are cancelled, which ends their `result()` waits.
      await Promise.allSettled([...active].map((run) => run.cancel('bench stopped')));
      await runtime.close({ timeoutMs: 5000 });
    },
  };
}

/** Palisade on BullMQTransport: the same three queues' worth of agents, workers in this process. */
export async function palisadeBullMQ(config: ScenarioConfig, prefix: string): Promise<Harness> {
  const runtime = new Runtime({ agents: chainAgents(), transport: new BullMQTransport({ connection: config.redisUrl, prefix }) });
  await runtime.startWorkers({ concurrency: config.concurrency });
  return palisadeHarness('Palisade on BullMQ', runtime, config);
}

export const GUARDED_POLICY = fileURLToPath(new URL('./policy.yaml', import.meta.url));

/** What the guarded system turns on; the bench also runs each on its own, to see what it costs. */
export type Protection = 'keys' | 'policy';
const ALL_PROTECTIONS: readonly Protection[] = ['keys', 'policy'];

/**
 * Palisade with every protection on (or those given): link keys (each envelope MAC'd and checked), the
 * bench policy's full guard pipeline, and the audit log (on whenever the transport is Redis). `keysDir`
 * holds the keys of the edge and of a, b, c (`writeChainKeys`); `agents` are a, b, c (the peers bench
 * gives them tools).
 */
export async function guardedRuntime(
  config: Pick<ScenarioConfig, 'redisUrl'>,
  prefix: string,
  keysDir: string,
  components: readonly string[],
  protections: readonly Protection[] = ALL_PROTECTIONS,
  agents: Agent[] = chainAgents(),
): Promise<Runtime> {
  const [policy, keys] = await Promise.all([
    protections.includes('policy') ? loadPolicy(GUARDED_POLICY) : undefined,
    protections.includes('keys') ? loadKeyring(keysDir, components) : undefined,
  ]);
  return new Runtime({ agents, policy, keys, transport: new BullMQTransport({ connection: config.redisUrl, prefix }) });
}

/** Writes fresh link keys for the chain into `dir`. */
export async function writeChainKeys(dir: string): Promise<void> {
  await generateKeys(dir, chainAgents());
}

export const CHAIN_COMPONENTS = [EDGE, 'a', 'b', 'c'] as const;

/** Palisade guarded, workers in this process (the producer and the workers share one runtime, as in `palisadeBullMQ`). */
export async function palisadeGuarded(config: ScenarioConfig, prefix: string, keysDir: string, protections: readonly Protection[] = ALL_PROTECTIONS): Promise<Harness> {
  const runtime = await guardedRuntime(config, prefix, keysDir, CHAIN_COMPONENTS, protections);
  await runtime.startWorkers({ concurrency: config.concurrency });
  return palisadeHarness(`Palisade with ${protections.join(' and ')}`, runtime, config);
}

/** Palisade on the in-process transport: no Redis at all, for scale. */
export async function palisadeEmbedded(config: ScenarioConfig): Promise<Harness> {
  const runtime = new Runtime({ agents: chainAgents(), transport: new EmbeddedTransport() });
  await runtime.startWorkers({ concurrency: config.concurrency });
  return palisadeHarness('Palisade embedded', runtime, config);
}

/** What a section of the bench is given by bench/index.ts: the shared set-up and its registry of harnesses. */
export interface SectionOptions {
  admin: Redis;
  config: ScenarioConfig;
  keysDir: string;
  /** Key prefix of the section; each system and round gets its own under it. */
  prefix: string;
  rounds: number;
  chains: number;
  inflight: number;
  /** Untimed chains per system before round 1, and after each set-up. */
  warmupPass: number;
  warmup: number;
  /** The bench's registry of open harnesses, so that an abandoned run still closes them. */
  register: (harness: Harness) => Promise<Harness>;
  close: (harness: Harness) => Promise<void>;
  log: (line: string) => void;
}
