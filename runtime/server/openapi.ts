import { z } from 'zod';
import { ErrorBodySchema } from './errors.js';
import type { RouteDoc } from './route.js';

export type OpenApiDocument = Record<string, unknown>;

const STATUS_TEXT: Record<number, string> = {
  400: 'invalid request (the issues name the fields)',
  401: 'missing, invalid or expired credentials',
  403: 'the caller may not do this',
  404: 'no such resource visible to the caller',
  409: 'the state changed: already decided, or expired',
  413: 'the body is larger than the server accepts',
  429: 'too many requests: see Retry-After',
  503: 'Redis or the identity provider did not answer',
};

/** A component schema: named shapes (`.meta({ id })`) become `$ref`s into `components.schemas`. */
function jsonSchema(schema: z.ZodType, io: 'input' | 'output', components: Record<string, unknown>): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any', reused: 'inline' }) as Record<string, unknown>;
  const defs = (out.$defs ?? {}) as Record<string, unknown>;
  delete out.$schema;
  delete out.$defs;
  const local = (value: unknown): Record<string, unknown> => JSON.parse(JSON.stringify(value).replaceAll('"#/$defs/', '"#/components/schemas/')) as Record<string, unknown>;
  for (const [id, def] of Object.entries(defs)) components[id] ??= local(def);
  return local(out);
}

/** Path parameters from a zod object, in OpenAPI's form. */
function parameters(schema: z.ZodType | undefined, where: 'path' | 'query', components: Record<string, unknown>): unknown[] {
  if (!schema) return [];
  const s = jsonSchema(schema, 'input', components) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, prop]) => ({
    name,
    in: where,
    required: where === 'path' || (s.required ?? []).includes(name),
    ...(typeof prop.description === 'string' ? { description: prop.description } : {}),
    schema: prop,
  }));
}

/** The OpenAPI 3.1 document of the routes, from the same zod schemas that validate requests. */
export function buildOpenApi(routes: readonly RouteDoc[], info: { title: string; version: string }): OpenApiDocument {
  const components: Record<string, unknown> = {};
  const paths: Record<string, Record<string, unknown>> = {};
  const errorRef = jsonSchema(ErrorBodySchema, 'output', components);
  for (const route of routes) {
    const path = route.url.replace(/:(\w+)/g, '{$1}');
    const statuses = new Set([...(route.auth ? [401, 429, 503] : []), ...(route.query || route.body || route.params ? [400] : []), ...(route.body ? [413] : []), ...(route.errors ?? [])]);
    const ok = route.ok;
    const responses: Record<string, unknown> = {
      [ok.status]: {
        description: ok.description,
        ...(ok.schema ? { content: { [ok.contentType ?? 'application/json']: { schema: jsonSchema(ok.schema, 'output', components) } } } : ok.contentType ? { content: { [ok.contentType]: { schema: { type: 'string' } } } } : {}),
      },
    };
    for (const status of [...statuses].sort()) responses[status] = { description: STATUS_TEXT[status] ?? 'error', content: { 'application/json': { schema: errorRef } } };
    (paths[path] ??= {})[route.method.toLowerCase()] = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(\w)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      ...(route.auth ? {} : { security: [] }),
      parameters: [...parameters(route.params, 'path', components), ...parameters(route.query, 'query', components)],
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body, 'input', components) } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: { schemas: components, securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an API key, or a JWT from the configured issuer' } } },
    security: [{ bearer: [] }],
  };
}
