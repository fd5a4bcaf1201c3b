/**
 * One entry point over the content detectors: `scan()` runs PII, secret and prompt-injection
 * detection, merges what they found, and `redact()` splices findings out of the text.
 *
 * Size cap: at most `maxBytes` (default 1 MiB) of UTF-8 are scanned. Past it, the first
 * `maxBytes` are scanned (cut back to a whitespace, so no value is split) and one more finding
 * covers the rest: `{ type: 'injection', kind:
 * 'truncated', ruleId: 'scan.truncated', category: 'unscanned', confidence: 0.5, start: <first
 * unscanned offset>, end: text.length }`. Unscanned content is reported rather than passed over
 * silently (padding is the cheapest way to hide something from a scanner), and `redact()`
 * replaces it like any finding, so a redacted text never carries unscanned content. A caller
 * that prefers to block oversized content can test the size first. The type is 'injection'
 * because what is unknown about unscanned untrusted text is chiefly its integrity.
 *
 * PII and secrets are looked for in a normalised view of the text (normalised-view.ts: NFKC,
 * invisible characters dropped, digits of every script folded, separators unified, percent-encoding
 * decoded) and reported at the original characters they came from; prompt-injection signals are
 * looked for in the text as written, invisible characters being one of them.
 *
 * Every detector is linear in the size of the text on any input (see each module), so scanning
 * `maxBytes` has a fixed worst-case cost; bench/scanners.ts measures it.
 */
import { compareFindings, type Finding } from './finding.js';
import { builtinRules, type SecretRule } from './gitleaks-rules.js';
import { detectInjection, type InjectionOptions } from './injection.js';
import { detectPii, type PiiOptions } from './pii.js';
import { normalisedView } from './normalised-view.js';
import { detectSecrets } from './secrets.js';
import { detectSplitSecrets } from './split-secrets.js';

export interface ScanOptions {
  /** PII detection (default on); an object to set its options. */
  pii?: boolean | PiiOptions;
  /** Secret detection (default on, built-in rules); or the rules to use (e.g. from `loadGitleaksRules`). */
  secrets?: boolean | readonly SecretRule[];
  /** Prompt-injection signals (default on). */
  injection?: boolean | InjectionOptions;
  /** UTF-8 bytes scanned at most (default 1 MiB); the rest is reported as kind 'truncated'. */
  maxBytes?: number;
  /** Path of the content, for secret rules and allowlists that have a `path`. */
  path?: string;
}

export const DEFAULT_MAX_BYTES = 1024 * 1024;

/** Runs the enabled detectors; findings sorted by offset, duplicates and redundant ones removed. */
export function scan(text: string, options: ScanOptions = {}): Finding[] {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const cut = cutAtWhitespace(text, cutAtBytes(text, maxBytes));
  const body = cut < text.length ? text.slice(0, cut) : text;
  const found: Finding[] = [];
  // PII and secrets are looked for in the normalised view, and reported at the original characters.
  const view = options.pii !== false || options.secrets !== false ? normalisedView(body) : undefined;
  const inOriginal = (fs: readonly Finding[]): Finding[] =>
    view === undefined || !view.rewritten
      ? [...fs]
      : fs.map((f) => {
          const [start, end] = view.original(f.start, f.end);
          return { ...f, start, end };
        });
  if (view !== undefined && options.pii !== false) append(found, inOriginal(detectPii(view.text, typeof options.pii === 'object' ? options.pii : {})));
  if (view !== undefined && options.secrets !== false) {
    const rules = Array.isArray(options.secrets) ? (options.secrets as readonly SecretRule[]) : builtinRules();
    const secretOptions = options.path === undefined ? {} : { path: options.path };
    append(found, inOriginal(detectSecrets(view.text, rules, secretOptions)));
    append(found, inOriginal(detectSplitSecrets(view.text, rules, secretOptions)));
  }
  if (options.injection !== false) append(found, detectInjection(body, typeof options.injection === 'object' ? options.injection : {}));
  if (cut < text.length) found.push({ type: 'injection', kind: 'truncated', start: cut, end: text.length, ruleId: 'scan.truncated', category: 'unscanned', confidence: 0.5 });
  return mergeFindings(found);
}

