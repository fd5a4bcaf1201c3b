import { z } from 'zod';

/** Confidentiality levels, lowest first: the order is the lattice order. */
export const LEVELS = ['public', 'internal', 'confidential', 'restricted'] as const;
export type Level = (typeof LEVELS)[number];
export type Integrity = 'trusted' | 'untrusted';

export const LabelSchema = z
  .object({
    level: z.enum(LEVELS).default('public'),
    categories: z.array(z.string().min(1).max(64)).max(64).default([]),
    integrity: z.enum(['trusted', 'untrusted']).default('trusted'),
  })
  .strict();
/** A point in the lattice: data at this label may flow only to sinks cleared at or above it. */
export type Label = z.output<typeof LabelSchema>;
export type LabelInput = z.input<typeof LabelSchema>;

export const BOTTOM: Label = Object.freeze({ level: 'public', categories: [], integrity: 'trusted' }) as Label;

export function label(input: LabelInput = {}): Label {
  const parsed = LabelSchema.parse(input);
  return { ...parsed, categories: [...new Set(parsed.categories)].sort() };
}

const rank = (level: Level): number => LEVELS.indexOf(level);

/** Least upper bound: the label of data derived from both inputs. */
export function join(a: Label, b: Label): Label {
  const categories = a.categories.length === 0 ? b.categories : b.categories.length === 0 ? a.categories : [...new Set([...a.categories, ...b.categories])].sort();
  return {
    level: rank(a.level) >= rank(b.level) ? a.level : b.level,
    categories,
    integrity: a.integrity === 'untrusted' || b.integrity === 'untrusted' ? 'untrusted' : 'trusted',
  };
}

/** a ⊑ b: everything a says is also said by b (b is at least as sensitive and as tainted). */
export function leq(a: Label, b: Label): boolean {
  if (rank(a.level) > rank(b.level)) return false;
  if (a.integrity === 'untrusted' && b.integrity === 'trusted') return false;
  return a.categories.every((c) => b.categories.includes(c));
}

/** Greatest lower bound: used only to cap a label by an explicit, audited declassification. */
export function meet(a: Label, b: Label): Label {
  return {
    level: rank(a.level) <= rank(b.level) ? a.level : b.level,
    categories: a.categories.filter((c) => b.categories.includes(c)),
    integrity: a.integrity === 'trusted' || b.integrity === 'trusted' ? 'trusted' : 'untrusted',
  };
}

export const levelRank = rank;

/** Confidentiality only: may data at `a` reach a sink cleared for `clearance`? Integrity is judged by risk, not clearance. */
export function flowsTo(a: Label, clearance: Label): boolean {
  return rank(a.level) <= rank(clearance.level) && a.categories.every((c) => clearance.categories.includes(c));
}
