import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { EndWatcher } from '../runtime/stores/end-watcher.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const prefix = uniquePrefix('ends');
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(async () => {
  await deleteKeys(prefix);
  redis.disconnect();
});

const end = (i: number) => redis.xadd(`${prefix}:end:${i}`, '*', 's', 'completed');

describe('EndWatcher: many waits over one connection', () => {
  it('resolves each wait when its stream gets an entry, whichever order they end in and whenever they joined', async () => {
    const watcher = new EndWatcher(redis);
    try {
      await end(0);
      // Already ended: answered by the first read.
      await expect(watcher.wait(`${prefix}:end:0`, 30_000)).resolves.toBe(true);
      const waits = Array.from({ length: 40 }, (_, i) => watcher.wait(`${prefix}:end:${i + 1}`, 30_000));
      // Two waits on one stream, one joining while the read is blocked on the others.
      const twice = watcher.wait(`${prefix}:end:7`, 30_000);
      const order = [...waits.keys()].sort(() => Math.random() - 0.5);
      for (const i of order) await end(i + 1);
      await expect(Promise.all(waits)).resolves.toEqual(waits.map(() => true));
      await expect(twice).resolves.toBe(true);
      // A stream that gets nothing: the wait gives up after its own time.
      await expect(watcher.wait(`${prefix}:end:never`, 50)).resolves.toBe(false);
    } finally {
      watcher.close();
    }
  });

  it('works where the server refuses CLIENT commands (some managed Redis), with short blocking reads', async () => {
    const user = `palisade-test-${prefix.slice(-8)}`;
    await redis.acl('SETUSER', user, 'on', '>watcher-test-password', '~*', '&*', '+@all', '-client');
    const limited = new Redis(REDIS_URL, { username: user, password: 'watcher-test-password', maxRetriesPerRequest: 1 });
    const watcher = new EndWatcher(limited);
    try {
      const first = watcher.wait(`${prefix}:end:acl-1`, 30_000);
      const second = watcher.wait(`${prefix}:end:acl-2`, 30_000);
      await redis.xadd(`${prefix}:end:acl-2`, '*', 's', 'completed');
      await expect(second).resolves.toBe(true);
      await redis.xadd(`${prefix}:end:acl-1`, '*', 's', 'completed');
      await expect(first).resolves.toBe(true);
    } finally {
      watcher.close();
      limited.disconnect();
      await redis.acl('DELUSER', user);
    }
  });

  it('ends pending waits as not ended when closed, and answers none after', async () => {
    const watcher = new EndWatcher(redis);
    const pending = watcher.wait(`${prefix}:end:closing`, 30_000);
    watcher.close();
    await expect(pending).resolves.toBe(false);
    await expect(watcher.wait(`${prefix}:end:0`, 30_000)).resolves.toBe(false);
  });
});
