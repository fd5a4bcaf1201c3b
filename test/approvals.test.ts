import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { defineGuard } from '../guards/guard.js';
import { PolicySchema, type PolicyInput } from '../guards/policy/policy.js';
import { approvalDigest } from '../runtime/approvals/approval.js';
import { ApprovalError } from '../runtime/approvals/approvals.js';
import { AuditLog } from '../runtime/audit/audit-log.js';
import { EnvelopeAuth } from '../runtime/identity/envelope-auth.js';
import type { RunEvent } from '../runtime/events.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import type { Transport } from '../runtime/transports/transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const customer = { id: 'ada', roles: ['customer'] };
const approver = { id: 'fin-lee', roles: ['finance'] };

/** A wire transfer that needs approval above 100; `sent` records what really went out. */
function bank(sent: Array<{ to: string; amount: number }>, gate: { blockNow?: boolean } = {}) {
  const wire = defineTool({
    name: 'wire',
    description: 'send money',
    input: z.object({ to: z.string(), amount: z.number().int().positive() }),
    effect: 'external',
    run: ({ to, amount }) => {
      sent.push({ to, amount });
      return { ok: true, to, amount };
    },
  });
  const needsApproval = defineGuard({
    name: 'big-wires',
    stages: ['tool_call', 'handoff'],
    check: (e) => {
      if (gate.blockNow && e.tool?.name === 'wire') return { verdict: 'block', reasons: ['wires are frozen'], risk: 1 };
      const amount = (e.args as { amount?: number } | undefined)?.amount ?? 0;
      if (e.tool?.name === 'wire' && amount > 100) return { verdict: 'escalate', reasons: [`a wire of ${amount} needs approval`], risk: 0.7 };
      if (e.stage === 'handoff' && e.target?.agent === 'vault') return { verdict: 'escalate', reasons: ['the vault is sensitive'], risk: 0.6 };
      return { verdict: 'allow', reasons: [], risk: 0 };
    },
  });
  const teller = defineAgent({
    name: 'teller',
    instructions: 'wire what is asked',
    tools: [wire],
    handoffs: ['vault'],
    model: new ScriptedModel({
      script: (c) => {
        if (/vault/.test(c.lastUser) && !c.called('transfer_to_vault')) return { calls: [{ name: 'transfer_to_vault', args: { reason: 'vault request' } }] };
        if (c.called('transfer_to_vault')) return `vault: ${String(c.result('transfer_to_vault'))}`;
        const amount = Number(/(\d+)/.exec(c.lastUser)?.[1] ?? 10);
        if (!c.called('wire')) return { calls: [{ name: 'wire', args: { to: 'grace@example.com', amount } }] };
        return `wire result: ${JSON.stringify(c.result('wire'))}`;
      },
    }),
  });
  const vault = defineAgent({ name: 'vault', instructions: 'guard the vault', model: new ScriptedModel({ script: () => 'vault opened' }) });
  return { agents: [teller, vault], guard: needsApproval };
}

const policyWith = (extra: Partial<PolicyInput> = {}) => PolicySchema.parse({ version: 1, roles: { finance: ['approve:tool:wire', 'approve:agent:vault'], customer: [] }, ...extra });

async function eventsOf(run: Run): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const e of run.events({ pollMs: 100 })) events.push(e);
  return events;
}

async function requestOf(rt: Runtime, run: Run) {
  for await (const e of run.events({ pollMs: 50 })) if (e.type === 'approval.requested') break;
  const state = (await rt.approvals.pending()).find((s) => s.request.runId === run.id);
  expect(state).toBeDefined();
  return state!.request;
}

