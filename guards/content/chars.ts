/** Character tests shared by the content detectors (char codes; ASCII unless said). */

export const isDigit = (c: number): boolean => c >= 48 && c <= 57;
export const isUpper = (c: number): boolean => c >= 65 && c <= 90;
export const isLower = (c: number): boolean => c >= 97 && c <= 122;
export const isAlpha = (c: number): boolean => isUpper(c) || isLower(c);
export const isAlnum = (c: number): boolean => isDigit(c) || isAlpha(c);
const GLUE = /[\p{Script=Latin}\p{Nd}]/u;
/**
 * A character a value is glued to when it touches it ("ID4111...", "...1111x", "é4111"): ASCII
 * letters, digits and '_', and letters and digits of the Latin script. Letters of scripts written
 * without spaces before numbers ("番号4532...", "연락처jane@...", "Карта4532...") are not glue.
 */
export const isWordish = (c: number): boolean => isAlnum(c) || c === 95 || (c > 127 && GLUE.test(String.fromCharCode(c)));
export const at = (text: string, i: number): number => (i >= 0 && i < text.length ? text.charCodeAt(i) : -1);

// Most detectors start only at a digit (or '+', '('): a regular expression finds the next one natively,
// several times faster than testing every character in a loop, and most text has few digits.
export const DIGIT = /[0-9]/g;
export const PHONE_START = /[0-9+(]/g;
/** Offset of the next match of a one-character class at or after `from`; text.length if none. */
export function nextOf(re: RegExp, text: string, from: number): number {
  re.lastIndex = from;
  return re.test(text) ? re.lastIndex - 1 : text.length;
}
