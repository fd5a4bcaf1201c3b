/**
 * PII detectors: e-mail addresses, phone numbers, payment card numbers, IBANs, US social security
 * numbers and IP addresses. Every detector validates what it finds (Luhn and issuer ranges, mod-97,
 * SSN area rules, `node:net`); phone numbers are judged by how they are written, libphonenumber
 * being one signal (phone.ts). A random digit string is rarely reported.
 *
 * No regular expression runs over the whole text: each detector walks the string once with plain
 * character tests and looks only at short, bounded windows (an e-mail local part of at most 64
 * characters, a domain of at most 255, a digit run of a bounded number of groups...). The work is
 * linear in the text length whatever the input.
 */
import { isIP } from 'node:net';
import { getCountries, isSupportedCountry, type CountryCode } from 'libphonenumber-js/max';
import { at, DIGIT, isAlnum, isAlpha, isDigit, isLower, isUpper, isWordish, nextOf } from './chars.js';
import { conf, type Finding } from './finding.js';
import { detectPhones } from './phone.js';

export type PiiKind = 'email' | 'phone' | 'credit_card' | 'iban' | 'us_ssn' | 'ip_address';
export const PII_KINDS: readonly PiiKind[] = ['email', 'phone', 'credit_card', 'iban', 'us_ssn', 'ip_address'];

export interface PiiOptions {
  /**
   * Regions whose national phone numbers (written without a `+` country code) the text may hold,
   * most likely first (ISO 3166 alpha-2: 'GB', 'DE'). Without it, phone detection needs no
   * configuration: it goes by how the number is written and the hints in the text (phone.ts).
   * An unknown code throws a RangeError.
   */
  regions?: readonly string[];
  /** Which detectors to run (default: all). */
  kinds?: readonly PiiKind[];
  /**
   * At most this many candidate runs are handed to libphonenumber per call (default 20 000): it
   * bounds the cost of text made of thousands of number-like runs. Past it, phone detection stops
   * and a finding of kind 'truncated' (category 'unscanned') covers the rest of the text, so a
   * caller that redacts never lets unscanned text through.
   */
  maxPhoneCandidates?: number;
}

/** Finds PII in `text`. Findings are sorted by offset and do not overlap each other (but for a final 'truncated' one). */
export function detectPii(text: string, options: PiiOptions = {}): Finding[] {
  const kinds = new Set(options.kinds ?? PII_KINDS);
  const out: Finding[] = [];
  if (kinds.has('email')) {
    detectEmails(text, out);
    detectSpelledEmails(text, out);
  }
  if (kinds.has('credit_card')) detectCards(text, out);
  if (kinds.has('iban')) detectIbans(text, out);
  if (kinds.has('us_ssn')) detectSsns(text, out);
  if (kinds.has('ip_address')) detectIps(text, out);
  if (kinds.has('phone')) {
    const regions = (options.regions ?? []).map((r) => r.toUpperCase());
    for (const r of regions) if (!isSupportedCountry(r)) throw new RangeError(`unknown region for phone numbers: ${r}`);
    // Phone numbers are looked for last, outside what the other detectors found: a run like
    // "(415) 555-0132 192.168.1.20" is a phone number and an IP address, not one odd number.
    const taken = out.map((f) => [f.start, f.end] as const).sort((a, b) => a[0] - b[0]);
    const stoppedAt = detectPhones(text, out, { regions: regions as CountryCode[], maxCandidates: options.maxPhoneCandidates ?? 20_000, taken });
    if (stoppedAt >= 0) {
      const kept = resolveOverlaps(out);
      kept.push({ type: 'pii', kind: 'truncated', start: stoppedAt, end: text.length, ruleId: 'pii.phone_limit', category: 'unscanned', confidence: 0.5 });
      return kept;
    }
  }
  return resolveOverlaps(out);
}

// ---------------------------------------------------------------------------------------------

function finding(kind: PiiKind, start: number, end: number, category: string, confidence: number): Finding {
  return { type: 'pii', kind, start, end, ruleId: `pii.${kind}`, category, confidence: conf(confidence) };
}

// ---------------------------------------------------------------------------------------------
// e-mail

