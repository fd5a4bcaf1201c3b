import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../../agents/agent.js';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import { defineTool } from '../../agents/tool.js';
import { defineGuard } from '../../guards/guard.js';
import { compilePolicy } from '../../guards/policy/load-policy.js';
import { PolicySchema } from '../../guards/policy/policy.js';
import { setupTracing, type Tracing } from '../../tracing/setup.js';
import { deployWithEdge } from '../support/edge-deployment.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';

/** The health record the intern must never read: an SSN and a diagnosis. */
const SSN = '536-22-8471';
const DIAGNOSIS = 'stage II melanoma';
const RECORD = `Jane Roe, SSN ${SSN}, diagnosis: ${DIAGNOSIS}`;
const LEAKS = [SSN, DIAGNOSIS, '536228471', 'melanoma'];

const KEYS = { intern: 'pk-intern-0123456789abcdef', clinician: 'pk-clinician-0123456789abcdef', ops: 'pk-ops-0123456789abcdef', clinicalOps: 'pk-clinical-ops-0123456789abcdef' } as const;
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/**
 * A records desk: its lookup tool fails with an error that quotes the record (labelled restricted/health
 * by the tool's `returns`); its model then tries to file the text as a note, and replies quoting it.
 * A guard of the deployment's own blocks the note, with a reason that quotes what it blocked.
 */
function recordsDesk() {
  const lookup = defineTool({
    name: 'lookup_patient',
    description: "a patient's record",
    input: z.object({ patientId: z.string() }),
    effect: 'read',
    returns: { level: 'restricted', categories: ['health'] },
    requires: ['records:read'],
    run: () => {
      throw new Error(`the record is locked for editing: ${RECORD}`);
    },
  });
  const fileNote = defineTool({ name: 'file_note', description: 'file a note', input: z.object({ text: z.string() }), effect: 'write', requires: ['notes:write'], run: () => ({ filed: true }) });
  const phiFilter = defineGuard({
    name: 'phi-filter',
    stages: ['tool_call'],
    check: (e) => {
      const text = JSON.stringify(e.args ?? {});
      const hit = /diagnosis: [^"]*/.exec(text);
      return hit ? { verdict: 'block', reasons: [`the note names a diagnosis ("${hit[0]}")`], risk: 0.9 } : { verdict: 'allow', reasons: [], risk: 0 };
    },
  });
  const records = defineAgent({
    name: 'records',
    instructions: 'look records up',
    tools: [lookup, fileNote],
    model: new ScriptedModel({
      script: (c) => {
        if (!c.called('lookup_patient')) return { calls: [{ name: 'lookup_patient', args: { patientId: 'P-4471' } }] };
        const failure = String(c.result('lookup_patient'));
        if (!c.called('file_note')) return { calls: [{ name: 'file_note', args: { text: failure } }] };
        return `I could not open it: ${failure}`;
      },
    }),
  });
  return { agents: [records], guards: [phiFilter] };
}

const policy = compilePolicy(
  PolicySchema.parse({
    version: 1,
    roles: {
      intern: ['records:read', 'notes:write'],
      clinician: ['records:read', 'notes:write'],
      operator: ['read:runs'],
      'clinical-ops': ['read:runs'],
    },
    clearance: {
      reply: { level: 'internal' },
      // The policy clears clinicians, and the operators of the clinic, for health records: nobody else.
      roles: { clinician: { level: 'restricted', categories: ['health', 'pii'] }, 'clinical-ops': { level: 'restricted', categories: ['health', 'pii'] } },
      onViolation: 'block',
    },
    content: { pii: { action: 'label', stages: ['output'] } },
  }),
);

interface SseEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}

/** Reads a whole SSE response (the stream ends after the run's terminal event). */
async function readSse(response: Response): Promise<{ raw: string; events: SseEvent[] }> {
  const raw = await response.text();
  const events = raw
    .split('\n\n')
    .map((frame) => Object.fromEntries(frame.split('\n').filter((l) => l && !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)])))
    .filter((f) => f.data !== undefined)
    .map((f) => ({ id: f.id ?? '', event: f.event ?? 'message', data: JSON.parse(f.data!) as Record<string, unknown> }));
  return { raw, events };
}

