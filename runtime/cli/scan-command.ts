/**
 * `palisade scan [FILE|-]`: PII, secrets and prompt-injection signals in a file or stdin, for a
 * terminal or CI.
 *
 * Usage:
 *   palisade scan notes.txt                  # one line per finding
 *   cat reply.txt | palisade scan --redact   # the text with findings replaced by [REDACTED:<kind>]
 *   palisade scan dump.log --json --secrets-rules .gitleaks.toml --no-injection
 *
 * Options:
 *   --json                  print one JSON object (below) instead of text
 *   --redact                also print the redacted text
 *   --secrets-rules <file>  secret rules in gitleaks TOML format instead of the built-in ones
 *                           (rules that do not compile are skipped with a warning on stderr)
 *   --no-pii, --no-secrets, --no-injection   turn a detector off
 *   --regions <CC,...>      regions of phone numbers without a + prefix (default: inferred)
 *   --min-confidence <x>    report only findings at least this confident (0..1, default 0)
 *   --max-bytes <n>         scan at most n bytes of UTF-8 (default 1048576); the rest is reported
 *                           as one finding of kind 'truncated'
 *
 * Exit codes: 0 no findings; 1 findings; 2 error (unreadable file, bad rules file, bad option).
 *
 * Text output: one line per finding, five fields separated by a space:
 *   <type> <kind> <start> <end> <ruleId>
 * e.g. `secret github-token 120 160 secret.github-token`. With --redact, the findings go to
 * stderr and the redacted text to stdout, so `palisade scan --redact < in > out` writes a clean
 * file. The matched text itself is never printed (a CI log must not leak the secret it found).
 *
 * JSON output (--json), version 1, one object on stdout:
 *
 *   {
 *     "version": 1,                  // this format; a breaking change bumps it
 *     "bytes": 5120,                 // size of the input in bytes (UTF-8)
 *     "findings": [                  // sorted by start, then longest first
 *       {
 *         "type": "secret",          // "pii" | "secret" | "injection"
 *         "kind": "github-token",    // pii: email, phone, credit_card, iban, us_ssn, ip_address;
 *                                    // secret: the rule id; injection: instruction, role_marker,
 *                                    // hidden_unicode; any type: truncated (not scanned)
 *         "start": 120,              // offsets in the text as UTF-16 code units (JavaScript
 *         "end": 160,                //   string indexes), end exclusive
 *         "line": 4,                 // 1-based line of start
 *         "column": 17,              // 1-based column of start, in UTF-16 code units
 *         "ruleId": "secret.github-token",
 *         "category": "credentials", // label category: pii, financial, credentials, injection, unscanned
 *         "confidence": 0.95         // 0..1
 *       }
 *     ],
 *     "redacted": "...",             // only with --redact: the text, findings replaced
 *     "skippedRules": [              // only with --secrets-rules, when some rules were skipped
 *       { "id": "pkcs12-file", "reason": "path-only rule: not applicable to content scanning" }
 *     ]
 *   }
 *
 * Fields may be added to version 1; none is removed or changes meaning.
 */
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Finding } from '../../guards/content/finding.js';
import { DEFAULT_MAX_BYTES, redact, scan, type ScanOptions } from '../../guards/content/scanner.js';
import { loadGitleaksRules, type SkippedRule } from '../../guards/content/gitleaks-rules.js';

export const SCAN_EXIT = { clean: 0, findings: 1, error: 2 } as const;

export interface ScanCommandIO {
  /** Receives the exit code (default: `process.exitCode`). */
  setExit?: (code: number) => void;
  /** Reads all of stdin (default: process.stdin). */
  readStdin?: () => Promise<string>;
  /** Writes to stdout / stderr (default: the process streams, waiting until written). */
  out?: (text: string) => void | Promise<void>;
  err?: (text: string) => void | Promise<void>;
}

interface ScanFlags {
  json?: boolean;
  redact?: boolean;
  secretsRules?: string;
  pii: boolean;
  secrets: boolean;
  injection: boolean;
  regions?: string;
  minConfidence: number;
  maxBytes: number;
}

/** The JSON document `palisade scan --json` prints (see the module comment). */
export interface ScanReportJson {
  version: 1;
  bytes: number;
  findings: (Pick<Finding, 'type' | 'kind' | 'start' | 'end' | 'ruleId' | 'category' | 'confidence'> & { line: number; column: number })[];
  redacted?: string;
  skippedRules?: { id: string; reason: string }[];
}

class ScanInputError extends Error {}

const write = (stream: NodeJS.WriteStream) => (text: string) => new Promise<void>((resolve, reject) => stream.write(text, (e) => (e ? reject(e) : resolve())));

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

function confidence(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError('expected a number from 0 to 1');
  return n;
}

function byteCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number of bytes');
  return n;
}

/**
 * Default exit-code sink: sets `process.exitCode`, and keeps it if the program later calls
 * `process.exit(0)` (as a CLI whose main returns 0 for commands it does not track would).
 */
function exitWith(code: number): void {
  process.exitCode = code;
  if (code !== 0)
    process.once('exit', () => {
      if (!process.exitCode) process.exitCode = code;
    });
}

