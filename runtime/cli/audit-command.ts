/**
 * `palisade audit tail | export | verify | keys | anchor`.
 *
 * `verify` proves who wrote every record and that none was cut, so by default it needs the writers' keys
 * (`--keys`: a folder of key files or audit.pub.json, formats in runtime/audit/audit-keys.ts) and the
 * anchors that pin the log's end outside Redis (`--anchors`). `--unanchored` and `--allow-unsigned` check
 * less, and say so loudly. `keys` writes audit.pub.json and the anchoring key; `anchor` takes an anchor.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { Cluster } from 'ioredis';
import { AnchorRefusedError, takeAnchor } from '../audit/anchoring.js';
import { FileAnchorStore, readAnchors, type AnchorSet } from '../audit/anchors.js';
import { AuditKeyError, loadAuditKeysOr, NO_KEYS_HINT, writeAuditKeys, type LoadedAuditKeys } from '../audit/audit-keys.js';
import { AuditLog } from '../audit/audit-log.js';
import type { AuditRecord } from '../audit/audit-record.js';
import { verifyExport, type VerifyOptions, type VerifyReport } from '../audit/chain-verifier.js';
import { createRedis, DEFAULT_REDIS_URL, masters, redactUrl, type RedisClient } from '../redis-url.js';
import { Cells, cellsFromEnv, DEFAULT_CLUSTER_CELLS } from '../stores/cells.js';
import { AuditLogs } from '../audit/audit-logs.js';

export interface AuditConnection {
  redis: RedisClient;
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

/** One cell's log, of a deployment of `cells` cells. */
interface CellLog {
  prefix: string;
  log: AuditLog;
  cell: number;
  cells: number;
}

interface ConnFlags {
  redis: string;
  prefix: string;
}


async function defaultConnect(flags: ConnFlags, fail: (message: string) => never): Promise<AuditConnection> {
  const redis = createRedis(flags.redis, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1 });
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

/** Audit chains (their heads) under `prefix` on every master whose log prefix is not one of `expected`. */
async function chainsOutside(redis: RedisClient, prefix: string, expected: ReadonlySet<string>): Promise<string[]> {
  const glob = `${prefix.replace(/[\\*?[\]]/g, (c) => `\\${c}`)}:*audit:head`;
  const found: string[] = [];
  for (const node of await masters(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', glob, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) if (!expected.has(key.slice(0, -':audit:head'.length))) found.push(key);
    } while (cursor !== '0');
  }
  return found.sort();
}

function cellNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a cell number (0, 1, …)');
  return n;
}

