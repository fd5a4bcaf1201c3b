import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { PolicySchema, type PolicyInput } from '../guards/policy/policy.js';
import type { RunEvent } from '../runtime/events.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import type { Run } from '../runtime/run.js';
import { Runtime } from '../runtime/runtime.js';
import { startRollback } from '../runtime/rollback.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import type { Transport } from '../runtime/transports/transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const principal = { id: 'ada', roles: [] };

/**
 * Two agents that each change something: `booker` reserves a seat and hands off to `payer`, which
 * charges a card and sends an e-mail (no compensation), then fails when the input says so.
 */
function travel(ledger: string[], options: { failUndo?: { count: number }; emailGate?: Promise<void> } = {}) {
  const reserve = defineTool({
    name: 'reserve',
    description: 'reserve a seat',
    input: z.object({ seat: z.string() }),
    effect: 'write',
    run: ({ seat }) => {
      ledger.push(`reserve ${seat}`);
      return { reservation: `R-${seat}` };
    },
    compensate: ({ seat }, result, ctx) => {
      expect(ctx.idempotencyKey).toMatch(/\.undo$/);
      ledger.push(`release ${seat} (${result.reservation}) for ${ctx.principal.id}`);
    },
  });
  const charge = defineTool({
    name: 'charge',
    description: 'charge a card',
    input: z.object({ cents: z.number().int() }),
    effect: 'write',
    run: ({ cents }) => {
      ledger.push(`charge ${cents}`);
      return { charge: `CH-${cents}` };
    },
    compensate: ({ cents }, result) => {
      if (options.failUndo && options.failUndo.count-- > 0) throw new Error('the payment provider is down');
      ledger.push(`refund ${cents} (${result.charge})`);
    },
  });
  const email = defineTool({
    name: 'email',
    description: 'send an e-mail',
    input: z.object({ text: z.string() }),
    effect: 'external',
    run: async ({ text }) => {
      await options.emailGate;
      ledger.push(`email ${text}`);
      return 'sent';
    },
  });
  const booker = defineAgent({
    name: 'booker',
    instructions: 'reserve, then hand off to payer',
    tools: [reserve],
    handoffs: ['payer'],
    model: new ScriptedModel({
      script: (c) => {
        if (!c.called('reserve')) return { calls: [{ name: 'reserve', args: { seat: '12A' } }] };
        return { calls: [{ name: 'transfer_to_payer', args: {} }] };
      },
    }),
  });
  const payer = defineAgent({
    name: 'payer',
    instructions: 'charge, e-mail, confirm',
    tools: [charge, email],
    model: {
      provider: 'test',
      model: 'payer',
      generate: async (request) => {
        const script = new ScriptedModel({
          script: (c) => {
            if (!c.called('charge')) return { calls: [{ name: 'charge', args: { cents: 9900 } }] };
            if (!c.called('email')) return { calls: [{ name: 'email', args: { text: 'booked' } }] };
            return 'booked and paid';
          },
        });
        const last = request.messages[request.messages.length - 1];
        if (last?.role === 'tool' && last.name === 'email' && /fail/.test(JSON.stringify(request.messages[0]))) throw new Error('the model provider rejected the request');
        return script.generate(request);
      },
    },
  });
  return [booker, payer];
}

async function rollbackEvents(run: Run, rollbackId?: string): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  const signal = AbortSignal.timeout(15_000);
  for await (const e of run.events({ pollMs: 50, signal, until: (e) => e.type === 'rollback.completed' && (!rollbackId || e.rollbackId === rollbackId) })) {
    if (e.type.startsWith('rollback.') || e.type === 'action.compensated') events.push(e);
  }
  return events.filter((e) => !rollbackId || (e as { rollbackId?: string }).rollbackId === rollbackId);
}

