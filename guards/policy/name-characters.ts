/**
 * The characters of a name: which each kind of name may hold, how a character outside them is
 * described (`U+0435 CYRILLIC SMALL LETTER IE`), the plain name a lookalike passes for, and the
 * nearest of a set of names. Used by `policy-names.ts` to refuse names that would match nothing.
 */

/** What a name names: each kind has its own characters (see {@link nameProblem}). */
export type NameKind = 'agent' | 'tool' | 'role' | 'user' | 'category' | 'guard';

const RULES: Record<Exclude<NameKind, 'user'>, { pattern: RegExp; says: string }> = {
  agent: { pattern: /^[a-z][a-z0-9_-]{0,62}$/, says: 'agent names are a lowercase letter and up to 62 more of a-z, 0-9, _ and -' },
  tool: { pattern: /^[A-Za-z0-9_-]{1,64}$/, says: 'tool names are 1 to 64 of A-Z, a-z, 0-9, _ and -' },
  role: { pattern: /^[A-Za-z0-9_.:@/-]{1,128}$/, says: 'role names are 1 to 128 of A-Z, a-z, 0-9, _, -, ., :, @ and /' },
  category: { pattern: /^[A-Za-z0-9_.:-]{1,64}$/, says: 'categories are 1 to 64 of A-Z, a-z, 0-9, _, -, . and :' },
  guard: { pattern: /^[a-z][a-z0-9_.-]{0,63}$/, says: 'guard names are a lowercase letter and up to 63 more of a-z, 0-9, _, . and -' },
};

