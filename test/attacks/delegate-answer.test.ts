import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent, type Agent } from '../../agents/agent.js';
import { flowsTo, join, label, leq, LEVELS, type Label, type LabelInput } from '../../agents/label.js';
import { ModelCallError } from '../../agents/model.js';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import { defineTool } from '../../agents/tool.js';
import { ALLOW } from '../../guards/decision.js';
import { defineGuard } from '../../guards/guard.js';
import { compilePolicy } from '../../guards/policy/load-policy.js';
import { PolicySchema, type PolicyInput } from '../../guards/policy/policy.js';
import type { RunEvent } from '../../runtime/events.js';
import { Runtime } from '../../runtime/runtime.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { EmbeddedTransport } from '../../runtime/transports/embedded-transport.js';
import type { Transport } from '../../runtime/transports/transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';

/**
 * A delegate's answer is checked against its caller's clearance before it joins the caller's
 * context, as a handoff is checked against its target's. The intake desk, cleared for `internal`,
 * asks the records desk about a patient; the records desk looks the health record up (restricted,
 * health) and answers with it. A clinician's run: the reply to the clinician may carry the record,
 * the intake desk may not read it.
 */

const SSN = '536-22-8471';
const DIAGNOSIS = 'stage II melanoma';
const RECORD = `Jane Roe, SSN ${SSN}, diagnosis: ${DIAGNOSIS}`;
const HEALTH: LabelInput = { level: 'restricted', categories: ['health'] };
const clinician = { id: 'dr-who', roles: ['clinician'] };

/** Everything the intake desk's model was ever given, one entry per turn. */
type Seen = string[];

function agents(intakeClearance: LabelInput, seen: Seen): Agent[] {
  const lookup = defineTool({
    name: 'lookup_patient',
    description: "a patient's record",
    input: z.object({ patientId: z.string() }),
    effect: 'read',
    returns: HEALTH,
    run: () => RECORD,
  });
  const records = defineAgent({
    name: 'records',
    instructions: 'look records up',
    tools: [lookup],
    clearance: { level: 'restricted', categories: ['health', 'pii'] },
    model: new ScriptedModel({
      script: (c) => (c.called('lookup_patient') ? `The record: ${String(c.result('lookup_patient'))}` : { calls: [{ name: 'lookup_patient', args: { patientId: 'P-4471' } }] }),
    }),
  });
  const intake = defineAgent({
    name: 'intake',
    instructions: 'book appointments',
    delegates: ['records'],
    clearance: intakeClearance,
    model: new ScriptedModel({
      script: (c) => {
        seen.push(JSON.stringify(c.messages));
        return c.called('ask_records') ? `Booked. Records said: ${String(c.result('ask_records'))}` : { calls: [{ name: 'ask_records', args: { input: 'What is on file for P-4471?' } }] };
      },
    }),
  });
  return [intake, records];
}

/** The clinician may be told the record; nothing else is set, so the agents' own clearances hold unless `input` says otherwise. */
const CLINICIAN = { level: 'restricted' as const, categories: ['health', 'pii', 'financial'] };
const policyOf = (input: Partial<PolicyInput> = {}) => {
  const { clearance, ...rest } = input;
  return compilePolicy(PolicySchema.parse({ version: 1, ...rest, clearance: { roles: { clinician: CLINICIAN }, ...clearance } }));
};

type Decision = Extract<RunEvent, { type: 'guard.decision' }>;

async function runOn(transport: Transport, list: Agent[], policy = policyOf(), extra: { guards?: Parameters<typeof defineGuard>[0][] } = {}) {
  const runtime = new Runtime({ agents: list, policy, transport, guards: extra.guards?.map((g) => defineGuard(g)) });
  await runtime.startWorkers();
  try {
    const run = await runtime.start('intake', 'Book P-4471 for a follow-up', { principal: clinician });
    const outcome = await run.result().then(
      (r) => ({ output: r.output }),
      (error: unknown) => ({ error: String(error) }),
    );
    const events = (await runtime.transport.store.listEvents(run.id)).map((e) => e.event as RunEvent);
    return { outcome, events };
  } finally {
    await runtime.close();
  }
}

