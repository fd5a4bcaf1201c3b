import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkAgentGraph, defineAgent } from '../agents/agent.js';
import { InvalidDefinitionError } from '../agents/errors.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { Runtime } from '../runtime/runtime.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';

const model = new ScriptedModel({ script: () => 'ok' });
const validTool = {
  name: 'lookup',
  description: 'Looks things up',
  input: z.object({ id: z.string().describe('the id'), limit: z.number().int().max(10).optional() }),
  effect: 'read' as const,
  run: () => 'x',
};

describe('defineTool', () => {
  it('fills defaults and derives the JSON Schema the model sees', () => {
    const tool = defineTool(validTool);
    expect(tool).toMatchObject({ name: 'lookup', effect: 'read', risk: 'low', requires: [], returns: { level: 'public', categories: [], integrity: 'trusted' } });
    expect(tool.spec.parameters).toMatchObject({
      type: 'object',
      properties: { id: { type: 'string', description: 'the id' }, limit: { type: 'integer', maximum: 10 } },
      required: ['id'],
    });
    expect(tool.spec.parameters).not.toHaveProperty('$schema');
  });

  it('keeps the declared facts: effect, risk, returned labels, permissions', () => {
    const tool = defineTool({ ...validTool, effect: 'external', risk: 'high', returns: { level: 'confidential', categories: ['pii', 'financial', 'pii'], integrity: 'untrusted' }, requires: ['mail:send'] });
    expect(tool.returns).toEqual({ level: 'confidential', categories: ['financial', 'pii'], integrity: 'untrusted' });
    expect(tool.requires).toEqual(['mail:send']);
    expect(tool.risk).toBe('high');
  });

  it.each([
    [{ name: 'bad name!' }, /name: must be 1-64 letters/],
    [{ effect: 'delete' }, /effect: Invalid option: expected one of "read"\|"write"\|"external"/],
    [{ risk: 'extreme' }, /risk: Invalid option/],
    [{ description: '' }, /description: must say what the tool does/],
    [{ input: z.string() }, /input: must be a zod object schema/],
    [{ run: 'nope' }, /run: must be a function/],
    [{ returns: { level: 'secret' } }, /returns.level: Invalid option/],
    [{ unknownKey: 1 }, /Unrecognized key: "unknownKey"/],
  ])('fails at startup with a clear message for %j', (override, message) => {
    const attempt = () => defineTool({ ...validTool, ...(override as object) } as never);
    expect(attempt).toThrow(InvalidDefinitionError);
    expect(attempt).toThrow(message);
    expect(attempt).toThrow(/^Invalid tool '/);
  });
});

describe('defineAgent', () => {
  it('defines an agent with tools, handoffs, delegates and clearance', () => {
    const agent = defineAgent({ name: 'billing', instructions: 'help', model, tools: [defineTool(validTool)], handoffs: ['triage'], delegates: ['fraud'], clearance: { level: 'confidential', categories: ['pii'] } });
    expect([...agent.tools.keys()]).toEqual(['lookup']);
    expect(agent.handoffs).toEqual(['triage']);
    expect(agent.delegates).toEqual(['fraud']);
    expect(agent.clearance).toEqual({ level: 'confidential', categories: ['pii'], integrity: 'trusted' });
    expect(agent.maxTurns).toBe(10);
  });

  it.each([
    [{ name: 'Billing' }, /name: must start with a lowercase letter/],
    [{ name: 'a:b' }, /name: must start with a lowercase letter/],
    [{ instructions: '' }, /instructions: must not be empty/],
    [{ model: {} }, /model: must be a ModelProvider/],
    [{ tools: [{ name: 'fake' }] }, /tools.0: is not a tool made by defineTool/],
    [{ tools: [defineTool(validTool), defineTool(validTool)] }, /duplicate tool name 'lookup'/],
    [{ handoffs: ['x'], tools: [defineTool({ ...validTool, name: 'transfer_to_x' })] }, /'transfer_to_x' clashes/],
    [{ handoffs: ['billing'] }, /cannot hand off to itself/],
    [{ maxTurns: 0 }, /maxTurns: Too small/],
  ])('fails at startup with a clear message for %#', (override, message) => {
    const attempt = () => defineAgent({ name: 'billing', instructions: 'help', model, ...(override as object) } as never);
    expect(attempt).toThrow(InvalidDefinitionError);
    expect(attempt).toThrow(message);
  });

  it('checks that every handoff and delegate names a known agent when a runtime starts', () => {
    const a = defineAgent({ name: 'a', instructions: 'x', model, handoffs: ['b'], delegates: ['ghost'] });
    const b = defineAgent({ name: 'b', instructions: 'x', model });
    expect(() => checkAgentGraph([a, b])).toThrow(/agent 'a' delegates to unknown agent 'ghost'/);
    expect(() => new Runtime({ agents: [a, b], transport: new EmbeddedTransport() })).toThrow(InvalidDefinitionError);
    expect(() => checkAgentGraph([b, b])).toThrow(/duplicate agent name 'b'/);
  });
});
