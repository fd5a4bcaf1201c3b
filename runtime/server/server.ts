import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import type { Agent } from '../../agents/agent.js';
import type { CompiledPolicy } from '../../guards/policy/policy-pipeline.js';
import { PeriodicAnchoring } from '../audit/anchoring.js';
import { cellStores, type AnchorPublicKeys, type AnchorSigner, type AnchorStore } from '../audit/anchors.js';
import type { AuditVerifyKeys } from '../audit/audit-keys.js';
import { AuditLogs } from '../audit/audit-logs.js';
import { checkAuditKeys } from '../audit/record-auth.js';
import type { Policy } from '../../guards/policy/policy.js';
import { EDGE, type Keyring } from '../identity/keyring.js';
import { Runtime } from '../runtime.js';
import { BullMQTransport } from '../transports/bullmq-transport.js';
import { Access } from './access.js';
import type { Authenticator } from './auth.js';
import { registerConsole } from './console.js';
import type { ServerContext } from './context.js';
import { ApiError, installErrorHandling, toApiError } from './errors.js';
import { buildOpenApi } from './openapi.js';
import { registerRateLimit, type RateLimitOptions } from './rate-limit.js';
import type { Route } from './route.js';
import { approvalRoutes } from './routes/approvals.js';
import { auditRoutes } from './routes/audit.js';
import { eventRoutes } from './routes/events.js';
import { metaRoutes, PUBLIC_ROUTES } from './routes/meta.js';
import { runRoutes } from './routes/runs.js';

export interface ServerOptions {
  /** Turns `Authorization` into a principal: `createAuthenticator(...)` or `loadAuthConfig(...)`. */
  authenticate: Authenticator;
  /** Default `$REDIS_URL`, then redis://127.0.0.1:6379. */
  redisUrl?: string;
  /** Key prefix shared with the workers. Default `palisade`. */
  prefix?: string;
  /** Roles → permissions: who may approve, and who holds the edge's permissions (read:runs, ...). */
  policy?: Policy | CompiledPolicy;
  /** The edge's link keys (edge.json): they vouch for principals and authenticate decisions. */
  keys?: Keyring;
  /** Agent definitions, when this process knows them; without them runs go to agents whose workers announced themselves. */
  agents?: Agent[];
  /** Per principal (per IP address when unauthenticated); `false` turns limiting off. Default 120 per minute. */
  rateLimit?: RateLimitOptions | false;
  /** Largest request body in bytes. Default 64 KiB. */
  bodyLimit?: number;
  /** Longest run input in characters. Default 32 000. */
  maxInputChars?: number;
  /** Base URL of the Jaeger UI, for trace links. */
  jaegerUrl?: string;
  /** The service name the runs' root spans are exported under. Default `$OTEL_SERVICE_NAME`, then `palisade`. */
  jaegerService?: string;
  /** A request not answered within this long gets a 503 (event streams excepted). Default 15 s. */
  handlerTimeoutMs?: number;
  /** How long one wait for new run events blocks (ms). Default 1000. */
  eventPollMs?: number;
  /** An idle event stream sends a comment this often (ms). Default 15 000. */
  heartbeatMs?: number;
  /** Event streams one principal may hold open at once (each holds a Redis connection). Default 8. */
  maxStreamsPerPrincipal?: number;
  /** An event stream ends after this long (ms); clients resume with Last-Event-ID. Default 10 minutes. */
  streamLifetimeMs?: number;
  /** One verification of the whole audit log answers audit queries for this long (ms). Default 5000; 0 verifies every query. */
  auditVerifyReuseMs?: number;
  /**
   * The writers' public audit keys (audit.pub.json from `palisade audit keys`): every writer's records are
   * verified with them. Without them the API calls the audit log unverified. The edge's own key file adds its own.
   */
  auditKeys?: AuditVerifyKeys;
  /**
   * Where the audit log's head is anchored outside Redis: the store, the anchoring public keys, and, for this
   * server to take anchors itself every `everyMs` (default 60 s), the anchoring key. Without it the API calls the log unanchored.
   */
  anchors?: { store: AnchorStore; keys: AnchorPublicKeys; signer?: AnchorSigner; everyMs?: number };
  /** Fastify's logger settings; the Authorization header is always redacted. Default off. */
  logger?: boolean | { level: string };
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Routes under /v1 that anyone may call. */
    public?: boolean;
  }
}

/**
 * Whether the request must carry credentials: every /v1 route but the public ones; not static files
 * or unknown routes. Decided on the matched route, not the raw URL, which may be percent-encoded.
 */
const needsAuth = (request: FastifyRequest): boolean => !request.is404 && (request.routeOptions.url ?? '').startsWith('/v1/') && request.routeOptions.config.public !== true;

/**
 * Palisade's authenticated HTTP edge: starts runs for verified principals, shows them, and takes
 * approval decisions and rollback orders. It holds the edge's key only, never tool credentials.
 */
