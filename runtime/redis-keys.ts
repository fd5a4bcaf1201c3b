import { Cluster } from 'ioredis';
import { masters, type RedisClient } from './redis-url.js';

/**
 * Deletes every key under `prefix:` with SCAN MATCH and UNLINK (never KEYS, which blocks Redis) on every
 * master; returns how many. On a cluster each key is unlinked on its own: one UNLINK of keys in several
 * slots is refused even on one node.
 */
export async function deleteKeysUnder(redis: RedisClient, prefix: string): Promise<number> {
  const clustered = redis instanceof Cluster;
  let deleted = 0;
  for (const node of await masters(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length === 0) continue;
      if (!clustered) deleted += await node.unlink(...keys);
      else for (const [, n] of (await node.pipeline(keys.map((key) => ['unlink', key])).exec()) ?? []) deleted += Number(n ?? 0);
    } while (cursor !== '0');
  }
  return deleted;
}
