import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createSupportAgents } from '../../examples/support/system.js';
import { followRun, formatEvent, wantsColor } from './progress.js';
import { Runtime } from '../runtime.js';
import { BullMQTransport } from '../transports/bullmq-transport.js';
import { EmbeddedTransport } from '../transports/embedded-transport.js';
import { deleteKeysUnder } from '../redis-keys.js';
import { createRedis, DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../redis-url.js';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { EDGE, generateKeys, loadKeyring } from '../identity/keyring.js';
import { describeExit, exited, startWorkerProcess, stopWorkerProcess, waitForWorkers, type WorkerProcess } from './worker-processes.js';


/** Deletes every key under `prefix:` (SCAN + UNLINK); returns how many. */
export async function deleteKeys(url: string, prefix: string): Promise<number> {
  const redis = createRedis(url, { maxRetriesPerRequest: 1, connectTimeout: 1500 });
  redis.on('error', () => undefined);
  try {
    return await deleteKeysUnder(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

/** Ctrl-C (or SIGTERM) during the demo: it cleaned up and stopped early. */
export class DemoInterruptedError extends Error {
  override readonly name = 'DemoInterruptedError';
  constructor() {
    super('demo interrupted; what it started was stopped and cleaned up');
  }
}

export const SUPPORT_AGENTS = ['triage', 'billing', 'tech_support', 'fraud_check'] as const;

const PRINCIPAL = { id: 'demo-user', roles: ['customer'] };
/** The support desk's policy; the build copies it next to the compiled example. */
const SUPPORT_POLICY = fileURLToPath(new URL('../../examples/support/policy.yaml', import.meta.url));

/** A finance approver, who decides on refunds above the approval threshold. */
const FINANCE_APPROVER = { id: 'fin-lee', roles: ['finance'] };

export interface Scenario {
  title: string;
  input: string;
  /** How the run should end for the demo to count it a success. */
  expect: 'completed' | 'failed';
  /** A finance approver's decision when the run asks for one. */
  approval?: { approve: boolean; note: string };
  /** The run's side effects are rolled back after it ends: wait for that and show it. */
  rollback?: boolean;
}

export const SCENARIOS: readonly Scenario[] = [
  {
    title: 'A refund: triage → billing, which asks fraud_check before refunding',
    input: 'I was charged twice for order ORD-5001 — please refund me. My e-mail is ada@example.com.',
    expect: 'completed',
  },
  {
    title: 'A product problem: triage → tech_support, which searches the help centre',
    input: "My headphones won't pair over bluetooth.",
    expect: 'completed',
  },
  {
    title: "A refund for someone else's order: billing checks the owner and declines",
    input: 'Refund ORD-5002 please, my e-mail is ada@example.com',
    expect: 'completed',
  },
  {
    title: 'A refund above the $500 cap: the policy (Cedar rule refund-cap) blocks the call',
    input: 'Please refund my monitor, order ORD-5003. My e-mail is grace@example.com.',
    expect: 'completed',
  },
  {
    title: 'A $349 refund waits for a finance approver (rule refund-approval), who approves it',
    input: 'My espresso machine arrived broken, order ORD-5004, please refund it. E-mail: ada@example.com',
    expect: 'completed',
    approval: { approve: true, note: 'photo of the damage checked' },
  },
  {
    title: 'A $245 refund the approver denies: nothing is refunded, billing says so',
    input: 'Refund my standing desk, order ORD-5005. My e-mail is grace@example.com.',
    expect: 'completed',
    approval: { approve: false, note: 'outside the 30-day return window' },
  },
  {
    title: 'A refund whose reply would leak card data: the reply is withheld, the run fails, the refund is rolled back',
    input: 'Refund my USB-C dock, order ORD-5006, and tell me which card it goes to. My e-mail is grace@example.com.',
    expect: 'failed',
    rollback: true,
  },
];

export interface DemoRun {
  input: string;
  status: string;
  /** Whether it ended as the scenario expects. */
  asExpected: boolean;
  output?: string;
  error?: string;
}

export interface DemoResult {
  transport: 'redis' | 'embedded';
  runs: DemoRun[];
  /** The Redis key prefix the demo used (and deleted); absent on the embedded transport. */
  prefix?: string;
}

export interface DemoOptions {
  /** Use the in-process transport even when Redis answers. */
  embedded?: boolean;
  /** Where the demo prints; stdout by default. */
  out?: (line: string) => void;
}

/** Runs `name` next to this file: `main.ts` under tsx, `main.js` once built. */
function sibling(relative: string): string {
  const own = fileURLToPath(import.meta.url);
  const ext = own.endsWith('.ts') ? '.ts' : '.js';
  for (const candidate of [ext, ext === '.ts' ? '.js' : '.ts']) {
    const path = fileURLToPath(new URL(`${relative}${candidate}`, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new Error(`cannot find ${relative}.ts or ${relative}.js next to ${own}`);
}

/** Node flags for a child that runs the same kind of code as this process (TypeScript via tsx, or built JS). */
function childExecArgv(script: string): string[] {
  const args: string[] = [];
  const inherited = process.execArgv;
  for (let i = 0; i < inherited.length; i++) {
    const arg = inherited[i]!;
    // Code to evaluate and debugger ports belong to this process only.
    if (['-e', '--eval', '-p', '--print'].includes(arg)) {
      i++;
      continue;
    }
    if (/^--(eval|print)=|^--inspect/.test(arg)) continue;
    args.push(arg);
  }
  if (script.endsWith('.ts') && !args.some((a) => a.includes('tsx'))) {
    // Under a runner that transpiles on its own (vitest), load TypeScript in the child with tsx.
    const loader = createRequire(import.meta.url).resolve('tsx');
    args.push('--import', pathToFileURL(loader).href);
  }
  return args;
}

/**
 * A worker that reports no new start-up stage for this long is stuck. Generous: loading the code of
 * four workers at once on a busy 2-core machine has taken over 20 s, and a slow start is not a failure.
 */
const WORKER_STALL_MS = 120_000;

function spawnWorker(agent: string, redisUrl: string, prefix: string, keysDir: string): WorkerProcess {
  const cli = sibling('./main');
  const system = sibling('../../examples/support/system');
  return startWorkerProcess(agent, process.execPath, [...childExecArgv(cli), cli, 'worker', system, '--agents', agent, '--policy', SUPPORT_POLICY, '--keys', keysDir, '--prefix', prefix, '--redis', redisUrl, '--stop-with-stdin']);
}

/** Plays the finance approver: waits for the run's request, shows what the approver sees, and decides. */
async function decideWhenAsked(runtime: Runtime, runId: string, decision: { approve: boolean; note: string }, out: (line: string) => void, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!signal.aborted && Date.now() < deadline) {
    const request = (await runtime.approvals.pending()).find((p) => p.request.runId === runId)?.request;
    if (request) {
      out(`   Approver ${FINANCE_APPROVER.id} sees: ${request.kind} ${request.subject} ${request.arguments} — ${request.reasons.join('; ')} (risk ${request.risk.toFixed(2)})`);
      await runtime.approvals.decide(request.id, { by: FINANCE_APPROVER, approve: decision.approve, note: decision.note });
      return;
    }
    const record = await runtime.run(runId).record();
    if (record?.status !== 'running') return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * The customer-support example end to end: on Redis with one worker process per agent when Redis
 * answers, otherwise in this process. Always stops what it started and deletes its Redis keys.
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const color = options.out === undefined && wantsColor();
  const bold = (text: string): string => (color ? `\x1b[1m${text}\x1b[22m` : text);
  const redisUrl = process.env.REDIS_URL ?? DEFAULT_REDIS_URL;
  const shownUrl = redactUrl(redisUrl);

  let runtime: Runtime | undefined;
  let prefix: string | undefined;
  const workers: WorkerProcess[] = [];
  // Fresh link keys for this demo only: each worker reads its own file, the demo (the edge) edge.json.
  const keysDir = await mkdtemp(join(tmpdir(), 'palisade-demo-keys-'));
  const interrupt = new AbortController();
  const onSignal = (): void => interrupt.abort(new DemoInterruptedError());
  // `on`, not `once`: a second Ctrl-C (a terminal signals the whole group, and tsx relays) must not kill the cleanup.
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    out(bold('palisade demo: customer support with triage, billing, tech_support and fraud_check'));
    const unreachable = options.embedded ? 'skipped (--embedded)' : await pingRedis(redisUrl);
    let transport: 'redis' | 'embedded';
    if (unreachable === undefined) {
      transport = 'redis';
      prefix = `palisade-demo-${randomBytes(4).toString('hex')}`;
      const bull = new BullMQTransport({ connection: redisUrl, prefix });
      await generateKeys(keysDir, createSupportAgents());
      // The edge holds the policy too: it checks an approver's permission before recording a decision.
      runtime = new Runtime({ transport: bull, keys: await loadKeyring(keysDir, [EDGE]), policy: await loadPolicy(SUPPORT_POLICY) });
      for (const agent of SUPPORT_AGENTS) workers.push(spawnWorker(agent, redisUrl, prefix, keysDir));
      out(`Starting a worker process per agent (${SUPPORT_AGENTS.join(', ')}); waiting for each to announce itself on Redis…`);
      await waitForWorkers(workers, { announced: () => bull.knownAgents(), stallMs: WORKER_STALL_MS, reportEveryMs: 5000, out, signal: interrupt.signal });
      out(`Redis at ${shownUrl} — ${workers.length} agent workers in separate processes (pids ${workers.map((w) => `${w.agent} ${w.child.pid}`).join(', ')})`);
      out(`Redis keys under the prefix '${prefix}', deleted at the end. Every hop is authenticated with per-link keys (each worker holds only its own).`);
    } else {
      transport = 'embedded';
      if (options.embedded) out('Embedded in-process transport (--embedded): nothing is persisted.');
      else out(`No Redis answered at ${shownUrl} (${unreachable}): using the embedded in-process transport (nothing is persisted)`);
      await generateKeys(keysDir, createSupportAgents());
      const keys = await loadKeyring(keysDir, [EDGE, ...SUPPORT_AGENTS]);
      runtime = new Runtime({ agents: createSupportAgents(), transport: new EmbeddedTransport(), policy: await loadPolicy(SUPPORT_POLICY), keys });
      await runtime.startWorkers();
    }
    out(`Acting as '${PRINCIPAL.id}' (roles: ${PRINCIPAL.roles.join(', ')}). Every step is decided by the guards of ${relative(process.cwd(), SUPPORT_POLICY)}.`);

    const runs: DemoRun[] = [];
    for (const [i, scenario] of SCENARIOS.entries()) {
      if (interrupt.signal.aborted) break;
      out('');
      out(bold(`── ${i + 1}/${SCENARIOS.length}  ${scenario.title}`));
      out(`   "${scenario.input}"`);
      const run = await runtime.start('triage', scenario.input, { principal: PRINCIPAL });
      const approver = scenario.approval && decideWhenAsked(runtime, run.id, scenario.approval, out, interrupt.signal);
      const result = await followRun(run, { out, color, timeoutMs: 60_000, signal: interrupt.signal });
      await approver;
      if (scenario.rollback) {
        const stop = AbortSignal.any([interrupt.signal, AbortSignal.timeout(30_000)]);
        for await (const event of run.events({ pollMs: 200, until: (e) => e.type === 'rollback.completed', signal: stop })) {
          if (event.type.startsWith('rollback.') || event.type === 'action.compensated') out(formatEvent(event, { color }));
        }
      }
      const dead = workers.find(exited);
      if (dead && result.status !== scenario.expect) out(`   ${describeExit(dead)}`);
      const answer = result.status === 'completed' ? result.output ?? '' : result.error ?? result.status;
      out(`   ${bold(`Result (${result.status}${result.status === scenario.expect ? ', as expected' : `, expected ${scenario.expect}`}):`)} ${answer}`);
      runs.push({
        input: scenario.input,
        status: result.status,
        asExpected: result.status === scenario.expect,
        ...(result.output !== undefined ? { output: result.output } : {}),
        ...(result.error !== undefined ? { error: result.error } : {}),
      });
    }
    if (interrupt.signal.aborted) throw new DemoInterruptedError();
    out('');
    out(`${runs.filter((r) => r.asExpected).length} of ${runs.length} runs ended as expected on the ${transport} transport.`);
    return { transport, runs, ...(prefix !== undefined ? { prefix } : {}) };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const problems: string[] = [];
    await runtime?.close().catch((error: unknown) => problems.push(`closing the runtime: ${String(error)}`));
    await Promise.all(workers.map((w) => stopWorkerProcess(w))).catch((error: unknown) => problems.push(`stopping workers: ${String(error)}`));
    if (prefix) {
      await deleteKeys(redisUrl, prefix).then(
        (n) => out(`Cleaned up: workers stopped, ${n} keys under '${prefix}' deleted.`),
        (error: unknown) => problems.push(`deleting keys under '${prefix}': ${String(error)}`),
      );
    }
    await rm(keysDir, { recursive: true, force: true });
    for (const problem of problems) out(`warning: cleanup problem: ${problem}`);
  }
}