export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const prefix = options.prefix ?? 'palisade';
  const logger: FastifyServerOptions['logger'] =
    options.logger === undefined || options.logger === false ? false : { ...(options.logger === true ? {} : options.logger), redact: ['req.headers.authorization'] };
  const app = Fastify({
    logger,
    bodyLimit: options.bodyLimit ?? 64 * 1024,
    // Slow senders cannot hold a connection open forever; handlers that hang get a 503.
    requestTimeout: 30_000,
    handlerTimeout: options.handlerTimeoutMs ?? 15_000,
    return503OnClosing: true,
  });
  installErrorHandling(app);
  // JSON only: a text/plain body would otherwise reach the handlers as a string.
  app.removeContentTypeParser('text/plain');

  const transport = new BullMQTransport({ connection: options.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix });
  const runtime = new Runtime({ transport, ...(options.agents ? { agents: options.agents } : {}), ...(options.policy ? { policy: options.policy } : {}), ...(options.keys ? { keys: options.keys } : {}) });
  app.addHook('onClose', () => runtime.close({ timeoutMs: 1000 }));
  const policy = options.policy && ('policy' in options.policy ? options.policy.policy : options.policy);
  const auditKey = options.keys?.audit.get(EDGE);
  // The edge's own secret checks its own records from before signatures; it signs as nobody else.
  const auditKeys: AuditVerifyKeys | undefined =
    options.auditKeys || auditKey
      ? { publicKeys: options.auditKeys?.publicKeys ?? {}, secrets: { ...options.auditKeys?.secrets, ...(auditKey ? { [EDGE]: { ...options.auditKeys?.secrets?.[EDGE], [auditKey.kid]: auditKey.secret } } : {}) } }
      : undefined;
  // Keys that contradict each other are a configuration error, said now rather than on every audit query.
  if (auditKeys) checkAuditKeys(auditKeys);
  const jaegerUrl = options.jaegerUrl?.replace(/\/+$/, '');
  const ctx: ServerContext = {
    runtime,
    store: transport.store,
    redis: transport.connection,
    prefix,
    logs: new AuditLogs(transport.cells, { redis: transport.connection, writer: EDGE }),
    policy,
    access: new Access(policy),
    maxInputChars: options.maxInputChars ?? 32_000,
    ...(jaegerUrl ? { jaeger: { url: jaegerUrl, service: options.jaegerService ?? process.env.OTEL_SERVICE_NAME ?? 'palisade' } } : {}),
    audit: { ...(auditKeys ? { keys: auditKeys } : {}), ...(options.anchors ? { anchors: { store: options.anchors.store, keys: options.anchors.keys } } : {}) },
    eventPollMs: options.eventPollMs ?? 1000,
    heartbeatMs: options.heartbeatMs ?? 15_000,
    maxStreamsPerPrincipal: options.maxStreamsPerPrincipal ?? 8,
    streamLifetimeMs: options.streamLifetimeMs ?? 10 * 60_000,
    auditVerifyReuseMs: options.auditVerifyReuseMs ?? 5000,
    streams: new Set(),
  };
  const signer = options.anchors?.signer;
  if (options.anchors && signer) {
    const stores = cellStores(options.anchors.store, transport.cells.count);
    for (const [cell, { prefix: logPrefix, log }] of ctx.logs.all.entries()) {
      const anchoring = new PeriodicAnchoring({
        log,
        prefix: logPrefix,
        store: stores[cell]!,
        signer,
        anchorKeys: options.anchors.keys,
        ...(auditKeys ? { keys: auditKeys.secrets, publicKeys: auditKeys.publicKeys } : {}),
        everyMs: options.anchors.everyMs ?? 60_000,
        onError: (error) => app.log.error({ err: error }, `audit anchoring of ${logPrefix}: no anchor taken`),
      });
      anchoring.start();
      // Before the runtime closes the connection it reads through.
      app.addHook('preClose', () => anchoring.stop());
    }
  }
  // Open event streams would hold the close until their runs end.
  app.addHook('preClose', async () => {
    for (const stream of ctx.streams) stream.abort();
  });

  app.decorateRequest('principal', undefined);
  app.decorateRequest('authError', undefined);
  // Resolves credentials without refusing yet, so the rate limit can count failed attempts by address.
  app.addHook('onRequest', async (request) => {
    const header = request.headers.authorization;
    if (header === undefined && !needsAuth(request)) return;
    try {
      request.principal = await options.authenticate(header);
    } catch (error) {
      request.authError = toApiError(error);
    }
  });
  if (options.rateLimit !== false) await registerRateLimit(app, { ...(options.rateLimit ?? { max: 120, windowMs: 60_000 }), redis: ctx.redis, prefix });
  app.addHook('onRequest', async (request) => {
    if (needsAuth(request) && !request.principal) throw request.authError ?? new ApiError(401, 'unauthenticated', 'send credentials as Authorization: Bearer <token>');
  });

  const routes: Route[] = [...metaRoutes(ctx), ...runRoutes(ctx), ...eventRoutes(ctx), ...approvalRoutes(ctx), ...auditRoutes(ctx)];
  for (const route of routes) route.mount(app);

  const openapi = buildOpenApi([...PUBLIC_ROUTES, ...routes], { title: 'Palisade edge API', version: '1' });
  app.get('/v1/openapi.json', { config: { public: true } }, async () => openapi);
  app.get('/healthz', async (_request, reply) => {
    const up = await Promise.race([ctx.redis.ping().then(() => true, () => false), new Promise<boolean>((resolve) => setTimeout(resolve, 1000, false).unref())]);
    return reply.code(up ? 200 : 503).send({ ok: up, redis: up ? 'up' : 'down' });
  });

  await registerConsole(app);
  return app;
}
