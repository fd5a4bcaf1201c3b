import { Queue, type JobType } from 'bullmq';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import type { ModelProvider, ModelRequest, ModelResponse } from '../agents/model.js';
import { defineTool } from '../agents/tool.js';
import { ALLOW } from '../guards/decision.js';
import { defineGuard } from '../guards/guard.js';
import { PolicySchema, type PolicyInput } from '../guards/policy/policy.js';
import { RunFailedError } from '../runtime/errors.js';
import { TERMINAL_EVENTS, type RunEvent } from '../runtime/events.js';
import type { Run } from '../runtime/run.js';
import type { RunRecord } from '../runtime/stores/run-store.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

/**
 * Limits under racing delegations, on the real BullMQ transport with in-process workers.
 *
 * Every agent runs the same model: a `Spec` (sent as the run's input, or as the question of a
 * delegation) says how many tokens each of its turns spends and what each turn does (call the
 * `think` tool, or ask some agents at once); once the steps run out it answers. So each run
 * carries its own plan, many different runs race through the same queues, and what the runtime
 * must do with each is computable.
 */

type Ask = { to: string; spec: Spec };
type Step = 'think' | Ask[];
interface Spec {
  /** Tokens every model turn of this agent spends. */
  t: number;
  /** What each turn does; after the last, the agent answers. */
  s: Step[];
}

const NAMES = Array.from({ length: 12 }, (_, i) => `n${i}`);
const principal = { id: 'racer', roles: [] };

interface Turn {
  runId: string;
  agent: string;
  /** 0-based index of the turn in the agent's conversation. */
  turn: number;
  t: number;
}

/** A model whose every turn spends exactly `spec.t` tokens and does what the spec says. */
class SpecModel implements ModelProvider {
  readonly provider = 'test.spec';
  readonly model = 'spec';
  constructor(
    private readonly agent: string,
    private readonly turns: Turn[],
  ) {}

  async generate(request: ModelRequest): Promise<ModelResponse> {
    const first = request.messages[0];
    if (first?.role !== 'user') throw new Error('the conversation must start with the question');
    const spec = JSON.parse(first.content) as Spec;
    const turn = request.messages.filter((m) => m.role === 'assistant').length;
    this.turns.push({ runId: request.runId ?? '', agent: this.agent, turn, t: spec.t });
    const usage = { inputTokens: spec.t - Math.floor(spec.t / 3), outputTokens: Math.floor(spec.t / 3) };
    const id = (i: number) => `call_${request.messages.length}_${i}`;
    const step = spec.s[turn];
    if (step === undefined) return { content: `${this.agent} answers`, toolCalls: [], usage, model: this.model };
    if (step === 'think') return { content: null, toolCalls: [{ id: id(0), name: 'think', arguments: '{}' }], usage, model: this.model };
    const toolCalls = step.map((ask, i) => ({ id: id(i), name: `ask_${ask.to}`, arguments: JSON.stringify({ input: JSON.stringify(ask.spec) }) }));
    return { content: null, toolCalls, usage, model: this.model };
  }
}

const think = defineTool({ name: 'think', description: 'Think a little.', input: z.object({}), effect: 'read', run: () => 'thought' });

/** What a guard placed after the built-in ones saw (it sees only steps the limits guard let through). */
interface Observed {
  stage: string;
  runId: string;
  agent: string;
  chain: readonly string[];
  depth: number;
  hops: number;
  tokensLeft: number | undefined;
}

interface System {
  runtime: Runtime;
  transport: BullMQTransport;
  prefix: string;
  observed: Observed[];
  turns: Turn[];
}

const live = new Set<System>();

/** Twelve agents that may each ask any agent (themselves included: the cycle rule refuses that), served with concurrency 16. */
async function boot(limits: NonNullable<PolicyInput['limits']>): Promise<System> {
  const prefix = uniquePrefix('limits-race');
  const observed: Observed[] = [];
  const turns: Turn[] = [];
  const observer = defineGuard({
    name: 'observer',
    stages: ['receive', 'handoff', 'tool_call'],
    check(e) {
      observed.push({ stage: e.stage, runId: e.runId, agent: e.agent, chain: [...e.chain], depth: e.depth, hops: e.hops, tokensLeft: e.budget?.tokensLeft });
      return ALLOW;
    },
  });
  const agents = NAMES.map((name) => defineAgent({ name, instructions: 'Follow the plan.', tools: [think], delegates: NAMES, model: new SpecModel(name, turns) }));
  const transport = new BullMQTransport({ connection: REDIS_URL, prefix });
  const runtime = new Runtime({ agents, transport, policy: PolicySchema.parse({ version: 1, limits }), guards: [observer] });
  const system = { runtime, transport, prefix, observed, turns };
  live.add(system);
  await runtime.startWorkers({ concurrency: 16 });
  return system;
}

