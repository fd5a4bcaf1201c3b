import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { ApiError } from './errors.js';

export interface RateLimitOptions {
  /** Requests one principal (or, unauthenticated, one IP address) may make per window. */
  max: number;
  windowMs: number;
}

/** Verified callers are counted by principal, wherever they connect from; everyone else by address. */
export const rateLimitKey = (request: FastifyRequest): string =>
  request.principal ? `principal:${request.principal.tenant ?? ''}:${request.principal.id}` : `ip:${request.ip}`;

/**
 * Counts requests in Redis, so the limit holds across every server sharing it. Adds an onRequest
 * hook: register it after the one that authenticates and before the one that refuses the
 * unauthenticated, so failed attempts count against their address too.
 */
export async function registerRateLimit(app: FastifyInstance, options: RateLimitOptions & { redis: Redis; prefix: string }): Promise<void> {
  await app.register(rateLimit, {
    global: false,
    max: options.max,
    timeWindow: options.windowMs,
    redis: options.redis,
    nameSpace: `${options.prefix}:ratelimit:`,
    keyGenerator: rateLimitKey,
    errorResponseBuilder: (_request, context) => {
      const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
      return new ApiError(429, 'rate_limited', `too many requests: at most ${context.max} per ${options.windowMs / 1000} s; retry in ${seconds} s`, { limit: context.max, retryAfterSeconds: seconds }, { 'retry-after': String(seconds) });
    },
  });
  app.addHook('onRequest', app.rateLimit());
}
