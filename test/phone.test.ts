import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { detectPii } from '../guards/content/pii.js';

const phones = (text: string, regions: readonly string[] = []): string[] => detectPii(text, { kinds: ['phone'], regions }).map((f) => text.slice(f.start, f.end));

describe('phone numbers: how people write them', () => {
  it('finds every style of the issue, with the exact span', () => {
    const cases: Array<[string, string]> = [
      ['Lorem ipsum 07700 063 966.', '07700 063 966'],
      ['Dolor sit 0490 75 40 81, amet', '0490 75 40 81'],
      ['Office +46 (0)8 928 571 38 today.', '+46 (0)8 928 571 38'],
      ['Appelez 03.93.92.16.85.', '03.93.92.16.85'],
      ['Lorem (37) 788-063; ipsum', '(37) 788-063'],
      ['Dolor 345-899-3560x4587 please', '345-899-3560x4587'],
      ['From abroad 001-518-640-0854.', '001-518-640-0854'],
      ['Call 9498777106.', '9498777106'],
    ];
    for (const [text, want] of cases) expect(phones(text), text).toEqual([want]);
  });

  it('finds national and international conventions of many countries', () => {
    const cases: Array<[string, string]> = [
      ['please dial +1 (415) 555-0132 ext. 204.', '+1 (415) 555-0132 ext. 204'],
      ['Standort Berlin, 030 / 2345 6789', '030 / 2345 6789'],
      ['Fax 0221/9876543', '0221/9876543'],
      ['Büro: 089 1234567-0', '089 1234567-0'],
      ['Réservations au 01 42 68 53 00.', '01 42 68 53 00'],
      ['from Germany dial 0044 20 7946 0958', '0044 20 7946 0958'],
      ['from the US dial 011 44 20 7946 0958', '011 44 20 7946 0958'],
      ['お問い合わせは03-1234-5678まで', '03-1234-5678'],
      ['tel (11) 98765-4321', '(11) 98765-4321'],
      ['010-1234-5678 is my number', '010-1234-5678'],
      ['+7 (495) 123-45-67', '+7 (495) 123-45-67'],
      ['Our desk: (02) 9876 5432', '(02) 9876 5432'],
      ['Tlf. 22 33 44 55', '22 33 44 55'],
      ['He called 212.555.7890 twice', '212.555.7890'],
      ['Contact +91 98450 12873.', '+91 98450 12873'],
      ['0 532 123 45 67 numaralı', '0 532 123 45 67'],
    ];
    for (const [text, want] of cases) expect(phones(text), text).toEqual([want]);
  });

  it('reports confidence from the evidence: a valid +CC number above a shape alone', () => {
    const [intl] = detectPii('+44 20 7946 0958', { kinds: ['phone'] });
    const [shape] = detectPii('Lorem 0490 75 40 81', { kinds: ['phone'] });
    expect(intl).toMatchObject({ type: 'pii', kind: 'phone', ruleId: 'pii.phone', category: 'pii' });
    expect(intl!.confidence).toBeGreaterThan(shape!.confidence);
  });

  it('splits numbers written side by side', () => {
    expect(phones('Tel. 030 1234567 / 030 7654321')).toEqual(['030 1234567', '030 7654321']);
    expect(phones('(415) 555-0132 (415) 555-0133')).toEqual(['(415) 555-0132', '(415) 555-0133']);
  });
});