async function shutdown(system: System): Promise<void> {
  if (!live.delete(system)) return;
  await system.runtime.close({ timeoutMs: 2000 });
  await deleteKeys(system.prefix);
}

afterEach(async () => {
  await Promise.all([...live].map(shutdown));
});

interface Ended {
  run: Run;
  record: RunRecord;
  /** Every event of the run, including any written after its end. */
  events: RunEvent[];
  total: number;
}

/** Waits for the run to end (a timeout fails the test: the run is stuck) and reads its record and every event. */
async function settle(system: System, run: Run, timeoutMs = 25_000): Promise<Ended> {
  await run.result({ timeoutMs }).catch((error: unknown) => {
    if (!(error instanceof RunFailedError)) throw error;
  });
  const record = (await run.record())!;
  const cursor = system.transport.store.openEvents(run.id);
  const events: RunEvent[] = [];
  try {
    for (;;) {
      const batch = await cursor.read(5);
      if (batch.length === 0) break;
      events.push(...batch.map((b) => b.event));
    }
  } finally {
    await cursor.close();
  }
  return { run, record, events, total: record.usage.inputTokens + record.usage.outputTokens };
}

const ofType = <T extends RunEvent['type']>(events: readonly RunEvent[], type: T) => events.filter((e): e is Extract<RunEvent, { type: T }> => e.type === type);
const blocks = (events: readonly RunEvent[], stage: string) => ofType(events, 'guard.decision').filter((d) => d.stage === stage && d.verdict === 'block');
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const leaf: Spec = { t: 1, s: [] };
const PROPERTY = { endOnFailure: true } as const;

/** A run ends exactly once: one terminal event, the last one, agreeing with the record. */
function expectEndedOnce({ record, events }: Ended): void {
  expect(['completed', 'failed']).toContain(record.status);
  const terminal = events.filter((e) => TERMINAL_EVENTS.has(e.type));
  expect(terminal.map((e) => e.type)).toEqual([record.status === 'completed' ? 'run.completed' : 'run.failed']);
  expect(events[events.length - 1]).toBe(terminal[0]);
  if (record.status === 'failed') expect(record.error).toBeTruthy();
}

/**
 * Every delegation that started was delivered once and answered once: one fresh activation and one
 * `delegation.completed` each, under any interleaving of the workers.
 */
function expectDelegationsAccountedFor({ events }: Ended): void {
  const started = ofType(events, 'delegation.started');
  const fresh = ofType(events, 'agent.started').filter((e) => !e.resumed);
  expect(fresh.filter((e) => e.kind === 'delegate')).toHaveLength(started.length);
  expect(fresh.filter((e) => e.kind === 'start')).toHaveLength(1);
  expect(ofType(events, 'delegation.completed').map((e) => e.callId).sort()).toEqual(started.map((e) => e.callId).sort());
}

