/**
 * A labelled evaluation set for the PII scanner, generated (never copied): documents of a few
 * sentences in many locales, each holding entities written the way people and systems write them,
 * with the exact span of every entity. Seeded and deterministic: the same seed gives the same set.
 *
 * Values come from `@faker-js/faker` in the document's locale. Phone numbers are also written in
 * the national conventions of many countries (trunk prefixes, area codes in parentheses, dotted,
 * dashed and slashed groups, "(0)" after the country code, 00/011 call prefixes, extensions), with
 * random digits: a generator does not care whether a range is assigned, so neither may the scanner.
 * Two in five phones have no word before them at all, the others a phrase in the document's
 * language. Between the entities, numbers that are not PII (dates, times, amounts, order numbers,
 * addresses, versions, ISBNs, tracking numbers...) measure precision honestly: they have no gold span.
 */
import { allFakers, type Faker } from '@faker-js/faker';
import type { PiiKind } from '../../guards/content/pii.js';

export interface GoldSpan {
  kind: PiiKind;
  start: number;
  end: number;
  /** Phones only: what precedes the number (a phone word, another phrase, or nothing). */
  cue?: PhoneCue;
}

export type PhoneCue = 'word' | 'phrase' | 'none';

export interface Document {
  id: number;
  locale: string;
  text: string;
  gold: GoldSpan[];
}

const LOCALES = ['en_US', 'en_GB', 'en_AU', 'en_CA', 'en_IN', 'de', 'de_AT', 'de_CH', 'fr', 'fr_BE', 'fr_CH', 'es', 'es_MX', 'it', 'nl', 'nl_BE', 'pt_BR', 'pt_PT', 'sv', 'nb_NO', 'da', 'fi', 'pl', 'cs_CZ', 'ro', 'hu', 'ja', 'ko', 'zh_CN', 'tr'] as const;
type Locale = (typeof LOCALES)[number];

/** The country whose numbers a document in this locale mostly holds. */
const COUNTRY: Record<Locale, string> = {
  en_US: 'US', en_GB: 'GB', en_AU: 'AU', en_CA: 'US', en_IN: 'IN', de: 'DE', de_AT: 'AT', de_CH: 'CH', fr: 'FR', fr_BE: 'BE', fr_CH: 'CH',
  es: 'ES', es_MX: 'MX', it: 'IT', nl: 'NL', nl_BE: 'BE', pt_BR: 'BR', pt_PT: 'PT', sv: 'SE', nb_NO: 'NO', da: 'DK', fi: 'FI', pl: 'PL',
  cs_CZ: 'CZ', ro: 'RO', hu: 'HU', ja: 'JP', ko: 'KR', zh_CN: 'CN', tr: 'TR',
};

/**
 * Phone patterns per country, as numbers are printed there: '#' any digit, 'N' 2-9, 'M' 1-9.
 * Random digits, so a pattern says how a number is written, not whether it is assigned.
 */
