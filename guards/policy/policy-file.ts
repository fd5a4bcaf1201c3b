import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { isMap, isNode, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { PolicySchema, type Policy } from './policy.js';
import { characterProblems, nameProblem, quoteName, yamlNameUses, type Locate, type NameUse } from './policy-names.js';

/** A policy file that cannot be used: where (file, line, column; line 0 when it has no position) and what is wrong. */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly detail: string,
    readonly others: readonly string[] = [],
  ) {
    super(`${file}${line > 0 ? `:${line}:${column}` : ''}: ${detail}${others.length ? `\n${others.map((o) => `  ${o}`).join('\n')}` : ''}`);
  }
}

/** The closest node to `path` that exists in the document: a missing key is reported at its parent. */
function locate(doc: Document, path: readonly PropertyKey[], lines: LineCounter): { line: number; col: number } {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true);
    if (isNode(node) && node.range) return lines.linePos(node.range[0]);
  }
  return { line: 1, col: 1 };
}

/** Where the key of a mapping entry starts (a missing one is reported at its parent). */
function locateKey(doc: Document, path: readonly PropertyKey[], lines: LineCounter): { line: number; col: number } {
  const parent = doc.getIn(path.slice(0, -1) as unknown[], true);
  const last = String(path.at(-1));
  if (isMap(parent)) {
    for (const pair of parent.items) {
      if (isScalar(pair.key) && String(pair.key.value) === last && pair.key.range) return lines.linePos(pair.key.range[0]);
    }
  }
  return locate(doc, path, lines);
}

/** Parses policy YAML and validates it; every mistake is reported with its line and column. */
export function parsePolicy(text: string, file = 'policy.yaml'): Policy {
  return parsePolicyText(text, file).policy;
}

/**
 * Parses policy YAML and validates it, and lists the names it writes (agents, tools, roles, ...)
 * with their positions. A name that is not plain (a lookalike letter, an invisible character) is a
 * mistake like any other.
 */
export function parsePolicyText(text: string, file = 'policy.yaml'): { policy: Policy; names: NameUse[] } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const [first, ...rest] = doc.errors.map((e) => {
      const at = lines.linePos(e.pos[0]);
      return { ...at, message: `YAML: ${e.message.split('\n')[0]}` };
    });
    throw new PolicyError(file, first!.line, first!.col, first!.message, rest.map((r) => `${file}:${r.line}:${r.col}: ${r.message}`));
  }
  let value: unknown;
  try {
    // Aliases are resolved here: an unresolved one, or a bomb of them, is the file's mistake.
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    const alias = /\*[\w-]+/.exec(text);
    const at = alias ? lines.linePos(alias.index) : { line: 1, col: 1 };
    throw new PolicyError(file, at.line, at.col, `YAML: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
  }
  const locateName: Locate = (path, key) => {
    const at = key ? locateKey(doc, path, lines) : locate(doc, path, lines);
    return { line: at.line, column: at.col };
  };
  const names = yamlNameUses(value, file, locateName);
  const nameProblems = characterProblems(names);
  const parsed = PolicySchema.safeParse(value);
  if (parsed.success && nameProblems.length === 0) return { policy: parsed.data, names };
  // A name already reported for its characters is not reported again by the schema.
  const reported = new Set(names.filter((u) => nameProblem(u.kind, u.name) !== undefined).map((u) => (u.path ?? []).map(String).join('.')));
  const issues = parsed.success ? [] : parsed.error.issues.filter((i) => !reported.has(i.path.map(String).join('.')));
  const problems = issues.map((issue) => {
    const path = issue.path as PropertyKey[];
    if (issue.code === 'invalid_key' && path.length > 0) {
      const inner = (issue as { issues?: Array<{ message: string }> }).issues?.[0]?.message ?? issue.message;
      const at = locateKey(doc, path, lines);
      return { ...at, message: `${path.slice(0, -1).map(String).join('.') || '(top level)'}: key ${quoteName(String(path.at(-1)))} ${inner}` };
    }
    const where = issue.code === 'unrecognized_keys' ? [...path, (issue as { keys: string[] }).keys[0]!] : path;
    const at = locate(doc, where, lines);
    const name = path.length ? path.map(String).join('.') : '(top level)';
    return { ...at, message: `${name}: ${issue.message}` };
  });
  problems.push(...nameProblems.map((p) => ({ line: p.line, col: p.column, message: p.detail })));
  problems.sort((a, b) => a.line - b.line || a.col - b.col);
  const [first, ...rest] = problems;
  throw new PolicyError(file, first!.line, first!.col, first!.message, rest.map((r) => `${file}:${r.line}:${r.col}: ${r.message}`));
}

export interface PolicySource {
  /** The policy file's path as given. */
  file: string;
  policy: Policy;
  /** Files the policy names (Cedar, secret rules), read and resolved against its folder. */
  cedarFiles: Array<{ path: string; text: string }>;
  secretRules?: { path: string; text: string };
  /** The names the YAML writes, with their positions (see policy-names.ts). */
  names?: NameUse[];
}

/** Reads a policy file and the files it names. */
export async function readPolicyFile(path: string): Promise<PolicySource> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new PolicyError(path, 1, 1, `cannot read the policy file: ${(error as Error).message}`);
  }
  const { policy, names } = parsePolicyText(text, path);
  const dir = dirname(resolve(path));
  const read = async (relative: string, what: string) => {
    const full = resolve(dir, relative);
    try {
      return { path: relative === basename(relative) ? relative : full, text: await readFile(full, 'utf8') };
    } catch (error) {
      throw new PolicyError(path, 1, 1, `${what} '${relative}' cannot be read: ${(error as Error).message}`);
    }
  };
  const cedarFiles = await Promise.all(policy.cedar.map((f) => read(f, 'cedar file')));
  const secretRules = policy.content.secrets.rules ? await read(policy.content.secrets.rules, 'secret rules file') : undefined;
  return { file: path, policy, cedarFiles, secretRules, names };
}