describe('limits under racing delegations (BullMQ, real Redis)', () => {
  it('fan-out: a turn asking K > maxFanOut delegates starts none of them, a turn asking K <= F starts all K, and every run completes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        // Per run, the coordinator's turns, each asking K agents at once (n1..nK).
        fc.array(fc.array(fc.integer({ min: 1, max: 10 }), { minLength: 1, maxLength: 3 }), { minLength: 6, maxLength: 6 }),
        async (F, plans) => {
          const system = await boot({ maxFanOut: F, maxHops: 1000, maxDepth: 3 });
          try {
            const specOf = (plan: number[]): Spec => ({ t: 1, s: plan.map((k) => Array.from({ length: k }, (_, i) => ({ to: `n${i + 1}`, spec: leaf }))) });
            const runs = await Promise.all(plans.map((plan) => system.runtime.start('n0', JSON.stringify(specOf(plan)), { principal })));
            const ended = await Promise.all(runs.map((run) => settle(system, run)));
            for (const [r, outcome] of ended.entries()) {
              const plan = plans[r]!;
              expect(outcome.record.status).toBe('completed');
              expectEndedOnce(outcome);
              expectDelegationsAccountedFor(outcome);
              // The coordinator's events, cut at each model turn.
              const own = outcome.events.filter((e) => e.agent === 'n0');
              const cuts = own.flatMap((e, i) => (e.type === 'model.response' ? [i] : []));
              expect(cuts).toHaveLength(plan.length + 1);
              for (const [j, k] of plan.entries()) {
                const turn = own.slice(cuts[j]! + 1, cuts[j + 1]);
                const started = ofType(turn, 'delegation.started');
                const refused = blocks(turn, 'handoff');
                expect(started.length).toBeLessThanOrEqual(F);
                if (k <= F) {
                  expect(started.map((e) => e.to)).toEqual(Array.from({ length: k }, (_, i) => `n${i + 1}`));
                  expect(refused).toEqual([]);
                } else {
                  expect(started).toEqual([]);
                  expect(refused).toHaveLength(k);
                  for (const d of refused) expect(d.reasons).toEqual([`limits: ${k} delegations in one turn exceed the fan-out limit of ${F}`]);
                }
              }
              const expected = sum(plan.map((k) => (k <= F ? k : 0)));
              expect(ofType(outcome.events, 'delegation.completed').filter((e) => e.status === 'completed')).toHaveLength(expected);
            }
          } finally {
            await shutdown(system);
          }
        },
      ),
      { numRuns: 8, ...PROPERTY },
    );
  }, 60_000);

  it('token budget: 20 racing runs, each fanning out to delegates that spend over several turns; shares are equal, no turn starts after a share is spent, and the overspend is at most one turn per agent', async () => {
    const POLICY_TOKENS = 400;
    const system = await boot({ maxFanOut: 10, maxDepth: 3, budget: { tokens: POLICY_TOKENS } });
    const arbRun = fc.record({
      /** Asked by the starter; the policy caps it (and fills it in when absent). */
      requested: fc.option(fc.oneof(fc.noBias(fc.integer({ min: 1, max: 60 })), fc.noBias(fc.integer({ min: 1, max: 600 }))), { nil: undefined }),
      tc: fc.noBias(fc.integer({ min: 1, max: 40 })),
      workers: fc.array(fc.record({ t: fc.noBias(fc.integer({ min: 1, max: 60 })), n: fc.integer({ min: 1, max: 5 }) }), { minLength: 1, maxLength: 6 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(arbRun, { minLength: 20, maxLength: 20 }), async (configs) => {
        const specOf = (c: (typeof configs)[number]): Spec => ({
          t: c.tc,
          s: [c.workers.map((w, i) => ({ to: `n${i + 1}`, spec: { t: w.t, s: Array.from({ length: w.n - 1 }, () => 'think' as const) } }))],
        });
        const runs = await Promise.all(configs.map((c) => system.runtime.start('n0', JSON.stringify(specOf(c)), { principal, ...(c.requested !== undefined ? { budget: { tokens: c.requested } } : {}) })));
        const ended = await Promise.all(runs.map((run) => settle(system, run)));
        for (const [r, outcome] of ended.entries()) {
          const { workers, tc, requested } = configs[r]!;
          const runId = outcome.run.id;
          const B = Math.min(requested ?? Infinity, POLICY_TOKENS);
          const K = workers.length;
          expectEndedOnce(outcome);
          expectDelegationsAccountedFor(outcome);
          const turnsOf = (agent: string) => system.turns.filter((t) => t.runId === runId && t.agent === agent).map((t) => t.turn);
          const seen = (agent: string) => system.observed.filter((o) => o.runId === runId && o.agent === agent && o.stage === 'receive');
          // The coordinator received the whole budget.
          expect(seen('n0').map((o) => o.tokensLeft)).toEqual([B]);

          // What the worker (runtime/worker/) implements, computed independently.
          let expectedTotal: number;
          if (tc >= B) {
            // Its first turn spent everything: no delegation starts, no second turn.
            expect(ofType(outcome.events, 'delegation.started')).toEqual([]);
            expect(blocks(outcome.events, 'handoff')).toHaveLength(K);
            for (const d of blocks(outcome.events, 'handoff')) expect(d.reasons).toEqual(['limits: the run has no token budget left']);
            expect(turnsOf('n0')).toEqual([0]);
            expectedTotal = tc;
            expect(outcome.record.status).toBe('failed');
            expect(outcome.record.error).toBe(`the run's token budget is spent (${tc} of ${B} tokens)`);
          } else {
            // Delegations of one turn split what is left equally.
            const share = Math.floor((B - tc) / K);
            let spent = tc;
            for (const [i, w] of workers.entries()) {
              const agent = `n${i + 1}`;
              const turns = turnsOf(agent);
              if (share === 0) {
                // Nothing left for it: refused when it arrives, before any turn.
                expect(turns).toEqual([]);
                expect(blocks(outcome.events, 'receive').filter((d) => d.agent === agent).map((d) => d.reasons)).toEqual([['limits: the run has no token budget left']]);
                continue;
              }
              expect(seen(agent).map((o) => o.tokensLeft)).toEqual([share]);
              // A turn starts only while the agent's own spending is under its share.
              for (const j of turns) expect(j * w.t).toBeLessThan(share);
              const n = Math.min(w.n, Math.ceil(share / w.t));
              expect(turns).toEqual(Array.from({ length: n }, (_, j) => j));
              spent += n * w.t;
              const answered = ofType(outcome.events, 'delegation.completed').find((e) => e.to === agent)!;
              expect(answered.status).toBe(n === w.n ? 'completed' : 'failed');
            }
            if (spent >= B) {
              expect(turnsOf('n0')).toEqual([0]);
              expectedTotal = spent;
              expect(outcome.record.status).toBe('failed');
              expect(outcome.record.error).toBe(`the run's token budget is spent (${spent} of ${B} tokens)`);
            } else {
              expect(turnsOf('n0')).toEqual([0, 1]);
              expectedTotal = spent + tc;
              expect(outcome.record.status).toBe('completed');
            }
          }
          expect(outcome.total).toBe(expectedTotal);
          // The guarantee in general terms: the budget, plus less than one turn of each agent that can be mid-turn when its share runs out.
          expect(outcome.total - B).toBeLessThanOrEqual(Math.max(tc - 1, sum(workers.map((w) => w.t - 1))));
          expect(outcome.total).toBeLessThanOrEqual(B + (K + 1) * Math.max(tc, ...workers.map((w) => w.t)));
        }
      }),
      { numRuns: 6, ...PROPERTY },
    );
    await shutdown(system);
  }, 60_000);

  it('depth: nested delegation chains deeper than maxDepth are refused at the first agent that would exceed it, under concurrency', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 4 }), fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 8, maxLength: 8 }), async (D, lengths) => {
        const system = await boot({ maxDepth: D, maxHops: 1000, maxFanOut: 4 });
        try {
          // n0 asks n1, which asks n2, ... down to nL.
          const chain = (i: number, L: number): Spec => ({ t: 1, s: i < L ? [[{ to: `n${i + 1}`, spec: chain(i + 1, L) }]] : [] });
          const runs = await Promise.all(lengths.map((L) => system.runtime.start('n0', JSON.stringify(chain(0, L)), { principal })));
          const ended = await Promise.all(runs.map((run) => settle(system, run)));
          for (const [r, outcome] of ended.entries()) {
            const L = lengths[r]!;
            const reached = Math.min(L, D);
            expect(outcome.record.status).toBe('completed');
            expectEndedOnce(outcome);
            expectDelegationsAccountedFor(outcome);
            const chains = ofType(outcome.events, 'agent.started')
              .filter((e) => !e.resumed)
              .map((e) => e.chain);
            expect(chains.map((c) => c.length).sort((a, b) => a - b)).toEqual(Array.from({ length: reached + 1 }, (_, i) => i + 1));
            for (const c of chains) {
              expect(c.length).toBeLessThanOrEqual(D + 1);
              expect(c).toEqual(NAMES.slice(0, c.length));
            }
            const received = system.observed.filter((o) => o.runId === outcome.run.id && o.stage === 'receive');
            for (const o of received) {
              expect(o.depth).toBeLessThanOrEqual(D);
              expect(o.depth).toBe(o.chain.length - 1);
            }
            const refused = blocks(outcome.events, 'handoff');
            if (L > D) {
              expect(refused.map((d) => [d.agent, d.reasons])).toEqual([[`n${D}`, [`limits: delegating to 'n${D + 1}' would reach depth ${D + 1}, over the limit of ${D}`]]]);
            } else {
              expect(refused).toEqual([]);
            }
          }
        } finally {
          await shutdown(system);
        }
      }),
      { numRuns: 6, ...PROPERTY },
    );
  }, 60_000);

  it('hops: across parallel runs no envelope carries more than maxHops, and each activation numbers its sends on from the hops it received', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        // Per run: n0 asks n1..nk at once; n(i+1) then asks n11 s_i times at once.
        fc.array(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 8 }), { minLength: 8, maxLength: 8 }),
        async (H, trees) => {
          const system = await boot({ maxHops: H, maxFanOut: 10, maxDepth: 3 });
          try {
            const specOf = (fan: number[]): Spec => ({
              t: 1,
              s: [fan.map((s, i) => ({ to: `n${i + 1}`, spec: { t: 1, s: s > 0 ? [Array.from({ length: s }, () => ({ to: 'n11', spec: leaf }))] : [] } }))],
            });
            const runs = await Promise.all(trees.map((fan) => system.runtime.start('n0', JSON.stringify(specOf(fan)), { principal })));
            const ended = await Promise.all(runs.map((run) => settle(system, run)));
            for (const [r, outcome] of ended.entries()) {
              const fan = trees[r]!;
              expect(outcome.record.status).toBe('completed');
              expectEndedOnce(outcome);
              expectDelegationsAccountedFor(outcome);
              const received = system.observed.filter((o) => o.runId === outcome.run.id && o.stage === 'receive');
              for (const o of received) expect(o.hops).toBeLessThanOrEqual(H);
              const hopsOf = (chain: string[]) => received.filter((o) => o.chain.join() === chain.join()).map((o) => o.hops).sort((a, b) => a - b);
              let refusedForHops = Math.max(0, fan.length - H);
              let delegations = Math.min(fan.length, H);
              for (const [i, s] of fan.entries()) {
                const worker = `n${i + 1}`;
                const h = i + 1;
                if (h > H) {
                  expect(hopsOf(['n0', worker])).toEqual([]);
                  continue;
                }
                expect(hopsOf(['n0', worker])).toEqual([h]);
                const sent = Math.max(0, Math.min(s, H - h));
                expect(hopsOf(['n0', worker, 'n11'])).toEqual(Array.from({ length: sent }, (_, j) => h + j + 1));
                refusedForHops += s - sent;
                delegations += sent;
              }
              const refused = blocks(outcome.events, 'handoff');
              expect(refused).toHaveLength(refusedForHops);
              for (const d of refused) expect(d.reasons).toEqual([`limits: the run has made ${H} hops, the limit is ${H}`]);
              expect(ofType(outcome.events, 'delegation.started')).toHaveLength(delegations);
            }
          } finally {
            await shutdown(system);
          }
        },
      ),
      { numRuns: 6, ...PROPERTY },
    );
  }, 60_000);

  /** n0 asks n1 (which asks n11 twice), then asks n2 (which asks n11 once): five delegations in one run, sequentially. */
  const HOP_LIMIT = 3;
  const sequentialHops: Spec = {
    t: 1,
    s: [[{ to: 'n1', spec: { t: 1, s: [[{ to: 'n11', spec: leaf }, { to: 'n11', spec: leaf }]] } }], [{ to: 'n2', spec: { t: 1, s: [[{ to: 'n11', spec: leaf }]] } }]],
  };
  async function runSequentialHops(): Promise<{ system: System; outcome: Ended }> {
    const system = await boot({ maxHops: HOP_LIMIT, maxFanOut: 4, maxDepth: 3 });
    const run = await system.runtime.start('n0', JSON.stringify(sequentialHops), { principal });
    return { system, outcome: await settle(system, run) };
  }

  it('hops: a run makes at most maxHops handoffs plus delegations, counting what its delegates sent', async () => {
    const { system, outcome } = await runSequentialHops();
    expect(outcome.record.status).toBe('completed');
    const received = system.observed.filter((o) => o.runId === outcome.run.id && o.stage === 'receive');
    // n1's two delegations count toward n0's hops: asking n2 afterwards would be the fourth hop.
    expect(received.map((o) => `${o.chain.join('>')}@${o.hops}`).sort()).toEqual(['n0@0', 'n0>n1@1', 'n0>n1>n11@2', 'n0>n1>n11@3'].sort());
    expect(ofType(outcome.events, 'delegation.started').length).toBeLessThanOrEqual(HOP_LIMIT);
    expect(blocks(outcome.events, 'handoff').map((d) => d.subject)).toEqual(['n2']);
  });

  it('50 runs at once, random delegation trees against every limit: all end, each exactly as the limits dictate, and no job is left behind', async () => {
    const limits = { maxDepth: 2, maxFanOut: 3, maxHops: 4 };
    const POLICY_TOKENS = 300;
    const arbSpec = (level: number): fc.Arbitrary<Spec> =>
      fc.record({
        t: fc.integer({ min: 1, max: 50 }),
        s: fc.array(
          level === 0
            ? fc.constant<Step>('think')
            : fc.oneof(fc.constant<Step>('think'), fc.array(fc.record({ to: fc.constantFrom(...NAMES), spec: arbSpec(level - 1) }), { minLength: 1, maxLength: level + 2 })),
          { maxLength: level === 0 ? 2 : 3 },
        ),
      });
    const arbRun = fc.record({ spec: arbSpec(3), requested: fc.option(fc.integer({ min: 1, max: 400 }), { nil: undefined }) });
    await fc.assert(
      fc.asyncProperty(fc.array(arbRun, { minLength: 50, maxLength: 50 }), async (configs) => {
        const system = await boot({ ...limits, budget: { tokens: POLICY_TOKENS } });
        try {
          const runs = await Promise.all(
            configs.map((c) => system.runtime.start('n0', JSON.stringify(c.spec), { principal, ...(c.requested !== undefined ? { budget: { tokens: c.requested } } : {}) })),
          );
          const ended = await Promise.all(runs.map((run) => settle(system, run)));
          let jobs = 0;
          for (const [r, outcome] of ended.entries()) {
            const { spec, requested } = configs[r]!;
            const B = Math.min(requested ?? Infinity, POLICY_TOKENS);
            const tally = newTally();
            const expected = simulate(spec, { chain: ['n0'], depth: 0, hops: 0, budget: B }, limits, tally);
            jobs += 1 + tally.delegations;
            expectEndedOnce(outcome);
            expectDelegationsAccountedFor(outcome);
            expect(outcome.record.status).toBe(expected.status);
            if (expected.error) expect(outcome.record.error).toBe(expected.error);
            expect(outcome.total).toBe(expected.usage);
            expect(outcome.total).toBeLessThanOrEqual(B + overshootBound(spec));
            const { events } = outcome;
            expect(ofType(events, 'delegation.started')).toHaveLength(tally.delegations);
            expect(ofType(events, 'model.response')).toHaveLength(tally.turns);
            expect(ofType(events, 'tool.called')).toHaveLength(tally.thoughts);
            expect(blocks(events, 'tool_call')).toHaveLength(tally.thoughtsRefused);
            expect(blocks(events, 'receive')).toHaveLength(tally.refusedOnArrival);
            const refused = blocks(events, 'handoff').map((d) => classify(d.reasons[0] ?? ''));
            expect(countBy(refused)).toEqual(countBy(Object.entries(tally.refused).flatMap(([why, n]) => Array<string>(n).fill(why))));
            for (const o of system.observed.filter((x) => x.runId === outcome.run.id && x.stage === 'receive')) {
              expect(o.depth).toBeLessThanOrEqual(limits.maxDepth);
              expect(o.hops).toBeLessThanOrEqual(limits.maxHops);
              expect(new Set(o.chain).size).toBe(o.chain.length);
            }
          }
          // Nothing is stuck in a queue: every job of every run (the starts and each delegation) completed.
          await expect.poll(() => jobCounts(system), { timeout: 5000, interval: 50 }).toEqual({ completed: jobs, failed: 0, active: 0, wait: 0, 'waiting-children': 0, delayed: 0, prioritized: 0 });
        } finally {
          await shutdown(system);
        }
      }),
      { numRuns: 3, ...PROPERTY },
    );
  }, 60_000);
});