const leaked = (text: string): string[] => LEAKS.filter((secret) => text.includes(secret));

describe('attack: a User (an intern) reads a health record quoted by a tool error', () => {
  const prefix = uniquePrefix('content-leak');
  const spans = new InMemorySpanExporter();
  const cleanup: Array<() => Promise<unknown>> = [];
  let tracing: Tracing;
  let app: FastifyInstance;
  let base: string;
  let redis: Redis;

  /** Starts a run at the edge as `key`, following its live event stream from the start. */
  async function startFollowed(key: string): Promise<{ runId: string; live: Promise<{ raw: string; events: SseEvent[] }> }> {
    const started = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(key), payload: { agent: 'records', input: 'Open the record of patient P-4471' } });
    expect(started.statusCode).toBe(202);
    const { runId } = started.json() as { runId: string };
    const response = await fetch(`${base}/v1/runs/${runId}/events`, { headers: bearer(key) });
    expect(response.status).toBe(200);
    return { runId, live: readSse(response) };
  }

  const eventsAs = async (key: string, runId: string) => readSse(await fetch(`${base}/v1/runs/${runId}/events`, { headers: bearer(key) }));
  const runAs = async (key: string, runId: string) => {
    const res = await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(key) });
    expect(res.statusCode).toBe(200);
    return { raw: res.body, run: res.json() as Record<string, unknown> & { decisions: Array<Record<string, unknown>> } };
  };

  /** Every audit record as Redis holds it, whatever the reader: the raw stream entries under the prefix. */
  async function rawAudit(): Promise<string> {
    const dump: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*audit*`, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        const type = await redis.type(key);
        if (type === 'stream') dump.push(JSON.stringify(await redis.xrange(key, '-', '+')));
        else if (type === 'string') dump.push((await redis.get(key)) ?? '');
        else if (type === 'hash') dump.push(JSON.stringify(await redis.hgetall(key)));
      }
    } while (cursor !== '0');
    return dump.join('\n');
  }

  beforeAll(async () => {
    tracing = setupTracing({ exporter: spans });
    cleanup.push(() => tracing.shutdown());
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    cleanup.push(async () => redis.disconnect());
    cleanup.push(() => deleteKeys(prefix));
    const deployment = await deployWithEdge({
      prefix,
      ...recordsDesk(),
      policy,
      apiKeys: {
        [KEYS.intern]: { id: 'intern-1', roles: ['intern'] },
        [KEYS.clinician]: { id: 'dr-who', roles: ['clinician'] },
        [KEYS.ops]: { id: 'ops-1', roles: ['operator'] },
        [KEYS.clinicalOps]: { id: 'cops-1', roles: ['clinical-ops'] },
      },
    });
    cleanup.push(deployment.close);
    ({ app, base } = deployment);
  });

  afterAll(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
  });

  it("withholds the reply, and the run's events (live and replayed), record, audit log and spans carry neither the SSN nor the diagnosis", async () => {
    const { runId, live } = await startFollowed(KEYS.intern);
    const followed = await live;
    expect(followed.events.at(-1)?.event).toBe('run.failed');

    // The quote was there to take: the tool's error reached the model and the guard.
    const replayed = await eventsAs(KEYS.intern, runId);
    const { raw: runJson, run } = await runAs(KEYS.intern, runId);
    const listJson = (await app.inject({ method: 'GET', url: '/v1/runs', headers: bearer(KEYS.intern) })).body;
    await tracing.forceFlush();
    const spanJson = JSON.stringify(spans.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));

    expect(leaked(followed.raw)).toEqual([]);
    expect(leaked(replayed.raw)).toEqual([]);
    expect(leaked(runJson)).toEqual([]);
    expect(leaked(listJson)).toEqual([]);
    expect(leaked(await rawAudit())).toEqual([]);
    expect(leaked(spanJson)).toEqual([]);

    // What the intern does get: what happened, in our words, and a code where details were left out.
    expect(run).toMatchObject({ status: 'failed', error: expect.stringMatching(/^reply withheld: .*flow: the context is restricted \[health.*above the clearance of the reply to 'intern-1' \(internal\)$/) });
    const byType = (type: string) => replayed.events.filter((e) => e.event === type).map((e) => e.data);
    expect(byType('tool.error')).toEqual([
      expect.objectContaining({ tool: 'lookup_patient', message: "'lookup_patient' failed", withheld: { code: 'above_clearance', reason: expect.any(String) } }),
      expect.objectContaining({ tool: 'file_note', message: expect.stringMatching(/^the call to 'file_note' was not allowed: /), withheld: expect.objectContaining({ code: 'above_clearance' }) }),
    ]);
    expect(byType('guard.decision').find((d) => d.stage === 'tool_call' && d.subject === 'file_note')).toMatchObject({ verdict: 'block', withheld: { code: 'above_clearance' } });
    expect(run.decisions.find((d) => d.subject === 'file_note')).toMatchObject({ verdict: 'block', withheld: { code: 'above_clearance' } });
    expect(followed.events.map((e) => e.event)).toEqual(replayed.events.map((e) => e.event));

    // The audit log says what happened, from fixed templates.
    const audit = (await rawAudit()).replace(/\\"/g, '"');
    expect(audit).toContain('"action":"tool.failed"');
    expect(audit).toContain(`"reasons":["'lookup_patient' failed"]`);
    expect(audit).toContain('"subject":"file_note"');
  });

  it('an operator sees the run but not the record; the policy clears the clinic\'s operators for it, and they get the details', async () => {
    const { runId, live } = await startFollowed(KEYS.intern);
    await live;
    const asOps = await eventsAs(KEYS.ops, runId);
    expect(asOps.events.at(-1)?.event).toBe('run.failed');
    expect(leaked(asOps.raw)).toEqual([]);
    expect(leaked((await runAs(KEYS.ops, runId)).raw)).toEqual([]);

    const cleared = await eventsAs(KEYS.clinicalOps, runId);
    const toolError = cleared.events.find((e) => e.event === 'tool.error' && e.data.tool === 'lookup_patient')!.data;
    expect(toolError).toMatchObject({ message: `'lookup_patient' failed: the record is locked for editing: ${RECORD}` });
    expect(toolError).not.toHaveProperty('withheld');
    const note = cleared.events.find((e) => e.event === 'guard.decision' && e.data.subject === 'file_note')!.data;
    expect(note.reasons).toContain(`phi-filter: the note names a diagnosis ("diagnosis: ${DIAGNOSIS}")`);
  });

  it('a clinician running their own lookup gets the reply and every detail they are cleared for', async () => {
    const { runId, live } = await startFollowed(KEYS.clinician);
    const own = await live;
    expect(own.events.at(-1)).toMatchObject({ event: 'run.completed', data: { output: `I could not open it: Error: 'lookup_patient' failed: the record is locked for editing: ${RECORD}` } });
    expect(own.events.find((e) => e.event === 'tool.error')?.data.message).toContain(SSN);
    expect((await runAs(KEYS.clinician, runId)).run).toMatchObject({ status: 'completed', output: expect.stringContaining(DIAGNOSIS) });

    // The reply was the clinician's: an operator the policy does not clear gets neither it nor the details.
    const { raw, run } = await runAs(KEYS.ops, runId);
    expect(leaked(raw)).toEqual([]);
    expect(run).toMatchObject({ status: 'completed', withheld: { code: 'above_clearance' } });
    expect(run).not.toHaveProperty('output');
    expect((await runAs(KEYS.clinicalOps, runId)).run).toMatchObject({ output: expect.stringContaining(SSN) });
    // Not the intern's run: it does not exist for them.
    expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.intern) })).statusCode).toBe(404);
    expect(leaked(await rawAudit())).toEqual([]);
  });
});
