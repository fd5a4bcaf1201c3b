import { readFileSync } from 'node:fs';
import { loadGitleaksRules, detectSecrets, builtinRules } from './guards/content/secrets.js';
const gl = loadGitleaksRules(readFileSync('/work/shared/secrets/gitleaks.toml','utf8'), 'gitleaks.toml');
const bi = builtinRules();
let seed=1; const rnd=()=>{seed=(seed*1103515245+12345)&0x7fffffff; return seed;};
const A='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const val=(n:number)=>{let s='';for(let i=0;i<n;i++)s+=A[rnd()%62];return s;};
for (const [name, rules] of [['builtin', bi], ['gitleaks', gl]] as const) {
  const kws=[...new Set(rules.flatMap(r=>r.keywords))];
  let s=''; let i=0; while(s.length<1<<20) { s+=`${kws[i++%kws.length]}_key = "${val(32)}" `; if(i%4==0) s+='\n'; }
  s=s.slice(0,1<<20);
  for (const [lab, opts] of [['cap10k',{}],['cap1M',{maxFindings:1e6}]] as const) {
  const t0=performance.now(); const f=detectSecrets(s, rules, opts); console.log(name, lab, 'kwv', f.length, (performance.now()-t0).toFixed(0),'ms'); }
  // per rule timing
  const times: [string, number, number][] = [];
  for (const r of rules) { const one=[r]; const t0=performance.now(); const f=detectSecrets(s, one, {maxFindings:1e6}); times.push([r.id, performance.now()-t0, f.length]); }
  times.sort((a,b)=>b[1]-a[1]); console.log(times.slice(0,8).map(t=>`${t[0]} ${t[1].toFixed(0)}ms ${t[2]}`).join('\n'));
  console.log('sum', times.reduce((a,t)=>a+t[1],0).toFixed(0));
}
