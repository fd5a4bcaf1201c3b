import { parse as parseYaml } from 'yaml';
import type { ContextItem } from '../guard-event.js';

/**
 * `trusted`: found in the principal's request or a trusted result; `designated`: only in third-party
 * content the principal pointed to (the file, page or message their request named); `untrusted`:
 * only in other third-party content; `instructed`: only in third-party content that reads as
 * instructions to the agent (the shape of a prompt injection); `unseen`: in none of them.
 */
export type Provenance = 'trusted' | 'designated' | 'untrusted' | 'instructed' | 'unseen';

export interface TracedValue {
  /** Where the value sits in the arguments, e.g. `recipients.0`. */
  path: string;
  value: string;
  provenance: Provenance;
  /** Designated by a search in the principal's words rather than a named document: it may supply payloads, never targets. */
  searched?: boolean;
  /** Trusted, from a tool's record, but third-party text names the same value: it may have steered the choice. */
  contested?: boolean;
  /** For an address, account number, URL or phone number: what kind of destination it is. */
  kind?: DestinationKind;
  /** The first context item of that provenance holding the value: where an approver is told it came from. */
  from?: Pick<ContextItem, 'source' | 'name'>;
}

// Free text (bodies, reasons) is composed by the model; what matters is identifiers and amounts.
const MAX_IDENTIFIER = 200;
// Account numbers are written with or without spaces ("GB33 BUKB 2020 …"); they are compared without them.
const isSpacedCode = (s: string): boolean => /^[A-Za-z0-9 ]{8,64}$/.test(s) && /\d/.test(s);
const looksLikeIdentifier = (s: string): boolean => s.length >= 3 && s.length <= MAX_IDENTIFIER && (s.split(/\s+/).length <= 3 || isSpacedCode(s));

// Identifiers inside free text: a link or an address in a message body is where it sends someone.
// Addresses first: the host branch would otherwise take "emma.johnson" out of "emma.johnson@x.com".
export const EMBEDDED = /[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b(?:https?:\/\/)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:\/[^\s"'<>)]*)?|\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b/gi;

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
    // No identifier is longer than MAX_IDENTIFIER, and the expression is quadratic on one long token.
    if (end - start < 6 || end - start > 4 * MAX_IDENTIFIER) continue;
    for (const found of text.slice(start, end).matchAll(EMBEDDED)) if (found[0].length >= 6) yield found[0];
  }
}

const SPACE = /\s/;

