/**
 * The text as the PII and secret detectors read it: rewritten so that a value cannot hide behind
 * how it is encoded, with every character of the view tied to the characters of the original it
 * came from, so a finding maps back to exactly the original characters (and redaction removes
 * them, the hidden ones inside included).
 *
 * The rewrites, each a Unicode or web convention, not a list of attacks:
 * - NFKC: full-width, superscript, circled and ligature forms become their plain characters;
 * - format and invisible characters (zero-width spaces and joiners, bidi controls, soft hyphens,
 *   variation selectors, tag characters) are dropped, and so are combining marks on ASCII characters;
 * - decimal digits of every script (Arabic-Indic, Devanagari...) become ASCII digits;
 * - separators are unified: every dash to '-', every space to ' ', line and paragraph separators
 *   to '\n', the ideographic full stop and middle dots to '.', fraction and division slashes to '/';
 * - a letter that passes for an ASCII one (Cyrillic 'а', Greek 'Ο') becomes it, in a word that
 *   also has ASCII letters or digits (a mixed-script word); words wholly in another script stay;
 * - percent-encoding is decoded where it decodes to printable UTF-8 (`john%40example.com`), and
 *   character references (`&#64;`, `&#x40;`, `&commat;`) and JavaScript/JSON escapes (`\u0040`)
 *   likewise, two levels deep (`%2540`); defanged dots (`[.]`, `(.)`) become dots;
 * - symbols (`№`, `™`) keep their form rather than NFKC's letters, which would glue to a number.
 *
 * Linear: at most two passes over the text (the second only if the first left an encoding), and
 * one NFKC call per run of non-ASCII characters (per character only where the run changes). ASCII
 * with nothing encoded returns at once.
 */
import { lookalikeAscii } from '../policy/name-characters.js';
import { MappedTextBuilder, unchanged, type MappedText } from './mapped-text.js';

/** Text with nothing to rewrite: ASCII without an encoding, a defanged dot or a character reference. */
const REWRITABLE = /[^\x00-\x7f]|%[0-9A-Fa-f]{2}|&#|&[a-z]+;|\\[ux][0-9A-Fa-f{]|\\[ntrbf"'\\/]|[[(]\.[)\]]/;
/** Encodings left in a view: the text was encoded more than once ("%2540", "&amp;#64;", "[&#46;]"). */
const ENCODED = /%[0-9A-Fa-f]{2}|&#|&[a-z]+;|\\[ux][0-9A-Fa-f{]|\\[ntr"\\/]|[[(]\.[)\]]/;
/** Encodings undone at most this deep; each level only shrinks the text, so the work stays linear. */
const MAX_LEVELS = 4;

/** The normalised view of `text`: encodings are undone level after level, up to MAX_LEVELS deep. */
export function normalisedView(text: string): MappedText {
  let view = normalisedOnce(text);
  for (let level = 1; level < MAX_LEVELS && view.rewritten && ENCODED.test(view.text); level++) {
    const next = normalisedOnce(view.text);
    if (!next.rewritten || next.text === view.text) break;
    view = composed(view, next);
  }
  return view;
}

/** `inner`, made from `outer`'s text, mapped back through both. */
function composed(outer: MappedText, inner: MappedText): MappedText {
  return {
    text: inner.text,
    rewritten: true,
    original: (s, e) => {
      const [s1, e1] = inner.original(s, e);
      return outer.original(s1, Math.max(e1, s1 + 1));
    },
  };
}

/** Native substring searches first: most text is ASCII without '%', '&' or '\\', and is let through at once. */
const NON_ASCII = /[^\x00-\x7f]/;
const mayNeedRewriting = (text: string): boolean =>
  NON_ASCII.test(text) || text.includes('%') || text.includes('&') || text.includes('\\') || text.includes('[.]') || text.includes('(.)');

