import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { defineAgent, type Agent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { SupportBackend } from '../examples/support/backend.js';
import { createSupportAgents } from '../examples/support/system.js';
import { compilePolicy, loadPolicy, type LoadedPolicy } from '../guards/policy/load-policy.js';
import { PolicySchema, type PolicyInput } from '../guards/policy/policy.js';
import type { RunEvent } from '../runtime/events.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const SUPPORT_POLICY = fileURLToPath(new URL('../examples/support/policy.yaml', import.meta.url));
const scripted = (script: ConstructorParameters<typeof ScriptedModel>[0]['script']) => new ScriptedModel({ script });

async function collect(run: Run): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const e of run.events({ pollMs: 200 })) events.push(e);
  return events;
}
const decisions = (events: RunEvent[]) => events.filter((e): e is Extract<RunEvent, { type: 'guard.decision' }> => e.type === 'guard.decision');

/** The support example under its real policy, on BullMQ workers and a real Redis. */
describe('policy enforced by the workers (real Redis)', () => {
  let runtime: Runtime | undefined;
  let prefix = '';
  afterEach(async () => {
    await runtime?.close({ timeoutMs: 2000 });
    await deleteKeys(prefix);
  });
  const boot = async (agents: Agent[], policy: LoadedPolicy) => {
    prefix = uniquePrefix('policy');
    runtime = new Runtime({ agents, policy, transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    await runtime.startWorkers();
    return runtime;
  };

  it('a customer’s refund within the cap passes every guard; the decisions are in the run’s events', async () => {
    const backend = new SupportBackend();
    const rt = await boot(createSupportAgents({ backend, model: scripted }), await loadPolicy(SUPPORT_POLICY));
    const run = await rt.start('triage', 'Refund ORD-5001 please, ada@example.com', { principal: { id: 'ada', roles: ['customer'] } });
    const events = await collect(run);
    await expect(run.result()).resolves.toMatchObject({ output: expect.stringMatching(/RF-7001/) });
    const refund = decisions(events).find((d) => d.stage === 'tool_call' && d.subject === 'issue_refund')!;
    expect(refund.verdict).toBe('allow');
    expect(refund.reasons.join(' ')).toMatch(/risk: risk 0\.\d+ .*validated, arguments trace to trusted input/);
    expect(events.find((e) => e.type === 'label.declassified')).toMatchObject({ source: 'fraud_check', to: { level: 'internal', categories: ['financial'] } });
  });

  it('a refund above the cap is forbidden by the Cedar rule, and nothing is refunded', async () => {
    const backend = new SupportBackend();
    const rt = await boot(createSupportAgents({ backend, model: scripted }), await loadPolicy(SUPPORT_POLICY));
    const run = await rt.start('triage', 'Refund my monitor, ORD-5003, grace@example.com', { principal: { id: 'grace', roles: ['customer'] } });
    const events = await collect(run);
    await expect(run.result()).resolves.toMatchObject({ output: expect.stringMatching(/could not issue the refund: .*forbidden by refund-cap/) });
    expect(backend.refunds).toEqual([]);
    expect(decisions(events).find((d) => d.subject === 'issue_refund')).toMatchObject({ verdict: 'block' });
  });

  it('acts with the user’s authority: a principal without the permissions gets nothing', async () => {
    const backend = new SupportBackend();
    const rt = await boot(createSupportAgents({ backend, model: scripted }), await loadPolicy(SUPPORT_POLICY));
    const run = await rt.start('triage', 'Refund ORD-5001 please, ada@example.com', { principal: { id: 'mallory', roles: [] } });
    const events = await collect(run);
    const blocked = decisions(events).find((d) => d.subject === 'lookup_customer');
    expect(blocked).toMatchObject({ verdict: 'block', reasons: [expect.stringMatching(/'mallory' lacks customers:read/)] });
    expect(events.filter((e) => e.type === 'tool.called')).toEqual([]);
  });

  it('monitor mode records the block it would have made and lets the step through', async () => {
    const backend = new SupportBackend();
    const loaded = await loadPolicy(SUPPORT_POLICY);
    const rt = await boot(createSupportAgents({ backend, model: scripted }), { ...compilePolicy({ ...loaded.policy, mode: 'monitor' }, loaded.source!) });
    const run = await rt.start('triage', 'Refund my monitor, ORD-5003, grace@example.com', { principal: { id: 'grace', roles: ['customer'] } });
    const events = await collect(run);
    await run.result();
    expect(decisions(events).find((d) => d.subject === 'issue_refund')).toMatchObject({ verdict: 'allow', monitored: 'block' });
    expect(backend.refunds).toHaveLength(1);
  });

  const pingPong = () => [
    defineAgent({ name: 'ping', instructions: 'x', delegates: ['pong'], maxTurns: 6, model: scripted(() => ({ calls: [{ name: 'ask_pong', args: { input: 'again' } }] })) }),
    defineAgent({ name: 'pong', instructions: 'x', delegates: ['ping'], maxTurns: 6, model: scripted(() => ({ calls: [{ name: 'ask_ping', args: { input: 'again' } }] })) }),
  ];
  const policyOf = (input: Partial<PolicyInput>) => compilePolicy(PolicySchema.parse({ version: 1, ...input }));

  it('mutually recursive agents stop at the cycle rule with a clear reason', async () => {
    const rt = await boot(pingPong(), policyOf({}));
    const run = await rt.start('ping', 'go', { principal: { id: 'u' } });
    const events = await collect(run);
    await expect(run.result()).rejects.toThrow(/reached its limit of 6 model turns/);
    expect(decisions(events).some((d) => d.verdict === 'block' && /'ping' is already in the chain ping → pong/.test(d.reasons.join()))).toBe(true);
  });

  it('with cycles allowed, the depth limit stops them', async () => {
    const rt = await boot(pingPong(), policyOf({ limits: { allowCycles: true, maxDepth: 3 } }));
    const run = await rt.start('ping', 'go', { principal: { id: 'u' } });
    const events = await collect(run);
    await expect(run.result()).rejects.toThrow(/model turns/);
    const depths = events.filter((e) => e.type === 'agent.started').map((e) => (e as { chain: string[] }).chain.length);
    expect(Math.max(...depths)).toBe(4);
    expect(decisions(events).some((d) => /would reach depth 4, over the limit of 3/.test(d.reasons.join()))).toBe(true);
  });

  it('hops count per run: sequential delegations from one activation add up', async () => {
    const asker = defineAgent({
      name: 'asker',
      instructions: 'x',
      delegates: ['helper'],
      model: scripted((c) => {
        const asked = c.messages.filter((m) => m.role === 'tool').length;
        return asked < 3 ? { calls: [{ name: 'ask_helper', args: { input: `q${asked}` } }] } : 'done';
      }),
    });
    const helper = defineAgent({ name: 'helper', instructions: 'x', model: scripted(() => 'a') });
    const rt = await boot([asker, helper], policyOf({ limits: { maxHops: 2 } }));
    const run = await rt.start('asker', 'go', { principal: { id: 'u' } });
    const events = await collect(run);
    await run.result();
    expect(events.filter((e) => e.type === 'delegation.started')).toHaveLength(2);
    expect(decisions(events).some((d) => d.verdict === 'block' && /2 hops, the limit is 2/.test(d.reasons.join()))).toBe(true);
  });

  it('a run stops when its token budget is spent; a child never gets more than its parent has left', async () => {
    const rt = await boot(pingPong(), policyOf({ limits: { allowCycles: true, maxDepth: 50, maxHops: 1000, budget: { tokens: 120 } } }));
    const run = await rt.start('ping', 'go', { principal: { id: 'u' }, budget: { tokens: 10_000 } });
    const events = await collect(run);
    const record = await run.record();
    expect(record!.status).toBe('failed');
    expect(events.some((e) => (e.type === 'run.failed' || e.type === 'tool.error') && /token budget/.test(JSON.stringify(e)))).toBe(true);
    // Every activation spent at most what was left to it: the run as a whole stays near its budget of 120.
    expect(record!.usage.inputTokens + record!.usage.outputTokens).toBeLessThan(120 + 60);
  });
});
