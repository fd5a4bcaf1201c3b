/**
 * The names a policy writes: agents, tools, roles, users, label categories and guards, in its YAML
 * and in its Cedar files. A name that matches nothing fails open: a Cedar `forbid` on a tool that
 * does not exist forbids nothing, a clearance for an agent that does not exist limits nothing. So:
 *
 * - **at load**, every name must be plain: only the ASCII characters its kind allows (agent names
 *   as `defineAgent` takes them, tool names as `defineTool` takes them, roles, categories and guard
 *   names in letters, digits and `_ - . :`), so a lookalike (a Cyrillic "е" for a Latin "e", a
 *   zero-width space, a fullwidth letter, an en dash for a hyphen) is an error naming the
 *   character, not a second name that matches nothing. User ids (`Palisade::User::"…"`) may be in
 *   another script, but not mix scripts, hide characters or be made of lookalikes of Latin letters.
 *   Cedar comparisons with closed sets of values (`context.effect == "external"`, the label's level
 *   and integrity, the stage, the tool's risk) must use one of the values.
 * - **where the agents are known** (a `Runtime` given agents, `palisade policy check --agents`),
 *   every agent and tool name must name one of them, with the nearest name suggested. Cedar `like`
 *   patterns on agent names must match at least one. Roles and users come from the identity
 *   provider, not from the agents: only their characters are checked.
 */
import type { Agent } from '../../agents/agent.js';
import { nameProblem, nearestName, quoteName, type NameKind } from './name-characters.js';
import { patternRegExp } from './cedar-names.js';

export { cedarNames, type CedarNameUse } from './cedar-names.js';
export { describeCharacter, editDistance, nameProblem, nearestName, quoteName, skeleton, type NameKind } from './name-characters.js';

/** One name a policy writes, and where. */
export interface NameUse {
  kind: NameKind;
  /** The name as written; for a pattern, `*` stands for Cedar's wildcard. */
  name: string;
  /** How messages introduce it: `clearance for "tech-support"`, `Palisade::Tool::"issue_refund"`. */
  subject: string;
  /** The YAML section it is in (`clearance.agents`), for messages; absent in Cedar. */
  section?: string;
  /** Its path in the YAML document (a key's path ends with the key). */
  path?: ReadonlyArray<string | number>;
  /** A Cedar `like` pattern: the literal runs between its wildcards. */
  pattern?: readonly string[];
  file: string;
  /** 1-based; 0 when the policy did not come from a file. */
  line: number;
  column: number;
}

/** A problem with a name, where it is written. */
export interface NameProblem {
  file: string;
  line: number;
  column: number;
  detail: string;
}

/** The problems with the characters of these names, each at the name. */
export function characterProblems(uses: readonly NameUse[]): NameProblem[] {
  const problems: NameProblem[] = [];
  for (const use of uses) {
    const problem = nameProblem(use.kind, use.name, use.pattern);
    if (problem) problems.push({ ...at(use), detail: `${use.section ? `${use.section}: ` : ''}${use.kind === 'user' ? 'user id' : `${use.kind} name`} ${quoteName(use.name)} ${problem}` });
  }
  return problems;
}

const at = (use: NameUse) => ({ file: use.file, line: use.line, column: use.column });

// ------------------------------------------------------------------------------------------------
// Matching the agents

/** The agents and tools policy names may refer to. */
export interface KnownNames {
  agents: ReadonlySet<string>;
  tools: ReadonlySet<string>;
}

/** The names these agents and their tools answer to, plus any served elsewhere. */
export function knownNames(agents: readonly Pick<Agent, 'name' | 'tools'>[], elsewhere: { agents?: readonly string[]; tools?: readonly string[] } = {}): KnownNames {
  return {
    agents: new Set([...agents.map((a) => a.name), ...(elsewhere.agents ?? [])]),
    tools: new Set([...agents.flatMap((a) => [...a.tools.keys()]), ...(elsewhere.tools ?? [])]),
  };
}

/** Agent and tool names that name none of the known ones: `clearance for "tech-support" names no agent; did you mean "tech_support"?`. */
export function unmatchedNames(uses: readonly NameUse[], known: KnownNames): NameProblem[] {
  const problems: NameProblem[] = [];
  for (const use of uses) {
    if (use.kind !== 'agent' && use.kind !== 'tool') continue;
    const names = use.kind === 'agent' ? known.agents : known.tools;
    // Without a position, the section says where it is.
    const where = use.line === 0 && use.section ? `${use.section}: ` : '';
    if (use.pattern) {
      const re = patternRegExp(use.pattern);
      if (![...names].some((n) => re.test(n))) problems.push({ ...at(use), detail: `${where}${use.subject} matches no ${use.kind}${listing(use.kind, names)}` });
      continue;
    }
    if (names.has(use.name)) continue;
    const near = nearestName(use.name, names);
    problems.push({ ...at(use), detail: `${where}${use.subject} names no ${use.kind}${near ? `; did you mean ${quoteName(near)}?` : listing(use.kind, names)}` });
  }
  return problems;
}

