/**
 * Phone numbers, judged by how they are written. Candidate runs of digits and phone punctuation
 * are found with plain character tests; each bounded run is read as groups of digits and weighed:
 *
 * - structure: a '+' and a real calling code, an international call prefix (00, 011), a trunk
 *   prefix 0, an area code in parentheses, the North American 3-3-4 shape, digits in groups of two
 *   to four, an extension ("x123", "ext. 12");
 * - context: a phone word before the number ("Tel.", "Telefon", "電話"...), and whether
 *   libphonenumber calls the number valid in the regions the caller names or the text hints at
 *   (phone-regions.ts), which admits the weaker shapes (bare digits, "345 678 901");
 * - what it is not: a date, a time, an amount, a version, a dotted quad, an identifier glued to
 *   letters or labelled ("order", "ISBN", "#"), a placeholder ("123-456-7890").
 *
 * libphonenumber is a signal, not the judge: generated and real texts hold numbers in ranges its
 * metadata does not (yet) know, written the way numbers are written there.
 */
import { parsePhoneNumberFromString as parse, type CountryCode } from 'libphonenumber-js/max';
import { isAlnum, isDigit, nextOf, PHONE_START } from './chars.js';
import { conf, type Finding } from './finding.js';
import { regionHints } from './phone-regions.js';
import { extensionEnd, read, type Written } from './phone-written.js';
import { cueBefore, currencyAround, type Cue } from './phone-words.js';

/** Characters a written phone number is made of, besides digits. */
const isPhonePunct = (c: number): boolean =>
  c === 32 || c === 40 || c === 41 || c === 43 || c === 45 || c === 46 || c === 47 || c === 0xa0 || (c >= 0x2010 && c <= 0x2015) || c === 0x2212 || c === 0xff0d;

/** Longest candidate examined; longer runs are split at wide gaps first. */
const MAX_PHONE_RUN = 96;

/**
 * Candidate runs: maximal stretches of digits and phone punctuation holding 6 to 40 digits.
 * Runs longer than MAX_PHONE_RUN (tables, digit dumps) are split at gaps of two or more spaces,
 * then where another number starts (see forEachSoftPiece); pieces still too long are skipped.
 */
function phoneCandidates(text: string, visit: (s: number, e: number) => boolean, taken: readonly (readonly [number, number])[]): void {
  const n = text.length;
  let t = 0; // next span in `taken` that may matter
  /** Start of the first taken span at or after i (n if none); skips spans ending before i. */
  const nextTaken = (i: number): number => {
    while (t < taken.length && taken[t]![1] <= i) t++;
    return t < taken.length ? Math.max(i, taken[t]![0]) : n;
  };
  let i = 0;
  while (i < n) {
    const stop = nextTaken(i);
    if (stop === i) {
      i = taken[t]![1];
      continue;
    }
    const c = text.charCodeAt(i);
    if (!(isDigit(c) || c === 43 || c === 40)) {
      i = nextOf(PHONE_START, text, i + 1);
      continue;
    }
    let j = i;
    while (j < stop && (isDigit(text.charCodeAt(j)) || isPhonePunct(text.charCodeAt(j)))) j++;
    const runEnd = j;
    let ps = i;
    let k = i;
    while (k <= runEnd) {
      const wide = k < runEnd && text.charCodeAt(k) === 32 && text.charCodeAt(k + 1) === 32;
      if (k === runEnd || wide) {
        let s = ps;
        let e = k;
        while (s < e && !isDigit(text.charCodeAt(s)) && text.charCodeAt(s) !== 43 && text.charCodeAt(s) !== 40) s++;
        while (e > s && !isDigit(text.charCodeAt(e - 1)) && text.charCodeAt(e - 1) !== 41) e--;
        // A long run may still be numbers side by side: "(415) 555-0132 +44 20 7946 0958 ...".
        const go = e - s <= MAX_PHONE_RUN ? visitIfDigits(text, s, e, visit) : forEachSoftPiece(text, s, e, (a, b) => b - a > MAX_PHONE_RUN || visitIfDigits(text, a, b, visit));
        if (!go) return;
        let next = k + 1;
        while (next < runEnd && text.charCodeAt(next) === 32) next++;
        ps = next;
        k = next;
        continue;
      }
      k++;
    }
    i = runEnd === stop ? runEnd : runEnd + 1;
  }
}

export interface PhoneScan {
  /** Regions the caller knows the text's national numbers belong to, most likely first (may be empty). */
  regions: readonly CountryCode[];
  /** Candidate runs examined at most; past it the scan stops (see `PiiOptions.maxPhoneCandidates`). */
  maxCandidates: number;
  /** Sorted spans other detectors found: not looked at. */
  taken: readonly (readonly [number, number])[];
}

