/**
 * `palisade audit tail | export | verify`.
 *
 * Key files for `audit verify --keys <dir>`: every `*.json` file in the directory that has an `audit`
 * member contributes one key:
 *
 *     { "writer": "agent:billing", "audit": { "kid": "2025-06-a", "secret": "<base64 of 32 random bytes>" } }
 *
 * - `writer` is the component id the writer's AuditLog was created with (`agent:<name>`, `edge` ...).
 * - `audit.kid` is the key id written into the writer's records; `audit.secret` is standard base64
 *   (with padding) of at least 16 bytes, 32 recommended.
 * - Other members are ignored, so a writer's key file may hold its other keys too; files without an
 *   `audit` member are skipped. Keep a retired key's file (another file, same writer, old kid) for as
 *   long as records it signed are kept: a record whose kid is unknown fails verification.
 * - A writer that has a key file must have signed every record attributed to it.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { AuditLog } from '../audit/audit-log.js';
import type { AuditKeys, AuditRecord } from '../audit/audit-record.js';
import { verifyExport, type VerifyOptions, type VerifyReport } from '../audit/chain-verifier.js';
import { DEFAULT_REDIS_URL, redactUrl } from '../redis-url.js';

export interface AuditConnection {
  redis: Redis;
  close(): Promise<void>;
}

export interface AuditCommandIo {
  out(line: string): void;
  /** Reports a usage or configuration problem (exit 2) and does not return. */
  fail(message: string): never;
  /** Opens Redis for a command; by default connects to `flags.redis`, failing with a clear message when unreachable. */
  connect?(flags: { redis: string; prefix: string }): Promise<AuditConnection>;
  /** Ends `audit tail --follow` (it also ends on SIGINT). */
  signal?: AbortSignal;
}

interface ConnFlags {
  redis: string;
  prefix: string;
}


async function defaultConnect(flags: ConnFlags, fail: (message: string) => never): Promise<AuditConnection> {
  const redis = new Redis(flags.redis, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1 });
  let cause: string | undefined;
  redis.on('error', (error: Error) => (cause ??= error.message));
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    redis.disconnect();
    fail(`cannot reach Redis at ${redactUrl(flags.redis)}: ${cause ?? (error instanceof Error ? error.message : String(error))}`);
  }
  return {
    redis,
    close: async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

function count(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

// ---------------------------------------------------------------------------------------------
// Keys

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const KeyFileSchema = z.looseObject({
  writer: z.string().min(1),
  audit: z.looseObject({ kid: z.string().min(1), secret: z.string().regex(BASE64, 'expected standard base64 with padding') }).optional(),
});

export class AuditKeyError extends Error {
  override readonly name = 'AuditKeyError';
}

/** Reads the writers' audit keys from the `*.json` files of `dir` (format: see the top of this file). */
export async function loadAuditKeys(dir: string): Promise<{ keys: AuditKeys; count: number; writers: number }> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch (error) {
    throw new AuditKeyError(`cannot read the key directory ${dir}: ${(error as Error).message}`);
  }
  const keys: AuditKeys = {};
  let n = 0;
  for (const name of names) {
    const file = join(dir, name);
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(file, 'utf8'));
    } catch (error) {
      throw new AuditKeyError(`${file}: ${(error as Error).message}`);
    }
    const parsed = KeyFileSchema.safeParse(raw);
    if (!parsed.success) throw new AuditKeyError(`${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ')}`);
    const { writer, audit } = parsed.data;
    if (!audit) continue;
    const secret = Buffer.from(audit.secret, 'base64');
    if (secret.length < 16) throw new AuditKeyError(`${file}: audit.secret is ${secret.length} bytes; at least 16 are needed (32 recommended)`);
    const mine = (keys[writer] ??= {});
    const seen = mine[audit.kid];
    if (seen && !seen.equals(secret)) throw new AuditKeyError(`${file}: writer '${writer}' key '${audit.kid}' is defined twice with different secrets`);
    if (!seen) n++;
    mine[audit.kid] = secret;
  }
  if (n === 0) throw new AuditKeyError(`no audit keys in ${dir}: expected *.json files like { "writer": "agent:billing", "audit": { "kid": "...", "secret": "<base64>" } }`);
  return { keys, count: n, writers: Object.keys(keys).length };
}

