/**
 * A text made from another one, with each of its characters tied to the span of the other text it
 * came from, so a finding in the made text maps back to the characters it was found in.
 */
export interface MappedText {
  /** The made text. */
  readonly text: string;
  /** False when the made text is the other text itself (`original` is then the identity). */
  readonly rewritten: boolean;
  /** The span of the other text that text[start, end) was made from. */
  original(start: number, end: number): [start: number, end: number];
}

/** The identity: a text that needed no rewriting. */
export const unchanged = (text: string): MappedText => ({ text, rewritten: false, original: (s, e) => [s, e] });

/** Builds a {@link MappedText} one UTF-16 code unit at a time. */
export class MappedTextBuilder {
  private codes: Uint16Array;
  private from: Int32Array;
  private to: Int32Array;
  private size = 0;

  /** `sourceLength`: the length of the other text; `expected`: a guess of the made text's length. */
  constructor(
    private readonly sourceLength: number,
    expected = sourceLength,
  ) {
    const capacity = Math.max(16, expected + (expected >> 3));
    this.codes = new Uint16Array(capacity);
    this.from = new Int32Array(capacity);
    this.to = new Int32Array(capacity);
  }

  get length(): number {
    return this.size;
  }

  /** Appends `code`, made from source[s, e). */
  push(code: number, s: number, e: number): void {
    if (this.size === this.codes.length) this.grow();
    this.codes[this.size] = code;
    this.from[this.size] = s;
    this.to[this.size] = e;
    this.size++;
  }

  codeAt(i: number): number {
    return this.codes[i]!;
  }

  setCode(i: number, code: number): void {
    this.codes[i] = code;
  }

  build(): MappedText {
    const n = this.size;
    let text = '';
    for (let k = 0; k < n; k += 8192) text += String.fromCharCode(...this.codes.subarray(k, Math.min(n, k + 8192)));
    const { from, to, sourceLength } = this;
    return {
      text,
      rewritten: true,
      original(s, e) {
        if (s >= n) return [sourceLength, sourceLength];
        if (e <= s) return [from[s]!, from[s]!];
        return [from[s]!, e > n ? sourceLength : to[e - 1]!];
      },
    };
  }

  private grow(): void {
    const capacity = this.codes.length * 2;
    const codes = new Uint16Array(capacity);
    codes.set(this.codes);
    const from = new Int32Array(capacity);
    from.set(this.from);
    const to = new Int32Array(capacity);
    to.set(this.to);
    this.codes = codes;
    this.from = from;
    this.to = to;
  }
}
