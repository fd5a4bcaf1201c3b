import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RedisClient } from '../redis-url.js';
import type { Principal } from '../../agents/principal.js';
import { ApiError } from './errors.js';

export interface RateLimitOptions {
  /** Requests one principal (or, unauthenticated, one IP address) may make per window. */
  max: number;
  windowMs: number;
}

/** A principal as a key part: tenant and id encoded so that no two principals share one (ids may hold ':'). */
export const principalKey = (principal: Principal): string => `principal:${createHash('sha256').update(JSON.stringify([principal.tenant ?? null, principal.id])).digest('hex')}`;

/** Verified callers are counted by principal, wherever they connect from; everyone else by address (IPv6 by its /64, which one host holds). */
export const rateLimitKey = (request: FastifyRequest): string => (request.principal ? principalKey(request.principal) : `ip:${addressKey(request.ip)}`);

function addressKey(ip: string): string {
  if (isIP(ip) !== 6 || ip.includes('.')) return ip;
  const [head = '', tail = ''] = ip.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** The routes that serve the console's page and its static files (`/`, `/console`, `/console/<file>`). */
const isConsoleAsset = (route: string | undefined): boolean => route !== undefined && /^\/(console(\/[\w.-]*)?)?$/.test(route);

/**
 * Counts requests in Redis, so the limit holds across every server sharing it. Adds an onRequest
 * hook: register it after the one that authenticates and before the one that refuses the
 * unauthenticated, so failed attempts count against their address too.
 */
export async function registerRateLimit(app: FastifyInstance, options: RateLimitOptions & { redis: RedisClient; prefix: string }): Promise<void> {
  await app.register(rateLimit, {
    global: false,
    max: options.max,
    timeWindow: options.windowMs,
    redis: options.redis,
    nameSpace: `${options.prefix}:ratelimit:`,
    keyGenerator: rateLimitKey,
    // The console's static files are a dozen modules per page load and cost nothing to serve: counting them
    // would spend an operator's budget on reloads. Every API route is still counted.
    allowList: (request) => isConsoleAsset(request.routeOptions.url),
    errorResponseBuilder: (_request, context) => {
      const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
      return new ApiError(429, 'rate_limited', `too many requests: at most ${context.max} per ${options.windowMs / 1000} s; retry in ${seconds} s`, { limit: context.max, retryAfterSeconds: seconds }, { 'retry-after': String(seconds) });
    },
  });
  app.addHook('onRequest', app.rateLimit());
}
