import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The layout a newcomer relies on: folders build on each other in one direction, no two files import
 * each other (even for types), and no source file grows into a room a reader gets lost in.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const SOURCE_FOLDERS = ['agents', 'guards', 'tracing', 'runtime', 'examples'] as const;
type Folder = (typeof SOURCE_FOLDERS)[number];

/** What each top-level folder may import of ours: agents ← guards ← tracing ← runtime; examples use the definitions. */
const MAY_IMPORT: Record<Folder, readonly Folder[]> = {
  agents: [],
  guards: ['agents'],
  tracing: ['agents', 'guards'],
  runtime: ['agents', 'guards', 'tracing'],
  examples: ['agents', 'guards'],
};
/** The demo command runs the support example: the one place the runtime reaches into examples. */
const EXAMPLE_USERS = new Set(['runtime/cli/demo.ts']);

const MAX_LINES = 400;
/** Over the limit, but each one thing, named here in one phrase. */
const ONE_THING: Record<string, string> = {
  'guards/content/pii.ts': 'the PII detectors: one text walk per kind, each with its own validity check (Luhn, IBAN, SSN ranges)',
  'runtime/identity/jwt-verifier.ts': 'turning a bearer JWT into a verified principal (keys, JWKS, algorithms, claim mapping, errors)',
};

function sourceFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return /\.(ts|js)$/.test(entry.name) ? [path] : [];
  });
}

/** Our own modules a file imports, exports from or loads, types included, as paths from the root. */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith('.'))
    .map((spec) => {
      const path = normalize(join(dirname(file), spec));
      // TypeScript sources are imported by their .js names; the console's browser modules are real .js files.
      return sources.has(path) ? path : path.replace(/\.js$/, '.ts');
    });
}

const files = ['index.ts', ...SOURCE_FOLDERS.flatMap((folder) => sourceFiles(folder))];
const sources = new Set(files);
const graph = new Map(files.map((file) => [file, importsOf(file)]));

/** Every circle of imports, as the files in it (Tarjan's strongly connected components). */
function circles(): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)!.includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('layout', () => {
  it('every relative import names a file that exists', () => {
    const missing = [...graph].flatMap(([file, deps]) => deps.filter((d) => !sources.has(d)).map((d) => `${file} -> ${d}`));
    expect(missing).toEqual([]);
    // The check reads real imports: the runtime's entry imports the worker loop.
    expect(graph.get('runtime/runtime.ts')).toContain('runtime/worker/agent-loop.ts');
  });

  it('no two files import each other, directly or around a circle', () => {
    expect(circles()).toEqual([]);
  });

  it('top-level folders import only the folders below them', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      const from = file.split('/')[0] as Folder;
      if (!(SOURCE_FOLDERS as readonly string[]).includes(from)) continue;
      for (const dep of deps) {
        const to = dep.split('/')[0] as Folder;
        if (to === from) continue;
        if (MAY_IMPORT[from].includes(to)) continue;
        if (to === 'examples' && EXAMPLE_USERS.has(file)) continue;
        wrong.push(`${file} -> ${dep}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it(`no source file is over ${MAX_LINES} lines unless it is one thing, named`, () => {
    const long = files
      .map((file) => ({ file, lines: readFileSync(join(root, file), 'utf8').split('\n').length }))
      .filter(({ file, lines }) => lines > MAX_LINES && !(file in ONE_THING))
      .map(({ file, lines }) => `${file}: ${lines} lines`);
    expect(long).toEqual([]);
    for (const file of Object.keys(ONE_THING)) expect(sources.has(file), `${file} is named in ONE_THING but does not exist`).toBe(true);
  });
});