/** Characters that look like an ASCII one, with their Unicode names. */
const LOOKALIKES: ReadonlyMap<number, readonly [name: string, ascii: string]> = new Map<number, readonly [string, string]>([
  // Cyrillic
  [0x0430, ['CYRILLIC SMALL LETTER A', 'a']], [0x0435, ['CYRILLIC SMALL LETTER IE', 'e']], [0x043e, ['CYRILLIC SMALL LETTER O', 'o']],
  [0x0440, ['CYRILLIC SMALL LETTER ER', 'p']], [0x0441, ['CYRILLIC SMALL LETTER ES', 'c']], [0x0443, ['CYRILLIC SMALL LETTER U', 'y']],
  [0x0445, ['CYRILLIC SMALL LETTER HA', 'x']], [0x0455, ['CYRILLIC SMALL LETTER DZE', 's']],
  [0x0456, ['CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I', 'i']], [0x0458, ['CYRILLIC SMALL LETTER JE', 'j']],
  [0x04bb, ['CYRILLIC SMALL LETTER SHHA', 'h']], [0x04cf, ['CYRILLIC SMALL LETTER PALOCHKA', 'l']], [0x0501, ['CYRILLIC SMALL LETTER KOMI DE', 'd']],
  [0x051b, ['CYRILLIC SMALL LETTER QA', 'q']], [0x051d, ['CYRILLIC SMALL LETTER WE', 'w']], [0x0432, ['CYRILLIC SMALL LETTER VE', 'b']],
  [0x043a, ['CYRILLIC SMALL LETTER KA', 'k']], [0x043c, ['CYRILLIC SMALL LETTER EM', 'm']], [0x043d, ['CYRILLIC SMALL LETTER EN', 'h']],
  [0x0442, ['CYRILLIC SMALL LETTER TE', 't']], [0x0410, ['CYRILLIC CAPITAL LETTER A', 'A']], [0x0412, ['CYRILLIC CAPITAL LETTER VE', 'B']],
  [0x0415, ['CYRILLIC CAPITAL LETTER IE', 'E']], [0x041a, ['CYRILLIC CAPITAL LETTER KA', 'K']], [0x041c, ['CYRILLIC CAPITAL LETTER EM', 'M']],
  [0x041d, ['CYRILLIC CAPITAL LETTER EN', 'H']], [0x041e, ['CYRILLIC CAPITAL LETTER O', 'O']], [0x0420, ['CYRILLIC CAPITAL LETTER ER', 'P']],
  [0x0421, ['CYRILLIC CAPITAL LETTER ES', 'C']], [0x0422, ['CYRILLIC CAPITAL LETTER TE', 'T']], [0x0423, ['CYRILLIC CAPITAL LETTER U', 'Y']],
  [0x0425, ['CYRILLIC CAPITAL LETTER HA', 'X']], [0x0405, ['CYRILLIC CAPITAL LETTER DZE', 'S']],
  [0x0406, ['CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I', 'I']], [0x0408, ['CYRILLIC CAPITAL LETTER JE', 'J']],
  // Greek
  [0x03b1, ['GREEK SMALL LETTER ALPHA', 'a']], [0x03b5, ['GREEK SMALL LETTER EPSILON', 'e']], [0x03b9, ['GREEK SMALL LETTER IOTA', 'i']],
  [0x03ba, ['GREEK SMALL LETTER KAPPA', 'k']], [0x03bd, ['GREEK SMALL LETTER NU', 'v']], [0x03bf, ['GREEK SMALL LETTER OMICRON', 'o']],
  [0x03c1, ['GREEK SMALL LETTER RHO', 'p']], [0x03c4, ['GREEK SMALL LETTER TAU', 't']], [0x03c5, ['GREEK SMALL LETTER UPSILON', 'u']],
  [0x03c7, ['GREEK SMALL LETTER CHI', 'x']], [0x0391, ['GREEK CAPITAL LETTER ALPHA', 'A']], [0x0392, ['GREEK CAPITAL LETTER BETA', 'B']],
  [0x0395, ['GREEK CAPITAL LETTER EPSILON', 'E']], [0x0396, ['GREEK CAPITAL LETTER ZETA', 'Z']], [0x0397, ['GREEK CAPITAL LETTER ETA', 'H']],
  [0x0399, ['GREEK CAPITAL LETTER IOTA', 'I']], [0x039a, ['GREEK CAPITAL LETTER KAPPA', 'K']], [0x039c, ['GREEK CAPITAL LETTER MU', 'M']],
  [0x039d, ['GREEK CAPITAL LETTER NU', 'N']], [0x039f, ['GREEK CAPITAL LETTER OMICRON', 'O']], [0x03a1, ['GREEK CAPITAL LETTER RHO', 'P']],
  [0x03a4, ['GREEK CAPITAL LETTER TAU', 'T']], [0x03a5, ['GREEK CAPITAL LETTER UPSILON', 'Y']], [0x03a7, ['GREEK CAPITAL LETTER CHI', 'X']],
  // Latin and Armenian letters outside ASCII that pass for ASCII ones
  [0x0131, ['LATIN SMALL LETTER DOTLESS I', 'i']], [0x0251, ['LATIN SMALL LETTER ALPHA', 'a']], [0x0261, ['LATIN SMALL LETTER SCRIPT G', 'g']],
  [0x026a, ['LATIN LETTER SMALL CAPITAL I', 'i']], [0x1d0f, ['LATIN LETTER SMALL CAPITAL O', 'o']], [0x2113, ['SCRIPT SMALL L', 'l']],
  [0x0585, ['ARMENIAN SMALL LETTER OH', 'o']], [0x057d, ['ARMENIAN SMALL LETTER SEH', 'u']], [0x0578, ['ARMENIAN SMALL LETTER VO', 'n']],
  // Dashes, underscores and dots
  [0x2010, ['HYPHEN', '-']], [0x2011, ['NON-BREAKING HYPHEN', '-']], [0x2012, ['FIGURE DASH', '-']], [0x2013, ['EN DASH', '-']],
  [0x2014, ['EM DASH', '-']], [0x2212, ['MINUS SIGN', '-']], [0xfe63, ['SMALL HYPHEN-MINUS', '-']], [0x2017, ['DOUBLE LOW LINE', '_']],
  [0x2024, ['ONE DOT LEADER', '.']], [0x0589, ['ARMENIAN FULL STOP', ':']], [0x2236, ['RATIO', ':']],
]);

/** The ASCII character a lookalike passes for ('a' for Cyrillic U+0430), if it is one. */
export const lookalikeAscii = (cp: number): string | undefined => LOOKALIKES.get(cp)?.[1];

