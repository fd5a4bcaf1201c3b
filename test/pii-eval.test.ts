import { describe, expect, it } from 'vitest';
import { generateCorpus, generateUnseenCorpus } from '../eval/pii/corpus.js';
import { scoreDocuments } from '../eval/pii/score.js';
import type { Finding } from '../guards/content/finding.js';

describe('PII evaluation set', () => {
  it('is deterministic for a seed, spans many locales, and every gold span holds a whole entity', () => {
    const a = generateCorpus(7, 120);
    expect(generateCorpus(7, 120)).toEqual(a);
    expect(generateCorpus(8, 120)).not.toEqual(a);
    expect(new Set(a.map((d) => d.locale)).size).toBeGreaterThanOrEqual(20);
    for (const d of a) {
      for (const g of d.gold) {
        const value = d.text.slice(g.start, g.end);
        // A span starts and ends on the entity, not on the words around it.
        expect(value.trim()).toBe(value);
        expect(value.length).toBeGreaterThan(3);
        expect(/[\s]/.test(d.text[g.start - 1] ?? ' ')).toBe(true);
      }
    }
    expect(new Set(a.flatMap((d) => d.gold.map((g) => g.kind))).size).toBe(6);
  });

  it('has a stricter set in locales the main set does not use, with no word before a phone', () => {
    const main = new Set(generateCorpus(1, 60).map((d) => d.locale));
    const unseen = generateUnseenCorpus(1, 120);
    expect(generateUnseenCorpus(1, 120)).toEqual(unseen);
    expect(unseen.some((d) => main.has(d.locale))).toBe(false);
    expect(new Set(unseen.map((d) => d.locale)).size).toBeGreaterThanOrEqual(20);
    for (const d of unseen) for (const g of d.gold) if (g.kind === 'phone') expect(d.text.slice(0, g.start)).toMatch(/[.!?…。] ?$/);
  });

  it('scores a finding once per gold span, by kind and overlap', () => {
    const f = (kind: string, start: number, end: number): Finding => ({ type: 'pii', kind, start, end, ruleId: `pii.${kind}`, confidence: 1, category: 'pii' });
    const scores = scoreDocuments(
      [
        {
          gold: [
            { kind: 'email', start: 0, end: 10 },
            { kind: 'phone', start: 20, end: 30 },
          ],
          // One email found twice (the second is a false positive), a phone missed, a card that is not there.
          found: [f('email', 0, 10), f('email', 2, 8), f('credit_card', 40, 50)],
        },
      ],
      ['email', 'phone', 'credit_card'],
    );
    expect(scores.map((s) => [s.kind, s.truePositives, s.precision, s.recall])).toEqual([
      ['email', 1, 0.5, 1],
      ['phone', 0, 1, 0],
      ['credit_card', 0, 0, 1],
    ]);
  });
});