describe.each([
  ['BullMQ on Redis', 'redis'],
  ['embedded', 'embedded'],
] as const)('rollback (%s)', (_name, kind) => {
  let keysDir: string;
  const cleanup: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    keysDir = await mkdtemp(join(tmpdir(), 'palisade-rollback-'));
    await generateKeys(keysDir, travel([]));
  });
  afterAll(() => rm(keysDir, { recursive: true, force: true }));
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  async function setup(policy: Partial<PolicyInput> = {}, options: { failUndo?: { count: number }; emailGate?: Promise<void> } = {}) {
    const ledger: string[] = [];
    const agents = travel(ledger, options);
    const prefix = uniquePrefix('rollback');
    const transport: Transport = kind === 'redis' ? new BullMQTransport({ connection: REDIS_URL, prefix, attempts: 1 }) : new EmbeddedTransport({ attempts: 1 });
    const rt = new Runtime({ agents, transport, keys: await loadKeyring(keysDir, [EDGE, 'booker', 'payer']), policy: PolicySchema.parse({ version: 1, ...policy }) });
    await rt.startWorkers();
    cleanup.push(() => rt.close({ timeoutMs: 1000 }));
    if (kind === 'redis') cleanup.push(() => deleteKeys(prefix));
    return { rt, ledger, transport };
  }

  it('a run that fails after side effects is rolled back newest first, each in its own agent, and says what it could not undo', async () => {
    const { rt, ledger } = await setup({ rollback: { onFailure: true } });
    const run = await rt.start('booker', 'book and fail', { principal });
    await expect(run.result({ timeoutMs: 10_000 })).rejects.toThrow(/model provider rejected/);
    const events = await rollbackEvents(run);
    expect(events[0]).toMatchObject({ type: 'rollback.started', trigger: 'failure', actions: 3 });
    expect(events.filter((e) => e.type === 'action.compensated').map((e) => [e.agent, (e as { tool: string }).tool, (e as { status: string }).status])).toEqual([
      ['payer', 'email', 'not_undone'],
      ['payer', 'charge', 'undone'],
      ['booker', 'reserve', 'undone'],
    ]);
    expect(events.at(-1)).toMatchObject({ type: 'rollback.completed', undone: 2, failed: 0, notUndone: 1 });
    expect(ledger).toEqual(['reserve 12A', 'charge 9900', 'email booked', 'refund 9900 (CH-9900)', 'release 12A (R-12A) for ada']);
  });

  it('without the policy option a failed run keeps its side effects; an operator can still roll it back, once', async () => {
    const { rt, ledger } = await setup();
    const run = await rt.start('booker', 'book and fail', { principal });
    await expect(run.result({ timeoutMs: 10_000 })).rejects.toThrow();
    const started = await rt.rollback(run.id, { by: 'ops-1', reason: 'customer complaint' });
    expect(started.actions).toBe(3);
    const events = await rollbackEvents(run, started.rollbackId);
    expect(events[0]).toMatchObject({ type: 'rollback.started', trigger: 'operator', by: 'ops-1' });
    expect(ledger.slice(3)).toEqual(['refund 9900 (CH-9900)', 'release 12A (R-12A) for ada']);
    // Again: nothing is undone twice.
    const again = await rt.rollback(run.id, { by: 'ops-1' });
    const second = await rollbackEvents(run, again.rollbackId);
    expect(second.filter((e) => e.type === 'action.compensated').map((e) => (e as { status: string }).status)).toEqual(['not_undone', 'already_undone', 'already_undone']);
    expect(ledger).toHaveLength(5);
  });

  it('a compensation that fails is reported, and a later rollback retries it', async () => {
    const { rt, ledger } = await setup({ rollback: { onFailure: true } }, { failUndo: { count: 1 } });
    const run = await rt.start('booker', 'book and fail', { principal });
    await expect(run.result({ timeoutMs: 10_000 })).rejects.toThrow();
    const events = await rollbackEvents(run);
    expect(events.find((e) => e.type === 'action.compensated' && e.tool === 'charge')).toMatchObject({ status: 'failed', message: "the compensation of 'charge' failed: the payment provider is down" });
    expect(events.at(-1)).toMatchObject({ type: 'rollback.completed', undone: 1, failed: 1, notUndone: 1 });
    const retry = await rt.rollback(run.id, { by: 'ops-1' });
    const second = await rollbackEvents(run, retry.rollbackId);
    expect(second.at(-1)).toMatchObject({ type: 'rollback.completed', undone: 2, failed: 0 });
    expect(ledger.filter((l) => l.startsWith('refund'))).toEqual(['refund 9900 (CH-9900)']);
  });

  it('a completed run is left alone unless an operator orders the rollback; a cancelled one rolls back with onCancel', async () => {
    const { rt, ledger } = await setup({ rollback: { onFailure: true, onCancel: true } });
    const run = await rt.start('booker', 'book', { principal });
    await expect(run.result({ timeoutMs: 10_000 })).resolves.toMatchObject({ output: 'booked and paid' });
    await new Promise((r) => setTimeout(r, 100));
    expect(ledger).toEqual(['reserve 12A', 'charge 9900', 'email booked']);
    const events: RunEvent[] = [];
    for await (const e of run.events()) events.push(e);
    expect(events.some((e) => e.type === 'rollback.started')).toBe(false);

    let open!: () => void;
    const { rt: rt2, ledger: ledger2 } = await setup({ rollback: { onCancel: true } }, { emailGate: new Promise<void>((resolve) => (open = resolve)) });
    const cancelled = await rt2.start('booker', 'book', { principal });
    for await (const e of cancelled.events({ pollMs: 50 })) if (e.type === 'tool.called' && e.tool === 'email') break;
    await cancelled.cancel('the customer changed their mind');
    open();
    const rolled = await rollbackEvents(cancelled);
    expect(rolled[0]).toMatchObject({ type: 'rollback.started', trigger: 'cancel', actions: 3 });
    expect(ledger2).toEqual(['reserve 12A', 'charge 9900', 'email booked', 'refund 9900 (CH-9900)', 'release 12A (R-12A) for ada']);
  });

  it('orders that are not authentic are refused: an operator order without the edge MAC, a failure order for a run that did not fail', async () => {
    const { rt, ledger, transport } = await setup({ rollback: { onFailure: true } });
    const run = await rt.start('booker', 'book', { principal });
    await run.result({ timeoutMs: 10_000 });
    // Someone with Redis access but no edge key orders the undo of a completed run.
    await startRollback({ transport, runId: run.id, trigger: 'operator', by: 'mallory', reason: 'forged' });
    // And claims it failed.
    await startRollback({ transport, runId: run.id, trigger: 'failure', reason: 'forged' });
    const refusals: RunEvent[] = [];
    const signal = AbortSignal.timeout(10_000);
    for await (const e of run.events({ pollMs: 50, signal, until: () => refusals.length >= 6 })) {
      if (e.type === 'envelope.rejected') refusals.push(e);
    }
    expect(refusals).toHaveLength(6);
    expect(refusals.filter((e) => /rollback order refused: the rollback order is not authentic/.test((e as { reason: string }).reason))).toHaveLength(3);
    expect(refusals.filter((e) => /rollback order refused: the run is completed, not failed/.test((e as { reason: string }).reason))).toHaveLength(3);
    expect(ledger).toEqual(['reserve 12A', 'charge 9900', 'email booked']);
  });

  it('an action record written into the log by anyone but the agent is not undone', async () => {
    const { rt, ledger, transport } = await setup();
    const run = await rt.start('booker', 'book', { principal });
    await run.result({ timeoutMs: 10_000 });
    const [first] = await transport.store.listActions(run.id);
    // A forged entry: the real one's MAC on changed arguments.
    await transport.store.recordAction(run.id, { ...first!, key: 'forged-key', args: { seat: '1A' } });
    const started = await rt.rollback(run.id, { by: 'ops-1' });
    const events = await rollbackEvents(run, started.rollbackId);
    expect(events.find((e) => e.type === 'action.compensated' && e.callId === first!.callId && e.status === 'failed')).toMatchObject({ message: expect.stringMatching(/action record is not authentic/) });
    expect(ledger.filter((l) => l.startsWith('release'))).toEqual(['release 12A (R-12A) for ada']);
  });
});