/** Characters that show as nothing (or as a plain space), with their Unicode names. */
const INVISIBLE: ReadonlyMap<number, string> = new Map([
  [0x00a0, 'NO-BREAK SPACE'], [0x00ad, 'SOFT HYPHEN'], [0x034f, 'COMBINING GRAPHEME JOINER'], [0x061c, 'ARABIC LETTER MARK'],
  [0x115f, 'HANGUL CHOSEONG FILLER'], [0x1160, 'HANGUL JUNGSEONG FILLER'], [0x17b4, 'KHMER VOWEL INHERENT AQ'], [0x17b5, 'KHMER VOWEL INHERENT AA'],
  [0x180e, 'MONGOLIAN VOWEL SEPARATOR'], [0x2000, 'EN QUAD'], [0x2001, 'EM QUAD'], [0x2002, 'EN SPACE'], [0x2003, 'EM SPACE'],
  [0x2004, 'THREE-PER-EM SPACE'], [0x2005, 'FOUR-PER-EM SPACE'], [0x2006, 'SIX-PER-EM SPACE'], [0x2007, 'FIGURE SPACE'],
  [0x2008, 'PUNCTUATION SPACE'], [0x2009, 'THIN SPACE'], [0x200a, 'HAIR SPACE'], [0x200b, 'ZERO WIDTH SPACE'], [0x200c, 'ZERO WIDTH NON-JOINER'],
  [0x200d, 'ZERO WIDTH JOINER'], [0x200e, 'LEFT-TO-RIGHT MARK'], [0x200f, 'RIGHT-TO-LEFT MARK'], [0x202a, 'LEFT-TO-RIGHT EMBEDDING'],
  [0x202b, 'RIGHT-TO-LEFT EMBEDDING'], [0x202c, 'POP DIRECTIONAL FORMATTING'], [0x202d, 'LEFT-TO-RIGHT OVERRIDE'], [0x202e, 'RIGHT-TO-LEFT OVERRIDE'],
  [0x202f, 'NARROW NO-BREAK SPACE'], [0x205f, 'MEDIUM MATHEMATICAL SPACE'], [0x2060, 'WORD JOINER'], [0x2061, 'FUNCTION APPLICATION'],
  [0x2062, 'INVISIBLE TIMES'], [0x2063, 'INVISIBLE SEPARATOR'], [0x2064, 'INVISIBLE PLUS'], [0x2066, 'LEFT-TO-RIGHT ISOLATE'],
  [0x2067, 'RIGHT-TO-LEFT ISOLATE'], [0x2068, 'FIRST STRONG ISOLATE'], [0x2069, 'POP DIRECTIONAL ISOLATE'], [0x3000, 'IDEOGRAPHIC SPACE'],
  [0x3164, 'HANGUL FILLER'], [0xfeff, 'ZERO WIDTH NO-BREAK SPACE'], [0xffa0, 'HALFWIDTH HANGUL FILLER'],
]);

const SCRIPTS = ['Latin', 'Greek', 'Cyrillic', 'Armenian', 'Hebrew', 'Arabic', 'Georgian', 'Cherokee', 'Devanagari', 'Bengali', 'Thai', 'Hangul', 'Hiragana', 'Katakana', 'Han', 'Ethiopic', 'Mongolian', 'Tifinagh'] as const;
const SCRIPT_TESTS = SCRIPTS.map((s) => [s, new RegExp(`^\\p{Script=${s}}$`, 'u')] as const);
const scriptOf = (ch: string): string | undefined => SCRIPT_TESTS.find(([, re]) => re.test(ch))?.[0];

