import type { TracedValue } from '../../guards/builtin/provenance.js';
import { scan } from '../../guards/content/scanner.js';
import type { ValueSource } from './approval.js';

/**
 * An identifier partly shown, so an approver can tell one from another without reading it whole:
 * `GB29…6819`, `gr…@example.com`, `…6789` for short ones.
 */
function partly(value: string, kind: string): string {
  if (kind === 'email') {
    const at = value.lastIndexOf('@');
    const local = value.slice(0, at);
    return `${local.slice(0, local.length > 4 ? 2 : 1)}…${value.slice(at)}`;
  }
  const compact = value.replace(/\s+/g, '');
  if (compact.length >= 12) return `${compact.slice(0, 4)}…${compact.slice(-4)}`;
  return compact.length >= 6 ? `…${compact.slice(-4)}` : '…';
}

/** Text for an approver's eyes: personal identifiers partly masked, so they can be told apart; secrets withheld whole. */
export function maskForApprover(text: string): string {
  const findings = scan(text, { injection: false }).filter((f) => f.start >= 0 && f.end > f.start);
  let out = '';
  let pos = 0;
  for (const f of findings) {
    // Overlapping findings: the first (the longest at its start) covers the span.
    if (f.start < pos) continue;
    const span = text.slice(f.start, f.end);
    out += text.slice(pos, f.start) + (f.type === 'pii' && f.kind !== 'truncated' ? partly(span, f.kind) : `[REDACTED:${f.kind}]`);
    pos = f.end;
  }
  return out + text.slice(pos);
}

const ORIGIN_OF: Record<TracedValue['provenance'], ValueSource['origin'] | undefined> = { trusted: undefined, untrusted: 'third_party', instructed: 'instructions', unseen: 'model' };
const MAX_SOURCES = 100;
const MAX_VALUE = 200;

/** Where each identifying value of a tool call came from, for the approver: the provenance guard's tracing, masked. */
export function valueSources(traced: readonly TracedValue[]): ValueSource[] {
  return traced.slice(0, MAX_SOURCES).map((t) => {
    const origin = ORIGIN_OF[t.provenance] ?? (t.from?.source === 'user' ? 'user' : t.from?.source === 'agent' ? 'agent' : 'tool');
    const value = maskForApprover(t.value);
    return {
      path: t.path.slice(0, 200),
      value: value.length > MAX_VALUE ? `${value.slice(0, MAX_VALUE - 1)}…` : value,
      origin,
      ...(t.from?.name ? { via: t.from.name.slice(0, 64) } : {}),
    };
  });
}
