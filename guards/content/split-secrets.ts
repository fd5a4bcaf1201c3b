/**
 * Secrets written with spaces inside them (an AWS key id in groups of four, a GitHub token with a
 * space after `ghp_`): a rule sees short tokens where there is one secret. A gap is closed only
 * where both sides look like pieces of a machine-made string (a digit, an inner capital, an inner
 * `_`, `+`, `/` or `=`, a closing `_` or `-` as in `ghp_`), or one side does and the other is a
 * short piece of letters and digits: words of a sentence are never joined to each other. A joined
 * secret must begin with its own rule's keyword and hold a digit, as machine-made strings do.
 *
 * Where a rule's keyword occurs in such a joined stretch, the text from the keyword on is written
 * out again with the first 1, 2, ... 16 gaps closed (the secret may end at any of them) and the
 * rules run over those rewritings; a finding maps back to the characters it came from, the spaces
 * between included. Linear: each keyword occurrence costs a bounded rewriting, and past
 * MAX_OCCURRENCES a finding of kind 'truncated' (category 'unscanned') covers the rest.
 */
import { isAlnum, isDigit, isUpper } from './chars.js';
import type { Finding } from './finding.js';
import type { SecretRule } from './gitleaks-rules.js';
import { KeywordMatcher } from './keywords.js';
import { MappedTextBuilder } from './mapped-text.js';
import { detectSecrets, type DetectSecretsOptions } from './secrets.js';

/** Gaps of at most this many spaces or tabs are closed. */
const MAX_GAP = 2;
/** At most this many gaps are closed after a keyword. */
const MAX_JOINS = 16;
/** Keyword occurrences in joined stretches examined per scan. */
const MAX_OCCURRENCES = 512;
/** Characters of context kept before a keyword (for `\b` and short prefixes). */
const LEFT = 16;
/** Characters written past the longest match, for the rule's closing boundary. */
const BOUNDARY = 8;
/** Longest rewriting after a keyword, whatever the rule allows. */
const MAX_REACH = 320;

const isSpace = (c: number): boolean => c === 32 || c === 9;
const isBreak = (c: number): boolean => c === 32 || c === 9 || c === 10 || c === 13;

/** How a token may join its neighbours: 2 a piece of a machine-made string, 1 a short piece of letters and digits (up to 6), 0 a word. */
function pieceStrength(text: string, s: number, e: number): 0 | 1 | 2 {
  const last = text.charCodeAt(e - 1);
  if (e - s >= 2 && (last === 95 || last === 45)) return 2; // a token prefix: "ghp_", "xoxb-"
  let short = e - s <= 6;
  for (let k = s; k < e; k++) {
    const c = text.charCodeAt(k);
    if (isDigit(c)) return 2;
    if (k > s && (isUpper(c) || ((c === 95 || c === 43 || c === 47 || c === 61) && k + 1 < e && isAlnum(text.charCodeAt(k + 1))))) return 2;
    if (!isAlnum(c)) short = false;
  }
  return short ? 1 : 0;
}

interface Gap {
  start: number;
  end: number;
}

interface Engine {
  keywords: KeywordMatcher;
  rulesById: ReadonlyMap<string, SecretRule>;
  /** Per keyword id: the longest match of a rule with that keyword, capped at MAX_REACH. */
  reach: number[];
}
const engines = new WeakMap<readonly SecretRule[], Engine>();

function engineFor(rules: readonly SecretRule[]): Engine {
  let e = engines.get(rules);
  if (e === undefined) {
    const words = [...new Set(rules.flatMap((r) => r.keywords))];
    const reach = words.map((w) => Math.min(MAX_REACH, Math.max(...rules.filter((r) => r.keywords.includes(w)).map((r) => r.maxLength))));
    e = { keywords: new KeywordMatcher(words), rulesById: new Map(rules.map((r) => [r.id, r])), reach };
    engines.set(rules, e);
  }
  return e;
}

