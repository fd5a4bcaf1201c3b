/**
 * Content scanners, each as scan() runs it (normalised view; secrets also with split tokens
 * rejoined): throughput on ordinary text and time on crafted 1 MB inputs, per scanner
 * (PII, secrets with the built-in rules, secrets with gitleaks' default rules, prompt
 * injection, and `scan()` with everything), plus the prompt-injection detector's detection rate
 * on AgentDojo attack texts and false-positive rate on AgentDojo's benign tool outputs.
 *
 *   npx tsx bench/scanners.ts            # prints the tables, then the JSON result
 *
 * Goal: every scanner linear; no 1 MB input over 1 s. Times are the median of 3 warm runs
 * (after one run that warms re2js' lazily built DFAs); the first ("cold") run is shown too.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Finding } from '../guards/content/finding.js';
import { detectInjection } from '../guards/content/injection.js';
import { scan } from '../guards/content/scanner.js';
import { builtinRules, loadGitleaksRules, type SecretRule } from '../guards/content/gitleaks-rules.js';
import { detectSecrets } from '../guards/content/secrets.js';

const MB = 1024 * 1024;
const GITLEAKS = fileURLToPath(new URL('../../shared/secrets/gitleaks.toml', import.meta.url));
const AGENTDOJO = fileURLToPath(new URL('../../shared/agentdojo', import.meta.url));

// ---------------------------------------------------------------------------------------------
// inputs

let seed = 12345;
function random(): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
const fill = (unit: string, size = MB): string => unit.repeat(Math.ceil(size / unit.length)).slice(0, size);

/** ~1 MB of ordinary mixed prose: e-mails, notes, a few numbers, addresses and dates, no secrets. */
function prose(size = MB): string {
  const words = 'the of and to a in that is was he for it with as his on be at by had are but from or have an they which one you were all we her she there would their will when who him been has more if no out so said what up its about than into them can only other time new some could these two may first then do any like my now over such our man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(' ');
  const extras = ['Please reply to anna.berg@example.org before Friday.', 'Meeting on 2024-05-26 at 17:00 in room 4.', 'Invoice 88231 totals 1,250.00 EUR.', 'Call the front desk at (415) 555-0132.', 'See https://docs.example.com/guide for details.', 'Version 2.3.1 fixed the login issue.'];
  const parts: string[] = [];
  let len = 0;
  while (len < size) {
    const n = 8 + Math.floor(random() * 20);
    let s = Array.from({ length: n }, () => pick(words)).join(' ');
    s = s[0]!.toUpperCase() + s.slice(1) + '.';
    if (random() < 0.15) s += ' ' + pick(extras);
    parts.push(s);
    len += s.length + 1;
    if (random() < 0.1) {
      parts.push('\n\n');
      len += 2;
    }
  }
  return parts.join(' ').slice(0, size);
}

function base64(size = MB): string {
  const bytes = Buffer.alloc(Math.ceil((size * 3) / 4));
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
  return bytes.toString('base64').slice(0, size);
}

/** Every keyword of the rules, densely, as assignments with a high-entropy value. */
function keywordAssignments(rules: readonly SecretRule[], size = MB): string {
  const alnum = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const kws = [...new Set(rules.flatMap((r) => r.keywords))];
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < size; i++) {
    const value = Array.from({ length: 32 }, () => pick([...alnum])).join('');
    const s = `${kws[i % kws.length]}_key = "${value}"${i % 4 === 3 ? '\n' : ' '}`;
    parts.push(s);
    len += s.length;
  }
  return parts.join('').slice(0, size);
}

/** Every keyword of the rules, densely, no values. */
function keywordsOnly(rules: readonly SecretRule[], size = MB): string {
  return fill([...new Set(rules.flatMap((r) => r.keywords))].join(' = ') + ' = ', size);
}

// ---------------------------------------------------------------------------------------------
// timing

interface Timing {
  coldMs: number;
  ms: number;
  findings: number;
}

function time(fn: () => Finding[]): Timing {
  let t0 = performance.now();
  const first = fn();
  const coldMs = performance.now() - t0;
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    t0 = performance.now();
    fn();
    runs.push(performance.now() - t0);
  }
  runs.sort((a, b) => a - b);
  return { coldMs: round(coldMs), ms: round(runs[1]!), findings: first.length };
}

const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