/** A URL as written, without scheme, `www.` or trailing punctuation: `http://www.a.com/x/` and `a.com/x` are one place. */
const canonicalUrl = (s: string): string => s.replace(/^https?:\/\//i, '').replace(/^www\./i, '').replace(/[/.,;:]+$/, '');

/** Identifying values with their paths; `phrase` marks a whole phrase, which only counts where a source holds it. */
function* leaves(value: unknown, path: string, always: (path: string) => boolean): Generator<[path: string, value: string, phrase?: boolean]> {
  if (typeof value === 'string') {
    const v = value.trim();
    const inside = [...embeddedIdentifiers(v)];
    const isDestination = destinationKind(v) !== undefined;
    // "Mark <mark@x.com>", "mailto:…", "a@x.com, b@y.com": what it holds is where it goes, each traced.
    if (inside.length > 0 && !inside.includes(v) && !isDestination && v.split(/\s+/).length <= 3) {
      for (const found of inside) yield [path, found];
      return;
    }
    // Ids are often short numbers ("13"); a single digit says nothing, unless the policy says the argument is a target.
    if (looksLikeIdentifier(v) || /^\d{2,}$/.test(v) || (v.length > 0 && always(path)) || (isDestination && v.length <= 4 * MAX_IDENTIFIER)) yield [path, v];
    else {
      // A phrase of some length copied whole (a title, a subject) came from wherever it is written.
      if (v.length <= MAX_IDENTIFIER && v.split(/\s+/).length >= 4 && !/\n/.test(v)) yield [path, v, true];
      for (const found of inside) yield [path, found];
    }
  } else if (typeof value === 'number' && Number.isFinite(value)) {
    // Small numbers (counts, flags) are everywhere and say nothing about where a value came from, unless a target.
    if (Math.abs(value) >= 10 || always(path)) yield [path, String(value)];
  } else if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) yield* leaves(item, path ? `${path}.${i}` : String(i), always);
  } else if (value && typeof value === 'object') {
    for (const [k, item] of Object.entries(value)) yield* leaves(item, path ? `${path}.${k}` : k, always);
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
const fold = (s: string): string => s.toLowerCase().replace(/\s+/g, ' ').replace(/(?<=\d)[ ,](?=\d{3}(?!\d))/g, '');
// A context's texts are folded again at every call the agent makes: long ones are kept folded.
const FOLDED = new Map<string, string>();
const normalise = (s: string): string => {
  if (s.length < 256) return fold(s);
  let folded = FOLDED.get(s);
  if (folded === undefined) {
    folded = fold(s);
    if (FOLDED.size >= 256) FOLDED.delete(FOLDED.keys().next().value!);
    FOLDED.set(s, folded);
  }
  return folded;
};

/** The kinds of value that say where a side effect goes: whoever controls one of these controls the destination. */
export type DestinationKind = 'email' | 'iban' | 'url' | 'phone';
const DESTINATIONS: ReadonlyArray<[DestinationKind, RegExp]> = [
  ['email', /^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$/],
  ['iban', /^[A-Za-z]{2}\d{2}[A-Za-z0-9]{10,30}$/],
  ['url', /^(?:https?:\/\/)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:[/?#]\S*)?$/i],
  ['phone', /^\+?[\d ().-]{7,20}$/],
];

/** Which kind of destination a value is, if it is one, however it is dressed (a scheme, a port, an IP host, separators, non-ASCII letters). */
export function destinationKind(value: string): DestinationKind | undefined {
  const v = value.trim();
  if (/^mailto:/i.test(v)) return 'email';
  // Any scheme, an IP host or a port: a place a request goes, whatever its host looks like.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(v) || /^(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?:[/?#]|$)/.test(v) || /^[^\s/@]+\.[^\s/@]+:\d{2,5}(?:[/?#]|$)/.test(v)) return 'url';
  if (/^[^\s@<>"]+@[^\s@<>"]+\.[^\s@<>"]{2,}$/u.test(v)) return 'email';
  const code = v.replace(/^iban[\s:]*/i, '').replace(/[\s-]+/g, '');
  if (/^[A-Za-z]{2}\d{2}[A-Za-z0-9]{10,30}$/.test(code) && /\d{6}/.test(code)) return 'iban';
  for (const [kind, shape] of DESTINATIONS) {
    if (!shape.test(v)) continue;
    if (kind === 'phone' && (v.replace(/\D/g, '').length < 7 || /^\d{4}-\d{2}-\d{2}/.test(v))) continue;
    return kind;
  }
  return undefined;
}

/** How many distinct destinations of one kind a text holds, spaced account numbers and phone numbers included. */
function destinationsIn(text: string, kind: DestinationKind): number {
  const key = `${kind}\0${text}`;
  const cached = COUNTED.get(key);
  if (cached !== undefined) return cached;
  const found = new Set<string>();
  for (const id of embeddedIdentifiers(text)) if (destinationKind(id) === kind) found.add(normalise(kind === 'url' ? canonicalUrl(id) : id));
  if (kind === 'iban') for (const m of text.matchAll(/\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{2,4}){3,8}\b/g)) found.add(m[0].replace(/[\s-]+/g, '').toLowerCase());
  if (kind === 'url') for (const m of text.matchAll(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?:\/[^\s"'<>]*)?/gi)) found.add(normalise(canonicalUrl(m[0])));
  if (kind === 'phone') for (const m of text.matchAll(/\+?\d[\d ().-]{6,18}\d/g)) if (m[0].replace(/\D/g, '').length >= 7) found.add(m[0].replace(/\D/g, ''));
  if (COUNTED.size >= 256) COUNTED.delete(COUNTED.keys().next().value!);
  COUNTED.set(key, found.size);
  return found.size;
}
const COUNTED = new Map<string, number>();

const FILE_NAME = /^[\w.-]+\.[a-z0-9]{2,5}$/i;

interface Source {
  item: ContextItem;
  text: string;
  compact?: string;
  /** What the call that produced it asked with (the model's own words), normalised: text a tool repeats from them vouches for nothing. */
  echoes: string[];
  /** Untrusted content the principal pointed to: the call that fetched it asked only with values from their request, naming one document or searching. */
  designated: 'named' | 'searched' | false;
  /** For a record's vouched fields: each field's value, matched whole (a short id is not a piece of a date), with its key. */
  scalars?: ReadonlyMap<string, string>;
}

/** A value found in a source's text, and not merely because the source repeats what the call asked. */
function holds(source: Source, value: string, alt: string, code: string | undefined): boolean {
  const compact = () => (source.compact ??= source.text.replace(/\s+/g, ''));
  const found = source.scalars
    ? source.scalars.has(value) || source.scalars.has(alt) || (code !== undefined && source.scalars.has(code))
    : contains(source.text, value) || (alt !== value && contains(source.text, alt)) || (code !== undefined && compact().includes(code));
  return found && !source.echoes.some((e) => contains(e, value) || (code !== undefined && e.replace(/\s+/g, '') === code));
}

/** The string values a call's arguments hold (and the name it was made under), as echoes are recognised. */
function echoesOf(item: ContextItem): string[] {
  if (!item.call) return [];
  const out: string[] = item.name ? [normalise(item.name)] : [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') out.push(normalise(v));
    else if (typeof v === 'number') out.push(String(v));
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(item.call.args);
  return out.filter((e) => e.length >= 2);
}

const words = (s: string): string[] => s.toLowerCase().split(/[^a-z]+/).filter((w) => w.length >= 3 && w !== 'ids').map((w) => w.replace(/s$/, ''));
const sharesWord = (a: string, b: string): boolean => {
  const of = new Set(words(b));
  return words(a).some((w) => of.has(w));
};

/** How each identifying value of some arguments traces to the sources before them. */
function traceIn(args: Record<string, unknown>, sources: readonly Source[], always: (path: string) => boolean = () => false): TracedValue[] {
  const traced: TracedValue[] = [];
  for (const [path, raw, phrase] of leaves(args, '', always)) {
    const value = normalise(/^(https?:\/\/|www\.)/i.test(raw) ? canonicalUrl(raw) : raw.replace(/^mailto:/i, ''));
    const alt = value.replace(/\.0+$/, '');
    const code = isSpacedCode(raw) ? value.replace(/\s+/g, '') : undefined;
    // A short id in a record vouches only for an argument about that kind of record: event 13 is not file 13.
    const aligned = (s: Source) => {
      if (!s.scalars || value.length >= 6) return true;
      const key = s.scalars.get(value) ?? s.scalars.get(alt) ?? '';
      return sharesWord(path, s.item.name ?? '') || sharesWord(path, key);
    };
    const found = (pick: (s: Source) => boolean) => sources.find((s) => pick(s) && aligned(s) && holds(s, value, alt, code));
    const trusted = found((s) => s.item.label.integrity !== 'untrusted');
    const kind = destinationKind(raw);
    // Content the principal named vouches for a destination only when it holds one of that kind: a second
    // account or address in the same bill or page is someone else's choice, not the principal's.
    const designated = trusted ? undefined : found((s) => s.designated && (!kind || destinationsIn(s.item.content, kind) <= 1));
    const other = trusted ?? designated ?? found((s) => !s.item.flags?.includes('instructions')) ?? found(() => true);
    if (phrase && !other) continue;
    const provenance: Provenance = trusted
      ? 'trusted'
      : designated
        ? 'designated'
        : !other
          ? 'unseen'
          : other.item.flags?.includes('instructions')
            ? 'instructed'
            : 'untrusted';
    // A trusted record holds it, and third-party text names it too: that text may be what chose it among the records.
    const contested = trusted?.scalars !== undefined && found((s) => s.item.label.integrity === 'untrusted' && s.designated !== 'named') !== undefined;
    traced.push({ path, value: raw, provenance, ...(kind ? { kind } : {}), ...(contested ? { contested } : {}), ...(designated?.designated === 'searched' ? { searched: true } : {}), ...(other ? { from: { source: other.item.source, ...(other.item.name ? { name: other.item.name } : {}) } } : {}) });
  }
  return traced;
}

/** Values a structured result's system fields hold (keys the tool's classification names): its own record, not what a third party wrote. */
function fieldValues(content: string, fields: readonly string[]): RecordFields {
  const cacheKey = `${fields.join('\0')}\0\0${content}`;
  const cached = FIELD_CACHE.get(cacheKey);
  if (cached !== undefined) return cached;
  let parsed: unknown;
  try {
    parsed = parseYaml(content, { maxAliasCount: 0, uniqueKeys: true, strict: true });
  } catch {
    // Not a structured record: all of it stays as untrusted as the tool says.
    parsed = undefined;
  }
  const wanted = new Set(fields);
  const out: Array<[string, string]> = [];
  const free: string[] = [];
  // Only the field's own value, or a list of plain values: a record nested under it (an attached event) is someone's text.
  const scalars = (key: string, v: unknown): void => {
    if (typeof v === 'string' || typeof v === 'number') out.push([key, String(v)]);
    else if (Array.isArray(v)) for (const item of v) (typeof item === 'string' || typeof item === 'number' ? out.push([key, String(item)]) : walk(item));
    else walk(v);
  };
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      // `[]`: the plain values of a list (a registry of names); a value that is a whole text stays untrusted.
      for (const item of v) {
        // A registry's plain names, never an address or link anyone who adds an entry could choose.
        if (wanted.has('[]') && typeof item === 'string' && looksLikeIdentifier(item) && !/\s/.test(item.trim()) && destinationKind(item) === undefined) out.push(['[]', item]);
        else walk(item);
      }
    } else if (v && typeof v === 'object') for (const [k, item] of Object.entries(v)) wanted.has(k) ? scalars(k, item) : walk(item);
    else if (typeof v === 'string' || typeof v === 'number') free.push(String(v));
  };
  walk(parsed);
  const result: RecordFields = { vouched: out, ...(parsed !== undefined && typeof parsed === 'object' ? { free: free.join('\n') } : {}) };
  if (FIELD_CACHE.size >= 512) FIELD_CACHE.delete(FIELD_CACHE.keys().next().value!);
  FIELD_CACHE.set(cacheKey, result);
  return result;
}
const FIELD_CACHE = new Map<string, RecordFields>();

/** A structured result split: the values its system of record vouches for, and the rest (what third parties wrote), when it parsed as a record. */
interface RecordFields {
  vouched: Array<[key: string, value: string]>;
  free?: string;
}

export interface TraceOptions {
  /** Per tool, the policy's word on which keys of its structured results its own system vouches for, over the tool's. */
  trustedFields?: (tool: string) => readonly string[] | undefined;
  /** Argument paths traced whatever their length (the policy's targets: a one-digit id is still where the effect lands). */
  always?: (path: string) => boolean;
}

/**
 * Traces each identifying argument value (addresses, account numbers, URLs, ids, amounts) to the
 * context items it appears in: values that only untrusted content supplied are what an injected
 * instruction would make an agent use. Text a source repeats from the call that produced it (a
 * tool echoing its query, an error naming an unknown tool) vouches for nothing; untrusted content
 * fetched with values from the principal's request is `designated`, within limits.
 */
export function traceArguments(args: Record<string, unknown> | undefined, history: readonly ContextItem[], options: TraceOptions = {}): TracedValue[] {
  if (!args) return [];
  const sources: Source[] = [];
  for (const item of history) {
    const echoes = echoesOf(item);
    const untrusted = item.label.integrity === 'untrusted';
    // Named by the principal: every identifying value the call asked with came from their own request.
    const asked = untrusted && item.call ? traceIn(item.call.args, sources) : [];
    // Asked for with the principal's own words. Named, not searched for, when one of them is an address, a link or a
    // file name: that picks one document, a topic picks whatever matches it.
    const requested = asked.some((t) => !/^\d+$/.test(t.value)) && asked.every((t) => t.provenance === 'trusted' && t.from?.source === 'user');
    const designated = !requested ? false : asked.some((t) => t.kind !== undefined || FILE_NAME.test(t.value)) ? 'named' : 'searched';
    const fields = untrusted && item.source === 'tool' && item.name ? (options.trustedFields?.(item.name) ?? item.trustedFields) : undefined;
    const record = fields?.length ? fieldValues(item.content, fields) : undefined;
    if (record && record.vouched.length > 0) {
      const text = record.vouched.map(([, v]) => v).join('\n');
      const scalars = new Map(record.vouched.map(([k, v]) => [normalise(v.trim()).replace(/(?<=\d)\.0+$/, ''), k]));
      sources.push({ item: { ...item, content: text, label: { ...item.label, integrity: 'trusted' } }, text: normalise(text), echoes, designated: false, scalars });
    }
    // What third parties wrote in a record is its other fields; the vouched ones are not also their words.
    sources.push({ item, text: normalise(record?.free ?? item.content), echoes, designated });
  }
  return traceIn(args, sources, options.always);
}