type Refusal = 'budget' | 'depth' | 'hops' | 'fanout' | 'cycle';
interface Tally {
  delegations: number;
  turns: number;
  thoughts: number;
  thoughtsRefused: number;
  refusedOnArrival: number;
  refused: Record<Refusal, number>;
}
const newTally = (): Tally => ({ delegations: 0, turns: 0, thoughts: 0, thoughtsRefused: 0, refusedOnArrival: 0, refused: { budget: 0, depth: 0, hops: 0, fanout: 0, cycle: 0 } });

function classify(reason: string): string {
  if (reason === 'limits: the run has no token budget left') return 'budget';
  if (/^limits: delegating to '\w+' would reach depth \d+, over the limit of \d+$/.test(reason)) return 'depth';
  if (/^limits: the run has made \d+ hops, the limit is \d+$/.test(reason)) return 'hops';
  if (/^limits: \d+ delegations in one turn exceed the fan-out limit of \d+$/.test(reason)) return 'fanout';
  if (/^limits: '\w+' is already in the chain .*: cycles are not allowed$/.test(reason)) return 'cycle';
  return `unexpected: ${reason}`;
}

const countBy = (xs: readonly string[]): Record<string, number> => xs.reduce<Record<string, number>>((acc, x) => ({ ...acc, [x]: (acc[x] ?? 0) + 1 }), {});