// ---------------------------------------------------------------------------------------------
// Output

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
/** Field values come from agents and models: never let them drive the terminal. */
const safe = (s: string): string => s.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** One human-readable line: time, seq, run, writer, principal, chain, action, subject, outcome, risk, reasons. */
export function formatRecord(r: AuditRecord): string {
  const who = r.tenant !== undefined ? `${r.tenant}/${r.principal}` : r.principal;
  const parts = [
    new Date(r.at).toISOString(),
    `#${r.seq}`,
    `run:${r.runId}`,
    r.writer,
    who,
    r.chain.length > 0 ? r.chain.join('>') : '-',
    r.action,
    r.subject ?? '-',
    r.outcome,
  ];
  let line = parts.map(safe).join('  ');
  if (r.risk !== undefined) line += `  risk ${r.risk}`;
  if (r.reasons && r.reasons.length > 0) line += `  ${safe(r.reasons.join('; '))}`;
  return line;
}

function printReport(report: VerifyReport, io: AuditCommandIo, source: string, keysNote: string): void {
  const head = report.head ? `, head seq ${report.head.seq} (${report.head.hash.slice(0, 12)}…)` : report.head === undefined ? ', head not known (an export: a cut end cannot be detected)' : '';
  if (report.ok) {
    io.out(`audit log intact: ${report.entries} entries${head}${keysNote ? `, ${report.macsVerified} MACs verified ${keysNote}` : ''} (${source})`);
    return;
  }
  io.out(`audit log TAMPERED: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'} in ${report.entries} entries${head} (${source})`);
  for (const p of report.problems) io.out(`  seq ${p.seq}${p.streamId ? ` [${p.streamId}]` : ''} ${p.problem}: ${safe(p.detail)}`);
}

// ---------------------------------------------------------------------------------------------
// Commands

