/**
 * Where a planted attacker text sits in a recorded tool result, and how that result wrote it.
 *
 * AgentDojo plants the attacker's text into the environment's YAML and the tools return what they
 * read, serialised: verbatim (a file's text), folded by the YAML load (a single line break became a
 * space, a blank line a line break), as a YAML single-quoted or plain scalar (quotes doubled, line
 * breaks doubled and indented, long lines wrapped), as a YAML double-quoted scalar (`\n`, `\"`,
 * `\uXXXX` escapes, lines wrapped with a trailing backslash) or as a Python repr inside a dict
 * (`\n`, `\'` escapes). {@link locatePlanted} finds every occurrence whatever the form, and says
 * which form it is, so that {@link encodePlanted} can write a replacement text the way the same
 * tool would have written it.
 */

export type PlantedStyle = 'raw' | 'yaml-flow' | 'yaml-double' | 'python';

export interface PlantedEncoding {
  style: PlantedStyle;
  /** The YAML load folded the planted text's line breaks before the tool wrote it. */
  folded: boolean;
  /** yaml-flow: the indentation of continuation lines. */
  indent: string;
  /** yaml-flow: single-quoted (quotes doubled) rather than plain. */
  quoted: boolean;
  /** python: the string's delimiter, escaped inside it. */
  quote: "'" | '"';
}

export interface PlantedSpan {
  start: number;
  end: number;
  encoding: PlantedEncoding;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');
/** Both cases of the hex digits, since serialisers differ (YAML writes upper case, Python lower). */
const hexRe = (n: number, width: number): string => [...hex(n, width)].map((d) => (/[a-f]/.test(d) ? `[${d}${d.toUpperCase()}]` : d)).join('');

/** One character of the planted text, as any of the serialisers may have written it. */
function charRe(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (ch === "'") return "(?:''|\\\\'|')";
  if (ch === '"') return '(?:\\\\"|")';
  if (ch === '\\') return '\\\\{1,2}';
  if (cp < 0x80) return escapeRe(ch);
  const escapes = [cp <= 0xff ? `\\\\x${hexRe(cp, 2)}` : '', cp <= 0xffff ? `\\\\u${hexRe(cp, 4)}` : `\\\\U${hexRe(cp, 8)}`].filter(Boolean);
  return `(?:${escapeRe(ch)}|${escapes.join('|')})`;
}

/** Between two words: whitespace, escaped line breaks and tabs, and the backslashes of wrapped double-quoted lines. */
const SEPARATOR = '(?:\\s|\\\\[nrt]|\\\\(?=\\s))+';

/** A pattern that finds `planted` (its words, in order) in any of the forms above; undefined for blank text. */
export function plantedPattern(planted: string): RegExp | undefined {
  const words = planted.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return undefined;
  return new RegExp(words.map((w) => [...w].map(charRe).join('')).join(SEPARATOR), 'g');
}

/** The YAML load's folding of line breaks in a flow scalar: a single break is a space, n+1 breaks are n line breaks. */
export function foldLineBreaks(text: string): string {
  return text.replace(/[ \t]*\n(?:[ \t]*\n)*[ \t]*/g, (run) => {
    const breaks = run.split('\n').length - 1;
    return breaks === 1 ? ' ' : '\n'.repeat(breaks - 1);
  });
}

const unescapeBackslashes = (s: string): string =>
  s.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/gs, (_, e: string) => {
    if (e.length > 1) return String.fromCodePoint(parseInt(e.slice(1), 16));
    return ({ n: '\n', t: '\t', r: '\r', '0': '\0', _: '\u00a0', N: '\u0085', L: '\u2028', P: '\u2029', e: '\x1b' } as Record<string, string>)[e] ?? e;
  });

/** What a span written in `encoding` says (wraps and escapes undone). */
export function decodePlanted(written: string, encoding: PlantedEncoding): string {
  switch (encoding.style) {
    case 'raw':
      return written;
    case 'yaml-flow':
      return foldLineBreaks(encoding.quoted ? written.replace(/''/g, "'") : written);
    case 'yaml-double':
      return unescapeBackslashes(foldLineBreaks(written.replace(/\\\r?\n[ \t]*/g, '')));
    case 'python':
      return unescapeBackslashes(written);
  }
}

/** PyYAML's double-quoted escapes (allow_unicode off: everything outside printable ASCII is escaped). */
function yamlDoubleEscape(text: string): string {
  const named: Record<string, string> = { '\0': '0', '\x07': 'a', '\b': 'b', '\t': 't', '\n': 'n', '\v': 'v', '\f': 'f', '\r': 'r', '\x1b': 'e', '"': '"', '\\': '\\', '\u0085': 'N', '\u00a0': '_', '\u2028': 'L', '\u2029': 'P' };
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (named[ch] !== undefined) out += `\\${named[ch]}`;
    else if (cp >= 0x20 && cp <= 0x7e) out += ch;
    else out += cp <= 0xff ? `\\x${hex(cp, 2).toUpperCase()}` : cp <= 0xffff ? `\\u${hex(cp, 4).toUpperCase()}` : `\\U${hex(cp, 8).toUpperCase()}`;
  }
  return out;
}

