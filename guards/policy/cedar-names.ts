/**
 * The names one Cedar policy writes, found in Cedar's JSON form of it: entity ids of tools, agents,
 * roles and users, and strings compared with attributes that hold names or one of a closed set of
 * values. `policy-names.ts` checks them; `cedar-policies.ts` calls this for each policy it loads.
 */
import { LEVELS } from '../../agents/label.js';
import { EFFECTS, RISKS } from '../../agents/tool.js';
import { STAGES } from '../decision.js';
import { nearestName, quoteName, type NameKind } from './name-characters.js';

const record = (v: unknown): Record<string, unknown> | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
const items = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A `like` pattern (the literal runs between its wildcards) as a regular expression. */
export const patternRegExp = (parts: readonly string[]): RegExp => new RegExp(`^${parts.map(escapeRe).join('.*')}$`);

/** A name in one Cedar policy; `needle` finds it in the policy's text. */
export interface CedarNameUse {
  kind: NameKind;
  name: string;
  subject: string;
  pattern?: readonly string[];
  needle: string | RegExp;
}

const ENTITY_KINDS: Readonly<Record<string, NameKind>> = {
  'Palisade::Tool': 'tool',
  'Palisade::Agent': 'agent',
  'Palisade::Role': 'role',
  'Palisade::User': 'user',
};

/** Attributes whose values are names, or one of a closed set. */
const ATTRIBUTES: ReadonlyArray<{ path: readonly string[]; kind?: NameKind; values?: readonly string[] }> = [
  { path: ['context', 'agent'], kind: 'agent' },
  { path: ['resource', 'agent'], kind: 'agent' },
  { path: ['context', 'chain'], kind: 'agent' },
  { path: ['principal', 'roles'], kind: 'role' },
  { path: ['context', 'label', 'categories'], kind: 'category' },
  { path: ['context', 'effect'], values: EFFECTS },
  { path: ['context', 'toolRisk'], values: RISKS },
  { path: ['context', 'stage'], values: STAGES },
  { path: ['context', 'label', 'level'], values: LEVELS },
  { path: ['context', 'label', 'integrity'], values: ['trusted', 'untrusted'] },
];

/** `context.label.level` as a path, from Cedar's JSON form of an attribute access. */
function accessPath(node: unknown): string[] | undefined {
  const obj = record(node);
  if (!obj) return undefined;
  if (typeof obj.Var === 'string') return [obj.Var];
  const access = record(obj['.']);
  if (access && typeof access.attr === 'string') {
    const left = accessPath(access.left);
    return left && [...left, access.attr];
  }
  return undefined;
}

const attributeOf = (node: unknown) => {
  const path = accessPath(node)?.join('.');
  return path === undefined ? undefined : ATTRIBUTES.find((a) => a.path.join('.') === path);
};

/** String literals of a value: `"x"`, or each string in `["x", "y"]`. */
function strings(node: unknown): string[] {
  const obj = record(node);
  if (!obj) return [];
  if (typeof obj.Value === 'string') return [obj.Value];
  if (Array.isArray(obj.Set)) return obj.Set.flatMap((v) => (typeof record(v)?.Value === 'string' ? [record(v)!.Value as string] : []));
  return [];
}

/**
 * The names one Cedar policy (in Cedar's JSON form) writes: entity ids of tools, agents, roles and
 * users, and strings compared with attributes that hold names (`context.agent == "billing"`,
 * `context.chain.contains("billing")`, `resource.agent like "bill*"`). Comparisons of attributes
 * with a closed set of values against anything else are returned as problems.
 */
export function cedarNames(policy: unknown): { uses: CedarNameUse[]; problems: Array<{ detail: string; needle: string | RegExp }> } {
  const uses: CedarNameUse[] = [];
  const problems: Array<{ detail: string; needle: string | RegExp }> = [];
  const entity = (uid: unknown) => {
    const { type, id } = record(uid) ?? {};
    if (typeof type !== 'string' || typeof id !== 'string') return;
    const kind = ENTITY_KINDS[type];
    const subject = `${type}::${quoteName(id)}`;
    if (kind) uses.push({ kind, name: id, subject, needle: new RegExp(`${type.split('::').map(escapeRe).join('\\s*::\\s*')}\\s*::\\s*"${escapeRe(id)}"`) });
  };
  const compared = (attribute: (typeof ATTRIBUTES)[number], values: readonly string[], how: string) => {
    const attr = attribute.path.join('.');
    for (const value of values) {
      if (attribute.kind) uses.push({ kind: attribute.kind, name: value, subject: `${quoteName(value)} (${how} ${attr})`, needle: JSON.stringify(value) });
      else if (!attribute.values!.includes(value)) {
        const near = nearestName(value, attribute.values!);
        problems.push({ detail: `${attr} is never ${quoteName(value)}: it is one of ${attribute.values!.map((v) => `"${v}"`).join(', ')}${near ? `; did you mean "${near}"?` : ''}`, needle: JSON.stringify(value) });
      }
    }
  };
  const likePattern = (attribute: (typeof ATTRIBUTES)[number], pattern: unknown[]) => {
    const parts: string[] = [''];
    for (const p of pattern) {
      if (p === 'Wildcard') parts.push('');
      else if (typeof record(p)?.Literal === 'string') parts[parts.length - 1] += record(p)!.Literal as string;
    }
    const shown = parts.join('*');
    const attr = attribute.path.join('.');
    if (attribute.kind) uses.push({ kind: attribute.kind, name: shown, pattern: parts, subject: `${attr} like ${quoteName(shown)}`, needle: /\blike\b/ });
    else {
      const re = patternRegExp(parts);
      if (!attribute.values!.some((v) => re.test(v))) problems.push({ detail: `${attr} like ${quoteName(shown)} matches none of ${attribute.values!.map((v) => `"${v}"`).join(', ')}`, needle: /\blike\b/ });
    }
  };

  const top = record(policy) ?? {};
  for (const scope of [top.principal, top.action, top.resource]) {
    const s = record(scope) ?? {};
    entity(s.entity);
    items(s.entities).forEach(entity);
    entity(record(s.in)?.entity);
  }
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    const obj = record(node);
    if (!obj) return;
    if ('__entity' in obj) entity(obj.__entity);
    // Per operator: how to say the attribute is used when it stands on the left, and on the right.
    const uses: ReadonlyArray<[op: string, left: string, right: string]> = [
      ['==', 'compared with', 'compared with'],
      ['!=', 'compared with', 'compared with'],
      ['contains', 'looked for in', 'a set holding'],
      ['containsAll', 'looked for in', 'a set holding'],
      ['containsAny', 'looked for in', 'a set holding'],
    ];
    for (const [op, asLeft, asRight] of uses) {
      const pair = record(obj[op]);
      if (!pair) continue;
      const left = attributeOf(pair.left);
      const right = attributeOf(pair.right);
      if (left && !right) compared(left, strings(pair.right), asLeft);
      if (right && !left) compared(right, strings(pair.left), asRight);
    }
    const like = record(obj.like);
    if (like && Array.isArray(like.pattern)) {
      const attribute = attributeOf(like.left);
      if (attribute) likePattern(attribute, like.pattern);
    }
    for (const child of Object.values(obj)) walk(child);
  };
  walk(top.conditions);
  return { uses, problems };
}
