import { createHash, randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import fc from 'fast-check';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../runtime/audit/audit-log.js';
import { computeHash, GENESIS_HASH, SIG64, type AuditEntryInput, type AuditKeys, type AuditRecord } from '../runtime/audit/audit-record.js';
import { AuditError } from '../runtime/audit/audit-writer.js';
import { canonicalJson } from '../runtime/audit/canonical-json.js';
import { verifyExport } from '../runtime/audit/chain-verifier.js';
import { fromFields, toFields } from '../runtime/audit/record-fields.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(() => redis.quit());

const BILLING = { kid: 'billing-1', secret: randomBytes(32) };
const EDGE = { kid: 'edge-1', secret: randomBytes(32) };
const KEYS: AuditKeys = { 'agent:billing': { [BILLING.kid]: BILLING.secret }, edge: { [EDGE.kid]: EDGE.secret } };
/** The chain alone, for the tests of its structure: who wrote what is not proven (a development log's check). */
const CHAIN_ONLY = { allowUnsigned: true } as const;

const entry = (i: number, over: Partial<AuditEntryInput> = {}): AuditEntryInput => ({
  runId: `run-${i % 3}`,
  principal: 'alice',
  tenant: 'acme',
  chain: ['triage', 'billing'],
  agent: 'billing',
  action: 'guard.decision',
  subject: 'issue_refund',
  outcome: i % 2 === 0 ? 'block' : 'allow',
  reasons: [`reason ${i}`],
  risk: 0.25,
  detail: { n: i, stage: 'tool_call' },
  ...over,
});

type Row = [string, string[]];

let prefix: string;
let stream: string;
beforeEach(() => {
  prefix = uniquePrefix('audit');
  stream = `${prefix}:audit`;
});
afterEach(async () => {
  await deleteKeys(prefix);
});

const billingLog = (conn: Redis = redis): AuditLog => new AuditLog({ redis: conn, prefix, writer: 'agent:billing', key: BILLING });

async function fill(log: AuditLog, n: number): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let i = 1; i <= n; i++) out.push(await log.append(entry(i)));
  return out;
}

const rows = async (): Promise<Row[]> => (await redis.xrange(stream, '-', '+')) as Row[];

/** What an attacker with Redis access can do: rebuild the stream (ids must still increase). */
async function rewrite(transform: (rows: Row[]) => Row[]): Promise<void> {
  const next = transform(await rows());
  await redis.del(stream);
  for (const [id, fields] of next) await redis.xadd(stream, id, ...fields);
}

/** A field of a stored entry: `hash` and `mac` stand beside its body `r`, the rest inside it. */
const get = (fields: string[], key: string): string | undefined => {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === key) return fields[i + 1];
  return undefined;
};
/** What an attacker with Redis access can do to one entry: change a field in place, hash left as it was. */
const set = (fields: string[], key: string, value: string): string[] => {
  const out = [...fields];
  for (let i = 0; i < out.length; i += 2) {
    if (out[i] === key) out[i + 1] = value;
    else if (out[i] === 'r') {
      const body = JSON.parse(out[i + 1]!) as Record<string, unknown>;
      if (key in body) out[i + 1] = JSON.stringify({ ...body, [key]: value });
    }
  }
  return out;
};
const record = (row: Row): AuditRecord => {
  const item = fromFields(row[0], row[1]);
  if (!('record' in item)) throw new Error(item.error);
  return item.record;
};
/** An attacker's record: a correct hash (the algorithm is public), no valid signature. */
const forge = (fields: Omit<AuditRecord, 'hash' | 'streamId'>): string[] => {
  const { mac: _mac, kid: _kid, sig: _sig, signs: _signs, ...body } = fields;
  return toFields({ ...body, hash: computeHash(body) });
};

const kinds = (problems: { seq: number; problem: string }[]) => problems.map((p) => [p.seq, p.problem]);

