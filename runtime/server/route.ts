import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { Principal } from '../../agents/principal.js';
import { ApiError, invalidRequest } from './errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified caller, set by the authentication hook; never from the body or other headers. */
    principal?: Principal;
    /** Why the credentials were refused, when they were. */
    authError?: ApiError;
  }
}

/** What the OpenAPI document says about a route; every route the API serves has one. */
export interface RouteDoc {
  method: 'GET' | 'POST';
  /** Fastify syntax: `/v1/runs/:id`. */
  url: string;
  summary: string;
  tag: string;
  /** False for the few routes anyone may call (the OpenAPI document, health). */
  auth: boolean;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  ok: { status: 200 | 202; description: string; schema?: z.ZodType; contentType?: string };
  /** Error statuses beyond the ones every authenticated route has (400, 401, 429, 503). */
  errors?: number[];
}

export interface HandlerInput<P, Q, B> {
  request: FastifyRequest;
  reply: FastifyReply;
  /** From verified credentials only. */
  principal: Principal;
  params: P;
  query: Q;
  body: B;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteSpec<P extends z.ZodType | undefined, Q extends z.ZodType | undefined, B extends z.ZodType | undefined, R extends z.ZodType | undefined>
  extends Omit<RouteDoc, 'params' | 'query' | 'body' | 'ok' | 'auth'> {
  params?: P;
  query?: Q;
  body?: B;
  ok: { status: 200 | 202; description: string; schema?: R; contentType?: string };
  /** Returns the response body; a handler that streams (SSE) hijacks the reply and returns nothing. */
  handler: (input: HandlerInput<Out<P>, Out<Q>, Out<B>>) => Promise<R extends z.ZodType ? z.input<R> : void>;
}

export interface Route extends RouteDoc {
  mount(app: FastifyInstance): void;
}

/** The principal the authentication hook found; routes under /v1 never run without one. */
function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new ApiError(401, 'unauthenticated', 'send credentials as Authorization: Bearer <token>');
  return request.principal;
}

function parse<S extends z.ZodType | undefined>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): Out<S> {
  if (!schema) return undefined as Out<S>;
  // A POST without a body is an empty object to validate, so the schema says what is missing.
  const result = schema.safeParse(value ?? {});
  if (!result.success) throw invalidRequest(where, result.error);
  return result.data as Out<S>;
}

/** An authenticated JSON route whose params, query and body are checked against its schemas before the handler runs. */
export function defineRoute<P extends z.ZodType | undefined, Q extends z.ZodType | undefined, B extends z.ZodType | undefined, R extends z.ZodType | undefined>(
  spec: RouteSpec<P, Q, B, R>,
): Route {
  const { handler, ...doc } = spec;
  return {
    ...doc,
    auth: true,
    mount(app) {
      app.route({
        method: spec.method,
        url: spec.url,
        handler: async (request, reply) => {
          const input = {
            request,
            reply,
            principal: principalOf(request),
            params: parse(spec.params as P, request.params, 'params'),
            query: parse(spec.query as Q, request.query, 'query'),
            body: parse(spec.body as B, request.body, 'body'),
          };
          const result = await handler(input);
          // A streaming handler has hijacked the reply and answered itself.
          if (reply.sent) return;
          return reply.code(spec.ok.status).send(result);
        },
      });
    },
  };
}