/** Appends phone findings to `out`. Returns -1, or the offset from which numbers were not looked for (budget spent). */
export function detectPhones(text: string, out: Finding[], { regions, maxCandidates, taken }: PhoneScan): number {
  let hinted: readonly CountryCode[] | undefined;
  const context: Context = {
    text,
    regions,
    // The text's own hints cost a pass over it: only taken when a weak shape needs them.
    hinted: () => (hinted ??= [...new Set([...regions, ...regionHints(text)])]),
  };
  let budget = maxCandidates;
  let stoppedAt = -1;
  phoneCandidates(
    text,
    (s, e) => {
      if (budget-- <= 0) {
        stoppedAt = s;
        return false;
      }
      const whole = judge(context, s, e);
      if (whole) out.push(whole);
      else
        forEachSoftPiece(text, s, e, (a, b) => {
          const f = judge(context, a, b);
          if (f) out.push(f);
          return true;
        });
      return true;
    },
    taken,
  );
  return stoppedAt;
}

/** Visits text[s, e) if it holds 6 to 40 digits; returns what `visit` does (true to go on). */
function visitIfDigits(text: string, s: number, e: number, visit: (s: number, e: number) => boolean): boolean {
  let digits = 0;
  for (let q = s; q < e; q++) if (isDigit(text.charCodeAt(q))) digits++;
  return digits < 6 || digits > 40 || visit(s, e);
}

/**
 * Where a run may hold two numbers side by side ("030 1234567 / 030 7654321", "(415) 555-0132
 * (415) 555-0133"): visits the pieces between " / ", " (" and " +" (none if there is no such
 * point); stops when `visit` returns false, and returns false then.
 */
function forEachSoftPiece(text: string, s: number, e: number, visit: (s: number, e: number) => boolean): boolean {
  let ps = s;
  for (let k = s + 1; k < e - 1; k++) {
    if (text.charCodeAt(k) !== 32) continue;
    const next = text.charCodeAt(k + 1);
    const slash = next === 47 && text.charCodeAt(k + 2) === 32;
    if (!slash && next !== 40 && next !== 43) continue;
    if (!visit(ps, trimEnd(text, ps, k))) return false;
    ps = slash ? k + 3 : k + 1;
  }
  return ps === s || visit(ps, e);
}

const trimEnd = (text: string, s: number, e: number): number => {
  while (e > s && !isDigit(text.charCodeAt(e - 1)) && text.charCodeAt(e - 1) !== 41) e--;
  return e;
};

// ---------------------------------------------------------------------------------------------
// reading a candidate

interface Context {
  text: string;
  regions: readonly CountryCode[];
  hinted: () => readonly CountryCode[];
}

const isGlue = (c: number): boolean => c === 45 || c === 95 || c === 47;

/** A finding for text[s, e) if it is written as a phone number, else undefined. */
function judge(ctx: Context, s: number, e: number): Finding | undefined {
  const { text } = ctx;
  // A number in parentheses as a whole, "(+44 20 7946 0958)", "(415-555-0132)": the number is inside.
  if (text.charCodeAt(s) === 40 && text.charCodeAt(e - 1) === 41 && read(text, s, e) === undefined) {
    s++;
    e--;
  }
  const w = read(text, s, e);
  if (!w || notAPhone(text, s, e, w)) return undefined;
  const ext = extensionEnd(text, e);
  const end = ext > 0 ? ext : e;
  if (glued(text, s, end)) return undefined;
  let confidence: number | undefined;
  if (w.plus) confidence = international(text, s, e, w);
  else {
    // Without a '+', the words before the number count: a label makes it an identifier.
    const cue = cueBefore(text, lastDigitBefore(text, s), s);
    if (cue === 'label') return undefined;
    confidence = (cue === 'marker' ? undefined : internationalPrefix(ctx, s, e, w)) ?? national(ctx, w, cue);
  }
  if (confidence === undefined) return undefined;
  return { type: 'pii', kind: 'phone', start: s, end, ruleId: 'pii.phone', category: 'pii', confidence: conf(confidence + (ext > 0 ? 0.05 : 0)) };
}

/** Glued to a word or an identifier: "ID4711", "ORD-3233767601", "#48219921", "17:00", "12%". */
function glued(text: string, s: number, e: number): boolean {
  const b = text.charCodeAt(s - 1);
  if (isAlnum(b) || b === 35 || (isGlue(b) && isAlnum(text.charCodeAt(s - 2))) || (b === 58 && isDigit(text.charCodeAt(s - 2))) || (b === 46 && isDigit(text.charCodeAt(s - 2)))) return true;
  if ((b === 45 || b === 0x2212) && isDigit(text.charCodeAt(s))) return true; // "-107.4217": a negative number
  const a = text.charCodeAt(e);
  const a1 = text.charCodeAt(e + 1);
  return isAlnum(a) || a === 37 || a === 95 || ((a === 58 || a === 44 || a === 46) && isDigit(a1)) || (isGlue(a) && isAlnum(a1));
}

