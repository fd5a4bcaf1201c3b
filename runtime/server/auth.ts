/**
 * Who is calling: `Authorization: Bearer <token>` turned into a Principal, from an API key or a JWT.
 * The principal comes from nothing else (no body field, no X-User header).
 *
 * The auth config file (YAML or JSON):
 *
 *     apiKeys:                      # only SHA-256 hashes: printf %s "$KEY" | sha256sum
 *       - sha256: 9f86d08...        # 64 hex digits
 *         principal: { id: ci-bot, roles: [operator], tenant: acme }
 *     jwt:                          # optional: tokens from an OIDC provider
 *       issuer: https://id.example.com/
 *       audience: palisade
 *       jwksUrl: https://id.example.com/.well-known/jwks.json   # or publicKeyFile, or secretEnv
 *       claims: { id: sub, roles: roles, tenant: tenant }
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { createJwtVerifier, IdentityError, type JwtVerifier } from '../identity/jwt-verifier.js';
import { PrincipalSchema, type Principal } from '../../agents/principal.js';
import { ApiError } from './errors.js';

const ApiKeySchema = z
  .object({
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be the SHA-256 of the key as 64 hex digits (never the key itself)')
      .transform((s) => s.toLowerCase()),
    principal: PrincipalSchema,
  })
  .strict();

const JwtSchema = z
  .object({
    issuer: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    jwksUrl: z.string().url().optional(),
    /** A PEM SPKI public key file, relative to the auth config file. */
    publicKeyFile: z.string().min(1).optional(),
    /** The environment variable holding an HS256 secret: secrets stay out of config files. */
    secretEnv: z.string().min(1).optional(),
    algorithms: z.array(z.string()).min(1).optional(),
    clockToleranceSec: z.number().min(0).optional(),
    maxTokenAgeSec: z.number().positive().optional(),
    /** Refuse tokens without a tenant claim: a principal without a tenant reaches every tenant. */
    requireTenant: z.boolean().optional(),
    claims: z
      .object({ id: z.string().min(1).optional(), roles: z.string().min(1).optional(), tenant: z.string().min(1).optional(), attrs: z.array(z.string().min(1)).optional() })
      .strict()
      .optional(),
  })
  .strict()
  .refine((j) => [j.jwksUrl, j.publicKeyFile, j.secretEnv].filter((s) => s !== undefined).length === 1, {
    message: 'give exactly one of jwksUrl, publicKeyFile, secretEnv',
  });

export const AuthConfigSchema = z
  .object({
    apiKeys: z.array(ApiKeySchema).default([]),
    jwt: JwtSchema.optional(),
  })
  .strict()
  .refine((c) => c.apiKeys.length > 0 || c.jwt !== undefined, { message: 'configure apiKeys, jwt, or both: otherwise nobody can call the API' })
  .refine((c) => new Set(c.apiKeys.map((k) => k.sha256)).size === c.apiKeys.length, { message: 'two apiKeys have the same sha256', path: ['apiKeys'] });
export type AuthConfig = z.output<typeof AuthConfigSchema>;

export class AuthConfigError extends Error {
  override readonly name = 'AuthConfigError';
}

/** The SHA-256 of an API key, as the config file stores it. */
export const hashApiKey = (key: string): string => createHash('sha256').update(key, 'utf8').digest('hex');

/** Reads and validates an auth config file; every problem names the file and the field. */
export async function loadAuthConfig(file: string): Promise<{ config: AuthConfig; verifier?: JwtVerifier }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new AuthConfigError(`cannot read the auth config ${file}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new AuthConfigError(`${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(error as Error).message}`);
  }
  const parsed = AuthConfigSchema.safeParse(raw);
  if (!parsed.success) throw new AuthConfigError(`${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ')}`);
  const config = parsed.data;
  if (!config.jwt) return { config };
  const { publicKeyFile, secretEnv, jwksUrl, ...rest } = config.jwt;
  let key: { jwksUrl: string } | { publicKey: string } | { secret: string };
  if (jwksUrl !== undefined) key = { jwksUrl };
  else if (publicKeyFile !== undefined) {
    const path = resolve(dirname(file), publicKeyFile);
    try {
      key = { publicKey: await readFile(path, 'utf8') };
    } catch (error) {
      throw new AuthConfigError(`${file}: jwt.publicKeyFile: cannot read ${path}: ${(error as Error).message}`);
    }
  } else {
    const secret = process.env[secretEnv!];
    if (!secret) throw new AuthConfigError(`${file}: jwt.secretEnv: the environment variable ${secretEnv} is not set`);
    key = { secret };
  }
  try {
    return { config, verifier: createJwtVerifier({ ...rest, ...key }) };
  } catch (error) {
    throw new AuthConfigError(`${file}: jwt: ${(error as Error).message.replace(/^createJwtVerifier: /, '')}`);
  }
}

export type Authenticator = (authorization: string | undefined) => Promise<Principal>;

const CHALLENGE = 'Bearer realm="palisade"';
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const unauthorized = (code: 'unauthenticated' | 'invalid_credentials' | 'expired_credentials', message: string, details?: unknown): ApiError =>
  new ApiError(401, code, message, details, { 'www-authenticate': code === 'unauthenticated' ? CHALLENGE : `${CHALLENGE}, error="invalid_token"` });

/**
 * Turns the Authorization header into a principal, or throws a 401 (503 when the issuer's keys
 * cannot be fetched). Errors never contain the token.
 */
export function createAuthenticator(config: Pick<AuthConfig, 'apiKeys'>, verifier?: JwtVerifier): Authenticator {
  const keys = config.apiKeys.map((k) => ({ hash: Buffer.from(k.sha256, 'hex'), principal: Object.freeze({ ...k.principal, roles: Object.freeze([...k.principal.roles]), attrs: Object.freeze({ ...k.principal.attrs }) }) as Principal }));
  return async (authorization) => {
    if (authorization === undefined || authorization.trim() === '') throw unauthorized('unauthenticated', 'send credentials as Authorization: Bearer <token>');
    const match = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!match) throw unauthorized('invalid_credentials', 'the Authorization header must be Bearer <token>');
    const token = match[1]!;
    const presented = createHash('sha256').update(token, 'utf8').digest();
    // Every stored hash is compared, matched or not, so the time taken says nothing about which one is close.
    let found: Principal | undefined;
    for (const key of keys) if (timingSafeEqual(presented, key.hash) && !found) found = key.principal;
    if (found) return found;
    if (!verifier || !JWT_SHAPE.test(token)) throw unauthorized('invalid_credentials', verifier ? 'the token is neither a known API key nor a JWT' : 'unknown API key');
    try {
      return await verifier(token);
    } catch (error) {
      if (!(error instanceof IdentityError)) throw error;
      if (error.code === 'key_unavailable') throw new ApiError(503, 'identity_unavailable', error.message, undefined, { 'retry-after': '5' });
      if (error.code === 'expired') throw unauthorized('expired_credentials', error.message);
      throw unauthorized('invalid_credentials', error.message, { reason: error.code });
    }
  };
}
