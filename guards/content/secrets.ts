/**
 * Secret detection with rules in gitleaks' format.
 *
 * - `loadGitleaksRules(toml)` reads a gitleaks config: `[[rules]]` (id, regex, secretGroup,
 *   entropy, keywords, path, `[[rules.allowlists]]`), the global `[allowlist]` /
 *   `[[allowlists]]` (with `targetRules`), and `[extend] useDefault / disabledRules` (which here
 *   means palisade's built-in rules, not gitleaks' own defaults). A rule whose regex does not
 *   compile, or that has no regex (path-only rules), is skipped and listed in `.skipped`.
 * - Regexes are Go RE2 syntax. They run on re2js, a pure-JavaScript port of Go's regexp: linear
 *   time on any input, and it parses RE2 syntax itself (inline flags `(?i)`, `(?s)`, `(?m)`,
 *   `(?U)`, `(?i:...)`, POSIX classes, `\Q...\E`, `\z`), so patterns are passed through as written.
 * - Matching follows gitleaks: keywords are a case-insensitive prefilter; the secret is
 *   `secretGroup`, else the first non-empty capture group, else the whole match; `entropy` is a
 *   minimum Shannon entropy (bits per character) of the secret; rules whose id starts with
 *   `generic` also need a digit in the secret; an allowlist (regexes against the secret, the
 *   match or the line per `regexTarget`, stopwords, paths; `condition` OR/AND) drops a finding.
 *   A finding's span is the secret's span, so redaction removes the secret and keeps its name.
 * - Cost, linear in the text, never backtracking:
 *   1. the text is cut into windows of about 32 KiB at line breaks, overlapping by 8 KiB;
 *   2. per window, one Aho-Corasick pass finds which keywords occur (the prefilter);
 *   3. the candidate rules are tested together, 16 to a DFA (re2js `RE2Set`), which says which
 *      rules match somewhere in the window (no positions, fast);
 *   4. for each rule that matches, the window is narrowed down with DFA tests (1/8 at a time)
 *      to blocks of 128 characters plus a look-ahead of the rule's longest match; only there does
 *      the slower NFA find positions and capture groups. Rules whose matches can be longer than
 *      1 KiB (private keys, JWTs, some gitleaks rules) use a 256-character look-ahead, re-match a
 *      match cut at the block end over the whole window, and finally test the window with the
 *      found matches blanked out: if it still matches, the whole window is searched.
 *   Budgets: at most `maxFindings` findings (default 10 000) and 5 000 examined matches per rule
 *   and scan; past either, scanning stops and a finding of kind 'truncated' (category
 *   'unscanned') covers the rest, so a caller that redacts never lets unscanned text through.
 *   Like gitleaks' chunked reading, a match longer than the window overlap (8 KiB) that
 *   straddles a window boundary may be missed.
 */
import { RE2JS, RE2Set, type Matcher } from 're2js';
import { parse as parseToml } from 'smol-toml';
import { conf, type Finding } from './finding.js';
import { KeywordMatcher } from './keywords.js';
import { DEFAULT_SECRET_RULES_TOML } from './secret-rules.js';

export interface SecretAllowlist {
  description?: string;
  condition: 'OR' | 'AND';
  regexTarget: 'secret' | 'match' | 'line';
  regexes: RE2JS[];
  /** Lower-cased; a secret containing one is allowed. */
  stopwords: string[];
  paths: RE2JS[];
}

export interface SecretRule {
  id: string;
  description?: string;
  /** The RE2 source as written in the rules file. */
  pattern: string;
  regex: RE2JS;
  /** 0: the first non-empty capture group (or the whole match if none). */
  secretGroup: number;
  /** Minimum Shannon entropy of the secret, if set. */
  entropy?: number;
  /** Lower-cased prefilter keywords; empty: the rule always runs. */
  keywords: string[];
  /** The rule applies only to content whose path matches (gitleaks `path`). */
  path?: RE2JS;
  /** Own allowlists, then the global ones that target this rule. */
  allowlists: SecretAllowlist[];
  /** Confidence of this rule's findings. */
  confidence: number;
  /** Where the rule came from ('builtin' or the `source` given to the loader). */
  source: string;
  /**
   * The regex used to find match positions: `regex` without a leading lazy context prefix such
   * as gitleaks' `[\w.-]{0,50}?` (see `locatorFor`), else `regex` itself.
   */
  locator: RE2JS;
  /** The source of `locator`. */
  locatorPattern: string;
  /** Upper bound of a locator match's length in code points (Infinity: unbounded or unknown). */
  maxLength: number;
}