const PHONE_PATTERNS: Record<string, readonly string[]> = {
  US: ['(N##) N##-####', 'N##-N##-####', 'N##.N##.####', '+1 N## N## ####', '+1-N##-N##-####', '1-N##-N##-####', 'N##N######', '###-###-####', '(###)###-####', '###.###.####', '###-###-####x###', '###-###-####x####', '+1-###-###-####x####', '001-###-###-####', 'N##-N##-#### ext. ###', '(N##) N##-#### ext ##', '1 (N##) N##-####', '+1 (N##) N##-####'],
  GB: ['07### ### ###', '07### ######', '020 #### ####', '01### ######', '0113 ### ####', '+44 7### ######', '+44 (0)20 #### ####', '+44 20 #### ####', '(01###) ######', '+44 (0) 1### ######', '020 #### #### ext. ###'],
  FR: ['0M ## ## ## ##', '0M.##.##.##.##', '0M-##-##-##-##', '+33 M ## ## ## ##', '+33 (0)M ## ## ## ##', '0M########', '+33 M## ## ## ##'],
  DE: ['030 ########', '0## #######', '0###/#######', '0####/######', '+49 30 #######', '+49 (0)89 ######', '015# ########', '(0##) #######', '0###-######', '+49 1## ########', '0049 ## ########', '030 #####-###', '0## / ### ## ##'],
  AT: ['01 ### ####', '0664 #######', '+43 1 #######', '+43 (0)664 #######', '0### ######'],
  CH: ['0## ### ## ##', '+41 ## ### ## ##', '0041 ## ### ## ##', '+41 (0)## ### ## ##'],
  AU: ['04## ### ###', '(0M) #### ####', '0M #### ####', '+61 M #### ####', '+61 4## ### ###', '+61 (0)M #### ####'],
  NL: ['06-########', '06 ########', '020-### ####', '0##-#######', '+31 6 ########', '+31 (0)20 ### ####', '06-## ## ## ##'],
  BE: ['04## ## ## ##', '0M ### ## ##', '+32 4## ## ## ##', '+32 (0)M ### ## ##', '0##/## ## ##'],
  SE: ['08-### ### ##', '07#-### ## ##', '+46 (0)8 ### ### ##', '+46 7# ### ## ##', '0##-## ## ##', '08-## ## ##'],
  NO: ['## ## ## ##', '### ## ###', '+47 ## ## ## ##', '+47 ### ## ###'],
  DK: ['## ## ## ##', '+45 ## ## ## ##', '#### ####', '+45 #### ####'],
  FI: ['040 ### ####', '09 #### ####', '+358 40 ### ####', '+358 (0)9 #### ###', '050-### ####'],
  ES: ['6## ### ###', '9## ## ## ##', '+34 6## ### ###', '+34 9## ### ###', '9##-###-###', '6## ## ## ##'],
  IT: ['3## ### ####', '06 #### ####', '02 ########', '+39 3## ### ####', '+39 06 #### ####', '0### ######', '3##-#######'],
  PT: ['9## ### ###', '2## ### ###', '+351 9## ### ###', '+351 2## ### ###'],
  PL: ['### ### ###', '+48 ### ### ###', '(##) ### ## ##', '## ### ## ##', '+48 ## ### ## ##'],
  CZ: ['### ### ###', '+420 ### ### ###', '+420 ###-###-###'],
  RO: ['07## ### ###', '021 ### ####', '+40 7## ### ###', '+40 (0)21 ### ####', '07##.###.###'],
  HU: ['06 1 ### ####', '06-30-###-####', '+36 30 ### ####', '+36 1 ### ####', '06 (30) ### ####', '(37) ###-###'],
  JP: ['0M-####-####', '0##-###-####', '090-####-####', '+81 M-####-####', '+81 90 #### ####', '(0M) ####-####', '0###-##-####'],
  KR: ['010-####-####', '02-###-####', '0##-###-####', '+82 10-####-####', '+82 2-###-####', '(02) ###-####'],
  CN: ['1M# #### ####', '13#-####-####', '010-########', '0###-#######', '+86 1M# #### ####', '(010) ########', '+86 10 ########', '1M#########'],
  TR: ['0 5## ### ## ##', '0(5##) ### ## ##', '+90 5## ### ## ##', '0(212) ### ## ##', '+90 (212) ### ## ##', '0212 ### ## ##'],
  IN: ['+91 9#### #####', '09#########', '0##-########', '+91-9#########', '+91 ## #### ####', '9#### #####'],
  BR: ['(##) 9####-####', '(##) ####-####', '+55 ## 9####-####', '+55 (##) 9####-####', '## 9####-####', '(0##) ####-####'],
  MX: ['55 #### ####', '+52 55 #### ####', '+52 1 55 #### ####', '(55) ####-####', '##-####-####', '(###) ###-####', '+52 (###) ###-####'],
  IE: ['08# ### ####', '+353 8# ### ####', '01 ### ####', '+353 (0)1 ### ####'],
};
const PHONE_COUNTRIES = Object.keys(PHONE_PATTERNS);