function count(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

// ---------------------------------------------------------------------------------------------
// Output

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
/** Field values come from agents and models: never let them drive the terminal, nor hide in it (zero-width, bidi controls). */
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

const plural = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;

function printReport(report: VerifyReport, io: AuditCommandIo, source: string, keysNote: string, unsignedAllowed: boolean): void {
  const head = report.head ? `, head seq ${report.head.seq} (${report.head.hash.slice(0, 12)}…)` : report.head === undefined ? ', head not known (an export)' : '';
  const anchor = report.anchor ? `, anchored at seq ${report.anchor.seq} ${new Date(report.anchor.at).toISOString()} (${plural(report.sinceAnchor ?? 0, 'record')} since)` : report.anchor === null ? ', no valid anchor yet' : ', NOT anchored';
  if (report.ok) {
    const auth = unsignedAllowed ? `, NOT AUTHENTICATED: ${plural(report.unsigned, 'record')} from writers without a key` : '';
    const vouched = report.vouched > 0 ? `, ${plural(report.vouched, 'record')} vouched for by a verified anchor` : '';
    io.out(`audit log intact: ${report.entries} entries${head}, ${plural(report.macsVerified, 'record')} authenticated ${keysNote}${vouched}${auth}${anchor} (${source})`);
    return;
  }
  io.out(`audit log TAMPERED: ${plural(report.problems.length, 'problem')} in ${report.entries} entries${head}${anchor} (${source})`);
  for (const p of report.problems) io.out(`  seq ${p.seq}${p.streamId ? ` [${p.streamId}]` : ''} ${p.problem}: ${safe(p.detail)}`);
}

// ---------------------------------------------------------------------------------------------
// Commands

/** `palisade audit tail | export | verify | keys | anchor`. Exit codes: 0 fine, 1 the log was tampered with (or is not proven intact), 2 bad usage or Redis unreachable. */
export function registerAuditCommands(program: Command, io: AuditCommandIo, setExit: (code: number) => void): void {
  const redisOption = (): Option => new Option('--redis <url>', 'Redis URL').default(process.env.REDIS_URL ?? DEFAULT_REDIS_URL, '$REDIS_URL or redis://127.0.0.1:6379');
  const prefixOption = (): Option => new Option('--prefix <prefix>', 'key prefix shared by workers and producers').default('palisade');

  const cellOption = (): Option => new Option('--cell <n>', "on a deployment of several cells (Redis Cluster): only this cell's log").argParser(cellNumber);
  const cellsOption = (): Option =>
    new Option('--cells <n>', `how many cells the deployment keeps, as its transports were set up (default $PALISADE_CELLS, else ${DEFAULT_CLUSTER_CELLS} with a cluster URL and 1 otherwise)`).argParser(count);

  /**
   * The logs the command works on: the deployment's one log or, with several cells, each cell's;
   * `--cell` or a run's id picks one, and `one` refuses to go on with several. The layout comes from the
   * operator, never from Redis: someone who can write Redis could otherwise point the command at logs of
   * their choosing. Redis's pinned count and the chains found there must agree with it.
   */
  const withLogs = async <T>(flags: ConnFlags & { cell?: number; run?: string; cells?: number }, one: boolean, body: (logs: CellLog[]) => Promise<T>): Promise<T> => {
    const conn = io.connect ? await io.connect(flags) : await defaultConnect(flags, io.fail);
    try {
      const clustered = conn.redis instanceof Cluster;
      let count: number;
      try {
        count = flags.cells ?? cellsFromEnv() ?? (clustered ? DEFAULT_CLUSTER_CELLS : 1);
      } catch (error) {
        io.fail(error instanceof Error ? error.message : String(error));
      }
      const cells = new Cells(flags.prefix, count, count > 1 || clustered);
      const pinned = await conn.redis.get(`${flags.prefix}:cells`);
      if (pinned !== null && pinned !== String(count)) {
        io.fail(`Redis says the deployment under '${flags.prefix}' keeps ${pinned} cells, but this command reads ${count} (--cells): give the count its transports were set up with; if that is ${count}, someone changed ${flags.prefix}:cells in Redis`);
      }
      const strays = await chainsOutside(conn.redis, flags.prefix, new Set(cells.all));
      if (strays.length > 0) io.fail(`audit chains under '${flags.prefix}' that a deployment of ${count} cell${count === 1 ? '' : 's'} does not keep: ${strays.slice(0, 5).join(', ')}${strays.length > 5 ? ', …' : ''} (the wrong --cells, or written into Redis by someone else)`);
      const logs = new AuditLogs(cells, { redis: conn.redis, writer: 'cli' }).all.map((l, cell) => ({ ...l, cell, cells: count }));
      if (flags.cell !== undefined && flags.cell >= count) io.fail(`--cell ${flags.cell}: the deployment under '${flags.prefix}' keeps ${count} cell${count === 1 ? '' : 's'} (0 to ${count - 1})`);
      const chosen = flags.cell !== undefined ? [logs[flags.cell]!] : flags.run !== undefined ? [logs[cells.of(flags.run)]!] : logs;
      if (one && chosen.length > 1) io.fail(`the deployment under '${flags.prefix}' keeps ${count} cells, each with its own audit log: pick one with --cell 0 to ${count - 1}, or a run with --run <id>`);
      return await body(chosen);
    } finally {
      await conn.close();
    }
  };
  const withLog = <T>(flags: ConnFlags & { cell?: number; run?: string }, body: (log: AuditLog) => Promise<T>): Promise<T> => withLogs(flags, true, ([only]) => body(only!.log));

  const audit = program.command('audit').description('Read, export and verify the tamper-evident audit log');

  audit
    .command('tail')
    .description('Print the last audit records, optionally of one run, and follow new ones')
    .option('-n, --lines <n>', 'how many records', count, 20)
    .option('-f, --follow', 'keep printing records as they are appended (Ctrl-C to stop)')
    .option('--run <id>', 'only the records of this run')
    .option('--json', 'one JSON record per line')
    .addOption(cellOption())
    .addOption(cellsOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { lines: number; follow?: boolean; run?: string; json?: boolean; cell?: number }) => {
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
    .description('Write the audit log as JSONL, one record per line with its hashes and signatures, for archiving or external verification')
    .option('--run <id>', 'only the records of this run (their chain links cannot then be checked, nor signatures that records of other runs carry for them)')
    .option('--out <file>', 'write to this file instead of stdout')
    .addOption(cellOption())
    .addOption(cellsOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { run?: string; out?: string; cell?: number }) => {
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

  const keysFrom = (path: string): Promise<LoadedAuditKeys> => loadAuditKeysOr(path, io.fail);
  const anchorsFrom = async (files: string[], keys: LoadedAuditKeys | undefined, prefix: string): Promise<AnchorSet> => {
    if (!keys || keys.anchorKeys.size === 0) io.fail('--anchors needs the anchoring public key: --keys <dir or audit.pub.json> holding audit.pub.json or anchor.key.json (palisade audit keys writes them)');
    for (const file of files) {
      const info = await stat(file).catch((error: Error) => io.fail(`cannot read ${file}: ${error.message}`));
      if (!info.isFile()) io.fail(`cannot read ${file}: not a file`);
    }
    return readAnchors(files.map((f) => new FileAnchorStore(f)), keys.anchorKeys, prefix);
  };

  audit
    .command('verify')
    .description("Check the chain, that the configured writer signed every record, and the anchors; exit 0 when intact, 1 when not")
    .option('--keys <path>', 'the writers\' keys: a folder of key files, or audit.pub.json (from palisade audit keys)')
    .option('--anchors <file>', 'anchor file (JSONL from palisade serve --anchor-file or palisade audit anchor); repeatable', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--unanchored', 'check without anchors: records cut from the end with the head moved back then go unnoticed')
    .option('--allow-unsigned', 'a development log written without keys: records of writers without a key pass, and NOTHING IS PROVEN about who wrote them')
    .addOption(new Option('--require-mac', 'the default now').hideHelp())
    .option('--file <jsonl>', 'verify an export instead of Redis (give --anchors: without them a cut end cannot be detected)')
    .option('--json', 'print the report as JSON')
    .addOption(cellOption())
    .addOption(cellsOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { keys?: string; anchors: string[]; unanchored?: boolean; allowUnsigned?: boolean; file?: string; json?: boolean; cell?: number }) => {
      const unsignedOk = flags.allowUnsigned === true;
      if (flags.keys === undefined && !unsignedOk) {
        io.fail(`verify needs the writers' keys: --keys <dir> (${NO_KEYS_HINT}); a development log written without keys: --allow-unsigned, which proves nothing`);
      }
      const keys = flags.keys !== undefined ? await keysFrom(flags.keys) : undefined;
      if (keys && keys.count === 0 && !unsignedOk) io.fail(`no audit keys in ${flags.keys}: ${NO_KEYS_HINT}`);
      if (flags.anchors.length === 0 && !flags.unanchored && !unsignedOk) {
        io.fail('verify needs the anchors that pin the end of the log outside Redis: --anchors <file> (palisade serve --anchor-file, palisade audit anchor); --unanchored checks without them, and then records cut from the end go unnoticed');
      }
      const warnings: string[] = [];
      if (unsignedOk) warnings.push('WARNING: --allow-unsigned: records of writers without a key pass unchecked. NOTHING IS PROVEN about who wrote them: anyone who can write Redis could have written or rewritten them.');
      if (flags.anchors.length === 0) warnings.push('WARNING: no anchors: records cut from the end of the log, with the head moved back, go unnoticed.');
      const base: VerifyOptions = {
        ...(keys ? { keys: keys.secrets, publicKeys: keys.publicKeys } : {}),
        ...(unsignedOk ? { allowUnsigned: true } : {}),
      };
      const keysNote = keys ? `with ${plural(keys.count, 'key')} of ${plural(keys.writers, 'writer')}` : 'with no keys';
      const results: Array<{ report: VerifyReport; source: string }> = [];
      if (flags.file !== undefined) {
        const path = flags.file;
        const input = createReadStream(path, 'utf8');
        const error = await once(input, 'open').then(
          () => undefined,
          (e: Error) => e,
        );
        if (error) io.fail(`cannot read ${path}: ${error.message}`);
        const anchors = flags.anchors.length > 0 ? { anchors: await anchorsFrom(flags.anchors, keys, flags.prefix) } : {};
        results.push({ report: await verifyExport(createInterface({ input, crlfDelay: Infinity }), { ...base, ...anchors }), source: path });
      } else {
        await withLogs(flags, false, async (logs) => {
          for (const { prefix, log, cell, cells } of logs) {
            // With several cells each chain has its own anchor file beside the one named (anchors.cell-3.jsonl). A cell
            // that had no records when anchors were taken has none yet: no anchors for it, which a log with records fails.
            const files = cells > 1 ? flags.anchors.map((f) => new FileAnchorStore(f).forCell(cell).path).filter((f) => existsSync(f)) : flags.anchors;
            const anchors = flags.anchors.length > 0 ? { anchors: files.length > 0 ? await anchorsFrom(files, keys, prefix) : { anchors: [], problems: [] } } : {};
            results.push({ report: await log.verify({ ...base, ...anchors }), source: `${redactUrl(flags.redis)} prefix '${prefix}'` });
          }
        });
      }
      if (flags.json) io.out(JSON.stringify(results.length === 1 ? { ...results[0]!.report, warnings } : { logs: results.map(({ report, source }) => ({ source, ...report })), warnings }, null, 2));
      else for (const w of warnings) io.out(w);
      let fine = true;
      for (const { report, source } of results) {
        if (!flags.json) printReport(report, io, source, keysNote, unsignedOk);
        // Anchors were asked for but none holds: nothing pins the end of a log that has records, so it is not proven intact.
        const unpinned = report.anchor === null && report.entries > 0;
        if (unpinned) io.out(`NOT PROVEN: the anchor file holds no valid anchor for ${source}, so records cut from the end would go unnoticed; take one with palisade audit anchor`);
        fine &&= report.ok && !unpinned;
      }
      setExit(fine ? 0 : 1);
    });

  audit
    .command('keys')
    .description('Write <dir>/audit.pub.json (every writer\'s public key, for verifiers) and, if missing, <dir>/anchor.key.json (the anchoring key)')
    .requiredOption('--keys <dir>', 'the folder of key files from palisade keys generate')
    .option('--new-anchor-key', 'replace the anchoring key (the old public key stays listed, so its anchors still verify)')
    .action(async (flags: { keys: string; newAnchorKey?: boolean }) => {
      try {
        const written = await writeAuditKeys(flags.keys, { newAnchorKey: flags.newAnchorKey === true });
        io.out(`wrote ${written.publicFile}: ${plural(written.count, 'public key')} of ${plural(written.writers, 'writer')} and the anchoring keys`);
        if (written.anchorCreated) io.out(`wrote ${written.anchorFile}: the anchoring key`);
        io.out('Give audit.pub.json to whoever verifies (palisade serve --keys or --audit-keys, palisade audit verify --keys): it cannot sign anything.');
        io.out('Give anchor.key.json only to whoever anchors (palisade serve --anchor-file, or palisade audit anchor run from cron).');
      } catch (error) {
        if (error instanceof AuditKeyError) io.fail(error.message);
        throw error;
      }
      setExit(0);
    });

  audit
    .command('anchor')
    .description('Sign the head of the audit log and append it to an anchor file; exit 0 when anchored (or nothing new), 1 when the log is broken')
    .requiredOption('--keys <path>', 'a folder (or file) holding anchor.key.json, and the writers\' keys to check the records with')
    .requiredOption('--anchors <file>', 'the anchor file (JSONL) to append to')
    .option('--full', 'check the whole log against every anchor, not only what came since the last one (starts a line of verified anchors)')
    .addOption(cellOption())
    .addOption(cellsOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { keys: string; anchors: string; full?: boolean; cell?: number }) => {
      const keys = await keysFrom(flags.keys);
      const signer = keys.anchorSigner ?? io.fail(`no anchoring key in ${flags.keys}: palisade audit keys --keys <dir> creates anchor.key.json`);
      let fine = true;
      await withLogs(flags, false, async (logs) => {
        for (const { prefix, log, cell, cells } of logs) {
          // With several cells each chain has its own line of anchors, in a file beside the one named.
          const store = cells > 1 ? new FileAnchorStore(flags.anchors).forCell(cell) : new FileAnchorStore(flags.anchors);
          const which = cells > 1 ? ` (cell ${cell}, ${prefix})` : '';
          try {
            const result = await takeAnchor({ log, prefix, store, signer, anchorKeys: keys.anchorKeys, keys: keys.secrets, publicKeys: keys.publicKeys, full: flags.full === true });
            if ('skipped' in result) io.out(`no anchor taken${which}: ${result.skipped}`);
            else {
              const a = result.anchor;
              const why = a.verified ? 'verified: every record up to it is authenticated' : `NOT verified: ${result.report.problems.length > 0 ? `${plural(result.report.problems.length, 'record')} not authenticated (palisade audit verify says which)` : result.report.unsigned > 0 ? `${plural(result.report.unsigned, 'record')} of writers without a key` : result.report.writers === 0 ? 'no writer keys' : 'the anchor before it was not verified (--full checks the whole log)'}`;
              io.out(`anchored seq ${a.seq} (${a.hash.slice(0, 12)}…) at ${new Date(a.at).toISOString()} in ${store.path}${which}, having checked ${result.checked}: ${why}`);
            }
          } catch (error) {
            if (!(error instanceof AnchorRefusedError)) throw error;
            io.out(`no anchor taken${which}: ${safe(error.message)}`);
            for (const p of error.problems) io.out(`  seq ${p.seq}${p.streamId ? ` [${p.streamId}]` : ''} ${p.problem}: ${safe(p.detail)}`);
            fine = false;
          }
        }
      });
      setExit(fine ? 0 : 1);
    });
}