function normalisedOnce(text: string): MappedText {
  if (!mayNeedRewriting(text) || !REWRITABLE.test(text)) return unchanged(text);
  const b = new ViewBuilder(text.length);
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c < 0x80) {
      const decoded =
        c === 0x25 ? percentDecoded(text, i) : c === 0x26 ? characterReference(text, i) : c === 0x5c ? escapeSequence(text, i) : c === 0x5b || c === 0x28 ? defangedDot(text, i) : undefined;
      if (decoded !== undefined) {
        for (const ch of decoded.chars) appendNormalised(b, ch, i, decoded.end);
        i = decoded.end;
      } else {
        b.push(c, i, i + 1);
        i++;
      }
      continue;
    }
    // A run of non-ASCII characters, at most RUN units: one NFKC call when nothing in it needs
    // rewriting. Past MAX_MARKS marks in a row the run ends and the rest of the marks are dropped
    // (Unicode's stream-safe limit): NFKC reorders marks in quadratic time.
    let j = i;
    let marks = 0;
    while (j < n && text.charCodeAt(j) >= 0x80 && j - i < RUN) {
      const cp = text.codePointAt(j)!;
      marks = isMark(cp) ? marks + 1 : 0;
      if (marks > MAX_MARKS) break;
      j += cp > 0xffff ? 2 : 1;
    }
    const run = text.slice(i, j);
    if (run.normalize('NFKC') === run && !NEEDS_REWRITE.test(run)) {
      for (let k = i; k < j; k++) {
        const code = text.charCodeAt(k);
        const ascii = lookalikeAscii(code);
        if (ascii === undefined) b.push(code, k, k + 1);
        else b.pushLookalike(code, ascii.charCodeAt(0), k, k + 1);
      }
    } else {
      // Per character with the combining marks after it, so each output char knows its source.
      let k = i;
      while (k < j) {
        let e = k + (text.codePointAt(k)! > 0xffff ? 2 : 1);
        while (e < j && isMark(text.codePointAt(e)!)) e += text.codePointAt(e)! > 0xffff ? 2 : 1;
        appendNormalised(b, text.slice(k, e), k, e);
        k = e;
      }
    }
    i = j;
    if (marks > MAX_MARKS) while (i < n && isMark(text.codePointAt(i)!)) i += text.codePointAt(i)! > 0xffff ? 2 : 1;
  }
  return b.build();
}

const MARK = /^\p{M}$/u;
const isMark = (cp: number): boolean => cp >= 0x300 && MARK.test(String.fromCodePoint(cp));
/** Longest run handed to NFKC at once, and marks kept in a row (UAX #15's stream-safe format). */
const RUN = 1024;
const MAX_MARKS = 30;
const SYMBOL = /^\p{So}/u;
/** Characters NFKC leaves alone that the view still rewrites or drops. */
const NEEDS_REWRITE = /[\p{M}\p{Cf}\p{Zs}\p{Nd}\p{Pd}\u2028\u2029\u3002\u00b7\u2027\u30fb\u2219\u2044\u2215\u2212\u034f\u115f\u1160\u3164\uffa0\ufe00-\ufe0f\u{e0000}-\u{e0fff}]/u;
const DROPPED = /^[\p{Cf}\u034f\u115f\u1160\u3164\uffa0\ufe00-\ufe0f\u{e0000}-\u{e0fff}]$/u;

/** Appends the normalised form of `chunk` (one character and its marks, or decoded text), all from original [s, e). */
function appendNormalised(b: ViewBuilder, chunk: string, s: number, e: number): void {
  // Symbols keep their form: NFKC would spell "№" as "No" and glue letters to the number after it.
  const form = SYMBOL.test(chunk) ? chunk : chunk.normalize('NFKC');
  for (const ch of form) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) {
      b.push(cp, s, e);
      continue;
    }
    if (DROPPED.test(ch)) continue;
    // A mark on a character that is or became ASCII ("4\u0336", "４\u0336" → "4"): dropped, since the
    // detectors read ASCII and a mark must not split a number or a token.
    if (MARK.test(ch) && b.length > 0 && (b.codeAt(b.length - 1) < 0x80 || b.lastIsLookalike())) continue;
    const folded = foldCharacter(ch, cp);
    if (folded !== undefined) {
      b.push(folded, s, e);
      continue;
    }
    const ascii = lookalikeAscii(cp);
    if (ascii !== undefined) {
      b.pushLookalike(cp, ascii.charCodeAt(0), s, e);
      continue;
    }
    for (let k = 0; k < ch.length; k++) b.push(ch.charCodeAt(k), s, e);
  }
}

