/**
 * Verified identity at the edge.
 *
 * Every run acts for a principal, and that principal must come from verified credentials. Integrators turn their
 * users' JWTs (from any OIDC provider: Auth0, Okta, Keycloak, Entra ID, Cognito, ...) into principals with
 * {@link createJwtVerifier}; the CLI uses {@link localDevelopmentPrincipal}, which says loudly that it is not verified.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import {
  createRemoteJWKSet,
  importSPKI,
  jwtVerify,
  type CryptoKey,
  type JWTHeaderParameters,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import { PrincipalSchema, type Principal } from '../../agents/principal.js';

export type IdentityErrorCode =
  | 'expired'
  | 'invalid_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'malformed'
  | 'missing_claim'
  | 'key_unavailable';

/**
 * A token was not accepted. `code` is stable and meant for branching (e.g. 401 for most codes, 503 for
 * `key_unavailable`); the message is for humans and never contains the token.
 */
export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  constructor(
    readonly code: IdentityErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface JwtClaimMapping {
  /** Claim holding the principal id. Default `sub`. */
  id?: string;
  /**
   * Claim holding the roles. Default `roles`. May be a dotted path (`realm_access.roles`); a claim whose own name
   * contains dots (`https://example.com/roles`) is matched first. An array of strings is used as is; a
   * space-separated string (the OAuth `scope` claim) is split. Absent means no roles.
   */
  roles?: string;
  /** Claim holding the tenant. Default `tenant`. Absent means no tenant. */
  tenant?: string;
  /** Claims copied into `attrs` under their names, when their value is a string, number or boolean. */
  attrs?: string[];
}

export interface JwtVerifierOptions {
  /** Accepted `iss` value(s). */
  issuer: string | string[];
  /** Accepted `aud` value(s); the token must name at least one. */
  audience: string | string[];
  // Exactly one key source:
  /** URL of the issuer's JSON Web Key Set (https; http only for loopback hosts). Cached, refetched on unknown `kid`. */
  jwksUrl?: string;
  /** The issuer's public key, PEM SPKI (`-----BEGIN PUBLIC KEY-----`). */
  publicKey?: string;
  /** HS256 shared secret, at least 32 bytes. */
  secret?: string | Uint8Array;
  /** Accepted `alg` values. Default RS256, ES256, EdDSA for keys (narrowed to the key's type for a PEM); HS256 for a secret. `none` is never accepted. */
  algorithms?: string[];
  /** Leeway for `exp`, `nbf` and `iat`. Default 30. */
  clockToleranceSec?: number;
  /** When set, tokens whose `iat` is older than this are rejected as expired (and `iat` becomes required). */
  maxTokenAgeSec?: number;
  /** Refuse tokens without a tenant claim (a principal without a tenant is not confined to one). Default false. */
  requireTenant?: boolean;
  claims?: JwtClaimMapping;
}

export type JwtVerifier = (token: string) => Promise<Principal>;

const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;
const DEFAULT_KEY_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'];
const DEFAULT_SECRET_ALGORITHMS = ['HS256'];
const DEFAULT_CLOCK_TOLERANCE_SEC = 30;
/** Tokens longer than this are rejected before any parsing (large IdP tokens with group lists stay well below). */
const MAX_TOKEN_LENGTH = 32 * 1024;
const MIN_RSA_BITS = 2048;

/** Thrown by the key resolvers when the key source itself failed (JWKS unreachable, bad response, ...). */
class KeySourceFailure extends Error {
  constructor(cause: unknown) {
    super('key source failed', { cause });
  }
}

function configError(message: string): TypeError {
  return new TypeError(`createJwtVerifier: ${message}`);
}

function nonEmptyStrings(value: unknown, name: string): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string' && item.length > 0)) {
    throw configError(`'${name}' must be a non-empty string or a non-empty array of non-empty strings`);
  }
  return [...(list as string[])];
}

