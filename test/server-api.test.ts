import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSupportAgents } from '../examples/support/system.js';
import { loadPolicy, type LoadedPolicy } from '../guards/policy/load-policy.js';
import { FileAnchorStore } from '../runtime/audit/anchors.js';
import { loadAuditKeys } from '../runtime/audit/audit-keys.js';
import { EDGE, generateKeys, loadKeyring, type Keyring } from '../runtime/identity/keyring.js';
import { Runtime } from '../runtime/runtime.js';
import { AuthConfigError, createAuthenticator, hashApiKey, loadAuthConfig, type Authenticator } from '../runtime/server/auth.js';
import { createServer } from '../runtime/server/server.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { runAuditCli } from './support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const ISSUER = 'https://id.example.test/';
const AUDIENCE = 'palisade-edge';
const JAEGER = 'http://jaeger.example.test:16686';

/** API keys of the test principals; the server knows only their hashes. */
const KEYS = {
  ada: 'pk-ada-0123456789abcdef',
  grace: 'pk-grace-0123456789abcdef',
  finLee: 'pk-fin-lee-0123456789abcdef',
  ops: 'pk-ops-0123456789abcdef',
  auditor: 'pk-auditor-0123456789abcdef',
  acmeAuditor: 'pk-acme-auditor-0123456789abcdef',
  canceller: 'pk-canceller-0123456789abcdef',
} as const;

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface SseEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}

/** Reads an SSE response into events; `stop` says when to hang up (the client going away). */
async function readSse(response: Response, stop?: (e: SseEvent) => boolean, abort?: AbortController): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return events;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = Object.fromEntries(frame.split('\n').filter((l) => !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
        if (fields.data === undefined) continue;
        const event = { id: fields.id ?? '', event: fields.event ?? 'message', data: JSON.parse(fields.data) as Record<string, unknown> };
        events.push(event);
        if (stop?.(event)) {
          abort?.abort();
          return events;
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function until<T>(probe: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function listenHttp(handler: Parameters<typeof createHttpServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createHttpServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })));
}