describe('canonicalJson', () => {
  it('sorts keys, drops undefined members, prints numbers the ECMAScript way', () => {
    expect(canonicalJson({ b: 1, a: [3, { d: undefined, c: 'x' }], é: null, Z: true })).toBe('{"Z":true,"a":[3,{"c":"x"}],"b":1,"é":null}');
    expect(canonicalJson([1e21, 0.1, -0, 1.5e-7, undefined])).toBe('[1e+21,0.1,0,1.5e-7,null]');
    expect(canonicalJson({ when: new Date(0) })).toBe('{"when":"1970-01-01T00:00:00.000Z"}');
    expect(canonicalJson('\ud800x')).toBe('"\ufffdx"');
    expect(() => canonicalJson(Number.NaN)).toThrow();
    expect(() => canonicalJson(1n)).toThrow();
  });

  it('prints any JSON value with every object\'s keys sorted, the same each time', () => {
    // The plainest statement of the format, as an oracle.
    const oracle = (v: unknown): string =>
      v === null || typeof v !== 'object'
        ? JSON.stringify(v)
        : Array.isArray(v)
          ? `[${v.map(oracle).join(',')}]`
          : `{${Object.keys(v)
              .sort()
              .map((k) => `${JSON.stringify(k)}:${oracle((v as Record<string, unknown>)[k])}`)
              .join(',')}}`;
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalJson(v)).toBe(oracle(v));
        expect(canonicalJson(v)).toBe(canonicalJson(structuredClone(v)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('AuditLog', () => {
  it('appends a hash-chained, MAC-ed log that verifies, and reads it back', async () => {
    const log = billingLog();
    const written = await fill(log, 5);
    const plain = await new AuditLog({ redis, prefix, writer: 'edge-unkeyed' }).append(entry(6, { action: 'run.completed', reasons: undefined, detail: JSON.parse('{"ünïcødé":"✓","__proto__":1}') }));
    expect(plain.kid).toBeUndefined();
    expect(plain.mac).toBeUndefined();

    const all = await log.read();
    expect(all).toEqual([...written, plain]);
    expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(all.map((r) => r.streamId)).toEqual(['1-0', '2-0', '3-0', '4-0', '5-0', '6-0']);
    expect(all[0]!.prev).toBe(GENESIS_HASH);
    for (let i = 1; i < all.length; i++) expect(all[i]!.prev).toBe(all[i - 1]!.hash);
    for (const r of all) expect(computeHash(r)).toBe(r.hash);
    expect(all[0]).toMatchObject({ ...entry(1), writer: 'agent:billing', kid: BILLING.kid, sig: expect.stringMatching(SIG64), signs: 1 });
    expect(all[0]!.mac).toBeUndefined();
    expect(await log.head()).toEqual({ seq: 6, hash: plain.hash });

    expect(await log.verify(CHAIN_ONLY)).toMatchObject({ ok: true, entries: 6, problems: [], head: { seq: 6 }, macsVerified: 0, unsigned: 6 });
    // A writer without a key proves nothing: its record fails unless unsigned records are let pass.
    const strict = await log.verify({ keys: KEYS });
    expect(strict).toMatchObject({ ok: false, macsVerified: 5 });
    expect(strict.problems).toEqual([{ seq: 6, streamId: '6-0', problem: 'unsigned', detail: "no key is configured for writer 'edge-unkeyed': nothing shows who wrote it" }]);
    expect(await log.verify({ keys: KEYS, allowUnsigned: true })).toMatchObject({ ok: true, macsVerified: 5, unsigned: 1 });
    await expect(log.verify({})).rejects.toThrow(/needs the writers' keys/);

    expect((await log.read({ from: 3, count: 2 })).map((r) => r.seq)).toEqual([3, 4]);
    expect((await log.read({ runId: 'run-1' })).map((r) => r.seq)).toEqual([1, 4]);
    expect((await log.tail(2)).map((r) => r.seq)).toEqual([5, 6]);
    expect((await log.tail(5, { runId: 'run-2' })).map((r) => r.seq)).toEqual([2, 5]);
    expect((await log.tail(10, { to: 3 })).map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(await log.lastSeq()).toBe(6);
  });

  it('appends as several writers through one log, each record signed with its own writer’s key, in one batch', async () => {
    const shared = new AuditLog({ redis, prefix, writer: 'process' });
    const billing = shared.as('agent:billing', BILLING);
    const edge = shared.as('edge', EDGE);
    const written = await Promise.all([billing.append(entry(1)), edge.append(entry(2)), billing.append(entry(3))]);
    expect(written.map((r) => [r.seq, r.writer, r.kid])).toEqual([
      [1, 'agent:billing', BILLING.kid],
      [2, 'edge', EDGE.kid],
      [3, 'agent:billing', BILLING.kid],
    ]);
    expect(written.map((r) => r.signs)).toEqual([1, 1, 1]);
    expect(await shared.verify({ keys: KEYS, requireMac: true })).toMatchObject({ ok: true, entries: 3, macsVerified: 3 });
    expect(() => shared.as('', BILLING)).toThrow(AuditError);
    expect(() => shared.as('agent:x', { kid: 'k', secret: Buffer.alloc(4) })).toThrow(/at least 16 bytes/);
  });

  it('hashes what it stores: any entry reads back with the hash its fields give', async () => {
    const log = billingLog();
    const text = fc.string({ unit: 'grapheme', maxLength: 12 });
    const some = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 });
    const input = fc.record(
      {
        runId: some,
        principal: some,
        tenant: text,
        chain: fc.array(text, { maxLength: 4 }),
        agent: text,
        action: fc.constantFrom('run.started', 'guard.decision', 'tool.executed', 'handoff'),
        subject: text,
        outcome: some,
        reasons: fc.array(text, { maxLength: 3 }),
        risk: fc.oneof(fc.double({ min: -1, max: 1, noNaN: true }), fc.constant(-0)),
        detail: fc.dictionary(text, fc.oneof(text, fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }))),
      },
      { requiredKeys: ['runId', 'principal', 'chain', 'action', 'outcome'] },
    );
    await fc.assert(
      fc.asyncProperty(input, async (e) => {
        const written = await log.append(e as AuditEntryInput);
        expect(computeHash(written)).toBe(written.hash);
        const [stored] = await log.read({ from: written.seq, count: 1 });
        expect(stored).toEqual(written);
        expect(computeHash(stored!)).toBe(stored!.hash);
      }),
      { numRuns: 150 },
    );
    expect(await log.verify({ keys: KEYS })).toMatchObject({ ok: true, entries: 150, macsVerified: 150 });
  });

  it('stores a record as its hashed body and hash (and signature), and still reads entries written a field per member', async () => {
    const log = billingLog();
    const [first, second] = await fill(log, 2);
    const [row] = await rows();
    expect(row![1].filter((_, i) => i % 2 === 0)).toEqual(['r', 'hash', 'sig', 'signs']);
    expect(createHash('sha256').update(`${first!.prev}\n${get(row![1], 'r')}`).digest('hex')).toBe(first!.hash);
    // An entry of the older layout, a field per member, chained after them: read and verified alike.
    const { streamId: _id, sig: _sig, signs: _signs, kid: _kid, hash: _hash, ...body } = { ...second!, seq: 3, prev: second!.hash, outcome: 'older' };
    const legacy = { ...body, hash: computeHash(body) };
    const flat = Object.entries(legacy).flatMap(([k, v]) => [k, typeof v === 'string' ? v : k === 'seq' || k === 'at' || k === 'risk' ? String(v) : canonicalJson(v)]);
    await redis.xadd(stream, '3-0', ...flat);
    await redis.hset(`${prefix}:audit:head`, 'seq', 3, 'hash', legacy.hash);
    expect(await log.verify(CHAIN_ONLY)).toMatchObject({ ok: true, entries: 3 });
    expect((await log.read({ from: 3 }))[0]).toMatchObject({ seq: 3, outcome: 'older', hash: legacy.hash });
  });

  it.each([
    ['a body that is not JSON', (f: string[]) => set(f, 'r', '{"seq":'), /body \(r\) is not JSON/, false],
    ['a body that is not an object', (f: string[]) => set(f, 'r', '[1,2]'), /not a JSON object/, false],
    ['a number written as text', (f: string[]) => set(f, 'seq', '1'), /'seq' is not a number/, true],
    ['a field beside the body', (f: string[]) => [...f, 'note', 'x'], /unexpected field 'note'/, true],
    ['a field named __proto__', (f: string[]) => [...f, '__proto__', 'x'], /unexpected field '__proto__'/, true],
    ['a second body', (f: string[]) => [...f, 'r', get(f, 'r')!], /'r' appears twice/, true],
  ])('refuses a stored entry with %s as malformed', async (_what, tamper, reason, placed) => {
    const log = billingLog();
    await fill(log, 2);
    await rewrite((r) => r.map(([id, f]) => [id, id === '1-0' ? tamper(f) : f]));
    const report = await log.verify(CHAIN_ONLY);
    expect(report.problems[0]).toMatchObject({ seq: 1, problem: 'malformed', detail: expect.stringMatching(reason) });
    // Where its body still says where it stands, the chain goes on through it; else the next entry is out of place too.
    expect(report.problems).toHaveLength(placed ? 1 : 2);
  });

  it('rejects entries that are not well formed, carry unknown fields or a large detail', async () => {
    const log = billingLog();
    await expect(log.append({ ...entry(1), action: 'tool.deleted' as never })).rejects.toThrow(AuditError);
    await expect(log.append({ ...entry(1), content: 'the prompt' } as never)).rejects.toThrow(/content/);
    await expect(log.append({ ...entry(1), principal: '' })).rejects.toThrow(/principal/);
    await expect(log.append({ ...entry(1), risk: Number.POSITIVE_INFINITY })).rejects.toThrow(AuditError);
    await expect(log.append({ ...entry(1), detail: { blob: 'x'.repeat(9000) } })).rejects.toThrow(/over the 8192-byte cap/);
    expect(await log.read()).toEqual([]);
    expect(() => new AuditLog({ redis, prefix, writer: 'w', key: { kid: 'k', secret: Buffer.alloc(8) } })).toThrow(/16 bytes/);
  });

  it('keeps one valid chain under 20 concurrent appenders on 5 connections', async () => {
    const conns = Array.from({ length: 5 }, () => new Redis(REDIS_URL));
    try {
      const writers = Array.from({ length: 20 }, (_, w) =>
        w % 2 === 0 ? new AuditLog({ redis: conns[w % 5]!, prefix, writer: 'agent:billing', key: BILLING }) : new AuditLog({ redis: conns[w % 5]!, prefix, writer: `agent:w${w}` }),
      );
      const perWriter = 15;
      const results = await Promise.all(
        writers.map(async (log, w) => {
          const mine: AuditRecord[] = [];
          for (let i = 0; i < perWriter; i++) mine.push(await log.append(entry(i, { runId: `w${w}`, detail: { w, i } })));
          return mine;
        }),
      );
      // One instance shared by many callers at once: appends go out together, in call order.
      const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => writers[1]!.append(entry(i, { runId: 'burst', detail: { i } }))));
      expect(burst.map((r) => r.seq)).toEqual(burst.map((_, i) => burst[0]!.seq + i));

      const total = 20 * perWriter + 30;
      const report = await writers[0]!.verify({ keys: KEYS, allowUnsigned: true });
      expect(report).toMatchObject({ ok: true, entries: total, head: { seq: total } });
      expect(report.macsVerified).toBe(10 * perWriter);
      const all = await writers[0]!.read({ count: total + 10 });
      expect(all.map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      for (const [w, mine] of results.entries()) {
        expect(mine.map((r) => r.detail)).toEqual(Array.from({ length: perWriter }, (_, i) => ({ w, i })));
        for (let i = 1; i < mine.length; i++) expect(mine[i]!.seq).toBeGreaterThan(mine[i - 1]!.seq);
        for (const r of mine) expect(all[r.seq - 1]).toEqual(r);
      }
      await Promise.all(writers.map((w) => w.close()));
    } finally {
      await Promise.all(conns.map((c) => c.quit()));
    }
  });

  it('serves contending appenders first come, first served, and skips a waiter that died', async () => {
    const conns = Array.from({ length: 8 }, () => new Redis(REDIS_URL));
    try {
      const writers = conns.map((c, w) => new AuditLog({ redis: c, prefix, writer: `agent:w${w}`, timeoutMs: 5000 }));
      const latencies: number[] = [];
      await Promise.all(
        writers.map(async (log, w) => {
          for (let i = 0; i < 100; i++) {
            const started = Date.now();
            await log.append(entry(i, { runId: `w${w}` }));
            latencies.push(Date.now() - started);
          }
        }),
      );
      expect(await writers[0]!.verify(CHAIN_ONLY)).toMatchObject({ ok: true, entries: 800 });
      expect(Math.max(...latencies)).toBeLessThan(2000);

      // A waiter that crashed while first in line holds the others up only until its entry expires.
      const [sec, micro] = await redis.time();
      const now = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
      await redis.zadd(`${prefix}:audit:line`, 0, 'ghost');
      await redis.hset(`${prefix}:audit:line:alive`, 'ghost', now + 1500);
      const started = Date.now();
      await expect(new AuditLog({ redis, prefix, writer: 'edge', timeoutMs: 300 }).append(entry(1))).rejects.toThrow(/gave up after 300 ms/);
      const record = await writers[1]!.append(entry(2));
      expect(record.seq).toBe(801);
      expect(Date.now() - started).toBeGreaterThan(700);
      expect(await redis.exists(`${prefix}:audit:line`, `${prefix}:audit:line:alive`)).toBe(0);
      await Promise.all(writers.map((w) => w.close()));
    } finally {
      await Promise.all(conns.map((c) => c.quit()));
    }
  });

  it('refuses to start a second chain when the head is gone but the stream is not', async () => {
    const log = billingLog();
    await fill(log, 2);
    await redis.del(`${prefix}:audit:head`);
    const fresh = billingLog();
    await expect(fresh.append(entry(3))).rejects.toThrow(/head .* is missing but the stream exists/);
    expect(kinds((await fresh.verify(CHAIN_ONLY)).problems)).toEqual([[0, 'malformed']]);
  });
});

describe('AuditLog.verify detects and classifies tampering', () => {
  it('an entry modified in place', async () => {
    const log = billingLog();
    await fill(log, 6);
    await rewrite((r) => r.map(([id, f]) => [id, id === '3-0' ? set(f, 'outcome', 'allow-forged') : f]));
    const report = await log.verify({ keys: KEYS });
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([{ seq: 3, streamId: '3-0', problem: 'modified', detail: expect.stringMatching(/does not match its hash/) }]);
  });

  it('an entry modified and rehashed (only the next link and its MAC give it away)', async () => {
    const log = billingLog();
    await fill(log, 6);
    await rewrite((r) =>
      r.map(([id, f]) => {
        if (id !== '3-0') return [id, f];
        const rec = record([id, f]);
        return [id, toFields({ ...rec, outcome: 'forged', hash: computeHash({ ...rec, outcome: 'forged' }) })];
      }),
    );
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[3, 'modified']]);
    expect(kinds((await log.verify({ keys: KEYS })).problems)).toEqual([
      [3, 'bad-mac'],
      [3, 'modified'],
    ]);
  });

  it('the last entry modified and rehashed (the head gives it away)', async () => {
    const log = billingLog();
    await fill(log, 4);
    await rewrite((r) =>
      r.map(([id, f]) => {
        if (id !== '4-0') return [id, f];
        const rec = record([id, f]);
        return [id, toFields({ ...rec, outcome: 'forged', hash: computeHash({ ...rec, outcome: 'forged' }) })];
      }),
    );
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[4, 'modified']]);
  });

  it('deleted entries', async () => {
    const log = billingLog();
    await fill(log, 10);
    await redis.xdel(stream, '4-0');
    const one = await log.verify({ keys: KEYS });
    expect(one.problems).toEqual([{ seq: 4, streamId: '5-0', problem: 'deleted', detail: 'seq 4 is missing' }]);
    await redis.xdel(stream, '7-0', '8-0');
    expect((await log.verify(CHAIN_ONLY)).problems.map((p) => [p.seq, p.problem, p.detail])).toEqual([
      [4, 'deleted', 'seq 4 is missing'],
      [7, 'deleted', 'seq 7..8 are missing (2 entries)'],
    ]);
    await redis.xdel(stream, '1-0');
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)[0]).toEqual([1, 'deleted']);
  });

  it('an inserted entry with a broken chain', async () => {
    const log = billingLog();
    const written = await fill(log, 6);
    const clean = await rows();
    const forged = forge({ ...written[3]!, outcome: 'allow', prev: randomBytes(32).toString('hex'), writer: 'edge' });
    await rewrite((r) => [...r.slice(0, 3), ['3-1', forged], ...r.slice(3)]);
    const report = await log.verify(CHAIN_ONLY);
    expect(report.problems).toEqual([{ seq: 4, streamId: '3-1', problem: 'inserted', detail: expect.stringMatching(/does not chain to seq 3, and the next entry does/) }]);
    // Claiming a seq far ahead makes no difference.
    const far = forge({ ...written[3]!, seq: 99, prev: randomBytes(32).toString('hex'), writer: 'edge' });
    await rewrite(() => [...clean.slice(0, 3), ['3-1', far], ...clean.slice(3)]);
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[99, 'inserted']]);
  });

  it('an inserted entry that chains to its predecessor (the next entry chains past it)', async () => {
    const log = billingLog();
    const written = await fill(log, 6);
    const clean = await rows();
    await rewrite((r) => [...r.slice(0, 3), ['3-1', forge({ ...written[3]!, outcome: 'allow' })], ...r.slice(3)]);
    const report = await log.verify(CHAIN_ONLY);
    expect(report.problems).toEqual([{ seq: 4, streamId: '3-1', problem: 'inserted', detail: expect.stringMatching(/chain continues from the other one \(stream id 4-0\)/) }]);
    // Just before the last entry: the head decides which one is real.
    await rewrite(() => [...clean.slice(0, 5), ['5-1', forge({ ...written[5]!, outcome: 'allow' })], ...clean.slice(5)]);
    expect((await log.verify(CHAIN_ONLY)).problems.map((p) => [p.seq, p.streamId, p.problem])).toEqual([[6, '5-1', 'inserted']]);
  });

  it('a forged entry spliced into a rewritten chain: only the writers’ MACs catch it', async () => {
    const log = billingLog();
    const written = await fill(log, 6);
    // The attacker inserts a record after seq 3 and rehashes everything after it, head included.
    const forgedRows: Row[] = [];
    let prev = written[2]!.hash;
    const tailRecords = [{ ...written[3]!, outcome: 'allow', reasons: ['approved'] }, ...written.slice(3)];
    tailRecords.forEach((r, i) => {
      const seq = 4 + i;
      const fields = forge({ ...r, seq, prev });
      prev = get(fields, 'hash')!;
      forgedRows.push([`${seq}-0`, fields]);
    });
    await rewrite((r) => [...r.slice(0, 3), ...forgedRows]);
    await redis.hset(`${prefix}:audit:head`, 'seq', 7, 'hash', prev);

    expect((await log.verify(CHAIN_ONLY)).ok).toBe(true); // a Redis-only attacker can rewrite an unkeyed chain
    const report = await log.verify({ keys: KEYS });
    expect(kinds(report.problems)).toEqual([
      [4, 'bad-mac'],
      [5, 'bad-mac'],
      [6, 'bad-mac'],
      [7, 'bad-mac'],
    ]);
    expect(report.problems[0]!.detail).toMatch(/no signature, but writer 'agent:billing' has a key/);
  });

  it('a forged entry appended at the end, with and without moving the head', async () => {
    const log = billingLog();
    const written = await fill(log, 4);
    const forged = forge({ ...written[3]!, seq: 5, prev: written[3]!.hash, action: 'approval.decided', outcome: 'approved' });
    await redis.xadd(stream, '5-0', ...forged);
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[5, 'inserted']]);
    await redis.hset(`${prefix}:audit:head`, 'seq', 5, 'hash', get(forged, 'hash')!);
    expect((await log.verify(CHAIN_ONLY)).ok).toBe(true);
    expect((await log.verify({ keys: KEYS })).problems).toEqual([{ seq: 5, streamId: '5-0', problem: 'bad-mac', detail: expect.stringMatching(/no signature/) }]);
  });

  it('two entries swapped', async () => {
    const log = billingLog();
    await fill(log, 8);
    await rewrite((r) => r.map(([id, f], i) => [id, i === 3 ? r[4]![1] : i === 4 ? r[3]![1] : f]));
    const report = await log.verify({ keys: KEYS });
    expect(report.problems).toEqual([{ seq: 5, streamId: '4-0', problem: 'reordered', detail: expect.stringMatching(/moved earlier/) }]);
  });

  it('an entry moved later, and one moved earlier', async () => {
    const log = billingLog();
    await fill(log, 10);
    const original = await rows();
    // seq 3 after seq 7; ids stay increasing (the attacker renumbers the stream ids).
    const later = [0, 1, 3, 4, 5, 6, 2, 7, 8, 9].map((i, at) => [`${at + 1}-0`, original[i]![1]] as Row);
    await rewrite(() => later);
    expect((await log.verify(CHAIN_ONLY)).problems).toEqual([{ seq: 3, streamId: '7-0', problem: 'reordered', detail: 'seq 3 stands after seq 7 in the stream: it was moved later' }]);
    const earlier = [0, 7, 1, 2, 3, 4, 5, 6, 8, 9].map((i, at) => [`${at + 1}-0`, original[i]![1]] as Row);
    await rewrite(() => earlier);
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[8, 'reordered']]);
  });

  it('a truncated tail', async () => {
    const log = billingLog();
    await fill(log, 10);
    await redis.xdel(stream, '9-0', '10-0');
    const report = await log.verify({ keys: KEYS });
    expect(report.problems).toEqual([{ seq: 9, streamId: '', problem: 'truncated', detail: expect.stringMatching(/head records seq 10 but the chain ends at seq 8/) }]);
    await redis.xdel(stream, '1-0', '2-0', '3-0', '4-0', '5-0', '6-0', '7-0', '8-0');
    expect(kinds((await log.verify(CHAIN_ONLY)).problems)).toEqual([[1, 'truncated']]);
  });

  it('bad signatures: altered, wrong key, unknown key id', async () => {
    const log = billingLog();
    await fill(log, 4);
    await rewrite((r) => r.map(([id, f]) => [id, id === '2-0' ? set(f, 'sig', randomBytes(64).toString('base64url')) : f]));
    expect((await log.verify(CHAIN_ONLY)).ok).toBe(true); // the signature is outside the hash
    expect((await log.verify({ keys: KEYS })).problems).toEqual([{ seq: 2, streamId: '2-0', problem: 'bad-mac', detail: "the signature does not match key 'billing-1' of writer 'agent:billing'" }]);
    const wrong = await log.verify({ keys: { 'agent:billing': { [BILLING.kid]: randomBytes(32) } } });
    expect(kinds(wrong.problems)).toEqual([1, 2, 3, 4].map((s) => [s, 'bad-mac']));
    const rotated = await log.verify({ keys: { 'agent:billing': { 'billing-2': randomBytes(32) } } });
    expect(rotated.problems[0]!.detail).toBe("writer 'agent:billing' has no key 'billing-1'");
  });

  it('malformed entries', async () => {
    const log = billingLog();
    await fill(log, 3);
    await rewrite((r) => r.map(([id, f]) => [id, id === '2-0' ? [...f, 'content', 'the whole prompt'] : f]));
    const report = await log.verify(CHAIN_ONLY);
    expect(report.problems).toEqual([{ seq: 2, streamId: '2-0', problem: 'malformed', detail: "unexpected field 'content'" }]);
  });
});