/** Secrets the rules find once the closable gaps of `text` are closed; offsets are those of `text`. */
export function detectSplitSecrets(text: string, rules: readonly SecretRule[], options: DetectSecretsOptions = {}): Finding[] {
  const gaps = closableGaps(text);
  if (gaps.length === 0) return [];
  const engine = engineFor(rules);
  // The joined stretches, each closed up, one per line: where do the rules' keywords occur in them?
  const joined = new MappedTextBuilder(text.length, 1024);
  let g = 0;
  while (g < gaps.length) {
    let s = gaps[g]!.start;
    while (s > 0 && !isBreak(text.charCodeAt(s - 1))) s--;
    let h = g;
    while (h + 1 < gaps.length && !hasBreak(text, gaps[h]!.end, gaps[h + 1]!.start)) h++;
    let e = gaps[h]!.end;
    while (e < text.length && !isBreak(text.charCodeAt(e))) e++;
    copyClosed(joined, text, s, e, gaps, g, h);
    joined.push(10, e, e);
    g = h + 1;
  }
  const stretches = joined.build();

  const rewritten = new MappedTextBuilder(text.length, 4096);
  let occurrences = 0;
  let stoppedAt = -1;
  let lastStart = -1;
  /** Triples: where a rewriting starts in `rewritten`, where its keyword starts in `text`, and which keyword it is. */
  const keywordAt: number[] = [];
  engine.keywords.occurrences(stretches.text, (id, end) => {
    const kw = engine.keywords.keywords[id]!;
    const [kStart, kEnd] = stretches.original(end - kw.length, end);
    if (kStart === lastStart) return true;
    lastStart = kStart;
    // Only where the keyword's stretch of text goes on across a closable gap.
    const first = firstGapFrom(gaps, kStart);
    if (first === gaps.length || gaps[first]!.start > kStart + engine.reach[id]!) return true;
    if (++occurrences > MAX_OCCURRENCES) {
      stoppedAt = kStart;
      return false;
    }
    let mandatory = 0;
    while (first + mandatory < gaps.length && gaps[first + mandatory]!.end <= kEnd) mandatory++;
    for (let m = Math.max(1, mandatory); m <= mandatory + MAX_JOINS && first + m - 1 < gaps.length; m++) {
      keywordAt.push(rewritten.length, kStart, id);
      writeClosing(rewritten, text, gaps, first, m, lineStartWithin(text, kStart, LEFT), kStart + engine.reach[id]!);
      if (gaps[first + m - 1]!.start > kStart + engine.reach[id]!) break;
    }
    return true;
  });
  const out: Finding[] = [];
  if (rewritten.length > 0) {
    const mapped = rewritten.build();
    for (const f of detectSecrets(mapped.text, rules, options)) {
      const [start, end] = mapped.original(f.start, f.end);
      if (f.kind === 'truncated') {
        out.push({ ...f, start, end });
        continue;
      }
      // Kept: a secret that begins with its own rule's keyword (a token prefix, not a context word
      // such as "password:"), that the gaps cut, and that holds a digit. Others are the plain scan's.
      const [kStart, id] = keywordOf(keywordAt, f.start);
      const g = firstGapFrom(gaps, start);
      const own = engine.rulesById.get(f.kind)?.keywords.includes(engine.keywords.keywords[id]!) === true;
      if (own && start === kStart && g < gaps.length && gaps[g]!.end <= end && /[0-9]/.test(text.slice(start, end))) out.push({ ...f, start, end });
    }
  }
  if (stoppedAt >= 0) out.push({ type: 'secret', kind: 'truncated', start: stoppedAt, end: text.length, ruleId: 'secrets.split_limit', category: 'unscanned', confidence: 0.5 });
  return out;
}

/** Where a token may be a piece of a machine-made string (see `pieceStrength`): found natively, so plain prose costs little. */
const PIECE_HINT = /[0-9]|[a-z0-9][A-Z]|[_+/=][A-Za-z0-9]|[_-][ \t]/g;

/**
 * Runs of 1..MAX_GAP spaces or tabs between two tokens that may join (see `pieceStrength`): found
 * around the machine-made pieces only, each token looked at a bounded number of times.
 */