/** Fills a pattern: '#' any digit, 'N' 2-9, 'M' 1-9; anything else is kept. */
function fill(f: Faker, pattern: string): string {
  let s = '';
  for (const c of pattern) s += c === '#' ? f.string.numeric(1) : c === 'N' ? String(f.number.int({ min: 2, max: 9 })) : c === 'M' ? String(f.number.int({ min: 1, max: 9 })) : c;
  return s;
}

/** A number of `country` as dialled from abroad: the "+" written as 00 or 011, sometimes spaced. */
function dialledFromAbroad(f: Faker, country: string): string {
  const international = PHONE_PATTERNS[country]!.filter((p) => p.startsWith('+'));
  const number = fill(f, f.helpers.arrayElement(international));
  return f.helpers.arrayElement(['00', '00 ', '011 ', '011-']) + number.slice(1);
}

function phone(f: Faker, locale: Locale): string {
  const r = f.number.float({ min: 0, max: 1 });
  const home = COUNTRY[locale];
  if (r < 0.25) return f.phone.number();
  if (r < 0.75) return fill(f, f.helpers.arrayElement(PHONE_PATTERNS[home]!));
  const country = f.helpers.arrayElement(PHONE_COUNTRIES);
  return r < 0.85 ? dialledFromAbroad(f, country) : fill(f, f.helpers.arrayElement(PHONE_PATTERNS[country]!));
}

/** Words that may precede a phone number, per language: naming the phone, or only a contact. */
const PHONE_LEADS: Record<string, { word: readonly string[]; phrase: readonly string[] }> = {
  en: { word: ['Call', 'Tel.', 'phone:', 'Phone', 'mobile:', 'Mob.', 'cell', 'Fax:', 'ring me on', 'call us on', 'text me at', 'Telephone', 'Tel:', 'hotline', 'Ph.'], phrase: ['Contact:', 'reach me at', 'or', 'ask for Sam at', 'Office', 'Reception:', 'Support', 'you can reach our desk at'] },
  de: { word: ['Tel.', 'Telefon:', 'Tel:', 'Handy:', 'Mobil:', 'Fax', 'Rufnummer', 'rufen Sie an unter', 'telefonisch unter', 'Telefonnummer'], phrase: ['erreichbar unter', 'Kontakt:', 'Zentrale:', 'Büro', 'bitte melden unter'] },
  fr: { word: ['Tél.', 'Tél :', 'téléphone', 'portable :', 'mobile', 'appelez le', 'Fax :', 'tel'], phrase: ['joignable au', 'contact :', 'standard :', 'bureau'] },
  es: { word: ['Tel.', 'teléfono', 'móvil:', 'llame al', 'celular', 'Fax:', 'Tlf.'], phrase: ['contacto:', 'oficina:', 'escríbanos o visítenos,'] },
  it: { word: ['tel.', 'telefono', 'cellulare', 'cell.', 'chiamare il', 'Tel:'], phrase: ['contatto:', 'recapito:', 'ufficio'] },
  nl: { word: ['tel.', 'telefoon', 'mobiel:', 'bel', 'Telefoonnummer:', 'Tel:'], phrase: ['bereikbaar op', 'contact:', 'kantoor'] },
  pt: { word: ['tel.', 'telefone', 'celular:', 'ligue para', 'telemóvel', 'WhatsApp'], phrase: ['contato:', 'escritório', 'fale conosco'] },
  sv: { word: ['tel.', 'telefon', 'mobil:', 'ring', 'Tfn'], phrase: ['kontakt:', 'nås på', 'växel:'] },
  nb: { word: ['tlf.', 'telefon', 'mobil:', 'ring'], phrase: ['kontakt:', 'sentralbord:'] },
  da: { word: ['tlf.', 'telefon', 'mobil:', 'ring på'], phrase: ['kontakt:', 'omstilling:'] },
  fi: { word: ['puh.', 'puhelin', 'matkapuhelin', 'soita'], phrase: ['yhteystiedot:', 'vaihde'] },
  pl: { word: ['tel.', 'telefon', 'kom.', 'zadzwoń pod'], phrase: ['kontakt:', 'biuro'] },
  cs: { word: ['tel.', 'telefon', 'mobil:', 'volejte'], phrase: ['kontakt:', 'kancelář'] },
  ro: { word: ['tel.', 'telefon', 'mobil:', 'sunați la'], phrase: ['contact:', 'birou'] },
  hu: { word: ['tel.', 'telefon', 'mobil:', 'hívja a'], phrase: ['elérhetőség:', 'iroda'] },
  ja: { word: ['電話', 'TEL', '携帯:', 'お電話は'], phrase: ['連絡先:', '問い合わせ'] },
  ko: { word: ['전화', '전화번호:', '휴대폰', 'Tel.'], phrase: ['연락처:', '문의'] },
  zh: { word: ['电话', '手机:', '联系电话', 'Tel:'], phrase: ['联系方式:', '办公室'] },
  tr: { word: ['Tel.', 'telefon', 'cep:', 'arayın'], phrase: ['iletişim:', 'ofis'] },
};
const language = (locale: Locale): string => (locale.startsWith('en') ? 'en' : locale.split('_')[0]!);