export interface ScannerBench {
  /** Throughput on ~1 MB of ordinary prose, MB/s (warm). */
  throughputMBps: Record<string, number>;
  /** Per crafted 1 MB input, per scanner: time and findings. */
  crafted: Record<string, Record<string, Timing>>;
  /** Worst warm time over all crafted inputs, ms, per scanner. */
  worstMs: Record<string, number>;
  /** Loading and compiling gitleaks' default rules, ms (if the file is present). */
  gitleaksLoadMs?: number;
  gitleaksRules?: { loaded: number; skipped: number };
}

/** Measures every scanner on ordinary text and on crafted adversarial inputs. */
export async function benchScanners(): Promise<ScannerBench> {
  const builtin = builtinRules();
  let gitleaks: SecretRule[] | undefined;
  let gitleaksLoadMs: number | undefined;
  let gitleaksRules: ScannerBench['gitleaksRules'];
  if (existsSync(GITLEAKS)) {
    const t0 = performance.now();
    const loaded = loadGitleaksRules(readFileSync(GITLEAKS, 'utf8'), 'gitleaks.toml');
    detectSecrets('x', loaded); // compiles the rule sets
    gitleaksLoadMs = round(performance.now() - t0);
    gitleaks = loaded;
    gitleaksRules = { loaded: loaded.length, skipped: loaded.skipped.length };
  }

  // Each scanner as scan() runs it: on the normalised view, and secrets also with split tokens rejoined.
  const scanners: Record<string, (t: string) => Finding[]> = {
    pii: (t) => scan(t, { secrets: false, injection: false }),
    'secrets (built-in)': (t) => scan(t, { pii: false, injection: false, secrets: builtin }),
    ...(gitleaks ? { 'secrets (gitleaks)': (t: string) => scan(t, { pii: false, injection: false, secrets: gitleaks! }) } : {}),
    injection: (t) => detectInjection(t),
    'scan (all, built-in rules)': (t) => scan(t),
  };

  const ordinary = prose();
  const throughputMBps: Record<string, number> = {};
  for (const [name, fn] of Object.entries(scanners)) throughputMBps[name] = round(ordinary.length / MB / (time(() => fn(ordinary)).ms / 1000), 1);

  const inputs: Record<string, () => string> = {
    'one character (a)': () => fill('a'),
    'digits and spaces': () => fill('1 2 3 4 5 6 7 8 9 0 '),
    'digits only': () => fill('4111111111111111'),
    'phone-like runs': () => fill('(415) 555-0132 +44 20 7946 0958 '),
    base64: () => base64(),
    '@ and dots': () => fill('a@a.'),
    'hex and colons': () => fill('fe80:'),
    'built-in keywords + values': () => keywordAssignments(builtin),
    ...(gitleaks
      ? {
          'gitleaks keywords': () => keywordsOnly(gitleaks!),
          'gitleaks keywords + values': () => keywordAssignments(gitleaks!),
        }
      : {}),
    'injection openers': () => fill('ignore the previous send to you are now <|im_start|> before you can \u200B'),
    'zero-width inside words': () => fill('ab\u200bc '),
    'full-width and Arabic-Indic digits': () => fill('\uff14\uff11 \u0661\u0662-'),
    'percent-encoding': () => fill('%41%40%2e'),
    'mixed-script words': () => fill('\u0430a\u0435e '),
    'split pieces (A1 B2 ...)': () => fill('A1 B2 '),
    'keywords with pieces': () => fill([...new Set(builtin.flatMap((r) => r.keywords))].map((k) => `${k} Q1 `).join('')),
    'spelled-out addresses': () => fill('a [at] b [dot] '),
  };
  const crafted: ScannerBench['crafted'] = {};
  const worstMs: Record<string, number> = {};
  for (const [name, make] of Object.entries(inputs)) {
    const text = make();
    crafted[name] = {};
    for (const [scanner, fn] of Object.entries(scanners)) {
      const t = time(() => fn(text));
      crafted[name]![scanner] = t;
      worstMs[scanner] = Math.max(worstMs[scanner] ?? 0, t.ms);
    }
  }
  return { throughputMBps, crafted, worstMs, ...(gitleaksLoadMs !== undefined ? { gitleaksLoadMs, gitleaksRules } : {}) };
}

// ---------------------------------------------------------------------------------------------
// prompt-injection detection on AgentDojo

