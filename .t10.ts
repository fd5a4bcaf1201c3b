import { readFileSync } from 'node:fs';
import { loadGitleaksRules, builtinRules } from './guards/content/secrets.js';
const gl = loadGitleaksRules(readFileSync('/work/shared/secrets/gitleaks.toml','utf8'), 'gitleaks.toml');
const inf = gl.filter(r=>!isFinite(r.maxLength)); console.log('gitleaks unbounded', inf.length, inf.map(r=>r.id).join(' '));
const big = gl.filter(r=>isFinite(r.maxLength) && r.maxLength>1024); console.log('gitleaks >1024', big.map(r=>r.id+':'+r.maxLength).join(' '));
const hist: Record<string,number> = {}; for (const r of gl) { const b = !isFinite(r.maxLength)?'inf': r.maxLength<=256?'<=256': r.maxLength<=512?'<=512':r.maxLength<=1024?'<=1024':'>1024'; hist[b]=(hist[b]??0)+1;} console.log(hist);
console.log(builtinRules().map(r=>r.id+':'+r.maxLength).join(' '));
