import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PeriodicAnchoring, takeAnchor } from '../runtime/audit/anchoring.js';
import { FileAnchorStore, readAnchors } from '../runtime/audit/anchors.js';
import { AuditKeyError, loadAuditKeys, writeAuditKeys } from '../runtime/audit/audit-keys.js';
import { AuditLog } from '../runtime/audit/audit-log.js';
import { computeHash, computeMac, type AuditEntryInput, type AuditKeys, type AuditRecord } from '../runtime/audit/audit-record.js';
import { AuditError } from '../runtime/audit/audit-writer.js';
import { fromFields, toFields } from '../runtime/audit/record-fields.js';
import { runAuditCli } from './support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(() => redis.quit());

const BILLING = { kid: 'billing-1', secret: randomBytes(32) };
const EDGE = { kid: 'edge-1', secret: randomBytes(32) };
const SECRETS: AuditKeys = { billing: { [BILLING.kid]: BILLING.secret }, edge: { [EDGE.kid]: EDGE.secret } };

const entry = (runId: string, i = 0): AuditEntryInput => ({ runId, principal: 'alice', chain: ['triage', 'billing'], agent: 'billing', action: 'guard.decision', outcome: 'allow', detail: { i } });

let prefix: string;
let dir: string;
beforeEach(async () => {
  prefix = uniquePrefix('audit-anchor');
  dir = await mkdtemp(join(tmpdir(), 'palisade-anchors-'));
  // The key files `palisade keys generate` writes, as far as the audit log reads them.
  for (const [writer, key] of [['billing', BILLING], ['edge', EDGE]] as const) {
    await writeFile(join(dir, `${writer}.json`), JSON.stringify({ writer, audit: { kid: key.kid, secret: key.secret.toString('base64') } }));
  }
});
afterEach(async () => {
  await deleteKeys(prefix);
});

const rows = async () => (await redis.xrange(`${prefix}:audit`, '-', '+')) as [string, string[]][];
const recordOf = ([id, fields]: [string, string[]]): AuditRecord => {
  const item = fromFields(id, fields);
  if (!('record' in item)) throw new Error(item.error);
  return item.record;
};
const kinds = (problems: { seq: number; problem: string }[]) => problems.map((p) => [p.seq, p.problem]);

describe('signed runs', () => {
  it('signs once per run of one writer’s consecutive records in an append, of whichever runs: the last record vouches for the others', async () => {
    const shared = new AuditLog({ redis, prefix, writer: 'process' });
    const billing = shared.as('billing', BILLING);
    const edge = shared.as('edge', EDGE);
    const written = await Promise.all([billing.append(entry('r1', 1)), billing.append(entry('r1', 2)), billing.append(entry('r2', 3)), edge.append(entry('r2', 4)), billing.append(entry('r2', 5))]);
    expect(written.map((r) => [r.writer, r.signs ?? null])).toEqual([
      ['billing', null],
      ['billing', null],
      ['billing', 3],
      ['edge', 1],
      ['billing', 1],
    ]);
    expect(await shared.verify({ keys: SECRETS })).toMatchObject({ ok: true, macsVerified: 5 });
    // The public halves are enough, and sign nothing.
    const { publicKeys } = await loadAuditKeys(dir);
    expect(await shared.verify({ publicKeys })).toMatchObject({ ok: true, macsVerified: 5 });

    // Without the record that signed for them, the run's first records are nobody's.
    const all = await rows();
    await redis.del(`${prefix}:audit`);
    for (const row of all) if (row[0] !== '3-0') await redis.xadd(`${prefix}:audit`, row[0], ...row[1]);
    const report = await shared.verify({ publicKeys });
    expect(kinds(report.problems)).toEqual([
      [1, 'bad-mac'],
      [2, 'bad-mac'],
      [3, 'deleted'],
    ]);
    expect(report.problems[0]!.detail).toMatch(/no signature of writer 'billing' covers it/);
  });

  it('refuses to write as a writer whose name is not a plain one', () => {
    for (const writer of ['billing\u200b', 'Billing', 'b\u0456lling', 'agent:billing:x', '__proto__']) {
      expect(() => new AuditLog({ redis, prefix, writer })).toThrow(AuditError);
    }
    expect(() => new AuditLog({ redis, prefix, writer: 'edge' }).as('\uff42illing', BILLING)).toThrow(/not a plain name/);
  });
});

