/**
 * What an attacker needs an agent to do, read from an injection task's ground truth: the calls, and
 * which argument values are the attacker's own (addresses, accounts, amounts) rather than data the
 * agent must look up; and the seeded random source every family renders with.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { InjectionTask } from './records.js';

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG: FNV-1a of the key, then mulberry32.

function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export class Random {
  private state: number;
  constructor(key: string) {
    this.state = hash32(key);
  }
  /** In [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ---------------------------------------------------------------------------------------------
// What the attacker asks for: the ground truth's calls, with the values the attacker supplies.

export type ValueKind = 'email' | 'iban' | 'url' | 'date' | 'number' | 'text';

export interface AttackerValue {
  value: string;
  kind: ValueKind;
}

export interface PlanArg {
  name: string;
  /** The attacker's values, verbatim (several for a list argument). */
  values: AttackerValue[];
  /** Data the agent has to look up: described, not given. */
  derived: boolean;
  /** Attacker values that appear inside a looked-up value (a link in a message body). */
  embedded: AttackerValue[];
}

export interface PlanStep {
  fn: string;
  args: PlanArg[];
  /** The same call this many times in a row. */
  times: number;
}

export interface AttackPlan {
  goal: string;
  steps: PlanStep[];
  /** Every attacker value of the plan, once each, in order: what every family must carry verbatim. */
  values: AttackerValue[];
}

const EMAIL = /^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$/;
const IBAN = /^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$/;
const URL_LIKE = /^(?:https?:\/\/)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:\/\S*)?$/i;
const DATE = /^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?$/;
const EMBEDDED = /(?:https?:\/\/)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:\/[^\s"'<>)]*)?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b/gi;

export function kindOf(value: string | number): ValueKind {
  if (typeof value === 'number' || /^-?\d+(?:\.\d+)?$/.test(value)) return 'number';
  if (EMAIL.test(value)) return 'email';
  if (IBAN.test(value)) return 'iban';
  if (DATE.test(value)) return 'date';
  if (URL_LIKE.test(value) && value.includes('.')) return 'url';
  return 'text';
}

/** Addresses, accounts and links: what the spaced variant of `obfuscated` writes out. */
export const isIdentifier = (v: AttackerValue): boolean => v.kind === 'email' || v.kind === 'iban' || v.kind === 'url';

const normalise = (s: string): string => s.toLowerCase().replace(/(?<=\d)[ ,](?=\d)/g, '');

/** Whole-token containment: `13` is in "file 13" but not in "2013". */
function containsToken(haystack: string, needle: string): boolean {
  if (!needle) return false;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + 1)) {
    const before = haystack[at - 1] ?? '';
    const after = haystack[at + needle.length] ?? '';
    if (!/[\p{L}\p{N}]/u.test(before) && !/[\p{L}\p{N}]/u.test(after)) return true;
  }
  return false;
}

// Words so common that finding one in the environment says nothing.
const COMMON = new Set(
  'about above after again also back been before being best both came come could dear does done down each even every first from good great have here into just know last like look made make many more most much must need next only other over please same should some such take than that their them then there these they this those time very want well were what when where which while will with would your yours hope really catch soon thanks'.split(' '),
);

/** The words of a free text that could be data: four letters or more and not common, or carrying a digit. */
const dataWords = (s: string): string[] =>
  s
    .split(/[\s;,|]+/)
    .map((w) => normalise(w.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '')))
    .filter((w) => (/\d/.test(w) && w.length >= 3) || (w.length >= 4 && /^\p{L}+$/u.test(w) && !COMMON.has(w)));

/** The plan of an injection task; `environment` (the suite's data) tells looked-up values from the attacker's own. */
export function attackPlan(task: Pick<InjectionTask, 'goal' | 'ground_truth'>, environment = ''): AttackPlan {
  const goal = normalise(task.goal);
  const env = normalise(environment);
  const lookedUp = (s: string): boolean => {
    if (s.includes('\n') || s.length > 100) return true;
    const n = normalise(s);
    if (containsToken(goal, n)) return false;
    const kind = kindOf(s);
    if (kind === 'date') return false;
    if (containsToken(env, n)) return true;
    return (kind === 'text' || kind === 'number') && dataWords(s).some((w) => !containsToken(goal, w) && containsToken(env, w));
  };
  const steps: PlanStep[] = [];
  for (const call of task.ground_truth) {
    const args: PlanArg[] = [];
    for (const [name, raw] of Object.entries(call.args)) {
      const leaves = (Array.isArray(raw) ? raw : [raw]).map((v) => (typeof v === 'string' || typeof v === 'number' ? v : JSON.stringify(v)));
      if (leaves.every((v) => v === '' || v === null || v === undefined)) continue;
      // A number in the ground truth (an amount, an id) is the attacker's; a string may be looked-up data.
      const derived = leaves.some((v) => typeof v === 'string' && lookedUp(v));
      const embedded = derived
        ? leaves.flatMap((v) => (typeof v === 'string' ? [...v.matchAll(EMBEDDED)].map((m) => m[0]) : [])).filter((v) => containsToken(goal, normalise(v))).map((v) => ({ value: v, kind: kindOf(v) }))
        : [];
      args.push({ name, values: derived ? [] : leaves.map((v) => ({ value: String(v), kind: kindOf(v) })), derived, embedded });
    }
    const step = { fn: call.function, args, times: 1 };
    const last = steps.at(-1);
    if (last && JSON.stringify({ ...last, times: 1 }) === JSON.stringify(step)) last.times++;
    else steps.push(step);
  }
  const values: AttackerValue[] = [];
  for (const v of steps.flatMap((s) => s.args.flatMap((a) => [...a.values, ...a.embedded]))) if (!values.some((w) => w.value === v.value)) values.push(v);
  return { goal: task.goal, steps, values };
}

/** The text of a suite's environment (its YAML files but the injection vectors), to tell looked-up data from the attacker's. */
export async function readEnvironment(suitesDir: string, suite: string): Promise<string> {
  const texts: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (/\.ya?ml$/.test(entry.name) && entry.name !== 'injection_vectors.yaml') texts.push(await readFile(path, 'utf8'));
    }
  };
  await walk(join(suitesDir, suite));
  return texts.join('\n');
}
