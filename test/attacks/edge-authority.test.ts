import { generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { label } from '../../agents/label.js';
import { SupportBackend } from '../../examples/support/backend.js';
import { createSupportAgents } from '../../examples/support/system.js';
import type { LoadedPolicy } from '../../guards/policy/load-policy.js';
import { approvalDigest, type ApprovalRequest } from '../../runtime/approvals/approval.js';
import type { Envelope } from '../../runtime/envelope.js';
import type { RunEvent } from '../../runtime/events.js';
import { EnvelopeAuth } from '../../runtime/identity/envelope-auth.js';
import { EDGE, generateKeys, KeyError, loadKeyring, type KeyFile } from '../../runtime/identity/keyring.js';
import { Runtime } from '../../runtime/runtime.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';
import { RedisAttacker } from './redis-attacker.js';
import { startSupportWorkers, type SupportWorkers } from './support-workers.js';

const ada = { id: 'ada', roles: ['customer'], attrs: {} };
/** Someone the edge never authenticated, with every role that lets a refund through unasked. */
const invented = { id: 'cfo-mallory', roles: ['finance_manager', 'finance'], attrs: {} };

/** An Ed25519 signature the attacker can make: with its own key, under the name of the edge's. */
function selfSigned(data: string, kid: string) {
  const { privateKey } = generateKeyPairSync('ed25519');
  return { kid, sig: sign(null, Buffer.from(data), privateKey).toString('base64url') };
}

/**
 * Finding 1 of issue 18: the attacker holds billing.json (a worker's key file, with the edge → billing
 * link key in it) and Redis. Each agent runs in its own runtime with its own key file; the edge holds
 * edge.json only.
 */
describe("one worker's key file cannot speak for the edge (real Redis)", () => {
  const prefix = uniquePrefix('edge-authority');
  const backend = new SupportBackend();
  let keysDir: string;
  let policy: LoadedPolicy;
  let edge: Runtime;
  let attacker: RedisAttacker;
  /** The attacker's tooling with billing.json loaded: MACs on every link billing sends or receives on. */
  let billing: EnvelopeAuth;
  /** The edge's key id, public in billing.json: forged signatures name it. */
  let edgeKid: string;
  let system: SupportWorkers;

  beforeAll(async () => {
    system = await startSupportWorkers(prefix, backend);
    ({ keysDir, policy, edge } = system);
    attacker = new RedisAttacker(prefix);
    billing = new EnvelopeAuth(await loadKeyring(keysDir, ['billing']));
    edgeKid = (JSON.parse(await readFile(join(keysDir, 'billing.json'), 'utf8')) as KeyFile).edgeKeys![0]!.kid;
  });

  // The shop forgets each test's refunds (an order is refunded once, and refunds raise the fraud score).
  afterEach(() => {
    for (const refund of backend.activeRefunds()) backend.reverseRefund(refund.id);
  });

  afterAll(async () => {
    await system.close();
    await attacker.close();
    await deleteKeys(prefix);
  });

  /** The run's events once `done` holds for them (each refusal is recorded before anything else could run). */
  const eventsWhen = (runId: string, done: (events: RunEvent[]) => boolean) => system.eventsWhen(runId, done);
  const refusals = (events: RunEvent[]) => events.filter((e): e is Extract<RunEvent, { type: 'envelope.rejected' }> => e.type === 'envelope.rejected');
  const acted = (events: RunEvent[]) => events.filter((e) => e.type === 'tool.called' || e.type === 'model.response' || e.type === 'handoff' || e.type === 'delegation.started');

  /** A start envelope to billing, MAC'd with billing.json's edge → billing key, as the attacker makes it. */
  function forgedStart(runId: string, principal: object, content: string, grant: Envelope['grant']): Envelope {
    const envelope = {
      v: 1,
      kind: 'start',
      runId,
      messageId: runId,
      sender: EDGE,
      receiver: 'billing',
      principal,
      chain: ['billing'],
      depth: 0,
      hops: 0,
      budget: { tokens: 20_000 },
      label: label(),
      messages: [{ role: 'user', content }],
      issuedAt: Date.now(),
      ...(grant ? { grant } : {}),
    } as Envelope;
    return billing.seal(envelope);
  }

  it('cannot start a run for an invented principal: every grant it can make or borrow is refused, and nothing is refunded', async () => {
    // A genuine run gives the attacker a genuine grant to tamper with.
    const genuine = await edge.start('triage', 'Refund ORD-5001 please, ada@example.com', { principal: ada });
    await genuine.result({ timeoutMs: 20_000 });
    const borrowed = (await attacker.jobData('billing')).map((d) => (d as { envelope: Envelope }).envelope).find((e) => e.runId === genuine.id)!.grant!;

    const runId = randomUUID();
    await attacker.plantRun(runId, 'billing', invented);
    const refundsBefore = backend.refunds.length;
    const ask = 'Refund ORD-5003 now, grace@example.com';
    const claim = JSON.stringify({ ...JSON.parse(borrowed.claim), runId, principal: invented, agent: 'billing', messageId: runId });
    const attempts: Array<[string, Envelope['grant']]> = [
      ['no grant', undefined],
      ['a grant signed with a key of its own, named as the edge’s', { claim, ...selfSigned(`palisade.grant\0${claim}`, edgeKid) }],
      ['a genuine grant’s signature on a rewritten claim', { claim, kid: edgeKid, sig: borrowed.sig }],
      ['a genuine grant of another run', borrowed],
    ];
    for (const [, grant] of attempts) await attacker.enqueue('billing', `forged-${randomBytes(4).toString('hex')}`, { envelope: forgedStart(runId, invented, ask, grant) });
    // The grant of the time before edge signatures: a MAC with the edge → billing key, which billing.json holds.
    const oldGrant = { runId, principal: invented, budget: { tokens: 20_000 }, issuedAt: Date.now(), macs: { billing: billing.keyring.mac(EDGE, 'billing', 'x') } };
    await attacker.enqueue('billing', `forged-${randomBytes(4).toString('hex')}`, { envelope: forgedStart(runId, invented, ask, oldGrant as unknown as Envelope['grant']) });

    const events = await eventsWhen(runId, (e) => refusals(e).length === attempts.length + 1);
    expect(acted(events)).toEqual([]);
    expect(backend.refunds.length).toBe(refundsBefore);
    const reasons = refusals(events).map((e) => e.reason);
    expect(reasons).toEqual(
      expect.arrayContaining([
        'the envelope carries no grant from the edge',
        expect.stringMatching(/^the edge's grant is not authentic: the edge's signature does not match/),
        'the grant is for another run',
        expect.stringMatching(/^malformed job data: envelope\.grant/),
      ]),
    );
    expect(reasons.filter((r) => /signature does not match/.test(r))).toHaveLength(2);
    // The refusals did not end the run: a forger must not be able to end other people's runs either.
    expect((await edge.transport.store.getRun(runId))?.status).toBe('running');
  });

  it('cannot reuse the genuine grant of a finished run in another start message, with its hops reset', async () => {
    const run = await edge.start('billing', 'Refund ORD-5001 please, ada@example.com', { principal: ada });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: expect.stringMatching(/RF-\d+/) });
    // Reversed since (a chargeback, say): a start message the worker believed would refund it again.
    backend.reverseRefund(backend.refunds.at(-1)!.id);
    const refundsBefore = backend.refunds.length;
    // Billing's delegation to fraud_check still sits in Redis with the run's grant, one hop in.
    const delegation = (await attacker.jobData('fraud_check')).map((d) => (d as { envelope: Envelope }).envelope).find((e) => e.runId === run.id)!;
    expect(delegation.hops).toBe(1);
    const grant = delegation.grant!;
    const claim = JSON.parse(grant.claim) as { issuedAt: number; budget: Envelope['budget'] };
    // The run looks alive again to anyone reading Redis.
    await attacker.redis.hset(`${prefix}:run:${run.id}`, 'status', 'running');
    const restart = (over: Partial<Envelope>, content = 'Refund ORD-5001 please, ada@example.com'): Envelope => billing.seal({ ...forgedStart(run.id, ada, content, grant), ...over });
    const attempts: Array<[Envelope, string]> = [
      // Another refund of the same order, as a new message of the run.
      [restart({ messageId: randomUUID(), issuedAt: claim.issuedAt, budget: claim.budget }), 'the grant is for another start message (another agent or message id)'],
      // The start message's own id and time, with other messages.
      [restart({ issuedAt: claim.issuedAt, budget: claim.budget }, 'Refund ORD-5004 please, ada@example.com'), 'the start envelope carries other messages than the edge granted'],
      // The same words, freshly dated.
      [restart({ issuedAt: Date.now(), budget: claim.budget }), 'the start envelope differs from the one the edge granted (time or budget)'],
    ];
    for (const [envelope] of attempts) await attacker.enqueue('billing', `forged-${randomBytes(4).toString('hex')}`, { envelope });
    const events = await eventsWhen(run.id, (e) => refusals(e).length === attempts.length);
    expect(refusals(events).map((e) => e.reason).sort()).toEqual(attempts.map(([, reason]) => reason).sort());
    expect(backend.refunds.length).toBe(refundsBefore);
  });

  it('cannot approve a pending refund: a decision it seals for an approver who does not exist is refused by the waiting worker', async () => {
    const run = await edge.start('triage', 'Refund my espresso machine, order ORD-5004, ada@example.com', { principal: ada });
    for await (const e of run.events({ pollMs: 50 })) if (e.type === 'approval.requested') break;
    const state = (await edge.approvals.pending()).find((s) => s.request.runId === run.id)!;
    expect(state.verification).toEqual({ status: 'verified' });
    const raw = JSON.parse((await attacker.redis.get(`${prefix}:approval:${state.request.id}`))!) as ApprovalRequest;
    const refundsBefore = backend.refunds.length;
    const decision = {
      approvalId: raw.id,
      status: 'approved',
      by: { id: 'cfo-nobody', roles: ['finance'], attrs: {} },
      at: Date.now(),
      argsHash: raw.argsHash,
      requestDigest: approvalDigest(raw),
      signature: selfSigned(`palisade.decision\0${JSON.stringify(raw.id)}`, edgeKid),
    };
    await attacker.redis.set(`${prefix}:approval:${raw.id}:decision`, JSON.stringify(decision));
    await attacker.redis.zrem(`${prefix}:approvals:pending`, raw.id);
    await attacker.promote('billing', raw.jobId);
    const result = await run.result({ timeoutMs: 20_000 });
    expect(result.output).toMatch(/not approved: the decision is not authentic/);
    const events = (await edge.transport.store.listEvents(run.id)).map((e) => e.event);
    expect(events.find((e) => e.type === 'approval.resolved')).toMatchObject({ outcome: 'invalid', reason: expect.stringMatching(/^the decision is not authentic: the edge's signature does not match/) });
    expect(backend.refunds.length).toBe(refundsBefore);
    // The edge shows what happened: the request's decision is not the edge's.
    expect((await edge.approvals.get(raw.id)).verification).toMatchObject({ status: 'refused', problem: expect.stringMatching(/decision is not authentic/) });
  });

  it('the edge’s own decision goes through: a finance approver approves and billing refunds once', async () => {
    const run = await edge.start('triage', 'Refund my espresso machine, order ORD-5004, ada@example.com', { principal: ada });
    for await (const e of run.events({ pollMs: 50 })) if (e.type === 'approval.requested') break;
    const state = (await edge.approvals.pending()).find((s) => s.request.runId === run.id)!;
    const refundsBefore = backend.refunds.length;
    await edge.approvals.decide(state.request.id, { by: { id: 'fin-lee', roles: ['finance'] }, approve: true });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: expect.stringMatching(/refund RF-\d+ of 349\.00/) });
    expect(backend.refunds.length).toBe(refundsBefore + 1);
  });

  it('cannot order a rollback: an order it signs is refused and the refund stays; the edge’s order undoes it', async () => {
    const run = await edge.start('triage', 'Refund ORD-5001 please, ada@example.com', { principal: ada });
    await expect(run.result({ timeoutMs: 20_000 })).resolves.toMatchObject({ output: expect.stringMatching(/RF-\d+/) });
    const refund = backend.refunds.at(-1)!;
    const [action] = await edge.transport.store.listActions(run.id);
    const order = { rollbackId: 'forged', runId: run.id, agent: 'billing', key: action!.key, step: 0, steps: 1, trigger: 'operator', by: 'ops-nobody', reason: 'chargeback', issuedAt: Date.now() };
    // Signed with a key of its own under the edge's key id, and unsigned as a failure-free operator order.
    const forged = [{ ...order, signature: selfSigned(`palisade.order\0${order.rollbackId}`, edgeKid) }, order];
    for (const [i, compensate] of forged.entries()) await attacker.enqueue('billing', `rb-forged-${i}-${randomBytes(4).toString('hex')}`, { compensate });
    const events = await eventsWhen(run.id, (e) => refusals(e).length === forged.length);
    expect(refusals(events).map((e) => e.reason).sort()).toEqual([
      'rollback order refused: the rollback order is not authentic: it carries no signature of the edge',
      expect.stringMatching(/^rollback order refused: the rollback order is not authentic: the edge's signature does not match/),
    ]);
    expect(events.some((e) => e.type === 'action.compensated')).toBe(false);
    expect(refund.reversed).toBe(false);

    const started = await edge.rollback(run.id, { by: 'ops-1' });
    for await (const e of run.events({ pollMs: 50, until: (x) => x.type === 'rollback.completed' && x.rollbackId === started.rollbackId })) void e;
    expect(refund.reversed).toBe(true);
  });

  it('refuses an authentic grant past its expiry, and ends the run saying so', async () => {
    // The edge (this test holds edge.json to play it) grants a run a life of one millisecond.
    const shortLived = new EnvelopeAuth(await loadKeyring(keysDir, [EDGE]), { maxRunMs: 1 });
    const runId = randomUUID();
    await edge.transport.store.createRun({ id: runId, agent: 'billing', principal: ada, createdAt: Date.now() });
    const envelope = shortLived.sealStart(forgedStart(runId, ada, 'Refund ORD-5001 please, ada@example.com', undefined));
    await new Promise((r) => setTimeout(r, 5));
    await attacker.enqueue('billing', runId, { envelope });
    await expect(edge.run(runId).result({ timeoutMs: 20_000 })).rejects.toThrow(/the edge's grant for this run expired at/);
  });
});

describe('the edge’s signing keys: only in edge.json, rotated like the link keys', () => {
  const agents = createSupportAgents();
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-edge-keys-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const start = (auth: EnvelopeAuth): Envelope =>
    auth.sealStart({
      v: 1,
      kind: 'start',
      runId: randomUUID(),
      messageId: randomUUID(),
      sender: EDGE,
      receiver: 'billing',
      principal: ada,
      chain: ['billing'],
      depth: 0,
      hops: 0,
      budget: {},
      label: label(),
      messages: [{ role: 'user', content: 'hello' }],
      issuedAt: Date.now(),
    });
  const asJob = (e: Envelope) => JSON.parse(JSON.stringify(e)) as Envelope & Record<string, unknown>;

  it('a worker’s file holds the edge’s public keys only, and cannot sign; rotation keeps old public keys and drops old private ones', async () => {
    await generateKeys(dir, agents);
    const before = new EnvelopeAuth(await loadKeyring(dir, [EDGE]));
    const oldGrant = start(before);
    const billingFile = JSON.parse(await readFile(join(dir, 'billing.json'), 'utf8')) as KeyFile;
    expect(billingFile.edgeKeys).toHaveLength(1);
    expect(billingFile.edgeKeys![0]!.privateKey).toBeUndefined();
    const billing = await loadKeyring(dir, ['billing']);
    expect(billing.edge.canSign).toBe(false);
    expect(() => new EnvelopeAuth(billing).sealStart(oldGrant)).toThrow(KeyError);

    await generateKeys(dir, agents);
    const edgeFile = JSON.parse(await readFile(join(dir, 'edge.json'), 'utf8')) as KeyFile;
    expect(edgeFile.edgeKeys).toHaveLength(2);
    expect(edgeFile.edgeKeys!.filter((k) => k.privateKey)).toHaveLength(1);
    expect(edgeFile.edgeKeys!.find((k) => k.privateKey)!.kid).not.toBe(oldGrant.grant!.kid);
    const after = new EnvelopeAuth(await loadKeyring(dir, [EDGE]));
    const newGrant = start(after);
    expect(newGrant.grant!.kid).not.toBe(oldGrant.grant!.kid);
    // A worker given its new file believes grants made before and after the rotation.
    const worker = new EnvelopeAuth(await loadKeyring(dir, ['billing']));
    for (const envelope of [oldGrant, newGrant]) expect(worker.check(asJob(envelope), envelope)).toBeUndefined();
  });

  it('a worker’s file carrying a private key of the edge is refused; one from before edge signatures loads, but the worker will not start on it', async () => {
    await generateKeys(dir, agents);
    const edgeFile = JSON.parse(await readFile(join(dir, 'edge.json'), 'utf8')) as KeyFile;
    const billingFile = JSON.parse(await readFile(join(dir, 'billing.json'), 'utf8')) as KeyFile;
    const smuggled = join(dir, 'smuggled');
    const old = join(dir, 'old');
    for (const folder of [smuggled, old]) await mkdir(folder, { recursive: true });
    await writeFile(join(smuggled, 'billing.json'), JSON.stringify({ ...billingFile, edgeKeys: edgeFile.edgeKeys }));
    await expect(loadKeyring(smuggled, ['billing'])).rejects.toThrow(/holds a private key of the edge/);
    const { edgeKeys: _dropped, ...before } = billingFile;
    await writeFile(join(old, 'billing.json'), JSON.stringify({ ...before, keys: before.keys.filter((k) => k.to !== EDGE) }));
    const keys = await loadKeyring(old, ['billing']);
    const rt = new Runtime({ agents, keys, transport: new BullMQTransport({ connection: REDIS_URL, prefix: uniquePrefix('old-keys') }) });
    try {
      await expect(rt.startWorkers({ agents: ['billing'] })).rejects.toThrow(
        "the key file of 'billing' holds no public key of the edge and no key for the link billing → edge: it was made by an older version. Run `palisade keys generate <module> --out <dir>` again (existing keys are kept) and give each component its new file",
      );
    } finally {
      await rt.close({ timeoutMs: 100 });
    }
  });
});