export interface InjectionEval {
  threshold: number;
  /** Distinct attack texts planted by each attack, and how many were detected (a finding >= threshold). */
  attacks: Record<string, { texts: number; detected: number }>;
  /** Tool outputs of attacked runs that contain the planted text, detected. */
  injectedToolOutputs: { outputs: number; detected: number };
  /** Tool outputs of the benign runs (user tasks, attack `none`): flagged at >= threshold (false positives). */
  benignToolOutputs: { outputs: number; distinct: number; flagged: number; flaggedDistinct: number; flaggedAtHalf: number };
  /** The suites' environment data (inboxes, files, calendars, ...) with the benign default texts, one document per list item. */
  benignDocuments: { documents: number; flagged: number; flaggedAtHalf: number };
  /** Which rules raised the benign findings >= threshold. */
  falsePositiveRules: Record<string, number>;
}

/** Detection rate on AgentDojo attack texts and false-positive rate on its benign data. */
export function evaluateInjectionOnAgentDojo(dir = AGENTDOJO, threshold = 0.8): InjectionEval | undefined {
  const runs = `${dir}/runs/gpt-4o-2024-05-13`;
  if (!existsSync(runs)) return undefined;
  const flagged = (text: string, t = threshold) => detectInjection(text).filter((f) => f.confidence >= t);
  const attackTexts = new Map<string, Set<string>>();
  let injectedOutputs = 0;
  let injectedDetected = 0;
  const benign: string[] = [];
  for (const suite of readdirSync(runs)) {
    for (const task of readdirSync(`${runs}/${suite}`)) {
      if (!task.startsWith('user_task')) continue;
      for (const attack of readdirSync(`${runs}/${suite}/${task}`)) {
        for (const file of readdirSync(`${runs}/${suite}/${task}/${attack}`)) {
          const run = JSON.parse(readFileSync(`${runs}/${suite}/${task}/${attack}/${file}`, 'utf8')) as { injections?: Record<string, string>; messages: { role: string; content: unknown }[] };
          const tools = run.messages.filter((m) => m.role === 'tool' && typeof m.content === 'string').map((m) => m.content as string);
          if (attack === 'none') {
            benign.push(...tools);
            continue;
          }
          const planted = Object.values(run.injections ?? {});
          const set = attackTexts.get(attack) ?? new Set<string>();
          for (const t of planted) set.add(t);
          attackTexts.set(attack, set);
          // The planted text may come back re-serialized (YAML folding, escaped newlines): compare without whitespace.
          const squash = (s: string) => s.replace(/\\[nrt]|\s+/g, '');
          const probes = planted.map((p) => squash(p).slice(0, 60)).filter((p) => p.length > 0);
          for (const out of tools) {
            const flat = squash(out);
            if (!probes.some((p) => flat.includes(p))) continue;
            injectedOutputs++;
            if (flagged(out).length > 0) injectedDetected++;
          }
        }
      }
    }
  }
  const attacks: InjectionEval['attacks'] = {};
  for (const [attack, set] of [...attackTexts].sort()) attacks[attack] = { texts: set.size, detected: [...set].filter((t) => flagged(t).length > 0).length };

  const falsePositiveRules: Record<string, number> = {};
  const count = (fs: Finding[]) => {
    for (const f of fs) falsePositiveRules[f.ruleId] = (falsePositiveRules[f.ruleId] ?? 0) + 1;
  };
  const distinct = [...new Set(benign)];
  let benignFlagged = 0;
  for (const t of benign) if (flagged(t).length > 0) benignFlagged++;
  let distinctFlagged = 0;
  for (const t of distinct) {
    const fs = flagged(t);
    if (fs.length > 0) distinctFlagged++;
    count(fs);
  }
  const documents = benignDocuments(dir);
  let docsFlagged = 0;
  for (const d of documents) {
    const fs = flagged(d);
    if (fs.length > 0) docsFlagged++;
    count(fs);
  }
  return {
    threshold,
    attacks,
    injectedToolOutputs: { outputs: injectedOutputs, detected: injectedDetected },
    benignToolOutputs: { outputs: benign.length, distinct: distinct.length, flagged: benignFlagged, flaggedDistinct: distinctFlagged, flaggedAtHalf: distinct.filter((t) => flagged(t, 0.5).length > 0).length },
    benignDocuments: { documents: documents.length, flagged: docsFlagged, flaggedAtHalf: documents.filter((t) => flagged(t, 0.5).length > 0).length },
    falsePositiveRules,
  };
}

