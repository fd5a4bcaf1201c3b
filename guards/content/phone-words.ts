/**
 * Words around a digit run that say what it is: a phone word before it ("Tel.", "Telefon",
 * "téléphone", "電話"...) in many languages, a label that makes it an identifier ("order",
 * "Rechnung Nr.", "ISBN", "#"...), or a currency that makes it an amount. Each test looks at a
 * few dozen characters only, so its cost per candidate is bounded.
 */
import { isAlnum, isAlpha } from './chars.js';

/** Stems: match the start of a word ("telefon" in "Telefonnummer"). Lower case. */
const PHONE_STEMS = [
  'phone', 'telephon', 'téléphon', 'telefon', 'teléfon', 'telèfon', 'telefoon', 'telemóvel', 'telemovel', 'puhelin', 'matkapuhelin',
  'mobil', 'mobiel', 'móvil', 'movil', 'cellul', 'celular', 'handy', 'fax', 'télécopi', 'hotline', 'whatsapp', 'rufnummer', 'durchwahl',
  'festnetz', 'portable', 'call', 'appel', 'chiam', 'llam', 'ligue', 'ligar', 'zadzwo', 'volej', 'hívj', 'sunaț', 'sunati', 'soita',
  'aray', 'dial', 'ring', 'komórk', 'komork', 'tlf', 'tfn', 'puh', 'sms', 'viber', 'telegram',
];
/** Whole words only (abbreviations that are prefixes of unrelated words). */
const PHONE_EXACT = ['tel', 'tél', 'ph', 'mob', 'cell', 'kom', 'gsm', 'fon', 'bel', 'n° tel', 'nr tel'];
/** Scripts without spaces between words: matched anywhere. */
const PHONE_CJK = ['電話', '电话', '携帯', '手机', '手機', '전화', '휴대폰', '핸드폰', '연락처', '☎', '📞', '℡', 'ＴＥＬ', 'ｔｅｌ'];

/** Nouns naming an identifier or another kind of number: the number after them is not a phone. Lower case. */
const LABEL_STEMS = [
  'order', 'invoice', 'rechnung', 'bestell', 'kundennummer', 'kundennr', 'auftrag', 'commande', 'factur', 'fattur', 'pedido', 'ordine', 'zamówien',
  'zamowien', 'serial', 'serien', 'imei', 'isbn', 'issn', 'tracking', 'sendung', 'parcel', 'paket', 'colis', 'ticket', 'version', 'release',
  'revision', 'postal', 'postcode', 'zip', 'plz', 'transaction', 'transakt', 'receipt', 'quittung', 'beleg', 'aktenzeichen', 'contract',
  'vertrag', 'contrat', 'confirmation', 'artikel', 'passport', 'reisepass', 'license', 'licence', 'lizenz', 'swift', 'iban', 'routing',
  'referen', 'référen', 'riferiment', '注文', '订单', '주문', 'bestelnummer', 'ordernummer', 'rekening', 'konto',
];
const LABEL_EXACT = ['sn', 's/n', 'ean', 'upc', 'vin', 'po', 'pp', 'p', 'vol', 'art', 'ref', 'réf', 'v', 'ver', 'rev', 'build', 'sku', 'blz', 'bic', 'bsb', 'aba', 'kto', 'tax', 'vat', 'ust', 'siret', 'siren', 'account', 'case', 'policy', 'track'];
/** "No.", "Nr.", "#", "number": an identifier, unless a phone word comes before ("Tel. Nr. 030 ..."). */
const NUMBER_MARKERS = ['no', 'nr', 'n°', 'nº', '№', 'id', 'nro', 'núm', 'num', 'nummer', 'numéro', 'número', 'numero', 'number', 'numer', '番号'];

