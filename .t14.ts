import { scan, redact } from './guards/content/scanner.js';
const t = "DE89 3704 0044 0532 0130 00 378282246310005 hello 378282246310005";
const f = scan(t, {secrets:false, injection:false}); console.log(f.map(x=>[x.kind,t.slice(x.start,x.end)]));
const r = redact(t,f); console.log(r); const g = scan(r, {secrets:false, injection:false}); console.log(g.map(x=>[x.kind,r.slice(x.start,x.end)]));
