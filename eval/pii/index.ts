/**
 * `npm run eval:pii [-- --seed N --count N --out FILE]`: the PII scanner on a generated, labelled
 * set of documents in many locales (eval/pii/corpus.ts). Prints per-entity precision, recall and
 * F1, and saves them as JSON with a markdown table beside it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { PII_KINDS } from '../../guards/content/pii.js';
import { scan } from '../../guards/content/scanner.js';
import { generateCorpus, generateUnseenCorpus } from './corpus.js';
import { scoreDocuments, type EntityScore } from './score.js';

const whole = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};

const pct = (x: number): string => (x * 100).toFixed(1);

export function markdown(scores: readonly EntityScore[]): string {
  const rows = scores.map((s) => `| ${s.kind} | ${s.gold} | ${s.found} | ${pct(s.precision)} | ${pct(s.recall)} | ${pct(s.f1)} |`);
  return ['| entity | in the set | found | precision | recall | F1 |', '| --- | ---: | ---: | ---: | ---: | ---: |', ...rows].join('\n') + '\n';
}

const program = new Command('eval:pii')
  .description('The PII scanner on a generated, labelled set of documents in many locales')
  .option('--seed <n>', 'generator seed', whole, 1)
  .option('--count <n>', 'documents', whole, 3000)
  .option('--out <file>', 'where to save the JSON (a .md table is written beside it)', 'eval/pii/results/latest.json')
  .option('--unseen', "the stricter set: locales the main set does not use, faker's values only, no word before a phone")
  .action(async (flags: { seed: number; count: number; out: string; unseen?: boolean }) => {
    const docs = (flags.unseen ? generateUnseenCorpus : generateCorpus)(flags.seed, flags.count);
    const scores = scoreDocuments(
      // As `palisade scan` finds them: on the normalised view, mapped back to the text's characters.
      docs.map((d) => ({ gold: d.gold, found: scan(d.text, { secrets: false, injection: false }) })),
      PII_KINDS,
    );
    const table = markdown(scores);
    const what = `${docs.length} generated documents${flags.unseen ? ' in unseen locales' : ''} (seed ${flags.seed})`;
    process.stdout.write(`PII scanner on ${what}\n\n${table}`);
    const out = resolve(flags.out);
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, `${JSON.stringify({ seed: flags.seed, unseen: flags.unseen === true, documents: docs.length, scores }, null, 1)}\n`);
    await writeFile(out.replace(/\.json$/, '') + '.md', `# PII scanner, ${what}\n\n${table}`);
  });

await program.parseAsync(process.argv);
