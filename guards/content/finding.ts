/**
 * What a content detector reports. Offsets are indexes into the JavaScript string (UTF-16 code
 * units), so `text.slice(start, end)` is the matched span and `redact()` can splice it out.
 */
export type FindingType = 'pii' | 'secret' | 'injection';

export interface Finding {
  type: FindingType;
  /**
   * What was found. PII: 'email', 'phone', 'credit_card', 'iban', 'us_ssn', 'ip_address'.
   * Secrets: the rule id (e.g. 'github-token'). Injection: 'instruction', 'role_marker',
   * 'hidden_unicode', and 'truncated' for input past the scanner's size cap (see scanner.ts).
   */
  kind: string;
  /** Start offset (inclusive), UTF-16 code units. */
  start: number;
  /** End offset (exclusive), UTF-16 code units. */
  end: number;
  /** The rule that fired, e.g. 'pii.email', 'gitleaks:github-pat', 'injection.ignore_previous'. */
  ruleId: string;
  /**
   * The label category this finding adds to the content: 'pii', 'financial', 'credentials',
   * 'injection', 'unscanned'. One string per finding; a few kinds imply more than one category
   * (a card number is 'financial' and 'pii'): use `categoriesOf()` to get them all.
   */
  category: string;
  /** 0..1: how sure the detector is. */
  confidence: number;
}

/** Ordering used everywhere: by start, then longer first, then type/kind/rule for stability. */
export function compareFindings(a: Finding, b: Finding): number {
  return (
    a.start - b.start ||
    b.end - a.end ||
    cmp(a.type, b.type) ||
    cmp(a.kind, b.kind) ||
    cmp(a.ruleId, b.ruleId) ||
    cmp(a.category, b.category) ||
    b.confidence - a.confidence
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Rounds a confidence to 2 decimals and clamps it to [0, 1]. */
export function conf(x: number): number {
  return Math.round(Math.min(1, Math.max(0, x)) * 100) / 100;
}

/** Categories implied by a kind on top of the finding's own `category`. */
const EXTRA_CATEGORIES: Readonly<Record<string, readonly string[]>> = {
  credit_card: ['pii'],
};

/** The label categories a list of findings adds (sorted, unique), implied ones included. */
export function categoriesOf(findings: readonly Finding[]): string[] {
  const out = new Set<string>();
  for (const f of findings) {
    out.add(f.category);
    for (const c of EXTRA_CATEGORIES[f.kind] ?? []) out.add(c);
  }
  return [...out].sort();
}