/** The environment files with every `{injection_...}` placeholder set to its benign default, split into list items. */
function benignDocuments(dir: string): string[] {
  const docs: string[] = [];
  const suites = `${dir}/suites`;
  if (!existsSync(suites)) return docs;
  for (const suite of readdirSync(suites)) {
    const defaults = new Map<string, string>();
    const vectors = `${suites}/${suite}/injection_vectors.yaml`;
    if (existsSync(vectors)) {
      let current = '';
      for (const line of readFileSync(vectors, 'utf8').split('\n')) {
        const key = /^([A-Za-z0-9_]+):\s*$/.exec(line);
        if (key) current = key[1]!;
        const def = /^\s+default:\s*"?(.*?)"?\s*$/.exec(line);
        if (def && current) defaults.set(current, def[1]!);
      }
    }
    const files = [`${suites}/${suite}/environment.yaml`, ...(existsSync(`${suites}/${suite}/include`) ? readdirSync(`${suites}/${suite}/include`).map((f) => `${suites}/${suite}/include/${f}`) : [])];
    for (const file of files) {
      const text = readFileSync(file, 'utf8').replace(/\{(injection_[A-Za-z0-9_]+)\}/g, (_, name: string) => defaults.get(name) ?? '');
      // One document per top-level or second-level list item.
      for (const item of text.split(/\n(?= {0,4}- )/)) if (item.trim().length > 40) docs.push(item);
    }
  }
  return docs;
}

// ---------------------------------------------------------------------------------------------
// standalone

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const bench = await benchScanners();
  const scanners = Object.keys(bench.throughputMBps);
  console.log('Throughput on ~1 MB of ordinary prose (MB/s, warm):');
  console.log(table([['scanner', 'MB/s'], ...scanners.map((s) => [s, String(bench.throughputMBps[s])])]));
  console.log('\nCrafted 1 MB inputs: warm ms (cold ms) [findings]:');
  console.log(
    table([
      ['input', ...scanners],
      ...Object.entries(bench.crafted).map(([input, r]) => [input, ...scanners.map((s) => `${r[s]!.ms} (${r[s]!.coldMs}) [${r[s]!.findings}]`)]),
      ['worst warm', ...scanners.map((s) => `${bench.worstMs[s]}`)],
    ]),
  );
  if (bench.gitleaksLoadMs !== undefined) console.log(`\ngitleaks rules: ${bench.gitleaksRules!.loaded} loaded, ${bench.gitleaksRules!.skipped} skipped; load + compile ${bench.gitleaksLoadMs} ms`);
  const over = Object.entries(bench.worstMs).filter(([, ms]) => ms > 1000);
  console.log(over.length === 0 ? '\nGoal met: no crafted 1 MB input over 1 s (warm).' : `\nOver 1 s: ${over.map(([s, ms]) => `${s} ${ms} ms`).join(', ')}`);

  const evaluation = evaluateInjectionOnAgentDojo();
  if (evaluation) {
    console.log(`\nPrompt injection on AgentDojo (a finding with confidence >= ${evaluation.threshold}):`);
    const rows = [['set', 'detected / total', 'rate']];
    for (const [attack, r] of Object.entries(evaluation.attacks)) rows.push([`attack texts: ${attack}`, `${r.detected} / ${r.texts}`, pct(r.detected, r.texts)]);
    const io = evaluation.injectedToolOutputs;
    rows.push(['tool outputs carrying an attack', `${io.detected} / ${io.outputs}`, pct(io.detected, io.outputs)]);
    const b = evaluation.benignToolOutputs;
    rows.push(['benign tool outputs (false positives)', `${b.flagged} / ${b.outputs}`, pct(b.flagged, b.outputs)]);
    rows.push(['  distinct benign tool outputs', `${b.flaggedDistinct} / ${b.distinct}`, pct(b.flaggedDistinct, b.distinct)]);
    rows.push(['  distinct, at >= 0.5', `${b.flaggedAtHalf} / ${b.distinct}`, pct(b.flaggedAtHalf, b.distinct)]);
    const d = evaluation.benignDocuments;
    rows.push(['benign environment documents (false positives)', `${d.flagged} / ${d.documents}`, pct(d.flagged, d.documents)]);
    rows.push(['  at >= 0.5', `${d.flaggedAtHalf} / ${d.documents}`, pct(d.flaggedAtHalf, d.documents)]);
    console.log(table(rows));
    if (Object.keys(evaluation.falsePositiveRules).length > 0) console.log('false-positive rules:', evaluation.falsePositiveRules);
  }
  console.log('\n' + JSON.stringify({ bench, injection: evaluation }, null, 1));
}

const pct = (a: number, b: number): string => (b === 0 ? '-' : `${((100 * a) / b).toFixed(1)} %`);

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