const MAX_LOCAL = 64;
const MAX_DOMAIN = 253;

// RFC 5322 dot-atom characters commonly seen in addresses (quoted local parts are not matched).
const isLocalChar = (c: number): boolean => isAlnum(c) || c === 46 /* . */ || c === 95 /* _ */ || c === 37 /* % */ || c === 43 /* + */ || c === 45 /* - */;
const isDomainChar = (c: number): boolean => isAlnum(c) || c === 46 || c === 45;

function detectEmails(text: string, out: Finding[]): void {
  let lastEnd = 0;
  for (let a = text.indexOf('@'); a !== -1; a = text.indexOf('@', a + 1)) {
    // Local part: walk left at most MAX_LOCAL + 1 characters.
    let s = a;
    while (s > 0 && a - s <= MAX_LOCAL && isLocalChar(text.charCodeAt(s - 1))) s--;
    if (a - s > MAX_LOCAL) continue; // longer than any valid local part
    if (s < lastEnd) s = lastEnd; // glued to the previous address: start after it
    while (s < a && text.charCodeAt(s) === 46) s++; // a leading dot belongs to the sentence
    if (s === a) continue;
    if (text.charCodeAt(a - 1) === 46 || text.slice(s, a).includes('..')) continue;
    // Domain: walk right at most MAX_DOMAIN + 1 characters.
    let e = a + 1;
    while (e < text.length && e - a - 1 <= MAX_DOMAIN && isDomainChar(text.charCodeAt(e))) e++;
    if (e - a - 1 > MAX_DOMAIN) continue;
    e = longestValidDomain(text, a + 1, e); // "mail x@y.com.", "x@y.com-2024"
    if (e < 0) continue;
    if (isWordish(at(text, e)) || at(text, e) === 64) continue; // glued to more text, or another '@'
    out.push(finding('email', s, e, 'pii', 0.95));
    lastEnd = e;
  }
}

/**
 * Addresses with the '@' and dots spelled out, as people write them to get past scrapers:
 * `jane [at] example [dot] com`, `jane(at)example.com`, `jane at example dot com`, `jane @ example.com`.
 * A bracketed or spaced '@' is enough; a bare word "at" also needs a spelled-out dot, so "look at
 * example.com" is not an address. Bounded work per "at" or '@': linear.
 */
function detectSpelledEmails(text: string, out: Finding[]): void {
  AT_WORD.lastIndex = 0;
  for (let m = AT_WORD.exec(text); m !== null; m = AT_WORD.exec(text)) {
    const word = m.index;
    const after = word + m[0].length;
    // The marker: "[at]", "(at)", "{at}", "<at>", "[@]"..., or "at"/"@" with spaces either side.
    let ms = word;
    let me = after;
    let bracketed = false;
    const open = at(text, word - 1);
    const close = at(text, after);
    if (CLOSING[open] !== undefined && CLOSING[open] === close) {
      ms = word - 1;
      me = after + 1;
      bracketed = true;
    } else if (open !== 32 || close !== 32) continue;
    while (at(text, ms - 1) === 32 && word - ms < 4) ms--;
    while (at(text, me) === 32 && me - after < 4) me++;
    // Local part: the token just before the marker, and tokens joined to it by spelled dots ("jane dot doe").
    let ls = localStart(text, ms);
    if (ls < 0) continue;
    for (let more = spelledDotBefore(text, ls); more >= 0 && ms - more <= MAX_LOCAL; more = spelledDotBefore(text, ls)) {
      const earlier = localStart(text, more);
      if (earlier < 0) break;
      ls = earlier;
    }
    const domain = spelledDomain(text, me);
    if (domain === undefined) continue;
    // A bare word "at" is English before it is an address: it needs a spelled dot, and more than a
    // one- or two-letter word before it ("us at acme dot com").
    if (!bracketed && m[0] !== '@' && (!domain.spelledDot || (ms - ls <= 2 && /^[a-z]+$/i.test(text.slice(ls, ms).trim())))) continue;
    out.push(finding('email', ls, domain.end, 'pii', 0.8));
    AT_WORD.lastIndex = domain.end;
  }
}

