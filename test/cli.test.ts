import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runDemo, type DemoResult } from '../runtime/cli/demo.js';
import type { RunEvent } from '../runtime/events.js';
import { formatEvent } from '../runtime/cli/progress.js';
import { startWorkerProcess, stopWorkerProcess, waitForWorkers, WORKER_STAGES, WorkerStartError, type WorkerProcess } from '../runtime/cli/worker-processes.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSupportAgents } from '../examples/support/system.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = `${root}node_modules/.bin/tsx`;

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): { child: ChildProcess; finished: Promise<Finished> } {
  const child = spawn(tsx, ['runtime/cli/main.ts', ...args], { cwd: root, env: { ...process.env, REDIS_URL, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const finished = new Promise<Finished>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { child, finished };
}

async function keysUnder(prefix: string): Promise<string[]> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } finally {
    redis.disconnect();
  }
}

function expectSupportOutcomes(result: DemoResult): void {
  expect(result.runs.map((r) => r.status)).toEqual(['completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'failed']);
  expect(result.runs.every((r) => r.asExpected)).toBe(true);
  const [refund, tech, foreign, overCap, approved, denied, leaked] = result.runs;
  expect(refund!.input).toContain('ORD-5001');
  expect(refund!.output).toMatch(/RF-\d+/);
  expect(tech!.output).toMatch(/pair/i);
  expect(foreign!.output).toMatch(/not on the account/);
  expect(overCap!.output).toMatch(/forbidden by refund-cap/);
  expect(approved!.output).toMatch(/refund RF-\d+ of 349\.00/);
  expect(denied!.output).toMatch(/not approved: denied by fin-lee: outside the 30-day return window/);
  expect(leaked!.error).toMatch(/reply withheld: flow: the context is restricted/);
}

/** The approval and rollback scenarios, as the demo printed them. */
function expectApprovalAndRollback(text: string): void {
  expect(text).toMatch(/\[billing\] ⏸ waits for approval of tool issue_refund .*needs approval under refund-approval/);
  expect(text).toContain('[run] ⚖ issue_refund approved by fin-lee: photo of the damage checked');
  expect(text).toContain('[billing] ▶ resumes after approved issue_refund');
  expect(text).toContain('[run] ⚖ issue_refund denied by fin-lee: outside the 30-day return window');
  expect(text).toContain('[billing] ↺ rollback of 1 action (failure)');
  expect(text).toContain('[billing] ↺ issue_refund undone');
  expect(text).toContain('[billing] ↺ rollback done: 1 undone, 0 failed, 0 not undoable');
  expect(text).toContain('7 of 7 runs ended as expected');
}

describe('palisade demo', () => {
  it('runs the support scenarios under the support policy on the embedded transport', { timeout: 60_000 }, async () => {
    const lines: string[] = [];
    const result = await runDemo({ embedded: true, out: (line) => lines.push(line) });
    expect(result.transport).toBe('embedded');
    expectSupportOutcomes(result);
    const text = lines.join('\n');
    expect(text).toMatch(/embedded in-process transport/i);
    // The refund path, live: handoff, delegation, the refund tool, guard decisions.
    expect(text).toContain('[triage] ⇢ handoff to billing');
    expect(text).toContain('[billing] ⇉ asks fraud_check');
    expect(text).toContain('[fraud_check] → tool fraud_score');
    expect(text).toContain('[billing] → tool issue_refund');
    expect(text).toMatch(/\[billing\] guard tool_call issue_refund: allow — risk: risk 0\.\d+ .*validated/);
    expect(text).toContain('[billing] guard tool_call issue_refund: block — permissions: forbidden by refund-cap');
    expect(text).toContain('[tech_support] → tool search_kb');
    expectApprovalAndRollback(text);
  });

  it('runs them on Redis with a worker process per agent and deletes its keys afterwards', { timeout: 90_000 }, async () => {
    const lines: string[] = [];
    const result = await runDemo({ out: (line) => lines.push(line) });
    expect(result.transport).toBe('redis');
    expectSupportOutcomes(result);
    const text = lines.join('\n');
    const announced = /Redis at \S+ — 4 agent workers in separate processes \(pids (.+)\)/.exec(text);
    expect(announced).not.toBeNull();
    const pids = [...announced![1]!.matchAll(/(\w+) (\d+)/g)].map((m) => Number(m[2]));
    expect(pids).toHaveLength(4);
    expect(new Set([...pids, process.pid]).size).toBe(5);
    expectApprovalAndRollback(text);
    expect(result.prefix).toMatch(/^palisade-demo-/);
    expect(await keysUnder(result.prefix!)).toEqual([]);
    // The workers are gone.
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('palisade CLI', () => {
  const prefixes: string[] = [];
  const children: ChildProcess[] = [];

  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((resolve) => child.once('close', resolve));
      }
    }
    for (const prefix of prefixes.splice(0)) await deleteKeys(prefix);
  });

  it('run: an unknown agent is a clear error with exit code 2', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('cli-unknown');
    prefixes.push(prefix);
    const { child, finished } = cli(['run', 'nosuchagent', 'hi', '--user', 'u1', '--prefix', prefix]);
    children.push(child);
    const { code, stderr } = await finished;
    expect(code).toBe(2);
    expect(stderr).toMatch(/unknown agent 'nosuchagent'/);
    expect(stderr).toMatch(/local development identity.*not verified/);
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('worker + run: a request crosses processes and the progress shows the handoff and the tool call', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('cli-run');
    prefixes.push(prefix);
    const worker = cli(['worker', 'examples/support/system.ts', '--prefix', prefix]);
    children.push(worker.child);
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      worker.child.stdout!.on('data', (d) => {
        seen += String(d);
        if (seen.includes('serving')) resolve();
      });
      void worker.finished.then((f) => reject(new Error(`worker exited early (${f.code}): ${f.stderr}`)));
    });

    const run = cli(['run', 'triage', "My headphones won't pair", '--user', 'u1', '--roles', 'customer', '--prefix', prefix]);
    children.push(run.child);
    const { code, stdout, stderr } = await run.finished;
    expect(stderr).toMatch(/local development identity/);
    expect(code).toBe(0);
    expect(stdout).toContain('[triage] ⇢ handoff to tech_support');
    expect(stdout).toContain('[tech_support] → tool search_kb');
    expect(stdout).toMatch(/Hold the power button/);

    worker.child.kill('SIGTERM');
    const stopped = await worker.finished;
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toMatch(/serving triage, billing, fraud_check, tech_support .*prefix '[^']+' \(pid \d+/);
  });
});

describe('waiting for worker processes to start', () => {
  const started: WorkerProcess[] = [];
  const prefixes: string[] = [];
  const dirs: string[] = [];
  const waitOptions = { reportEveryMs: 5000, pollMs: 5, signal: new AbortController().signal };
  /** The test's own clock: it decides when time passes, so nothing depends on the machine's speed. */
  const clock = { at: 0, now: (): number => clock.at };

  afterEach(async () => {
    await Promise.all(started.splice(0).map((w) => stopWorkerProcess(w, 5000)));
    for (const prefix of prefixes.splice(0)) await deleteKeys(prefix);
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
    clock.at = 0;
  });

  /** A stand-in worker that reports a stage (`stage <name>`) or prints to stderr (`say <text>`) when told on stdin. */
  function fakeWorker(agent: string): WorkerProcess {
    const script = `
      const { reportStage } = await import(${JSON.stringify(`${root}runtime/cli/worker-processes.ts`)});
      const { createInterface } = await import('node:readline');
      createInterface({ input: process.stdin }).on('line', (line) => {
        const [command, ...words] = line.split(' ');
        if (command === 'stage') reportStage(words.join(' '));
        if (command === 'say') console.error(words.join(' '));
      });`;
    const worker = startWorkerProcess(agent, process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], clock.now);
    started.push(worker);
    return worker;
  }

  async function reportStage(worker: WorkerProcess, stage: string): Promise<void> {
    const received = once(worker.child, 'message');
    worker.child.stdin!.write(`stage ${stage}\n`);
    await received;
  }

  function realWorker(agent: string, prefix: string, keysDir: string): WorkerProcess {
    const args = ['--import', 'tsx', `${root}runtime/cli/main.ts`, 'worker', `${root}examples/support/system.ts`, '--agents', agent];
    const worker = startWorkerProcess(agent, process.execPath, [...args, '--keys', keysDir, '--prefix', prefix, '--redis', REDIS_URL, '--stop-with-stdin']);
    started.push(worker);
    return worker;
  }

  it('a worker that exits while starting is a clear error naming it, its stage and what it printed', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('cli-worker-exit');
    prefixes.push(prefix);
    const emptyKeys = await mkdtemp(join(tmpdir(), 'palisade-no-keys-'));
    dirs.push(emptyKeys);
    const worker = realWorker('billing', prefix, emptyKeys);
    const error = await waitForWorkers([worker], { ...waitOptions, announced: async () => [], stallMs: 600_000, out: () => undefined }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerStartError);
    expect((error as WorkerStartError).agent).toBe('billing');
    expect((error as Error).message).toMatch(/^the billing worker \(pid \d+\) exited with code 2 while loading definitions:\n/);
    expect((error as Error).message).toMatch(/\[billing\] palisade: cannot read the key file .*billing\.json/);
  });

  it('a real worker reports each start-up stage and is waited for until it announces itself on Redis', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('cli-worker-stages');
    prefixes.push(prefix);
    const keysDir = await mkdtemp(join(tmpdir(), 'palisade-worker-keys-'));
    dirs.push(keysDir);
    await generateKeys(keysDir, createSupportAgents());
    const bull = new BullMQTransport({ connection: REDIS_URL, prefix });
    try {
      const worker = realWorker('fraud_check', prefix, keysDir);
      const stages: unknown[] = [];
      worker.child.on('message', (message: { palisadeWorkerStage?: string }) => stages.push(message.palisadeWorkerStage));
      await waitForWorkers([worker], { ...waitOptions, announced: () => bull.knownAgents(), stallMs: 600_000, out: () => undefined });
      // It announces itself, then reports that it serves.
      await vi.waitFor(() => expect(stages).toEqual(WORKER_STAGES), { timeout: 20_000 });
    } finally {
      await bull.close();
    }
  });

  it('waits for a slow worker for as long as it makes progress, and says what it waits for', async () => {
    const worker = fakeWorker('slowpoke');
    const announced = new Set<string>();
    const lines: string[] = [];
    const waited = waitForWorkers([worker], { ...waitOptions, announced: async () => announced, stallMs: 60_000, out: (line) => lines.push(line), now: clock.now });
    for (const [i, stage] of WORKER_STAGES.entries()) {
      // Each step is slow, none a stall; together they take far longer than the stall limit.
      clock.at += 50_000;
      await vi.waitFor(() => expect(lines).toHaveLength(i + 1), { timeout: 20_000 });
      await reportStage(worker, stage);
    }
    announced.add('slowpoke');
    await waited;
    expect(lines).toEqual([
      '   still waiting after 50 s for slowpoke (loading code)',
      '   still waiting after 100 s for slowpoke (loading definitions)',
      '   still waiting after 150 s for slowpoke (connecting to Redis)',
      '   still waiting after 200 s for slowpoke (starting consumers)',
    ]);
  });

  it('gives up on a worker that makes no progress, naming it with its stage and output', async () => {
    const worker = fakeWorker('stuck');
    const failed = waitForWorkers([worker], { ...waitOptions, announced: async () => [], stallMs: 60_000, out: () => undefined, now: clock.now }).catch((e: unknown) => e);
    await reportStage(worker, 'connecting to Redis');
    worker.child.stdin!.write('say still waiting for a lock\n');
    // Printing is not progress: only a new stage (or the announcement) is.
    await vi.waitFor(() => expect(worker.output).toContain('still waiting for a lock'), { timeout: 20_000 });
    clock.at += 60_000;
    const error = await failed;
    expect(error).toBeInstanceOf(WorkerStartError);
    expect((error as Error).message).toBe(
      `the stuck worker (pid ${worker.child.pid}) made no progress for 60 s while connecting to Redis (started 60 s ago); stopped waiting for it:\n    [stuck] still waiting for a lock`,
    );
  });
});

