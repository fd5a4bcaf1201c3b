import type { KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import { createSupportAgents } from '../../examples/support/system.js';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { FileAnchorStore } from '../../runtime/audit/anchors.js';
import { loadAuditKeys } from '../../runtime/audit/audit-keys.js';
import { computeHash, type AuditRecord } from '../../runtime/audit/audit-record.js';
import { recordSigningKey, signRun } from '../../runtime/audit/audit-signing.js';
import { fromFields, toFields } from '../../runtime/audit/record-fields.js';
import { EDGE, generateKeys, loadKeyring } from '../../runtime/identity/keyring.js';
import { Runtime } from '../../runtime/runtime.js';
import { AuthConfigSchema, createAuthenticator, hashApiKey } from '../../runtime/server/auth.js';
import { createServer } from '../../runtime/server/server.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { runAuditCli } from '../support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';

/**
 * The attacker has read and write access to Redis and no key file (one case: billing's key file too).
 * It works on the audit stream and head with plain Redis commands; the hash algorithm is public, so it
 * rehashes what it changes (computeHash and toFields are that algorithm and the stream layout, nothing
 * secret). Every attack must fail `palisade audit verify` run as documented (--keys, --anchors) and the
 * verification the HTTP edge shows its auditors.
 */
describe('the audit log against an attacker with Redis', () => {
  const prefix = uniquePrefix('audit-attack');
  const stream = `${prefix}:audit`;
  const headKey = `${prefix}:audit:head`;
  const KEYS = { ada: 'pk-ada-0123456789abcdef01', auditor: 'pk-auditor-0123456789abcdef' };
  let dir: string;
  let keysDir: string;
  let anchorFile: string;
  let redis: Redis;
  let workers: Runtime;
  let app: FastifyInstance;
  let base: string;
  let runs: string[] = [];
  let snapshot: { rows: [string, string[]][]; head: Record<string, string> };

  const api = async <T>(path: string, init: { method?: string; body?: unknown; key?: string } = {}): Promise<{ status: number; json: T }> => {
    const res = await fetch(`${base}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${init.key ?? KEYS.auditor}`, ...(init.body ? { 'content-type': 'application/json' } : {}) },
      ...(init.body ? { body: JSON.stringify(init.body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as T };
  };
  /** Starts a run at the edge and waits until it has ended and its last audit record is in the log. */
  const runToEnd = async (input: string): Promise<string> => {
    const started = await api<{ runId: string }>('/v1/runs', { method: 'POST', key: KEYS.ada, body: { agent: 'triage', input } });
    expect(started.status).toBe(202);
    const { runId } = started.json;
    for (;;) {
      const { json } = await api<{ status: string }>(`/v1/runs/${runId}`, { key: KEYS.ada });
      if (json.status !== 'running' && (await rows()).some((row) => recordOf(row).runId === runId && recordOf(row).action === `run.${json.status}`)) {
        expect(json.status).toBe('completed');
        return runId;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  /** `palisade audit verify` as documented: the operator's key folder and the anchor file, nothing else. */
  const verifyCli = (...extra: string[]) => runAuditCli(['verify', '--keys', keysDir, '--anchors', anchorFile, '--prefix', prefix, ...extra]);
  const verification = async () => (await api<{ verification: { ok: boolean; status: string; problems: { seq: number; problem: string; detail: string }[] } }>('/v1/audit?limit=5')).json.verification;
  const problemLines = (out: string[]) => out.filter((l) => l.startsWith('  seq '));

  // What the attacker reads and writes: the raw stream.
  const rows = async () => (await redis.xrange(stream, '-', '+')) as [string, string[]][];
  const recordOf = ([id, fields]: [string, string[]]): AuditRecord => {
    const item = fromFields(id, fields);
    if (!('record' in item)) throw new Error(item.error);
    return item.record;
  };
  /** Appends records chained onto the current end (signed with `signWith` when given) and moves the head, as the append script would. */
  const append = async (...bodies: Array<Partial<AuditRecord> & { signWith?: KeyObject }>): Promise<void> => {
    const all = await rows();
    let last = recordOf(all[all.length - 1]!);
    for (const { signWith, ...body } of bodies) {
      const { hash: _h, sig: _s, signs: _n, kid: _k, mac: _m, ...rest } = { ...last, at: last.at + 1, ...body, seq: last.seq + 1, prev: last.hash, streamId: `${last.seq + 1}-0` };
      const record: AuditRecord = { ...rest, ...(body.kid ? { kid: body.kid } : {}), hash: '' };
      record.hash = computeHash(record);
      if (signWith) Object.assign(record, { sig: signRun(signWith, record.hash, 1), signs: 1 });
      await redis.xadd(stream, record.streamId, ...toFields(record));
      last = record;
    }
    await redis.hset(headKey, 'seq', last.seq, 'hash', last.hash);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-audit-attack-'));
    keysDir = join(dir, 'keys');
    anchorFile = join(dir, 'anchors.jsonl');
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const agents = createSupportAgents({ model: (script) => new ScriptedModel({ script }) });
    await generateKeys(keysDir, agents);
    expect((await runAuditCli(['keys', '--keys', keysDir])).code).toBe(0);

    const loaded = await loadPolicy('examples/support/policy.yaml');
    const policy = { ...loaded, policy: { ...loaded.policy, roles: { ...loaded.policy.roles, auditor: ['read:audit'] } } };
    workers = new Runtime({ agents, policy, keys: await loadKeyring(keysDir, agents.map((a) => a.name)), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    await workers.startWorkers();
    // The edge as `palisade serve --keys keys/ --anchor-file anchors.jsonl` builds it: its own key file, the
    // writers' public keys, the anchoring key; no worker's key file.
    const publicKeys = await loadAuditKeys(join(keysDir, 'audit.pub.json'));
    const anchorKey = await loadAuditKeys(join(keysDir, 'anchor.key.json'));
    const auth = AuthConfigSchema.parse({
      apiKeys: [
        { sha256: hashApiKey(KEYS.ada), principal: { id: 'ada', roles: ['customer'] } },
        { sha256: hashApiKey(KEYS.auditor), principal: { id: 'aud-1', roles: ['auditor'] } },
      ],
    });
    app = await createServer({
      authenticate: createAuthenticator(auth),
      redisUrl: REDIS_URL,
      prefix,
      policy,
      keys: await loadKeyring(keysDir, [EDGE]),
      auditKeys: publicKeys,
      anchors: { store: new FileAnchorStore(anchorFile), keys: publicKeys.anchorKeys, signer: anchorKey.anchorSigner!, everyMs: 3_600_000 },
      auditVerifyReuseMs: 0,
      rateLimit: false,
    });
    base = await app.listen({ host: '127.0.0.1', port: 0 });

    // Two runs, each anchored after it ends (the operator's `palisade audit anchor`, e.g. from cron).
    runs = [await runToEnd('My headphones will not pair')];
    expect((await runAuditCli(['anchor', '--keys', keysDir, '--anchors', anchorFile, '--prefix', prefix])).out[0]).toMatch(/^anchored seq \d+ .*: verified/);
    runs.push(await runToEnd('I want a refund please'));
    expect((await runAuditCli(['anchor', '--keys', keysDir, '--anchors', anchorFile, '--prefix', prefix])).out[0]).toMatch(/^anchored seq \d+ .*having checked since the last anchor: verified/);
    snapshot = { rows: await rows(), head: await redis.hgetall(headKey) };
  }, 120_000);

  afterAll(async () => {
    await app?.close();
    await workers?.close({ timeoutMs: 1000 });
    redis?.disconnect();
    await deleteKeys(prefix);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  // Each attack starts from the log as the runs left it.
  beforeEach(async () => {
    await redis.del(stream, headKey);
    for (const [id, fields] of snapshot.rows) await redis.xadd(stream, id, ...fields);
    await redis.hset(headKey, snapshot.head);
  });

  it('the log as the runs wrote it verifies: every record signed by its writer, the end anchored', async () => {
    const r = await verifyCli();
    expect(r.code).toBe(0);
    expect(r.out[0]).toMatch(/^audit log intact: (\d+) entries, head seq \1 .*, \1 records authenticated with \d+ keys of 5 writers, anchored at seq \1 .*\(0 records since\)/);
    // An auditor holds the public keys only, which sign nothing.
    const pub = await runAuditCli(['verify', '--keys', join(keysDir, 'audit.pub.json'), '--anchors', anchorFile, '--prefix', prefix]);
    expect(pub.code).toBe(0);
    expect(await verification()).toMatchObject({ ok: true, status: 'verified', problems: [] });
    // An anchor file with no anchor in it (emptied, or a wrong path the operator created) pins nothing: not proven.
    const empty = join(dirname(anchorFile), 'empty-anchors.jsonl');
    await writeFile(empty, '');
    const unpinned = await runAuditCli(['verify', '--keys', keysDir, '--anchors', empty, '--prefix', prefix]);
    expect(unpinned.code).toBe(1);
    expect(unpinned.out.join('\n')).toMatch(/NOT PROVEN: the anchor file holds no valid anchor/);
    const writers = new Set(snapshot.rows.map((row) => recordOf(row).writer));
    expect([...writers].sort()).toEqual(['billing', 'edge', 'tech_support', 'triage']);
  });

  it('a record rewritten, the chain rehashed after it and the head moved: the signatures and the anchors give it away', async () => {
    const all = await rows();
    const at = all.findIndex((row) => recordOf(row).action === 'guard.decision' && recordOf(row).runId === runs[0]);
    let prev = recordOf(all[at - 1]!).hash;
    await redis.del(stream);
    for (const [i, row] of all.entries()) {
      if (i < at) {
        await redis.xadd(stream, row[0], ...row[1]);
        continue;
      }
      const r = recordOf(row);
      const changed = i === at ? { ...r, outcome: 'block', reasons: ['forged'] } : r;
      const rewritten = { ...changed, prev, hash: '' };
      rewritten.hash = computeHash(rewritten);
      prev = rewritten.hash;
      await redis.xadd(stream, row[0], ...toFields(rewritten));
    }
    await redis.hset(headKey, 'seq', all.length, 'hash', prev);

    const r = await verifyCli();
    expect(r.code).toBe(1);
    expect(r.out[0]).toMatch(/^audit log TAMPERED/);
    const lines = problemLines(r.out);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^  seq ${at + 1} \\[${at + 1}-0\\] bad-mac: `)));
    expect(lines).toContainEqual(expect.stringMatching(/modified: seq \d+ was anchored .* it was rewritten before the anchor/));
    const v = await verification();
    expect(v).toMatchObject({ ok: false, status: 'tampered' });
    // The edge takes a verified anchor's word for the signatures before it: the anchored hashes no longer match.
    expect(v.problems).toContainEqual(expect.objectContaining({ problem: 'modified', detail: expect.stringMatching(/rewritten before the anchor/) }));
  });

  it('a record written since the last anchor, rewritten and rehashed with the head moved: its writer’s signature gives it away', async () => {
    const third = await runToEnd('The app crashes when I log in');
    const all = await rows();
    const at = all.findIndex((row) => recordOf(row).runId === third && recordOf(row).action === 'guard.decision');
    const r = recordOf(all[at]!);
    const rewritten = { ...r, outcome: 'block', hash: '' };
    rewritten.hash = computeHash(rewritten);
    let prev = rewritten.hash;
    const tail = [rewritten, ...all.slice(at + 1).map((row) => {
      const next = { ...recordOf(row), prev, hash: '' };
      next.hash = computeHash(next);
      prev = next.hash;
      return next;
    })];
    // Stream ids only grow: the attacker rebuilds the stream.
    await redis.del(stream);
    for (const [id, fields] of all.slice(0, at)) await redis.xadd(stream, id, ...fields);
    for (const t of tail) await redis.xadd(stream, t.streamId, ...toFields(t));
    await redis.hset(headKey, 'seq', tail.at(-1)!.seq, 'hash', prev);

    const cli = await verifyCli();
    expect(cli.code).toBe(1);
    expect(problemLines(cli.out)[0]).toMatch(new RegExp(`^  seq ${r.seq} \\[${r.streamId}\\] bad-mac: `));
    expect(new Set(problemLines(cli.out).map((l) => /\] ([a-z-]+):/.exec(l)?.[1]))).toEqual(new Set(['bad-mac']));
    const v = await verification();
    expect(v).toMatchObject({ ok: false, status: 'tampered' });
    expect(v.problems[0]).toMatchObject({ seq: r.seq, problem: 'bad-mac' });
  });

  it.each([
    ['a zero-width space', 'billing\u200b'],
    ['a bidi control', 'billing\u202e'],
    ['a Cyrillic look-alike', 'b\u0456lling'],
    ['fullwidth letters (the same under NFKC)', '\uff42illing'],
    ['capitals', 'Billing'],
  ])('a record appended by a writer named like billing with %s: refused as a look-alike', async (_what, writer) => {
    await append({ writer, agent: 'billing', action: 'approval.decided', outcome: 'approved', runId: runs[1]! });
    const r = await verifyCli();
    expect(r.code).toBe(1);
    const lines = problemLines(r.out);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/bad-writer: writer '.*' is not a plain writer name/);
    // The name is shown with what hides in it spelled out.
    if (writer !== 'Billing') expect(lines[0]).toContain('\\u');
    const v = await verification();
    expect(v).toMatchObject({ ok: false, status: 'tampered' });
    expect(v.problems.map((p) => p.problem)).toEqual(['bad-writer']);
  });

  it('records added by a writer no key is configured for, or by a configured writer without its signature', async () => {
    await append({ writer: 'auditor', action: 'approval.decided', outcome: 'approved' }, { writer: 'edge', action: 'rollback.started', outcome: 'started' });
    const r = await verifyCli();
    expect(r.code).toBe(1);
    const lines = problemLines(r.out);
    expect(lines[0]).toMatch(/unsigned: no key is configured for writer 'auditor'/);
    expect(lines[1]).toMatch(/bad-mac: it carries no signature, but writer 'edge' has a key/);
    expect((await verification()).problems.map((p) => p.problem)).toEqual(['unsigned', 'bad-mac']);
  });

  it('the last run’s records cut and the head moved back: the anchor says they were there', async () => {
    const all = await rows();
    const first = all.findIndex((row) => recordOf(row).runId === runs[1]);
    expect(all.slice(first).every((row) => recordOf(row).runId === runs[1])).toBe(true);
    await redis.xdel(stream, ...all.slice(first).map(([id]) => id));
    const keep = recordOf(all[first - 1]!);
    await redis.hset(headKey, 'seq', keep.seq, 'hash', keep.hash);

    const r = await verifyCli();
    expect(r.code).toBe(1);
    expect(problemLines(r.out)).toEqual([expect.stringMatching(new RegExp(`^  seq ${keep.seq + 1} truncated: seq ${all.length} was anchored .* but the log ends at seq ${keep.seq}: seq ${keep.seq + 1}\\.\\.${all.length} were cut from the end`))]);
    expect(await verification()).toMatchObject({ ok: false, status: 'tampered', problems: [{ problem: 'truncated' }] });
    // The chain alone cannot tell (why anchors are required): the opt-out says so and finds nothing.
    const unanchored = await runAuditCli(['verify', '--keys', keysDir, '--unanchored', '--prefix', prefix]);
    expect(unanchored.out[0]).toMatch(/^WARNING: no anchors: records cut from the end/);
    expect(unanchored.code).toBe(0);
  });

  it("with billing's key file too: records signed as billing cannot pass for the edge's", async () => {
    const billing = JSON.parse(await readFile(join(keysDir, 'billing.json'), 'utf8')) as { audit: { kid: string; secret: string } };
    const key = recordSigningKey(Buffer.from(billing.audit.secret, 'base64'));
    const edgeKid = (JSON.parse(await readFile(join(keysDir, 'edge.json'), 'utf8')) as { audit: { kid: string } }).audit.kid;
    await append({ writer: EDGE, kid: edgeKid, action: 'approval.decided', outcome: 'approved', signWith: key });
    const r = await verifyCli();
    expect(r.code).toBe(1);
    expect(problemLines(r.out)).toEqual([expect.stringMatching(/bad-mac: the signature does not match key '.*' of writer 'edge'/)]);
    expect((await verification()).problems.map((p) => p.problem)).toEqual(['bad-mac']);
  });
});