describe('palisade serve: the HTTP edge', () => {
  const prefix = uniquePrefix('server-api');
  const cleanup: Array<() => Promise<unknown>> = [];
  let dir: string;
  let policy: LoadedPolicy;
  let edgeKeys: Keyring;
  let audit: Pick<Parameters<typeof createServer>[0], 'auditKeys' | 'anchors'>;
  let authenticate: Authenticator;
  let app: FastifyInstance;
  let base: string;
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey };
  let jwksUrl: string;

  const sign = (claims: Record<string, unknown>, options: { audience?: string; expiresAt?: number } = {}) =>
    new SignJWT({ roles: ['customer'], ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience(options.audience ?? AUDIENCE)
      .setSubject(String(claims.sub ?? 'jwt-user'))
      .setIssuedAt()
      .setExpirationTime(options.expiresAt ?? Math.floor(Date.now() / 1000) + 600)
      .sign(signing.privateKey);

  /** A server on this file's prefix, as `palisade serve` builds it. */
  const edge = (extra: Partial<Parameters<typeof createServer>[0]> = {}) =>
    createServer({ authenticate, redisUrl: REDIS_URL, prefix, policy, keys: edgeKeys, ...audit, jaegerUrl: JAEGER, eventPollMs: 100, auditVerifyReuseMs: 0, rateLimit: { max: 10_000, windowMs: 60_000 }, ...extra });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-server-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    cleanup.push(() => deleteKeys(prefix));

    // The issuer's keys, published at a JWKS URL like any OIDC provider's.
    signing = await generateKeyPair('ES256');
    const jwks = { keys: [{ ...(await exportJWK(signing.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
    const issuer = await listenHttp((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
    jwksUrl = `${issuer.url}/jwks.json`;
    cleanup.push(() => new Promise((resolve) => (issuer.server.closeAllConnections(), issuer.server.close(resolve))));

    // The edge's operator and auditor roles, next to the support desk's own.
    const loaded = await loadPolicy('examples/support/policy.yaml');
    policy = { ...loaded, policy: { ...loaded.policy, roles: { ...loaded.policy.roles, operator: ['read:runs', 'cancel:runs', 'rollback:runs'], auditor: ['read:audit'], canceller: ['cancel:runs'] } } };

    const agents = createSupportAgents();
    await generateKeys(join(dir, 'keys'), agents);
    edgeKeys = await loadKeyring(join(dir, 'keys'), [EDGE]);
    // The writers' public audit keys and the anchoring key, as `palisade audit keys` writes them.
    expect((await runAuditCli(['keys', '--keys', join(dir, 'keys')])).code).toBe(0);
    const publicKeys = await loadAuditKeys(join(dir, 'keys', 'audit.pub.json'));
    const { anchorSigner } = await loadAuditKeys(join(dir, 'keys', 'anchor.key.json'));
    audit = { auditKeys: publicKeys, anchors: { store: new FileAnchorStore(join(dir, 'anchors.jsonl')), keys: publicKeys.anchorKeys, signer: anchorSigner!, everyMs: 3_600_000 } };
    // Workers in their own runtime, with their own keys: the edge holds none of theirs.
    const workers = new Runtime({ agents, policy: loaded, keys: await loadKeyring(join(dir, 'keys'), agents.map((a) => a.name)), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    await workers.startWorkers();
    cleanup.push(() => workers.close({ timeoutMs: 1000 }));

    const authFile = join(dir, 'auth.yaml');
    await writeFile(
      authFile,
      [
        'apiKeys:',
        `  - { sha256: ${hashApiKey(KEYS.ada)}, principal: { id: ada, roles: [customer] } }`,
        `  - { sha256: ${hashApiKey(KEYS.grace)}, principal: { id: grace, roles: [customer] } }`,
        `  - { sha256: ${hashApiKey(KEYS.finLee)}, principal: { id: fin-lee, roles: [finance] } }`,
        `  - { sha256: ${hashApiKey(KEYS.ops)}, principal: { id: ops-1, roles: [operator] } }`,
        `  - { sha256: ${hashApiKey(KEYS.auditor)}, principal: { id: aud-1, roles: [auditor] } }`,
        `  - { sha256: ${hashApiKey(KEYS.acmeAuditor)}, principal: { id: aud-acme, roles: [auditor], tenant: acme } }`,
        `  - { sha256: ${hashApiKey(KEYS.canceller)}, principal: { id: night-shift, roles: [canceller] } }`,
        'jwt:',
        `  issuer: ${ISSUER}`,
        `  audience: ${AUDIENCE}`,
        `  jwksUrl: ${jwksUrl}`,
        '',
      ].join('\n'),
    );
    const { config, verifier } = await loadAuthConfig(authFile);
    authenticate = createAuthenticator(config, verifier);

    app = await edge();
    cleanup.push(() => app.close());
    base = await app.listen({ port: 0, host: '127.0.0.1' });
  });

  afterAll(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  describe('authentication', () => {
    it('refuses a request without credentials, with a bearer challenge and the JSON error shape', async () => {
      const res = await app.inject({ method: 'GET', url: '/v1/me' });
      expect(res.statusCode).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="palisade"/);
      expect(res.json()).toEqual({ error: { code: 'unauthenticated', message: expect.stringContaining('Authorization: Bearer') } });
    });

    it('decides on the matched route, so an encoded path does not slip past authentication', async () => {
      // The router decodes `%76` to `v` and matches /v1/me.
      const res = await app.inject({ method: 'GET', url: '/%761/me' });
      expect(res.statusCode).toBe(401);
    });

    it('refuses an unknown API key and a header that is not Bearer', async () => {
      const wrong = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer('pk-ada-0123456789abcdeX') });
      expect(wrong.statusCode).toBe(401);
      expect(wrong.json().error.code).toBe('invalid_credentials');
      const basic = await app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: `Basic ${Buffer.from('ada:pw').toString('base64')}` } });
      expect(basic.statusCode).toBe(401);
      expect(basic.json().error.code).toBe('invalid_credentials');
    });

    it('takes the principal from a valid API key and from a valid JWT of the configured issuer', async () => {
      const key = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(KEYS.finLee) });
      expect(key.json()).toEqual({ id: 'fin-lee', roles: ['finance'], attrs: {} });
      const token = await sign({ sub: 'jwt-bob', roles: ['support_agent'], tenant: 'acme' });
      const jwt = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
      expect(jwt.statusCode).toBe(200);
      expect(jwt.json()).toEqual({ id: 'jwt-bob', roles: ['support_agent'], tenant: 'acme', attrs: {} });
    });

    it('refuses malformed, expired and wrongly addressed JWTs with distinct codes, never echoing the token', async () => {
      const malformed = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer('bm90LWpzb24.e30.c2ln') });
      expect(malformed.statusCode).toBe(401);
      expect(malformed.json().error).toMatchObject({ code: 'invalid_credentials', details: { reason: 'malformed' } });

      const expiredToken = await sign({ sub: 'jwt-bob' }, { expiresAt: Math.floor(Date.now() / 1000) - 3600 });
      const expired = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(expiredToken) });
      expect(expired.statusCode).toBe(401);
      expect(expired.json().error.code).toBe('expired_credentials');
      expect(expired.body).not.toContain(expiredToken);

      const elsewhere = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(await sign({ sub: 'jwt-bob' }, { audience: 'another-api' })) });
      expect(elsewhere.statusCode).toBe(401);
      expect(elsewhere.json().error).toMatchObject({ code: 'invalid_credentials', details: { reason: 'wrong_audience' } });
    });

    it('answers 503 when the issuer’s key set cannot be fetched', async () => {
      const gone = await listenHttp((_req, res) => res.writeHead(500).end());
      const down = `${gone.url}/jwks.json`;
      await new Promise((resolve) => (gone.server.closeAllConnections(), gone.server.close(resolve)));
      const file = join(dir, 'auth-down.json');
      await writeFile(file, JSON.stringify({ jwt: { issuer: ISSUER, audience: AUDIENCE, jwksUrl: down } }));
      const { config, verifier } = await loadAuthConfig(file);
      const other = await edge({ authenticate: createAuthenticator(config, verifier) });
      try {
        const res = await other.inject({ method: 'GET', url: '/v1/me', headers: bearer(await sign({ sub: 'jwt-bob' })) });
        expect(res.statusCode).toBe(503);
        expect(res.json().error.code).toBe('identity_unavailable');
      } finally {
        await other.close();
      }
    });

    it('names the file and each field when the auth config is wrong', async () => {
      const error = await loadAuthConfig('test/fixtures/server-auth-bad.yaml').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AuthConfigError);
      expect((error as Error).message).toMatch(/^test\/fixtures\/server-auth-bad\.yaml: /);
      expect((error as Error).message).toContain('apiKeys.0.sha256: must be the SHA-256 of the key');
      expect((error as Error).message).toContain('apiKeys.1.principal.id');
    });

    it('takes the principal only from credentials: a body field claiming another user is refused, an X-User header ignored', async () => {
      const claimed = await app.inject({
        method: 'POST',
        url: '/v1/runs',
        headers: { ...bearer(KEYS.ada), 'x-user': 'fin-lee' },
        payload: { agent: 'triage', input: 'My headphones will not pair', principal: { id: 'fin-lee', roles: ['finance'] } },
      });
      expect(claimed.statusCode).toBe(400);
      expect(claimed.json().error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('principal') });

      const headerOnly = await app.inject({ method: 'GET', url: '/v1/me', headers: { 'x-user': 'fin-lee' } });
      expect(headerOnly.statusCode).toBe(401);

      const started = await app.inject({ method: 'POST', url: '/v1/runs', headers: { ...bearer(KEYS.ada), 'x-user': 'fin-lee' }, payload: { agent: 'triage', input: 'My headphones will not pair' } });
      expect(started.statusCode).toBe(202);
      const run = await app.inject({ method: 'GET', url: `/v1/runs/${started.json().runId}`, headers: bearer(KEYS.ada) });
      expect(run.json().principal).toEqual({ id: 'ada', roles: ['customer'], attrs: {} });
    });
  });

  describe('requests', () => {
    it('answers an oversized body with 413, an invalid body with 400 naming the field, and other content types with 415', async () => {
      const huge = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'x'.repeat(100 * 1024) } });
      expect(huge.statusCode).toBe(413);
      expect(huge.json().error.code).toBe('payload_too_large');

      const long = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'x'.repeat(40_000) } });
      expect(long.statusCode).toBe(400);
      expect(long.json().error.details.issues).toEqual([expect.objectContaining({ path: 'body.input' })]);

      const invalid = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: '', input: 42 } });
      expect(invalid.statusCode).toBe(400);
      expect(invalid.json().error.details.issues.map((i: { path: string }) => i.path).sort()).toEqual(['body.agent', 'body.input']);

      const notJson = await app.inject({ method: 'POST', url: '/v1/runs', headers: { ...bearer(KEYS.ada), 'content-type': 'application/json' }, payload: '{"agent":' });
      expect(notJson.statusCode).toBe(400);
      expect(notJson.json().error.code).toBe('invalid_json');

      const text = await app.inject({ method: 'POST', url: '/v1/runs', headers: { ...bearer(KEYS.ada), 'content-type': 'text/plain' }, payload: 'triage please' });
      expect(text.statusCode).toBe(415);
      expect(text.json().error.code).toBe('unsupported_media_type');

      const badId = await app.inject({ method: 'GET', url: '/v1/runs/not-a-uuid', headers: bearer(KEYS.ada) });
      expect(badId.statusCode).toBe(400);
      expect(badId.json().error.details.issues[0].path).toBe('params.id');
    });

    it('answers unknown routes and unknown agents with JSON errors', async () => {
      for (const headers of [{}, bearer(KEYS.ada)]) {
        const res = await app.inject({ method: 'GET', url: '/v1/nowhere', headers });
        expect(res.statusCode).toBe(404);
        expect(res.json()).toEqual({ error: { code: 'not_found', message: 'no route GET /v1/nowhere' } });
      }
      const agent = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'nobody', input: 'hello' } });
      expect(agent.statusCode).toBe(400);
      expect(agent.json().error).toMatchObject({ code: 'unknown_agent', details: { agent: 'nobody' } });
    });

    it('reports health without credentials, and the console settings with them', async () => {
      const health = await app.inject({ method: 'GET', url: '/healthz' });
      expect(health.json()).toEqual({ ok: true, redis: 'up' });
      expect((await app.inject({ method: 'GET', url: '/v1/config' })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/v1/config', headers: bearer(KEYS.ada) })).json()).toEqual({ jaegerUrl: JAEGER });
    });

    it('answers 503 with a clear message when Redis does not answer', async () => {
      const offline = await createServer({ authenticate, redisUrl: 'redis://127.0.0.1:1', prefix, policy, rateLimit: false });
      try {
        const health = await offline.inject({ method: 'GET', url: '/healthz' });
        expect(health.statusCode).toBe(503);
        expect(health.json()).toEqual({ ok: false, redis: 'down' });
        const start = await offline.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'hello' } });
        expect(start.statusCode).toBe(503);
        expect(start.headers['retry-after']).toBeDefined();
        expect(start.json().error).toEqual({ code: 'unavailable', message: expect.stringContaining('Redis') });
      } finally {
        await offline.close();
      }
    });

    it('serves an OpenAPI 3.1 document built from the schemas, with the bearer scheme, to anyone', async () => {
      const res = await app.inject({ method: 'GET', url: '/v1/openapi.json' });
      expect(res.statusCode).toBe(200);
      const doc = JSON.parse(res.body) as { openapi: string; paths: Record<string, Record<string, { parameters: Array<{ name: string; in: string }> }>>; components: { schemas: Record<string, unknown>; securitySchemes: Record<string, { type: string; scheme: string }> }; security: unknown };
      expect(doc.openapi).toBe('3.1.0');
      expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
      expect(doc.security).toEqual([{ bearer: [] }]);
      expect(Object.keys(doc.paths)).toEqual(
        expect.arrayContaining(['/v1/me', '/v1/config', '/v1/runs', '/v1/runs/{id}', '/v1/runs/{id}/events', '/v1/runs/{id}/cancel', '/v1/runs/{id}/rollback', '/v1/approvals', '/v1/approvals/{id}', '/v1/approvals/{id}/approve', '/v1/approvals/{id}/deny', '/v1/audit', '/v1/openapi.json', '/healthz']),
      );
      expect(doc.paths['/v1/runs/{id}']!.get!.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path' })]);
      expect(doc.paths['/v1/audit']!.get!.parameters.map((p) => p.name)).toEqual(['runId', 'principal', 'action', 'limit', 'before']);
      // Every reference resolves inside the document.
      const refs = [...res.body.matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1]!);
      expect(refs.length).toBeGreaterThan(0);
      for (const ref of refs) expect(doc.components.schemas).toHaveProperty(ref);
      expect(res.body).not.toContain('#/$defs/');
    });
  });

  describe('runs', () => {
    it('starts a run for the caller, streams its events to the end, and shows it with its chain', async () => {
      const started = await fetch(`${base}/v1/runs`, { method: 'POST', headers: { ...bearer(KEYS.ada), 'content-type': 'application/json' }, body: JSON.stringify({ agent: 'triage', input: "My headphones won't pair with my laptop" }) });
      expect(started.status).toBe(202);
      const { runId, status } = (await started.json()) as { runId: string; status: string };
      expect(status).toBe('running');
      expect(started.headers.get('location')).toBe(`/v1/runs/${runId}`);

      const stream = await fetch(`${base}/v1/runs/${runId}/events`, { headers: bearer(KEYS.ada) });
      expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events = await readSse(stream);
      expect(events[0]).toMatchObject({ event: 'run.started', data: { principal: 'ada' } });
      expect(events.at(-1)!.event).toMatch(/^run\.(completed|failed)$/);
      expect(events.every((e) => /^\d+-\d+$/.test(e.id) && e.event === e.data.type)).toBe(true);

      // Resuming after an event id sends only what came after it.
      const resumed = await readSse(await fetch(`${base}/v1/runs/${runId}/events`, { headers: { ...bearer(KEYS.ada), 'last-event-id': events[2]!.id } }));
      expect(resumed.map((e) => e.id)).toEqual(events.slice(3).map((e) => e.id));

      const detail = await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.ada) });
      expect(detail.statusCode).toBe(200);
      const run = detail.json();
      expect(run).toMatchObject({ runId, agent: 'triage', principal: { id: 'ada' }, input: "My headphones won't pair with my laptop" });
      expect(run.status).toBe(events.at(-1)!.event.slice('run.'.length));
      expect(run.chain[0]).toMatchObject({ agent: 'triage', kind: 'start' });
      expect(run.decisions.length).toBe(events.filter((e) => e.event === 'guard.decision').length);
      expect(run.decisions[0]).toMatchObject({ agent: 'triage', stage: 'receive', verdict: expect.any(String), reasons: expect.any(Array) });
      expect(run.traceUrl).toMatch(new RegExp(`^${JAEGER}/search\\?`));
      expect(decodeURIComponent(run.traceUrl)).toContain(`"palisade.run.id":"${runId}"`);

      // Others do not see it; an operator does, and lists it.
      expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.grace) })).statusCode).toBe(404);
      expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}/events`, headers: bearer(KEYS.grace) })).statusCode).toBe(404);
      expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.ops) })).statusCode).toBe(200);
      const own = (await app.inject({ method: 'GET', url: '/v1/runs', headers: bearer(KEYS.ada) })).json();
      expect(own.runs.map((r: { runId: string }) => r.runId)).toContain(runId);
      expect(own.runs.every((r: { principal: { id: string } }) => r.principal.id === 'ada')).toBe(true);
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: bearer(KEYS.grace) })).json().runs).toEqual([]);
      const all = (await app.inject({ method: 'GET', url: '/v1/runs?limit=1', headers: bearer(KEYS.ops) })).json();
      expect(all.runs).toHaveLength(1);
      expect(all.next).toEqual(expect.any(Number));

      // Cancelling needs to be the owner or hold cancel:runs; an ended run stays as it ended.
      expect((await app.inject({ method: 'POST', url: `/v1/runs/${runId}/cancel`, headers: bearer(KEYS.ops), payload: {} })).json()).toEqual({ runId, cancelled: false, status: run.status });
    });

    it('runs the approval flow over HTTP: the customer may not approve their own refund, a finance approver may, and the run completes', { timeout: 60_000 }, async () => {
      const started = await app.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'Refund my espresso machine, order ORD-5004, ada@example.com' } });
      const { runId } = started.json() as { runId: string };

      // Ada follows the run until it waits for a human, then goes away mid-stream.
      const hangUp = new AbortController();
      const stream = await fetch(`${base}/v1/runs/${runId}/events`, { headers: bearer(KEYS.ada), signal: hangUp.signal });
      const seen = await readSse(stream, (e) => e.event === 'approval.requested', hangUp);
      const requested = seen.at(-1)!;
      expect(requested.data).toMatchObject({ subject: 'issue_refund', kind: 'tool' });
      const approvalId = requested.data.approvalId as string;

      // The customer sees nothing to decide and may not decide it.
      expect((await app.inject({ method: 'GET', url: '/v1/approvals', headers: bearer(KEYS.ada) })).json()).toEqual([]);
      const own = await app.inject({ method: 'POST', url: `/v1/approvals/${approvalId}/approve`, headers: bearer(KEYS.ada), payload: {} });
      expect(own.statusCode).toBe(403);
      expect(own.json().error).toMatchObject({ code: 'forbidden', message: expect.stringContaining('lacks the permission approve:tool:issue_refund') });

      // The approver sees the request, and the run it belongs to while it waits.
      const listed = (await app.inject({ method: 'GET', url: '/v1/approvals', headers: bearer(KEYS.finLee) })).json() as Array<{ request: { id: string; runId: string; arguments: string; chain: string[] }; mayDecide: boolean }>;
      const mine = listed.find((a) => a.request.id === approvalId)!;
      expect(mine).toMatchObject({ mayDecide: true, request: { runId, chain: ['triage', 'billing'] } });
      expect(mine.request.arguments).toContain('"amountCents":34900');
      expect((await app.inject({ method: 'GET', url: `/v1/approvals/${approvalId}`, headers: bearer(KEYS.finLee) })).json()).toMatchObject({ request: { id: approvalId }, mayDecide: true });
      expect((await app.inject({ method: 'GET', url: `/v1/approvals/${approvalId}`, headers: bearer(KEYS.grace) })).statusCode).toBe(404);
      expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.finLee) })).statusCode).toBe(200);

      const approved = await app.inject({ method: 'POST', url: `/v1/approvals/${approvalId}/approve`, headers: bearer(KEYS.finLee), payload: { reason: 'receipt checked' } });
      expect(approved.statusCode).toBe(200);
      expect(approved.json()).toMatchObject({ approvalId, status: 'approved', by: 'fin-lee' });
      const again = await app.inject({ method: 'POST', url: `/v1/approvals/${approvalId}/deny`, headers: bearer(KEYS.finLee), payload: {} });
      expect(again.statusCode).toBe(409);
      expect(again.json().error.code).toBe('conflict');

      // Reconnecting with the last id seen picks up where Ada left off, through to the end.
      const rest = await readSse(await fetch(`${base}/v1/runs/${runId}/events`, { headers: { ...bearer(KEYS.ada), 'last-event-id': requested.id } }));
      expect(rest[0]!.id > requested.id || rest[0]!.id.length > requested.id.length).toBe(true);
      expect(rest.find((e) => e.event === 'approval.decided')?.data).toMatchObject({ status: 'approved', by: 'fin-lee', note: 'receipt checked' });
      expect(rest.at(-1)).toMatchObject({ event: 'run.completed', data: { output: expect.stringMatching(/refund RF-\d+ of 349\.00/) } });

      const run = (await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.ada) })).json();
      expect(run.status).toBe('completed');
      expect(run.chain.map((a: { agent: string }) => a.agent)).toEqual(expect.arrayContaining(['triage', 'billing', 'fraud_check']));
      expect(run.hops).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'handoff', from: 'triage', to: 'billing' }), expect.objectContaining({ type: 'delegation', from: 'billing', to: 'fraud_check', status: 'completed' })]));
      expect(run.decisions).toEqual(expect.arrayContaining([expect.objectContaining({ stage: 'tool_call', subject: 'issue_refund', verdict: 'escalate' })]));
      expect(run.approvals).toEqual([expect.objectContaining({ approvalId, status: 'approved', by: 'fin-lee' })]);
      expect(run.labels.some((l: { cause: string }) => l.cause === 'tool.result')).toBe(true);
      // The approver who decided still sees the run, to follow what the decision did, but not the customer's own words or its event stream.
      const asApprover = (await app.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.finLee) })).json();
      expect(asApprover).toMatchObject({ status: 'completed', redacted: true, decisions: expect.arrayContaining([expect.objectContaining({ verdict: 'escalate' })]) });
      expect(asApprover).not.toHaveProperty('input');
      expect(asApprover).not.toHaveProperty('output');
      expect(JSON.stringify(asApprover)).not.toContain('ada@example.com');
      expect((await app.inject({ method: 'GET', url: `/v1/runs/${runId}/events`, headers: bearer(KEYS.finLee) })).statusCode).toBe(404);
      // The owner sees who decided by id only; someone who may neither see nor decide learns nothing, not even that it was decided.
      expect((await app.inject({ method: 'GET', url: `/v1/approvals/${approvalId}`, headers: bearer(KEYS.ada) })).json().decision).toEqual(expect.objectContaining({ status: 'approved', by: { id: 'fin-lee' } }));
      const outsider = await app.inject({ method: 'POST', url: `/v1/approvals/${approvalId}/deny`, headers: bearer(KEYS.grace), payload: {} });
      expect(outsider.statusCode).toBe(404);
      expect(outsider.json().error.message).toBe(`no approval request '${approvalId}' that you may see`);
      const missing = await app.inject({ method: 'POST', url: '/v1/approvals/no-such-request/deny', headers: bearer(KEYS.grace), payload: {} });
      expect(missing.json().error.message).toBe(`no approval request 'no-such-request' that you may see`);

      // Rolling back needs rollback:runs, even for the run's own principal.
      const refused = await app.inject({ method: 'POST', url: `/v1/runs/${runId}/rollback`, headers: bearer(KEYS.ada), payload: {} });
      expect(refused.statusCode).toBe(403);
      const rollback = await app.inject({ method: 'POST', url: `/v1/runs/${runId}/rollback`, headers: bearer(KEYS.ops), payload: { reason: 'chargeback' } });
      expect(rollback.statusCode).toBe(202);
      expect(rollback.json()).toMatchObject({ runId, actions: 1 });

      // The auditor sees the whole story, newest first, with every writer's signatures and the anchors verified.
      expect((await app.inject({ method: 'GET', url: `/v1/audit?runId=${runId}`, headers: bearer(KEYS.ada) })).statusCode).toBe(403);
      await until(async () => {
        const page = (await app.inject({ method: 'GET', url: `/v1/audit?runId=${runId}`, headers: bearer(KEYS.auditor) })).json();
        return page.entries.some((e: { action: string }) => e.action === 'rollback.completed') ? page : undefined;
      });
      expect((await runAuditCli(['anchor', '--keys', join(dir, 'keys'), '--anchors', join(dir, 'anchors.jsonl'), '--prefix', prefix])).code).toBe(0);
      const audit = (await app.inject({ method: 'GET', url: `/v1/audit?runId=${runId}`, headers: bearer(KEYS.auditor) })).json();
      const actions = audit.entries.map((e: { action: string }) => e.action);
      expect(audit.entries.every((e: { runId: string }) => e.runId === runId)).toBe(true);
      expect(audit.entries.map((e: { seq: number }) => e.seq)).toEqual([...audit.entries.map((e: { seq: number }) => e.seq)].sort((a, b) => b - a));
      expect(actions).toEqual(expect.arrayContaining(['run.started', 'approval.requested', 'approval.decided', 'run.completed', 'rollback.started']));
      expect(audit.entries.find((e: { action: string }) => e.action === 'rollback.started')).toMatchObject({ detail: { by: 'ops-1', trigger: 'operator' } });
      expect(audit.verification).toMatchObject({ ok: true, status: 'verified', problems: [], problemCount: 0, unsigned: 0, anchor: { verified: true } });
      expect(audit.verification.macsVerified).toBe(audit.verification.entries);
      // An auditor confined to a tenant learns whether the log is intact, not the figures of every tenant's records.
      const acme = (await app.inject({ method: 'GET', url: `/v1/audit?runId=${runId}`, headers: bearer(KEYS.acmeAuditor) })).json();
      expect(acme.entries).toEqual([]);
      expect(acme.verification).toEqual({ ok: true, status: 'verified', problemCount: 0, problems: [] });
      // An edge given no writers' keys says the log is unverified, and one given no anchors that it is unanchored.
      for (const [extra, status] of [[{ auditKeys: undefined }, 'unverified'], [{ anchors: undefined }, 'unanchored']] as const) {
        const other = await edge(extra);
        try {
          expect((await other.inject({ method: 'GET', url: '/v1/audit?limit=1', headers: bearer(KEYS.auditor) })).json().verification).toMatchObject({ ok: false, status, problems: [] });
        } finally {
          await other.close();
        }
      }

      const decided = (await app.inject({ method: 'GET', url: `/v1/audit?runId=${runId}&action=approval.decided&limit=5`, headers: bearer(KEYS.auditor) })).json();
      expect(decided.entries).toEqual([expect.objectContaining({ action: 'approval.decided', outcome: 'approved', principal: 'ada', detail: expect.objectContaining({ by: 'fin-lee' }) })]);
      const bad = await app.inject({ method: 'GET', url: '/v1/audit?action=drop.tables', headers: bearer(KEYS.auditor) });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().error.details.issues[0].path).toBe('query.action');
    });
  });

  describe('event streams and cancelling', () => {
    it('caps the streams one principal holds open, ends them when the server closes, and lets cancel:runs cancel others’ runs', { timeout: 60_000 }, async () => {
      const capped = await edge({ maxStreamsPerPrincipal: 1 });
      const url = await capped.listen({ host: '127.0.0.1', port: 0 });
      try {
        const { runId } = (await capped.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'Refund my espresso machine, order ORD-5004, ada@example.com' } })).json() as { runId: string };
        const first = new AbortController();
        const open = await fetch(`${url}/v1/runs/${runId}/events`, { headers: bearer(KEYS.ada), signal: first.signal });
        // The count is taken before the response starts: a 200 means the stream holds its slot.
        expect(open.status).toBe(200);
        const second = await fetch(`${url}/v1/runs/${runId}/events`, { headers: bearer(KEYS.ada) });
        expect(second.status).toBe(429);
        expect(((await second.json()) as { error: { code: string } }).error.code).toBe('too_many_streams');
        first.abort();
        // The slot is given back once the first stream ends.
        const again = await until(async () => {
          const r = await fetch(`${url}/v1/runs/${runId}/events`, { headers: bearer(KEYS.ada) });
          if (r.status === 200) return r;
          await r.body?.cancel();
          return undefined;
        });
        // A holder of cancel:runs alone reaches the run to cancel it; the stream then ends with the run.
        const cancelled = await capped.inject({ method: 'POST', url: `/v1/runs/${runId}/cancel`, headers: bearer(KEYS.canceller), payload: { reason: 'night shift' } });
        expect(cancelled.statusCode).toBe(200);
        expect(cancelled.json()).toMatchObject({ runId, cancelled: true, status: 'cancelled' });
        expect((await capped.inject({ method: 'GET', url: `/v1/runs/${runId}`, headers: bearer(KEYS.canceller) })).statusCode).toBe(404);
        expect((await readSse(again)).at(-1)).toMatchObject({ event: 'run.cancelled' });

        // A stream still open when the server closes is ended, so closing does not wait for the run.
        const { runId: other } = (await capped.inject({ method: 'POST', url: '/v1/runs', headers: bearer(KEYS.ada), payload: { agent: 'triage', input: 'Refund my espresso machine, order ORD-5004, ada@example.com' } })).json() as { runId: string };
        const lingering = await fetch(`${url}/v1/runs/${other}/events`, { headers: bearer(KEYS.ada) });
        const drained = readSse(lingering);
        await capped.close();
        await expect(drained).resolves.toBeInstanceOf(Array);
        await app.inject({ method: 'POST', url: `/v1/runs/${other}/cancel`, headers: bearer(KEYS.ada), payload: {} });
      } finally {
        await capped.close();
      }
    });
  });

  describe('rate limits', () => {
    it('limit each principal across servers sharing Redis, and unauthenticated callers by address, with 429 and Retry-After', async () => {
      const shared = uniquePrefix('server-api-rl');
      cleanup.push(() => deleteKeys(shared));
      const one = await createServer({ authenticate, redisUrl: REDIS_URL, prefix: shared, policy, rateLimit: { max: 3, windowMs: 60_000 } });
      const two = await createServer({ authenticate, redisUrl: REDIS_URL, prefix: shared, policy, rateLimit: { max: 3, windowMs: 60_000 } });
      try {
        const me = (server: FastifyInstance, key: string) => server.inject({ method: 'GET', url: '/v1/me', headers: bearer(key) });
        expect((await me(one, KEYS.ada)).statusCode).toBe(200);
        expect((await me(two, KEYS.ada)).statusCode).toBe(200);
        expect((await me(one, KEYS.ada)).statusCode).toBe(200);
        const limited = await me(two, KEYS.ada);
        expect(limited.statusCode).toBe(429);
        expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
        expect(limited.json().error).toMatchObject({ code: 'rate_limited', details: { limit: 3 } });
        expect((await me(one, KEYS.ada)).statusCode).toBe(429);
        // Another principal has its own allowance.
        expect((await me(one, KEYS.grace)).statusCode).toBe(200);

        // Without valid credentials the address is counted, failed attempts included.
        const anonymous = [];
        for (let i = 0; i < 4; i++) anonymous.push((await (i % 2 ? one : two).inject({ method: 'GET', url: '/v1/me', headers: bearer('guess') })).statusCode);
        expect(anonymous).toEqual([401, 401, 401, 429]);

        // The console's page and modules are not counted: an address out of API budget still loads it.
        for (const url of ['/console/', '/console/console.js', '/console/api.js', '/console/console.css']) {
          expect((await one.inject({ method: 'GET', url })).statusCode).toBe(200);
        }
        expect((await one.inject({ method: 'GET', url: '/v1/me', headers: bearer('guess') })).statusCode).toBe(429);
      } finally {
        await Promise.all([one.close(), two.close()]);
      }
    });
  });
});