function validateAlgorithms(algorithms: unknown): string[] | undefined {
  if (algorithms === undefined) return undefined;
  if (!Array.isArray(algorithms) || algorithms.length === 0 || !algorithms.every((alg) => typeof alg === 'string')) {
    throw configError("'algorithms' must be a non-empty array of algorithm names");
  }
  for (const alg of algorithms as string[]) {
    if (alg.trim().toLowerCase() === 'none') throw configError("'none' is never an accepted algorithm: unsigned tokens prove nothing");
    if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg) && !(HMAC_ALGORITHMS as readonly string[]).includes(alg)) {
      throw configError(`unsupported algorithm '${alg}'; supported: ${[...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS].join(', ')}`);
    }
  }
  return [...new Set(algorithms as string[])];
}

function validateJwksUrl(value: unknown): URL {
  if (typeof value !== 'string' || value.length === 0) throw configError("'jwksUrl' must be a non-empty string");
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw configError("'jwksUrl' is not a valid URL");
  }
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname) || url.hostname.endsWith('.localhost');
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw configError("'jwksUrl' must use https (plain http is allowed only for loopback hosts): keys fetched over http can be substituted");
  }
  if (url.username || url.password) throw configError("'jwksUrl' must not embed credentials");
  return url;
}

/** Which JWS algorithms a PEM public key can verify. */
function algorithmsForKey(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa': {
      const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) throw configError(`'publicKey' is a ${bits}-bit RSA key; at least ${MIN_RSA_BITS} bits are required`);
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    }
    case 'rsa-pss': {
      const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) throw configError(`'publicKey' is a ${bits}-bit RSA key; at least ${MIN_RSA_BITS} bits are required`);
      return ['PS256', 'PS384', 'PS512'];
    }
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const alg = curve === 'prime256v1' ? 'ES256' : curve === 'secp384r1' ? 'ES384' : curve === 'secp521r1' ? 'ES512' : undefined;
      if (!alg) throw configError(`'publicKey' uses the unsupported elliptic curve '${curve ?? 'unknown'}'`);
      return [alg];
    }
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    default:
      throw configError(`'publicKey' has the unsupported key type '${key.asymmetricKeyType ?? 'unknown'}'`);
  }
}

function parsePublicKeyPem(pem: unknown): KeyObject {
  if (typeof pem !== 'string' || !pem.trimStart().startsWith('-----BEGIN PUBLIC KEY-----')) {
    throw configError("'publicKey' must be a PEM SPKI public key ('-----BEGIN PUBLIC KEY-----'); never pass a private key");
  }
  try {
    return createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw configError("'publicKey' could not be parsed as a PEM SPKI public key");
  }
}

function secretBytes(secret: unknown): Uint8Array {
  if (typeof secret === 'string') return new TextEncoder().encode(secret);
  if (secret instanceof Uint8Array) return new Uint8Array(secret); // a copy: later changes by the caller do not apply
  throw configError("'secret' must be a string or a Uint8Array");
}

interface ResolvedClaims {
  id: string;
  roles: string;
  tenant: string;
  attrs: string[];
}

function validateClaimMapping(claims: unknown): ResolvedClaims {
  if (claims !== undefined && (typeof claims !== 'object' || claims === null)) throw configError("'claims' must be an object");
  const c = (claims ?? {}) as JwtClaimMapping;
  const name = (value: unknown, option: string, fallback: string): string => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value.length === 0) throw configError(`'claims.${option}' must be a non-empty string`);
    return value;
  };
  if (c.attrs !== undefined && (!Array.isArray(c.attrs) || !c.attrs.every((a) => typeof a === 'string' && a.length > 0))) {
    throw configError("'claims.attrs' must be an array of non-empty claim names");
  }
  return {
    id: name(c.id, 'id', 'sub'),
    roles: name(c.roles, 'roles', 'roles'),
    tenant: name(c.tenant, 'tenant', 'tenant'),
    attrs: [...new Set(c.attrs ?? [])],
  };
}

