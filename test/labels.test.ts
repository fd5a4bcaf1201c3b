import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { ALLOW } from '../guards/decision.js';
import type { GuardEvent } from '../guards/guard-event.js';
import { BOTTOM, flowsTo, join, label, leq, LEVELS, meet, type Label } from '../agents/label.js';
import { Runtime } from '../runtime/runtime.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';

const arbLabel: fc.Arbitrary<Label> = fc
  .record({
    level: fc.constantFrom(...LEVELS),
    categories: fc.uniqueArray(fc.constantFrom('pii', 'financial', 'health', 'credentials', 'legal'), { maxLength: 5 }),
    integrity: fc.constantFrom('trusted' as const, 'untrusted' as const),
  })
  .map((l) => label(l));

describe('label lattice', () => {
  it('join is an upper bound, commutative, associative and idempotent', () => {
    fc.assert(
      fc.property(arbLabel, arbLabel, arbLabel, (a, b, c) => {
        const ab = join(a, b);
        expect(leq(a, ab) && leq(b, ab)).toBe(true);
        expect(join(b, a)).toEqual(ab);
        expect(join(join(a, b), c)).toEqual(join(a, join(b, c)));
        expect(join(a, a)).toEqual(a);
        expect(join(BOTTOM, a)).toEqual(a);
      }),
    );
  });

  it('join is the least upper bound and meet the greatest lower bound', () => {
    fc.assert(
      fc.property(arbLabel, arbLabel, arbLabel, (a, b, u) => {
        if (leq(a, u) && leq(b, u)) expect(leq(join(a, b), u)).toBe(true);
        const m = meet(a, b);
        expect(leq(m, a) && leq(m, b)).toBe(true);
        if (leq(u, a) && leq(u, b)) expect(leq(u, m)).toBe(true);
      }),
    );
  });

  it('flowsTo compares confidentiality only', () => {
    const secret = label({ level: 'confidential', categories: ['pii'], integrity: 'untrusted' });
    expect(flowsTo(secret, label({ level: 'confidential', categories: ['pii'] }))).toBe(true);
    expect(flowsTo(secret, label({ level: 'confidential' }))).toBe(false);
    expect(flowsTo(secret, label({ level: 'internal', categories: ['pii'] }))).toBe(false);
  });

  it('the context label never goes down along any sequence of tool results and delegations (property, real runtime)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c', 'ask'), arbLabel), { minLength: 1, maxLength: 6 }), async (steps) => {
        const tools = ['a', 'b', 'c'].map((name, i) =>
          defineTool({ name, description: name, input: z.object({ i: z.number() }), effect: 'read', returns: steps.find(([n]) => n === name)?.[1] ?? BOTTOM, run: () => `${name}${i}` }),
        );
        const seen: Array<{ agent: string; label: Label }> = [];
        const pipeline = {
          evaluate: async (e: GuardEvent) => {
            seen.push({ agent: e.agent, label: e.label });
            return ALLOW;
          },
        };
        const helperLabel = steps.find(([n]) => n === 'ask')?.[1] ?? BOTTOM;
        const helperTool = defineTool({ name: 'h', description: 'h', input: z.object({}), effect: 'read', returns: helperLabel, run: () => 'h' });
        const agents = [
          defineAgent({
            name: 'main',
            instructions: 'x',
            tools,
            delegates: ['helper'],
            model: new ScriptedModel({
              script: (c) => {
                const done = c.messages.filter((m) => m.role === 'tool').length;
                const step = steps[done];
                if (!step) return 'end';
                return step[0] === 'ask' ? { calls: [{ name: 'ask_helper', args: { input: 'q' } }] } : { calls: [{ name: step[0], args: { i: done } }] };
              },
            }),
          }),
          defineAgent({ name: 'helper', instructions: 'x', tools: [helperTool], model: new ScriptedModel({ script: (c) => (c.called('h') ? 'ok' : { calls: [{ name: 'h' }] }) }) }),
        ];
        const runtime = new Runtime({ agents, transport: new EmbeddedTransport(), pipeline });
        await runtime.startWorkers();
        const run = await runtime.start('main', 'go', { principal: { id: 'p' } });
        await run.result();
        await runtime.close();
        const main = seen.filter((d) => d.agent === 'main').map((d) => d.label);
        for (let i = 1; i < main.length; i++) expect(leq(main[i - 1]!, main[i]!)).toBe(true);
        // By the final reply the context holds the label of every result it took in.
        const final = main[main.length - 1]!;
        for (const [name] of steps) expect(leq(name === 'ask' ? helperLabel : tools.find((t) => t.name === name)!.returns, final)).toBe(true);
      }),
      { numRuns: 40 },
    );
  });
});
