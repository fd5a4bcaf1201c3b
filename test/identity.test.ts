import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { createJwtVerifier, IdentityError, localDevelopmentPrincipal, type JwtVerifierOptions } from '../runtime/identity/jwt-verifier.js';

const ISSUER = 'https://id.example.test/';
const AUDIENCE = 'palisade-api';
const SECRET = 'a-shared-secret-of-at-least-32-bytes!!';

interface Keys {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

let signing: Keys; // published in the JWKS under kid 'k1'
let rotated: Keys; // published in the second JWKS, without a kid
let stranger: Keys; // never published
let rsa: Keys; // used as a PEM public key
let server: Server;
let jwksUrl: string;
let jwksStatus = 200;

function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const s = createServer(handler);
  return new Promise((resolve) => {
    s.listen(0, '127.0.0.1', () => resolve({ server: s, base: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }));
  });
}

function close(s: Server): Promise<void> {
  return new Promise((resolve) => {
    s.closeAllConnections();
    s.close(() => resolve());
  });
}

beforeAll(async () => {
  signing = await generateKeyPair('ES256');
  rotated = await generateKeyPair('ES256');
  stranger = await generateKeyPair('ES256');
  rsa = await generateKeyPair('RS256', { extractable: true });
  const published: JWK = { ...(await exportJWK(signing.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const noKid = [await exportJWK(signing.publicKey), await exportJWK(rotated.publicKey)];
  const started = await listen((req, res) => {
    if (jwksStatus !== 200) {
      res.writeHead(jwksStatus).end('unavailable');
      return;
    }
    const body = req.url === '/rotation/jwks.json' ? { keys: noKid } : { keys: [published] };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  server = started.server;
  jwksUrl = `${started.base}/.well-known/jwks.json`;
});

afterAll(async () => {
  await close(server);
});

const now = (): number => Math.floor(Date.now() / 1000);

interface SignOptions {
  key?: CryptoKey | Uint8Array;
  alg?: string;
  kid?: string | null;
  issuer?: string | null;
  audience?: string | string[] | null;
  subject?: string | null;
  exp?: number | null;
  nbf?: number;
  iat?: number;
}

async function sign(claims: JWTPayload = {}, o: SignOptions = {}): Promise<string> {
  const alg = o.alg ?? 'ES256';
  const header: { alg: string; typ: string; kid?: string } = { alg, typ: 'JWT' };
  if (o.kid !== null) header.kid = o.kid ?? 'k1';
  const jwt = new SignJWT(claims).setProtectedHeader(header).setIssuedAt(o.iat ?? now());
  if (o.issuer !== null) jwt.setIssuer(o.issuer ?? ISSUER);
  if (o.audience !== null) jwt.setAudience(o.audience ?? AUDIENCE);
  if (o.subject !== null) jwt.setSubject(o.subject ?? 'user-42');
  if (o.exp !== null) jwt.setExpirationTime(o.exp ?? now() + 300);
  if (o.nbf !== undefined) jwt.setNotBefore(o.nbf);
  return jwt.sign(o.key ?? signing.privateKey);
}

function jwks(extra: Partial<JwtVerifierOptions> = {}): JwtVerifierOptions {
  return { issuer: ISSUER, audience: AUDIENCE, jwksUrl, ...extra };
}

async function rejection(promise: Promise<unknown>): Promise<IdentityError> {
  const error = await promise.then(
    () => {
      throw new Error('expected the token to be rejected');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(IdentityError);
  return error as IdentityError;
}

/** Rejects with `code`, and the error says nothing of the token. */
async function expectRejected(verify: (token: string) => Promise<unknown>, token: string, code: IdentityError['code']): Promise<IdentityError> {
  const error = await rejection(verify(token));
  expect(error.code).toBe(code);
  const shown = [error.message, String(error), error.stack ?? '', JSON.stringify(error)].join('\n');
  expect(shown).not.toContain(token);
  for (const part of token.split('.')) if (part.length >= 8) expect(shown).not.toContain(part);
  return error;
}

describe('createJwtVerifier with a JWKS', () => {
  it('turns a valid token into a frozen principal: roles, tenant, attrs; unknown claims ignored', async () => {
    const verify = createJwtVerifier(jwks({ claims: { attrs: ['email', 'level', 'mfa', 'groups', 'missing'] } }));
    const token = await sign({
      roles: ['support', 'admin', 'support'],
      tenant: 'acme',
      email: 'ada@example.test',
      level: 3,
      mfa: true,
      groups: ['a', 'b'], // not a scalar: not copied
      favourite_colour: 'teal', // not mapped: ignored
    });
    const principal = await verify(token);
    expect(principal).toEqual({
      id: 'user-42',
      roles: ['support', 'admin'],
      tenant: 'acme',
      attrs: { email: 'ada@example.test', level: 3, mfa: true },
    });
    expect(Object.isFrozen(principal)).toBe(true);
    expect(Object.isFrozen(principal.roles)).toBe(true);
    expect(Object.isFrozen(principal.attrs)).toBe(true);
  });

  it('defaults to no roles, no tenant, no attrs', async () => {
    const principal = await createJwtVerifier(jwks())(await sign());
    expect(principal).toEqual({ id: 'user-42', roles: [], attrs: {} });
  });

  it('reads roles from a dotted path (Keycloak realm_access.roles)', async () => {
    const verify = createJwtVerifier(jwks({ claims: { roles: 'realm_access.roles' } }));
    const principal = await verify(await sign({ realm_access: { roles: ['agent', 'reviewer'] }, roles: ['ignored'] }));
    expect(principal.roles).toEqual(['agent', 'reviewer']);
  });

  it('matches a claim whose own name contains dots before trying a path', async () => {
    const verify = createJwtVerifier(jwks({ claims: { roles: 'https://palisade.dev/roles' } }));
    expect((await verify(await sign({ 'https://palisade.dev/roles': ['ops'] }))).roles).toEqual(['ops']);
  });

  it('splits a space-separated scope claim into roles', async () => {
    const verify = createJwtVerifier(jwks({ claims: { roles: 'scope' } }));
    expect((await verify(await sign({ scope: 'runs:read  runs:write\tadmin' }))).roles).toEqual(['runs:read', 'runs:write', 'admin']);
  });

  it('maps custom id and tenant claims', async () => {
    const verify = createJwtVerifier(jwks({ claims: { id: 'oid', tenant: 'org.id' } }));
    const principal = await verify(await sign({ oid: 'object-7', org: { id: 'globex' } }));
    expect(principal).toMatchObject({ id: 'object-7', tenant: 'globex' });
  });

  it('accepts any of several issuers and audiences', async () => {
    const verify = createJwtVerifier(jwks({ issuer: ['https://other.test/', ISSUER], audience: ['x', AUDIENCE] }));
    expect((await verify(await sign({}, { audience: ['unrelated', AUDIENCE] }))).id).toBe('user-42');
  });

  it('rejects an expired token, and tolerates small clock skew', async () => {
    const verify = createJwtVerifier(jwks());
    const error = await expectRejected(verify, await sign({}, { exp: now() - 120, iat: now() - 600 }), 'expired');
    expect(error.message).toMatch(/expired/);
    expect((await verify(await sign({}, { exp: now() - 5 }))).id).toBe('user-42');
  });

  it('rejects a token that is not valid yet (nbf)', async () => {
    const error = await expectRejected(createJwtVerifier(jwks()), await sign({}, { nbf: now() + 600 }), 'expired');
    expect(error.message).toMatch(/not valid yet/);
  });

  it('rejects a token older than maxTokenAgeSec', async () => {
    const verify = createJwtVerifier(jwks({ maxTokenAgeSec: 60 }));
    await expectRejected(verify, await sign({}, { iat: now() - 3600 }), 'expired');
    expect((await verify(await sign())).id).toBe('user-42');
  });

  it('rejects a wrong issuer', async () => {
    await expectRejected(createJwtVerifier(jwks()), await sign({}, { issuer: 'https://evil.test/' }), 'wrong_issuer');
  });

  it('rejects a wrong audience', async () => {
    await expectRejected(createJwtVerifier(jwks()), await sign({}, { audience: 'another-api' }), 'wrong_audience');
  });

  it('rejects a token signed by another key under the published kid', async () => {
    await expectRejected(createJwtVerifier(jwks()), await sign({}, { key: stranger.privateKey }), 'invalid_signature');
  });

  it('rejects a token signed by another key under an unknown kid', async () => {
    await expectRejected(createJwtVerifier(jwks()), await sign({}, { key: stranger.privateKey, kid: 'k-unknown' }), 'invalid_signature');
  });

  it('rejects a tampered payload', async () => {
    const [header, , signature] = (await sign({ roles: ['user'] })).split('.');
    const forged = base64url.encode(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: 'user-42', exp: now() + 300, roles: ['admin'] }));
    await expectRejected(createJwtVerifier(jwks()), `${header}.${forged}.${signature}`, 'invalid_signature');
  });

  it("rejects an unsigned 'alg: none' token", async () => {
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }));
    const payload = base64url.encode(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: 'admin', exp: now() + 300, roles: ['admin'] }));
    const token = `${header}.${payload}.`;
    await expectRejected(createJwtVerifier(jwks()), token, 'invalid_signature');
    await expectRejected(createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, secret: SECRET }), token, 'invalid_signature');
  });

  it('rejects an HS256 token signed with a guessable secret when keys are expected (algorithm confusion)', async () => {
    const token = await sign({}, { alg: 'HS256', key: new TextEncoder().encode(SECRET) });
    await expectRejected(createJwtVerifier(jwks()), token, 'invalid_signature');
  });

  it('rejects a token without sub, and one without exp', async () => {
    const verify = createJwtVerifier(jwks());
    const noSub = await expectRejected(verify, await sign({}, { subject: null }), 'missing_claim');
    expect(noSub.message).toMatch(/'sub'/);
    const noExp = await expectRejected(verify, await sign({}, { exp: null }), 'missing_claim');
    expect(noExp.message).toMatch(/'exp'/);
  });

  it('rejects a token without a tenant when the issuer must name one', async () => {
    const verify = createJwtVerifier(jwks({ requireTenant: true }));
    const none = await expectRejected(verify, await sign({}), 'missing_claim');
    expect(none.message).toMatch(/'tenant'/);
    await expectRejected(verify, await sign({ tenant: '' }), 'missing_claim');
    await expect(verify(await sign({ tenant: 'acme' }))).resolves.toMatchObject({ tenant: 'acme' });
    await expect(createJwtVerifier(jwks())(await sign({}))).resolves.not.toHaveProperty('tenant');
  });

  it('rejects malformed input without echoing it', async () => {
    const verify = createJwtVerifier(jwks());
    await expectRejected(verify, 'definitely-not-a-jwt-token', 'malformed');
    expect((await rejection(verify(''))).code).toBe('malformed');
    const token = await sign();
    const error = await rejection(verify(`Bearer ${token}`));
    expect(error.code).toBe('malformed');
    expect(error.message).not.toContain(token);
    await expectRejected(verify, 'x'.repeat(40_000), 'malformed');
  });

  it('rejects claims of the wrong shape as malformed', async () => {
    const verify = createJwtVerifier(jwks());
    await expectRejected(verify, await sign({ roles: [1, 2] }), 'malformed');
    await expectRejected(verify, await sign({ roles: { admin: true } }), 'malformed');
    await expectRejected(verify, await sign({ tenant: 7 }), 'malformed');
    await expectRejected(verify, await sign({ roles: ['x'.repeat(200)] }), 'malformed');
  });

  it('tries each key when several fit a token without kid (rotation)', async () => {
    const verify = createJwtVerifier(jwks({ jwksUrl: jwksUrl.replace('/.well-known/jwks.json', '/rotation/jwks.json') }));
    expect((await verify(await sign({}, { kid: null, key: rotated.privateKey }))).id).toBe('user-42');
    expect((await verify(await sign({}, { kid: null, key: signing.privateKey }))).id).toBe('user-42');
    await expectRejected(verify, await sign({}, { kid: null, key: stranger.privateKey }), 'invalid_signature');
  });

  it('reports key_unavailable when the JWKS endpoint fails', async () => {
    jwksStatus = 500;
    try {
      await expectRejected(createJwtVerifier(jwks()), await sign(), 'key_unavailable');
    } finally {
      jwksStatus = 200;
    }
  });

  it('reports key_unavailable when the JWKS server is gone', async () => {
    const { server: doomed, base } = await listen((_req, res) => res.end('{}'));
    await close(doomed);
    const verify = createJwtVerifier(jwks({ jwksUrl: `${base}/jwks.json` }));
    const error = await expectRejected(verify, await sign(), 'key_unavailable');
    expect(error.message).toMatch(/could not be obtained/);
  });
});

