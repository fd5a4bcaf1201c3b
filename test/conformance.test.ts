import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent, type Agent } from '../agents/agent.js';
import { ModelCallError, type ModelProvider, type ModelRequest, type ModelResponse } from '../agents/model.js';
import { ScriptedModel, type Script } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { SupportBackend } from '../examples/support/backend.js';
import { createSupportAgents } from '../examples/support/system.js';
import { RunFailedError, UnknownAgentError } from '../runtime/errors.js';
import type { RunEvent } from '../runtime/events.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import type { Transport } from '../runtime/transports/transport.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

/** The same behaviour is required of every transport: this suite runs once per transport. */
const transports: Array<{ name: string; make: () => { transport: Transport; cleanup: () => Promise<unknown> } }> = [
  { name: 'embedded', make: () => ({ transport: new EmbeddedTransport({ backoffMs: 5 }), cleanup: async () => undefined }) },
  {
    name: 'bullmq',
    make: () => {
      const prefix = uniquePrefix('conf');
      return { transport: new BullMQTransport({ connection: REDIS_URL, prefix, backoffMs: 20 }), cleanup: () => deleteKeys(prefix) };
    },
  },
];

const principal = { id: 'user-1', roles: ['customer'] };

async function collect(run: Run): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const event of run.events({ pollMs: 200 })) events.push(event);
  return events;
}

/** A model that fails in chosen ways before delegating to a script. */
class FlakyModel implements ModelProvider {
  readonly provider = 'test.flaky';
  readonly model = 'flaky';
  calls = 0;
  constructor(
    private readonly failures: Error[],
    private readonly then: ScriptedModel,
  ) {}
  async generate(request: ModelRequest): Promise<ModelResponse> {
    this.calls += 1;
    const failure = this.failures.shift();
    if (failure) throw failure;
    return this.then.generate(request);
  }
}

const scripted = (script: Script) => new ScriptedModel({ script });