/** Adds `scan` to a commander program. Pass `setExit` (or an IO object) to receive the exit code. */
export function registerScanCommand(program: Command, io: ScanCommandIO | ((code: number) => void) = {}): void {
  const defaults: Required<ScanCommandIO> = {
    setExit: exitWith,
    readStdin: () => (process.stdin.isTTY ? Promise.reject(new ScanInputError('nothing to scan: give a FILE, or pipe text to stdin')) : readAll(process.stdin)),
    out: write(process.stdout),
    err: write(process.stderr),
  };
  const { setExit, readStdin, out, err } = { ...defaults, ...(typeof io === 'function' ? { setExit: io } : io) };
  program
    .command('scan')
    .description('Find PII, secrets and prompt-injection signals in a file or stdin (exit 0: none, 1: found, 2: error)')
    .argument('[file]', "file to scan; '-' or nothing: stdin")
    .option('--json', 'print a JSON report (format: version 1, see runtime/cli/scan-command.ts)')
    .option('--redact', 'print the text with each finding replaced by [REDACTED:<kind>]')
    .option('--secrets-rules <file>', 'secret rules in gitleaks TOML format (default: built-in rules)')
    .option('--no-pii', 'do not look for PII')
    .option('--no-secrets', 'do not look for secrets')
    .option('--no-injection', 'do not look for prompt-injection signals')
    .option('--regions <CC,...>', 'regions of phone numbers written without a + prefix, most likely first (default: inferred from the text)')
    .addOption(new Option('--min-confidence <x>', 'report only findings at least this confident (0..1)').argParser(confidence).default(0))
    .addOption(new Option('--max-bytes <n>', 'scan at most this many bytes; the rest is reported as truncated').argParser(byteCount).default(DEFAULT_MAX_BYTES))
    .addHelpText('after', '\nExit codes:\n  0    no findings\n  1    findings\n  2    error (unreadable input or rules file, bad option)')
    .action(async (file: string | undefined, flags: ScanFlags) => {
      try {
        setExit(await runScan(file, flags, { readStdin, out, err }));
      } catch (e) {
        await err(`palisade scan: ${e instanceof Error ? e.message : String(e)}\n`);
        setExit(SCAN_EXIT.error);
      }
    });
}

async function runScan(file: string | undefined, flags: ScanFlags, io: Required<Pick<ScanCommandIO, 'readStdin' | 'out' | 'err'>>): Promise<number> {
  let text: string;
  if (file === undefined || file === '-') {
    text = await io.readStdin();
  } else {
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new ScanInputError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }

  let skipped: SkippedRule[] = [];
  let secrets: ScanOptions['secrets'] = flags.secrets;
  if (flags.secrets && flags.secretsRules !== undefined) {
    let toml: string;
    try {
      toml = await readFile(flags.secretsRules, 'utf8');
    } catch (e) {
      throw new ScanInputError(`cannot read ${flags.secretsRules}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const rules = loadGitleaksRules(toml, flags.secretsRules);
    skipped = rules.skipped;
    for (const s of skipped) await io.err(`palisade scan: ${flags.secretsRules}: skipped rule ${s.id}: ${s.reason}\n`);
    if (rules.length === 0) throw new ScanInputError(`${flags.secretsRules}: no usable rule`);
    secrets = rules;
  }

  const findings = scan(text, {
    pii: flags.pii ? (flags.regions === undefined ? {} : { regions: flags.regions.split(',').map((r) => r.trim()) }) : false,
    secrets,
    injection: flags.injection,
    maxBytes: flags.maxBytes,
  }).filter((f) => f.confidence >= flags.minConfidence);
  const redacted = flags.redact ? redact(text, findings) : undefined;

  if (flags.json) {
    const positions = linesAndColumns(text, findings);
    const report: ScanReportJson = {
      version: 1,
      bytes: Buffer.byteLength(text, 'utf8'),
      findings: findings.map((f, i) => ({ type: f.type, kind: f.kind, start: f.start, end: f.end, line: positions[i]![0], column: positions[i]![1], ruleId: f.ruleId, category: f.category, confidence: f.confidence })),
      ...(redacted !== undefined ? { redacted } : {}),
      ...(flags.secretsRules !== undefined && skipped.length > 0 ? { skippedRules: skipped.map((s) => ({ id: s.id, reason: s.reason })) } : {}),
    };
    await io.out(`${JSON.stringify(report)}\n`);
  } else {
    const lines = findings.map((f) => `${f.type} ${f.kind} ${f.start} ${f.end} ${f.ruleId}\n`).join('');
    if (redacted !== undefined) {
      if (lines) await io.err(lines);
      await io.out(redacted);
    } else if (lines) await io.out(lines);
  }
  return findings.length > 0 ? SCAN_EXIT.findings : SCAN_EXIT.clean;
}

/** 1-based line and column (UTF-16) of each finding's start; findings are sorted by start. */
function linesAndColumns(text: string, findings: readonly Finding[]): [number, number][] {
  const out: [number, number][] = [];
  let line = 1;
  let lineStart = 0;
  let pos = 0;
  for (const f of findings) {
    const target = Math.min(f.start, text.length);
    if (target < pos) {
      // Not sorted (should not happen): count again from the start.
      line = 1;
      lineStart = 0;
      pos = 0;
    }
    for (; pos < target; pos++) {
      if (text.charCodeAt(pos) === 10) {
        line++;
        lineStart = pos + 1;
      }
    }
    out.push([line, target - lineStart + 1]);
  }
  return out;
}