describe('createJwtVerifier with a shared secret or a PEM key', () => {
  it('verifies HS256 tokens with a shared secret', async () => {
    const verify = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, secret: SECRET, claims: { roles: 'scope' } });
    const principal = await verify(await sign({ scope: 'read write' }, { alg: 'HS256', key: new TextEncoder().encode(SECRET) }));
    expect(principal).toEqual({ id: 'user-42', roles: ['read', 'write'], attrs: {} });
    const wrong = await sign({}, { alg: 'HS256', key: new TextEncoder().encode('another-secret-of-at-least-32-bytes!!') });
    await expectRejected(verify, wrong, 'invalid_signature');
    await expectRejected(verify, await sign(), 'invalid_signature'); // ES256 token: algorithm not accepted
  });

  it('accepts a Uint8Array secret', async () => {
    const bytes = new TextEncoder().encode(SECRET);
    const verify = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, secret: bytes });
    expect((await verify(await sign({}, { alg: 'HS256', key: bytes }))).id).toBe('user-42');
  });

  it('verifies tokens with a PEM public key', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const verify = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, publicKey: pem, claims: { tenant: 'tid' } });
    expect(await verify(await sign({ tid: 't-1' }, { alg: 'RS256', key: rsa.privateKey }))).toEqual({ id: 'user-42', roles: [], tenant: 't-1', attrs: {} });
    await expectRejected(verify, await sign({}, { alg: 'RS256', key: (await generateKeyPair('RS256')).privateKey }), 'invalid_signature');
    await expectRejected(verify, await sign(), 'invalid_signature'); // ES256: the RSA key narrows algorithms to RS*/PS*
  });

  it('verifies EdDSA tokens with an Ed25519 PEM key', async () => {
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    const verify = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, publicKey: await exportSPKI(ed.publicKey) });
    expect((await verify(await sign({}, { alg: 'EdDSA', key: ed.privateKey }))).id).toBe('user-42');
  });
});

