/**
 * Rewrites an attacker uses to get a value past the PII and secret scanners: each one keeps the
 * value readable (a person or a program can undo it), so each must still be found, and redacting
 * what was found must leave nothing of the value for a second scan to find.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { defineAgent } from '../../agents/agent.js';
import { ScriptedModel } from '../../agents/providers/scripted.js';
import type { Finding } from '../../guards/content/finding.js';
import { IBAN_LENGTHS, luhnValid } from '../../guards/content/pii.js';
import { redact, scan } from '../../guards/content/scanner.js';
import { shannonEntropy } from '../../guards/content/secrets.js';
import { compilePolicy } from '../../guards/policy/load-policy.js';
import { PolicySchema } from '../../guards/policy/policy.js';
import { RunFailedError } from '../../runtime/errors.js';
import type { Run } from '../../runtime/run.js';
import { Runtime } from '../../runtime/runtime.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from '../support/redis.js';

// ---------------------------------------------------------------------------------------------
// values, generated (no token-shaped literal is ever committed)

const digits = (n: number) => fc.array(fc.integer({ min: 0, max: 9 }), { minLength: n, maxLength: n }).map((d) => d.join(''));
const chars = (n: number, alphabet: string) => fc.array(fc.constantFrom(...alphabet), { minLength: n, maxLength: n }).map((c) => c.join(''));

/** The digit that makes `body` + it pass Luhn. */
function luhnComplete(body: string): string {
  for (let d = 0; d <= 9; d++) if (luhnValid(body + d)) return body + d;
  throw new Error('unreachable');
}

const card = fc
  .tuple(fc.constantFrom(['4', 16], ['51', 16], ['2221', 16], ['34', 15], ['6011', 16], ['3530', 16], ['36', 14], ['6304', 18], ['2131', 15]), digits(18))
  .map(([[prefix, length], rest]) => luhnComplete(prefix + rest.slice(0, (length as number) - (prefix as string).length - 1)))
  .filter((d) => !/^(\d)\1+$/.test(d));
/** Printed in groups of four (Amex and 15-digit numbers 4-6-5), or compact. */
const printedCard = fc.tuple(card, fc.boolean()).map(([d, grouped]) => (!grouped ? d : d.length === 15 ? `${d.slice(0, 4)} ${d.slice(4, 10)} ${d.slice(10)}` : d.replace(/(\d{4})(?=\d)/g, '$1 ')));

const ssn = fc
  .tuple(fc.integer({ min: 1, max: 899 }), fc.integer({ min: 1, max: 99 }), fc.integer({ min: 1, max: 9999 }))
  .filter(([a]) => a !== 666)
  .map(([a, g, s]) => `${String(a).padStart(3, '0')}-${String(g).padStart(2, '0')}-${String(s).padStart(4, '0')}`);

/** A valid IBAN of a country with a digits-only account part, printed in groups of four. */
const iban = fc.tuple(fc.constantFrom('DE', 'FR', 'ES', 'NL', 'IT', 'BE', 'PL'), digits(30)).map(([cc, d]) => {
  const bban = d.slice(0, IBAN_LENGTHS[cc]! - 4);
  const numeric = (bban + cc + '00').replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  let rem = 0;
  for (const ch of numeric) rem = (rem * 10 + Number(ch)) % 97;
  const compact = `${cc}${String(98 - rem).padStart(2, '0')}${bban}`;
  return compact.replace(/(.{4})(?=.)/g, '$1 ');
});

const email = fc
  .tuple(chars(6, 'abcdefghijklmnopqrstuvwxyz'), fc.constantFrom('', '.', '_'), chars(4, 'abcdefghijklmnopqrstuvwxyz0123456789'), chars(7, 'abcdefghijklmnopqrstuvwxyz'), fc.constantFrom('com', 'org', 'de', 'co.uk'))
  .map(([a, sep, b, host, tld]) => `${a}${sep}${b}@${host}.${tld}`);

const phone = fc.constantFrom('+44 20 7946 0958', '(415) 555-0132', '+1 415 555 0132', '+33 1 42 68 53 00', '+49 30 901820');