describe('phone numbers: what is not one', () => {
  it('does not take dates, times, amounts, versions or identifiers for phones', () => {
    const texts = [
      'born 1985-03-12', 'on 26.05.2024 at noon', 'due 05/26/2024', 'le 26 05 2024', 'run 2024-05-26T17:00:00Z', 'on 31/12/1999 23:59', 'am 2024. 05. 26. um',
      'from 10.30-12.00', 'at 14:30 - 16:45', 'timestamp 1716710400',
      'total 1,250.00', 'Betrag 1.250,00', 'cost 1 250 000', 'EUR 12 345 678', '12 345 678 €', 'price R$ 1.234.567,89', 'population 8 336 817', 'between 1990 and 2020 2 500 000 people', '44058806.20',
      'version 10.0.19045.3803', 'v 1.2.3.4', 'chapter 3.2.1.4', 'Lat 48.85661 Lon -2.35222',
      'order #1234567890', 'Rechnung Nr. 2024-00123', 'INV-2024-00123', 'ORD-3233767601', 'Serial 005516177540', 'ISBN 0-306-40615-2', 'ISBN 978-3-16-148410-0',
      'tracking 9400 1000 0000 0000 0000 00', 'BLZ 370 400 44', 'CEP 01310-100', 'ZIP 94107-1234', 'matches 2019-2024', 'IMEI 490154203237518',
      'ref 000-000-0000', 'call 123-456-7890', 'growth 12.5 % in 2023',
      'Scores: 12 15 18 20 22 today', 'sizes 34 36 38 40 in stock', 'Population: 8 336 817 (2020)',
    ];
    for (const t of texts) expect(phones(t), t).toEqual([]);
  });
});

describe('phone numbers: regions', () => {
  it('admits a weak shape where the caller or the text says which country the numbers are from', () => {
    // Three groups of three could be an amount; bare digits an identifier.
    expect(phones('Lorem 604 123 456')).toEqual([]);
    expect(phones('Lorem 604 123 456', ['ES'])).toEqual(['604 123 456']);
    expect(phones('x 2125550132 y')).toEqual([]);
    expect(phones('x 2125550132 y', ['US'])).toEqual(['2125550132']);
    // Hints in the text itself: another number with its country code.
    expect(phones('Kontakt 512 345 678. Pozdrawiam, +48 22 123 45 67')).toEqual(['512 345 678', '+48 22 123 45 67']);
  });

  it('raises the confidence of a number valid in the given region', () => {
    const plain = detectPii('Lorem 020 7946 0958', { kinds: ['phone'] })[0]!;
    const known = detectPii('Lorem 020 7946 0958', { kinds: ['phone'], regions: ['GB'] })[0]!;
    expect(known.confidence).toBeGreaterThan(plain.confidence);
  });
});

// ---------------------------------------------------------------------------------------------
// properties

