/**
 * How a secret rule's matches are located cheaply: the rule's regex without a leading lazy context
 * prefix, and an upper bound of a match's length (which sizes the look-ahead past a block).
 */
import { RE2JS } from 're2js';

const LAZY_PREFIX = /^((?:\(\?[a-zA-Z]+\))?(?:\(\?[a-zA-Z]*:)*)\[\\w\.-\]\{0,\d{1,4}\}\?/;

/**
 * Many gitleaks rules start with a lazy context prefix, `[\w.-]{0,50}?`, that only widens the
 * match to the left: a match of the rule exists exactly where one of the rule without it does,
 * with the same capture groups (the lazy prefix takes the fewest characters that let the rest
 * match). Position search (the costly NFA part) uses the rule without it, which is several
 * times cheaper, and so the reported match start of these rules is where the rest begins.
 */
export function locatorFor(pattern: string, regex: RE2JS): { locator: RE2JS; locatorPattern: string; maxLength: number } {
  let src = pattern;
  for (let m = LAZY_PREFIX.exec(src); m !== null; m = LAZY_PREFIX.exec(src)) src = m[1]! + src.slice(m[0].length);
  if (src !== pattern) {
    try {
      const locator = RE2JS.compile(src);
      if (locator.groupCount() === regex.groupCount()) return { locator, locatorPattern: src, maxLength: maxMatchLength(locator) };
    } catch {
      // keep the original
    }
  }
  return { locator: regex, locatorPattern: pattern, maxLength: maxMatchLength(regex) };
}

/**
 * Upper bound of the length (in code points) of any match of `re`, from its compiled program (longest path of
 * rune-consuming instructions; a loop means unbounded). Reads re2js internals: anything
 * unexpected yields Infinity, which only makes matching take the slower, always-correct path.
 */
export function maxMatchLength(re: RE2JS): number {
  try {
    const prog = (re as unknown as { re2Input: { prog: { start: number; numInst(): number; getInst(pc: number): { op: number; out: number; arg: number } } } }).re2Input.prog;
    const n = prog.numInst();
    const memo = new Float64Array(n).fill(-1);
    const state = new Uint8Array(n); // 0 new, 1 on stack, 2 done
    // Opcodes (re2js Inst): 1 ALT, 2 ALT_MATCH, 3 CAPTURE, 4 EMPTY_WIDTH, 5 FAIL, 6 MATCH, 7 NOP, 8-11 runes.
    const stack: number[] = [prog.start];
    while (stack.length > 0) {
      const pc = stack[stack.length - 1]!;
      const inst = prog.getInst(pc);
      if (inst === undefined) return Infinity;
      if (state[pc] === 2) {
        stack.pop();
        continue;
      }
      const succ = inst.op === 1 || inst.op === 2 ? [inst.out, inst.arg] : inst.op === 5 || inst.op === 6 ? [] : [inst.out];
      if (inst.op > 11 || inst.op < 1) return Infinity;
      if (state[pc] === 0) {
        state[pc] = 1;
        for (const s of succ) {
          if (state[s] === 1) return Infinity; // a loop
          if (state[s] === 0) stack.push(s);
        }
        continue;
      }
      // All successors done.
      let best = inst.op === 6 ? 0 : -Infinity;
      for (const s of succ) best = Math.max(best, memo[s]!);
      memo[pc] = best + (inst.op >= 8 ? 1 : 0);
      state[pc] = 2;
      stack.pop();
    }
    const runes = memo[prog.start]!;
    return runes < 0 ? 0 : runes;
  } catch {
    return Infinity;
  }
}