/** Python's repr escapes: backslash, the delimiter, control characters and other non-printable characters. */
function pythonEscape(text: string, quote: string): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (ch === '\\' || ch === quote) out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f || (cp > 0x7f && !/^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(ch) && ch !== ' ')) out += cp <= 0xff ? `\\x${hex(cp, 2)}` : cp <= 0xffff ? `\\u${hex(cp, 4)}` : `\\U${hex(cp, 8)}`;
    else out += ch;
  }
  return out;
}

/** `text` written the way a span of that encoding was written (without wrapping long lines). */
export function encodePlanted(text: string, encoding: PlantedEncoding): string {
  const t = encoding.folded ? foldLineBreaks(text) : text;
  switch (encoding.style) {
    case 'raw':
      return t;
    case 'yaml-flow':
      return (encoding.quoted ? t.replace(/'/g, "''") : t).replace(/\n+/g, (breaks) => `${'\n'.repeat(breaks.length + 1)}${encoding.indent}`);
    case 'yaml-double':
      return yamlDoubleEscape(t);
    case 'python':
      return pythonEscape(t, encoding.quote);
  }
}

/** The YAML mapping value the position is in, if the content is YAML there: its continuation indent and quoting. */
function yamlScalarAt(content: string, start: number): { indent: string; quoted: boolean } | undefined {
  const KEY = /^([ \t]*)((?:- )*)[^\s'"#:-][^\n:]{0,80}:[ \t]+(['"]?)/;
  const lines = content.slice(0, start).split('\n');
  const own = lines.pop() ?? '';
  const here = KEY.exec(own);
  if (here) return { indent: ' '.repeat(here[1]!.length + here[2]!.length + 2), quoted: here[3] === "'" };
  const indent = /^[ \t]*/.exec(own)![0];
  if (!indent) return undefined;
  for (let i = lines.length - 1; i >= 0 && i >= lines.length - 400; i--) {
    const line = lines[i]!;
    if (line.trim() === '' || /^[ \t]*/.exec(line)![0].length >= indent.length) continue;
    const key = KEY.exec(line);
    return key ? { indent, quoted: key[3] === "'" } : undefined;
  }
  return undefined;
}

const ESCAPED = /\\(?:[nrt"'\\]|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|\r?\n)/;

/** How the span [start, end) of `content` was written; `core` is the planted text it holds. */
function encodingAt(content: string, start: number, end: number, core: string): PlantedEncoding {
  const written = content.slice(start, end);
  const base: PlantedEncoding = { style: 'raw', folded: false, indent: '', quoted: false, quote: "'" };
  const newlines = (s: string) => (s.match(/\n/g) ?? []).length;
  const withFold = (e: PlantedEncoding): PlantedEncoding => ({ ...e, folded: newlines(core) > 0 && newlines(decodePlanted(written, e)) < newlines(core) });
  const around = content.slice(Math.max(0, start - 200), start) + content.slice(end, end + 200);
  if (ESCAPED.test(written) || (!written.includes('\n') && ESCAPED.test(around))) {
    const head = content.trimStart()[0];
    if (head !== '{' && head !== '[') return withFold({ ...base, style: 'yaml-double' });
    // The Python string's delimiter: an escaped quote says it; else the nearest opener before the span.
    let quote: "'" | '"' = written.includes('\\"') && !written.includes("\\'") ? '"' : "'";
    if (!written.includes("\\'") && !written.includes('\\"')) {
      const before = content.slice(Math.max(0, start - 100_000), start);
      const last = (q: string) => Math.max(...[': ', '[', ', ', '{'].map((p) => before.lastIndexOf(p + q)));
      quote = last('"') > last("'") ? '"' : "'";
    }
    return withFold({ ...base, style: 'python', quote });
  }
  const scalar = yamlScalarAt(content, start);
  const continued = /\n([ \t]+)\S/.exec(written)?.[1];
  // Line breaks written as indented continuation lines, or quotes doubled: a YAML scalar. Plain line breaks: the text as is.
  if (continued !== undefined || written.includes("''") || (scalar && !written.includes('\n'))) {
    return withFold({ ...base, style: 'yaml-flow', indent: continued ?? scalar?.indent ?? '  ', quoted: written.includes("''") || (scalar?.quoted ?? false) });
  }
  return withFold(base);
}

/** Every occurrence of `planted` in `content`, in order, with how each was written. */
export function locatePlanted(content: string, planted: string): PlantedSpan[] {
  const re = plantedPattern(planted);
  if (!re) return [];
  const core = planted.trim();
  const spans: PlantedSpan[] = [];
  for (const m of content.matchAll(re)) spans.push({ start: m.index, end: m.index + m[0].length, encoding: encodingAt(content, m.index, m.index + m[0].length, core) });
  return spans;
}

/** `content` with each planted text replaced by its replacement, written the way each occurrence was. */
export function replacePlanted(content: string, replacements: ReadonlyArray<{ planted: string; replacement: string }>): { content: string; replaced: number } {
  const spans = replacements
    .flatMap(({ planted, replacement }) => locatePlanted(content, planted).map((s) => ({ ...s, replacement: replacement.trim() })))
    // Longest first where two planted texts overlap.
    .sort((a, b) => a.start - b.start || b.end - a.end);
  let out = '';
  let at = 0;
  let replaced = 0;
  for (const s of spans) {
    if (s.start < at) continue;
    out += content.slice(at, s.start) + encodePlanted(s.replacement, s.encoding);
    at = s.end;
    replaced++;
  }
  return { content: out + content.slice(at), replaced };
}
