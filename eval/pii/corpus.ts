/**
 * A labelled evaluation set for the PII scanner, generated (never copied): documents of a few
 * sentences in many locales, each holding entities written the way people and systems write them,
 * with the exact span of every entity. Seeded and deterministic: the same seed gives the same set.
 * Values come from `@faker-js/faker` in the document's locale; phone numbers also in the national
 * styles faker does not cover (trunk prefixes, dotted groups, extensions, international call prefixes).
 */
import { allFakers, type Faker } from '@faker-js/faker';
import type { PiiKind } from '../../guards/content/pii.js';

export interface GoldSpan {
  kind: PiiKind;
  start: number;
  end: number;
}

export interface Document {
  id: number;
  locale: string;
  text: string;
  gold: GoldSpan[];
}

const LOCALES = ['en_US', 'en_GB', 'en_AU', 'en_CA', 'en_IN', 'de', 'de_AT', 'de_CH', 'fr', 'fr_BE', 'fr_CH', 'es', 'es_MX', 'it', 'nl', 'nl_BE', 'pt_BR', 'pt_PT', 'sv', 'nb_NO', 'da', 'fi', 'pl', 'cs_CZ', 'ro', 'hu', 'ja', 'ko', 'zh_CN', 'tr'] as const;

const CARD_ISSUERS = ['visa', 'mastercard', 'american_express', 'discover', 'diners_club', 'jcb', 'maestro'] as const;

/** Phone numbers in national styles, with digits from the generator. */
const PHONE_STYLES: ReadonlyArray<(f: Faker) => string> = [
  (f) => `07${f.string.numeric(3)} ${f.string.numeric(3)} ${f.string.numeric(3)}`,
  (f) => `04${f.string.numeric(2)} ${f.string.numeric(2)} ${f.string.numeric(2)} ${f.string.numeric(2)}`,
  (f) => `+46 (0)8 ${f.string.numeric(3)} ${f.string.numeric(3)} ${f.string.numeric(2)}`,
  (f) => `0${f.number.int({ min: 1, max: 9 })}.${f.string.numeric(2)}.${f.string.numeric(2)}.${f.string.numeric(2)}.${f.string.numeric(2)}`,
  (f) => `${f.number.int({ min: 201, max: 989 })}-${f.number.int({ min: 200, max: 999 })}-${f.string.numeric(4)}x${f.string.numeric(4)}`,
  (f) => `001-${f.number.int({ min: 201, max: 989 })}-${f.number.int({ min: 200, max: 999 })}-${f.string.numeric(4)}`,
  (f) => `${f.number.int({ min: 201, max: 989 })}${f.number.int({ min: 200, max: 999 })}${f.string.numeric(4)}`,
  (f) => `(${f.number.int({ min: 201, max: 989 })}) ${f.number.int({ min: 200, max: 999 })}-${f.string.numeric(4)}`,
];

/** A valid US SSN: area 001-899 but 666, group and serial not zero. */
function ssn(f: Faker): string {
  let area = f.number.int({ min: 1, max: 899 });
  if (area === 666) area = 667;
  const sep = f.helpers.arrayElement(['-', '-', ' ']);
  return `${String(area).padStart(3, '0')}${sep}${String(f.number.int({ min: 1, max: 99 })).padStart(2, '0')}${sep}${String(f.number.int({ min: 1, max: 9999 })).padStart(4, '0')}`;
}

function entity(f: Faker, kind: PiiKind): string {
  switch (kind) {
    case 'email':
      return f.internet.email();
    case 'phone':
      return f.datatype.boolean(0.5) ? f.phone.number() : f.helpers.arrayElement(PHONE_STYLES)(f);
    case 'credit_card':
      return f.finance.creditCardNumber(f.helpers.arrayElement(CARD_ISSUERS));
    case 'iban':
      return f.finance.iban({ formatted: f.datatype.boolean(0.5) });
    case 'us_ssn':
      return ssn(f);
    case 'ip_address':
      return f.datatype.boolean(0.8) ? f.internet.ipv4() : f.internet.ipv6();
  }
}

const LEADS: Record<PiiKind, readonly string[]> = {
  email: ['Write to', 'Contact:', 'cc', 'E-mail', 'reply to'],
  phone: ['Call', 'Tel.', 'phone:', 'ring', 'mobile'],
  credit_card: ['Card', 'charged to card', 'card number', 'paid with'],
  iban: ['IBAN', 'transfer to', 'account', 'Kontonummer'],
  us_ssn: ['SSN', 'social security number', 'SSN:'],
  ip_address: ['from IP', 'host', 'client address', 'seen at'],
};

/** `count` documents from `seed`, each with one to four entities among words of its locale. */
export function generateCorpus(seed: number, count: number): Document[] {
  const docs: Document[] = [];
  for (let id = 0; id < count; id++) {
    const locale = LOCALES[(seed + id) % LOCALES.length]!;
    const f = allFakers[locale];
    f.seed([seed, id]);
    let text = '';
    const gold: GoldSpan[] = [];
    const entities = f.number.int({ min: 1, max: 4 });
    for (let e = 0; e < entities; e++) {
      const kind = f.helpers.arrayElement(Object.keys(LEADS) as PiiKind[]);
      const value = entity(f, kind);
      text += `${f.lorem.sentence({ min: 3, max: 9 })} ${f.helpers.arrayElement(LEADS[kind])} `;
      gold.push({ kind, start: text.length, end: text.length + value.length });
      text += `${value}${f.helpers.arrayElement(['.', ',', ' today.', ' please.', ';'])} `;
    }
    docs.push({ id, locale, text: text.trimEnd(), gold });
  }
  return docs;
}
