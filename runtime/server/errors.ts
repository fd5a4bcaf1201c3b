import type { FastifyError, FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ApprovalError } from '../approvals/approvals.js';
import { InvalidRunInputError, isRedisUnavailable, TransportUnavailableError, UnknownAgentError } from '../errors.js';
import { InvalidCursorError } from '../audit/audit-logs.js';

/** Every code the API answers an error with: stable, for clients to branch on. */
export const ERROR_CODES = [
  'unauthenticated',
  'invalid_credentials',
  'expired_credentials',
  'identity_unavailable',
  'forbidden',
  'not_found',
  'invalid_request',
  'invalid_json',
  'unsupported_media_type',
  'payload_too_large',
  'unknown_agent',
  'conflict',
  'rate_limited',
  'too_many_streams',
  'unavailable',
  'timeout',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const ErrorBodySchema = z
  .object({
    error: z.object({
      code: z.enum(ERROR_CODES),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .meta({ id: 'Error' });
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/** An error the API answers with as is: status, stable code, a message for humans, optional details. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly statusCode: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
    /** Extra response headers, e.g. WWW-Authenticate or Retry-After. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const notFound = (message: string): ApiError => new ApiError(404, 'not_found', message);
export const forbidden = (message: string): ApiError => new ApiError(403, 'forbidden', message);

/** Zod issues as `{ path, message }` pairs, with the part of the request they are in first (`body.input`). */
export function invalidRequest(where: 'body' | 'query' | 'params', error: z.ZodError): ApiError {
  const issues = error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  return new ApiError(400, 'invalid_request', `invalid ${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { issues });
}

const FASTIFY_CODES: Record<string, [number, ErrorCode, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'payload_too_large', 'the request body is larger than this server accepts'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type', 'send the body as application/json'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_json', 'the request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_json', 'the request body is empty but its content-type is application/json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_request', 'the request body does not match its Content-Length'],
  FST_ERR_BAD_URL: [400, 'invalid_request', 'the request URL is malformed'],
  FST_ERR_HANDLER_TIMEOUT: [503, 'timeout', 'the request took too long to handle; try again'],
};

/** Any thrown value as the ApiError to answer with. Unknown errors become a 500 whose message reveals nothing. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof ApprovalError) {
    switch (error.code) {
      case 'not_found':
        return notFound(error.message);
      case 'forbidden':
        return forbidden(error.message);
      case 'decided':
      case 'expired':
      case 'unverifiable':
        return new ApiError(409, 'conflict', error.message, { reason: error.code });
      case 'invalid':
        // The edge's own set-up is wrong (e.g. no key for the agent): the log has it, the caller need not.
        return new ApiError(500, 'internal', 'the decision could not be recorded: the server is misconfigured (see its log)');
    }
  }
  if (error instanceof UnknownAgentError) return new ApiError(400, 'unknown_agent', error.message, { agent: error.agent, known: error.known });
  if (error instanceof InvalidRunInputError) return new ApiError(400, 'invalid_request', error.message);
  if (error instanceof InvalidCursorError) return new ApiError(400, 'invalid_request', `query.before: ${error.message}`);
  if (error instanceof TransportUnavailableError || isRedisUnavailable(error)) {
    return new ApiError(503, 'unavailable', 'Redis did not answer; try again shortly', undefined, { 'retry-after': '5' });
  }
  const code = (error as Partial<FastifyError> | null)?.code;
  const known = code !== undefined ? FASTIFY_CODES[code] : undefined;
  if (known) return new ApiError(known[0], known[1], known[2]);
  // Other 4xx errors fastify raises itself (e.g. a bad header) keep their status and say what they are.
  const status = (error as Partial<FastifyError> | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500 && error instanceof Error) return new ApiError(status, 'invalid_request', error.message);
  return new ApiError(500, 'internal', 'the server failed to handle the request');
}

export const errorBody = (error: ApiError): ErrorBody => ({
  error: { code: error.code, message: error.message, ...(error.details !== undefined ? { details: error.details } : {}) },
});

/** One JSON error shape for everything: our errors, fastify's own (parsing, limits, timeouts) and unknown routes. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error, request, reply) => {
    const api = toApiError(error);
    if (api.statusCode >= 500 && api.code !== 'unavailable' && api.code !== 'identity_unavailable') request.log.error({ err: error }, 'request failed');
    void reply.code(api.statusCode).headers(api.headers).send(errorBody(api));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody(notFound(`no route ${request.method} ${request.url.split('?')[0]}`)));
  });
}
