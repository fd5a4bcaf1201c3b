import { readFileSync } from 'node:fs';
import { loadGitleaksRules, detectSecrets } from './guards/content/secrets.js';
const gl = loadGitleaksRules(readFileSync('/work/shared/secrets/gitleaks.toml','utf8'), 'gitleaks.toml');
const kws=[...new Set(gl.flatMap(r=>r.keywords))];
let kw=''; while(kw.length<1<<20) kw+=kws.join(' = ')+' = '; kw=kw.slice(0,1<<20);
for (let i=0;i<3;i++){ const t0=performance.now(); const f=detectSecrets(kw, gl); console.log('all', f.length, (performance.now()-t0).toFixed(0)); }
const times: [string, number, number][] = [];
for (const r of gl) { const one=[r]; detectSecrets(kw.slice(0,5000), one); const t0=performance.now(); const f=detectSecrets(kw, one); times.push([r.id, performance.now()-t0, f.length]); }
times.sort((a,b)=>b[1]-a[1]); console.log(times.slice(0,10).map(t=>`${t[0]} ${t[1].toFixed(0)}ms ${t[2]}`).join('\n'));
console.log('sum', times.reduce((a,t)=>a+t[1],0).toFixed(0));
