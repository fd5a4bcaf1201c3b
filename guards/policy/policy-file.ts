import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { isNode, LineCounter, parseDocument, type Document } from 'yaml';
import { PolicySchema, type Policy } from './policy.js';

/** A policy file that cannot be used: where (file, line, column) and what is wrong. */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly detail: string,
    readonly others: readonly string[] = [],
  ) {
    super(`${file}:${line}:${column}: ${detail}${others.length ? `\n${others.map((o) => `  ${o}`).join('\n')}` : ''}`);
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

/** Parses policy YAML and validates it; every mistake is reported with its line and column. */
export function parsePolicy(text: string, file = 'policy.yaml'): Policy {
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
  const parsed = PolicySchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const path = issue.path as PropertyKey[];
    const where = issue.code === 'unrecognized_keys' ? [...path, (issue as { keys: string[] }).keys[0]!] : path;
    const at = locate(doc, where, lines);
    const name = path.length ? path.map(String).join('.') : '(top level)';
    return { ...at, message: `${name}: ${issue.message}` };
  });
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
}

/** Reads a policy file and the files it names. */
export async function readPolicyFile(path: string): Promise<PolicySource> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new PolicyError(path, 1, 1, `cannot read the policy file: ${(error as Error).message}`);
  }
  const policy = parsePolicy(text, path);
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
  return { file: path, policy, cedarFiles, secretRules };
}
