/**
 * Secret detection with rules in gitleaks' format (read by `loadGitleaksRules`, gitleaks-rules.ts).
 *
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
import { RE2Set, type Matcher } from 're2js';
import type { Finding } from './finding.js';
import { builtinRules, type SecretRule } from './gitleaks-rules.js';
import { KeywordMatcher } from './keywords.js';

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
  // A rule matched without regard to case finds a secret in one case or the other, not a word in mixed case ("AsiaPacificCustomers").
  if (rule.caseFolded && /[a-z]/.test(secret) && /[A-Z]/.test(secret)) return false;
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
