import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../../runtime/transports/embedded-transport.js';
import { deleteKeysUnder } from '../../runtime/redis-keys.js';
import { DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../../runtime/redis-url.js';
import { computeFigures, markdownTable, type Replayed } from './figures.js';
import { readRecords, readTasks } from './records.js';
import { Replayer } from './replay.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const SHARED = here('../../../shared/agentdojo/');

interface Flags {
  runs: string;
  tasks: string;
  out: string;
  policy: string;
  e2e?: boolean;
  concurrency: number;
  redis: string;
}

const positive = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

async function main(flags: Flags): Promise<void> {
  const started = Date.now();
  const tasks = await readTasks(flags.tasks);
  const records = await readRecords(flags.runs);
  const policy = await loadPolicy(flags.policy);
  const prefix = `palisade-eval-${process.pid}`;
  let redisTransports: BullMQTransport[] = [];
  if (flags.e2e) {
    const problem = await pingRedis(flags.redis);
    if (problem) throw new Error(`--e2e needs Redis at ${redactUrl(flags.redis)}: ${problem}`);
  }
  const replayer = new Replayer({
    tasks,
    policy,
    concurrency: flags.concurrency,
    transport: () => {
      if (!flags.e2e) return new EmbeddedTransport();
      const t = new BullMQTransport({ connection: flags.redis, prefix });
      redisTransports.push(t);
      return t;
    },
  });
  const replayed: Replayed[] = [];
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const loaded = records[next++]!;
      replayed.push({ loaded, result: await replayer.replay(loaded.record) });
      if (replayed.length % 250 === 0) process.stderr.write(`  ${replayed.length} of ${records.length} runs replayed\n`);
    }
  };
  try {
    await Promise.all(Array.from({ length: flags.concurrency }, worker));
  } finally {
    await replayer.close();
    if (flags.e2e) {
      const cleaner = new BullMQTransport({ connection: flags.redis, prefix });
      await deleteKeysUnder(cleaner.connection, prefix);
      await cleaner.close();
      redisTransports = [];
    }
  }
  replayed.sort((a, b) => a.loaded.path.localeCompare(b.loaded.path));
  const figures = computeFigures(replayed);
  const table = markdownTable(figures);
  const mode = flags.e2e ? 'end to end: BullMQ workers on Redis' : 'in process: the same agent loop on the embedded transport';
  process.stdout.write(`AgentDojo replay (${mode}), ${records.length} runs from ${flags.runs} in ${((Date.now() - started) / 1000).toFixed(1)} s\n\n${table}`);
  const out = resolve(flags.out);
  await mkdir(dirname(out), { recursive: true });
  const runs = replayed.map((r) => ({ path: r.loaded.path.slice(resolve(flags.runs).length + 1), attack: r.loaded.attack, security: r.loaded.record.security, utility: r.loaded.record.utility, ...r.result }));
  await writeFile(out, `${JSON.stringify({ mode: flags.e2e ? 'e2e' : 'in-process', policy: flags.policy, figures, runs }, null, 1)}\n`);
  await writeFile(out.replace(/\.json$/, '') + '.md', `# AgentDojo replay (${mode})\n\n${table}`);
  process.stdout.write(`\nsaved ${out} and ${out.replace(/\.json$/, '')}.md\n`);
}

const program = new Command('eval:agentdojo')
  .description("Replays AgentDojo's recorded runs through Palisade's guard pipeline and reports residual attack success and utility kept")
  .option('--runs <dir>', 'folder of run records (searched recursively)', `${SHARED}runs`)
  .option('--tasks <file>', "the benchmark's task file (tools, user and injection tasks)", `${SHARED}tasks-v1.json`)
  .option('--out <file>', 'where to save the JSON (a .md table is written beside it)', 'eval/agentdojo/results/latest.json')
  .option('--policy <file>', 'the policy to evaluate', here('../../examples/agentdojo/policy.yaml'))
  .option('--e2e', 'through BullMQ workers on Redis instead of the embedded transport')
  .option('--concurrency <n>', 'runs replayed at once', positive, 32)
  .option('--redis <url>', 'Redis URL for --e2e', process.env.REDIS_URL ?? DEFAULT_REDIS_URL)
  .action(main);

program.parseAsync(process.argv).then(
  // Everything is saved and closed; idle sockets of closed BullMQ connections must not hold the command open.
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`eval:agentdojo: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
