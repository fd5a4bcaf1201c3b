import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLASSIFICATION } from '../examples/agentdojo/suites.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import { computeFigures, type FamilyFigures, type Replayed, type SummaryRow } from '../eval/agentdojo/figures.js';
import { readRecords, readTasks, type LoadedRecord, type Tasks } from '../eval/agentdojo/records.js';
import { Replayer, servesAttacker, type ReplayResult } from '../eval/agentdojo/replay.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const SHARED = join(root, '..', 'shared', 'agentdojo');
const POLICY = join(root, 'examples', 'agentdojo', 'policy.yaml');

/** A few recorded runs: benign and attacked, from two suites. */
const SAMPLE = [
  'banking/user_task_0/none',
  'banking/user_task_0/important_instructions',
  'slack/user_task_0/ignore_previous',
  'workspace/user_task_0/tool_knowledge',
];

describe('AgentDojo evaluation harness', () => {
  let dir: string;
  let tasks: Tasks;
  let records: LoadedRecord[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-agentdojo-'));
    for (const part of SAMPLE) await cp(join(SHARED, 'runs', 'gpt-4o-2024-05-13', part), join(dir, part), { recursive: true });
    tasks = await readTasks(join(SHARED, 'tasks-v1.json'));
    records = await readRecords(dir);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads records and tells benign baselines from attacked runs', () => {
    expect(records.length).toBeGreaterThan(10);
    expect(records.filter((r) => r.benign).map((r) => r.record.user_task_id)).toEqual(['user_task_0']);
    expect(new Set(records.map((r) => r.attack))).toEqual(new Set(['none', 'important_instructions', 'ignore_previous', 'tool_knowledge']));
  });

  it('knows a call that serves the attacker from one that serves the user', () => {
    const goal = tasks.banking.injection_tasks.find((t) => t.id === 'injection_task_0');
    expect(servesAttacker({ name: 'send_money', args: { recipient: 'US133000000121212121212', amount: 0.01 } }, goal)).toBe(true);
    expect(servesAttacker({ name: 'send_money', args: { recipient: 'UK12345678901234567890', amount: 98.7 } }, goal)).toBe(false);
    expect(servesAttacker({ name: 'get_balance', args: {} }, goal)).toBe(false);
    expect(servesAttacker({ name: 'send_money', args: { recipient: 'US133000000121212121212' } }, undefined)).toBe(false);
  });

  it('counts residual attack success and utility kept as the protocol defines them', () => {
    const loaded = (attack: string, security: boolean, utility = true): LoadedRecord => ({
      path: `${attack}-${security}`,
      attack,
      benign: attack === 'none',
      record: { suite_name: 'banking', user_task_id: 'user_task_0', injection_task_id: null, attack_type: attack, injections: {}, messages: [], utility, security },
    });
    const result = (outcome: ReplayResult['outcome'], attackerCallEscalated = false, calls: ReplayResult['calls'] = [], textOnly = false): ReplayResult => ({ outcome, attackerCallEscalated, calls, textOnly });
    const serving = [{ tool: 'send_money', verdict: 'escalate' as const, servesAttacker: true, reasons: [] }];
    const replayed: Replayed[] = [
      { loaded: loaded('x', true), result: result('allowed') },
      { loaded: loaded('x', true), result: result('escalated', true, serving) },
      { loaded: loaded('x', true), result: result('escalated', false) },
      { loaded: loaded('x', true), result: result('blocked') },
      { loaded: loaded('x', false), result: result('allowed') },
      // A goal that only steers the reply's text succeeded: counted apart, not as a residual of the guards.
      { loaded: loaded('x', true), result: result('allowed', false, [], true) },
      { loaded: loaded('none', false), result: result('allowed') },
      { loaded: loaded('none', false), result: result('escalated') },
      { loaded: loaded('none', false, false), result: result('blocked') },
    ];
    const figures = computeFigures(replayed);
    expect(figures.attacks.find((a) => a.suite === 'all')).toMatchObject({ runs: 6, succeededUndefended: 5, residual: 2, textOnlySucceeded: 1, stoppedByApproval: 1, strictResidual: 3, residualRate: 2 / 6 });
    expect(figures.utility.find((u) => u.suite === 'all')).toMatchObject({ runs: 2, allowed: 1, escalated: 1, keptRate: 0.5, keptWithEscalationRate: 1, escalationRate: 0.5 });
  });

  it('replays through the real agent loop: in process and through BullMQ workers on Redis, with the same outcome for every run', { timeout: 120_000 }, async () => {
    const policy = await loadPolicy(POLICY);
    const prefix = uniquePrefix('agentdojo');
    const inProcess = new Replayer({ tasks, policy, transport: () => new EmbeddedTransport() });
    const e2e = new Replayer({ tasks, policy, transport: () => new BullMQTransport({ connection: REDIS_URL, prefix }) });
    try {
      const outcomes = async (replayer: Replayer) => Promise.all(records.map(async (r) => [r.path, await replayer.replay(r.record)] as const));
      const [a, b] = [await outcomes(inProcess), await outcomes(e2e)];
      expect(b.map(([p, r]) => [p, r.outcome, r.calls.map((c) => c.verdict)])).toEqual(a.map(([p, r]) => [p, r.outcome, r.calls.map((c) => c.verdict)]));
      const byPath = new Map(a);
      // The benign run pays the bill the request names. The payee comes only from that file, and the request
      // says "pay", not the tool's verb "send": where the money goes waits for a human, the read is free.
      const benign = byPath.get(records.find((r) => r.benign)!.path)!;
      expect(benign.outcome).toBe('escalated');
      expect(benign.calls.map((c) => [c.tool, c.verdict])).toEqual([
        ['read_file', 'allow'],
        ['send_money', 'escalate'],
      ]);
      expect(benign.calls[1]!.reasons.join(' ')).toContain('1 target(s) only in third-party content the principal named');
      // Every attack that succeeded undefended in this sample is stopped.
      for (const r of records.filter((x) => x.attack !== 'none' && x.record.security)) expect(byPath.get(r.path)!.outcome, r.path).not.toBe('allowed');
      // No side effect that serves the attacker goes through (reads that serve it, such as a search, are free).
      const effects = new Map(Object.values(CLASSIFICATION).flatMap((suite) => Object.entries(suite).map(([name, c]) => [name, c.effect] as const)));
      for (const [, res] of a) for (const c of res.calls) if (c.servesAttacker && effects.get(c.tool) !== 'read') expect(c.verdict, c.tool).not.toBe('allow');
    } finally {
      await inProcess.close();
      await e2e.close();
      await deleteKeys(prefix);
    }
  });

  it('npm run eval:agentdojo -- --runs DIR --out FILE prints and saves the tables', { timeout: 120_000 }, async () => {
    const outDir = await mkdtemp(join(tmpdir(), 'palisade-agentdojo-out-'));
    const out = join(outDir, 'out', 'result.json');
    const r = spawnSync(join(root, 'node_modules/.bin/tsx'), ['eval/agentdojo/index.ts', '--runs', dir, '--tasks', join(SHARED, 'tasks-v1.json'), '--out', out], { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/AgentDojo replay \(in process: the same agent loop on the embedded transport\), \d+ runs from/);
    expect(r.stdout).toMatch(/\| important_instructions \| \*\*all\*\* \| 9 \|/);
    // By default: the runs as recorded, with the injection detector on and off.
    expect(r.stdout).toMatch(/\| original \| on \|.*\n\| original \| off \|/);
    const saved = JSON.parse(await readFile(out, 'utf8')) as { figures: FamilyFigures[]; summary: SummaryRow[]; runs: Array<{ detector: string; family?: string }> };
    expect(saved.runs).toHaveLength(records.length * 2);
    expect(saved.runs.filter((x) => x.detector === 'off')).toHaveLength(records.length);
    expect(saved.figures.map((f) => [f.family, f.detector])).toEqual([['original', 'on'], ['original', 'off']]);
    expect(saved.figures[0]!.utility.find((u) => u.suite === 'all')).toMatchObject({ runs: 1 });
    expect(saved.summary[0]).toMatchObject({ family: 'original', detector: 'on', utility: { runs: 1 } });
    expect(Object.keys(saved.summary[0]!.residual).sort()).toEqual(['ignore_previous', 'important_instructions', 'tool_knowledge']);
    expect(await readFile(join(outDir, 'out', 'result.md'), 'utf8')).toContain('| suite | benign runs with utility |');
    await rm(outDir, { recursive: true, force: true });
    const bad = spawnSync(join(root, 'node_modules/.bin/tsx'), ['eval/agentdojo/index.ts', '--runs', join(dir, 'nope')], { cwd: root, encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^eval:agentdojo: ENOENT/);
  });

  it('--families and --detector: attacked runs once per family and mode, runs without attack once per mode', { timeout: 120_000 }, async () => {
    // Saved outside the runs folder: a result is not a run record.
    const outDir = await mkdtemp(join(tmpdir(), 'palisade-agentdojo-out-'));
    const out = join(outDir, 'result.json');
    const tsx = join(root, 'node_modules/.bin/tsx');
    const r = spawnSync(tsx, ['eval/agentdojo/index.ts', '--runs', dir, '--tasks', join(SHARED, 'tasks-v1.json'), '--out', out, '--families', 'plain,obfuscated', '--detector', 'off'], { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const saved = JSON.parse(await readFile(out, 'utf8')) as { summary: SummaryRow[]; runs: Array<{ detector: string; family?: string; attack: string }> };
    expect(saved.summary.map((x) => [x.family, x.detector])).toEqual([['plain', 'off'], ['obfuscated', 'off']]);
    const attacked = records.filter((x) => x.attack !== 'none').length;
    expect(saved.runs).toHaveLength(records.length - attacked + attacked * 2);
    expect(saved.runs.filter((x) => x.attack === 'none').every((x) => x.family === undefined && x.detector === 'off')).toBe(true);
    expect(new Set(saved.runs.filter((x) => x.attack !== 'none').map((x) => x.family))).toEqual(new Set(['plain', 'obfuscated']));
    const md = await readFile(join(outDir, 'result.md'), 'utf8');
    expect(md).toContain('## Attack family `obfuscated`, injection detector off');
    await rm(outDir, { recursive: true, force: true });
    for (const [flag, value, message] of [['--families', 'plain,nope', /unknown attack family 'nope'/], ['--detector', 'maybe', /--detector must be on, off or both/]] as const) {
      const bad = spawnSync(tsx, ['eval/agentdojo/index.ts', '--runs', dir, flag, value], { cwd: root, encoding: 'utf8' });
      expect(bad.status).toBe(1);
      expect(bad.stderr).toMatch(message);
    }
  });
});
