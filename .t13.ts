import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { detectInjection } from './guards/content/injection.js';
const root = '/work/shared/agentdojo/runs/gpt-4o-2024-05-13';
const attacks = new Map<string, Set<string>>(); const benign: string[] = []; const injectedOutputs: string[] = [];
for (const suite of readdirSync(root)) for (const ut of readdirSync(join(root, suite))) {
  if (!ut.startsWith('user_task')) continue;
  for (const atk of readdirSync(join(root, suite, ut))) for (const f of readdirSync(join(root, suite, ut, atk))) {
    const d = JSON.parse(readFileSync(join(root, suite, ut, atk, f), 'utf8'));
    if (atk === 'none') { for (const m of d.messages) if (m.role === 'tool' && typeof m.content === 'string') benign.push(m.content); continue; }
    const inj = Object.values(d.injections ?? {}) as string[];
    if (!attacks.has(atk)) attacks.set(atk, new Set());
    for (const t of inj) attacks.get(atk)!.add(t);
  }
}
const hi = (fs: ReturnType<typeof detectInjection>, t = 0.8) => fs.some(f => f.confidence >= t);
for (const [atk, set] of attacks) { const arr=[...set]; const det = arr.filter(t => hi(detectInjection(t))).length; console.log(atk, `${det}/${arr.length}`); for (const t of arr) if (!hi(detectInjection(t))) console.log('  MISS', JSON.stringify(t).slice(0,200), detectInjection(t).map(f=>f.ruleId+':'+f.confidence)); }
const uniq=[...new Set(benign)];
let fp=0, fp5=0; const rules: Record<string,number> = {};
for (const t of uniq) { const f=detectInjection(t); if (hi(f)) { fp++; for (const x of f.filter(x=>x.confidence>=0.8)) { rules[x.ruleId]=(rules[x.ruleId]??0)+1; console.log('  FP', x.ruleId, x.confidence, JSON.stringify(t.slice(Math.max(0,x.start-60), x.end+60))); } } if (hi(f,0.5)) fp5++; }
console.log('benign tool outputs', benign.length, 'unique', uniq.length, 'FP>=0.8', fp, 'FP>=0.5', fp5, rules);