/** The ASCII character code a separator or digit stands for, if it is one. */
function foldCharacter(ch: string, cp: number): number | undefined {
  if (/^\p{Nd}$/u.test(ch)) return 48 + digitValue(cp);
  if (/^\p{Pd}$/u.test(ch) || cp === 0x2212) return 45;
  if (/^\p{Zs}$/u.test(ch)) return 32;
  if (cp === 0x2028 || cp === 0x2029) return 10;
  if (cp === 0x3002 || cp === 0x00b7 || cp === 0x2027 || cp === 0x30fb || cp === 0x2219) return 46; // full stops and middle dots
  if (cp === 0x2044 || cp === 0x2215) return 47;
  return undefined;
}

/** Unicode decimal digits come in runs of ten, zero first: the value is the distance to the run's zero. */
let zeros: number[] | undefined;
function digitValue(cp: number): number {
  if (zeros === undefined) {
    zeros = [];
    const nd = /^\p{Nd}$/u;
    for (let z = 0x30; z < 0x20000; z++) {
      if (!nd.test(String.fromCodePoint(z))) continue;
      zeros.push(z);
      while (z + 1 < 0x20000 && nd.test(String.fromCodePoint(z + 1))) z++; // the rest of this block (runs of 10, some adjacent)
    }
  }
  let lo = 0;
  let hi = zeros.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (zeros[mid]! <= cp) lo = mid;
    else hi = mid - 1;
  }
  return (cp - zeros[lo]!) % 10;
}

const isHex = (c: number): boolean => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const hexValue = (c: number): number => (c <= 57 ? c - 48 : (c | 0x20) - 87);
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The byte of a `%XX` at `i`, or -1. */
function percentByte(text: string, i: number): number {
  if (text.charCodeAt(i) !== 0x25 || !isHex(text.charCodeAt(i + 1)) || !isHex(text.charCodeAt(i + 2))) return -1;
  return hexValue(text.charCodeAt(i + 1)) * 16 + hexValue(text.charCodeAt(i + 2));
}

/**
 * One percent-encoded UTF-8 character at `i` (one to four `%XX`), if it is a printable one;
 * undefined otherwise. Each '%' is looked at once, with at most three more ahead: linear.
 */
function percentDecoded(text: string, i: number): { chars: string; end: number } | undefined {
  const lead = percentByte(text, i);
  const size = lead < 0 ? 0 : lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
  if (size === 0) return undefined;
  const bytes = new Uint8Array(size);
  bytes[0] = lead;
  for (let k = 1; k < size; k++) {
    const b = percentByte(text, i + 3 * k);
    if (b < 0x80 || b > 0xbf) return undefined;
    bytes[k] = b;
  }
  let chars: string;
  try {
    chars = UTF8.decode(bytes);
  } catch {
    return undefined;
  }
  return /[\x00-\x1f\x7f]/.test(chars) ? undefined : { chars, end: i + 3 * size };
}

/** HTML's named references for the characters an address, a number or a key is written with. */
const NAMED: Readonly<Record<string, string>> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', commat: '@', period: '.', lowbar: '_', hyphen: '-', dash: '-',
  num: '#', plus: '+', colon: ':', sol: '/', equals: '=', percnt: '%', dollar: '$', excl: '!', quest: '?', comma: ',', semi: ';',
};

/** A printable code point as a decoded character, or undefined. */
const printable = (cp: number, end: number): { chars: string; end: number } | undefined =>
  cp < 0x20 || cp === 0x7f || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? undefined : { chars: String.fromCodePoint(cp), end };

