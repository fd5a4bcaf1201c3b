/**
 * Precision, recall and F1 per entity kind: a finding is a true positive when it overlaps a gold
 * span of its kind that no earlier finding took; findings of other kinds on that span count against
 * their own kind's precision.
 */
import type { Finding } from '../../guards/content/finding.js';
import type { GoldSpan } from './corpus.js';

export interface EntityScore {
  kind: string;
  gold: number;
  found: number;
  truePositives: number;
  precision: number;
  recall: number;
  f1: number;
}

const overlaps = (a: { start: number; end: number }, b: { start: number; end: number }): boolean => a.start < b.end && b.start < a.end;

export function scoreDocuments(docs: ReadonlyArray<{ gold: readonly GoldSpan[]; found: readonly Finding[] }>, kinds: readonly string[]): EntityScore[] {
  const counts = new Map(kinds.map((k) => [k, { gold: 0, found: 0, tp: 0 }]));
  for (const { gold, found } of docs) {
    const taken = new Set<GoldSpan>();
    for (const g of gold) counts.get(g.kind)!.gold++;
    for (const f of found) {
      const c = counts.get(f.kind);
      if (!c) continue;
      c.found++;
      const hit = gold.find((g) => g.kind === f.kind && !taken.has(g) && overlaps(g, f));
      if (hit) {
        taken.add(hit);
        c.tp++;
      }
    }
  }
  return kinds.map((kind) => {
    const c = counts.get(kind)!;
    const precision = c.found === 0 ? 1 : c.tp / c.found;
    const recall = c.gold === 0 ? 1 : c.tp / c.gold;
    return { kind, gold: c.gold, found: c.found, truePositives: c.tp, precision, recall, f1: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall) };
  });
}
