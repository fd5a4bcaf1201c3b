import { Redis } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** The URL without its password, for printing. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** Asks Redis for a PONG without retrying: `undefined` when it answered, otherwise why not. */
export async function pingRedis(url: string, timeoutMs = 1500): Promise<string | undefined> {
  let redis: Redis;
  try {
    redis = new Redis(url, {
      lazyConnect: true,
      connectTimeout: timeoutMs,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
    });
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
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