describe('createJwtVerifier options', () => {
  const base = { issuer: ISSUER, audience: AUDIENCE };

  it('requires exactly one key source', () => {
    expect(() => createJwtVerifier({ ...base })).toThrow(/exactly one key source/);
    expect(() => createJwtVerifier({ ...base, jwksUrl: 'https://id.example.test/jwks', secret: SECRET })).toThrow(/exactly one key source/);
  });

  it("never accepts 'none'", () => {
    expect(() => createJwtVerifier({ ...base, jwksUrl: 'https://id.example.test/jwks', algorithms: ['ES256', 'none'] })).toThrow(/none/);
    expect(() => createJwtVerifier({ ...base, secret: SECRET, algorithms: ['NONE'] })).toThrow(/none/);
  });

  it('keeps HMAC and public-key algorithms apart', () => {
    expect(() => createJwtVerifier({ ...base, jwksUrl: 'https://id.example.test/jwks', algorithms: ['HS256'] })).toThrow(/secret/);
    expect(() => createJwtVerifier({ ...base, secret: SECRET, algorithms: ['RS256'] })).toThrow(/HMAC/);
  });

  it('rejects weak or unusable keys and insecure JWKS URLs', async () => {
    expect(() => createJwtVerifier({ ...base, secret: 'short' })).toThrow(/at least 32 bytes/);
    expect(() => createJwtVerifier({ ...base, jwksUrl: 'http://id.example.test/jwks' })).toThrow(/https/);
    expect(() => createJwtVerifier({ ...base, jwksUrl: 'not a url' })).toThrow(/valid URL/);
    expect(() => createJwtVerifier({ ...base, publicKey: 'garbage' })).toThrow(/PEM/);
    const pem = await exportSPKI(rsa.publicKey);
    expect(() => createJwtVerifier({ ...base, publicKey: pem, algorithms: ['ES256'] })).toThrow(/cannot verify/);
  });

  it('validates issuer, audience and durations', () => {
    const key = { jwksUrl: 'https://id.example.test/jwks' };
    expect(() => createJwtVerifier({ ...base, ...key, issuer: '' })).toThrow(/issuer/);
    expect(() => createJwtVerifier({ ...base, ...key, audience: [] })).toThrow(/audience/);
    expect(() => createJwtVerifier({ ...base, ...key, clockToleranceSec: -1 })).toThrow(/clockToleranceSec/);
    expect(() => createJwtVerifier({ ...base, ...key, maxTokenAgeSec: 0 })).toThrow(/maxTokenAgeSec/);
    expect(() => createJwtVerifier({ ...base, ...key, claims: { roles: '' } })).toThrow(/claims.roles/);
  });
});

describe('localDevelopmentPrincipal', () => {
  it('builds a frozen principal and says it is not verified', () => {
    const { principal, warning } = localDevelopmentPrincipal({ id: 'dev', roles: ['admin'], tenant: 'local' });
    expect(principal).toEqual({ id: 'dev', roles: ['admin'], tenant: 'local', attrs: {} });
    expect(Object.isFrozen(principal)).toBe(true);
    expect(warning).toMatch(/NOT VERIFIED/);
    expect(warning).toContain("user 'dev'");
  });

  it('defaults roles and rejects an invalid identity', () => {
    expect(localDevelopmentPrincipal({ id: 'dev' }).principal).toEqual({ id: 'dev', roles: [], attrs: {} });
    expect(() => localDevelopmentPrincipal({ id: '' })).toThrow(IdentityError);
  });

  it('escapes control characters in the warning', () => {
    expect(localDevelopmentPrincipal({ id: 'dev\u001b[31m' }).warning).not.toContain('\u001b');
  });
});