const escape = (w: string): string => w.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const alt = (ws: readonly string[]): string => [...ws].sort((a, b) => b.length - a.length).map(escape).join('|');
const BOUND = '(?<![\\p{L}\\p{N}])';
/** Run only on windows of at most CUE_WINDOW characters: bounded work per candidate. */
const CUE = new RegExp(
  `${BOUND}(?:(?<phone>(?:${alt(PHONE_STEMS)})\\p{L}*|(?:${alt(PHONE_EXACT)})(?!\\p{L}))|(?<label>(?:${alt(LABEL_STEMS)})\\p{L}*|(?:${alt(LABEL_EXACT)})(?!\\p{L}))|(?<marker>(?:${alt(NUMBER_MARKERS)})(?!\\p{L})))|(?<cjk>${alt(PHONE_CJK)})|(?<hash>#)`,
  'gu',
);
const CUE_WINDOW = 40;
/** Characters at most between a label and the number it names (" number: ", " n° "). */
const LABEL_REACH = 10;

const isLetterish = (c: number): boolean => isAlpha(c) || c > 127;

export type Cue = 'phone' | 'label' | 'marker';

/**
 * What the words in text[from, s) say about the number at `s` (looking back at most CUE_WINDOW
 * characters): 'phone' after a phone word, 'label' after an identifier's label, 'marker' after
 * only a number marker ("No.", "#", "number": a weaker sign of an identifier).
 */
export function cueBefore(text: string, from: number, s: number): Cue | undefined {
  let start = Math.max(from, s - CUE_WINDOW);
  while (start < s && start > 0 && isLetterish(text.charCodeAt(start - 1)) && isLetterish(text.charCodeAt(start))) start++; // not from mid-word
  const window = text.slice(start, s).toLowerCase();
  let cue: Cue | undefined;
  let marker = false;
  CUE.lastIndex = 0;
  for (let m = CUE.exec(window); m !== null; m = CUE.exec(window)) {
    const g = m.groups!;
    if (g['phone'] !== undefined || g['cjk'] !== undefined) cue = 'phone';
    // A label names the number right after it ("Order No. 123", "ISBN 978..."), not one a sentence later.
    else if (window.length - (m.index + m[0].length) > LABEL_REACH) continue;
    else if (g['label'] !== undefined) cue = 'label';
    else marker = true;
  }
  return cue ?? (marker ? 'marker' : undefined);
}

const CURRENCY_SIGNS = new Set([...'$€£¥₹₽₩₺₴₪฿₫¢₦₱']);
const CURRENCY_WORDS = new Set([
  'eur', 'usd', 'gbp', 'jpy', 'chf', 'sek', 'nok', 'dkk', 'pln', 'czk', 'huf', 'ron', 'try', 'mxn', 'brl', 'inr', 'cny', 'rmb', 'krw', 'aud',
  'cad', 'nzd', 'zar', 'rub', 'hkd', 'sgd', 'kr', 'zł', 'zl', 'kč', 'kc', 'ft', 'lei', 'tl', 'r$', 'fr', 'rs', 'yen', 'euro', 'euros', 'dollar',
  'dollars', 'pesos', 'reais', 'rupees', 'франк', 'руб', '円', '元', '원',
]);

/** A currency sign or code right before `s` or right after `e` (a space between allowed): an amount. */
export function currencyAround(text: string, s: number, e: number): boolean {
  let b = s;
  while (b > 0 && s - b < 2 && text.charCodeAt(b - 1) === 32) b--;
  let a = e;
  while (a < text.length && a - e < 2 && text.charCodeAt(a) === 32) a++;
  if (CURRENCY_SIGNS.has(text[b - 1] ?? '') || CURRENCY_SIGNS.has(text[a] ?? '')) return true;
  return CURRENCY_WORDS.has(wordBefore(text, b)) || CURRENCY_WORDS.has(wordAfter(text, a));
}

const isWordChar = (c: number): boolean => isAlnum(c) || c === 36 || c > 127;
/** The lower-cased word ending at `end` (at most 8 characters; a '$' counts, for "R$"). */
function wordBefore(text: string, end: number): string {
  let b = end;
  while (b > 0 && end - b < 8 && isWordChar(text.charCodeAt(b - 1))) b--;
  return text.slice(b, end).toLowerCase();
}
/** The lower-cased word starting at `start` (at most 8 characters), a trailing '.' dropped. */
function wordAfter(text: string, start: number): string {
  let a = start;
  while (a < text.length && a - start < 8 && isWordChar(text.charCodeAt(a))) a++;
  return text.slice(start, a).toLowerCase();
}