function listing(kind: 'agent' | 'tool', names: ReadonlySet<string>): string {
  if (names.size === 0) return `; there are no ${kind}s`;
  if (names.size > 12) return '';
  return `; the ${kind}s are ${[...names].sort().join(', ')}`;
}

// ------------------------------------------------------------------------------------------------
// Names in the YAML

type Path = ReadonlyArray<string | number>;
/** Where the node at `path` starts; `key` for the key of a mapping entry rather than its value. */
export type Locate = (path: Path, key: boolean) => { line: number; column: number };

const record = (v: unknown): Record<string, unknown> | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
const entries = (v: unknown): Array<[string, unknown]> => Object.entries(record(v) ?? {});
const items = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * Every name the YAML part of a policy writes, parsed or not yet validated: role, agent and tool
 * keys, handoff targets, the tools and agents `approve:tool:<tool>` / `approve:agent:<agent>`
 * permissions name, label categories and guard names.
 */
export function yamlNameUses(value: unknown, file: string, locate?: Locate): NameUse[] {
  const uses: NameUse[] = [];
  const place = (path: Path, key: boolean) => (locate ? locate(path, key) : { line: 0, column: 0 });
  const key = (kind: NameKind, section: Path, name: string, subject: string) =>
    uses.push({ kind, name, subject, section: section.join('.'), path: [...section, name], file, ...place([...section, name], true) });
  const item = (kind: NameKind, path: Path, name: unknown, subject: (n: string) => string) => {
    if (typeof name === 'string') uses.push({ kind, name, subject: subject(quoteName(name)), section: path.slice(0, -1).join('.'), path, file, ...place(path, false) });
  };
  const categories = (labelPath: Path, label: unknown) =>
    items(record(label)?.categories).forEach((c, i) => item('category', [...labelPath, 'categories', i], c, (q) => `category ${q}`));

  const top = record(value) ?? {};
  for (const [role, permissions] of entries(top.roles)) {
    key('role', ['roles'], role, `role ${quoteName(role)}`);
    items(permissions).forEach((p, i) => {
      const m = typeof p === 'string' ? /^approve:(tool|agent):(.+)$/.exec(p) : null;
      if (m && m[2] !== '*') item(m[1] as 'tool' | 'agent', ['roles', role, i], m[2], () => `permission ${quoteName(p as string)} of role ${quoteName(role)}`);
    });
  }
  for (const [from, targets] of entries(top.handoffs)) {
    key('agent', ['handoffs'], from, `handoffs of ${quoteName(from)}`);
    items(targets).forEach((t, i) => item('agent', ['handoffs', from, i], t, (q) => `handoff target ${q}`));
  }
  const clearance = record(top.clearance) ?? {};
  for (const sink of ['reply', 'external'] as const) categories(['clearance', sink], clearance[sink]);
  for (const [role, label] of entries(clearance.roles)) {
    key('role', ['clearance', 'roles'], role, `clearance for role ${quoteName(role)}`);
    categories(['clearance', 'roles', role], label);
  }
  for (const [agent, label] of entries(clearance.agents)) {
    key('agent', ['clearance', 'agents'], agent, `clearance for ${quoteName(agent)}`);
    categories(['clearance', 'agents', agent], label);
  }
  for (const [tool, label] of entries(clearance.tools)) {
    key('tool', ['clearance', 'tools'], tool, `clearance for tool ${quoteName(tool)}`);
    categories(['clearance', 'tools', tool], label);
  }
  for (const [tool, override] of entries(top.tools)) {
    key('tool', ['tools'], tool, `tools entry ${quoteName(tool)}`);
    categories(['tools', tool, 'returns'], record(override)?.returns);
  }
  for (const [agent, cap] of entries(top.declassify)) {
    key('agent', ['declassify'], agent, `declassify entry ${quoteName(agent)}`);
    categories(['declassify', agent, 'to'], record(cap)?.to);
  }
  for (const [role] of entries(record(top.risk)?.roles)) key('role', ['risk', 'roles'], role, `risk for role ${quoteName(role)}`);
  items(record(top.guards)?.failOpen).forEach((g, i) => item('guard', ['guards', 'failOpen', i], g, (q) => `guard ${q}`));
  return uses;
}

// ------------------------------------------------------------------------------------------------
// The whole policy

/**
 * Checks the names a policy writes: their characters always, and, when agents are given, that each
 * agent and tool name names one of them (or one served elsewhere). Returns the problems, in file
 * order.
 */
export function policyNameProblems(uses: readonly NameUse[], known?: KnownNames): NameProblem[] {
  const problems = [...characterProblems(uses), ...(known ? unmatchedNames(uses.filter((u) => nameProblem(u.kind, u.name, u.pattern) === undefined), known) : [])];
  const files = [...new Set(uses.map((u) => u.file))];
  return problems.sort((a, b) => files.indexOf(a.file) - files.indexOf(b.file) || a.line - b.line || a.column - b.column);
}