/** A claim by name, or by dotted path when no claim has that exact name. Own properties only. */
function claimAt(payload: JWTPayload, path: string): unknown {
  if (Object.hasOwn(payload, path)) return payload[path];
  let current: unknown = payload;
  for (const segment of path.split('.')) {
    if (typeof current !== 'object' || current === null || Array.isArray(current) || !Object.hasOwn(current, segment)) return undefined;
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

function rolesFrom(value: unknown, claim: string): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return [...new Set(value.split(/\s+/).filter((role) => role.length > 0))];
  if (Array.isArray(value) && value.every((role) => typeof role === 'string')) return [...new Set(value as string[])];
  throw new IdentityError('malformed', `the '${claim}' claim must be an array of strings or a space-separated string`);
}

function freezePrincipal(principal: Principal): Principal {
  Object.freeze(principal.roles);
  Object.freeze(principal.attrs);
  return Object.freeze(principal);
}

/** Maps a jose (or key source) failure to an IdentityError. Messages are ours: no token, no claim values. */
function toIdentityError(error: unknown, maxTokenAgeSec: number | undefined): IdentityError {
  if (error instanceof IdentityError) return error;
  if (error instanceof KeySourceFailure) {
    return new IdentityError('key_unavailable', "the issuer's signing keys could not be obtained (JWKS fetch failed); try again later", {
      cause: error.cause,
    });
  }
  const code = typeof error === 'object' && error !== null && 'code' in error ? (error as { code: unknown }).code : undefined;
  const claim = typeof error === 'object' && error !== null && 'claim' in error ? String((error as { claim: unknown }).claim) : undefined;
  const reason = typeof error === 'object' && error !== null && 'reason' in error ? (error as { reason: unknown }).reason : undefined;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return claim === 'iat'
        ? new IdentityError('expired', `token was issued more than ${maxTokenAgeSec ?? '?'} seconds ago (maxTokenAgeSec)`)
        : new IdentityError('expired', 'token has expired (exp is in the past)');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (reason === 'missing') return new IdentityError('missing_claim', `token has no '${claim}' claim`);
      if (reason === 'invalid') return new IdentityError('malformed', `token's '${claim}' claim has the wrong type`);
      if (claim === 'iss') return new IdentityError('wrong_issuer', 'token was issued by an issuer that is not accepted');
      if (claim === 'aud') return new IdentityError('wrong_audience', 'token is not intended for an accepted audience');
      if (claim === 'nbf') return new IdentityError('expired', 'token is not valid yet (nbf is in the future)');
      if (claim === 'iat') return new IdentityError('expired', 'token is not valid yet (iat is in the future)');
      return new IdentityError('malformed', `token's '${claim ?? 'unknown'}' claim failed validation`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return new IdentityError('invalid_signature', "token's signing algorithm is not accepted (unsigned 'none' tokens never are)");
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new IdentityError('invalid_signature', 'token signature is invalid');
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return new IdentityError('invalid_signature', "no key in the issuer's key set matches the token (unknown kid or algorithm)");
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return new IdentityError('malformed', 'token is not a well-formed signed JWT');
    case 'ERR_JOSE_NOT_SUPPORTED':
      return new IdentityError('malformed', 'token uses an unsupported algorithm or header');
    default:
      // e.g. a key that does not fit the token's algorithm. Fail closed; the original error may describe the token.
      return new IdentityError('invalid_signature', 'token could not be verified');
  }
}

/**
 * Builds a verifier turning a JWT into a frozen, schema-valid {@link Principal}, or rejecting with an
 * {@link IdentityError}. Options are validated here; a misconfiguration throws a TypeError immediately.
 */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  if (typeof options !== 'object' || options === null) throw configError('options are required');
  const issuer = nonEmptyStrings(options.issuer, 'issuer');
  const audience = nonEmptyStrings(options.audience, 'audience');
  const sources = (['jwksUrl', 'publicKey', 'secret'] as const).filter((key) => options[key] !== undefined);
  if (sources.length !== 1) {
    throw configError(
      `exactly one key source is required ('jwksUrl', 'publicKey' or 'secret'); ${sources.length ? `got ${sources.map((s) => `'${s}'`).join(' and ')}` : 'got none'}`,
    );
  }
  const configured = validateAlgorithms(options.algorithms);
  const clockTolerance = options.clockToleranceSec ?? DEFAULT_CLOCK_TOLERANCE_SEC;
  if (typeof clockTolerance !== 'number' || !Number.isFinite(clockTolerance) || clockTolerance < 0) {
    throw configError("'clockToleranceSec' must be a finite number >= 0");
  }
  const maxTokenAge = options.maxTokenAgeSec;
  if (maxTokenAge !== undefined && (typeof maxTokenAge !== 'number' || !Number.isFinite(maxTokenAge) || maxTokenAge <= 0)) {
    throw configError("'maxTokenAgeSec' must be a finite number > 0");
  }
  const claims = validateClaimMapping(options.claims);

  let key: Uint8Array | JWTVerifyGetKey;
  let algorithms: string[];
  if (options.secret !== undefined) {
    algorithms = configured ?? DEFAULT_SECRET_ALGORITHMS;
    const asymmetric = algorithms.filter((alg) => !(HMAC_ALGORITHMS as readonly string[]).includes(alg));
    if (asymmetric.length) throw configError(`a 'secret' verifies HMAC algorithms only (HS256, HS384, HS512); got ${asymmetric.join(', ')}`);
    const bytes = secretBytes(options.secret);
    const minBytes = Math.max(...algorithms.map((alg) => Number(alg.slice(2)) / 8));
    if (bytes.byteLength < minBytes) throw configError(`'secret' must be at least ${minBytes} bytes for ${algorithms.join(', ')}`);
    key = bytes;
  } else {
    algorithms = configured ?? DEFAULT_KEY_ALGORITHMS;
    const symmetric = algorithms.filter((alg) => (HMAC_ALGORITHMS as readonly string[]).includes(alg));
    if (symmetric.length) throw configError(`HMAC algorithms (${symmetric.join(', ')}) need a 'secret', not a public key or JWKS`);
    if (options.jwksUrl !== undefined) {
      const remote = createRemoteJWKSet(validateJwksUrl(options.jwksUrl));
      key = async (header, token) => {
        try {
          return await remote(header, token);
        } catch (error) {
          const code = (error as { code?: unknown } | null)?.code;
          // Token-side problems pass through; anything else means the key source itself failed.
          if (code === 'ERR_JWKS_NO_MATCHING_KEY' || code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS' || code === 'ERR_JOSE_NOT_SUPPORTED') throw error;
          throw new KeySourceFailure(error);
        }
      };
    } else {
      const pem = options.publicKey as string;
      const usable = algorithmsForKey(parsePublicKeyPem(pem));
      const fitting = algorithms.filter((alg) => usable.includes(alg));
      if (!fitting.length) {
        throw configError(`'publicKey' cannot verify ${algorithms.join(', ')}; it fits ${usable.join(', ')} (set 'algorithms')`);
      }
      algorithms = fitting;
      const imported = new Map<string, Promise<CryptoKey>>();
      key = (header: JWTHeaderParameters) => {
        const alg = header.alg;
        let pending = imported.get(alg);
        if (!pending) {
          pending = importSPKI(pem, alg);
          imported.set(alg, pending);
        }
        return pending;
      };
    }
  }

  const verifyOptions: JWTVerifyOptions = {
    issuer,
    audience,
    algorithms,
    clockTolerance,
    requiredClaims: ['exp'],
    ...(maxTokenAge !== undefined ? { maxTokenAge } : {}),
  };

  const verifyWith = async (token: string): Promise<JWTPayload> => {
    try {
      return (await jwtVerify(token, key as JWTVerifyGetKey, verifyOptions)).payload;
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw error;
      // Several keys in the set fit a token without `kid` (e.g. during rotation): accept if any one verifies it.
      for await (const candidate of error as AsyncIterable<CryptoKey>) {
        try {
          return (await jwtVerify(token, candidate, verifyOptions)).payload;
        } catch (inner) {
          if ((inner as { code?: unknown } | null)?.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') continue;
          throw inner;
        }
      }
      throw new IdentityError('invalid_signature', 'token signature is invalid');
    }
  };

  return async (token: string): Promise<Principal> => {
    if (typeof token !== 'string' || token.length === 0) throw new IdentityError('malformed', 'no token was given');
    if (token.length > MAX_TOKEN_LENGTH) throw new IdentityError('malformed', `token is longer than ${MAX_TOKEN_LENGTH} characters`);
    if (/^bearer\s/i.test(token)) throw new IdentityError('malformed', "pass the token itself, without the 'Bearer ' prefix");
    let payload: JWTPayload;
    try {
      payload = await verifyWith(token);
    } catch (error) {
      throw toIdentityError(error, maxTokenAge);
    }

    const id = claimAt(payload, claims.id);
    if (id === undefined || id === null || id === '') throw new IdentityError('missing_claim', `token has no '${claims.id}' claim (the principal id)`);
    if (typeof id !== 'string') throw new IdentityError('malformed', `the '${claims.id}' claim (the principal id) must be a string`);
    const roles = rolesFrom(claimAt(payload, claims.roles), claims.roles);
    const tenant = claimAt(payload, claims.tenant);
    if (tenant !== undefined && tenant !== null && typeof tenant !== 'string') {
      throw new IdentityError('malformed', `the '${claims.tenant}' claim (the tenant) must be a string`);
    }
    if (options.requireTenant && (typeof tenant !== 'string' || tenant === '')) throw new IdentityError('missing_claim', `token has no '${claims.tenant}' claim (the tenant), which this issuer's tokens must carry`);
    const attrs: Record<string, string | number | boolean> = {};
    for (const name of claims.attrs) {
      const value = claimAt(payload, name);
      if (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) attrs[name] = value;
    }

    const parsed = PrincipalSchema.safeParse({ id, roles, ...(typeof tenant === 'string' ? { tenant } : {}), attrs });
    if (!parsed.success) {
      const where = parsed.error.issues.map((issue) => issue.path.join('.') || 'principal').join(', ');
      throw new IdentityError('malformed', `token claims do not form a valid principal (${where})`);
    }
    return freezePrincipal(parsed.data);
  };
}

function printable(value: string): string {
  return JSON.stringify(value).slice(1, -1);
}

/**
 * A principal taken on trust from local input (the CLI's `--user`/`--roles`/`--tenant`), with the warning to show.
 * It is NOT verified: production runs must take the principal from {@link createJwtVerifier}.
 */
export function localDevelopmentPrincipal(input: { id: string; roles?: string[]; tenant?: string }): { principal: Principal; warning: string } {
  const parsed = PrincipalSchema.safeParse({
    id: input.id,
    roles: input.roles ?? [],
    ...(input.tenant !== undefined ? { tenant: input.tenant } : {}),
    attrs: {},
  });
  if (!parsed.success) {
    const where = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'principal'}: ${issue.message}`).join('; ');
    throw new IdentityError('malformed', `invalid local development identity (${where})`);
  }
  const principal = freezePrincipal(parsed.data);
  const warning =
    `using a local development identity (user '${printable(principal.id)}', roles: ` +
    `${principal.roles.length ? principal.roles.map(printable).join(', ') : 'none'}` +
    `${principal.tenant !== undefined ? `, tenant '${printable(principal.tenant)}'` : ''}) taken from the command line; ` +
    'this identity is NOT VERIFIED: production runs must take the principal from verified credentials';
  return { principal, warning };
}
