import { scan, redact } from './guards/content/scanner.js';
const t = "(415) 555-0132 (415) 555-0132 192.168.1.20";
const f = scan(t, {secrets:false, injection:false}); console.log(f.map(x=>[x.kind,t.slice(x.start,x.end)]));
const r = redact(t,f); console.log(r); const g = scan(r, {secrets:false, injection:false}); console.log(g.map(x=>[x.kind,r.slice(x.start,x.end)]));