describe('formatEvent', () => {
  const at = Date.now();

  it('approvals list/show/approve and rollback: an approver decides a waiting refund from the command line, an operator undoes it', { timeout: 90_000 }, async () => {
    const prefix = uniquePrefix('cli-approvals');
    const keysDir = await mkdtemp(join(tmpdir(), 'palisade-cli-approvals-'));
    const agents = createSupportAgents();
    await generateKeys(keysDir, agents);
    const rt = new Runtime({
      agents,
      policy: await loadPolicy('examples/support/policy.yaml'),
      keys: await loadKeyring(keysDir, [EDGE, ...agents.map((a) => a.name)]),
      transport: new BullMQTransport({ connection: REDIS_URL, prefix }),
    });
    try {
      await rt.startWorkers();
      const run = await rt.start('triage', 'Refund my espresso machine, order ORD-5004, ada@example.com', { principal: { id: 'ada', roles: ['customer'] } });
      let approvalId = '';
      for await (const e of run.events({ pollMs: 50 })) {
        if (e.type === 'approval.requested') {
          approvalId = e.approvalId;
          break;
        }
      }
      const conn = ['--prefix', prefix, '--redis', REDIS_URL];
      const listed = await cli(['approvals', 'list', ...conn]).finished;
      expect(listed.code).toBe(0);
      expect(listed.stdout).toMatch(new RegExp(`^${approvalId}  tool issue_refund  run ${run.id}  for ada  risk 0\\.70  \\d+ s left$`, 'm'));
      const shown = await cli(['approvals', 'show', approvalId, ...conn]).finished;
      expect(shown.stdout).toContain('chain     triage → billing');
      expect(shown.stdout).toContain('arguments {"orderId":"ORD-5004","amountCents":34900,"reason":"customer request"}');
      expect(shown.stdout).toContain('needs     approve:tool:issue_refund (not ada)');

      const decide = ['--policy', 'examples/support/policy.yaml', '--keys', keysDir, ...conn];
      const refused = await cli(['approvals', 'approve', approvalId, '--user', 'ada', '--roles', 'customer', ...decide]).finished;
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/palisade: 'ada' lacks the permission approve:tool:issue_refund/);
      const approved = await cli(['approvals', 'approve', approvalId, '--user', 'fin-lee', '--roles', 'finance', '--note', 'receipt checked', ...decide]).finished;
      expect(approved.code).toBe(0);
      expect(approved.stdout).toContain(`${approvalId}: approved by fin-lee`);
      expect(approved.stderr).toMatch(/NOT VERIFIED/);
      await expect(run.result({ timeoutMs: 15_000 })).resolves.toMatchObject({ output: expect.stringMatching(/refund RF-\d+ of 349\.00/) });

      const rolledBack = await cli(['rollback', run.id, '--user', 'ops-1', '--reason', 'chargeback', '--keys', keysDir, ...conn]).finished;
      expect(rolledBack.stdout).toMatch(/^rollback \w+: 1 action\(s\) to undo$/m);
      expect(rolledBack.stdout).toMatch(/issue_refund \(.+\): undone/);
      expect(rolledBack.stdout).toContain('done: 1 undone, 0 failed, 0 without a compensation');
      expect(rolledBack.code).toBe(0);
    } finally {
      await rt.close({ timeoutMs: 1000 });
      await rm(keysDir, { recursive: true, force: true });
      await deleteKeys(prefix);
    }
  });

  it('prints guard decisions with their stage, subject, verdict and reasons', () => {
    const event: RunEvent = { at, agent: 'billing', type: 'guard.decision', stage: 'tool_call', verdict: 'block', reasons: ['refunds need a manager', 'over limit'], risk: 0.8, subject: 'issue_refund' };
    expect(formatEvent(event)).toBe('  [billing] guard tool_call issue_refund: block — refunds need a manager; over limit (risk 0.80)');
  });

  it('prints rejected envelopes with the reason and keeps control characters out of the terminal', () => {
    const rejected: RunEvent = { at, agent: 'billing', type: 'envelope.rejected', reason: 'malformed job data: envelope.chain: Required' };
    expect(formatEvent(rejected)).toBe('  [billing] ⊘ envelope rejected: malformed job data: envelope.chain: Required');
    const completed: RunEvent = { at, agent: 'x', type: 'run.completed', output: 'ok\x1b[2J\nsecond line' };
    const line = formatEvent(completed);
    expect(line).not.toMatch(/[\x00-\x1f]/);
    expect(line).toBe('  [x] ✓ completed: ok [2J second line');
  });

  it('prints model responses with token counts and colours only when asked', () => {
    const event: RunEvent = { at, agent: 'triage', type: 'model.response', model: 'gpt-4o-mini', toolCalls: ['transfer_to_billing'], text: false, inputTokens: 120, outputTokens: 9 };
    expect(formatEvent(event)).toBe('  [triage] ◆ model gpt-4o-mini: calls transfer_to_billing (120 in / 9 out tokens)');
    expect(formatEvent(event, { color: true })).toContain('\x1b[');
  });
});