/** The lead before a phone: none for two in five, else a phone word or another phrase. */
function phoneLead(f: Faker, locale: Locale): { lead: string; cue: PhoneCue } {
  const r = f.number.float({ min: 0, max: 1 });
  if (r < 0.4) return { lead: '', cue: 'none' };
  const leads = PHONE_LEADS[language(locale)]!;
  return r < 0.85 ? { lead: f.helpers.arrayElement(leads.word), cue: 'word' } : { lead: f.helpers.arrayElement(leads.phrase), cue: 'phrase' };
}

const CARD_ISSUERS = ['visa', 'mastercard', 'american_express', 'discover', 'diners_club', 'jcb', 'maestro'] as const;

/** Prefixes and lengths of the issuers Python Faker's generator knows that faker-js writes differently. */
const CARD_RANGES: ReadonlyArray<{ prefixes: readonly string[]; lengths: readonly number[] }> = [
  { prefixes: ['2131', '1800'], lengths: [15] }, // JCB 15
  { prefixes: ['35'], lengths: [16] }, // JCB 16
  { prefixes: ['300', '301', '302', '303', '304', '305', '36', '38'], lengths: [14] }, // Diners
  { prefixes: ['5018', '5020', '5038', '56##', '58##', '6304', '6759', '6761', '6762', '6763'], lengths: [12, 13, 14, 15, 16, 17, 18, 19] }, // Maestro
];

/** A Luhn-valid card number from an issuer range, printed bare or in groups of four. */
function pythonFakerCard(f: Faker): string {
  const range = f.helpers.arrayElement(CARD_RANGES);
  let digits = fill(f, f.helpers.arrayElement(range.prefixes));
  const length = f.helpers.arrayElement(range.lengths);
  while (digits.length < length - 1) digits += f.string.numeric(1);
  digits += luhnCheckDigit(digits);
  if (f.datatype.boolean(0.6)) return digits;
  const sep = f.helpers.arrayElement([' ', '-']);
  return digits.match(/.{1,4}/g)!.join(sep);
}

