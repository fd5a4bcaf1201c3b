/**
 * Policy names that match nothing (found by a security review). Two policies passed
 * `palisade policy check`, then let through what they were written to stop:
 *
 * - a Cedar `forbid` on `Palisade::Tool::"rеfund_order"`, its "е" a Cyrillic U+0435: the rule
 *   matched no tool, and the refund it forbade went ahead;
 * - a clearance for `tech-support` when the agent is `tech_support`: the entry matched no agent,
 *   an agent with no clearance had no limit, and a handoff of `restricted [pci, credentials]` data
 *   reached it.
 *
 * Both are written here as a careless operator (or one copying an attacker's snippet) would, and
 * each must now fail before anything runs: at load, in `policy check`, and when a runtime starts.
 * An agent nobody cleared gets the lowest clearance, so even a name check missed fails closed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent, type Agent } from '../../agents/agent.js';
import { label } from '../../agents/label.js';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import { defineTool } from '../../agents/tool.js';
import type { GuardEvent } from '../../guards/guard-event.js';
import { flowGuard } from '../../guards/builtin/flow.js';
import { compilePolicy, loadPolicy } from '../../guards/policy/load-policy.js';
import { PolicyError } from '../../guards/policy/policy-file.js';
import { PolicySchema } from '../../guards/policy/policy.js';
import type { RunEvent } from '../../runtime/events.js';
import { Runtime } from '../../runtime/runtime.js';
import { EmbeddedTransport } from '../../runtime/transports/embedded-transport.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = (...args: string[]) => spawnSync(`${root}node_modules/.bin/tsx`, ['runtime/cli/main.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

/** The shop: triage hands off to billing (which refunds) or tech support; a vault lookup returns card data and credentials. */
function shopAgents(refunds: string[] = []): Agent[] {
  const refundOrder = defineTool({
    name: 'refund_order',
    description: 'Refund an order.',
    input: z.object({ orderId: z.string() }),
    effect: 'write',
    run: ({ orderId }) => {
      refunds.push(orderId);
      return `refunded ${orderId}`;
    },
  });
  const readVault = defineTool({
    name: 'read_vault',
    description: 'Card and login details of a customer.',
    input: z.object({ customer: z.string() }),
    effect: 'read',
    returns: { level: 'restricted', categories: ['pci', 'credentials'] },
    run: () => 'card 4111 1111 1111 1111, password hunter2',
  });
  const handsOver = (target: string) =>
    new ScriptedModel({
      script: (c) => (c.messages.some((m) => m.role === 'tool') ? { calls: [{ name: `transfer_to_${target}`, args: { reason: 'yours' } }] } : { calls: [{ name: 'read_vault', args: { customer: 'c-1' } }] }),
    });
  return [
    defineAgent({ name: 'triage', instructions: 'route', tools: [readVault], handoffs: ['billing', 'tech_support'], model: handsOver('tech_support') }),
    defineAgent({
      name: 'billing',
      instructions: 'refund',
      tools: [refundOrder],
      model: new ScriptedModel({ script: (c) => (c.messages.some((m) => m.role === 'tool') ? 'done' : { calls: [{ name: 'refund_order', args: { orderId: 'ORD-1' } }] }) }),
    }),
    defineAgent({ name: 'tech_support', instructions: 'help', model: new ScriptedModel({ script: () => 'here is how to reset your router' }) }),
  ];
}

const CYRILLIC_FORBID = [
  '// Nobody refunds orders from this desk.',
  '@id("no-refunds")',
  'forbid (',
  '  principal,',
  '  action == Palisade::Action::"call_tool",',
  '  resource == Palisade::Tool::"r\u0435fund_order"',
  ');',
  '',
].join('\n');

const MISNAMED_CLEARANCE = ['version: 1', 'clearance:', '  agents:', '    tech-support: { level: internal }', ''].join('\n');

async function refusal(action: () => unknown): Promise<PolicyError> {
  try {
    await action();
  } catch (error) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  throw new Error('expected a PolicyError');
}

const collect = async (events: AsyncIterable<RunEvent>) => {
  const out: RunEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
};

