import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../runtime/audit/audit-log.js';
import type { AuditEntryInput } from '../runtime/audit/audit-record.js';
import { runAuditCli } from './support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(() => redis.quit());

const run = runAuditCli;

const KEY = { kid: 'billing-2025', secret: randomBytes(32) };
const entry = (i: number): AuditEntryInput => ({
  runId: i <= 3 ? 'run-a' : 'run-b',
  principal: 'alice',
  tenant: 'acme',
  chain: ['triage', 'billing'],
  agent: 'billing',
  action: i === 6 ? 'tool.executed' : 'guard.decision',
  subject: 'issue_refund',
  outcome: i === 6 ? 'executed' : i % 2 === 0 ? 'block' : 'allow',
  reasons: i % 2 === 0 ? ['forbidden by refund-cap', 'amount over limit'] : [],
  risk: 0.5,
});

let prefix: string;
let log: AuditLog;
let dir: string;
beforeEach(async () => {
  prefix = uniquePrefix('audit-cli');
  log = new AuditLog({ redis, prefix, writer: 'agent:billing', key: KEY });
  for (let i = 1; i <= 6; i++) await log.append(entry(i));
  dir = await mkdtemp(join(tmpdir(), 'palisade-audit-cli-'));
});
afterEach(async () => {
  await deleteKeys(prefix);
});

async function keyDir(files: Record<string, unknown>): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'palisade-audit-keys-'));
  for (const [name, content] of Object.entries(files)) await writeFile(join(d, name), typeof content === 'string' ? content : JSON.stringify(content));
  return d;
}
const keyFile = (secret: Buffer, kid = KEY.kid, writer = 'agent:billing') => ({ writer, audit: { kid, secret: secret.toString('base64') }, envelope: { note: 'other keys are ignored' } });

