/**
 * Regions a document's national phone numbers (written without a country code) probably belong
 * to, read from the document itself: the country codes of its international numbers, the
 * country-code top-level domains of its e-mail addresses and URLs, the country codes of its IBANs,
 * and its script and letters (kana, Hangul, "ß", "ł", "ñ"...). One pass over the text.
 */
import { getCountries, getCountryCallingCode, isSupportedCountry, type CountryCode } from 'libphonenumber-js/max';
import { isDigit, isUpper } from './chars.js';

/** Where a calling code is shared (+1, +7, +44...), the region most numbers belong to. */
const MAIN_REGION = new Set<CountryCode>(['US', 'RU', 'GB', 'NO', 'AU', 'IT', 'FI', 'MA', 'GP', 'RE', 'CW', 'SH']);
const REGION_OF_CODE = new Map<string, CountryCode>();
for (const c of getCountries()) {
  const code = getCountryCallingCode(c);
  if (!REGION_OF_CODE.has(code) || MAIN_REGION.has(c)) REGION_OF_CODE.set(code, c);
}

/** The region of the calling code `digits` starts with (1 to 3 digits), and its length. */
function callingCodeAt(digits: string): { region: CountryCode; length: number } | undefined {
  for (let len = 1; len <= 3 && len <= digits.length; len++) {
    const region = REGION_OF_CODE.get(digits.slice(0, len));
    if (region) return { region, length: len };
  }
  return undefined;
}

const r = (...codes: CountryCode[]): readonly CountryCode[] => codes;
/** Letters that only some languages use, and where those languages' numbers are. */
const LETTER_REGIONS = new Map<string, readonly CountryCode[]>([
  ...[...'ß'].map((c) => [c, r('DE', 'AT', 'CH')] as const),
  ...[...'äöü'].map((c) => [c, r('DE', 'AT', 'CH', 'SE', 'FI', 'TR', 'HU')] as const),
  ...[...'øæ'].map((c) => [c, r('NO', 'DK')] as const),
  ...[...'å'].map((c) => [c, r('SE', 'NO', 'DK', 'FI')] as const),
  ...[...'łąęśźżń'].map((c) => [c, r('PL')] as const),
  ...[...'řěůď'].map((c) => [c, r('CZ', 'SK')] as const),
  ...[...'őű'].map((c) => [c, r('HU')] as const),
  ...[...'șțăâî'].map((c) => [c, r('RO')] as const),
  ...[...'ğışİ'].map((c) => [c, r('TR')] as const),
  ...[...'ñ¿¡'].map((c) => [c, r('ES', 'MX', 'AR', 'CO')] as const),
  ...[...'ãõ'].map((c) => [c, r('BR', 'PT')] as const),
  ...[...'èêàùœç'].map((c) => [c, r('FR', 'BE', 'CH', 'CA')] as const),
  ...[...'ìò'].map((c) => [c, r('IT')] as const),
]);

/** Scripts (code point ranges) and the regions writing them. */
const SCRIPTS: ReadonlyArray<readonly [number, number, readonly CountryCode[]]> = [
  [0x3040, 0x30ff, r('JP')], // kana
  [0xac00, 0xd7af, r('KR')], // Hangul syllables
  [0x4e00, 0x9fff, r('CN', 'TW', 'HK')], // Han
  [0x0400, 0x04ff, r('RU', 'UA', 'BG')], // Cyrillic
  [0x0370, 0x03ff, r('GR')], // Greek
  [0x0590, 0x05ff, r('IL')], // Hebrew
  [0x0600, 0x06ff, r('SA', 'EG', 'AE')], // Arabic
  [0x0e00, 0x0e7f, r('TH')], // Thai
  [0x0900, 0x097f, r('IN')], // Devanagari
];

/** Country-code top-level domains that are not the ISO code. */
const TLD_REGION: Readonly<Record<string, CountryCode>> = { uk: 'GB' };

/** Hints weighed: an explicit country code counts more than one letter. */
const WEIGHT = { callingCode: 6, tld: 4, iban: 4, letter: 1 } as const;
const MAX_HINTS = 3;

/** The regions the text hints at, strongest first (at most MAX_HINTS, only those hinted more than once). */
export function regionHints(text: string): CountryCode[] {
  const score = new Map<CountryCode, number>();
  const add = (regions: readonly CountryCode[], w: number): void => {
    for (const reg of regions) score.set(reg, (score.get(reg) ?? 0) + w);
  };
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c < 128) {
      if (c === 43 /* + */ && isDigit(text.charCodeAt(i + 1)) && !isDigit(text.charCodeAt(i - 1))) {
        const cc = callingCodeAt(text.slice(i + 1, i + 4));
        if (cc) add([cc.region], WEIGHT.callingCode);
      } else if (c === 64 /* @ */ || (c === 47 /* / */ && text.charCodeAt(i - 1) === 47)) {
        const region = tldRegion(text, i + 1);
        if (region) add([region], WEIGHT.tld);
      } else if (isUpper(c) && isUpper(text.charCodeAt(i + 1)) && isDigit(text.charCodeAt(i + 2)) && isDigit(text.charCodeAt(i + 3)) && !isUpper(text.charCodeAt(i - 1))) {
        const code = text.slice(i, i + 2);
        if (isSupportedCountry(code) && isIbanLike(text, i + 4)) add([code], WEIGHT.iban);
      }
      continue;
    }
    const ch = text[i]!.toLowerCase();
    const letter = LETTER_REGIONS.get(ch);
    if (letter) add(letter, WEIGHT.letter);
    else for (const [lo, hi, regions] of SCRIPTS) if (c >= lo && c <= hi) add(regions, WEIGHT.letter);
  }
  return [...score].filter(([, s]) => s > 1).sort((a, b) => b[1] - a[1]).slice(0, MAX_HINTS).map(([reg]) => reg);
}

/** At least 10 more letters or digits (a space allowed every 4): the rest of an IBAN. */
function isIbanLike(text: string, from: number): boolean {
  let count = 0;
  for (let i = from; i < text.length && i - from < 20; i++) {
    const c = text.charCodeAt(i);
    if (isDigit(c) || isUpper(c)) count++;
    else if (c !== 32) break;
  }
  return count >= 10;
}

/** The region of the top-level domain of the host starting at `from` (at most 255 characters), if a country code. */
function tldRegion(text: string, from: number): CountryCode | undefined {
  let lastDot = -1;
  let i = from;
  for (; i < text.length && i - from < 255; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) lastDot = i;
    else if (!((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || isDigit(c) || c === 45)) break;
  }
  if (text.charCodeAt(i - 1) === 46) lastDot = text.lastIndexOf('.', i - 2) >= from ? text.lastIndexOf('.', i - 2) : -1;
  if (lastDot < 0) return undefined;
  const tld = text.slice(lastDot + 1, text.charCodeAt(i - 1) === 46 ? i - 1 : i).toLowerCase();
  if (tld.length !== 2) return undefined;
  const code = TLD_REGION[tld] ?? tld.toUpperCase();
  return isSupportedCountry(code) ? code : undefined;
}
