/**
 * Records in the stream: `r` (the hashed body, canonical JSON, exactly as hashed), `hash`, and on the
 * record that signs for its run `sig` and `signs` (`mac` on records written before signatures); a reader recomputes the hash from the record it parses, not from the text. Entries written before
 * December 2026 hold one field per record field instead (arrays and `detail` as canonical JSON); both
 * are read. Exported lines hold every field of a record, or the raw fields of an entry that does not parse.
 */
import { canonicalJson } from './canonical-json.js';
import { AuditRecordSchema, hashedBody, type AuditRecord, type StoredRecord } from './audit-record.js';

/** Field order in the stream (and in exported lines). */
const FIELDS = ['seq', 'at', 'writer', 'runId', 'principal', 'tenant', 'chain', 'agent', 'action', 'subject', 'outcome', 'reasons', 'risk', 'detail', 'prev', 'hash', 'kid', 'mac', 'sig', 'signs'] as const;
type Field = (typeof FIELDS)[number];
const JSON_FIELDS = new Set<Field>(['chain', 'reasons', 'detail']);
const FIELD_SET = new Set<string>(FIELDS);

/**
 * A record as the field list of its stream entry (without the stream id): the hashed body as one field,
 * which Redis stores and the writer sends far more cheaply than a field per member. `body` is
 * `canonicalJson(hashedBody(record))` when the caller has it already.
 */
export function toFields(record: Omit<AuditRecord, 'streamId'> & { streamId?: string }, body: string = canonicalJson(hashedBody(record))): string[] {
  const fields = ['r', body, 'hash', record.hash];
  if (record.mac !== undefined) fields.push('mac', record.mac);
  if (record.sig !== undefined) fields.push('sig', record.sig);
  if (record.signs !== undefined) fields.push('signs', String(record.signs));
  return fields;
}

/** A JSON object's members, or none. */
function parsedObject(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The older layout's fields (one per record field, as strings) for an entry written as `r`, `hash`, `mac`; or why they cannot be had. */
function expanded(flat: string[]): string[] | string {
  const out: string[] = [];
  let body: string | undefined;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    if (flat[i] !== 'r') out.push(flat[i]!, flat[i + 1]!);
    else if (body === undefined) body = flat[i + 1];
    else return "field 'r' appears twice";
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body!);
  } catch {
    return 'its body (r) is not JSON';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'its body (r) is not a JSON object';
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    const numeric = k === 'seq' || k === 'at' || k === 'risk';
    if (JSON_FIELDS.has(k as Field)) out.push(k, JSON.stringify(v));
    else if (numeric ? typeof v === 'number' : typeof v === 'string') out.push(k, String(v));
    else return `its body's '${k}' is not a ${numeric ? 'number' : 'string'}`;
  }
  return out;
}

export type VerifyItem = { streamId: string; record: AuditRecord } | { streamId: string; error: string; fields?: Record<string, string> };

export const INT = /^(0|[1-9][0-9]*)$/;

/** Parses a stream entry strictly: any field it cannot account for makes it malformed. */
export function fromFields(streamId: string, entry: string[]): VerifyItem {
  // No prototype: a field named __proto__ is a field like any other (and an unexpected one).
  const fields: Record<string, string> = Object.create(null) as Record<string, string>;
  const fail = (error: string): VerifyItem => ({ streamId, error, fields });
  let flat = entry;
  if (entry.some((f, i) => i % 2 === 0 && f === 'r')) {
    const out = expanded(entry);
    if (typeof out === 'string') {
      // What can be read of it still places it in the chain (seq, prev, hash), as for the older layout.
      for (let i = 0; i + 1 < entry.length; i += 2) {
        if (entry[i] !== 'r') fields[entry[i]!] = entry[i + 1]!;
        else for (const [k, v] of Object.entries(parsedObject(entry[i + 1]!))) fields[k] = typeof v === 'string' ? v : (JSON.stringify(v) ?? '');
      }
      return fail(out);
    }
    flat = out;
  }
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const k = flat[i]!;
    if (Object.hasOwn(fields, k)) return fail(`field '${k}' appears twice`);
    fields[k] = flat[i + 1]!;
  }
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (!FIELD_SET.has(k)) return fail(`unexpected field '${k}'`);
    if (k === 'seq' || k === 'at' || k === 'signs') {
      if (!INT.test(v)) return fail(`${k} '${v}' is not a whole number`);
      raw[k] = Number(v);
    } else if (k === 'risk') {
      const n = Number(v);
      if (!Number.isFinite(n) || String(n) !== v) return fail(`risk '${v}' is not a number`);
      raw[k] = n;
    } else if (JSON_FIELDS.has(k as Field)) {
      try {
        raw[k] = JSON.parse(v);
      } catch {
        return fail(`${k} is not JSON`);
      }
    } else raw[k] = v;
  }
  return fromObject(streamId, raw, fields);
}

function fromObject(streamId: string, raw: Record<string, unknown>, fields?: Record<string, string>): VerifyItem {
  const parsed = AuditRecordSchema.safeParse(raw);
  if (!parsed.success) {
    return { streamId, error: parsed.error.issues.map((i) => `${i.path.join('.') || '(record)'}: ${i.message}`).join('; '), ...(fields ? { fields } : {}) };
  }
  return { streamId, record: { ...(parsed.data as StoredRecord), streamId } };
}

/** Parses one exported JSONL line back into a verifier item. */
export function parseExportLine(line: string): VerifyItem {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { streamId: '', error: 'the line is not JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { streamId: '', error: 'the line is not a JSON object' };
  const { streamId, malformed, fields, ...rest } = raw as Record<string, unknown>;
  const id = typeof streamId === 'string' ? streamId : '';
  if (malformed !== undefined) return { streamId: id, error: String(malformed), ...(isStringRecord(fields) ? { fields } : {}) };
  return fromObject(id, rest);
}

const isStringRecord = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

/** One exported line: the record with every field, or the raw fields of an entry that does not parse. */
export function exportLine(item: VerifyItem): string {
  if ('record' in item) {
    const { streamId, ...rest } = item.record;
    const ordered: Record<string, unknown> = { streamId };
    for (const f of FIELDS) if (rest[f] !== undefined) ordered[f] = rest[f];
    return JSON.stringify(ordered);
  }
  return JSON.stringify({ streamId: item.streamId, malformed: item.error, fields: item.fields ?? {} });
}

/** The seq in a stream id (`<seq>-0`); 0 when it holds none. */
export const seqOfStreamId = (id: string): number => {
  const n = Number(id.split('-')[0]);
  return Number.isSafeInteger(n) ? n : 0;
};
