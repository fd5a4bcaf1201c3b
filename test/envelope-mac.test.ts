import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { label } from '../agents/label.js';
import { EnvelopeAuth, sentForm } from '../runtime/identity/envelope-auth.js';
import { EnvelopeSchema, type Envelope } from '../runtime/envelope.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import { PrincipalSchema } from '../agents/principal.js';
import { sealedStart } from './support/envelopes.js';

/** What a job's data goes through between two workers: BullMQ writes it as JSON text and parses it back. */
const overRedis = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** JSON values with what could upset a byte-exact round trip: integer-like and odd keys, lone surrogates, -0. */
const key = fc.oneof(fc.string({ unit: 'binary', maxLength: 6 }), fc.nat({ max: 1000 }).map(String), fc.constantFrom('__proto__', 'constructor', '-1', '01', '1.5'));
const leaf = fc.oneof(fc.string({ unit: 'binary', maxLength: 12 }), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(-0));
const json = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(key, tie('value'), { maxKeys: 5 })),
})).value;

describe('envelope and checkpoint MACs over the JSON as sent', () => {
  let edge: EnvelopeAuth;
  let a: EnvelopeAuth;

  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'palisade-mac-'));
    await generateKeys(dir, [{ name: 'a', handoffs: [], delegates: [] }]);
    edge = new EnvelopeAuth(await loadKeyring(dir, [EDGE]));
    a = new EnvelopeAuth(await loadKeyring(dir, ['a']));
  });

  it('JSON.stringify writes back exactly what it wrote, once parsed (the property the MACs rest on)', () => {
    fc.assert(
      fc.property(json, (value) => {
        const sent = JSON.stringify(value);
        expect(JSON.stringify(JSON.parse(sent))).toBe(sent);
      }),
      { numRuns: 2000 },
    );
  });

  const sealed = (over: { attrs: Record<string, unknown>; text: string }): Envelope => {
    const runId = crypto.randomUUID();
    const now = Date.now();
    // As the edge does: the principal is validated before anything is sealed.
    const principal = PrincipalSchema.parse({ id: 'ada', roles: ['customer'], attrs: over.attrs });
    return sealedStart(edge, { runId, receiver: 'a', principal, input: over.text, now });
  };
  const attrs = fc.dictionary(key, fc.oneof(fc.string({ unit: 'binary', maxLength: 8 }), fc.integer(), fc.boolean()), { maxKeys: 4 });
  const text = fc.string({ unit: 'binary', maxLength: 64 });

  it('an envelope that crossed Redis as sent is authentic, whatever its text and principal attributes hold', () => {
    fc.assert(
      fc.property(attrs, text, (attributes, content) => {
        const raw = overRedis(sealed({ attrs: attributes, text: content }));
        const parsed = EnvelopeSchema.safeParse(raw);
        if (!parsed.success) return; // a shape the worker refuses before any MAC is checked
        expect(a.check(raw as unknown as Record<string, unknown>, parsed.data)).toBeUndefined();
      }),
      { numRuns: 300 },
    );
  });

  it('an envelope with any value changed in Redis is refused', () => {
    fc.assert(
      fc.property(text, fc.constantFrom('content', 'principal', 'label', 'hops', 'budget'), fc.string({ minLength: 1, maxLength: 8 }), (content, field, extra) => {
        const raw = overRedis(sealed({ attrs: {}, text: content })) as unknown as Record<string, unknown>;
        const changed: Record<string, unknown> = {
          ...raw,
          ...(field === 'content' ? { messages: [{ role: 'user', content: `${content}${extra}` }] } : {}),
          ...(field === 'principal' ? { principal: { id: 'ada', roles: ['customer', extra], attrs: {} } } : {}),
          ...(field === 'label' ? { label: { ...label(), categories: [extra] } } : {}),
          ...(field === 'hops' ? { hops: extra.length } : {}),
          ...(field === 'budget' ? { budget: { tokens: 1000 - extra.length } } : {}),
        };
        const parsed = EnvelopeSchema.safeParse(changed);
        if (!parsed.success) return;
        expect(a.check(overRedis(changed), parsed.data)).toMatch(/not authentic|differs|exceeds/);
      }),
      { numRuns: 300 },
    );
  });

  it('a copy with the same values in another key order is refused, not believed (fail closed)', () => {
    const raw = overRedis(sealed({ attrs: { tier: 'gold' }, text: 'hello' })) as unknown as Record<string, unknown>;
    const reordered = Object.fromEntries(Object.entries(raw).reverse());
    expect(a.check(reordered, EnvelopeSchema.parse(reordered))).toMatch(/the envelope is not authentic/);
  });

  it('a checkpoint is authentic as parsed back, and refused with any change', () => {
    fc.assert(
      fc.property(json, fc.uuid(), (progress, messageId) => {
        const saved = { progress: { state: progress } };
        const mac = a.sealCheckpoint('a', messageId, saved.progress);
        const back = overRedis(saved);
        expect(a.checkCheckpoint('a', messageId, back.progress, mac)).toBeUndefined();
        expect(a.checkCheckpoint('a', messageId, { state: progress, more: 1 }, mac)).toMatch(/checkpoint is not authentic/);
        expect(a.checkCheckpoint('a', `${messageId}x`, back.progress, mac)).toMatch(/checkpoint is not authentic/);
      }),
      { numRuns: 500 },
    );
  });
});

describe('sentForm: the MAC text and the envelope size from one serialisation', () => {
  it('gives exactly the size JSON.stringify gives the whole envelope, and the text without its MAC, wherever the MAC stands', () => {
    const value = fc.jsonValue();
    fc.assert(
      fc.property(fc.dictionary(fc.string(), value), fc.option(value, { nil: undefined }), fc.nat(), (fields, auth, at) => {
        const entries = Object.entries(fields).filter(([k]) => k !== 'auth');
        if (auth !== undefined) entries.splice(at % (entries.length + 1), 0, ['auth', auth]);
        const envelope = Object.fromEntries(entries);
        const { text, bytes } = sentForm(envelope);
        expect(bytes).toBe(Buffer.byteLength(JSON.stringify(envelope)));
        expect(text).toBe(JSON.stringify({ ...envelope, auth: undefined }));
      }),
      { numRuns: 500 },
    );
  });
});