const hex = (cp: number) => `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;

/** Shows nothing, or is not a character a name could hold visibly. */
const isHidden = (ch: string, cp: number): boolean => INVISIBLE.has(cp) || /^[\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}\p{Co}\p{Cn}\p{Cs}]$/u.test(ch) || (cp >= 0xe0000 && cp <= 0xe007f) || (cp >= 0xfe00 && cp <= 0xfe0f);

/** One character as a person can recognise it: `U+0435 CYRILLIC SMALL LETTER IE`. */
export function describeCharacter(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (cp < 0x80) {
    if (cp === 0x20) return 'a space';
    if (cp < 0x20 || cp === 0x7f) return `${hex(cp)}, a control character`;
    return `"${ch}"`;
  }
  const lookalike = LOOKALIKES.get(cp);
  if (lookalike) return `${hex(cp)} ${lookalike[0]}`;
  const hidden = INVISIBLE.get(cp);
  if (hidden) return `${hex(cp)} ${hidden}, which is invisible`;
  if (cp >= 0xff01 && cp <= 0xff5e) return `${hex(cp)}, a fullwidth "${String.fromCodePoint(cp - 0xfee0)}"`;
  if (cp >= 0xe0000 && cp <= 0xe007f) return `${hex(cp)}, an invisible tag character`;
  if (cp >= 0xfe00 && cp <= 0xfe0f) return `${hex(cp)}, an invisible variation selector`;
  if (/^\p{Cf}$/u.test(ch)) return `${hex(cp)}, an invisible formatting character`;
  if (/^[\p{Zs}\p{Zl}\p{Zp}]$/u.test(ch)) return `${hex(cp)}, a space character`;
  if (/^\p{Cc}$/u.test(ch)) return `${hex(cp)}, a control character`;
  if (/^\p{M}$/u.test(ch)) return `${hex(cp)}, a combining mark`;
  const script = scriptOf(ch);
  if (/^\p{L}$/u.test(ch)) {
    const base = ch.normalize('NFKD').replace(/\p{M}/gu, '');
    if (/^[\x21-\x7e]+$/.test(base)) return `${hex(cp)}, a form of "${base}" outside ASCII`;
    return `${hex(cp)}, a${script ? ` ${script}` : ''} letter`;
  }
  if (/^\p{N}$/u.test(ch)) return `${hex(cp)}, a digit outside ASCII`;
  return `${hex(cp)}, a character outside ASCII`;
}

/** The name with lookalikes replaced by the ASCII they pass for and invisible characters dropped. */
export function skeleton(name: string): string {
  let out = '';
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    const lookalike = LOOKALIKES.get(cp);
    if (lookalike) out += lookalike[1];
    else if (cp >= 0xff01 && cp <= 0xff5e) out += String.fromCodePoint(cp - 0xfee0);
    else if (cp < 0x80) out += ch;
    else if (isHidden(ch, cp) || /^\p{M}$/u.test(ch)) continue;
    else {
      const base = ch.normalize('NFKD').replace(/\p{M}/gu, '');
      out += /^[\x21-\x7e]+$/.test(base) ? base : ch;
    }
  }
  return out;
}

/** The name as a message shows it: quoted, with characters that do not show written as `\u{…}`. */
export function quoteName(name: string): string {
  let out = '';
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp < 0x20 || cp === 0x7f || (cp >= 0x80 && isHidden(ch, cp))) out += `\\u{${cp.toString(16)}}`;
    else out += ch;
  }
  return `"${out}"`;
}

const list = (items: readonly string[]) => (items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`);

/** The characters of `name` outside `allowed` (ASCII the kind does not take, or anything else), described. */
function strangers(name: string, asciiAllowed: RegExp): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const ch of name) {
    if (ch.codePointAt(0)! < 0x80 && asciiAllowed.test(ch)) continue;
    if (seen.has(ch)) continue;
    seen.add(ch);
    out.push(describeCharacter(ch));
  }
  return out;
}

const NAME_CHARS: Record<Exclude<NameKind, 'user'>, RegExp> = {
  agent: /^[a-z0-9_-]$/,
  tool: /^[A-Za-z0-9_-]$/,
  role: /^[A-Za-z0-9_.:@/-]$/,
  category: /^[A-Za-z0-9_.:-]$/,
  guard: /^[a-z0-9_.-]$/,
};

/**
 * What is wrong with a name of this kind, or undefined when it is plain: `contains U+0435 CYRILLIC
 * SMALL LETTER IE; did you mean "refund_order"?`. For a pattern, only its literal parts are checked.
 */
