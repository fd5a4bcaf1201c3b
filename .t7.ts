import { readFileSync } from 'node:fs';
import { loadGitleaksRules, detectSecrets, builtinRules } from './guards/content/secrets.js';
const gl = loadGitleaksRules(readFileSync('/work/shared/secrets/gitleaks.toml','utf8'), 'gitleaks.toml');
console.log('gitleaks loaded', gl.length, 'skipped', gl.skipped);
const bi = builtinRules(); console.log('builtin', bi.length);
const kws=[...new Set(gl.flatMap(r=>r.keywords))];
let s=''; while(s.length<1<<20) s+=kws.join(' = ')+' = ';
const bkws=[...new Set(bi.flatMap(r=>r.keywords))];
let s2=''; while(s2.length<1<<20) s2+=bkws.join(' = x ')+'\n';
const b64=Buffer.from(Array.from({length:800000},(_,i)=>(i*7919+(i>>8))%256)).toString('base64').slice(0,1<<20);
const dig=Array.from({length:1<<19},(_,i)=>i%2?' ':String(i%10)).join('');
const prose = 'The quick brown fox jumps over the lazy dog. Please send the report by Friday, and remember the token budget.\n'.repeat(10000).slice(0,1<<20);
const inputs={a:'a'.repeat(1<<20),kw:s.slice(0,1<<20),bkw:s2.slice(0,1<<20),b64,dig,prose};
for (const [name, rules] of [['builtin', bi], ['gitleaks', gl]] as const) for (const [n,inp] of Object.entries(inputs)) {
  const t0=performance.now(); const f=detectSecrets(inp, rules); console.log(name, n, f.length, (performance.now()-t0).toFixed(0),'ms');
}
const f = detectSecrets(inputs.kw, bi); const c: Record<string, number> = {}; for (const x of f) c[x.kind]=(c[x.kind]??0)+1; console.log(c, f.slice(0,3).map(x=>inputs.kw.slice(x.start-30,x.end+5)));