const answerDecisions = (events: RunEvent[]) => events.filter((e): e is Decision => e.type === 'guard.decision' && e.agent === 'intake' && e.subject === 'ask_records');
const finalLabel = (events: RunEvent[]): Label | undefined => (events.find((e) => e.type === 'run.completed') as Extract<RunEvent, { type: 'run.completed' }> | undefined)?.label;

describe("a delegate's answer against its caller's clearance (embedded)", () => {
  it('an intake desk cleared for internal never sees the diagnosis it asked the records desk for; the context stays internal', async () => {
    const seen: Seen = [];
    const { outcome, events } = await runOn(new EmbeddedTransport(), agents({ level: 'internal' }, seen));
    // The records desk did answer with the record: the check on receipt is what stopped it.
    expect(events.find((e) => e.type === 'delegation.completed')).toMatchObject({ to: 'records', status: 'completed' });
    expect(seen.length).toBeGreaterThanOrEqual(2);
    for (const turn of seen) {
      expect(turn).not.toContain(DIAGNOSIS);
      expect(turn).not.toContain(SSN);
    }
    expect(seen[seen.length - 1]).toMatch(/Error: the answer of 'records' was withheld: flow: the context is restricted \[health.*\], above the clearance of agent 'intake' \(internal\)/);
    expect(JSON.stringify(outcome)).not.toContain(DIAGNOSIS);
    const decision = answerDecisions(events);
    expect(decision).toHaveLength(1);
    expect(decision[0]).toMatchObject({ stage: 'handoff', verdict: 'block', reasons: [expect.stringMatching(/^flow: the context is restricted \[health.*\], above the clearance of agent 'intake' \(internal\)$/)] });
    expect(events.find((e) => e.type === 'tool.error' && e.agent === 'intake')).toMatchObject({ tool: 'ask_records', message: expect.stringMatching(/^the answer of 'records' was withheld: flow: /) });
    const final = finalLabel(events)!;
    expect(final.level).not.toBe('restricted');
    expect(final.categories).not.toContain('health');
    expect(flowsTo(final, label({ level: 'internal' }))).toBe(true);
  });

  it('an intake desk cleared for health records gets the answer, and its context takes the answer’s label', async () => {
    const seen: Seen = [];
    const { outcome, events } = await runOn(new EmbeddedTransport(), agents({ level: 'restricted', categories: ['health', 'pii'] }, seen));
    expect(seen[seen.length - 1]).toContain(DIAGNOSIS);
    expect(outcome).toMatchObject({ output: expect.stringContaining(DIAGNOSIS) });
    expect(answerDecisions(events)).toMatchObject([{ stage: 'handoff', verdict: 'allow' }]);
    expect(leq(label(HEALTH), finalLabel(events)!)).toBe(true);
  });

  it('a clearance set by the policy for the caller wins over its own declaration', async () => {
    const seen: Seen = [];
    const policy = policyOf({ clearance: { agents: { intake: { level: 'internal' } } } });
    const { events } = await runOn(new EmbeddedTransport(), agents({ level: 'restricted', categories: ['health', 'pii'] }, seen), policy);
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    expect(answerDecisions(events)).toMatchObject([{ verdict: 'block' }]);
  });

  it('a delegate that fails with a message quoting the record is held to the same check', async () => {
    const seen: Seen = [];
    // The deployment's own guard withholds the records desk's reply, quoting what it withheld: the failure text carries the diagnosis.
    const dlp = { name: 'dlp', stages: ['output' as const], check: (e: { agent: string; content?: string }) => (e.agent === 'records' && e.content?.includes(DIAGNOSIS) ? { verdict: 'block' as const, reasons: [`the reply names "${DIAGNOSIS}"`], risk: 0.9 } : ALLOW) };
    const { events } = await runOn(new EmbeddedTransport(), agents({ level: 'internal' }, seen), policyOf(), { guards: [dlp] });
    expect(events.find((e) => e.type === 'delegation.completed')).toMatchObject({ status: 'failed' });
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    expect(answerDecisions(events)).toMatchObject([{ verdict: 'block' }]);
    expect(finalLabel(events)!.categories).not.toContain('health');
  });

  it("a guard's reason that quotes the withheld answer is not told to the caller's model", async () => {
    const seen: Seen = [];
    // Cleared for the record, but the deployment's own guard refuses answers naming a diagnosis, quoting it.
    const phi = { name: 'phi', stages: ['handoff' as const], check: (e: { content?: string }) => (e.content?.includes(DIAGNOSIS) ? { verdict: 'block' as const, reasons: [`the answer names "${DIAGNOSIS}"`], risk: 0.9 } : ALLOW) };
    const { events } = await runOn(new EmbeddedTransport(), agents({ level: 'restricted', categories: ['health', 'pii'] }, seen), policyOf(), { guards: [phi] });
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    expect(seen[seen.length - 1]).toContain("the answer of 'records' was withheld");
    // The run's events keep the quote, labelled with what it was judged at, for readers cleared for it.
    const withheld = events.find((e): e is Extract<RunEvent, { type: 'tool.error' }> => e.type === 'tool.error' && e.agent === 'intake');
    expect(withheld?.quote).toMatchObject({ text: expect.stringContaining(DIAGNOSIS), label: { level: 'restricted' } });
    expect(finalLabel(events)!.categories).not.toContain('health');
  });

  it('with onViolation: escalate the answer is withheld, saying approval is not available for answers', async () => {
    const seen: Seen = [];
    const { events } = await runOn(new EmbeddedTransport(), agents({ level: 'internal' }, seen), policyOf({ clearance: { onViolation: 'escalate' } }));
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    expect(answerDecisions(events)).toMatchObject([{ verdict: 'escalate' }]);
    expect(seen[seen.length - 1]).toMatch(/withheld: flow: .*; approval is not available for a delegate's answer/);
    expect(events.some((e) => e.type === 'approval.requested')).toBe(false);
    expect(finalLabel(events)!.categories).not.toContain('health');
  });

  it('a redaction on the answer passes the rewritten text, with the answer’s label', async () => {
    const seen: Seen = [];
    // PII is redacted where answers come in (and not at the records desk's own reply): the SSN goes, the diagnosis (cleared) stays.
    const policy = policyOf({ content: { pii: { action: 'redact', stages: ['handoff'] } } });
    const { events } = await runOn(new EmbeddedTransport(), agents({ level: 'restricted', categories: ['health', 'pii'] }, seen), policy);
    const last = seen[seen.length - 1]!;
    expect(last).toContain(DIAGNOSIS);
    expect(last).not.toContain(SSN);
    expect(answerDecisions(events)).toMatchObject([{ verdict: 'redact' }]);
    expect(leq(join(label(HEALTH), label({ level: 'confidential', categories: ['pii'] })), finalLabel(events)!)).toBe(true);
  });

  it('a redelivery after the answers were collected decides the same and takes nothing in twice', async () => {
    const seen: Seen = [];
    const [intake, records] = agents({ level: 'internal' }, seen);
    let failed = false;
    // The first turn after the answer fails as an overloaded model does: the activation is delivered again.
    const flaky = defineAgent({
      name: 'intake',
      instructions: 'book appointments',
      delegates: ['records'],
      clearance: { level: 'internal' },
      model: {
        provider: 'flaky',
        model: 'flaky',
        generate: async (request) => {
          if (!failed && request.messages.some((m) => m.role === 'tool')) {
            failed = true;
            throw new ModelCallError('overloaded', 'flaky', 503, true);
          }
          return intake!.model.generate(request);
        },
      },
    });
    const { outcome, events } = await runOn(new EmbeddedTransport({ backoffMs: 1 }), [flaky, records!]);
    expect(failed).toBe(true);
    expect(outcome).toMatchObject({ output: expect.stringMatching(/^Booked/) });
    const last = JSON.parse(seen[seen.length - 1]!) as Array<{ role: string }>;
    expect(last.filter((m) => m.role === 'tool')).toHaveLength(1);
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    const decisions = answerDecisions(events);
    // The retry resumed from the checkpoint that still waits for the answer: it was collected, and decided, twice.
    expect(decisions).toHaveLength(2);
    for (const d of decisions) expect(d).toMatchObject({ verdict: 'block', reasons: decisions[0]!.reasons });
    expect(finalLabel(events)!.categories).not.toContain('health');
  });

  it('the caller sees an answer exactly when its label flows to the caller’s clearance; the context never rises above it otherwise (property)', async () => {
    const CATS = ['health', 'pii', 'financial', 'legal'];
    const arbLabel = fc.record({ level: fc.constantFrom(...LEVELS), categories: fc.uniqueArray(fc.constantFrom(...CATS), { maxLength: 3 }) }).map((l) => label(l));
    await fc.assert(
      fc.asyncProperty(arbLabel, arbLabel, async (answerLabel, clearance) => {
        const seen: Seen = [];
        const secret = 'PLUMORCHARD';
        const tool = defineTool({ name: 'fetch', description: 'fetch', input: z.object({}), effect: 'read', returns: answerLabel, run: () => secret });
        const list = [
          defineAgent({ name: 'intake', instructions: 'x', delegates: ['records'], clearance, model: new ScriptedModel({ script: (c) => (seen.push(JSON.stringify(c.messages)), c.called('ask_records') ? 'done' : { calls: [{ name: 'ask_records', args: { input: 'q' } }] }) }) }),
          defineAgent({ name: 'records', instructions: 'x', tools: [tool], model: new ScriptedModel({ script: (c) => (c.called('fetch') ? `it is ${String(c.result('fetch'))}` : { calls: [{ name: 'fetch' }] }) }) }),
        ];
        const policy = policyOf({ clearance: { roles: { clinician: { level: 'restricted', categories: CATS } } } });
        const { events } = await runOn(new EmbeddedTransport(), list, policy);
        const sawIt = seen.some((t) => t.includes(secret));
        expect(sawIt).toBe(flowsTo(answerLabel, clearance));
        const final = finalLabel(events)!;
        if (sawIt) expect(leq({ ...answerLabel, integrity: final.integrity }, final)).toBe(true);
        else expect(flowsTo(final, clearance)).toBe(true);
      }),
      { numRuns: 30 },
    );
  });
});

describe("a delegate's answer against its caller's clearance (BullMQ, real Redis)", () => {
  let prefix = '';
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    for (const r of runtimes.splice(0)) await r.close({ timeoutMs: 2000 });
    await deleteKeys(prefix);
  });

  it('a records worker running with no guards at all (compromised) sends the record anyway: the intake worker withholds it on receipt', async () => {
    prefix = uniquePrefix('delegate-answer');
    const seen: Seen = [];
    const list = agents({ level: 'internal' }, seen);
    // The compromised worker: same agents, no policy, every step allowed.
    const rogue = new Runtime({ agents: list, pipeline: { evaluate: async () => ALLOW }, transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    const guarded = new Runtime({ agents: list, policy: policyOf(), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    runtimes.push(rogue, guarded);
    await rogue.startWorkers({ agents: ['records'] });
    await guarded.startWorkers({ agents: ['intake'] });
    const run = await guarded.start('intake', 'Book P-4471 for a follow-up', { principal: clinician });
    const { output } = await run.result({ timeoutMs: 20_000 });
    expect(output).not.toContain(DIAGNOSIS);
    const events = (await guarded.transport.store.listEvents(run.id)).map((e) => e.event as RunEvent);
    // The rogue worker's reply went out unchecked, with the record's label.
    expect(events.filter((e): e is Decision => e.type === 'guard.decision' && e.agent === 'records').map((d) => d.verdict)).toEqual(expect.arrayContaining(['allow']));
    expect(events.some((e) => e.type === 'guard.decision' && e.agent === 'records' && e.verdict !== 'allow')).toBe(false);
    expect(events.find((e) => e.type === 'delegation.completed')).toMatchObject({ status: 'completed' });
    for (const turn of seen) expect(turn).not.toContain(DIAGNOSIS);
    // Intake's own content guard finds the SSN the rogue worker did not redact; the flow guard withholds the whole answer.
    expect(answerDecisions(events)).toMatchObject([
      { stage: 'handoff', verdict: 'block', reasons: expect.arrayContaining([expect.stringMatching(/^content: personal data \(us_ssn\)/), "flow: the context is restricted [health], above the clearance of agent 'intake' (internal)"]) },
    ]);
    for (const turn of seen) expect(turn).not.toContain(SSN);
    expect(finalLabel(events)!.categories).not.toContain('health');
  });
});