/** `&#64;`, `&#x40;` or `&commat;` at `i` (a printable character); undefined otherwise. */
function characterReference(text: string, i: number): { chars: string; end: number } | undefined {
  const m = /^&(?:#(?:([0-9]{1,7})|[xX]([0-9A-Fa-f]{1,6}))|([a-z]{2,6}));/.exec(text.slice(i, i + 11));
  if (m === null) return undefined;
  if (m[3] !== undefined) {
    const named = NAMED[m[3]];
    return named === undefined ? undefined : { chars: named, end: i + m[0].length };
  }
  return printable(m[1] !== undefined ? Number(m[1]) : parseInt(m[2]!, 16), i + m[0].length);
}

/** What JSON's and JavaScript's one-letter escapes stand for: a value that starts a line of a JSON string is written "\nAKIA...". */
const SHORT_ESCAPES: Readonly<Record<string, string>> = { n: '\n', t: '\t', r: '\r', b: ' ', f: ' ', '/': '/', '"': '"', "'": "'", '\\': '\\' };

/**
 * A JavaScript or JSON escape at `i`: a one-letter one (`\n`, `\"`, `\\`), or one of a printable
 * character (`\u0040`, `\x40`, `\u{40}`, a surrogate pair `\ud835\udfd2`); undefined otherwise.
 */
function escapeSequence(text: string, i: number): { chars: string; end: number } | undefined {
  const short = SHORT_ESCAPES[text[i + 1] ?? ''];
  if (short !== undefined) return { chars: short, end: i + 2 };
  const m = /^\\(?:u([0-9A-Fa-f]{4})(?:\\u([dD][c-fC-F][0-9A-Fa-f]{2}))?|x([0-9A-Fa-f]{2})|u\{([0-9A-Fa-f]{1,6})\})/.exec(text.slice(i, i + 16));
  if (m === null) return undefined;
  if (m[1] !== undefined) {
    const unit = parseInt(m[1], 16);
    if (m[2] !== undefined && unit >= 0xd800 && unit <= 0xdbff) return printable(0x10000 + ((unit - 0xd800) << 10) + (parseInt(m[2], 16) - 0xdc00), i + 12);
    return printable(unit, i + 6);
  }
  return printable(parseInt(m[3] ?? m[4]!, 16), i + m[0].length);
}

/** A defanged dot at `i`, "[.]" or "(.)" (as indicators of compromise are written); undefined otherwise. */
function defangedDot(text: string, i: number): { chars: string; end: number } | undefined {
  const close = text.charCodeAt(i) === 0x5b ? 0x5d : 0x29;
  return text.charCodeAt(i + 1) === 0x2e && text.charCodeAt(i + 2) === close ? { chars: '.', end: i + 3 } : undefined;
}

/** The view's characters, and which of them are lookalikes of an ASCII letter (folded in mixed-script words). */
class ViewBuilder extends MappedTextBuilder {
  /** Positions of lookalikes, and the ASCII code each passes for. */
  private readonly lookalikes: number[] = [];

  lastIsLookalike(): boolean {
    return this.lookalikes.length > 0 && this.lookalikes[this.lookalikes.length - 2] === this.length - 1;
  }

  pushLookalike(code: number, ascii: number, s: number, e: number): void {
    this.lookalikes.push(this.length, ascii);
    this.push(code, s, e);
  }

  override build(): MappedText {
    if (this.lookalikes.length > 0) this.foldMixedScriptWords();
    return super.build();
  }

  /** Lookalikes become ASCII in words that also hold ASCII letters or digits; words of one other script stay. */
  private foldMixedScriptWords(): void {
    const n = this.length;
    const ascii = new Map<number, number>();
    for (let k = 0; k < this.lookalikes.length; k += 2) ascii.set(this.lookalikes[k]!, this.lookalikes[k + 1]!);
    let wordEnd = -1;
    for (let k = 0; k < this.lookalikes.length; k += 2) {
      const at = this.lookalikes[k]!;
      if (at < wordEnd) continue;
      // The word around this lookalike: one walk over it, then its lookalikes are decided together.
      let s = at;
      while (s > 0 && isWordCode(this.codeAt(s - 1))) s--;
      let e = at;
      let hasAscii = false;
      for (let q = s; q < n && isWordCode(this.codeAt(q)); q++, e = q) if (this.codeAt(q) < 0x80 && !ascii.has(q)) hasAscii = true;
      if (hasAscii) for (let q = s; q < e; q++) if (ascii.has(q)) this.setCode(q, ascii.get(q)!);
      wordEnd = e;
    }
  }
}

/** Letters, digits and the characters that hold a token together (for "is this one word"). */
function isWordCode(c: number): boolean {
  if (c < 0x80) return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
  return /\p{L}|\p{M}|\p{N}/u.test(String.fromCharCode(c));
}
