import type { ServerContext } from '../context.js';
import { defineRoute, type Route, type RouteDoc } from '../route.js';
import { ConfigOut, HealthOut, PrincipalOut } from '../schemas.js';

export function metaRoutes(ctx: ServerContext): Route[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/me',
      tag: 'identity',
      summary: 'The principal the credentials verify to',
      ok: { status: 200, description: 'the caller', schema: PrincipalOut },
      handler: async ({ principal }) => principal,
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/config',
      tag: 'identity',
      summary: 'Settings the console needs',
      ok: { status: 200, description: 'the settings', schema: ConfigOut },
      handler: async () => (ctx.jaeger ? { jaegerUrl: ctx.jaeger.url } : {}),
    }),
  ];
}

/** The routes anyone may call, mounted by the server itself; listed here for the OpenAPI document. */
export const PUBLIC_ROUTES: RouteDoc[] = [
  { method: 'GET', url: '/healthz', tag: 'meta', summary: 'Whether the server and its Redis answer', auth: false, ok: { status: 200, description: 'healthy; 503 with the same body when Redis does not answer', schema: HealthOut } },
  { method: 'GET', url: '/v1/openapi.json', tag: 'meta', summary: 'This document', auth: false, ok: { status: 200, description: 'OpenAPI 3.1' } },
];