export interface SkippedRule {
  id: string;
  reason: string;
  source: string;
}

/**
 * What `loadGitleaksRules` returns: the usable rules (the array itself), the ones skipped with
 * why, and `rules`, the same array (for callers that destructure `{ rules, skipped }`).
 */
export type SecretRules = SecretRule[] & { skipped: SkippedRule[]; readonly rules: SecretRule[] };

export class SecretRulesError extends Error {}

// ---------------------------------------------------------------------------------------------
// loading

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

function strings(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${what} must be an array of strings`);
  return v as string[];
}

function compile(pattern: string, what: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

function loadAllowlist(t: Table, what: string): SecretAllowlist & { targetRules: string[] } {
  const condition = t.condition === undefined ? 'OR' : String(t.condition).toUpperCase();
  if (condition !== 'OR' && condition !== 'AND') throw new Error(`${what}: condition must be OR or AND`);
  const regexTarget = t.regexTarget === undefined ? 'secret' : String(t.regexTarget);
  if (regexTarget !== 'secret' && regexTarget !== 'match' && regexTarget !== 'line') throw new Error(`${what}: regexTarget must be secret, match or line`);
  return {
    ...(typeof t.description === 'string' ? { description: t.description } : {}),
    condition,
    regexTarget,
    regexes: strings(t.regexes, `${what}.regexes`).map((r, i) => compile(r, `${what}.regexes[${i}]`)),
    stopwords: strings(t.stopwords, `${what}.stopwords`).map((s) => s.toLowerCase()),
    paths: strings(t.paths, `${what}.paths`).map((r, i) => compile(r, `${what}.paths[${i}]`)),
    targetRules: strings(t.targetRules, `${what}.targetRules`),
  };
}

function allowlistTables(t: Table, single: string, multi: string): Table[] {
  const out: Table[] = [];
  if (isTable(t[single])) out.push(t[single]);
  const many = t[multi];
  if (Array.isArray(many)) for (const a of many) if (isTable(a)) out.push(a);
  return out;
}

/**
 * Parses a gitleaks TOML config into rules. Throws `SecretRulesError` only when the TOML itself
 * is unreadable (or a global allowlist is broken); a bad rule is skipped and listed in `.skipped`.
 */
export function loadGitleaksRules(tomlText: string, source = 'rules'): SecretRules {
  let doc: Table;
  try {
    doc = parseToml(tomlText) as Table;
  } catch (e) {
    throw new SecretRulesError(`${source}: not valid TOML: ${(e as Error).message.split('\n')[0]}`);
  }
  const skipped: SkippedRule[] = [];
  const rules: SecretRule[] = [];

  let globals: (SecretAllowlist & { targetRules: string[] })[];
  try {
    globals = allowlistTables(doc, 'allowlist', 'allowlists').map((t, i) => loadAllowlist(t, `allowlists[${i}]`));
  } catch (e) {
    throw new SecretRulesError(`${source}: global allowlist: ${(e as Error).message}`);
  }

  const rawRules = doc.rules === undefined ? [] : doc.rules;
  if (!Array.isArray(rawRules)) throw new SecretRulesError(`${source}: rules must be an array of tables ([[rules]])`);
  const seen = new Set<string>();
  rawRules.forEach((raw, index) => {
    const id = isTable(raw) && typeof raw.id === 'string' && raw.id !== '' ? raw.id : `rules[${index}]`;
    try {
      if (!isTable(raw)) throw new Error('not a table');
      if (seen.has(id)) throw new Error('duplicate id');
      if (typeof raw.regex !== 'string' || raw.regex === '') throw new Error(raw.path !== undefined ? 'path-only rule: not applicable to content scanning' : 'no regex');
      const regex = compile(raw.regex, 'regex');
      const secretGroup = raw.secretGroup === undefined ? 0 : Number(raw.secretGroup);
      if (!Number.isInteger(secretGroup) || secretGroup < 0) throw new Error('secretGroup must be a non-negative integer');
      if (secretGroup > regex.groupCount()) throw new Error(`secretGroup ${secretGroup} but the regex has ${regex.groupCount()} groups`);
      const entropy = raw.entropy === undefined ? undefined : Number(raw.entropy);
      if (entropy !== undefined && !(entropy >= 0)) throw new Error('entropy must be a number >= 0');
      const own = [...allowlistTables(raw, 'allowlist', 'allowlists')].map((t, i) => loadAllowlist(t, `allowlists[${i}]`));
      const confidence = typeof raw.confidence === 'number' ? raw.confidence : id.startsWith('generic') ? 0.6 : 0.8;
      rules.push({
        id,
        ...(typeof raw.description === 'string' ? { description: raw.description } : {}),
        pattern: raw.regex,
        regex,
        secretGroup,
        ...(entropy !== undefined && entropy > 0 ? { entropy } : {}),
        keywords: [...new Set(strings(raw.keywords, 'keywords').map((k) => k.toLowerCase()).filter(Boolean))],
        ...(typeof raw.path === 'string' ? { path: compile(raw.path, 'path') } : {}),
        allowlists: [...own.map(stripTargets), ...globals.filter((g) => g.targetRules.length === 0 || g.targetRules.includes(id)).map(stripTargets)],
        confidence: conf(confidence),
        source,
        ...locatorFor(raw.regex, regex),
      });
      seen.add(id);
    } catch (e) {
      skipped.push({ id, reason: (e as Error).message, source });
    }
  });

  // [extend] useDefault = true: start from the built-in rules (minus disabledRules).
  const extend = doc.extend;
  if (isTable(extend)) {
    if (typeof extend.path === 'string' || typeof extend.url === 'string') skipped.push({ id: '[extend]', reason: 'extend.path / extend.url are not supported: merge the files first', source });
    if (extend.useDefault === true) {
      const disabled = new Set(strings(extend.disabledRules, 'extend.disabledRules'));
      for (const r of builtinRules()) if (!disabled.has(r.id) && !seen.has(r.id)) rules.push({ ...r, allowlists: [...r.allowlists, ...globals.filter((g) => g.targetRules.length === 0 || g.targetRules.includes(r.id)).map(stripTargets)] });
    }
  }
  const result = Object.assign(rules, { skipped });
  Object.defineProperty(result, 'rules', { value: result, enumerable: false });
  return result as SecretRules;
}

function stripTargets(a: SecretAllowlist & { targetRules?: string[] }): SecretAllowlist {
  const { targetRules: _ignored, ...rest } = a;
  return rest;
}

let builtin: SecretRules | undefined;
/** Palisade's built-in rules (see secret-rules.ts), parsed once. */
export function builtinRules(): SecretRules {
  if (builtin === undefined) {
    const rules = loadGitleaksRules(DEFAULT_SECRET_RULES_TOML, 'builtin');
    if (rules.skipped.length > 0) throw new Error(`built-in secret rules: ${rules.skipped.map((s) => `${s.id}: ${s.reason}`).join('; ')}`);
    builtin = rules;
  }
  return builtin;
}

// ---------------------------------------------------------------------------------------------
// matching

export interface DetectSecretsOptions {
  /** Path of the content, for rules and allowlists with `path` (rules with a path are skipped without one). */
  path?: string;
  /** Stop after this many findings (default 10 000). */
  maxFindings?: number;
}

/** Shannon entropy in bits per character (code point) of `s`. */
export function shannonEntropy(s: string): number {
  if (s.length === 0) return 0;
  const counts = new Map<number, number>();
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    counts.set(c, (counts.get(c) ?? 0) + 1);
    n++;
  }
  let h = 0;
  for (const k of counts.values()) {
    const p = k / n;
    h -= p * Math.log2(p);
  }
  return h;
}

const WINDOW = 32 * 1024;
const OVERLAP = 8 * 1024;
const LINE_CONTEXT = 2048;
/** Rules are tested in sets of this many (one DFA pass per set instead of per rule). */
const SET_SIZE = 16;
/** Match positions are searched (NFA, captures) only in blocks this small that the DFA found a match in. */
const BLOCK = 128;
const FANOUT = 8;
/** Look-ahead past a block for rules whose matches have no (small) length bound. */
const UNBOUNDED_SEAM = 256;
/** Rules whose longest match fits in this look-ahead are searched exactly; longer ones best-effort, then checked. */
const MAX_EXACT_SEAM = 1024;
/** At most this many matches (kept or rejected) are examined per rule and scan; past it the rule stops and the rest is reported 'truncated'. */
const MAX_MATCHES_PER_RULE = 5000;

const LAZY_PREFIX = /^((?:\(\?[a-zA-Z]+\))?(?:\(\?[a-zA-Z]*:)*)\[\\w\.-\]\{0,\d{1,4}\}\?/;

/**
 * Many gitleaks rules start with a lazy context prefix, `[\w.-]{0,50}?`, that only widens the
 * match to the left: a match of the rule exists exactly where one of the rule without it does,
 * with the same capture groups (the lazy prefix takes the fewest characters that let the rest
 * match). Position search (the costly NFA part) uses the rule without it, which is several
 * times cheaper, and so the reported match start of these rules is where the rest begins.
 */
function locatorFor(pattern: string, regex: RE2JS): { locator: RE2JS; locatorPattern: string; maxLength: number } {
  let src = pattern;
  for (let m = LAZY_PREFIX.exec(src); m !== null; m = LAZY_PREFIX.exec(src)) src = m[1]! + src.slice(m[0].length);
  if (src !== pattern) {
    try {
      const locator = RE2JS.compile(src);
      if (locator.groupCount() === regex.groupCount()) return { locator, locatorPattern: src, maxLength: maxMatchLength(locator) };
    } catch {
      // keep the original
    }
  }
  return { locator: regex, locatorPattern: pattern, maxLength: maxMatchLength(regex) };
}

/**
 * Upper bound of the length (in code points) of any match of `re`, from its compiled program (longest path of
 * rune-consuming instructions; a loop means unbounded). Reads re2js internals: anything
 * unexpected yields Infinity, which only makes matching take the slower, always-correct path.
 */
export function maxMatchLength(re: RE2JS): number {
  try {
    const prog = (re as unknown as { re2Input: { prog: { start: number; numInst(): number; getInst(pc: number): { op: number; out: number; arg: number } } } }).re2Input.prog;
    const n = prog.numInst();
    const memo = new Float64Array(n).fill(-1);
    const state = new Uint8Array(n); // 0 new, 1 on stack, 2 done
    // Opcodes (re2js Inst): 1 ALT, 2 ALT_MATCH, 3 CAPTURE, 4 EMPTY_WIDTH, 5 FAIL, 6 MATCH, 7 NOP, 8-11 runes.
    const stack: number[] = [prog.start];
    while (stack.length > 0) {
      const pc = stack[stack.length - 1]!;
      const inst = prog.getInst(pc);
      if (inst === undefined) return Infinity;
      if (state[pc] === 2) {
        stack.pop();
        continue;
      }
      const succ = inst.op === 1 || inst.op === 2 ? [inst.out, inst.arg] : inst.op === 5 || inst.op === 6 ? [] : [inst.out];
      if (inst.op > 11 || inst.op < 1) return Infinity;
      if (state[pc] === 0) {
        state[pc] = 1;
        for (const s of succ) {
          if (state[s] === 1) return Infinity; // a loop
          if (state[s] === 0) stack.push(s);
        }
        continue;
      }
      // All successors done.
      let best = inst.op === 6 ? 0 : -Infinity;
      for (const s of succ) best = Math.max(best, memo[s]!);
      memo[pc] = best + (inst.op >= 8 ? 1 : 0);
      state[pc] = 2;
      stack.pop();
    }
    const runes = memo[prog.start]!;
    return runes < 0 ? 0 : runes;
  } catch {
    return Infinity;
  }
}

interface Engine {
  rules: SecretRule[];
  keywords: KeywordMatcher;
  /** Per rule: keyword ids (empty = always). */
  ruleKeywords: number[][];
  sets: { set: RE2Set | null; members: number[] }[];
}

const engines = new WeakMap<readonly SecretRule[], Engine>();

function engineFor(rules: readonly SecretRule[]): Engine {
  let e = engines.get(rules);
  if (e !== undefined) return e;
  const all = [...new Set(rules.flatMap((r) => r.keywords))];
  const index = new Map(all.map((k, i) => [k, i]));
  const sets: Engine['sets'] = [];
  for (let i = 0; i < rules.length; i += SET_SIZE) {
    const members = rules.slice(i, i + SET_SIZE).map((_, k) => i + k);
    let set: RE2Set | null = null;
    try {
      set = new RE2Set(RE2Set.UNANCHORED, 0, 16 << 20);
      for (const m of members) set.add(rules[m]!.locatorPattern); // same matches or none as `pattern`, far fewer DFA states
      set.compile();
    } catch {
      set = null; // fall back to testing the rules one by one
    }
    sets.push({ set, members });
  }
  e = { rules: [...rules], keywords: new KeywordMatcher(all), ruleKeywords: rules.map((r) => r.keywords.map((k) => index.get(k)!)), sets };
  engines.set(rules, e);
  return e;
}

/** Window starts: 0, then about every WINDOW characters, just after a line break if one is near. */
function windowStarts(text: string): number[] {
  const starts = [0];
  const n = text.length;
  let target = WINDOW;
  while (target < n) {
    let s = -1;
    const limit = Math.min(n, target + 4096);
    for (let k = target; k < limit; k++) {
      if (text.charCodeAt(k) === 10) {
        s = k;
        break;
      }
    }
    if (s === -1) {
      // No line break near: settle for whitespace, else cut hard.
      s = target;
      for (let k = target; k < Math.min(n, target + 1024); k++) {
        const c = text.charCodeAt(k);
        if (c === 32 || c === 9 || c === 13) {
          s = k;
          break;
        }
      }
    }
    s += 1;
    if (s >= n) break;
    starts.push(s);
    target = s + WINDOW;
  }
  return starts;
}

interface Scan {
  text: string;
  options: DetectSecretsOptions;
  out: Finding[];
  dedupe: Set<string>;
  maxFindings: number;
  /** Matches examined so far, per rule id. */
  examined: Map<string, number>;
  /** Set when a budget ran out: offset from which the text was not fully scanned. */
  stoppedAt: number;
}

/** How one rule is searched in one window. */
interface Pass {
  rule: SecretRule;
  winEnd: number;
  /** Look-ahead past a block, in UTF-16 units. */
  seam: number;
  /** True when the look-ahead covers the rule's longest match: blocks then see every match whole. */
  exact: boolean;
  /** Spans of the matches found in this window (for the completeness check of inexact passes). */
  spans: number[];
}

/**
 * Finds secrets in `text` with `rules` (default: the built-in rules). Sorted by offset.
 * If a budget runs out (`maxFindings`, or 5 000 matches examined for one rule), scanning stops
 * and a finding of kind 'truncated' (category 'unscanned') covers the part of the text that was
 * not fully scanned.
 */
export function detectSecrets(text: string, rules: readonly SecretRule[] = builtinRules(), options: DetectSecretsOptions = {}): Finding[] {
  if (text.length === 0 || rules.length === 0) return [];
  const engine = engineFor(rules);
  const scan: Scan = { text, options, out: [], dedupe: new Set(), maxFindings: options.maxFindings ?? 10_000, examined: new Map(), stoppedAt: -1 };
  const starts = windowStarts(text);
  for (let w = 0; w < starts.length && scan.stoppedAt < 0; w++) {
    const ownStart = starts[w]!;
    const ownEnd = w + 1 < starts.length ? starts[w + 1]! : text.length;
    const winEnd = Math.min(text.length, ownEnd + OVERLAP);
    const ctx = ownStart > 0 ? 1 : 0; // one character of left context, for \b
    const win = starts.length === 1 ? text : text.slice(ownStart - ctx, winEnd);
    const unitsPerRune = /[\uD800-\uDFFF]/.test(win) ? 2 : 1;
    const present = engine.keywords.present(win);
    const candidate = engine.ruleKeywords.map((ids, r) => {
      const rule = engine.rules[r]!;
      if (rule.path !== undefined && (options.path === undefined || !rule.path.test(options.path))) return false;
      return ids.length === 0 || ids.some((id) => present[id] === 1);
    });
    for (const { set, members } of engine.sets) {
      if (scan.stoppedAt >= 0) break;
      const live = members.filter((m) => candidate[m]);
      if (live.length === 0) continue;
      let matched: number[];
      if (set !== null && live.length > 1) {
        matched = set.match(win).map((k) => members[k]!).filter((m) => candidate[m]);
      } else matched = live.filter((m) => engine.rules[m]!.locator.test(win));
      for (const m of matched) {
        const rule = engine.rules[m]!;
        const longest = rule.maxLength * unitsPerRune;
        const exact = longest <= MAX_EXACT_SEAM;
        const pass: Pass = { rule, winEnd, seam: exact ? longest : UNBOUNDED_SEAM, exact, spans: [] };
        locate(scan, pass, ownStart, ownEnd, true);
        if (!exact && scan.stoppedAt < 0 && missedSome(scan, pass, ownStart - ctx, winEnd)) {
          // A match longer than the look-ahead: search the whole window for it.
          enumerate(scan, pass, ownStart, ownEnd, ownStart, winEnd);
        }
        if (scan.stoppedAt >= 0) {
          scan.stoppedAt = Math.min(scan.stoppedAt, ownStart);
          break;
        }
      }
    }
  }
  const out = scan.out;
  out.sort((a, b) => a.start - b.start || b.end - a.end || (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0));
  if (scan.stoppedAt >= 0) out.push({ type: 'secret', kind: 'truncated', start: scan.stoppedAt, end: text.length, ruleId: 'secret.scan_limit', category: 'unscanned', confidence: 0.5 });
  return out;
}

/** Does the window still match once the matches already found are blanked out? */
function missedSome(scan: Scan, pass: Pass, from: number, to: number): boolean {
  if (pass.spans.length === 0) return true; // the window matched but no block did
  let masked = '';
  let pos = from;
  for (let i = 0; i < pass.spans.length; i += 2) {
    const s = Math.max(pos, pass.spans[i]!);
    const e = Math.min(to, pass.spans[i + 1]!);
    if (e <= s) continue;
    masked += scan.text.slice(pos, s) + ' '.repeat(e - s);
    pos = e;
  }
  masked += scan.text.slice(pos, to);
  return pass.rule.locator.test(masked);
}

/**
 * Finds the matches of the rule that start in [a, b), knowing (if `known`) or testing that
 * one lies within [a, b + seam). Narrows down with the DFA (cheap, no positions) before
 * searching positions with captures (NFA, costly) only in small blocks.
 */
function locate(scan: Scan, pass: Pass, a: number, b: number, known: boolean): void {
  const inputEnd = Math.min(pass.winEnd, b + pass.seam);
  if (!known) {
    const from = a > 0 ? a - 1 : a;
    if (!pass.rule.locator.test(scan.text.slice(from, inputEnd))) return;
  }
  if (b - a <= BLOCK) {
    enumerate(scan, pass, a, b, a, inputEnd);
    return;
  }
  const step = Math.max(BLOCK, Math.ceil((b - a) / FANOUT));
  for (let s = a; s < b && scan.stoppedAt < 0; s += step) locate(scan, pass, s, Math.min(b, s + step), false);
}

/** Searches [inputStart, inputEnd) for matches starting in [ownStart, ownEnd). */
function enumerate(scan: Scan, pass: Pass, ownStart: number, ownEnd: number, inputStart: number, inputEnd: number): void {
  const { text } = scan;
  const { rule, winEnd } = pass;
  const from = inputStart > 0 ? inputStart - 1 : inputStart; // one character of context for \b
  const input = text.slice(from, inputEnd);
  const m = rule.locator.matcher(input);
  const groups = rule.locator.groupCount();
  let pos = 0;
  while (pos <= input.length && m.find(pos)) {
    let ms = m.start() + from;
    let me = m.end() + from;
    pos = me > ms ? m.end() : m.end() + 1;
    if (ms >= ownEnd) break;
    if (ms < ownStart || me === ms) continue;
    let matcher = m;
    let base = from;
    if (!pass.exact && me === inputEnd && inputEnd < winEnd) {
      // Possibly cut short by the end of the block: match again from its start over the window.
      base = ms > 0 ? ms - 1 : ms;
      const m2 = rule.locator.matcher(text.slice(base, winEnd));
      if (!m2.find(ms - base)) continue;
      matcher = m2;
      ms = m2.start() + base;
      me = m2.end() + base;
      if (ms >= ownEnd) break;
      pos = me - from;
    }
    pass.spans.push(ms, me);
    const seen = (scan.examined.get(rule.id) ?? 0) + 1;
    scan.examined.set(rule.id, seen);
    report(scan, rule, matcher, base, groups, ms, me);
    if (scan.out.length >= scan.maxFindings || seen >= MAX_MATCHES_PER_RULE) {
      scan.stoppedAt = me;
      return;
    }
  }
}

function report(scan: Scan, rule: SecretRule, m: Matcher, base: number, groups: number, ms: number, me: number): boolean {
  const { text, options } = scan;
  // The secret: secretGroup, else the first non-empty group, else the whole match.
  let ss = ms;
  let se = me;
  if (groups > 0) {
    const pick = (g: number): boolean => {
      const s = m.start(g);
      const e = m.end(g);
      if (s < 0 || e <= s) return false;
      ss = s + base;
      se = e + base;
      return true;
    };
    if (rule.secretGroup > 0) {
      if (!pick(rule.secretGroup)) return false;
    } else for (let g = 1; g <= groups && !pick(g); g++);
  }
  const secret = text.slice(ss, se);
  if (rule.entropy !== undefined && shannonEntropy(secret) <= rule.entropy) return false;
  if (rule.id.startsWith('generic') && !/[0-9]/.test(secret)) return false;
  if (allowed(rule, text, secret, ms, me, options.path)) return false;
  const key = `${rule.id}:${ss}:${se}`;
  if (scan.dedupe.has(key)) return false;
  scan.dedupe.add(key);
  scan.out.push({ type: 'secret', kind: rule.id, start: ss, end: se, ruleId: `secret.${rule.id}`, category: 'credentials', confidence: rule.confidence });
  return true;
}

function allowed(rule: SecretRule, text: string, secret: string, ms: number, me: number, path: string | undefined): boolean {
  if (rule.allowlists.length === 0) return false;
  let lowered: string | undefined;
  let line: string | undefined;
  for (const a of rule.allowlists) {
    const checks: boolean[] = [];
    if (a.regexes.length > 0) {
      let target: string;
      if (a.regexTarget === 'match') target = text.slice(ms, me);
      else if (a.regexTarget === 'line') target = line ??= lineAround(text, ms, me);
      else target = secret;
      checks.push(a.regexes.some((r) => r.test(target)));
    }
    if (a.stopwords.length > 0) {
      lowered ??= secret.toLowerCase();
      const l = lowered;
      checks.push(a.stopwords.some((w) => l.includes(w)));
    }
    if (a.paths.length > 0) checks.push(path !== undefined && a.paths.some((r) => r.test(path)));
    if (checks.length === 0) continue;
    if (a.condition === 'AND' ? checks.every(Boolean) : checks.some(Boolean)) return true;
  }
  return false;
}

/** The line holding [ms, me), cut to LINE_CONTEXT characters either side of the match. */
function lineAround(text: string, ms: number, me: number): string {
  let from = ms;
  const fromLimit = Math.max(0, ms - LINE_CONTEXT);
  while (from > fromLimit && text.charCodeAt(from - 1) !== 10) from--;
  let to = me;
  const toLimit = Math.min(text.length, me + LINE_CONTEXT);
  while (to < toLimit && text.charCodeAt(to) !== 10) to++;
  return text.slice(from, to);
}
