/**
 * Aho-Corasick keyword automaton: finds which of many keywords occur in a text in one linear
 * pass, case-insensitively. Used as the cheap prefilter of the secret rules (gitleaks'
 * `keywords`), so a rule's regular expression only runs where one of its keywords occurs.
 */
export class KeywordMatcher {
  readonly keywords: readonly string[];
  private readonly next: Map<number, number>[] = [new Map()];
  private readonly fail: number[] = [0];
  /** Keyword ids recognised at each node (own and inherited through failure links). */
  private readonly out: number[][] = [[]];
  /**
   * The automaton as a table for ASCII input (failure links folded in): node × 128 → node. Text is
   * mostly ASCII, and a table lookup per character is several times cheaper than a Map lookup.
   */
  private readonly ascii: Int32Array;
  /** The count of keywords that are not empty. */
  private readonly nonEmpty: number;

  constructor(keywords: readonly string[]) {
    this.keywords = keywords.map((k) => k.toLowerCase());
    this.keywords.forEach((kw, id) => {
      if (kw.length === 0) return;
      let node = 0;
      for (let i = 0; i < kw.length; i++) {
        const c = kw.charCodeAt(i);
        let child = this.next[node]!.get(c);
        if (child === undefined) {
          child = this.next.length;
          this.next.push(new Map());
          this.fail.push(0);
          this.out.push([]);
          this.next[node]!.set(c, child);
        }
        node = child;
      }
      this.out[node]!.push(id);
    });
    // Breadth-first: failure links and inherited outputs.
    const queue: number[] = [...this.next[0]!.values()];
    for (let qi = 0; qi < queue.length; qi++) {
      const node = queue[qi]!;
      for (const [c, child] of this.next[node]!) {
        let f = this.fail[node]!;
        while (f !== 0 && !this.next[f]!.has(c)) f = this.fail[f]!;
        const target = this.next[f]!.get(c);
        this.fail[child] = target !== undefined && target !== child ? target : 0;
        const inherited = this.out[this.fail[child]!]!;
        if (inherited.length > 0) this.out[child] = [...this.out[child]!, ...inherited];
        queue.push(child);
      }
    }
    this.ascii = new Int32Array(this.next.length * 128);
    for (const node of [0, ...queue]) {
      for (let c = 0; c < 128; c++) {
        const child = this.next[node]!.get(c);
        this.ascii[node * 128 + c] = child ?? (node === 0 ? 0 : this.ascii[this.fail[node]! * 128 + c]!);
      }
    }
    this.nonEmpty = this.keywords.filter((k) => k.length > 0).length;
  }

  /**
   * Which keywords occur in `text.slice(start, end)`: a flag per keyword id. Stops early once
   * every keyword has been seen.
   */
  present(text: string, start = 0, end = text.length): Uint8Array {
    const seen = new Uint8Array(this.keywords.length);
    let remaining = this.nonEmpty;
    if (remaining === 0) return seen;
    this.walk(text, start, end, (id) => {
      if (seen[id] === 0) {
        seen[id] = 1;
        if (--remaining === 0) return false;
      }
      return true;
    });
    return seen;
  }

  /** Calls `visit` with each occurrence of a keyword (its id and end offset), in order of end; `visit` returns false to stop. */
  occurrences(text: string, visit: (id: number, end: number) => boolean): void {
    if (this.nonEmpty > 0) this.walk(text, 0, text.length, visit);
  }

  private walk(text: string, start: number, end: number, visit: (id: number, end: number) => boolean): void {
    const { next, fail, out, ascii } = this;
    let node = 0;
    for (let i = start; i < end; i++) {
      let c = text.charCodeAt(i);
      if (c >= 65 && c <= 90) c += 32;
      else if (c > 127) c = lowerCode(c);
      if (c < 128) node = ascii[node * 128 + c]!;
      else {
        let to = next[node]!.get(c);
        while (to === undefined && node !== 0) {
          node = fail[node]!;
          to = next[node]!.get(c);
        }
        node = to ?? 0;
      }
      const ids = out[node]!;
      for (let k = 0; k < ids.length; k++) if (!visit(ids[k]!, i + 1)) return;
    }
  }
}

const lowerCache = new Map<number, number>();
function lowerCode(c: number): number {
  let l = lowerCache.get(c);
  if (l === undefined) {
    const s = String.fromCharCode(c).toLowerCase();
    l = s.length === 1 ? s.charCodeAt(0) : c;
    if (lowerCache.size < 4096) lowerCache.set(c, l);
  }
  return l;
}
