import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../../agents/agent.js';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import { defineTool } from '../../agents/tool.js';
import { defineGuard } from '../../guards/guard.js';
import { compilePolicy } from '../../guards/policy/load-policy.js';
import { PolicySchema } from '../../guards/policy/policy.js';
import { maskArguments, requestFingerprint } from '../../runtime/approvals/approver-view.js';
import { callEdge, deployWithEdge } from '../support/edge-deployment.js';
import { deleteKeys, uniquePrefix } from '../support/redis.js';

/** The health record only the clinic may read: a diagnosis and a patient's name. */
const DIAGNOSIS = 'stage II melanoma';
const RECORD = `Jane Roe, diagnosis: ${DIAGNOSIS}`;
const LEAKS = [DIAGNOSIS, 'melanoma', 'Jane Roe'];
const NOTE = `fine to file: Jane Roe's ${DIAGNOSIS} is already on her chart`;

const KEYS = {
  intern: 'pk-intern-approval-0123456789abcdef',
  ops: 'pk-ops-approval-0123456789abcdef',
  lead: 'pk-lead-approval-0123456789abcdef',
  clinician: 'pk-clinician-approval-0123456789abcdef',
} as const;

interface ApprovalView {
  request: { id: string; runId: string; arguments: string; reasons: string[]; sources: Array<{ path: string; value: string }> };
  decision?: { status: string; note?: string };
  mayDecide: boolean;
  withheld?: { code: string };
}

/**
 * A records desk: the lookup tool returns a health record (restricted/health); the model files it as
 * a note; the deployment's own guard escalates the note with a reason that quotes it.
 */
