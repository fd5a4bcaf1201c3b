/**
 * Secret rules in gitleaks' format: reading a config into compiled rules.
 *
 * - `loadGitleaksRules(toml)` reads a gitleaks config: `[[rules]]` (id, regex, secretGroup,
 *   entropy, keywords, path, `[[rules.allowlists]]`), the global `[allowlist]` /
 *   `[[allowlists]]` (with `targetRules`), and `[extend] useDefault / disabledRules` (which here
 *   means palisade's built-in rules, not gitleaks' own defaults). A rule whose regex does not
 *   compile, or that has no regex (path-only rules), is skipped and listed in `.skipped`.
 * - Regexes are Go RE2 syntax. They run on re2js, a pure-JavaScript port of Go's regexp: linear
 *   time on any input, and it parses RE2 syntax itself (inline flags `(?i)`, `(?s)`, `(?m)`,
 *   `(?U)`, `(?i:...)`, POSIX classes, `\Q...\E`, `\z`), so patterns are passed through as written.
 */
import { RE2JS } from 're2js';
import { parse as parseToml } from 'smol-toml';
import { conf } from './finding.js';
import { locatorFor } from './secret-locator.js';
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
  /** Matched without regard to case, its letters being all one case (see `singleCase`): a mixed-case match is not a secret. */
  caseFolded?: boolean;
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
      const written = singleCase(raw.regex) ? `(?i)${raw.regex}` : raw.regex;
      const regex = compile(written, 'regex');
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
        ...(written !== raw.regex ? { caseFolded: true } : {}),
        source,
        ...locatorFor(written, regex),
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

/**
 * Does the pattern spell its letters in one case only (`AKIA[A-Z2-7]{16}`, `npm_[a-z0-9]{36}`),
 * with nothing that matches letters of either case (`.`, `\w`, `\S`, a negated class)? Such a
 * secret loses nothing when its case is changed, so rewriting it in the other case is an
 * evasion, not another string: the rule is matched without regard to case, and a match in mixed
 * case is not a secret. Other patterns are matched as written, and so are those that set a flag.
 */
export function singleCase(pattern: string): boolean {
  if (/\(\?[a-zA-Z]*i/.test(pattern)) return false;
  let lower = false;
  let upper = false;
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if ('wWSDpP'.includes(next)) return false; // letters of both cases
      if (next === 'Q') return false; // a quoted literal: not worth reading
      i += next === 'x' && pattern[i + 2] === '{' ? pattern.indexOf('}', i) - i : next === 'x' ? 3 : 1;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      else if (c === '[' && pattern[i + 1] === ':') return false; // a POSIX class
    } else if (c === '[') {
      if (pattern[i + 1] === '^') return false;
      inClass = true;
      if (pattern[i + 1] === ']') i++;
    } else if (c === '.') return false;
    else if (c === '(' && pattern[i + 1] === '?') {
      // A group's flags or name are not letters of the secret.
      const close = pattern.slice(i).search(/[:)>]/);
      i += close < 0 ? 0 : close;
      continue;
    }
    if (c >= 'a' && c <= 'z') lower = true;
    else if (c >= 'A' && c <= 'Z') upper = true;
  }
  return lower !== upper;
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
