import { readFileSync } from 'node:fs';
import { loadGitleaksRules, detectSecrets } from './guards/content/secrets.js';
import { RE2JS } from 're2js';
const gl = loadGitleaksRules(readFileSync('/work/shared/secrets/gitleaks.toml','utf8'), 'gitleaks.toml');
const g = gl.filter(r=>r.id==='generic-api-key');
// instrument
const proto = Object.getPrototypeOf(g[0]!.regex);
const origTest = proto.test, origMatcher = proto.matcher;
let tests=0, testLen=0, testT=0, mats=0, matLen=0;
proto.test = function(s: string){ tests++; testLen+=s.length; const t0=performance.now(); const r=origTest.call(this,s); testT+=performance.now()-t0; return r; };
proto.matcher = function(s: string){ mats++; matLen+=s.length; return origMatcher.call(this,s); };
let seed=1; const rnd=()=>{seed=(seed*1103515245+12345)&0x7fffffff; return seed;};
const A='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const val=(n:number)=>{let s='';for(let i=0;i<n;i++)s+=A[rnd()%62];return s;};
const kws=[...new Set(gl.flatMap(r=>r.keywords))];
let kw=''; while(kw.length<1<<20) kw+=kws.join(' = ')+' = ';
let s=''; let i=0; while(s.length<1<<20) { s+=`${kws[i++%kws.length]}_key = "${val(32)}" `; if(i%4==0) s+='\n'; }
for (const [n, inp] of [['kw', kw.slice(0,1<<20)], ['kwv', s.slice(0,1<<20)]] as const) {
  tests=testLen=testT=mats=matLen=0;
  const t0=performance.now(); const f=detectSecrets(inp, g, {maxFindings:1e6}); 
  console.log(n, f.length, (performance.now()-t0).toFixed(0),'ms', {tests, testLen, testT: testT.toFixed(0), mats, matLen});
}
