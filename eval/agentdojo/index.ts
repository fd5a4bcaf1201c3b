import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { SUITE_NAMES } from '../../examples/agentdojo/suites.js';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../../runtime/transports/embedded-transport.js';
import { deleteKeysUnder } from '../../runtime/redis-keys.js';
import { DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../../runtime/redis-url.js';
import { parseDetector, policyFor, type DetectorMode } from './detector.js';
import { readEnvironment } from './attack-plan.js';
import { FAMILIES, familyRecord, parseFamilies, type Family } from './families.js';
import { computeFamilyFigures, familyReport, summaryRows, type Replayed } from './figures.js';
import { readRecords, readTasks, type LoadedRecord } from './records.js';
import { Replayer } from './replay.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const SHARED = here('../../../shared/agentdojo/');

interface Flags {
  runs: string;
  tasks: string;
  suites?: string;
  out: string;
  policy: string;
  families: string;
  detector: string;
  seed: number;
  e2e?: boolean;
  concurrency: number;
  redis: string;
}

const positive = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

const whole = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};

/** One unit of work: a record, rewritten into one family (attacked runs) or as is (runs without attack), replayed in each mode. */
interface Job {
  loaded: LoadedRecord;
  family?: Family;
}

async function main(flags: Flags): Promise<void> {
  const started = Date.now();
  const families = parseFamilies(flags.families);
  const detectors = parseDetector(flags.detector);
  const tasks = await readTasks(flags.tasks);
  const records = await readRecords(flags.runs);
  const loadedPolicy = await loadPolicy(flags.policy);
  // The suites' environment data tells values an attacker cannot know (looked up by the agent) from the attacker's own.
  const suitesDir = flags.suites ?? join(dirname(resolve(flags.tasks)), 'suites');
  const environments: Partial<Record<string, string>> = {};
  if (families.some((f) => f !== 'original')) {
    if (flags.suites && !existsSync(suitesDir)) throw new Error(`--suites: no such folder ${suitesDir}`);
    for (const suite of SUITE_NAMES) if (existsSync(join(suitesDir, suite))) environments[suite] = await readEnvironment(suitesDir, suite);
    if (Object.keys(environments).length === 0) process.stderr.write(`no environment data in ${suitesDir} (--suites): looked-up values are told from the attacker's by their length alone\n`);
  }
  const prefix = `palisade-eval-${process.pid}`;
  if (flags.e2e) {
    const problem = await pingRedis(flags.redis);
    if (problem) throw new Error(`--e2e needs Redis at ${redactUrl(flags.redis)}: ${problem}`);
  }
  const replayers = new Map<DetectorMode, Replayer>(
    detectors.map((mode) => [
      mode,
      new Replayer({
        tasks,
        policy: policyFor(loadedPolicy, mode),
        concurrency: flags.concurrency,
        // Each mode's runtimes have queues of their own.
        transport: () => (flags.e2e ? new BullMQTransport({ connection: flags.redis, prefix: `${prefix}-${mode}` }) : new EmbeddedTransport()),
      }),
    ]),
  );
  const jobs: Job[] = records.flatMap((loaded) => (loaded.attack === 'none' ? [{ loaded }] : families.map((family) => ({ loaded, family }))));
  const total = jobs.length * detectors.length;
  const replayed: Replayed[] = [];
  let next = 0;
  const unreplaced = new Set<string>();
  const worker = async () => {
    while (next < jobs.length) {
      const { loaded, family } = jobs[next++]!;
      const task = tasks[loaded.record.suite_name]?.injection_tasks.find((t) => t.id === loaded.record.injection_task_id);
      const rewritten = family ? familyRecord(loaded.record, family, task, { environments, seed: flags.seed }) : { record: loaded.record, replaced: 0 };
      if (family && family !== 'original' && rewritten.replaced === 0) unreplaced.add(loaded.path);
      const record = { ...loaded, record: rewritten.record };
      await Promise.all(
        detectors.map(async (detector) => {
          const result = await replayers.get(detector)!.replay(record.record);
          replayed.push({ loaded, result, detector, ...(family ? { family } : {}), ...(rewritten.rendered?.spaced ? { spaced: true } : {}) });
          if (replayed.length % 1000 === 0) process.stderr.write(`  ${replayed.length} of ${total} replays\n`);
        }),
      );
    }
  };
  try {
    await Promise.all(Array.from({ length: flags.concurrency }, worker));
  } finally {
    await Promise.all([...replayers.values()].map((r) => r.close()));
    if (flags.e2e) {
      for (const mode of detectors) {
        const cleaner = new BullMQTransport({ connection: flags.redis, prefix: `${prefix}-${mode}` });
        await deleteKeysUnder(cleaner.connection, `${prefix}-${mode}`);
        await cleaner.close();
      }
    }
  }
  // Mode by mode, runs without attack first, then family by family, each in path order.
  const rank = (r: Replayed) => [detectors.indexOf(r.detector as DetectorMode), r.family ? families.indexOf(r.family as Family) : -1] as const;
  replayed.sort((a, b) => rank(a)[0] - rank(b)[0] || rank(a)[1] - rank(b)[1] || a.loaded.path.localeCompare(b.loaded.path));
  const groups = computeFamilyFigures(replayed, families, detectors);
  const report = familyReport(groups);
  const mode = flags.e2e ? 'end to end: BullMQ workers on Redis' : 'in process: the same agent loop on the embedded transport';
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const heading = `AgentDojo replay (${mode}), ${records.length} runs from ${flags.runs}, families ${families.join(', ')}, injection detector ${detectors.join(' and ')}: ${replayed.length} replays in ${seconds} s`;
  process.stdout.write(`${heading}\n${unreplaced.size ? `(${unreplaced.size} attacked runs never showed their planted text to the agent: nothing to rewrite, they replay as recorded in every family)\n` : ''}\n${report}`);
  const out = resolve(flags.out);
  await mkdir(dirname(out), { recursive: true });
  const root = resolve(flags.runs);
  const runs = replayed.map((r) => ({
    path: r.loaded.path.slice(root.length + 1),
    ...(r.family ? { family: r.family } : {}),
    ...(r.spaced ? { spaced: true } : {}),
    detector: r.detector,
    attack: r.loaded.attack,
    security: r.loaded.record.security,
    utility: r.loaded.record.utility,
    outcome: r.result.outcome,
    attackerCallEscalated: r.result.attackerCallEscalated,
    // Why a call was stopped; an allowed call's notes are left out (the file holds every run of every family and mode).
    calls: r.result.calls.map((c) => ({ tool: c.tool, verdict: c.verdict, ...(c.servesAttacker ? { servesAttacker: true } : {}), ...(c.verdict !== 'allow' && c.reasons.length ? { reasons: c.reasons } : {}) })),
  }));
  const head = {
    mode: flags.e2e ? 'e2e' : 'in-process',
    policy: flags.policy,
    families,
    detector: detectors,
    seed: flags.seed,
    seconds: Number(seconds),
    summary: summaryRows(groups),
    figures: groups,
  };
  // One run per line: the file stays readable and diffs stay small.
  const json = `${JSON.stringify(head, null, 1).replace(/\n}$/, '')},\n "runs": [\n${runs.map((r) => `  ${JSON.stringify(r)}`).join(',\n')}\n ]\n}\n`;
  await writeFile(out, json);
  const md = out.replace(/\.json$/, '') + '.md';
  await writeFile(md, `# AgentDojo replay (${mode})\n\nFamilies ${families.join(', ')}; injection detector ${detectors.join(' and ')}; seed ${flags.seed}; ${replayed.length} replays of ${records.length} recorded runs.\n\n${report}`);
  process.stdout.write(`\nsaved ${out} and ${md}\n`);
}

const program = new Command('eval:agentdojo')
  .description("Replays AgentDojo's recorded runs through Palisade's guard pipeline and reports residual attack success and utility kept")
  .option('--runs <dir>', 'folder of run records (searched recursively)', `${SHARED}runs`)
  .option('--tasks <file>', "the benchmark's task file (tools, user and injection tasks)", `${SHARED}tasks-v1.json`)
  .option('--out <file>', 'where to save the JSON (a .md table is written beside it)', 'eval/agentdojo/results/latest.json')
  .option('--suites <dir>', "the benchmark's environment data, to tell looked-up values from the attacker's (default: suites/ beside the task file)")
  .option('--policy <file>', 'the policy to evaluate', here('../../examples/agentdojo/policy.yaml'))
  .option('--families <list>', `attack families to rewrite attacked runs into, comma separated, or all (${FAMILIES.join(', ')})`, 'original')
  .option('--detector <mode>', "the content guard's prompt-injection detector: on, off or both", 'both')
  .option('--seed <n>', 'seed of the family renderings (with each record path and family)', whole, 0)
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