/** Words with no digits and no phone, label or currency meaning. */
const WORDS = ['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'the', 'meeting', 'was', 'moved', 'see', 'you', 'soon', 'green', 'house', 'river'];
const prose = fc.array(fc.constantFrom(...WORDS), { minLength: 0, maxLength: 8 }).map((ws) => ws.join(' '));

/** National and international styles: '#' any digit, 'N' 2-9. */
const STYLES = [
  '07### ### ###', '04## ## ## ##', '+46 (0)8 ### ### ##', '03.##.##.##.##', '(##) ###-###', 'N##-N##-####x####', '001-N##-N##-####',
  '(N##) N##-####', '+44 20 #### ####', '06 ## ## ## ##', '030 #######', '0N##/#######', '+33 6 ## ## ## ##', '090-####-####', '(##) 9####-####',
  '+49 (0)89 ######', '+1 N## N## #### ext. ###', '0049 30 #######', '+61 4## ### ###', '08-### ### ##',
];
const written = fc.constantFrom(...STYLES).chain((style) =>
  fc.tuple(...[...style].map((c) => (c === '#' ? fc.integer({ min: 0, max: 9 }).map(String) : c === 'N' ? fc.integer({ min: 2, max: 9 }).map(String) : fc.constant(c)))).map((cs) => cs.join('')),
);
/** Numbers printed as examples ("222-222-2222") are rightly not reported. */
const allSame = (s: string): boolean => new Set(s.replace(/\D/g, '').slice(-10)).size === 1;

const pad = (n: number): string => String(n).padStart(2, '0');
const day = fc.record({ y: fc.integer({ min: 1900, max: 2099 }), m: fc.integer({ min: 1, max: 12 }), d: fc.integer({ min: 1, max: 28 }), h: fc.integer({ min: 0, max: 23 }), min: fc.integer({ min: 0, max: 59 }) });
const date = fc.tuple(day, fc.integer({ min: 0, max: 9 }), fc.boolean()).map(([{ y, m, d, h, min }, style, time]) => {
  const days = [`${y}-${pad(m)}-${pad(d)}`, `${pad(d)}.${pad(m)}.${y}`, `${pad(m)}/${pad(d)}/${y}`, `${pad(d)}/${pad(m)}/${y}`, `${pad(d)} ${pad(m)} ${y}`, `${y}/${pad(m)}/${pad(d)}`, `${pad(d)}-${pad(m)}-${y}`, `${y}${pad(m)}${pad(d)}`, `${d}.${m}.${y}`, `${y}. ${pad(m)}. ${pad(d)}.`];
  return days[style]! + (time ? ` ${pad(h)}:${pad(min)}` : '');
});
const amount = fc.tuple(fc.integer({ min: 1000, max: 999_999_999 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 5 }), fc.constantFrom('', '$', '€', 'EUR', 'kr', 'zł', 'CHF')).map(([whole, cents, style, currency]) => {
  const group = (sep: string): string => String(whole).replace(/\B(?=(\d{3})+(?!\d))/g, sep);
  const number = [`${group(',')}.${pad(cents)}`, `${group('.')},${pad(cents)}`, group(' '), `${group(' ')},${pad(cents)}`, group('.'), `${whole}.${pad(cents)}`][style]!;
  // Without a currency, an amount in groups of three with a full first group reads like a phone number in Spain or Poland: only with a currency.
  return currency === '' && /^\d{3}[ .]\d{3}[ .]\d{3}$/.test(number) ? `${number} EUR` : currency ? `${currency} ${number}` : number;
});
const other = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 }), fc.integer({ min: 0, max: 59 })).map(([h, m, s]) => `${pad(h)}:${pad(m)}:${pad(s)}`),
  fc.tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 99999 }), fc.integer({ min: 0, max: 9999 })).map(([a, b, c, d]) => `version ${a}.${b}.${c}.${d}`),
  fc.tuple(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 9 })).map(([a, b]) => `${a}.${b} %`),
);

describe('phone numbers: properties', () => {
  it('finds a number written in a national or international style inside prose, with its exact span', () => {
    fc.assert(
      fc.property(prose, written, prose, fc.constantFrom('.', ',', ';', '', ' today'), (before, number, after, end) => {
        fc.pre(!allSame(number));
        const text = `${before} ${number}${end} ${after}`;
        const start = before.length + 1;
        const found = detectPii(text, { kinds: ['phone'] });
        expect(found.map((f) => [f.start, f.end])).toEqual([[start, start + number.length]]);
      }),
      { numRuns: 500 },
    );
  });

  it('never reports a date, an amount, a time or a version as a phone', () => {
    fc.assert(
      fc.property(prose, fc.oneof(date, amount, other), prose, (before, value, after) => {
        expect(phones(`${before} ${value}. ${after}`)).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('phone numbers: cost', () => {
  it('stays linear on crafted 1 MB inputs', () => {
    const MB = 1 << 20;
    const fill = (unit: string): string => unit.repeat(Math.ceil(MB / unit.length)).slice(0, MB);
    for (const unit of ['1 ', '(', '+1', '+1 ', '0.', '9', '12 ', '(0)1 ', '+46 (0)8 928 571 38 x12 ', 'Tel 0490 75 40 81, ', '9498777106 ', '123 456 789 ']) {
      const t0 = performance.now();
      detectPii(fill(unit), { kinds: ['phone'] });
      expect(performance.now() - t0, unit).toBeLessThan(1000);
    }
  });
});