function luhnCheckDigit(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = body.charCodeAt(body.length - 1 - i) - 48;
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

/** A valid US SSN: area 001-899 but 666, group and serial not zero. */
function ssn(f: Faker): string {
  let area = f.number.int({ min: 1, max: 899 });
  if (area === 666) area = 667;
  const sep = f.helpers.arrayElement(['-', '-', ' ']);
  return `${String(area).padStart(3, '0')}${sep}${String(f.number.int({ min: 1, max: 99 })).padStart(2, '0')}${sep}${String(f.number.int({ min: 1, max: 9999 })).padStart(4, '0')}`;
}

function entity(f: Faker, kind: PiiKind, locale: Locale): string {
  switch (kind) {
    case 'email':
      return f.internet.email();
    case 'phone':
      return phone(f, locale);
    case 'credit_card':
      return f.datatype.boolean(0.7) ? f.finance.creditCardNumber(f.helpers.arrayElement(CARD_ISSUERS)) : pythonFakerCard(f);
    case 'iban':
      return f.finance.iban({ formatted: f.datatype.boolean(0.5) });
    case 'us_ssn':
      return ssn(f);
    case 'ip_address':
      return f.datatype.boolean(0.8) ? f.internet.ipv4() : f.internet.ipv6();
  }
}

const LEADS: Record<Exclude<PiiKind, 'phone'>, readonly string[]> = {
  email: ['Write to', 'Contact:', 'cc', 'E-mail', 'reply to'],
  credit_card: ['Card', 'charged to card', 'card number', 'paid with'],
  iban: ['IBAN', 'transfer to', 'account', 'Kontonummer'],
  us_ssn: ['SSN', 'social security number', 'SSN:'],
  ip_address: ['from IP', 'host', 'client address', 'seen at'],
};
const KINDS: readonly PiiKind[] = ['email', 'phone', 'credit_card', 'iban', 'us_ssn', 'ip_address'];

// ---------------------------------------------------------------------------------------------
// numbers that are not PII

const int = (f: Faker, min: number, max: number): number => f.number.int({ min, max });
const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

function date(f: Faker): string {
  const y = int(f, 1950, 2035);
  const m = int(f, 1, 12);
  const d = int(f, 1, 28);
  const styles = [`${y}-${pad(m)}-${pad(d)}`, `${pad(d)}.${pad(m)}.${y}`, `${pad(m)}/${pad(d)}/${y}`, `${pad(d)}/${pad(m)}/${y}`, `${pad(d)} ${pad(m)} ${y}`, `${y}/${pad(m)}/${pad(d)}`, `${pad(d)}-${pad(m)}-${y}`, `${y}${pad(m)}${pad(d)}`, `${d}.${m}.${y}`, `${m}/${d}/${String(y).slice(2)}`, `${y}. ${pad(m)}. ${pad(d)}.`];
  const day = f.helpers.arrayElement(styles);
  const time = f.helpers.arrayElement(['', '', '', ` ${pad(int(f, 0, 23))}:${pad(int(f, 0, 59))}`, ` ${pad(int(f, 0, 23))}:${pad(int(f, 0, 59))}:${pad(int(f, 0, 59))}`]);
  return day + time;
}

function money(f: Faker): string {
  const whole = int(f, 1000, 99_999_999);
  const group = (sep: string): string => String(whole).replace(/\B(?=(\d{3})+(?!\d))/g, sep);
  const cents = pad(int(f, 0, 99));
  const amount = f.helpers.arrayElement([`${group(',')}.${cents}`, `${group('.')},${cents}`, group(' '), `${group(' ')},${cents}`, group(','), group('.'), `${whole}.${cents}`, `${group("'")}.${cents}`]);
  const currency = f.helpers.arrayElement(['$', '€', '£', '¥', 'EUR', 'USD', 'CHF', 'kr', 'zł', 'Ft', 'R$', 'Kč', 'TL', 'MXN', 'lei']);
  return f.helpers.arrayElement([`${currency} ${amount}`, `${amount} ${currency}`, `${currency}${amount}`]);
}

function identifier(f: Faker): string {
  const digits = f.string.numeric({ length: int(f, 6, 12), allowLeadingZeros: true });
  const label = f.helpers.arrayElement(['Order', 'order no.', 'Invoice', 'Rechnung Nr.', 'facture n°', 'pedido', 'Ticket #', 'Case', 'Ref.', 'Bestellnummer', 'Kundennummer', 'Customer ID', 'reference', 'Auftrag', 'numéro de commande', 'zamówienie nr', '注文番号', 'ordernummer']);
  const value = f.helpers.arrayElement([digits, `#${digits}`, `${digits.slice(0, 4)}-${digits.slice(4)}`, `${int(f, 2015, 2025)}-${f.string.numeric(5)}`, `INV-${int(f, 2015, 2025)}-${f.string.numeric(5)}`, `ORD-${digits}`, `${f.string.numeric(3)}-${f.string.numeric(7)}-${f.string.numeric(7)}`]);
  return `${label} ${value}`;
}

function isbn13(f: Faker): string {
  const body = `978${f.string.numeric(9)}`;
  let sum = 0;
  for (let i = 0; i < 12; i++) sum += (body.charCodeAt(i) - 48) * (i % 2 === 0 ? 1 : 3);
  const check = (10 - (sum % 10)) % 10;
  return `ISBN ${body.slice(0, 3)}-${body[3]}-${body.slice(4, 7)}-${body.slice(7, 12)}-${check}`;
}

/** One sentence fragment holding a number that is not PII. */
function distractor(f: Faker): string {
  switch (int(f, 0, 13)) {
    case 0:
    case 1:
      return `${f.helpers.arrayElement(['on', 'am', 'le', 'el', 'dated', 'Datum:', 'due', 'since', 'date', ''])} ${date(f)}`.trim();
    case 2:
      return f.helpers.arrayElement([`at ${pad(int(f, 0, 23))}:${pad(int(f, 0, 59))}`, `${int(f, 1, 12)}:${pad(int(f, 0, 59))} pm`, `um ${int(f, 7, 20)}.${pad(int(f, 0, 59))} Uhr`, `${pad(int(f, 0, 23))}:${pad(int(f, 0, 59))}:${pad(int(f, 0, 59))}`, `${int(f, 7, 20)}h${pad(int(f, 0, 59))}`]);
    case 3:
    case 4:
      return `${f.helpers.arrayElement(['total', 'Betrag', 'montant', 'importe', 'price', ''])} ${money(f)}`.trim();
    case 5:
      return `${String(int(f, 10_000, 9_999_999)).replace(/\B(?=(\d{3})+(?!\d))/g, f.helpers.arrayElement([' ', ',', '.']))} ${f.helpers.arrayElement(['inhabitants', 'visitors', 'km', 'Einwohner', 'habitants', 'm²', 'downloads', 'units'])}`;
    case 6:
    case 7:
      return identifier(f);
    case 8:
      return `${f.location.streetAddress()}, ${f.location.zipCode()} ${f.location.city()}`;
    case 9:
      return f.helpers.arrayElement([`v${int(f, 0, 12)}.${int(f, 0, 30)}.${int(f, 0, 99)}`, `version ${int(f, 1, 12)}.${int(f, 0, 9)}.${int(f, 10000, 22999)}.${int(f, 0, 9999)}`, `build ${int(f, 1, 9)}.${int(f, 0, 20)}.${int(f, 0, 300)}.${int(f, 0, 9999)}`, `release ${int(f, 1, 30)}.${int(f, 0, 12)}.${int(f, 0, 9)}`]);
    case 10:
      return f.helpers.arrayElement([`${int(f, 0, 100)}.${int(f, 0, 9)} %`, `${int(f, 0, 100)}%`, `${int(f, 0, 100)},${int(f, 0, 9)} %`, `${int(f, 1950, 2015)}-${int(f, 2016, 2030)}`, `${int(f, 1950, 2015)} – ${int(f, 2016, 2030)}`, `pp. ${int(f, 100, 400)}-${int(f, 401, 800)}`]);
    case 11:
      return f.helpers.arrayElement([isbn13(f), `tracking ${f.string.numeric(4)} ${f.string.numeric(4)} ${f.string.numeric(4)} ${f.string.numeric(4)} ${f.string.numeric(4)} ${f.string.numeric(2)}`, `tracking 1Z${f.string.alphanumeric({ length: 6, casing: 'upper' })}${f.string.numeric(10)}`, `Sendungsnummer ${f.string.numeric(12)}`, `parcel ${f.string.numeric(4)} ${f.string.numeric(4)} ${f.string.numeric(4)}`]);
    case 12:
      return f.helpers.arrayElement([`${pad(int(f, 0, 9))}:${pad(int(f, 0, 59))}:${pad(int(f, 0, 59))}`, `${int(f, 1, 9)} h ${int(f, 1, 59)} min`, `${f.location.latitude({ precision: 4 })}, ${f.location.longitude({ precision: 4 })}`, `${int(f, 640, 3840)}x${int(f, 480, 2160)}`, `${int(f, 1, 999)}.${int(f, 0, 9)} kg`]);
    default:
      return `${f.helpers.arrayElement(['Serial', 'SN', 'Seriennummer', 'IMEI'])} ${f.string.numeric(int(f, 8, 15))}`;
  }
}

/** `count` documents from `seed`, each with one to four entities and up to three other numbers among words of its locale. */
export function generateCorpus(seed: number, count: number): Document[] {
  const docs: Document[] = [];
  for (let id = 0; id < count; id++) {
    const locale = LOCALES[(seed + id) % LOCALES.length]!;
    const f = allFakers[locale];
    f.seed([seed, id]);
    const pieces: Array<{ kind: PiiKind } | { distractor: string }> = [];
    const entities = int(f, 1, 4);
    for (let e = 0; e < entities; e++) pieces.push({ kind: f.helpers.arrayElement(KINDS) });
    const distractors = int(f, 0, 3);
    for (let d = 0; d < distractors; d++) pieces.splice(int(f, 0, pieces.length), 0, { distractor: distractor(f) });
    let text = '';
    const gold: GoldSpan[] = [];
    for (const piece of pieces) {
      text += `${f.lorem.sentence({ min: 3, max: 9 })} `;
      if ('distractor' in piece) {
        text += `${piece.distractor}${f.helpers.arrayElement(['.', ',', ' today.', ';'])} `;
        continue;
      }
      const { kind } = piece;
      const value = entity(f, kind, locale);
      let cue: PhoneCue | undefined;
      if (kind === 'phone') {
        const lead = phoneLead(f, locale);
        cue = lead.cue;
        if (lead.lead) text += `${lead.lead} `;
      } else text += `${f.helpers.arrayElement(LEADS[kind])} `;
      gold.push({ kind, start: text.length, end: text.length + value.length, ...(cue ? { cue } : {}) });
      text += `${value}${f.helpers.arrayElement(['.', ',', ' today.', ' please.', ';'])} `;
    }
    docs.push({ id, locale, text: text.trimEnd(), gold });
  }
  return docs;
}

/**
 * A stricter set, for what tuning could not have seen: documents in the faker locales the main set
 * does not use, with faker's own values only (no national patterns of ours) and no word of any kind
 * before a phone number. The same seed gives the same set.
 */
export function generateUnseenCorpus(seed: number, count: number): Document[] {
  const used = new Set<string>(LOCALES);
  const locales = Object.keys(allFakers).filter((l) => !used.has(l) && l !== 'base' && l !== 'en');
  const docs: Document[] = [];
  for (let id = 0; id < count; id++) {
    const locale = locales[(seed + id) % locales.length]!;
    const f = allFakers[locale as keyof typeof allFakers];
    f.seed([seed, id, 7]);
    let text = '';
    const gold: GoldSpan[] = [];
    for (let e = int(f, 1, 3); e > 0; e--) {
      const kind = f.helpers.arrayElement(['email', 'phone', 'credit_card', 'iban', 'ip_address'] as const);
      const value = kind === 'email' ? f.internet.email() : kind === 'phone' ? f.phone.number() : kind === 'credit_card' ? f.finance.creditCardNumber() : kind === 'iban' ? f.finance.iban({ formatted: f.datatype.boolean() }) : f.internet.ipv4();
      text += `${f.lorem.sentence({ min: 3, max: 9 })} `;
      gold.push({ kind, start: text.length, end: text.length + value.length, ...(kind === 'phone' ? { cue: 'none' as const } : {}) });
      text += `${value}${f.helpers.arrayElement(['.', ',', ';'])} `;
    }
    docs.push({ id, locale, text: text.trimEnd(), gold });
  }
  return docs;
}
