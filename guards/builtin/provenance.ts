import type { ContextItem } from '../guard-event.js';

/**
 * `trusted`: found in the principal's request or a trusted result; `untrusted`: only in third-party
 * content; `instructed`: only in third-party content that reads as instructions to the agent
 * (the shape of a prompt injection); `unseen`: in none of them.
 */
export type Provenance = 'trusted' | 'untrusted' | 'instructed' | 'unseen';

export interface TracedValue {
  /** Where the value sits in the arguments, e.g. `recipients.0`. */
  path: string;
  value: string;
  provenance: Provenance;
  /** The first context item of that provenance holding the value: where an approver is told it came from. */
  from?: Pick<ContextItem, 'source' | 'name'>;
}

// Free text (bodies, reasons) is composed by the model; what matters is identifiers and amounts.
const MAX_IDENTIFIER = 200;
// Account numbers are written with or without spaces ("GB33 BUKB 2020 …"); they are compared without them.
const isSpacedCode = (s: string): boolean => /^[A-Za-z0-9 ]{8,64}$/.test(s) && /\d/.test(s);
const looksLikeIdentifier = (s: string): boolean => s.length >= 3 && s.length <= MAX_IDENTIFIER && (s.split(/\s+/).length <= 3 || isSpacedCode(s));

// Identifiers inside free text: a link or an address in a message body is where it sends someone.
export const EMBEDDED = /\b(?:https?:\/\/)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:\/[^\s"'<>)]*)?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b/gi;

/**
 * The identifiers {@link EMBEDDED} finds in free text, in order. None spans whitespace, and each has a
 * dot, an `@` or a digit, so only the words that could hold one are searched: on long prose the
 * expression tried at every position cost milliseconds.
 */
export function* embeddedIdentifiers(text: string): Generator<string> {
  const special = /[.@\d]/g;
  for (let m = special.exec(text); m; m = special.exec(text)) {
    let start = m.index;
    while (start > 0 && !SPACE.test(text[start - 1]!)) start--;
    let end = m.index + 1;
    while (end < text.length && !SPACE.test(text[end]!)) end++;
    special.lastIndex = end;
    if (end - start < 6) continue;
    for (const found of text.slice(start, end).matchAll(EMBEDDED)) if (found[0].length >= 6) yield found[0];
  }
}

const SPACE = /\s/;

/** A URL as written, without scheme, `www.` or trailing punctuation: `http://www.a.com/x/` and `a.com/x` are one place. */
const canonicalUrl = (s: string): string => s.replace(/^https?:\/\//i, '').replace(/^www\./i, '').replace(/[/.,;:]+$/, '');

function* leaves(value: unknown, path: string): Generator<[string, string]> {
  if (typeof value === 'string') {
    const v = value.trim();
    // Ids are often short numbers ("13"); a single digit says nothing about where it came from.
    if (looksLikeIdentifier(v) || /^\d{2,}$/.test(v)) yield [path, v];
    else for (const found of embeddedIdentifiers(v)) yield [path, found];
  } else if (typeof value === 'number' && Number.isFinite(value)) {
    // Small numbers (counts, flags) are everywhere and say nothing about where a value came from.
    if (Math.abs(value) >= 10) yield [path, String(value)];
  } else if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) yield* leaves(item, path ? `${path}.${i}` : String(i));
  } else if (value && typeof value === 'object') {
    for (const [k, item] of Object.entries(value)) yield* leaves(item, path ? `${path}.${k}` : k);
  }
}

/** Whole-token containment: `100` is in "pay 100 EUR" but not in "1000". */
function contains(haystack: string, needle: string): boolean {
  let from = 0;
  for (;;) {
    const at = haystack.indexOf(needle, from);
    if (at < 0) return false;
    const before = at === 0 ? '' : haystack[at - 1]!;
    const after = haystack[at + needle.length] ?? '';
    if (!/[a-z0-9]/i.test(before) && !/[a-z0-9]/i.test(after)) return true;
    from = at + 1;
  }
}

/** Normalises text so a value matches however a source wrote it (case, IBAN spacing, thousands separators). */
const normalise = (s: string): string => s.toLowerCase().replace(/(?<=\d)[ ,](?=\d)/g, '');

/**
 * Traces each identifying argument value (addresses, account numbers, URLs, ids, amounts) to the
 * context items it appears in: values that only untrusted content supplied are what an injected
 * instruction would make an agent use.
 */
export function traceArguments(args: Record<string, unknown> | undefined, history: readonly ContextItem[]): TracedValue[] {
  if (!args) return [];
  const trusted: Array<{ text: string; compact?: string; item: ContextItem }> = [];
  const untrusted: typeof trusted = [];
  const instructed: typeof trusted = [];
  for (const item of history) {
    const bucket = item.label.integrity !== 'untrusted' ? trusted : item.flags?.includes('instructions') ? instructed : untrusted;
    bucket.push({ text: normalise(item.content), item });
  }
  // Spaces taken out only when a spaced code is looked for.
  const compact = (t: { text: string; compact?: string }) => (t.compact ??= t.text.replace(/\s+/g, ''));
  const traced: TracedValue[] = [];
  for (const [path, raw] of leaves(args, '')) {
    const value = normalise(/^(https?:\/\/|www\.)/i.test(raw) ? canonicalUrl(raw) : raw);
    const alt = value.replace(/\.0+$/, '');
    const code = isSpacedCode(raw) ? value.replace(/\s+/g, '') : undefined;
    const seen = (texts: typeof trusted) =>
      texts.find((t) => contains(t.text, value) || (alt !== value && contains(t.text, alt)) || (code !== undefined && compact(t).includes(code)));
    const found = seen(trusted) ?? seen(untrusted) ?? seen(instructed);
    const provenance: Provenance = !found ? 'unseen' : found.item.label.integrity !== 'untrusted' ? 'trusted' : found.item.flags?.includes('instructions') ? 'instructed' : 'untrusted';
    traced.push({ path, value: raw, provenance, ...(found ? { from: { source: found.item.source, ...(found.item.name ? { name: found.item.name } : {}) } } : {}) });
  }
  return traced;
}
