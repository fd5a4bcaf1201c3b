/**
 * The text as the scanners read it (normalised-view.ts), secrets written with spaces in them
 * (split-secrets.ts) and single-case secret rules (gitleaks-rules.ts `singleCase`).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { builtinRules, singleCase } from '../guards/content/gitleaks-rules.js';
import { normalisedView } from '../guards/content/normalised-view.js';
import { redact, scan } from '../guards/content/scanner.js';
import { detectSplitSecrets } from '../guards/content/split-secrets.js';

const awsKey = (tail: string) => ['AK', 'IA', tail].join('');

describe('normalised view', () => {
  it('rewrites encodings to what they stand for', () => {
    const cases: [string, string][] = [
      ['a\u200bb\u200dc\u2060d\ufeffe\u00adf', 'abcdef'],
      ['\uff21\uff22\uff11\uff12\uff20', 'AB12@'],
      ['\u0665\u0661\u0662 \u0969\u096a \u0e51', '512 34 1'],
      ['5\u20131\u20142\u22123', '5-1-2-3'],
      ['a\u00a0b\u2009c\u3000d', 'a b c d'],
      ['john%40example.com %E2%80%8B', 'john@example.com '],
      ['a&#64;b&#x2E;c&commat;d', 'a@b.c@d'],
      ['x%2540y &amp;#64; \\u0040 203[.]0(.)1', 'x@y @ @ 203.0.1'],
      ['\u2116 4\u2122 \uff14\u0336', '\u2116 4\u2122 4'],
      ['\u0410KIA \u0410\u043d\u043d\u0430', 'AKIA \u0410\u043d\u043d\u0430'],
      ['caf\u0065\u0301 \ufb01le 4\u0336 1\u20e3', 'cafe file 4 1'],
      ['\u00e9t\u00e9 na\u0131ve', '\u00e9t\u00e9 naive'],
    ];
    for (const [text, view] of cases) expect(normalisedView(text).text, JSON.stringify(text)).toBe(view);
  });

  it('leaves what does not decode as it is', () => {
    for (const text of ['100% sure', '%zz and %4', '&#; &#x; &copy; &#0;', '%00 %0A', 'плохой текст', '日本語のテキスト']) expect(normalisedView(text).text).toBe(text);
    expect(normalisedView('plain ascii text').rewritten).toBe(false);
  });

  it('maps every view character back into the original, in order (property)', () => {
    const piece = fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom('\u200b', '\uff14', '\u0665', '%41', '%E2%80%8B', '&#65;', '\u0430', 'e\u0301', '\ufb01', '\u2013', '😀', '\u{e0041}'));
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }), (parts) => {
        const text = parts.join('');
        const view = normalisedView(text);
        let last = 0;
        for (let i = 0; i < view.text.length; i++) {
          const [s, e] = view.original(i, i + 1);
          if (s < last || e <= s || e > text.length) return false;
          last = s;
        }
        const [s, e] = view.original(0, view.text.length);
        return view.text.length === 0 || (s >= 0 && e <= text.length);
      }),
      { numRuns: 500 },
    );
  });

  it('redacts the original characters a finding was made from, hidden ones inside included', () => {
    const key = awsKey('QX7TV2MB5NRW3KLP');
    const text = `x ${key.slice(0, 5)}\u200b\u200b${key.slice(5)} y`;
    expect(redact(text, scan(text, { injection: false }))).toBe('x [REDACTED:aws-access-key-id] y');
    const mail = 'Mail j\uff4fhn%40exa\u200bmple.com, thanks';
    expect(redact(mail, scan(mail, { injection: false }))).toBe('Mail [REDACTED:email], thanks');
  });
});

describe('secrets written with spaces in them', () => {
  const key = awsKey('QX7TV2MB5NRW3KLP');
  it('closes gaps inside a machine-made string, wherever the spaces are', () => {
    for (const written of [`${key.slice(0, 1)} ${key.slice(1)}`, `${key.slice(0, 4)} ${key.slice(4, 8)} ${key.slice(8, 12)} ${key.slice(12, 16)} ${key.slice(16)}`, `${key.slice(0, 10)}\t${key.slice(10)}`]) {
      const text = `the key: ${written} and 2024 Q3`;
      const found = detectSplitSecrets(text, builtinRules());
      expect(found.map((f) => text.slice(f.start, f.end)), written).toEqual([written]);
    }
  });

  it('joins no words of ordinary text', () => {
    const texts = [
      'PLEASE CALL THE ASIA PACIFIC REGIONAL OFFICE BEFORE NOON TODAY',
      'I drove a Kia Sorento to the office at 9 am on 12 May 2024',
      'de ad be ef ca fe ba be 00 11 22 33 44 55 66 77 88 99 aa bb',
      'Order 583-5881236-5215171 shipped; tracking 1Z 999 AA1 01 2345 6784',
      'password: meet me at 10 am by the door',
      '550e8400-e29b-41d4-a716-446655440000 7c9e6679-7425-40de-944b-e07fc1f90ae7',
    ];
    for (const text of texts) expect(detectSplitSecrets(text, builtinRules()), text).toEqual([]);
  });

  it('reports the rest as unscanned past its budget of keyword occurrences', () => {
    const text = 'AKIA Q1 '.repeat(600);
    const found = detectSplitSecrets(text, builtinRules());
    expect(found.at(-1)).toMatchObject({ kind: 'truncated', category: 'unscanned', end: text.length });
  });
});

describe('single-case secret rules', () => {
  it('matches rules spelled in one case without regard to case, and only those', () => {
    expect(singleCase('\\b((?:AKIA|ASIA)[A-Z2-7]{16})\\b')).toBe(true);
    expect(singleCase('npm_[a-z0-9]{36}')).toBe(true);
    expect(singleCase('\\b(gh[pousr]_[0-9A-Za-z]{36})\\b')).toBe(false);
    expect(singleCase('(?i)secret[_-]?key')).toBe(false);
    expect(singleCase('\\d{16}')).toBe(false);
    const key = awsKey('QX7TV2MB5NRW3KLP');
    const text = `leaked ${key.toLowerCase()} here`;
    expect(scan(text, { pii: false, injection: false }).map((f) => f.kind)).toEqual(['aws-access-key-id']);
  });
});