/** Dates, year ranges, versions, dotted quads, amounts, placeholders: shapes a phone number is not written in. */
function notAPhone(text: string, s: number, e: number, w: Written): boolean {
  const { groups: g, seps } = w;
  if (!w.plus && isDate(w)) return true;
  if (g.length === 2 && g[0]!.length === 4 && g[1]!.length === 4 && isYear(g[0]!) && isYear(g[1]!)) return true;
  if (!w.plus && !w.parenGroup && seps.slice(1).every((x) => x === '.')) {
    // "2.3.1", "10.0.19045.3803", "192.168.1.20": dotted phones have groups of two or more digits
    // (a '+' calling code or an area code in parentheses says it is a phone whatever the groups).
    if (g.slice(1).some((x) => x.length < 2 || x.length > 4)) return true;
    if (g.length === 4 && g.every((x) => x.length <= 3 && Number(x) <= 255)) return true;
    if (g.length === 2) return true; // "44058806.20", "107.4217": a decimal number
  }
  if (!w.plus) {
    // "10.30-12.00": a dot among other separators is a decimal point.
    if (!w.parenGroup && seps.includes('.') && seps.some((x, i) => i > 0 && x !== '.')) return true;
    // Amounts (never written with a leading zero): "1 250 000" (phones printed in threes start
    // with a full group), "2020 2 500 000" (an amount after another number).
    const k = g.length - 3;
    if (w.digits[0] !== '0' && thousands(w) && g[0]!.length < 3) return true;
    if (w.digits[0] !== '0' && k >= 0 && g[k]!.length <= 2 && g[k + 1]!.length === 3 && g[k + 2]!.length === 3 && seps[k + 1] === seps[k + 2] && (seps[k + 1] === ' ' || seps[k + 1] === '.')) return true;
  }
  if (currencyAround(text, s, e)) return true;
  return isPlaceholder(w.plus ? w.digits.slice(-10) : w.digits);
}

const isYear = (x: string): boolean => x.length === 4 && (x.startsWith('19') || x.startsWith('20'));
const isMonth = (x: string): boolean => x.length <= 2 && Number(x) >= 1 && Number(x) <= 12;
const isDay = (x: string): boolean => x.length <= 2 && Number(x) >= 1 && Number(x) <= 31;

/** Day, month and four-digit year in any order people write them, maybe followed by a time. */
function isDate(w: Written): boolean {
  const { groups: g, seps } = w;
  if (g.length === 1) {
    const d = g[0]!;
    return d.length === 8 && isYear(d.slice(0, 4)) && isMonth(d.slice(4, 6)) && isDay(d.slice(6));
  }
  if (g.length < 3) return false;
  // Anywhere in the run, three groups joined by one non-space separator that read as a date: a
  // run holding a date ("1 2024-05-26 0", "26.05.2024 17") is not one phone number.
  for (let k = 0; k + 2 < g.length; k++) {
    const sep = seps[k + 1]!;
    if (sep.trim() === '' || seps[k + 2] !== sep) continue;
    const [a, b, c] = [g[k]!, g[k + 1]!, g[k + 2]!];
    if ((isYear(a) && isMonth(b) && isDay(c)) || (isYear(c) && ((isDay(a) && isMonth(b)) || (isMonth(a) && isDay(b))))) return true;
  }
  if (g.length > 3 && seps[3]!.trim() !== '') return false;
  const [a, b, c] = [g[0]!, g[1]!, g[2]!];
  return (isYear(a) && isMonth(b) && isDay(c)) || (isYear(c) && ((isDay(a) && isMonth(b)) || (isMonth(a) && isDay(b))));
}

/** "123-456-7890", "000-000-0000", "555 555 5555": the numbers printed as examples. */
function isPlaceholder(d: string): boolean {
  if (/^(\d)\1+$/.test(d)) return true;
  const national = d.length === 11 && d[0] === '1' ? d.slice(1) : d;
  return '01234567890'.includes(national) || '9876543210'.includes(national);
}

/** A number written with a '+': a real calling code and a length an E.164 number can have. */
function international(text: string, s: number, e: number, w: Written): number | undefined {
  if (w.digits.length < 7 || w.digits.length > 15) return undefined;
  const p = parse(text.slice(s, e));
  if (!p) return undefined; // no such calling code
  if (p.isValid()) return 0.95;
  if (p.isPossible()) return 0.9;
  return w.groups.length > 1 && p.nationalNumber.length >= 4 ? 0.7 : undefined;
}