export function nameProblem(kind: NameKind, name: string, pattern?: readonly string[]): string | undefined {
  const text = pattern ? pattern.join('') : name;
  if (kind === 'user') return userProblem(text);
  const rule = RULES[kind];
  if (text === '') return pattern ? undefined : 'is empty';
  const bad = strangers(text, NAME_CHARS[kind]);
  // A pattern's literal parts need only hold the characters a name can; a name must fit the kind's shape.
  if (bad.length === 0 && (pattern || rule.pattern.test(text))) return undefined;
  // Lookalikes replaced, and, for kinds that are lowercase, lowercased.
  const plain = (s: string) => (kind === 'agent' || kind === 'guard' ? skeleton(s).toLowerCase() : skeleton(s));
  const fixed = pattern ? pattern.map(plain).join('*') : plain(text);
  const fits = pattern ? strangers(pattern.map(plain).join(''), NAME_CHARS[kind]).length === 0 : rule.pattern.test(fixed);
  const suggestion = fixed !== name && fits ? `; did you mean ${quoteName(fixed)}?` : '';
  const nonAscii = [...text].some((ch) => ch.codePointAt(0)! >= 0x80);
  if (bad.length > 0) {
    const shown = bad.length > 3 ? [...bad.slice(0, 3), `${bad.length - 3} more`] : bad;
    return `contains ${list(shown)}${nonAscii ? '' : ` (${rule.says})`}${suggestion}`;
  }
  // Only allowed characters, in a shape the kind does not take (too long, a leading digit).
  return `is not a possible ${kind} name: ${rule.says}${suggestion}`;
}

/** User ids come from the identity provider and may be in any one script, visibly. */
function userProblem(id: string): string | undefined {
  if (id === '') return 'is empty';
  if (/^[\x21-\x7e]+$/.test(id)) return undefined;
  const hidden = [...new Set([...id].filter((ch) => isHidden(ch, ch.codePointAt(0)!) || ch === ' '))].map(describeCharacter);
  if (hidden.length > 0) return `contains ${list(hidden.slice(0, 3))}`;
  const scripts = new Map<string, string>();
  for (const ch of id) {
    if (!/^\p{L}$/u.test(ch)) continue;
    const script = scriptOf(ch) ?? 'another script';
    if (!scripts.has(script)) scripts.set(script, ch);
  }
  const fixed = skeleton(id);
  const suggestion = fixed !== id && /^[\x21-\x7e]+$/.test(fixed) ? `; did you mean ${quoteName(fixed)}?` : '';
  const outside = [...new Set([...id].filter((ch) => ch.codePointAt(0)! >= 0x80))];
  if (scripts.size > 1) {
    const foreign = [...id].filter((ch) => /^\p{L}$/u.test(ch) && ch.codePointAt(0)! >= 0x80 && scriptOf(ch) !== 'Latin');
    return `mixes ${list([...scripts.keys()])} letters (${list([...new Set(foreign)].slice(0, 3).map(describeCharacter))})${suggestion}`;
  }
  // One script, but every character outside ASCII is a known lookalike of an ASCII one ("аӏісе"); an
  // accented Latin name ("josé") is a name of its own.
  const lookalike = (ch: string) => LOOKALIKES.has(ch.codePointAt(0)!) || (ch.codePointAt(0)! >= 0xff01 && ch.codePointAt(0)! <= 0xff5e);
  if (suggestion && outside.every(lookalike)) return `is written in lookalikes of Latin letters (${list(outside.slice(0, 3).map(describeCharacter))})${suggestion}`;
  return undefined;
}

// ------------------------------------------------------------------------------------------------
// Nearest names

/** Edit distance with adjacent transpositions (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidate `name` most likely meant: the same letters up to case, separators and lookalikes, else the closest within a few edits. */
export function nearestName(name: string, candidates: Iterable<string>): string | undefined {
  const loose = (s: string) => skeleton(s).toLowerCase().replace(/[-_.\s]/g, '');
  const want = loose(name);
  let best: { name: string; distance: number } | undefined;
  for (const c of [...candidates].sort()) {
    if (c === name) continue;
    const distance = loose(c) === want ? 0 : editDistance(skeleton(name).toLowerCase(), c.toLowerCase());
    if (!best || distance < best.distance) best = { name: c, distance };
  }
  if (!best) return undefined;
  return best.distance <= Math.max(1, Math.floor(name.length / 4)) ? best.name : undefined;
}
