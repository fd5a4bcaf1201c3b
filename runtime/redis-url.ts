import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** A connection to one Redis server or to a Redis Cluster: everything Palisade sends works on both. */
export type RedisClient = Redis | Cluster;

/** What a connection is made from: a URL (`redis://…`, `rediss://…`, `redis+cluster://h:p,h:p`), ioredis options, or a client to duplicate. */
export type RedisConnection = string | RedisOptions | RedisClient;

export class RedisUrlError extends Error {
  override readonly name = 'RedisUrlError';
}

const CLUSTER_SCHEMES = ['redis+cluster:', 'rediss+cluster:'];

/** True when the URL names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`). */
export const isClusterUrl = (url: string): boolean => CLUSTER_SCHEMES.some((s) => url.startsWith(`${s}//`));

interface ClusterUrl {
  nodes: Array<{ host: string; port: number }>;
  options: ClusterOptions;
}

/**
 * `redis+cluster://[user:password@]host:port,host:port[,...]`: the seed nodes of one cluster (any of
 * them will do; the client learns the rest). WHATWG URL parsing refuses a comma-separated authority,
 * so the form is read here; `rediss+cluster` turns TLS on for every node.
 */
export function parseClusterUrl(url: string): ClusterUrl {
  const scheme = CLUSTER_SCHEMES.find((s) => url.startsWith(`${s}//`));
  if (!scheme) throw new RedisUrlError(`${redactUrl(url)} is not a cluster URL (redis+cluster://host:port,host:port)`);
  const rest = url.slice(scheme.length + 2).replace(/[/?#].*$/, '');
  const at = rest.lastIndexOf('@');
  const credentials = at >= 0 ? rest.slice(0, at) : '';
  const hosts = at >= 0 ? rest.slice(at + 1) : rest;
  const nodes = hosts.split(',').map((part) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(part.trim());
    const port = Number(m?.[2] ?? 6379);
    if (!m || port < 1 || port > 65535) throw new RedisUrlError(`${redactUrl(url)}: '${part}' is not host:port`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
  });
  const colon = credentials.indexOf(':');
  const username = colon >= 0 ? decodeURIComponent(credentials.slice(0, colon)) : '';
  const password = colon >= 0 ? decodeURIComponent(credentials.slice(colon + 1)) : decodeURIComponent(credentials);
  const redisOptions: RedisOptions = {
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(scheme === 'rediss+cluster:' ? { tls: {} } : {}),
  };
  return { nodes, options: { redisOptions } };
}

/**
 * A new client for `spec`. Cluster clients read and write on masters only (a replica's copy may lag
 * behind a claim or an audit head) and take no key prefix of their own (Palisade's keys carry it).
 */
export function createRedis(spec: RedisConnection, extra: RedisOptions = {}): RedisClient {
  if (spec instanceof Redis || spec instanceof Cluster) return duplicateRedis(spec, extra);
  if (typeof spec === 'string' && isClusterUrl(spec)) {
    const { nodes, options } = parseClusterUrl(spec);
    return coalesceWrites(new Cluster(nodes, clusterOptions(options, extra)));
  }
  return coalesceWrites(typeof spec === 'string' ? new Redis(spec, extra) : new Redis({ ...spec, ...extra }));
}

/**
 * Commands sent in one tick leave in one socket write: the socket is corked at the first and uncorked
 * on the next tick. ioredis writes each command as it comes, and those write calls were the largest
 * part of its CPU on a hop (most hops send several commands at once); Redis, too, reads them in one go.
 * Order, replies and errors are unchanged. A cluster's node connections are corked as it opens them.
 */
export function coalesceWrites<T extends RedisClient>(client: T): T {
  if (client instanceof Cluster) {
    client.on('+node', (node: Redis) => coalesceWrites(node));
    return client;
  }
  const redis = client as Redis;
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (command, stream) => {
    const socket = redis.stream;
    // Only commands written now: queued ones (offline, or a given stream) are written their own way.
    if (stream === undefined && redis.status === 'ready' && socket && socket.writableCorked === 0) {
      socket.cork();
      process.nextTick(() => socket.uncork());
    }
    return send(command, stream);
  };
  return client;
}

function clusterOptions(base: ClusterOptions, extra: RedisOptions): ClusterOptions {
  const { lazyConnect, maxRetriesPerRequest, enableOfflineQueue, ...perNode } = extra;
  return {
    ...base,
    scaleReads: 'master',
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    redisOptions: { ...base.redisOptions, ...perNode, ...(maxRetriesPerRequest !== undefined ? { maxRetriesPerRequest } : {}) },
  };
}

/** A new connection like `client` (same servers, same credentials), with `extra` on top. */
export function duplicateRedis(client: RedisClient, extra: RedisOptions = {}): RedisClient {
  if (client instanceof Cluster) return coalesceWrites(client.duplicate(undefined, clusterOptions({ redisOptions: client.options.redisOptions ?? {} }, extra)));
  return coalesceWrites(client.duplicate(extra));
}

/** The servers that hold keys: the one server, or every master of a cluster (for SCAN, INFO). */
export async function masters(client: RedisClient): Promise<Redis[]> {
  if (!(client instanceof Cluster)) return [client];
  // A cluster client knows its masters once it has loaded the slot map, which its first command waits for.
  await client.ping();
  return client.nodes('master');
}

/** The URL without its password, for printing. */
export function redactUrl(url: string): string {
  if (isClusterUrl(url)) return url.replace(/\/\/[^@/]*@/, '//***@');
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** Asks Redis (every seed of a cluster URL: the first that answers) for a PONG without retrying: `undefined` when it answered, otherwise why not. */
export async function pingRedis(url: string, timeoutMs = 1500): Promise<string | undefined> {
  if (isClusterUrl(url)) {
    let parsed: ClusterUrl;
    try {
      parsed = parseClusterUrl(url);
    } catch (error) {
      return error instanceof Error ? error.message : String(error);
    }
    const problems: string[] = [];
    const { redisOptions } = parsed.options;
    for (const node of parsed.nodes) {
      const problem = await pingOne(new Redis({ ...redisOptions, host: node.host, port: node.port, ...PING_OPTIONS(timeoutMs) }), timeoutMs);
      if (problem === undefined) return undefined;
      problems.push(`${node.host}:${node.port}: ${problem}`);
    }
    return problems.join('; ');
  }
  let redis: Redis;
  try {
    redis = new Redis(url, PING_OPTIONS(timeoutMs));
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  return pingOne(redis, timeoutMs);
}

const PING_OPTIONS = (timeoutMs: number): RedisOptions => ({
  lazyConnect: true,
  connectTimeout: timeoutMs,
  maxRetriesPerRequest: 0,
  retryStrategy: () => null,
  enableOfflineQueue: false,
});

async function pingOne(redis: Redis, timeoutMs: number): Promise<string | undefined> {
  // With retries off, connect() rejects with a bare 'Connection is closed.'; the socket error says why.
  let cause: string | undefined;
  redis.on('error', (error: Error) => (cause ??= error.message));
  let timer: NodeJS.Timeout | undefined;
  try {
    const attempt = (async () => {
      await redis.connect();
      await redis.ping();
      return undefined;
    })();
    const deadline = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs + 500)));
    return await Promise.race([attempt, deadline]);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return cause ?? (message || 'connection failed');
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}