/**
 * A cut moved back to just after the last whitespace in the 1 KiB before it that does not join
 * two digits, so a value that straddles the size cap (a key, a card in groups) falls wholly in the
 * unscanned part (which redaction removes), not half in each (the scanned half would be too short
 * to find and be let through).
 */
function cutAtWhitespace(text: string, cut: number): number {
  if (cut >= text.length) return cut;
  const digit = (k: number): boolean => k >= 0 && k < text.length && text.charCodeAt(k) >= 48 && text.charCodeAt(k) <= 57;
  for (let k = cut; k > 0 && cut - k < 1024; k--) if (/\s/.test(text[k - 1]!) && !(digit(k - 2) && digit(k))) return k;
  return cut;
}

/** Appends without spreading: a crafted text can give more findings than a call has room for arguments. */
function append(to: Finding[], items: readonly Finding[]): void {
  for (const f of items) to.push(f);
}

/**
 * The largest offset (UTF-16) whose prefix is at most `maxBytes` bytes of UTF-8, not splitting
 * a surrogate pair. Stops counting at `maxBytes`: linear in min(text, maxBytes).
 */
export function cutAtBytes(text: string, maxBytes: number): number {
  if (text.length * 3 <= maxBytes) return text.length; // cannot exceed: 3 bytes per code unit at most
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let size: number;
    let width = 1;
    if (c < 0x80) size = 1;
    else if (c < 0x800) size = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && text.charCodeAt(i + 1) >= 0xdc00 && text.charCodeAt(i + 1) <= 0xdfff) {
      size = 4;
      width = 2;
    } else size = 3;
    if (bytes + size > maxBytes) return i;
    bytes += size;
    i += width - 1;
  }
  return text.length;
}

/**
 * Sorts findings, keeps one of exact duplicates (the most confident), and drops a finding that
 * lies inside another of the same type that is at least as confident (a generic "api_key=" match
 * inside a GitHub token's span, a phone number inside a card number). Overlaps across types are
 * kept: they carry different label categories.
 */
export function mergeFindings(findings: readonly Finding[]): Finding[] {
  // Equal spans: the most confident first, so it is the one kept.
  const sorted = [...findings].sort((a, b) => a.start - b.start || b.end - a.end || b.confidence - a.confidence || compareFindings(a, b));
  const out: Finding[] = [];
  for (const f of sorted) {
    let redundant = false;
    // Candidates that can contain f start at or before it; look back over the few that still overlap it.
    for (let k = out.length - 1, seen = 0; k >= 0 && seen < 32; k--, seen++) {
      const g = out[k]!;
      if (g.type !== f.type) continue;
      if (g.start <= f.start && g.end >= f.end && (g.confidence >= f.confidence || (g.kind === f.kind && g.start === f.start && g.end === f.end))) {
        if (g.kind === f.kind && g.start === f.start && g.end === f.end) g.confidence = Math.max(g.confidence, f.confidence);
        redundant = true;
        break;
      }
    }
    if (!redundant) out.push({ ...f });
  }
  return out.sort(compareFindings);
}

/** How a redacted span is written: `[REDACTED:<kind>]` (default), `[REDACTED:<type>]`, or '*' per character (offsets kept). */
export type RedactStyle = 'kind' | 'type' | 'mask';

/**
 * Replaces each finding's span with a placeholder. Overlapping findings are merged into one
 * span, labelled by the finding that starts first (the longest of those). Offsets are those of
 * `text` (UTF-16), as every detector reports them. Findings outside the text are ignored.
 */
export function redact(text: string, findings: readonly Finding[], style: RedactStyle = 'kind'): string {
  const spans = findings.filter((f) => f.start >= 0 && f.end > f.start && f.start < text.length).sort((a, b) => a.start - b.start || b.end - a.end);
  if (spans.length === 0) return text;
  const parts: string[] = [];
  let pos = 0;
  let i = 0;
  while (i < spans.length) {
    const head = spans[i]!;
    let end = Math.min(text.length, head.end);
    let j = i + 1;
    while (j < spans.length && spans[j]!.start < end) {
      end = Math.max(end, Math.min(text.length, spans[j]!.end));
      j++;
    }
    parts.push(text.slice(pos, head.start));
    parts.push(style === 'mask' ? '*'.repeat(end - head.start) : `[REDACTED:${style === 'type' ? head.type : head.kind}]`);
    pos = end;
    i = j;
  }
  parts.push(text.slice(pos));
  return parts.join('');
}