/** Start of the local-part token that ends at `end` (spaces before `end` skipped); -1 if there is none. */
function localStart(text: string, end: number): number {
  let e = end;
  while (e > 0 && text.charCodeAt(e - 1) === 32 && end - e < 4) e--;
  let s = e;
  while (s > 0 && e - s <= MAX_LOCAL && isLocalChar(text.charCodeAt(s - 1))) s--;
  while (s < e && text.charCodeAt(s) === 46) s++;
  return s === e || e - s > MAX_LOCAL || text.charCodeAt(e - 1) === 46 ? -1 : s;
}

/** Where a spelled-out dot (" dot ", "[dot]") that ends at `end` starts; -1 if none does. */
function spelledDotBefore(text: string, end: number): number {
  const before = text.slice(Math.max(0, end - 12), end);
  const m = /(?: {1,3}dot {1,3}| {0,3}[[({<] {0,2}(?:dot|\.) {0,2}[\])}>] {0,3})$/i.exec(before);
  return m === null ? -1 : end - m[0].length;
}

const AT_WORD = /\bat\b|@/gi;
const CLOSING: Readonly<Record<number, number>> = { 40: 41, 91: 93, 123: 125, 60: 62 };
/** A spelled-out dot at the sticky position: " dot ", "[dot]", "(.)"... with up to 3 spaces around. */
const SPELLED_DOT = / {0,3}[[({<] {0,2}(?:dot|\.) {0,2}[\])}>] {0,3}| {1,3}dot {1,3}/iy;

/** A domain written from `from` with dots or spelled-out dots: its end, and whether a dot was spelled. */
function spelledDomain(text: string, from: number): { end: number; spelledDot: boolean } | undefined {
  let p = from;
  let labels = 0;
  let spelledDot = false;
  let lastLabelAlpha = false;
  let lastLabelLength = 0;
  while (p - from <= MAX_DOMAIN) {
    const ls = p;
    let alpha = true;
    while (p < text.length && p - ls < 64 && (isAlnum(text.charCodeAt(p)) || text.charCodeAt(p) === 45)) {
      if (!isAlpha(text.charCodeAt(p))) alpha = false;
      p++;
    }
    if (p === ls || text.charCodeAt(ls) === 45 || text.charCodeAt(p - 1) === 45) return undefined;
    labels++;
    lastLabelAlpha = alpha;
    lastLabelLength = p - ls;
    if (text.charCodeAt(p) === 46 && isAlnum(at(text, p + 1))) {
      p++;
      continue;
    }
    SPELLED_DOT.lastIndex = p;
    if (SPELLED_DOT.test(text) && isAlnum(at(text, SPELLED_DOT.lastIndex))) {
      spelledDot = true;
      p = SPELLED_DOT.lastIndex;
      continue;
    }
    break;
  }
  if (labels < 2 || !lastLabelAlpha || lastLabelLength < 2 || isWordish(at(text, p))) return undefined;
  // The last label must be a top-level domain: "x @ self.weight" and "the dot product" are not addresses.
  if (!isTopLevelDomain(text.slice(p - lastLabelLength, p))) return undefined;
  return { end: p, spelledDot };
}

/** Generic top-level domains in common use; every two-letter country code counts too (see `isTopLevelDomain`). */
const GENERIC_TLDS = new Set(
  'com org net edu gov mil int info biz name pro mobi app dev xyz online site tech store shop cloud email live blog news art design agency company services solutions digital media group world global club top vip asia tel travel museum aero coop jobs post cat eu'.split(' '),
);
const COUNTRY_TLDS = new Set([...getCountries().map((c) => c.toLowerCase()), 'uk', 'ac', 'su']);

/** Is `label` a top-level domain people write addresses in: a country code or a common generic one? */
function isTopLevelDomain(label: string): boolean {
  const l = label.toLowerCase();
  return COUNTRY_TLDS.has(l) || GENERIC_TLDS.has(l);
}

/**
 * End of the longest prefix of text[from, to) that is a valid domain name (labels of 1-63
 * letters, digits and inner hyphens; at least two labels; an alphabetic top-level label of two
 * or more letters, or an IDN "xn--" one), cut before a '.' or '-'; -1 if there is none.
 * One pass over the characters.
 */
