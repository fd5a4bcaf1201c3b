/**
 * Phone numbers. Candidate runs of digits and phone punctuation are found with plain character
 * tests; only short, bounded runs are handed to libphonenumber, whose own matcher is not linear on
 * long runs of digits and spaces.
 */
import { findPhoneNumbersInText, type CountryCode } from 'libphonenumber-js/max';
import { at, isDigit, nextOf, PHONE_START } from './chars.js';
import { conf, type Finding } from './finding.js';

/** Characters a written phone number is made of, besides digits. */
const isPhonePunct = (c: number): boolean =>
  c === 32 || c === 40 || c === 41 || c === 43 || c === 45 || c === 46 || c === 47 || c === 0xa0 || (c >= 0x2010 && c <= 0x2015) || c === 0x2212 || c === 0xff0d;

/** Longest candidate handed to libphonenumber; longer runs are split at wide gaps first. */
const MAX_PHONE_RUN = 96;
const PHONE_CONTEXT = 8;

/**
 * Candidate runs: maximal stretches of digits and phone punctuation holding 6 to 40 digits.
 * Runs longer than MAX_PHONE_RUN (tables, digit dumps) are split at gaps of two or more
 * spaces or at ' / '; pieces still too long are not phone numbers and are skipped.
 */
function phoneCandidates(text: string, visit: (s: number, e: number) => boolean, taken: readonly (readonly [number, number])[] = []): void {
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
    // Split [i, runEnd) into pieces.
    let ps = i;
    let k = i;
    while (k <= runEnd) {
      let cut = k === runEnd;
      let next = k + 1;
      if (!cut) {
        const ch = text.charCodeAt(k);
        if (ch === 32 && text.charCodeAt(k + 1) === 32) {
          cut = true;
          next = k;
          while (next < runEnd && text.charCodeAt(next) === 32) next++;
        } else if (ch === 32 && text.charCodeAt(k + 1) === 47 && text.charCodeAt(k + 2) === 32) {
          cut = true;
          next = k + 3;
        } else if (ch === 32 && (text.charCodeAt(k + 1) === 40 || text.charCodeAt(k + 1) === 43) && k > ps) {
          cut = true; // " (" or " +": another number starts
          next = k + 1;
        }
      }
      if (cut) {
        let s = ps;
        let e = k;
        while (s < e && !isDigit(text.charCodeAt(s)) && text.charCodeAt(s) !== 43 && text.charCodeAt(s) !== 40) s++;
        while (e > s && !isDigit(text.charCodeAt(e - 1)) && text.charCodeAt(e - 1) !== 41) e--;
        if (e - s <= MAX_PHONE_RUN) {
          let digits = 0;
          for (let q = s; q < e; q++) if (isDigit(text.charCodeAt(q))) digits++;
          if (digits >= 6 && digits <= 40 && !visit(s, e)) return;
        }
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
  const defaultCountry = regions[0] ?? 'US';
  let budget = maxCandidates;
  let stoppedAt = -1;
  phoneCandidates(text, (s, e) => {
    if (budget-- <= 0) {
      stoppedAt = s;
      return false;
    }
    // A little context either side (libphonenumber checks for letters, and for ":MM" after a
    // time), but not the start of another number: no digit before, none after a space after.
    let cs = s;
    while (cs > 0 && s - cs < PHONE_CONTEXT && !isDigit(text.charCodeAt(cs - 1))) cs--;
    let ce = e;
    let timeDigits = false; // digits right after a ':' belong to a time ("17:00"), not to a number
    while (ce < text.length && ce - e < PHONE_CONTEXT) {
      const c = text.charCodeAt(ce);
      if (isDigit(c) && !timeDigits) break;
      timeDigits = c === 58 || (timeDigits && isDigit(c));
      ce++;
    }
    const window = text.slice(cs, ce);
    const found = findPhoneNumbersInText(window, { defaultCountry });
    for (const m of found) {
      const ms = cs + m.startsAt;
      const me = cs + m.endsAt;
      if (ms < s || me > e) continue; // belongs to a neighbouring run
      out.push({ type: 'pii', kind: 'phone', start: ms, end: me, ruleId: 'pii.phone', category: 'pii', confidence: conf(text.charCodeAt(ms) === 43 ? 0.85 : 0.75) });
    }
    return true;
  }, taken);
  return stoppedAt;
}

