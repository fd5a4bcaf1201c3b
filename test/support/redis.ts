import { randomBytes } from 'node:crypto';
import { deleteKeysUnder } from '../../runtime/redis-keys.js';
import { createRedis } from '../../runtime/redis-url.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A key prefix no other test or earlier run uses. */
export const uniquePrefix = (name: string): string => `palisade-test-${name}-${randomBytes(4).toString('hex')}`;

/** Deletes every key under the prefix (on every master of a cluster URL). */
export async function deleteKeys(prefix: string, url = REDIS_URL): Promise<number> {
  const redis = createRedis(url, { maxRetriesPerRequest: 1 });
  try {
    return await deleteKeysUnder(redis, prefix);
  } finally {
    redis.disconnect();
  }
}