describe('AuditLog export and follow', () => {
  it('exports JSONL with every field, which verifies on its own', async () => {
    const log = billingLog();
    await fill(log, 7);
    const lines: string[] = [];
    expect(await log.export((l) => void lines.push(l))).toBe(7);
    const records = await log.read();
    expect(lines.map((l) => JSON.parse(l))).toEqual(records);
    expect(Object.keys(JSON.parse(lines[0]!))).toEqual(['streamId', 'seq', 'at', 'writer', 'runId', 'principal', 'tenant', 'chain', 'agent', 'action', 'subject', 'outcome', 'reasons', 'risk', 'detail', 'prev', 'hash', 'kid', 'sig', 'signs']);
    expect(await verifyExport(lines, { keys: KEYS })).toMatchObject({ ok: true, entries: 7, macsVerified: 7, head: undefined });
    expect((await verifyExport(lines, { ...CHAIN_ONLY, head: { seq: 9, hash: 'x' } })).problems.map((p) => p.problem)).toEqual(['truncated']);

    const tampered = lines.map((l, i) => (i === 2 ? l.replace('"outcome":"allow"', '"outcome":"block"') : l));
    expect(kinds((await verifyExport(tampered, CHAIN_ONLY)).problems)).toEqual([[3, 'modified']]);
    expect(kinds((await verifyExport([...lines.slice(0, 4), ...lines.slice(5)], CHAIN_ONLY)).problems)).toEqual([[5, 'deleted']]);

    const run1: string[] = [];
    await log.export((l) => void run1.push(l), { runId: 'run-1' });
    expect(run1.map((l) => JSON.parse(l).seq)).toEqual([1, 4, 7]);
  });

  it('follows new records as they are appended, from the end or after a seq, filtered by run', async () => {
    const log = billingLog();
    await fill(log, 2);
    const stop = new AbortController();
    const seen: AuditRecord[] = [];
    const following = (async () => {
      for await (const r of log.follow({ signal: stop.signal, blockMs: 200 })) seen.push(r);
    })();
    const ofRun: number[] = [];
    const filtered = (async () => {
      for await (const r of log.follow({ after: 0, runId: 'run-0', signal: stop.signal, blockMs: 200 })) ofRun.push(r.seq);
    })();
    await new Promise((r) => setTimeout(r, 100));
    const writer = new AuditLog({ redis, prefix, writer: 'edge', key: EDGE });
    for (let i = 3; i <= 6; i++) await writer.append(entry(i));
    const deadline = Date.now() + 5000;
    while ((seen.length < 4 || ofRun.length < 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    await Promise.all([following, filtered]);
    expect(seen.map((r) => [r.seq, r.writer])).toEqual([3, 4, 5, 6].map((s) => [s, 'edge']));
    expect(ofRun).toEqual([3, 6]);
  });
});