describe('palisade audit verify', () => {
  it('exits 0 when the log is intact and every record is signed by its writer, checked with --keys', async () => {
    const keys = await keyDir({ 'billing.json': keyFile(KEY.secret), 'old.json': keyFile(randomBytes(32), 'billing-2024'), 'README.md': 'not a key', 'other.json': { writer: 'edge' } });
    const k = await run(['verify', '--prefix', prefix, '--keys', keys, '--unanchored']);
    expect(k.code).toBe(0);
    expect(k.out).toEqual([
      'WARNING: no anchors: records cut from the end of the log, with the head moved back, go unnoticed.',
      expect.stringMatching(new RegExp(`^audit log intact: 6 entries, head seq 6 \\([0-9a-f]{12}…\\), 6 records authenticated with 2 keys of 1 writer, NOT anchored \\(redis://127\\.0\\.0\\.1:6379 prefix '${prefix}'\\)$`)),
    ]);
    const json = await run(['verify', '--prefix', prefix, '--keys', keys, '--unanchored', '--json']);
    expect(JSON.parse(json.out.join('\n'))).toMatchObject({ ok: true, entries: 6, problems: [], macsVerified: 6, head: { seq: 6 }, warnings: [expect.stringMatching(/no anchors/)] });
    // A development log's check of the chain alone says, loudly, that it proves nothing.
    const bare = await run(['verify', '--prefix', prefix, '--allow-unsigned']);
    expect(bare.code).toBe(0);
    expect(bare.out[0]).toMatch(/^WARNING: --allow-unsigned: .*NOTHING IS PROVEN/);
    expect(bare.out[2]).toMatch(/^audit log intact: 6 entries, .*0 records authenticated with no keys, NOT AUTHENTICATED: 6 records from writers without a key, NOT anchored/);
  });

  it('exits 1 and prints each problem with its seq and kind when tampered with', async () => {
    await redis.xdel(`${prefix}:audit`, '3-0');
    await redis.xdel(`${prefix}:audit`, '6-0');
    const r = await run(['verify', '--prefix', prefix, '--allow-unsigned']);
    expect(r.code).toBe(1);
    expect(r.out.filter((l) => !l.startsWith('WARNING'))).toEqual([
      expect.stringMatching(/^audit log TAMPERED: 2 problems in 4 entries, head seq 6 .*NOT anchored/),
      '  seq 3 [4-0] deleted: seq 3 is missing',
      '  seq 6 truncated: the head records seq 6 but the chain ends at seq 5: seq 6 was removed from the end',
    ]);
    const wrong = await run(['verify', '--prefix', prefix, '--unanchored', '--keys', await keyDir({ 'k.json': keyFile(randomBytes(32)) })]);
    expect(wrong.code).toBe(1);
    expect(wrong.out.filter((l) => l.includes('bad-mac'))).toHaveLength(4);
  });

  it('exits 2 on unusable key directories and an unreachable Redis', async () => {
    expect(await run(['verify', '--prefix', prefix, '--keys', await keyDir({})])).toMatchObject({ code: 2, error: expect.stringMatching(/no audit keys in/) });
    expect(await run(['verify', '--prefix', prefix, '--keys', await keyDir({ 'k.json': { writer: 'edge', audit: { kid: 'k', secret: 'not base64!' } } })])).toMatchObject({
      code: 2,
      error: expect.stringMatching(/k\.json: audit\.secret: expected standard base64/),
    });
    expect(await run(['verify', '--prefix', prefix, '--keys', await keyDir({ 'k.json': keyFile(randomBytes(8)) })])).toMatchObject({ code: 2, error: expect.stringMatching(/8 bytes; at least 16/) });
    expect(await run(['verify', '--prefix', prefix, '--keys', await keyDir({ 'a.json': keyFile(randomBytes(32)), 'b.json': keyFile(randomBytes(32)) })])).toMatchObject({
      code: 2,
      error: expect.stringMatching(/defined twice with different secrets/),
    });
    expect(await run(['verify', '--prefix', prefix, '--keys', join(dir, 'missing')])).toMatchObject({ code: 2, error: expect.stringMatching(/cannot read the key directory/) });
    expect(await run(['verify', '--redis', 'redis://127.0.0.1:1', '--prefix', prefix, '--allow-unsigned'])).toMatchObject({ code: 2, error: expect.stringMatching(/^cannot reach Redis at redis:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/) });
    // Without keys, or without anchors, verify does not claim the log is intact: it says what it needs.
    expect(await run(['verify', '--require-mac', '--prefix', prefix])).toMatchObject({ code: 2, error: expect.stringMatching(/^verify needs the writers' keys: --keys <dir>/) });
    expect(await run(['verify', '--prefix', prefix])).toMatchObject({ code: 2, error: expect.stringMatching(/^verify needs the writers' keys/) });
    const keys = await keyDir({ 'billing.json': keyFile(KEY.secret) });
    expect(await run(['verify', '--prefix', prefix, '--keys', keys])).toMatchObject({ code: 2, error: expect.stringMatching(/^verify needs the anchors .*--anchors <file>/) });
    expect(await run(['verify', '--prefix', prefix, '--keys', keys, '--anchors', join(dir, 'anchors.jsonl')])).toMatchObject({ code: 2, error: expect.stringMatching(/--anchors needs the anchoring public key/) });
    expect(await run(['verify', '--prefix', prefix, '--keys', await keyDir({ 'k.json': keyFile(KEY.secret, KEY.kid, 'Agent:billing') })])).toMatchObject({ code: 2, error: expect.stringMatching(/k\.json: writer: a writer name is lowercase ASCII/) });
  });
});

describe('palisade audit tail', () => {
  it('prints the last records, of one run, as text or JSON', async () => {
    const r = await run(['tail', '-n', '2', '--prefix', prefix]);
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(2);
    expect(r.out[0]).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z {2}#5 {2}run:run-b {2}agent:billing {2}acme\/alice {2}triage>billing {2}guard\.decision {2}issue_refund {2}allow {2}risk 0\.5$/,
    );
    expect(r.out[1]).toMatch(/#6 {2}run:run-b .* tool\.executed {2}issue_refund {2}executed {2}risk 0\.5 {2}forbidden by refund-cap; amount over limit$/);
    const a = await run(['tail', '--run', 'run-a', '--prefix', prefix]);
    expect(a.out.map((l) => l.split('  ')[1])).toEqual(['#1', '#2', '#3']);
    const json = await run(['tail', '-n', '1', '--json', '--prefix', prefix]);
    expect(JSON.parse(json.out[0]!)).toMatchObject({ seq: 6, writer: 'agent:billing', kid: KEY.kid, streamId: '6-0' });
  });

  it('never lets field values drive the terminal', async () => {
    await log.append({ ...entry(7), subject: 'tool\u001b[2J\nforged line' });
    const r = await run(['tail', '-n', '1', '--prefix', prefix]);
    expect(r.out).toHaveLength(1);
    expect(r.out[0]).toContain('tool\\u001b[2J\\u000aforged line');
  });

  it('--follow prints new records until stopped', async () => {
    const stop = new AbortController();
    const lines: string[] = [];
    let wake: () => void = () => undefined;
    const done = run(['tail', '-n', '1', '--follow', '--run', 'run-b', '--prefix', prefix], {
      signal: stop.signal,
      onLine: (l) => {
        lines.push(l);
        wake();
      },
    });
    const waitFor = async (n: number): Promise<void> => {
      const deadline = Date.now() + 5000;
      while (lines.length < n && Date.now() < deadline) await new Promise<void>((r) => ((wake = r), setTimeout(r, 50)));
    };
    await waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    await log.append({ ...entry(7), runId: 'run-a' });
    await log.append({ ...entry(8), outcome: 'escalate' });
    await waitFor(2);
    stop.abort();
    const r = await done;
    expect(r.code).toBe(0);
    expect(lines.map((l) => l.split('  ')[1])).toEqual(['#6', '#8']);
    expect(lines[1]).toContain('escalate');
  });
});

describe('palisade audit export', () => {
  it('writes JSONL to stdout or a file, which verify --file checks offline', async () => {
    const r = await run(['export', '--prefix', prefix]);
    expect(r.code).toBe(0);
    expect(r.out.map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(JSON.parse(r.out[0]!)).toEqual(expect.objectContaining({ prev: '0'.repeat(64), hash: expect.stringMatching(/^[0-9a-f]{64}$/), sig: expect.stringMatching(/^[A-Za-z0-9_-]{86}$/), signs: 1 }));

    const file = join(dir, 'audit.jsonl');
    const f = await run(['export', '--run', 'run-b', '--out', file, '--prefix', prefix]);
    expect(f).toEqual({ code: 0, out: [`exported 3 audit records to ${file}`] });
    expect((await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).runId)).toEqual(['run-b', 'run-b', 'run-b']);

    const full = join(dir, 'full.jsonl');
    await run(['export', '--out', full, '--prefix', prefix]);
    const keys = await keyDir({ 'billing.json': keyFile(KEY.secret) });
    const ok = await run(['verify', '--file', full, '--keys', keys, '--unanchored']);
    expect(ok.code).toBe(0);
    expect(ok.out[1]).toMatch(/^audit log intact: 6 entries, head not known \(an export\), 6 records authenticated with 1 key of 1 writer/);
    const lines = (await readFile(full, 'utf8')).trim().split('\n');
    await writeFile(full, `${lines.map((l, i) => (i === 1 ? l.replace('"outcome":"block"', '"outcome":"allow"') : l)).join('\n')}\n`);
    const bad = await run(['verify', '--file', full, '--keys', keys, '--unanchored']);
    expect(bad.code).toBe(1);
    expect(bad.out.filter((l) => l.startsWith('  '))).toEqual(['  seq 2 [2-0] modified: its content does not match its hash: a field was changed after it was written']);
    expect(await run(['verify', '--file', join(dir, 'nope.jsonl'), '--keys', keys, '--unanchored'])).toMatchObject({ code: 2, error: expect.stringMatching(/cannot read .*nope\.jsonl: ENOENT/) });
    expect(await run(['export', '--out', join(dir, 'no/such/dir.jsonl'), '--prefix', prefix])).toMatchObject({ code: 2, error: expect.stringMatching(/cannot write .*ENOENT/) });
  });
});