/**
 * The limits as README and the worker (runtime/worker/) define them, for one activation and everything it asks:
 * a turn starts only while the activation's spending (its turns and its delegates' answers) is
 * under its budget; the delegations of one turn split what is left equally; the sender checks
 * budget, depth, hops (its envelope's plus its own and its answered delegates' sends), fan-out and cycles in that order, and
 * the receiver refuses an envelope with no budget left.
 */
function simulate(
  spec: Spec,
  env: { chain: string[]; depth: number; hops: number; budget: number },
  limits: { maxDepth: number; maxFanOut: number; maxHops: number },
  tally: Tally,
): { status: 'completed' | 'failed'; usage: number; error?: string; sent: number } {
  if (env.budget <= 0) {
    tally.refusedOnArrival += 1;
    return { status: 'failed', usage: 0, sent: 0 };
  }
  let spent = 0;
  let sent = 0;
  for (let turn = 0; ; turn++) {
    if (spent >= env.budget) return { status: 'failed', usage: spent, error: `the run's token budget is spent (${spent} of ${env.budget} tokens)`, sent };
    spent += spec.t;
    tally.turns += 1;
    const step = spec.s[turn];
    if (step === undefined) return { status: 'completed', usage: spent, sent };
    const left = env.budget - spent;
    if (step === 'think') {
      if (left <= 0) tally.thoughtsRefused += 1;
      else tally.thoughts += 1;
      continue;
    }
    const children: Array<{ spec: Spec; env: typeof env }> = [];
    for (const ask of step) {
      const refusal: Refusal | undefined =
        left <= 0
          ? 'budget'
          : env.depth + 1 > limits.maxDepth
            ? 'depth'
            : env.hops + sent + 1 > limits.maxHops
              ? 'hops'
              : step.length > limits.maxFanOut
                ? 'fanout'
                : env.chain.includes(ask.to)
                  ? 'cycle'
                  : undefined;
      if (refusal) {
        tally.refused[refusal] += 1;
        continue;
      }
      sent += 1;
      tally.delegations += 1;
      children.push({ spec: ask.spec, env: { chain: [...env.chain, ask.to], depth: env.depth + 1, hops: env.hops + sent, budget: Math.floor(left / step.length) } });
    }
    // A delegate's answer brings its usage and its sends: hops count per run, not per path.
    for (const child of children) {
      const answer = simulate(child.spec, child.env, limits, tally);
      spent += answer.usage;
      sent += answer.sent;
    }
  }
}

/**
 * How far past its budget an agent can get: less than one of its own turns, or what the delegates
 * of one round can overshoot their shares by, whichever is more.
 */
function overshootBound(spec: Spec): number {
  const rounds = spec.s.filter((s): s is Ask[] => Array.isArray(s));
  return Math.max(spec.t, ...rounds.map((round) => sum(round.map((ask) => overshootBound(ask.spec)))));
}

async function jobCounts(system: System): Promise<Record<string, number>> {
  const types: JobType[] = ['completed', 'failed', 'active', 'wait', 'waiting-children', 'delayed', 'prioritized'];
  const totals: Record<string, number> = Object.fromEntries(types.map((t) => [t, 0]));
  for (const name of NAMES) {
    const queue = new Queue(`agent.${name}`, { connection: system.transport.connection, prefix: system.prefix });
    try {
      const counts = await queue.getJobCounts(...types);
      for (const type of types) totals[type]! += counts[type] ?? 0;
    } finally {
      await queue.close();
    }
  }
  return totals;
}