describe('records written before signatures (HMAC)', () => {
  /** An entry as an earlier version wrote it: `kid` and `mac` = HMAC(secret, hash), no signature. */
  async function writeLegacy(n: number): Promise<void> {
    let prev = '0'.repeat(64);
    for (let seq = 1; seq <= n; seq++) {
      const body = { seq, at: 1_700_000_000_000 + seq, writer: 'billing', ...entry('old', seq), prev, kid: BILLING.kid };
      const hash = computeHash(body);
      await redis.xadd(`${prefix}:audit`, `${seq}-0`, ...toFields({ ...body, hash, mac: computeMac(BILLING.secret, hash) }));
      prev = hash;
    }
    await redis.hset(`${prefix}:audit:head`, 'seq', n, 'hash', prev);
  }

  it('verify with the writer’s secret; with public keys only, once a verified anchor vouches for them', async () => {
    await writeLegacy(3);
    const log = new AuditLog({ redis, prefix, writer: 'billing', key: BILLING });
    await log.append(entry('new'));
    expect(await log.verify({ keys: SECRETS })).toMatchObject({ ok: true, macsVerified: 4 });
    const { publicKeys } = await loadAuditKeys(dir);
    const unchecked = await log.verify({ publicKeys });
    expect(kinds(unchecked.problems)).toEqual([1, 2, 3].map((s) => [s, 'unverifiable']));
    expect(unchecked.problems[0]!.detail).toMatch(/written with an HMAC, before records were signed: only writer 'billing''s secret checks it/);

    // The operator anchors once with the key files (secrets): the anchor vouches for the HMAC records.
    await runAuditCli(['keys', '--keys', dir]);
    const anchors = join(dir, 'anchors.jsonl');
    const anchored = await runAuditCli(['anchor', '--keys', dir, '--anchors', anchors, '--prefix', prefix, '--full']);
    expect(anchored.out[0]).toMatch(/^anchored seq 4 .*having checked the whole log: verified/);
    const auditor = await runAuditCli(['verify', '--keys', join(dir, 'audit.pub.json'), '--anchors', anchors, '--prefix', prefix]);
    expect(auditor.code).toBe(0);
    expect(auditor.out[0]).toMatch(/1 record authenticated with 2 keys of 2 writers, 3 records vouched for by a verified anchor, anchored at seq 4/);
    // A forged HMAC record after the anchor is not vouched for.
    const last = recordOf((await rows()).at(-1)!);
    const body = { ...last, seq: 5, prev: last.hash, outcome: 'block', sig: undefined, signs: undefined, streamId: '5-0' };
    const hash = computeHash(body);
    await redis.xadd(`${prefix}:audit`, '5-0', ...toFields({ ...body, hash, mac: randomBytes(32).toString('hex') }));
    await redis.hset(`${prefix}:audit:head`, 'seq', 5, 'hash', hash);
    const forged = await runAuditCli(['verify', '--keys', join(dir, 'audit.pub.json'), '--anchors', anchors, '--prefix', prefix]);
    expect(forged.code).toBe(1);
    expect(forged.out.slice(1)).toEqual([expect.stringMatching(/^ {2}seq 5 \[5-0\] unverifiable: /)]);
  });
});

describe('anchors', () => {
  /** billing's log with `n` records, the keys `palisade audit keys` writes, and the anchoring options over a fresh anchor file. */
  async function setup(n: number) {
    await writeAuditKeys(dir);
    const keys = await loadAuditKeys(dir);
    const log = new AuditLog({ redis, prefix, writer: 'billing', key: BILLING });
    for (let i = 0; i < n; i++) await log.append(entry('r', i));
    const store = new FileAnchorStore(join(dir, 'anchors.jsonl'));
    return { keys, log, store, options: { log, prefix, store, signer: keys.anchorSigner!, anchorKeys: keys.anchorKeys, publicKeys: keys.publicKeys } };
  }

  it('are taken since the last one, skipped when nothing is new, refused when the head went back or the log is broken', async () => {
    const { log, store, options } = await setup(0);
    const anchor = () => takeAnchor(options);
    expect(await anchor()).toEqual({ skipped: 'the audit log is empty' });
    for (let i = 0; i < 3; i++) await log.append(entry('r', i));
    expect(await anchor()).toMatchObject({ anchor: { seq: 3, verified: true, log: prefix }, checked: 'the whole log' });
    expect(await anchor()).toEqual({ skipped: 'nothing was appended since the last anchor (seq 3)' });
    await log.append(entry('r', 3));
    expect(await anchor()).toMatchObject({ anchor: { seq: 4, verified: true }, checked: 'since the last anchor' });
    // A writer without a key: the head is still pinned, but the anchor does not vouch for anything.
    await new AuditLog({ redis, prefix, writer: 'stranger' }).append(entry('r', 4));
    expect(await anchor()).toMatchObject({ anchor: { seq: 5, verified: false } });
    await log.append(entry('r', 5));
    expect(await anchor()).toMatchObject({ anchor: { seq: 6, verified: false }, checked: 'since the last anchor' });

    await redis.xdel(`${prefix}:audit`, '6-0');
    await redis.hset(`${prefix}:audit:head`, 'seq', 5, 'hash', recordOf((await rows()).at(-1)!).hash);
    await expect(anchor()).rejects.toThrow(/the head \(seq 5\) is behind the last anchor \(seq 6/);
    await redis.hset(`${prefix}:audit:head`, 'seq', 7, 'hash', 'f'.repeat(64));
    await expect(anchor()).rejects.toThrow(/the audit log is broken \(1 problem; seq 7 truncated: /);

    const lines = (await readFile(store.path, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines.map((l) => JSON.parse(l).seq)).toEqual([3, 4, 5, 6]);
    expect((await stat(store.path)).mode & 0o777).toBe(0o600);
  });

  it('every line of an anchor file must be a signed anchor of this log', async () => {
    const { keys, log, store, options } = await setup(1);
    const taken = await takeAnchor(options);
    if (!('anchor' in taken)) throw new Error('no anchor');
    const good = JSON.stringify(taken.anchor);
    const forged = [
      'not json',
      JSON.stringify({ ...taken.anchor, seq: 1000 }),
      JSON.stringify({ ...taken.anchor, log: 'other' }),
      JSON.stringify({ ...taken.anchor, kid: 'unknown-kid' }),
      JSON.stringify({ ...taken.anchor, extra: 1 }),
    ];
    await writeFile(store.path, `${[good, ...forged].join('\n')}\n`);
    const set = await readAnchors([store], keys.anchorKeys, prefix);
    expect(set.anchors).toHaveLength(1);
    expect(set.problems).toEqual([
      `${store.path} line 2: not JSON`,
      `${store.path} line 3: its signature does not match anchor key '${keys.anchorSigner!.kid}'`,
      `${store.path} line 4: an anchor of the log 'other', not of '${prefix}'`,
      `${store.path} line 5: signed with anchor key 'unknown-kid', which is not configured`,
      `${store.path} line 6: not an anchor: (line): Unrecognized key: "extra"`,
    ]);
    const report = await log.verify({ publicKeys: keys.publicKeys, anchors: set });
    expect(report.problems.map((p) => p.problem)).toEqual(Array(5).fill('bad-anchor'));
  });

  it('the edge anchors at once when it starts, then every period', async () => {
    const { options } = await setup(1);
    const results: unknown[] = [];
    const periodic = new PeriodicAnchoring({ ...options, everyMs: 3_600_000, onAnchor: (r) => results.push(r), onError: (e) => results.push(e) });
    periodic.start();
    await periodic.stop();
    expect(results).toEqual([expect.objectContaining({ anchor: expect.objectContaining({ seq: 1, verified: true }) })]);
  });
});

describe('audit key files', () => {
  it('audit.pub.json holds public keys only; the anchoring key stays private to its file', async () => {
    const out = await runAuditCli(['keys', '--keys', dir]);
    expect(out.code).toBe(0);
    const text = await readFile(join(dir, 'audit.pub.json'), 'utf8');
    for (const secret of [BILLING.secret, EDGE.secret]) expect(text).not.toContain(secret.toString('base64'));
    const anchorKey = JSON.parse(await readFile(join(dir, 'anchor.key.json'), 'utf8')) as { privateKey: string };
    expect(text).not.toContain(anchorKey.privateKey);
    expect((await stat(join(dir, 'anchor.key.json'))).mode & 0o777).toBe(0o600);
    const pub = await loadAuditKeys(join(dir, 'audit.pub.json'));
    expect(pub).toMatchObject({ count: 2, writers: 2, secretWriters: [] });
    expect(pub.anchorSigner).toBeUndefined();
    // A new anchoring key keeps the old one's public key, so its anchors still verify.
    await runAuditCli(['keys', '--keys', dir, '--new-anchor-key']);
    expect((await loadAuditKeys(join(dir, 'audit.pub.json'))).anchorKeys.size).toBe(2);
  });

  it('refuses look-alike writer names, prototype-named key ids and a public key that is not its secret’s', async () => {
    const one = async (content: unknown) => {
      const d = await mkdtemp(join(tmpdir(), 'palisade-keyfile-'));
      await writeFile(join(d, 'k.json'), JSON.stringify(content));
      return loadAuditKeys(d);
    };
    const secret = randomBytes(32).toString('base64');
    await expect(one({ writer: 'bil\u200bling', audit: { kid: 'k1', secret } })).rejects.toThrow(/writer: a writer name is lowercase ASCII/);
    await expect(one({ writer: 'billing', audit: { kid: '__proto__', secret } })).rejects.toThrow(/audit\.kid: a key id is/);
    await expect(one({ kind: 'palisade.audit.public-keys', version: 1, writers: { Edge: { k1: 'x'.repeat(43) } }, anchors: {} })).rejects.toThrow(AuditKeyError);
    await runAuditCli(['keys', '--keys', dir]);
    const pub = JSON.parse(await readFile(join(dir, 'audit.pub.json'), 'utf8')) as { writers: Record<string, Record<string, string>> };
    pub.writers.billing![BILLING.kid] = pub.writers.edge![EDGE.kid]!;
    await writeFile(join(dir, 'audit.pub.json'), JSON.stringify(pub));
    await expect(loadAuditKeys(dir)).rejects.toThrow(/writer 'billing' key 'billing-1' is defined twice with different keys/);
  });
});