const ipv4 = fc.tuple(fc.integer({ min: 11, max: 223 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).map((p) => p.join('.'));

/**
 * An AWS access key id: 'AKIA' and 16 of A-Z, 2-7, varied enough to pass the rule's entropy floor,
 * with a digit (as 96 % are: a key split by spaces is put back together only if it has one).
 */
const awsKey = chars(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')
  .map((s) => ['AK', 'IA', s].join(''))
  .filter((k) => shannonEntropy(k) >= 3.2 && /\d/.test(k));

/** A GitHub token: 'ghp_' and 36 letters and digits, varied as real ones are (and with a digit, as 99.8 % are). */
const githubToken = chars(36, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789')
  .map((s) => ['gh', 'p_', s].join(''))
  .filter((t) => shannonEntropy(t) >= 3.5 && /\d/.test(t));

// ---------------------------------------------------------------------------------------------
// rewrites

type Rewrite = (value: string, at: number) => string;
const mapChars = (v: string, f: (c: string) => string) => [...v].map(f).join('');
const insertAt = (v: string, at: number, s: string) => {
  const i = 1 + (at % (v.length - 1));
  return v.slice(0, i) + s + v.slice(i);
};

const REWRITES: Record<string, Rewrite> = {
  'lower case': (v) => v.toLowerCase(),
  'a zero-width space inside': (v, at) => insertAt(v, at, '\u200b'),
  'full-width characters': (v) => mapChars(v, (c) => (c > ' ' && c <= '~' ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c)),
  'Arabic-Indic digits': (v) => mapChars(v, (c) => (c >= '0' && c <= '9' ? String.fromCharCode(0x0660 + Number(c)) : c)),
  'percent-encoding': (v, at) => mapChars(v, (c) => (c === '@' || (c.charCodeAt(0) + at) % 3 === 0 ? `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}` : c)),
  'dots as separators': (v) => v.replace(/[ -]/g, '.'),
  'en dashes as separators': (v) => v.replace(/[ -]/g, '\u2013'),
  'an inserted space': (v, at) => insertAt(v.replace(/ /g, ''), at, ' '),
  '4+12 grouping': (v) => {
    const d = v.replace(/ /g, '');
    return d.length === 16 ? `${d.slice(0, 4)} ${d.slice(4)}` : v;
  },
  '"at" and "dot" spelled out': (v, at) =>
    v.replace('@', [' at ', ' [at] ', '(at)', ' (at) '][at % 4]!).replace(/\.(?=[a-z])/g, [' dot ', ' [dot] ', '(dot)', ' dot '][at % 4]!),
};

interface Entity {
  value: fc.Arbitrary<string>;
  /** Kind (PII) or type (secrets) a finding must have. */
  found: (f: Finding) => boolean;
  rewrites: string[];
}

const ALL_WRITTEN = ['a zero-width space inside', 'full-width characters', 'percent-encoding'];
const ENTITIES: Record<string, Entity> = {
  card: { value: printedCard, found: (f) => f.kind === 'credit_card', rewrites: [...ALL_WRITTEN, 'Arabic-Indic digits', 'dots as separators', 'en dashes as separators', 'an inserted space', '4+12 grouping'] },
  ssn: { value: ssn, found: (f) => f.kind === 'us_ssn', rewrites: [...ALL_WRITTEN, 'Arabic-Indic digits', 'dots as separators', 'en dashes as separators'] },
  iban: { value: iban, found: (f) => f.kind === 'iban', rewrites: [...ALL_WRITTEN, 'lower case', 'Arabic-Indic digits', 'an inserted space', 'dots as separators'] },
  email: { value: email, found: (f) => f.kind === 'email', rewrites: [...ALL_WRITTEN, 'lower case', '"at" and "dot" spelled out'] },
  phone: { value: phone, found: (f) => f.kind === 'phone', rewrites: [...ALL_WRITTEN, 'Arabic-Indic digits', 'dots as separators', 'en dashes as separators'] },
  ip: { value: ipv4, found: (f) => f.kind === 'ip_address', rewrites: [...ALL_WRITTEN, 'Arabic-Indic digits'] },
  'GitHub token': { value: githubToken, found: (f) => f.type === 'secret', rewrites: [...ALL_WRITTEN, 'an inserted space'] },
  'AWS key': { value: awsKey, found: (f) => f.type === 'secret', rewrites: [...ALL_WRITTEN, 'lower case', 'Arabic-Indic digits', 'an inserted space'] },
};

const WORDS = ['Please', 'use', 'the', 'value', 'below:', 'thanks,', 'see', 'note', '(ok)', 'and', 'then', '—', 'reply', 'today.'];
const prose = fc.array(fc.constantFrom(...WORDS), { maxLength: 6 }).map((w) => w.join(' '));

describe('scanner evasion: every rewrite of a value is still found, and redaction leaves nothing', () => {
  for (const [name, entity] of Object.entries(ENTITIES)) {
    for (const rewrite of entity.rewrites) {
      it(`${name}: ${rewrite}`, () => {
        fc.assert(
          fc.property(entity.value, fc.nat(), prose, prose, (value, at, before, after) => {
            const written = REWRITES[rewrite]!(value, at);
            const text = `${before} ${written} ${after}`;
            const start = before.length + 1;
            const end = start + written.length;
            const found = scan(text, { injection: false });
            const hit = found.filter((f) => entity.found(f) && f.start < end && f.end > start);
            expect(hit, `${JSON.stringify(written)} in ${JSON.stringify(text)}`).not.toHaveLength(0);
            // Redaction removes the original characters: what is left scans clean of this kind.
            const redacted = redact(text, found);
            expect(scan(redacted, { injection: false }).filter(entity.found), redacted).toEqual([]);
          }),
          { numRuns: 60 },
        );
      });
    }
  }
});

describe('scanner evasion: end to end through scan()', () => {
  it('finds an AWS key split by a zero-width space and an SSN written with dots, and redacts exactly them', () => {
    const key = ['AK', 'IA', 'QX7TV2MB5NRW3KLP'].join('');
    const text = `creds: ${key.slice(0, 9)}\u200b${key.slice(9)} and ssn 512.44.7781.`;
    const found = scan(text, { injection: false });
    expect(found.map((f) => [f.type, text.slice(f.start, f.end)])).toEqual([
      ['secret', `${key.slice(0, 9)}\u200b${key.slice(9)}`],
      ['pii', '512.44.7781'],
    ]);
    expect(redact(text, found)).toBe('creds: [REDACTED:aws-access-key-id] and ssn [REDACTED:us_ssn].');
  });
});

describe('scanner evasion: end to end through a guarded run on Redis', () => {
  const prefix = uniquePrefix('scan-evasion');
  const key = ['AK', 'IA', 'QX7TV2MB5NRW3KLP'].join('');
  let runtime: Runtime | undefined;

  afterEach(async () => {
    await runtime?.close({ timeoutMs: 2000 });
    runtime = undefined;
    await deleteKeys(prefix);
  });

  async function reply(text: string): Promise<Run> {
    const agent = defineAgent({ name: 'clerk', instructions: 'answer', model: new ScriptedModel({ script: () => text }) });
    const policy = compilePolicy(PolicySchema.parse({ version: 1, content: { secrets: { action: 'block', stages: ['output'] }, pii: { action: 'redact', stages: ['output'] } } }));
    runtime = new Runtime({ agents: [agent], transport: new BullMQTransport({ connection: REDIS_URL, prefix }), policy });
    await runtime.startWorkers();
    return runtime.start('clerk', 'what do you have on file?', { principal: { id: 'u1', roles: [] } });
  }

  it('does not deliver a reply with an AWS key split by a zero-width space and an SSN written with dots', async () => {
    const run = await reply(`Here: ${key.slice(0, 9)}\u200b${key.slice(9)} and SSN 512.44.7781.`);
    const failure = await run.result({ timeoutMs: 20_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(RunFailedError);
    // The reply is withheld: the run fails, saying why without the value.
    expect((failure as RunFailedError).status).toBe('failed');
    expect((failure as RunFailedError).reason).toMatch(/reply withheld.*secrets \(aws-access-key-id\): block/);
    expect((failure as RunFailedError).reason).not.toContain(key.slice(9));
  });

  it('redacts an SSN in Arabic-Indic digits and a card grouped 4+12 in a delivered reply', async () => {
    const run = await reply('SSN \u0665\u0661\u0662.\u0664\u0664.\u0667\u0667\u0668\u0661, card 4111 111111111111, thanks.');
    const { output } = await run.result({ timeoutMs: 20_000 });
    expect(output).toBe('SSN [REDACTED:us_ssn], card [REDACTED:credit_card], thanks.');
  });
});

describe('scanner evasion defences: ordinary text stays as it is', () => {
  const kindsIn = (text: string) => scan(text, { injection: false }).map((f) => f.kind);
  it('reads no card into rows of numbers, table lines or hex dumps', () => {
    for (const text of ['row: 5353 0 0 4529 27950 1041 8 7727 0 end', 'qty 18 4958 822825373 302', '00000010  38 32 36 32 35 39 39 31  35 36 32 36 31 34 39 30', 'tracking 1598 5558 7607 6036 4400 50'])
      expect(kindsIn(text), text).not.toContain('credit_card');
  });
  it('reads no IBAN into a word before a number', () => {
    for (const text of ['Invoice No 7918677052962', 'Invoice No.8163592047871', 'at 9457 0718 8180 8379 00']) expect(kindsIn(text), text).not.toContain('iban');
  });
  it('reads no address into prose or code with "at", "dot" or "@"', () => {
    for (const text of ['We look at the dot product of two vectors.', 'y = x @ self.weight', 'Meet (at) Hotel.Central tonight', 'Visit us at acme dot com', 'We arrived at noon (dot) then left.'])
      expect(kindsIn(text), text).not.toContain('email');
  });
  it('reads no AWS key into a mixed-case identifier, and redacts a token but not the word after it', () => {
    expect(kindsIn('const x = AsiaPacificCustomers; y = accaMemberStatusCode')).toEqual([]);
    const token = ['gh', 'p_', 'aZ3kL9mQ2xV7bN4pR8tY1wE5uI6oS0dF2gH4'].join('');
    const text = `GITHUB_TOKEN=${token} is ok`;
    expect(redact(text, scan(text, { injection: false }))).toBe('GITHUB_TOKEN=[REDACTED:github-token] is ok');
  });
});

describe('scanner evasion, second round: JSON, other scripts, brackets, deeper encodings', () => {
  const key = ['AK', 'IA', 'QX7TV2MB5NRW3KLP'].join('');
  const redacted = (text: string) => redact(text, scan(text, { injection: false }));
  it('finds values at the start of a line inside a JSON string, and redacts only them', () => {
    expect(redacted(`{"k":"\\n${key}"}`)).toBe('{"k":"\\n[REDACTED:aws-access-key-id]"}');
    expect(redacted('{"e":"x\\tjane.doe@example.com"}')).toBe('{"e":"x\\t[REDACTED:email]"}');
    expect(redacted(JSON.stringify({ body: '{"e":"jane.doe\\u0040example.com"}' }))).toBe(JSON.stringify({ body: '{"e":"[REDACTED:email]"}' }));
  });
  it('finds values glued to letters of scripts written without spaces before numbers', () => {
    expect(redacted('番号4532 0151 1283 0366です')).toBe('番号[REDACTED:credit_card]です');
    expect(redacted('jane.doe@example.com으로 연락주세요')).toBe('[REDACTED:email]으로 연락주세요');
  });
  it('finds a phone in parentheses, a split key on a later line, and three levels of encoding', () => {
    expect(redacted('Jane (+44 20 7946 0958), Bob')).toBe('Jane ([REDACTED:phone]), Bob');
    expect(redacted(`first line\n${key.slice(0, 8)} ${key.slice(8)}`)).toBe('first line\n[REDACTED:aws-access-key-id]');
    expect(redacted('mail jane%252540example.com')).toBe('mail [REDACTED:email]');
    expect(redacted('host 203[&#46;]0[&#46;]113[&#46;]77')).toBe('host [REDACTED:ip_address]');
    expect(redacted('mail j\u0430\u0332ne@example.com')).toBe('mail [REDACTED:email]');
  });
  it('reads no IBAN into a UUID and no phone into bare digits in another script', () => {
    expect(scan('id be247516-3487-4f87-bdb6-5a417499f046', { injection: false })).toEqual([]);
    expect(scan('رقم الطلب ٥٨٢٤٤٧٦٨٣ بتاريخ 23/11', { injection: false })).toEqual([]);
  });
});