function longestValidDomain(text: string, from: number, to: number): number {
  let best = -1;
  let labelStart = from;
  let completeLabels = 0;
  let labelsOk = true;
  let alpha = true; // the current label is letters only so far
  for (let p = from; p <= to; p++) {
    const c = p < to ? text.charCodeAt(p) : -1;
    if (c === 46 || c === 45 || c === -1) {
      // Could the domain end here, with [labelStart, p) as its top-level label?
      const len = p - labelStart;
      const tld = (alpha && len >= 2) || (len > 4 && text.startsWith('xn--', labelStart) && isAlnum(text.charCodeAt(p - 1)));
      if (labelsOk && completeLabels >= 1 && tld && len <= 63 && p - from <= MAX_DOMAIN) best = p;
    }
    if (c === 46 || c === -1) {
      const len = p - labelStart;
      if (len === 0 || len > 63 || text.charCodeAt(labelStart) === 45 || text.charCodeAt(p - 1) === 45) labelsOk = false;
      completeLabels++;
      labelStart = p + 1;
      alpha = true;
      if (!labelsOk) break;
    } else if (!isAlpha(c)) alpha = false;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// payment cards (Luhn + issuer prefix and length)

interface DigitGroup {
  start: number;
  end: number;
  /** The separator before this group (-1 for the first). */
  sep: number;
}

/** Separators a card number is printed with: a space, a hyphen (dashes are unified to it in the normalised view) or a dot. */
const isCardSeparator = (c: number): boolean => c === 32 || c === 45 || c === 46;

/** Maximal runs of ASCII digits joined by single separators (calls `visit` for each run). */
function forEachDigitRun(text: string, visit: (groups: DigitGroup[]) => void): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    i = nextOf(DIGIT, text, i);
    if (i >= n) break;
    const groups: DigitGroup[] = [];
    let j = i;
    let sep = -1;
    for (;;) {
      const gs = j;
      while (j < n && isDigit(text.charCodeAt(j))) j++;
      groups.push({ start: gs, end: j, sep });
      const c = at(text, j);
      if (isCardSeparator(c) && isDigit(at(text, j + 1))) {
        sep = c;
        j++;
        continue;
      }
      break;
    }
    visit(groups);
    i = j;
  }
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

const MAESTRO_PREFIXES: ReadonlySet<number> = new Set([5018, 5020, 5038, 5893, 6304, 6390, 6759, 6761, 6762, 6763]);

/** Issuer (IIN) ranges with their lengths (ISO/IEC 7812 numbers of 12 to 19 digits); undefined if no known card network matches. */
export function cardBrand(d: string): string | undefined {
  const len = d.length;
  const p = (k: number): number => Number(d.slice(0, k));
  const within = (lo: number, hi: number): boolean => len >= lo && len <= hi;
  if (d[0] === '4' && (len === 13 || len === 16 || len === 19)) return 'visa';
  if (((p(2) >= 51 && p(2) <= 55) || (p(4) >= 2221 && p(4) <= 2720)) && len === 16) return 'mastercard';
  if ((p(2) === 34 || p(2) === 37) && len === 15) return 'amex';
  if ((p(4) === 6011 || p(2) === 65 || (p(3) >= 644 && p(3) <= 649) || (p(6) >= 622126 && p(6) <= 622925)) && within(16, 19)) return 'discover';
  if ((p(3) >= 300 && p(3) <= 305) || p(4) === 3095 || p(2) === 36 || p(2) === 38 || p(2) === 39) return within(14, 19) ? 'diners' : undefined;
  // JCB's own range is 3528-3589, but the rest of 35 is allotted to no one else.
  if ((p(2) === 35 && within(16, 19)) || ((p(4) === 2131 || p(4) === 1800) && len === 15)) return 'jcb';
  if (p(4) >= 2200 && p(4) <= 2204 && within(16, 19)) return 'mir';
  if ((p(2) === 62 || p(2) === 81) && within(16, 19)) return 'unionpay';
  if (p(4) === 9792 && len === 16) return 'troy';
  if ((p(2) === 60 || p(2) === 82 || p(3) === 508) && len === 16) return 'rupay';
  if ((MAESTRO_PREFIXES.has(p(4)) || (p(2) >= 56 && p(2) <= 58)) && within(12, 19)) return 'maestro';
  return undefined;
}

function detectCards(text: string, out: Finding[]): void {
  const luhn = new LuhnSum();
  forEachDigitRun(text, (groups) => {
    // A number glued to letters ("ID4111...", "...1111x") is an identifier, not a card.
    const leftGlued = isWordish(at(text, groups[0]!.start - 1));
    const rightGlued = isWordish(at(text, groups[groups.length - 1]!.end));
    // A card in groups starts a run of digit groups, or follows a card, a number written with
    // other separators, or a group of another length: a valid stretch in the middle of a longer
    // number grouped alike (a tracking number) is a coincidence, not a card. A compact card is a
    // number of its own anywhere.
    const first = leftGlued ? 1 : 0;
    const len = (k: number): number => groups[k]!.end - groups[k]!.start;
    let cardBefore = -1;
    for (let a = first; a < groups.length; a++) {
      const grouped = a === first || a === cardBefore + 1 || (a >= 2 && groups[a - 1]!.sep !== groups[a]!.sep) || len(a - 1) !== len(a);
      // No issuer's numbers start with 0 or 7: most runs of a digit flood end here.
      const lead = text.charCodeAt(groups[a]!.start);
      if (lead === 48 || lead === 55) continue;
      let best = -1;
      let regular = false;
      luhn.reset();
      // Printed groupings have at most five groups; one inserted space makes six.
      for (let b = a; b < groups.length && b - a < 6; b++) {
        const g = groups[b]!;
        if (luhn.length + len(b) > 19 || (b > a && !grouped)) break;
        if (b > a + 1 && g.sep !== groups[a + 1]!.sep) break; // one kind of separator per number
        for (let k = g.start; k < g.end; k++) luhn.add(text.charCodeAt(k) - 48);
        if (luhn.length < 12) continue;
        if (rightGlued && b === groups.length - 1) break;
        if (!luhn.valid() || luhn.sameDigit) continue;
        // As printed (4-4-4-4, 4-6-5, compact), or so with one space inserted ("4111 111111111111",
        // "4111 11 11 1111 1111"); hyphens and dots only as printed.
        // A number grouped otherwise must be all its run holds: "18 4958 822825373 302" is a table row.
        const printed = b === a || printedGrouping(groups, a, b, -1);
        const alone = (a === first || a === cardBefore + 1) && b === groups.length - 1;
        if (!printed && !(alone && groups[a + 1]!.sep === 32 && oneSpaceFromPrinted(groups, a, b))) continue;
        if (cardBrand(text.slice(groups[a]!.start, g.end).replace(/[^0-9]/g, '')) === undefined) continue;
        best = b;
        regular = printed;
      }
      if (best < 0) continue;
      // Past a card in groups, only an expiry date (MMYY) or a security code may follow in its grouping.
      if (best > a && !endsNumber(text, groups, best, groups[a + 1]!.sep)) continue;
      out.push(finding('credit_card', groups[a]!.start, groups[best]!.end, 'financial', regular ? (best > a ? 0.95 : 0.9) : 0.8));
      cardBefore = best;
      a = best;
    }
  });
}

/** Does the number end at group `last`: no group follows with separator `sep`, or only a security code or an expiry (MMYY)? */
function endsNumber(text: string, groups: readonly DigitGroup[], last: number, sep: number): boolean {
  const next = groups[last + 1];
  if (next === undefined || next.sep !== sep || next.end - next.start > 6) return true;
  // A group glued to what follows ("2001:db8::7", "2024x") is another token, not more of this number.
  const glue = at(text, next.end);
  if (last + 2 === groups.length && (glue === 58 || isWordish(glue))) return true;
  const following = groups[last + 2];
  if (following !== undefined && following.sep === sep && following.end - following.start <= 6) return false;
  const digits = text.slice(next.start, next.end);
  return digits.length === 3 || (digits.length === 4 && Number(digits.slice(0, 2)) >= 1 && Number(digits.slice(0, 2)) <= 12);
}

/** Luhn's sum of a number read left to right, one digit at a time: O(1) per digit, whatever its final length. */
class LuhnSum {
  length = 0;
  sameDigit = true;
  private first = -1;
  /** Per parity of a digit's index: the sum of those digits as they are, and doubled. */
  private readonly plain = [0, 0];
  private readonly doubled = [0, 0];

  reset(): void {
    this.length = 0;
    this.sameDigit = true;
    this.first = -1;
    this.plain[0] = this.plain[1] = this.doubled[0] = this.doubled[1] = 0;
  }

  add(d: number): void {
    const p = this.length & 1;
    this.plain[p]! += d;
    this.doubled[p]! += d * 2 > 9 ? d * 2 - 9 : d * 2;
    if (this.first < 0) this.first = d;
    else if (d !== this.first) this.sameDigit = false;
    this.length++;
  }

  /** From the right, the second digit and every other one after it are doubled: those whose index has the parity of the length. */
  valid(): boolean {
    const n = this.length;
    return n > 0 && (this.doubled[n & 1]! + this.plain[(n + 1) & 1]!) % 10 === 0;
  }
}

/**
 * Groups a..b as issuers print them: fours and a last group of one to four (4-4-4-4, 4-4-4-4-3,
 * 4-4-4-1), or the 4-6 forms (Amex 4-6-5, Diners 4-6-4); with `joined` >= a, groups `joined` and
 * `joined + 1` read as one.
 */
function printedGrouping(groups: readonly DigitGroup[], a: number, b: number, joined: number): boolean {
  const lengths: number[] = [];
  for (let k = a; k <= b; k++) {
    const n = groups[k]!.end - groups[k]!.start;
    if (joined >= a && k === joined + 1) lengths[lengths.length - 1]! += n;
    else lengths.push(n);
  }
  if (lengths.length === 1) return true;
  const last = lengths.length - 1;
  if (lengths[0] !== 4) return false;
  if (lengths.length === 3 && lengths[1] === 6 && (lengths[2] === 4 || lengths[2] === 5)) return true;
  for (let k = 1; k < last; k++) if (lengths[k] !== 4) return false;
  return lengths[last]! >= 1 && lengths[last]! <= 4;
}

/** Would groups a..b be printed as issuers print them (or compact) but for one space? */
function oneSpaceFromPrinted(groups: readonly DigitGroup[], a: number, b: number): boolean {
  for (let k = a; k < b; k++) if (printedGrouping(groups, a, b, k)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// IBAN (ISO 13616: country length + mod-97)

/** IBAN length per country (SWIFT IBAN registry). */
export const IBAN_LENGTHS: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28,
  CH: 21, CR: 22, CY: 28, CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18,
  FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HN: 28, HR: 21, HU: 28,
  IE: 22, IL: 23, IQ: 23, IR: 26, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20,
  LU: 20, LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28,
  NL: 18, NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24,
  SC: 31, SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26,
  UA: 29, VA: 22, VG: 24, XK: 20, YE: 30,
};

/** mod-97 check of an IBAN without spaces (ISO 7064 MOD 97-10). */
export function ibanValid(iban: string): boolean {
  const expected = IBAN_LENGTHS[iban.slice(0, 2)];
  if (expected === undefined || iban.length !== expected) return false;
  const rearranged = iban.slice(4) + iban.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < rearranged.length; i++) {
    const c = rearranged.charCodeAt(i);
    if (isDigit(c)) rem = (rem * 10 + (c - 48)) % 97;
    else if (isUpper(c)) rem = (rem * 100 + (c - 55)) % 97;
    else return false;
  }
  return rem === 1;
}

/**
 * IBANs as printed (`DE89 3704 0044 0532 0130 00`), compact, or rewritten: lower case, and single
 * separators (space, '-', '.') anywhere. The mod-97 check and the exact length per country keep the
 * looser forms precise; a loosely grouped one must also have a digit in every group after the
 * first, so words of a sentence are not read as one, and a lower-case country code must be glued
 * to its check digits.
 */
function detectIbans(text: string, out: Finding[]): void {
  const n = text.length;
  let pos = 0;
  while (pos < n) {
    const d = nextOf(DIGIT, text, pos);
    if (d >= n) break;
    pos = d + 1;
    // The country code's two letters come just before the first check digit, a separator allowed after each.
    let k = d - 1;
    if (isCardSeparator(at(text, k))) k--;
    if (!isAlpha(at(text, k))) continue;
    const second = k;
    k--;
    if (isCardSeparator(at(text, k)) && isAlpha(at(text, k - 1))) k--;
    if (!isAlpha(at(text, k))) continue;
    const i = k;
    if (isWordish(at(text, i - 1))) continue;
    // The country code in upper case, or in lower case glued to the check digits ("de89..."): a word
    // such as "No" or "at" before a number is not one.
    const upper = isUpper(text.charCodeAt(i)) && isUpper(text.charCodeAt(second));
    const lower = isLower(text.charCodeAt(i)) && isLower(text.charCodeAt(second));
    if (!upper && !(lower && d - i === 2)) continue;
    const len = IBAN_LENGTHS[(text[i]! + text[second]!).toUpperCase()];
    if (len === undefined) continue;
    let compact = '';
    let j = i;
    let printed = true; // upper case, a space every 4 characters
    let groupHasDigit = true;
    let everyGroupHasDigit = true;
    while (j < n && compact.length < len) {
      const c = text.charCodeAt(j);
      if (isAlnum(c)) {
        if (isLower(c)) printed = false;
        if (isDigit(c)) groupHasDigit = true;
        compact += text[j]!.toUpperCase();
        j++;
      } else if (isCardSeparator(c) && compact.length > 0 && isAlnum(at(text, j + 1))) {
        if (c !== 32 || compact.length % 4 !== 0) printed = false;
        if (compact.length > 4 && !groupHasDigit) everyGroupHasDigit = false;
        groupHasDigit = false;
        j++;
      } else break;
    }
    if (compact.length !== len || isWordish(at(text, j)) || !isDigit(compact.charCodeAt(2)) || !isDigit(compact.charCodeAt(3))) continue;
    if (!printed && !(everyGroupHasDigit && groupHasDigit)) continue;
    // A loosely written one must end where its token ends: "be247516-3487-4f87-..." is a UUID.
    if (!printed && (at(text, j) === 45 || at(text, j) === 46) && isAlnum(at(text, j + 1))) continue;
    if (!ibanValid(compact)) continue;
    out.push(finding('iban', i, j, 'financial', printed ? 0.95 : 0.85));
    pos = j;
  }
}

// ---------------------------------------------------------------------------------------------
// US social security numbers (AAA-GG-SSSS)

/** Numbers never issued but widely published (the Woolworth wallet card, advertising samples). */
const SAMPLE_SSNS = new Set(['078051120', '219099999', '457555462']);

/** SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000. */
export function ssnValid(area: number, group: number, serial: number): boolean {
  return area !== 0 && area !== 666 && area < 900 && group !== 0 && serial !== 0;
}

const SSN_CONTEXT = /\b(?:ssn|ss#|social security|social sec\.?|soc\. sec\.)/i;

function detectSsns(text: string, out: Finding[]): void {
  const n = text.length;
  for (let i = nextOf(DIGIT, text, 0); i + 9 <= n; i = nextOf(DIGIT, text, i + 1)) {
    const prev = at(text, i - 1);
    if (isWordish(prev) || prev === 45 || prev === 46) continue;
    const d = (k: number): boolean => isDigit(at(text, i + k));
    if (!(d(0) && d(1) && d(2))) continue;
    let end: number;
    let sep = at(text, i + 3);
    let confidence: number;
    if ((sep === 45 || sep === 32 || sep === 46) && d(4) && d(5) && at(text, i + 6) === sep && d(7) && d(8) && d(9) && d(10)) {
      end = i + 11;
      confidence = sep === 45 ? 0.8 : 0.6;
    } else if (d(3) && d(4) && d(5) && d(6) && d(7) && d(8)) {
      end = i + 9; // bare 9 digits: only next to an "SSN" label (checked below)
      sep = -1;
      confidence = 0.6;
    } else continue;
    const next = at(text, end);
    // Not part of a longer number: "1-123-45-6789", "123-45-6789-1", "123 45 6789 12".
    if (isWordish(next) || ((next === 45 || next === 46) && isDigit(at(text, end + 1)))) continue;
    if (sep !== 45 && ((next === 32 && isDigit(at(text, end + 1))) || (prev === 32 && isDigit(at(text, i - 2))))) continue;
    const context = SSN_CONTEXT.test(text.slice(Math.max(0, i - 32), i));
    if (sep === -1 && !context) continue;
    const digits = sep === -1 ? text.slice(i, end) : text.slice(i, i + 3) + text.slice(i + 4, i + 6) + text.slice(i + 7, i + 11);
    if (!ssnValid(Number(digits.slice(0, 3)), Number(digits.slice(3, 5)), Number(digits.slice(5))) || SAMPLE_SSNS.has(digits)) continue;
    out.push(finding('us_ssn', i, end, 'pii', context ? Math.min(0.95, confidence + 0.15) : confidence));
    i = end - 1;
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses (validated by node:net isIP)

const isIpChar = (c: number): boolean => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102) || c === 58 /* : */ || c === 46; /* . */

function detectIps(text: string, out: Finding[]): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    // Only a run with a digit can hold an address (hex words such as "face" or "decade" cannot).
    const d = nextOf(DIGIT, text, i);
    if (d >= n) break;
    let s = d;
    while (s > i && isIpChar(text.charCodeAt(s - 1))) s--;
    let j = d;
    while (j < n && isIpChar(text.charCodeAt(j))) j++;
    checkIpRun(text, s, j, out);
    i = j;
  }
}

function checkIpRun(text: string, s: number, e: number, out: Finding[]): void {
  const leftOk = !isWordish(at(text, s - 1));
  const rightOk = !isWordish(at(text, e));
  let te = e;
  while (te > s && text.charCodeAt(te - 1) === 46) te--; // sentence-ending dots
  let hasColon = false;
  for (let k = s; k < te; k++) if (text.charCodeAt(k) === 58) hasColon = true;
  if (hasColon && te - s <= 45 && leftOk && (rightOk || te < e)) {
    const cand = text.slice(s, te);
    if (isIP(cand) === 6 && /\d/.test(cand) && (cand.match(/:/g)?.length ?? 0) >= 2) {
      out.push(finding('ip_address', s, te, 'pii', 0.85));
      return;
    }
  }
  // IPv4, possibly inside "host:1.2.3.4" or "1.2.3.4:8080".
  let ps = s;
  for (let k = s; k <= te; k++) {
    if (k < te && text.charCodeAt(k) !== 58) continue;
    let pe = k;
    while (pe > ps && text.charCodeAt(pe - 1) === 46) pe--;
    const len = pe - ps;
    // A single ':' may separate an address from a host name or a port; '::' belongs to IPv6.
    const leftFine = ps > s ? text.charCodeAt(ps - 2) !== 58 : leftOk;
    const rightFine = k < te ? text.charCodeAt(k + 1) !== 58 : rightOk || te < e;
    if (len >= 7 && len <= 15 && leftFine && rightFine) {
      const cand = text.slice(ps, pe);
      if (isIP(cand) === 4) {
        const versionLike = /(?:\bv|version\s?)$/i.test(text.slice(Math.max(0, ps - 8), ps));
        out.push(finding('ip_address', ps, pe, 'pii', versionLike ? 0.4 : 0.85));
      }
    }
    ps = k + 1;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Sorts findings and, where two overlap, keeps one: the one that contains the other (an IBAN's
 * digits can pass for a card), else the more confident (then the longer) one.
 */
function resolveOverlaps(findings: Finding[]): Finding[] {
  findings.sort((a, b) => a.start - b.start || b.end - a.end);
  const kept: Finding[] = [];
  for (const f of findings) {
    const last = kept[kept.length - 1];
    if (last !== undefined && f.start < last.end) {
      const sameSpan = f.start === last.start && f.end === last.end;
      if (f.end <= last.end && !(sameSpan && f.confidence > last.confidence)) continue; // sorted: last starts no later, so it contains f
      const better = f.confidence > last.confidence || (f.confidence === last.confidence && f.end - f.start > last.end - last.start);
      if (better) kept[kept.length - 1] = f;
      continue;
    }
    kept.push(f);
  }
  return kept;
}
