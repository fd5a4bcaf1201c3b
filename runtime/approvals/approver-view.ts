import { createHmac, randomBytes } from 'node:crypto';
import type { TracedValue } from '../../guards/builtin/provenance.js';
import { scan } from '../../guards/content/scanner.js';
import type { ValueSource } from './approval.js';

/**
 * How one request's masked identifiers are told apart: a short HMAC of the whole value under a
 * secret drawn for that request alone and never stored. Two look-alikes (same first and last four
 * characters) get different fingerprints, the same value the same one everywhere in the request.
 * An unkeyed hash (or one over the request id, which readers see) would let a reader try every
 * IBAN or SSN that fits the shown ends until the fingerprint matches; with a discarded key nobody
 * can, and fingerprints cannot link requests either. The stored text is what the agent MACs and the
 * decision's digest covers, so nothing needs the key again.
 */
export type Fingerprint = (value: string) => string;

export function requestFingerprint(secret: Buffer = randomBytes(32)): Fingerprint {
  // Spacing and case do not make another identifier (`GB29 NWBK …` is `gb29nwbk…`).
  return (value) => createHmac('sha256', secret).update(value.replace(/\s+/g, '').toLowerCase()).digest('hex').slice(0, 6);
}

/**
 * An identifier partly shown, so an approver can tell one from another without reading it whole:
 * `GB29…6819 #a3f90c`, `gr…@example.com #…`, `…6789 #…` for short ones.
 */
function partly(value: string, kind: string, fingerprint: Fingerprint): string {
  const tag = ` #${fingerprint(value)}`;
  if (kind === 'email') {
    const at = value.lastIndexOf('@');
    const local = value.slice(0, at);
    return `${local.slice(0, local.length > 4 ? 2 : 1)}…${value.slice(at)}${tag}`;
  }
  const compact = value.replace(/\s+/g, '');
  if (compact.length >= 12) return `${compact.slice(0, 4)}…${compact.slice(-4)}${tag}`;
  return `${compact.length >= 6 ? `…${compact.slice(-4)}` : '…'}${tag}`;
}

/** Text for an approver's eyes: personal identifiers partly masked with a fingerprint, so they can be told apart; secrets withheld whole. */
export function maskForApprover(text: string, fingerprint: Fingerprint): string {
  const findings = scan(text, { injection: false }).filter((f) => f.start >= 0 && f.end > f.start);
  let out = '';
  let pos = 0;
  for (const f of findings) {
    // Overlapping findings: the first (the longest at its start) covers the span.
    if (f.start < pos) continue;
    const span = text.slice(f.start, f.end);
    out += text.slice(pos, f.start) + (f.type === 'pii' && f.kind !== 'truncated' ? partly(span, f.kind, fingerprint) : `[REDACTED:${f.kind}]`);
    pos = f.end;
  }
  return out + text.slice(pos);
}

/** Keys whose numeric values are sums or counts: an approver must read them whole to know what they approve. */
const AMOUNT_KEY = /(?:amount|total|sum|price|cost|fee|quantity|qty|count|balance)$/i;
const NUMERIC = /^-?\d[\d,_]*(?:\.\d+)?$/;
/** Whether a value at `key` is an amount: a JSON number (numbers are not identifiers), or a numeric string under an amount-like key. */
const isAmount = (key: string, value: unknown): boolean => typeof value === 'number' || (typeof value === 'string' && AMOUNT_KEY.test(key) && NUMERIC.test(value.trim()));

function maskValue(value: unknown, key: string, fingerprint: Fingerprint): unknown {
  if (isAmount(key, value)) return value;
  if (typeof value === 'string') return maskForApprover(value, fingerprint);
  if (Array.isArray(value)) return value.map((item) => maskValue(item, key, fingerprint));
  if (value && typeof value === 'object') {
    // Keys are the model's to choose: one may be an identifier too.
    return Object.fromEntries(Object.entries(value).map(([k, item]) => [maskForApprover(k, fingerprint), maskValue(item, k, fingerprint)]));
  }
  return value;
}

/** A tool call's arguments for an approver: JSON masked value by value (amounts left whole), anything else as text. */
export function maskArguments(text: string, fingerprint: Fingerprint): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return maskForApprover(text, fingerprint);
  }
  return JSON.stringify(maskValue(parsed, '', fingerprint));
}

/** The paths of the arguments' amounts, as the provenance guard names them (`a.b.0`). */
function amountPaths(value: unknown, path: string, key: string, into: Set<string>): Set<string> {
  if (isAmount(key, value)) into.add(path);
  else if (Array.isArray(value)) value.forEach((item, i) => amountPaths(item, path ? `${path}.${i}` : String(i), key, into));
  else if (value && typeof value === 'object') for (const [k, item] of Object.entries(value)) amountPaths(item, path ? `${path}.${k}` : k, k, into);
  return into;
}

const ORIGIN_OF: Record<TracedValue['provenance'], ValueSource['origin'] | undefined> = { trusted: undefined, designated: 'third_party', untrusted: 'third_party', instructed: 'instructions', unseen: 'model' };
const MAX_SOURCES = 100;
const MAX_TEXT = 200;
const cap = (text: string): string => (text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT - 1)}…` : text);

/**
 * Where each identifying value of a tool call came from, for the approver: the provenance guard's
 * tracing, masked. Paths are masked too (a key may be any text the model chose); the edge shows
 * sources, like the arguments, only to readers cleared for the request's label.
 */
export function valueSources(args: Record<string, unknown>, traced: readonly TracedValue[], fingerprint: Fingerprint): ValueSource[] {
  const amounts = amountPaths(args, '', '', new Set());
  return traced.slice(0, MAX_SOURCES).map((t) => {
    const origin = ORIGIN_OF[t.provenance] ?? (t.from?.source === 'user' ? 'user' : t.from?.source === 'agent' ? 'agent' : 'tool');
    return {
      path: cap(maskForApprover(t.path, fingerprint)),
      value: cap(amounts.has(t.path) ? t.value : maskForApprover(t.value, fingerprint)),
      origin,
      ...(t.from?.name ? { via: t.from.name.slice(0, 64) } : {}),
    };
  });
}