describe('policy names that match nothing fail closed', () => {
  let dir: string;
  let agentsModule: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-policy-names-'));
    await writeFile(join(dir, 'refunds.cedar'), CYRILLIC_FORBID);
    await writeFile(join(dir, 'refunds.yaml'), 'version: 1\nroles:\n  customer: ["orders:*"]\ncedar: [refunds.cedar]\n');
    await writeFile(join(dir, 'clearance.yaml'), MISNAMED_CLEARANCE);
    // A module the CLI can load with --agents: the shop's agents and tools, as a deployment would export them.
    agentsModule = join(dir, 'shop.mts');
    const from = (path: string) => JSON.stringify(join(root, path));
    await writeFile(
      agentsModule,
      [
        `import { z } from ${from('node_modules/zod/index.js')};`,
        `import { defineAgent } from ${from('agents/agent.ts')};`,
        `import { defineTool } from ${from('agents/tool.ts')};`,
        `import { ScriptedModel } from ${from('agents/providers/scripted.ts')};`,
        `const model = new ScriptedModel({ script: () => 'ok' });`,
        `const tool = (name: string) => defineTool({ name, description: name, input: z.object({}), effect: 'write', run: () => 'ok' });`,
        `export const agents = [`,
        `  defineAgent({ name: 'triage', instructions: 'route', tools: [tool('read_vault')], handoffs: ['billing', 'tech_support'], model }),`,
        `  defineAgent({ name: 'billing', instructions: 'refund', tools: [tool('refund_order')], model }),`,
        `  defineAgent({ name: 'tech_support', instructions: 'help', model }),`,
        `];`,
        '',
      ].join('\n'),
    );
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('a Cedar forbid on a tool written with a Cyrillic "е" is a load error naming file, line, the character and the name meant', async () => {
    const error = await refusal(() => loadPolicy(join(dir, 'refunds.yaml')));
    expect(error.message).toMatch(/^refunds\.cedar:6:15: tool name "r\u0435fund_order" contains U\+0435 CYRILLIC SMALL LETTER IE; did you mean "refund_order"\?$/m);
    expect(error).toMatchObject({ file: 'refunds.cedar', line: 6 });
  });

  it('policy check refuses it too (exit 2), before and without the agents', () => {
    const r = cli('policy', 'check', join(dir, 'refunds.yaml'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/refunds\.cedar:6:15: tool name "r\u0435fund_order" contains U\+0435 CYRILLIC SMALL LETTER IE; did you mean "refund_order"\?/);
    expect(r.stdout).not.toMatch(/valid/);
  });

  it('a clearance for "tech-support" when the agent is "tech_support": a runtime with the agents refuses to start', async () => {
    const policy = await loadPolicy(join(dir, 'clearance.yaml'));
    const error = await refusal(() => new Runtime({ agents: shopAgents(), policy, transport: new EmbeddedTransport() }));
    expect(error.message).toBe(`${join(dir, 'clearance.yaml')}:4:5: clearance for "tech-support" names no agent; did you mean "tech_support"?`);
  });

  it('policy check with --agents refuses it (exit 2); without --agents it says the names were not checked', () => {
    const checked = cli('policy', 'check', join(dir, 'clearance.yaml'), '--agents', agentsModule);
    expect(checked.status).toBe(2);
    expect(checked.stderr).toMatch(/clearance\.yaml:4:5: clearance for "tech-support" names no agent; did you mean "tech_support"\?/);
    const unchecked = cli('policy', 'check', join(dir, 'clearance.yaml'));
    expect(unchecked.status).toBe(0);
    expect(unchecked.stderr).toMatch(/clearance\.yaml: warning: the 1 agent and tool names it writes were not checked against the agents; pass --agents <module>/);
  });

  it('the same mistakes in a policy built in code are refused as well', async () => {
    const inCode = PolicySchema.parse({ version: 1, clearance: { agents: { 'tech-support': { level: 'internal' } } } });
    const error = await refusal(() => new Runtime({ agents: shopAgents(), policy: inCode, transport: new EmbeddedTransport() }));
    expect(error.message).toBe('policy: clearance.agents: clearance for "tech-support" names no agent; did you mean "tech_support"?');
    const cedar = await refusal(() => compilePolicy(PolicySchema.parse({ version: 1 }), { file: 'code', cedarFiles: [{ path: 'inline.cedar', text: CYRILLIC_FORBID }] }));
    expect(cedar.message).toMatch(/^inline\.cedar:6:15: tool name "r\u0435fund_order" contains U\+0435/);
  });

  it('spelt right, the forbid holds: the refund is blocked and nothing is refunded', async () => {
    await writeFile(join(dir, 'fixed.cedar'), CYRILLIC_FORBID.replace('\u0435', 'e'));
    await writeFile(join(dir, 'fixed.yaml'), 'version: 1\nroles:\n  customer: ["orders:*"]\ncedar: [fixed.cedar]\n');
    const refunds: string[] = [];
    const runtime = new Runtime({ agents: shopAgents(refunds), policy: await loadPolicy(join(dir, 'fixed.yaml')), transport: new EmbeddedTransport() });
    await runtime.startWorkers();
    try {
      const run = await runtime.start('billing', 'refund ORD-1', { principal: { id: 'mallory', roles: ['customer'] } });
      const events = await collect(run.events({ pollMs: 20 }));
      expect(events.find((e) => e.type === 'guard.decision' && e.stage === 'tool_call')).toMatchObject({ verdict: 'block', reasons: [expect.stringMatching(/forbidden by no-refunds/)] });
      expect(refunds).toEqual([]);
    } finally {
      await runtime.close();
    }
  });

  it('an agent with no clearance anywhere gets the lowest: the handoff of restricted [pci, credentials] data to it is blocked', async () => {
    // Neither the policy nor tech_support's definition clears it for anything.
    const runtime = new Runtime({ agents: shopAgents(), policy: compilePolicy(PolicySchema.parse({ version: 1 })), transport: new EmbeddedTransport() });
    await runtime.startWorkers();
    try {
      const run = await runtime.start('triage', 'my router is broken', { principal: { id: 'ada' } });
      const events = await collect(run.events({ pollMs: 20 }));
      const handoff = events.find((e) => e.type === 'guard.decision' && e.stage === 'handoff');
      expect(handoff).toMatchObject({
        verdict: 'block',
        // (The content guard finds the card number too, and adds pii and financial.)
        reasons: expect.arrayContaining([expect.stringMatching(/^flow: the context is restricted \[credentials, .*pci.*\], above the clearance of agent 'tech_support' \(public\) \('tech_support' has no clearance, so it gets the lowest/)]),
      });
      expect(events.some((e) => e.type === 'agent.started' && e.agent === 'tech_support')).toBe(false);
    } finally {
      await runtime.close();
    }
  });

  it('the flow guard: no clearance means public only; a declared or policy clearance lifts it', () => {
    const agents = new Map(shopAgents().map((a) => [a.name, a]));
    const handoff = (target: string, level: 'public' | 'confidential'): GuardEvent => ({
      stage: 'handoff',
      runId: 'r',
      principal: { id: 'ada', roles: [], attrs: {} },
      agent: 'triage',
      chain: ['triage'],
      depth: 0,
      hops: 0,
      label: label({ level, categories: level === 'public' ? [] : ['pii'] }),
      target: { agent: target, mode: 'handoff' },
    });
    const verdict = (e: GuardEvent, policy = PolicySchema.parse({ version: 1 }), known: ReadonlyMap<string, Pick<Agent, 'handoffs' | 'delegates' | 'clearance'>> = agents) =>
      (flowGuard({ policy, agents: known }).check(e) as { verdict: string }).verdict;
    expect(verdict(handoff('tech_support', 'confidential'))).toBe('block');
    expect(verdict(handoff('tech_support', 'public'))).toBe('allow');
    // An agent this process does not know is no better off.
    expect(verdict(handoff('unknown_desk', 'confidential'))).toBe('block');
    const cleared = new Map<string, Pick<Agent, 'handoffs' | 'delegates' | 'clearance'>>(agents).set('tech_support', { handoffs: [], delegates: [], clearance: label({ level: 'confidential', categories: ['pii'] }) });
    expect(verdict(handoff('tech_support', 'confidential'), undefined, cleared)).toBe('allow');
    const byPolicy = PolicySchema.parse({ version: 1, clearance: { agents: { tech_support: { level: 'confidential', categories: ['pii'] } } } });
    expect(verdict(handoff('tech_support', 'confidential'), byPolicy)).toBe('allow');
    // A name like `constructor` finds no clearance on Object's prototype.
    expect(verdict(handoff('constructor', 'confidential'))).toBe('block');
  });
});