describe.each([
  ['BullMQ on Redis', 'redis'],
  ['embedded', 'embedded'],
] as const)('approvals (%s)', (_name, kind) => {
  let keysDir: string;
  const cleanup: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    keysDir = await mkdtemp(join(tmpdir(), 'palisade-approvals-'));
    await generateKeys(keysDir, bank([]).agents);
  });
  afterAll(() => rm(keysDir, { recursive: true, force: true }));
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  async function setup(options: { policy?: Partial<PolicyInput>; gate?: { blockNow?: boolean } } = {}) {
    const sent: Array<{ to: string; amount: number }> = [];
    const { agents, guard } = bank(sent, options.gate);
    const prefix = uniquePrefix('approvals');
    const transport: Transport = kind === 'redis' ? new BullMQTransport({ connection: REDIS_URL, prefix }) : new EmbeddedTransport();
    const keys = await loadKeyring(keysDir, [EDGE, 'teller', 'vault']);
    const rt = new Runtime({ agents, transport, keys, policy: policyWith(options.policy), guards: [guard] });
    await rt.startWorkers();
    cleanup.push(() => rt.close({ timeoutMs: 1000 }));
    if (kind === 'redis') cleanup.push(() => deleteKeys(prefix));
    return { rt, sent, prefix, agents, keys };
  }

  it('an escalated call pauses the run until a permitted approver approves; then it runs once, checked again', async () => {
    const { rt, sent } = await setup();
    const run = await rt.start('teller', 'wire 500 to grace@example.com please', { principal: customer });
    const request = await requestOf(rt, run);
    expect(request).toMatchObject({
      kind: 'tool',
      subject: 'wire',
      agent: 'teller',
      permission: 'approve:tool:wire',
      // A custom guard's words may quote the call: stored as a labelled quote, which the edge filters per reader.
      reasons: ['big-wires: escalate'],
      quote: { text: 'big-wires: a wire of 500 needs approval' },
      principal: { id: 'ada' },
      chain: ['teller'],
    });
    // What the approver sees is redacted; the approval binds to the exact arguments.
    expect(request.arguments).toContain('"amount":500');
    expect(request.arguments).not.toContain('grace@example.com');
    expect(request.expiresAt - request.requestedAt).toBe(3600_000);
    expect(sent).toEqual([]);
    expect((await rt.approvals.get(request.id)).decision).toBeUndefined();

    const decision = await rt.approvals.decide(request.id, { by: approver, approve: true, note: 'known payee' });
    expect(decision).toMatchObject({ status: 'approved', by: { id: 'fin-lee' }, note: 'known payee' });
    await expect(run.result({ timeoutMs: 10_000 })).resolves.toMatchObject({ output: 'wire result: {"ok":true,"to":"grace@example.com","amount":500}' });
    expect(sent).toEqual([{ to: 'grace@example.com', amount: 500 }]);

    const events = await eventsOf(run);
    const types = events.map((e) => e.type);
    const guardOnWire = events.filter((e) => e.type === 'guard.decision' && e.stage === 'tool_call');
    // Decided twice: when asked, and again on resume against the current policy and state.
    expect(guardOnWire.map((e) => (e as { verdict: string }).verdict)).toEqual(['escalate', 'escalate']);
    expect(types.indexOf('approval.requested')).toBeLessThan(types.indexOf('approval.decided'));
    expect(events.find((e) => e.type === 'approval.resolved')).toMatchObject({ outcome: 'approved', subject: 'wire' });
    expect(types.indexOf('approval.resolved')).toBeLessThan(types.indexOf('tool.called'));
    expect(await rt.approvals.pending()).toEqual([]);
  });

  it('a denial is the tool result the agent sees (onDeny: continue), and nothing is sent', async () => {
    const { rt, sent } = await setup();
    const run = await rt.start('teller', 'wire 900 to grace@example.com', { principal: customer });
    const request = await requestOf(rt, run);
    await rt.approvals.decide(request.id, { by: approver, approve: false, note: 'unknown payee' });
    const result = await run.result({ timeoutMs: 10_000 });
    expect(result.output).toMatch(/not approved: denied by fin-lee: unknown payee/);
    expect(sent).toEqual([]);
  });

  it('a denial fails the run with onDeny: fail', async () => {
    const { rt, sent } = await setup({ policy: { approvals: { onDeny: 'fail' } } });
    const run = await rt.start('teller', 'wire 900 to grace@example.com', { principal: customer });
    const request = await requestOf(rt, run);
    await rt.approvals.decide(request.id, { by: approver, approve: false });
    await expect(run.result({ timeoutMs: 10_000 })).rejects.toThrow(/the call to 'wire' was not approved: denied by fin-lee/);
    expect(sent).toEqual([]);
  });

  it('a request nobody decides in time is denied; a late decision is refused', async () => {
    const { rt, sent } = await setup({ policy: { approvals: { timeoutMs: 300 } } });
    const run = await rt.start('teller', 'wire 700 to grace@example.com', { principal: customer });
    const request = await requestOf(rt, run);
    const result = await run.result({ timeoutMs: 10_000 });
    expect(result.output).toMatch(/not approved: nobody decided within 0 s/);
    expect(sent).toEqual([]);
    const events = await eventsOf(run);
    expect(events.find((e) => e.type === 'approval.decided')).toMatchObject({ status: 'expired', agent: 'teller' });
    await expect(rt.approvals.decide(request.id, { by: approver, approve: true })).rejects.toMatchObject({ code: 'decided' });
  });

  it('only principals with the approver permission decide, never on their own run; a request is decided once', async () => {
    const { rt } = await setup();
    const run = await rt.start('teller', 'wire 300 to grace@example.com', { principal: { id: 'fin-lee', roles: ['finance'] } });
    const request = await requestOf(rt, run);
    await expect(rt.approvals.decide(request.id, { by: { id: 'bob', roles: ['customer'] }, approve: true })).rejects.toThrow(/'bob' lacks the permission approve:tool:wire/);
    await expect(rt.approvals.decide(request.id, { by: approver, approve: true })).rejects.toThrow(/started this run and may not decide on its own request/);
    await expect(rt.approvals.decide('nope', { by: approver, approve: true })).rejects.toBeInstanceOf(ApprovalError);
    await rt.approvals.decide(request.id, { by: { id: 'fin-kim', roles: ['finance'] }, approve: true });
    await expect(rt.approvals.decide(request.id, { by: { id: 'fin-kim', roles: ['finance'] }, approve: false })).rejects.toMatchObject({ code: 'decided' });
    await expect(run.result({ timeoutMs: 10_000 })).resolves.toMatchObject({ output: expect.stringContaining('"amount":300') });
  });

  it('on resume the action is checked again: what the policy now blocks stays blocked despite the approval', async () => {
    const gate: { blockNow?: boolean } = {};
    const { rt, sent } = await setup({ gate });
    const run = await rt.start('teller', 'wire 400 to grace@example.com', { principal: customer });
    const request = await requestOf(rt, run);
    gate.blockNow = true;
    await rt.approvals.decide(request.id, { by: approver, approve: true });
    const result = await run.result({ timeoutMs: 10_000 });
    expect(result.output).toMatch(/was not allowed: big-wires: wires are frozen/);
    expect(sent).toEqual([]);
  });

  it('a handoff can wait for approval too', async () => {
    const { rt } = await setup();
    const run = await rt.start('teller', 'open the vault', { principal: customer });
    const request = await requestOf(rt, run);
    expect(request).toMatchObject({ kind: 'handoff', subject: 'vault', permission: 'approve:agent:vault' });
    await rt.approvals.decide(request.id, { by: approver, approve: true });
    await expect(run.result({ timeoutMs: 10_000 })).resolves.toMatchObject({ output: 'vault opened' });
  });

  it('a decision written into the store without the edge key, or by someone the current policy does not allow, is not acted on', async () => {
    const { rt, sent, keys } = await setup();
    const run = await rt.start('teller', 'wire 250 to grace@example.com', { principal: customer });
    const request = await requestOf(rt, run);
    const transport = rt.transport;
    // Forged: no MAC. The worker treats it as a refusal, on the record.
    await transport.store.decideApproval({ approvalId: request.id, status: 'approved', by: { ...approver, attrs: {} }, at: Date.now(), argsHash: request.argsHash, requestDigest: approvalDigest(request) });
    await transport.wake(request.runId, 'teller', request.jobId);
    const result = await run.result({ timeoutMs: 10_000 });
    expect(result.output).toMatch(/not approved: the decision is not authentic/);
    expect(sent).toEqual([]);
    const resolved = (await eventsOf(run)).find((e) => e.type === 'approval.resolved');
    expect(resolved).toMatchObject({ outcome: 'invalid' });

    // Authentic (an edge that skipped the check), but the approver lacks the permission: refused by the worker.
    const second = await rt.start('teller', 'wire 260 to grace@example.com', { principal: customer });
    const other = await requestOf(rt, second);
    const edge = new EnvelopeAuth(keys);
    await transport.store.decideApproval(
      edge.sealDecision('teller', { approvalId: other.id, status: 'approved', by: { id: 'eve', roles: ['customer'], attrs: {} }, at: Date.now(), argsHash: other.argsHash, requestDigest: approvalDigest(other) }),
    );
    await transport.wake(other.runId, 'teller', other.jobId);
    expect((await second.result({ timeoutMs: 10_000 })).output).toMatch(/'eve' lacks approve:tool:wire/);
    expect(sent).toEqual([]);
  });

  if (kind === 'redis') {
    it('every step is in the audit log: requested, decided (by the edge), resolved, executed', async () => {
      const { rt, prefix } = await setup();
      const run = await rt.start('teller', 'wire 150 to grace@example.com', { principal: customer });
      const request = await requestOf(rt, run);
      await rt.approvals.decide(request.id, { by: approver, approve: true });
      await run.result({ timeoutMs: 10_000 });
      const redis = new Redis(REDIS_URL);
      const log = new AuditLog({ redis, prefix, writer: 'reader' });
      const records = await log.tail(100, { runId: run.id });
      const steps = records.filter((r) => r.action.startsWith('approval.') || r.action === 'tool.executed').map((r) => [r.action, r.outcome, r.writer]);
      expect(steps).toEqual([
        ['approval.requested', 'pending', 'teller'],
        ['approval.decided', 'approved', EDGE],
        ['approval.resolved', 'approved', 'teller'],
        ['tool.executed', 'executed', 'teller'],
      ]);
      expect(records.find((r) => r.action === 'approval.decided')?.detail).toMatchObject({ by: 'fin-lee', approvalId: request.id });
      expect(records.every((r) => r.principal === 'ada')).toBe(true);
      await log.close();
      redis.disconnect();
    });
  }
});