/** "00 49 30 1234567", "011 44 20 ...", "001-518-640-0854": a '+' dialled as a call prefix. */
function internationalPrefix(ctx: Context, s: number, e: number, w: Written): number | undefined {
  const d = w.digits;
  const prefix = d.startsWith('011') ? 3 : d.startsWith('00') && d[2] !== '0' ? 2 : 0;
  if (prefix === 0 || d.length - prefix < 7 || d.length - prefix > 15) return undefined;
  // Skip the prefix and any separator after it, and read the rest as a '+' number.
  let i = s;
  for (let seen = 0; seen < prefix; i++) if (isDigit(ctx.text.charCodeAt(i))) seen++;
  while (i < e && !isDigit(ctx.text.charCodeAt(i)) && ctx.text.charCodeAt(i) !== 40) i++;
  const p = parse(`+${ctx.text.slice(i, e)}`);
  if (!p) return undefined;
  if (p.isValid()) return 0.9;
  if (p.isPossible()) return 0.85;
  return undefined; // "011 4321-1234" is Buenos Aires, "0112 ..." Leeds: read as national
}

/** A number without a country code: its shape, then the evidence around it. */
function national(ctx: Context, w: Written, cue: Cue | undefined): number | undefined {
  const { groups: g, digits: d } = w;
  const n = d.length;
  const trunk = d[0] === '0' && d[1] !== '0';
  const nanp = isNanpShape(w);
  // Pairs alone without a trunk 0 ("12 15 18 20") are as often a list of numbers: they need evidence.
  const pairsOnly = !trunk && g.every((x) => x.length === 2);
  const grouped = g.length >= 3 && g[0]!.length <= 5 && g.slice(1).every((x) => x.length <= 5) && g[g.length - 1]!.length >= 2 && !pairsOnly;
  // Strong shapes: how phone numbers, and little else, are written.
  let shape: number | undefined;
  if (nanp) shape = 0.7;
  else if (trunk && n >= 9 && n <= (w.parenGroup ? 13 : 12) && (g.length >= 2 || w.parenGroup)) shape = 0.7;
  else if (w.parenGroup && n >= 7 && n <= 12 && g.length >= 2) shape = 0.7;
  else if (grouped && n >= 8 && n <= (trunk ? 12 : 11) && !thousands(w)) shape = 0.65;
  else if (trunk && g.length === 1 && (n === 10 || n === 11)) shape = 0.55;
  if (cue === 'marker' && g.length === 1) return undefined; // "ID 0720580512": bare digits after "No."/"ID" are an identifier
  if (shape !== undefined) return shape + (cue === 'phone' ? 0.15 : cue === 'marker' ? -0.15 : 0) + (validIn(d, ctx.regions) ? 0.1 : 0);
  // Weak shapes (bare digits, two groups, thousands-like groups): only with evidence.
  if (n < 7 || n > 11 || cue === 'marker') return undefined;
  if (cue === 'phone') return 0.6;
  // Bare digits are an order number as often as a phone: a hint read from the text (its script,
  // another number's country) is not enough for them, the caller's regions are.
  if (validIn(d, g.length === 1 ? ctx.regions : ctx.hinted())) return 0.55;
  return undefined;
}

/** NANP: (NXX) NXX-XXXX, NXX-NXX-XXXX, 1-NXX-NXX-XXXX: a 3-3-4 grouping with separators. */
function isNanpShape(w: Written): boolean {
  const g = w.groups;
  const tail = g.length >= 3 ? g.slice(-3) : [];
  if (tail.length !== 3 || tail[0]!.length !== 3 || tail[1]!.length !== 3 || tail[2]!.length !== 4) return false;
  return g.length === 3 || (g.length === 4 && g[0] === '1');
}

/** "1 250 000", "345.678.901": groups of three after the first, one separator, as amounts are written. */
function thousands(w: Written): boolean {
  const { groups: g, seps } = w;
  return g[0]!.length <= 3 && g.slice(1).every((x) => x.length === 3) && seps.slice(1).every((x) => x === seps[1] && (x === ' ' || x === '.'));
}

/** Where the words before `s` that may name the number begin: after the previous digit, at most 40 back (phone-words.ts looks no further). */
function lastDigitBefore(text: string, s: number): number {
  let i = s;
  while (i > 0 && s - i < 40 && !isDigit(text.charCodeAt(i - 1))) i--;
  return i;
}

/** Whether libphonenumber calls the national number valid in one of `regions` (at most three tried). */
function validIn(digits: string, regions: readonly CountryCode[]): boolean {
  for (let k = 0; k < regions.length && k < 3; k++) if (parse(digits, regions[k])?.isValid()) return true;
  return false;
}