/** `palisade audit tail | export | verify`. Exit codes: 0 fine, 1 the log was tampered with, 2 bad usage or Redis unreachable. */
export function registerAuditCommands(program: Command, io: AuditCommandIo, setExit: (code: number) => void): void {
  const redisOption = (): Option => new Option('--redis <url>', 'Redis URL').default(process.env.REDIS_URL ?? DEFAULT_REDIS_URL, '$REDIS_URL or redis://127.0.0.1:6379');
  const prefixOption = (): Option => new Option('--prefix <prefix>', 'key prefix shared by workers and producers').default('palisade');

  const withLog = async <T>(flags: ConnFlags, body: (log: AuditLog) => Promise<T>): Promise<T> => {
    const conn = io.connect ? await io.connect(flags) : await defaultConnect(flags, io.fail);
    try {
      return await body(new AuditLog({ redis: conn.redis, prefix: flags.prefix, writer: 'cli' }));
    } finally {
      await conn.close();
    }
  };

  const audit = program.command('audit').description('Read, export and verify the tamper-evident audit log');

  audit
    .command('tail')
    .description('Print the last audit records, optionally of one run, and follow new ones')
    .option('-n, --lines <n>', 'how many records', count, 20)
    .option('-f, --follow', 'keep printing records as they are appended (Ctrl-C to stop)')
    .option('--run <id>', 'only the records of this run')
    .option('--json', 'one JSON record per line')
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { lines: number; follow?: boolean; run?: string; json?: boolean }) => {
      const print = (r: AuditRecord): void => io.out(flags.json ? JSON.stringify(r) : formatRecord(r));
      await withLog(flags, async (log) => {
        const end = await log.lastSeq();
        const records = await log.tail(flags.lines, { to: end, ...(flags.run !== undefined ? { runId: flags.run } : {}) });
        records.forEach(print);
        if (!flags.follow) return;
        const stop = new AbortController();
        const onSigint = (): void => stop.abort();
        const onAbort = (): void => stop.abort();
        process.on('SIGINT', onSigint);
        io.signal?.addEventListener('abort', onAbort, { once: true });
        if (io.signal?.aborted) stop.abort();
        try {
          for await (const r of log.follow({ after: end, signal: stop.signal, ...(flags.run !== undefined ? { runId: flags.run } : {}) })) print(r);
        } finally {
          process.off('SIGINT', onSigint);
          io.signal?.removeEventListener('abort', onAbort);
        }
      });
      setExit(0);
    });

  audit
    .command('export')
    .description('Write the audit log as JSONL, one record per line with its hashes and MACs, for archiving or external verification')
    .option('--run <id>', 'only the records of this run (their chain links cannot then be checked)')
    .option('--out <file>', 'write to this file instead of stdout')
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { run?: string; out?: string }) => {
      const filter = flags.run !== undefined ? { runId: flags.run } : {};
      if (flags.out === undefined) {
        await withLog(flags, (log) => log.export((line) => io.out(line), filter));
        setExit(0);
        return;
      }
      const file = createWriteStream(flags.out, { flags: 'w' });
      const opened = once(file, 'open').catch((error: Error) => io.fail(`cannot write ${flags.out}: ${error.message}`));
      await opened;
      let failure: Error | undefined;
      file.on('error', (error) => (failure ??= error));
      const n = await withLog(flags, (log) =>
        log.export(async (line) => {
          if (failure) throw failure;
          if (!file.write(`${line}\n`)) await once(file, 'drain');
        }, filter),
      ).finally(async () => {
        file.end();
        if (!file.closed) await once(file, 'close').catch(() => undefined);
      });
      if (failure) io.fail(`cannot write ${flags.out}: ${failure.message}`);
      io.out(`exported ${n} audit record${n === 1 ? '' : 's'} to ${flags.out}`);
      setExit(0);
    });

  audit
    .command('verify')
    .description('Check the chain, the head and (with --keys) every MAC; exit 0 when intact, 1 when tampered with')
    .option('--keys <dir>', 'directory of writer key files (*.json: { "writer": ..., "audit": { "kid": ..., "secret": <base64> } })')
    .option('--require-mac', 'with --keys: also fail records from writers that have no key file')
    .option('--file <jsonl>', 'verify an export instead of Redis (a cut end of the log cannot be detected)')
    .option('--json', 'print the report as JSON')
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { keys?: string; requireMac?: boolean; file?: string; json?: boolean }) => {
      if (flags.requireMac && flags.keys === undefined) io.fail('--require-mac needs --keys <dir>');
      let options: VerifyOptions = {};
      let keysNote = '';
      if (flags.keys !== undefined) {
        try {
          const loaded = await loadAuditKeys(flags.keys);
          options = { keys: loaded.keys, requireMac: flags.requireMac === true };
          keysNote = `with ${loaded.count} key${loaded.count === 1 ? '' : 's'} of ${loaded.writers} writer${loaded.writers === 1 ? '' : 's'}`;
        } catch (error) {
          if (error instanceof AuditKeyError) io.fail(error.message);
          throw error;
        }
      }
      let report: VerifyReport;
      let source: string;
      if (flags.file !== undefined) {
        const path = flags.file;
        const input = createReadStream(path, 'utf8');
        const opened = once(input, 'open').then(
          () => undefined,
          (error: Error) => error,
        );
        const error = await opened;
        if (error) io.fail(`cannot read ${path}: ${error.message}`);
        report = await verifyExport(createInterface({ input, crlfDelay: Infinity }), options);
        source = path;
      } else {
        report = await withLog(flags, (log) => log.verify(options));
        source = `${redactUrl(flags.redis)} prefix '${flags.prefix}'`;
      }
      if (flags.json) io.out(JSON.stringify(report, null, 2));
      else printReport(report, io, source, keysNote);
      setExit(report.ok ? 0 : 1);
    });
}
