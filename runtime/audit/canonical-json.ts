/** Canonical JSON: the one text of a value that hashes and MACs cover (audit records, envelopes). */

/** Lone surrogates cannot survive UTF-8 storage; replace them (with U+FFFD) as Redis would, so hashes stay stable. */
export const wellFormed = (s: string): string => (s.isWellFormed() ? s : s.toWellFormed());

/**
 * Canonical JSON (RFC 8785 / JCS for JSON values): object keys sorted by UTF-16 code units, no
 * whitespace, numbers as ECMAScript prints them. `undefined` object members are left out, as in
 * JSON.stringify; non-finite numbers, bigints and other non-JSON values throw.
 */
export function canonicalJson(value: unknown): string {
  const out = canon(value);
  if (out === undefined) throw new TypeError('canonicalJson: the value is not JSON');
  return out;
}

function canon(value: unknown): string | undefined {
  if (value === null) return 'null';
  if (typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') value = (value as { toJSON(): unknown }).toJSON();
  switch (typeof value) {
    case 'string':
      return JSON.stringify(wellFormed(value));
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${value} is not a JSON number`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'bigint':
      throw new TypeError('canonicalJson: bigint is not JSON');
    default: {
      if (value === null) return 'null';
      // Appending to one string: every audit record is canonicalised on the hot path.
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + (canon(value[i]) ?? 'null');
        return `${out}]`;
      }
      const obj = value as Record<string, unknown>;
      let out = '{';
      let first = true;
      for (const k of Object.keys(obj).sort()) {
        const v = canon(obj[k]);
        if (v === undefined) continue;
        out += (first ? '' : ',') + quotedKey(k) + ':' + v;
        first = false;
      }
      return `${out}}`;
    }
  }
}

/** Object keys are few and repeat (the same field names in every envelope): each is quoted once. */
const quotedKeys = new Map<string, string>();
function quotedKey(k: string): string {
  let quoted = quotedKeys.get(k);
  if (quoted === undefined) {
    quoted = JSON.stringify(wellFormed(k));
    // Bounded: keys from data (arguments, attributes) must not grow it without limit.
    if (k.length <= 64 && quotedKeys.size < 4096) quotedKeys.set(k, quoted);
  }
  return quoted;
}