function closableGaps(text: string): Gap[] {
  const gaps: Gap[] = [];
  PIECE_HINT.lastIndex = 0;
  let lastGapEnd = -1;
  for (let m = PIECE_HINT.exec(text); m !== null; m = PIECE_HINT.exec(text)) {
    let s = m.index;
    while (s > 0 && !isBreak(text.charCodeAt(s - 1))) s--;
    let e = m.index;
    while (e < text.length && !isBreak(text.charCodeAt(e))) e++;
    PIECE_HINT.lastIndex = e;
    if (pieceStrength(text, s, e) < 2) continue;
    // The gap before this piece (unless the previous piece's gap after it was that one), and the gap after it.
    const before = gapBefore(text, s);
    if (before !== undefined && before.end > lastGapEnd) gaps.push(before);
    const after = gapAfter(text, e);
    if (after !== undefined) {
      gaps.push(after);
      lastGapEnd = after.end;
    }
  }
  return gaps;
}

/** The gap of 1..MAX_GAP spaces or tabs ending at `s`, if the token before it may join (strength 1 or more). */
function gapBefore(text: string, s: number): Gap | undefined {
  let g = s;
  while (g > 0 && s - g < MAX_GAP && isSpace(text.charCodeAt(g - 1))) g--;
  if (g === s || g === 0 || isBreak(text.charCodeAt(g - 1))) return undefined;
  let t = g;
  while (t > 0 && !isBreak(text.charCodeAt(t - 1))) t--;
  return pieceStrength(text, t, g) >= 1 ? { start: g, end: s } : undefined;
}

/** The gap of 1..MAX_GAP spaces or tabs starting at `e`, if the token after it may join (strength 1 or more). */
function gapAfter(text: string, e: number): Gap | undefined {
  let g = e;
  while (g < text.length && g - e < MAX_GAP && isSpace(text.charCodeAt(g))) g++;
  if (g === e || g >= text.length || isBreak(text.charCodeAt(g))) return undefined;
  let t = g;
  while (t < text.length && !isBreak(text.charCodeAt(t))) t++;
  return pieceStrength(text, g, t) >= 1 ? { start: e, end: g } : undefined;
}

function hasBreak(text: string, from: number, to: number): boolean {
  for (let k = from; k < to; k++) if (isBreak(text.charCodeAt(k))) return true;
  return false;
}

/** The keyword (its start in the text, and its id) of the rewriting that holds offset `at` of the rewritten text. */
function keywordOf(keywordAt: readonly number[], at: number): [start: number, id: number] {
  let lo = 0;
  let hi = keywordAt.length / 3 - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (keywordAt[mid * 3]! <= at) lo = mid;
    else hi = mid - 1;
  }
  return [keywordAt[lo * 3 + 1]!, keywordAt[lo * 3 + 2]!];
}

/** Where the context before `at` starts: `reach` characters back, or the start of `at`'s line if nearer. */
function lineStartWithin(text: string, at: number, reach: number): number {
  let s = at;
  while (s > 0 && at - s < reach && text.charCodeAt(s - 1) !== 10) s--;
  return s;
}

/** Index of the first gap that starts at or after `at`. */
function firstGapFrom(gaps: readonly Gap[], at: number): number {
  let lo = 0;
  let hi = gaps.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (gaps[mid]!.start < at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Writes text[from, until) with gaps first..first+m-1 closed (`until` counts the closed text, and a
 * little more is written for the rule's closing boundary), then a blank line.
 */
function writeClosing(out: MappedTextBuilder, text: string, gaps: readonly Gap[], first: number, m: number, from: number, until: number): void {
  const last = first + m - 1;
  let closed = 0;
  for (let k = first; k <= last; k++) closed += gaps[k]!.end - gaps[k]!.start;
  const end = Math.min(text.length, Math.max(until + closed, gaps[last]!.end) + BOUNDARY);
  copyClosed(out, text, from, end, gaps, first, last);
  out.push(10, end, end);
  out.push(10, end, end);
}

/** Copies text[from, end), up to a line break, leaving out gaps first..last. */
function copyClosed(out: MappedTextBuilder, text: string, from: number, end: number, gaps: readonly Gap[], first: number, last: number): void {
  let q = first;
  for (let k = from; k < end; k++) {
    const c = text.charCodeAt(k);
    if (c === 10) break;
    if (q <= last && k === gaps[q]!.start) {
      k = gaps[q]!.end - 1;
      q++;
      continue;
    }
    out.push(c, k, k + 1);
  }
}
