/**
 * A phone number candidate read as it is written: its digit groups, the separators between them,
 * a '+', an area code in parentheses, and an extension after it.
 */
import { isAlnum, isDigit } from './chars.js';

/** A candidate read as groups of digits. */
export interface Written {
  /** Digit groups, in order (a "(0)" after a country code left out). */
  groups: string[];
  /** The separator before each group ('' before the first). */
  seps: string[];
  plus: boolean;
  /** A group in parentheses other than "(0)": an area code. */
  parenGroup: boolean;
  digits: string;
}

/** Reads text[s, e) as digit groups; undefined when it cannot be one number (unbalanced or nested parentheses, '+' inside). */
export function read(text: string, s: number, e: number): Written | undefined {
  const groups: string[] = [];
  const seps: string[] = [];
  let plus = false;
  let parenGroup = false;
  let open = -1; // group index a '(' opened before, -1 if none open
  let sep = '';
  let i = s;
  if (text.charCodeAt(i) === 40 && text.charCodeAt(i + 1) === 43) {
    // "(+62) 552 8826 040": the country code in parentheses
    plus = true;
    open = 0;
    i += 2;
  } else if (text.charCodeAt(i) === 43) {
    plus = true;
    i++;
  }
  while (i < e) {
    const c = text.charCodeAt(i);
    if (isDigit(c)) {
      let j = i;
      while (j < e && isDigit(text.charCodeAt(j))) j++;
      groups.push(text.slice(i, j));
      seps.push(sep);
      sep = '';
      i = j;
      continue;
    }
    if (c === 43) return undefined;
    if (c === 40) {
      if (open >= 0) return undefined;
      open = groups.length;
    } else if (c === 41) {
      if (open !== groups.length - 1) return undefined; // ")" must close exactly one group
      if (plus && open === 0) {
        if (groups.length !== 1) return undefined;
        open = -1; // the end of "(+62)"
        sep += ')';
        i++;
        continue;
      }
      if (plus && open === 1 && groups[1] === '0') {
        groups.pop(); // "+44 (0)20": the trunk prefix dropped when dialling from abroad
        seps.pop();
        sep = '';
        open = -1;
        i++;
        continue;
      } else if (open > (plus ? 1 : 0)) return undefined; // an area code comes first: "8 336 817 (2020)" is a number and a year
      else parenGroup = true;
      open = -1;
    }
    sep += c === 0xa0 ? ' ' : text[i];
    if (sep.length > 3) return undefined;
    i++;
  }
  if (open >= 0 || groups.length === 0) return undefined;
  return { groups, seps, plus, parenGroup, digits: groups.join('') };
}

/** Extension after the number: "x123", " ext. 12", ", ext 1234", " #12". Returns its end, or -1. */
export function extensionEnd(text: string, e: number): number {
  let i = e;
  if (text.charCodeAt(i) === 44) i++;
  if (text.charCodeAt(i) === 32) i++;
  const c = text.charCodeAt(i) | 0x20;
  if (c === 0x78 /* x */) i++;
  else if (c === 0x65 /* e */ && (text.charCodeAt(i + 1) | 0x20) === 0x78 && (text.charCodeAt(i + 2) | 0x20) === 0x74) {
    i += 3;
    if ((text.charCodeAt(i) | 0x20) === 0x6e) i++; // "extn"
    if (text.charCodeAt(i) === 46) i++;
  } else if (text.charCodeAt(i) === 35 /* # */) i++;
  else return -1;
  if (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 58) i++;
  const ds = i;
  while (i < text.length && i - ds < 7 && isDigit(text.charCodeAt(i))) i++;
  if (i === ds || i - ds > 6 || isAlnum(text.charCodeAt(i))) return -1;
  return i;
}

// ---------------------------------------------------------------------------------------------
// judging it
