/**
 * Problems in Cedar policy files: the error that lists them by file, line and column, the lint for
 * names outside the entity model, and the mapping of Cedar's byte offsets to positions in a file.
 */
import type { DetailedError, PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { ACTIONS, CONTEXT_KEYS, ENTITY_TYPES, T } from './cedar-request.js';

/** One problem in a policy file; `line` and `column` are 1-based (0 when Cedar gave no location). */
export interface CedarPolicyProblem {
  file: string;
  line: number;
  column: number;
  detail: string;
}

/** A policy file could not be loaded. Describes the first problem; `errors` holds them all. */
export class CedarPolicyError extends Error {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly detail: string;
  readonly errors: readonly CedarPolicyProblem[];

  constructor(errors: readonly CedarPolicyProblem[]) {
    const first = errors[0] ?? { file: '<policies>', line: 0, column: 0, detail: 'invalid policies' };
    super(errors.length > 0 ? errors.map(formatProblem).join('\n') : formatProblem(first));
    this.name = 'CedarPolicyError';
    this.file = first.file;
    this.line = first.line;
    this.column = first.column;
    this.detail = first.detail;
    this.errors = errors.length > 0 ? errors : [first];
  }
}

function formatProblem(p: CedarPolicyProblem): string {
  return p.line > 0 ? `${p.file}:${p.line}:${p.column}: ${p.detail}` : `${p.file}: ${p.detail}`;
}

/** Problems a parse does not catch: names outside the entity model, which would silently never match. */
export function lint(policy: PolicyJson): Array<{ detail: string; needle?: string | RegExp }> {
  const issues: Array<{ detail: string; needle?: string | RegExp }> = [];
  const entity = (uid: unknown) => {
    const { type, id } = (uid ?? {}) as { type?: unknown; id?: unknown };
    if (typeof type !== 'string') return;
    if (!ENTITY_TYPES.has(type)) {
      issues.push({ detail: unknownType(type), needle: type });
    } else if (type === T.action && !ACTIONS.has(String(id))) {
      issues.push({ detail: `unknown action ${T.action}::"${String(id)}"; actions are ${[...ACTIONS].map((a) => `"${a}"`).join(', ')}`, needle: `"${String(id)}"` });
    }
  };
  const entityType = (type: unknown) => {
    if (typeof type === 'string' && !ENTITY_TYPES.has(type)) issues.push({ detail: unknownType(type), needle: type });
  };
  const contextAttr = (attr: unknown) => {
    const name = Array.isArray(attr) ? attr[0] : attr;
    if (typeof name === 'string' && !CONTEXT_KEYS.has(name)) {
      const quoted = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const needle = new RegExp(`context\\s*(?:\\.\\s*|has\\s+"?)${quoted}`);
      issues.push({ detail: `context has no attribute '${name}'; it has ${[...CONTEXT_KEYS].join(', ')}`, needle });
    }
  };
  for (const scope of [policy.principal, policy.action, policy.resource] as Array<Record<string, unknown>>) {
    entityType(scope.entity_type);
    entity(scope.entity);
    if (Array.isArray(scope.entities)) scope.entities.forEach(entity);
    const inside = scope.in as Record<string, unknown> | undefined;
    if (inside) entity(inside.entity);
  }
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const obj = node as Record<string, unknown>;
    if ('__entity' in obj) entity(obj.__entity);
    if (typeof obj.entity_type === 'string') entityType(obj.entity_type);
    for (const op of ['.', 'has'] as const) {
      const access = obj[op] as { left?: { Var?: string }; attr?: unknown } | undefined;
      if (access?.left?.Var === 'context') contextAttr(access.attr);
    }
    for (const child of Object.values(obj)) walk(child);
  };
  walk(policy.conditions);
  return issues;
}

function unknownType(type: string): string {
  return `unknown entity type ${type}; the entity model has ${[...ENTITY_TYPES].join(', ')}`;
}

/**
 * Cedar returns a file's policies in the order of its own ids ("policy0", "policy1", "policy10",
 * ...), not file order. Each part is a verbatim slice of the file: find where (outside comments
 * and strings) and sort by that.
 */
export function inFileOrder(text: string, parts: readonly string[]): Array<{ text: string; at: number }> {
  const skipped: Array<[number, number]> = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      skipped.push([start, i + 1]);
    } else if (text.startsWith('//', i)) {
      const end = text.indexOf('\n', i);
      skipped.push([i, end < 0 ? text.length : end]);
      i = end < 0 ? text.length : end;
    }
  }
  const used = new Set<number>();
  const located = parts.map((part) => {
    for (let at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + 1)) {
      if (!used.has(at) && !skipped.some(([s, e]) => at >= s && at < e)) {
        used.add(at);
        return { text: part, at };
      }
    }
    return { text: part, at: -1 };
  });
  const key = (p: { at: number }) => (p.at < 0 ? Number.MAX_SAFE_INTEGER : p.at);
  return located.sort((a, b) => key(a) - key(b));
}

export function flatten(errors: readonly DetailedError[]): DetailedError[] {
  return errors.flatMap((e) => [e, ...flatten(e.related ?? [])]);
}

export function describe(e: DetailedError): string {
  const message = e.message.replace(/^failed to parse policies from string: /, '');
  const label = e.sourceLocations?.find((l) => l.label)?.label;
  const extra = [label, e.help].filter(Boolean).join('; ');
  return extra ? `${message} (${extra})` : message;
}

export function problemAt(file: string, text: string, byteOffset: number | undefined, detail: string): CedarPolicyProblem {
  if (byteOffset === undefined) return { file, line: 0, column: 0, detail };
  return { file, ...lineColumn(text, byteOffset), detail };
}

/** 1-based line and column (in Unicode code points) of a UTF-8 byte offset into `text`. */
export function lineColumn(text: string, byteOffset: number): { line: number; column: number } {
  const before = Buffer.from(text, 'utf8').subarray(0, Math.max(0, byteOffset)).toString('utf8');
  const lineStart = before.lastIndexOf('\n') + 1;
  let line = 1;
  for (let i = before.indexOf('\n'); i >= 0; i = before.indexOf('\n', i + 1)) line++;
  return { line, column: [...before.slice(lineStart)].length + 1 };
}