function recordsDesk() {
  const lookup = defineTool({
    name: 'lookup_patient',
    description: "a patient's record",
    input: z.object({ patientId: z.string() }),
    effect: 'read',
    returns: { level: 'restricted', categories: ['health'] },
    requires: ['records:read'],
    run: () => RECORD,
  });
  const fileNote = defineTool({ name: 'file_note', description: 'file a note', input: z.object({ text: z.string() }), effect: 'write', requires: ['notes:write'], run: () => ({ filed: true }) });
  const phiReview = defineGuard({
    name: 'phi-review',
    stages: ['tool_call'],
    check: (e) => {
      const hit = /diagnosis: [^"]*/.exec(JSON.stringify(e.args ?? {}));
      return hit ? { verdict: 'escalate', reasons: [`the note names a diagnosis ("${hit[0]}")`], risk: 0.9 } : { verdict: 'allow', reasons: [], risk: 0 };
    },
  });
  const records = defineAgent({
    name: 'records',
    instructions: 'look records up and file notes',
    tools: [lookup, fileNote],
    model: new ScriptedModel({
      script: (c) => {
        if (!c.called('lookup_patient')) return { calls: [{ name: 'lookup_patient', args: { patientId: 'P-4471' } }] };
        if (!c.called('file_note')) return { calls: [{ name: 'file_note', args: { text: String(c.result('lookup_patient')) } }] };
        return 'Filed.';
      },
    }),
  });
  return { agents: [records], guards: [phiReview] };
}

const policy = compilePolicy(
  PolicySchema.parse({
    version: 1,
    roles: {
      intern: ['records:read', 'notes:write'],
      operator: ['read:runs'],
      // A lead who holds the approver's permission, but whom the policy does not clear for health records.
      lead: ['approve:tool:file_note'],
      clinician: ['approve:tool:file_note', 'read:runs'],
    },
    clearance: { reply: { level: 'internal' }, roles: { clinician: { level: 'restricted', categories: ['health', 'pii'] } }, onViolation: 'block' },
  }),
);

const leaked = (text: string): string[] => LEAKS.filter((secret) => text.includes(secret));

describe('attack: a User reads a health record through an approval request (real Redis, BullMQ, HTTP edge)', () => {
  const prefix = uniquePrefix('approval-content');
  const cleanup: Array<() => Promise<unknown>> = [];
  let base: string;

  const call = (key: string, method: string, path: string, body?: object) => callEdge<unknown>(base, key, method, path, body);

  beforeAll(async () => {
    cleanup.push(() => deleteKeys(prefix));
    const deployment = await deployWithEdge({
      prefix,
      ...recordsDesk(),
      policy,
      apiKeys: {
        [KEYS.intern]: { id: 'intern-1', roles: ['intern'] },
        [KEYS.ops]: { id: 'ops-1', roles: ['operator'] },
        [KEYS.lead]: { id: 'lead-1', roles: ['lead'] },
        [KEYS.clinician]: { id: 'dr-who', roles: ['clinician'] },
      },
    });
    cleanup.push(deployment.close);
    base = deployment.base;
  });

  afterAll(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
  });

  /** The intern's run, once its note waits for approval (as the cleared approver lists it). */
  async function pendingNote(): Promise<{ runId: string; id: string }> {
    const started = await call(KEYS.intern, 'POST', '/v1/runs', { agent: 'records', input: 'File the record of patient P-4471 as a note' });
    expect(started.status).toBe(202);
    const { runId } = started.body as { runId: string };
    for (;;) {
      const listed = (await call(KEYS.clinician, 'GET', '/v1/approvals')).body as ApprovalView[];
      const found = listed.find((a) => a.request.runId === runId);
      if (found) return { runId, id: found.request.id };
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it("the run's principal, an operator and an uncleared approver get the request without the record; the uncleared approver may not decide it", async () => {
    const { id } = await pendingNote();
    for (const key of [KEYS.intern, KEYS.ops, KEYS.lead]) {
      const one = await call(key, 'GET', `/v1/approvals/${id}`);
      expect(one.status).toBe(200);
      expect(leaked(one.raw)).toEqual([]);
      const view = one.body as ApprovalView;
      expect(view).toMatchObject({ mayDecide: false, withheld: { code: 'above_clearance' }, request: { arguments: '', sources: [] } });
      // Our own words stay: which guard asked, and why in our terms.
      expect(view.request.reasons).toContain('phi-review: escalate');
    }
    const list = await call(KEYS.lead, 'GET', '/v1/approvals');
    expect(leaked(list.raw)).toEqual([]);
    expect((list.body as ApprovalView[]).find((a) => a.request.id === id)).toMatchObject({ mayDecide: false, withheld: { code: 'above_clearance' } });
    expect(leaked((await call(KEYS.intern, 'GET', '/v1/approvals')).raw)).toEqual([]);

    // Nobody approves blind: the approver's permission is not enough without the clearance.
    const blind = await call(KEYS.lead, 'POST', `/v1/approvals/${id}/approve`, {});
    expect(blind.status).toBe(403);
    expect(blind.raw).toContain('not cleared to see what it approves');
    expect(((await call(KEYS.clinician, 'GET', `/v1/approvals/${id}`)).body as ApprovalView).decision).toBeUndefined();
  });

  it('a cleared approver sees the record and decides; their note reaches the intern only as withheld', async () => {
    const { runId, id } = await pendingNote();
    const view = (await call(KEYS.clinician, 'GET', `/v1/approvals/${id}`)).body as ApprovalView;
    expect(view.mayDecide).toBe(true);
    expect(view).not.toHaveProperty('withheld');
    expect(view.request.arguments).toContain(DIAGNOSIS);
    expect(view.request.reasons).toEqual(expect.arrayContaining(['phi-review: escalate', `phi-review: the note names a diagnosis ("diagnosis: ${DIAGNOSIS}")`]));

    const approved = await call(KEYS.clinician, 'POST', `/v1/approvals/${id}/approve`, { reason: NOTE });
    expect(approved.status).toBe(200);

    // The intern follows their run to its end: the note is in the stream only as withheld.
    const stream = await fetch(`${base}/v1/runs/${runId}/events`, { headers: { authorization: `Bearer ${KEYS.intern}` } });
    const sse = await stream.text();
    expect(sse).toContain('event: approval.decided');
    expect(sse).toContain('event: run.');
    expect(leaked(sse)).toEqual([]);
    const decided = sse.split('\n\n').find((f) => f.includes('event: approval.decided'))!;
    expect(JSON.parse(decided.slice(decided.indexOf('data: ') + 6))).toMatchObject({ status: 'approved', by: 'dr-who', withheld: { code: 'above_clearance' } });
    expect(leaked((await call(KEYS.intern, 'GET', `/v1/approvals/${id}`)).raw)).toEqual([]);

    // The clinician reads the note back, in the request and in the run's events.
    expect(((await call(KEYS.clinician, 'GET', `/v1/approvals/${id}`)).body as ApprovalView).decision).toMatchObject({ status: 'approved', note: NOTE });
    const asClinician = await (await fetch(`${base}/v1/runs/${runId}/events`, { headers: { authorization: `Bearer ${KEYS.clinician}` } })).text();
    expect(asClinician).toContain(NOTE);
  });
});

describe("an approver's masked view", () => {
  it('shows amounts whole and tells look-alike identifiers apart by a fingerprint', () => {
    const fingerprint = requestFingerprint();
    const shown = JSON.parse(
      maskArguments(JSON.stringify({ to: 'GB29NWBK60161331926819', also: 'GB29NWBK60100027926819', again: 'GB29 NWBK 6016 1331 9268 19', amount: 12345678901, total: '12345678901.50' }), fingerprint),
    ) as Record<string, string | number>;
    expect(shown.amount).toBe(12345678901);
    expect(shown.total).toBe('12345678901.50');
    expect(shown.to).toMatch(/^GB29…6819 #[0-9a-f]{6}$/);
    expect(shown.also).toMatch(/^GB29…6819 #[0-9a-f]{6}$/);
    expect(shown.also).not.toBe(shown.to);
    // The same account however it is spaced.
    expect(shown.again).toBe(shown.to);
    // Another request draws another key: fingerprints do not link requests, and nobody holds a key to test guesses against.
    expect(JSON.parse(maskArguments('{"to":"GB29NWBK60161331926819"}', requestFingerprint())).to).not.toBe(shown.to);
  });
});