describe.each(transports)('runtime conformance on the $name transport', ({ make }) => {
  let runtime: Runtime | undefined;
  let cleanup: (() => Promise<unknown>) | undefined;

  async function boot(agents: Agent[]): Promise<Runtime> {
    const made = make();
    cleanup = made.cleanup;
    runtime = new Runtime({ agents, transport: made.transport });
    await runtime.startWorkers({ concurrency: 4 });
    return runtime;
  }

  afterEach(async () => {
    await runtime?.close({ timeoutMs: 2000 });
    await cleanup?.();
    runtime = undefined;
  });

  it('runs the support scenario: handoff, delegation and a refund', async () => {
    const backend = new SupportBackend();
    const rt = await boot(createSupportAgents({ backend, model: scripted }));
    const run = await rt.start('triage', 'I was charged twice for ORD-5001, refund please. ada@example.com', { principal });
    const events = await collect(run);
    const result = await run.result();

    expect(result.output).toMatch(/refund RF-7001 of 129\.00/);
    expect(backend.refunds).toHaveLength(1);
    expect(events.find((e) => e.type === 'handoff')).toMatchObject({ agent: 'triage', to: 'billing' });
    expect(events.find((e) => e.type === 'delegation.started')).toMatchObject({ agent: 'billing', to: 'fraud_check' });
    expect(events.find((e) => e.type === 'delegation.completed')).toMatchObject({ to: 'fraud_check', status: 'completed' });
    const fraudStart = events.find((e) => e.type === 'agent.started' && e.agent === 'fraud_check');
    expect(fraudStart).toMatchObject({ kind: 'delegate', chain: ['triage', 'billing', 'fraud_check'] });
    expect(events.filter((e) => e.type === 'tool.called').map((e) => (e as { tool: string }).tool)).toEqual([
      'lookup_customer',
      'lookup_order',
      'fraud_score',
      'issue_refund',
    ]);
    // Every tool call and handoff was decided by the pipeline before it happened.
    const decided = events.filter((e) => e.type === 'guard.decision').map((e) => `${(e as { stage: string }).stage}:${(e as { subject?: string }).subject ?? ''}`);
    expect(decided).toEqual(expect.arrayContaining(['handoff:billing', 'handoff:fraud_check', 'tool_call:issue_refund', 'output:']));
    expect(events[events.length - 1]?.type).toBe('run.completed');
    const record = await run.record();
    expect(record).toMatchObject({ status: 'completed', agent: 'triage', principal: { id: 'user-1' } });
    expect(record!.usage.inputTokens).toBeGreaterThan(0);
  });

  it('routes a product question to tech support', async () => {
    const rt = await boot(createSupportAgents({ model: scripted }));
    const run = await rt.start('triage', "My headphones won't pair over bluetooth", { principal });
    await expect(run.result()).resolves.toMatchObject({ output: expect.stringMatching(/power button/) });
  });

  it('hands off with every call of the turn answered, so the receiver inherits a well-formed conversation', async () => {
    const ping = defineTool({ name: 'ping', description: 'ping', input: z.object({}), effect: 'read', run: () => 'pong' });
    let inherited: string[] = [];
    const rt = await boot([
      defineAgent({
        name: 'front',
        instructions: 'x',
        tools: [ping],
        handoffs: ['back'],
        model: scripted(() => ({ calls: [{ name: 'ping' }, { name: 'transfer_to_back' }, { name: 'ping' }] })),
      }),
      defineAgent({
        name: 'back',
        instructions: 'x',
        model: scripted((c) => {
          inherited = c.messages.map((m) => (m.role === 'tool' ? `${m.name}:${m.content}` : m.role));
          return 'back here';
        }),
      }),
    ]);
    const run = await rt.start('front', 'go', { principal });
    await expect(run.result()).resolves.toMatchObject({ output: 'back here' });
    expect(inherited).toEqual(['user', 'assistant', 'ping:pong', 'transfer_to_back:Transferred to back.', 'ping:Not executed: the conversation was handed off.']);
  });

  it('refuses to start a run at an unknown agent', async () => {
    const rt = await boot(createSupportAgents({ model: scripted }));
    await expect(rt.start('nobody', 'hi', { principal })).rejects.toThrow(UnknownAgentError);
    await expect(rt.start('nobody', 'hi', { principal })).rejects.toThrow(/known agents: billing, fraud_check, tech_support, triage/);
  });

  it('rejects an invalid principal and empty input before anything is queued', async () => {
    const rt = await boot(createSupportAgents({ model: scripted }));
    await expect(rt.start('triage', 'hi', { principal: { id: '', roles: [] } })).rejects.toThrow(/invalid principal: id/);
    await expect(rt.start('triage', '', { principal })).rejects.toThrow(/non-empty/);
  });

  it('gives the model a clear tool error for invalid arguments, unknown tools and a throwing tool, and carries on', async () => {
    let ran = 0;
    const tool = defineTool({
      name: 'lookup',
      description: 'look up an id',
      input: z.object({ id: z.string().regex(/^ID-\d+$/) }),
      effect: 'read',
      run: ({ id }) => {
        ran += 1;
        if (id === 'ID-2') throw new Error('backend exploded');
        return { id };
      },
    });
    const seen: string[] = [];
    const agent = defineAgent({
      name: 'solo',
      instructions: 'test',
      tools: [tool],
      model: scripted((c) => {
        const last = c.messages[c.messages.length - 1];
        if (last?.role === 'tool') seen.push(last.content);
        switch (seen.length) {
          case 0:
            return { calls: [{ name: 'lookup', args: { id: 'nope' } }] };
          case 1:
            return { calls: [{ name: 'delete_everything', args: {} }] };
          case 2:
            return { calls: [{ name: 'lookup', args: { id: 'ID-2' } }] };
          default:
            return 'done after errors';
        }
      }),
    });
    const rt = await boot([agent]);
    const run = await rt.start('solo', 'go', { principal });
    const events = await collect(run);
    await expect(run.result()).resolves.toMatchObject({ output: 'done after errors' });
    expect(seen[0]).toMatch(/invalid arguments for 'lookup': id: /);
    expect(seen[1]).toMatch(/no tool named 'delete_everything'/);
    expect(seen[2]).toMatch(/'lookup' failed: backend exploded/);
    expect(ran).toBe(1);
    expect(events.filter((e) => e.type === 'tool.error')).toHaveLength(3);
  });

  it('retries a retryable model failure and fails the run on one that is not', async () => {
    const flaky = new FlakyModel([new ModelCallError('rate limited', 'test', 429, true)], scripted(() => 'answered'));
    const broken = new FlakyModel([new ModelCallError('bad request', 'test', 400, false)], scripted(() => 'never'));
    const rt = await boot([
      defineAgent({ name: 'flaky', instructions: 'x', model: flaky }),
      defineAgent({ name: 'broken', instructions: 'x', model: broken }),
    ]);
    const ok = await rt.start('flaky', 'hi', { principal });
    const okEvents = await collect(ok);
    await expect(ok.result()).resolves.toMatchObject({ output: 'answered' });
    expect(okEvents.find((e) => e.type === 'model.error')).toMatchObject({ willRetry: true });
    expect(flaky.calls).toBe(2);

    const bad = await rt.start('broken', 'hi', { principal });
    await expect(bad.result()).rejects.toThrow(RunFailedError);
    await expect(bad.result()).rejects.toThrow(/model call failed: bad request/);
    expect(broken.calls).toBe(1);
  });

  it('stops a runaway agent at its turn limit', async () => {
    const echo = defineTool({ name: 'echo', description: 'echo', input: z.object({}), effect: 'read', run: () => 'again' });
    const rt = await boot([defineAgent({ name: 'loopy', instructions: 'x', maxTurns: 3, tools: [echo], model: scripted(() => ({ calls: [{ name: 'echo' }] })) })]);
    const run = await rt.start('loopy', 'go', { principal });
    await expect(run.result()).rejects.toThrow(/reached its limit of 3 model turns/);
  });

  it("turns a delegate's failure into a tool error for its caller", async () => {
    const rt = await boot([
      defineAgent({
        name: 'boss',
        instructions: 'x',
        delegates: ['helper'],
        model: scripted((c) => (c.called('ask_helper') ? `helper said: ${String(c.result('ask_helper'))}` : { calls: [{ name: 'ask_helper', args: { input: 'help' } }] })),
      }),
      defineAgent({ name: 'helper', instructions: 'x', model: new FlakyModel([new ModelCallError('quota', 'test', 403, false)], scripted(() => 'x')) }),
    ]);
    const run = await rt.start('boss', 'go', { principal });
    const events = await collect(run);
    await expect(run.result()).resolves.toMatchObject({ output: expect.stringMatching(/helper said: Error: 'helper' could not answer: model call failed: quota/) });
    expect(events.find((e) => e.type === 'delegation.completed')).toMatchObject({ status: 'failed' });
  });

  it('fans out several delegations from one turn and collects every answer', async () => {
    const rt = await boot([
      defineAgent({
        name: 'boss',
        instructions: 'x',
        delegates: ['left', 'right'],
        model: scripted((c) =>
          c.called('ask_left')
            ? `${String(c.result('ask_left'))} + ${String(c.result('ask_right'))}`
            : { calls: [{ name: 'ask_left', args: { input: 'l' } }, { name: 'ask_right', args: { input: 'r' } }] },
        ),
      }),
      defineAgent({ name: 'left', instructions: 'x', model: scripted(() => 'L') }),
      defineAgent({ name: 'right', instructions: 'x', model: scripted(() => 'R') }),
    ]);
    const run = await rt.start('boss', 'go', { principal });
    await expect(run.result()).resolves.toMatchObject({ output: 'L + R' });
  });

  it('refuses malformed job data without running anything, fails the named run, and keeps serving', async () => {
    let modelCalls = 0;
    const rt = await boot([defineAgent({ name: 'solo', instructions: 'x', model: scripted(() => (modelCalls++, 'fine')) })]);
    await rt.transport.enqueue('garbage-1', 'solo', 'garbage-1', { hello: 'world' });
    // A run whose only job is malformed: it must fail visibly, not hang.
    const runId = '3f1c2a4e-8b7d-4c1a-9e2f-0a1b2c3d4e5f';
    await rt.transport.store.createRun({ id: runId, agent: 'solo', principal: { id: 'user-1', roles: [], attrs: {} }, createdAt: Date.now() });
    await rt.transport.enqueue(runId, 'solo', 'garbage-2', { envelope: { runId, kind: 'start', receiver: 'solo' } });
    const events = await collect(rt.run(runId));
    expect(events.find((e) => e.type === 'envelope.rejected')).toMatchObject({ reason: expect.stringMatching(/^malformed job data: envelope\./) });
    await expect(rt.run(runId).result()).rejects.toThrow(/message refused: malformed job data/);
    expect(modelCalls).toBe(0);
    const after = await rt.start('solo', 'still alive?', { principal });
    await expect(after.result()).resolves.toMatchObject({ output: 'fine' });
  });

  it('while a model works, the events before it are readable; the usage of every turn adds up on the run', async () => {
    let seen: string[] = [];
    let rt: Runtime | undefined;
    const watching: ModelProvider = {
      provider: 'test',
      model: 'watching',
      generate: async (request) => {
        // Answers once it can read its own activation's start from the run's events (or gives up after 3 s).
        for (let i = 0; i < 150 && !seen.includes('agent.started'); i++) {
          await delay(20);
          seen = (await rt!.transport.store.listEvents(request.runId!)).map((e) => e.event.type);
        }
        return { content: seen.includes('agent.started') ? 'seen' : 'not seen', toolCalls: [], usage: { inputTokens: 7, outputTokens: 3 }, model: 'watching' };
      },
    };
    rt = await boot([defineAgent({ name: 'solo', instructions: 'x', model: watching })]);
    const run = await rt.start('solo', 'go', { principal });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'seen', usage: { inputTokens: 7, outputTokens: 3 } });
    const types = (await rt.transport.store.listEvents(run.id)).map((e) => e.event.type);
    expect(types.filter((t) => t === 'agent.started')).toHaveLength(1);
    expect(types.indexOf('agent.started')).toBeLessThan(types.indexOf('model.response'));
  });

  it('an activation whose event writes fail (Redis going away) ends its attempt and is retried, instead of waiting forever', async () => {
    const model = scripted((c) => (c.called('slow') ? 'fine' : { calls: [{ name: 'slow' }] }));
    // A model slow enough that the events buffered ahead of it are written while it works.
    const slowModel: ModelProvider = { provider: 'test', model: 'slow', generate: async (request) => (await delay(60), model.generate(request)) };
    const rt = await boot([defineAgent({ name: 'solo', instructions: 'x', tools: [defineTool({ name: 'slow', description: 's', input: z.object({}), effect: 'read', run: () => 'ok' })], model: slowModel })]);
    const store = rt.transport.store;
    const append = store.appendEvents.bind(store);
    let failures = 2;
    // The activation's first writes fail the way a lost connection does; later ones go through.
    store.appendEvents = async (runId, events) => {
      if (failures > 0 && events.some(({ event }) => event.type === 'agent.started')) {
        failures -= 1;
        throw new Error('Connection is closed.');
      }
      return append(runId, events);
    };
    const run = await rt.start('solo', 'go', { principal });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: 'fine' });
    expect(failures).toBe(0);
  });

  it('lists a run’s events as its event reader reads them', async () => {
    const rt = await boot([defineAgent({ name: 'solo', instructions: 'x', model: scripted(() => 'fine') })]);
    const run = await rt.start('solo', 'list me', { principal });
    await run.result();
    const listed = await rt.transport.store.listEvents(run.id);
    const cursor = rt.transport.store.openEvents(run.id);
    const read = [];
    try {
      for (let batch = await cursor.read(10); batch.length > 0; batch = await cursor.read(10)) read.push(...batch);
    } finally {
      await cursor.close();
    }
    expect(listed.map((e) => e.event.type)).toEqual(expect.arrayContaining(['run.started', 'agent.started', 'run.completed']));
    expect(listed).toEqual(read);
    expect(await rt.transport.store.listEvents('00000000-0000-4000-8000-000000000000')).toEqual([]);
  });

  it('refuses an oversized message with a clear error', async () => {
    const made = make();
    cleanup = made.cleanup;
    runtime = new Runtime({ agents: [defineAgent({ name: 'solo', instructions: 'x', model: scripted(() => 'fine') })], transport: made.transport, maxMessageBytes: 4096 });
    await runtime.startWorkers();
    await expect(runtime.start('solo', 'x'.repeat(5000), { principal })).rejects.toThrow(/exceeds the message limit of 4096/);
  });

  it('a cancel between two calls of one turn stops the rest of the turn', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const effects: string[] = [];
    const slow = defineTool({ name: 'slow', description: 's', input: z.object({}), effect: 'read', run: () => gate.then(() => 'done') });
    const write = defineTool({ name: 'write', description: 'w', input: z.object({}), effect: 'write', run: () => (effects.push('write'), 'ok') });
    const rt = await boot([defineAgent({ name: 'two', instructions: 'x', tools: [slow, write], model: scripted(() => ({ calls: [{ name: 'slow' }, { name: 'write' }] })) })]);
    const run = await rt.start('two', 'go', { principal });
    for await (const e of run.events({ pollMs: 100 })) if (e.type === 'tool.called') break;
    await run.cancel('stop now');
    release();
    await expect(run.result()).rejects.toMatchObject({ status: 'cancelled' });
    await new Promise((r) => setTimeout(r, 300));
    expect(effects).toEqual([]);
  });

  it('cancels a run at its next step', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const wait = defineTool({ name: 'wait', description: 'wait', input: z.object({}), effect: 'read', run: () => gate.then(() => 'waited') });
    let turns = 0;
    const rt = await boot([defineAgent({ name: 'slow', instructions: 'x', tools: [wait], model: scripted(() => (turns++, { calls: [{ name: 'wait' }] })) })]);
    const run = await rt.start('slow', 'go', { principal });
    for await (const e of run.events({ pollMs: 100 })) if (e.type === 'tool.called') break;
    expect(await run.cancel('user gave up')).toBe(true);
    release();
    await expect(run.result()).rejects.toMatchObject({ status: 'cancelled', reason: 'user gave up' });
    const events = await collect(run);
    expect(events[events.length - 1]).toMatchObject({ type: 'run.cancelled' });
    await new Promise((r) => setTimeout(r, 200));
    expect(turns).toBe(1);
  });
});
