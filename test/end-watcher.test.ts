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

// As the finish script writes an end: to the stream, and on the channel of the same name.
const end = async (i: number) => {
  await redis.xadd(`${prefix}:end:${i}`, '*', 's', 'completed');
  await redis.publish(`${prefix}:end:${i}`, 'completed');
};

describe('EndWatcher: many waits over one subscriber', () => {
  it('resolves each wait when its stream gets an entry, whichever order they end in and whenever they joined', async () => {
    const watcher = new EndWatcher(redis);
    try {
      await end(0);
      // Already ended: found by the look after subscribing.
      await expect(watcher.wait(`${prefix}:end:0`, 30_000)).resolves.toBe(true);
      const waits = Array.from({ length: 40 }, (_, i) => watcher.wait(`${prefix}:end:${i + 1}`, 30_000));
      // Two waits on one stream, the second joining while the first is subscribed.
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

  it('finds an end published while its subscriber was away, when the subscriber is back', async () => {
    // Named, so that only this watcher's subscriber is cut (its duplicate keeps the name), not other tests'.
    const name = `watcher-${prefix.slice(-8)}`;
    const named = new Redis(REDIS_URL, { connectionName: name, maxRetriesPerRequest: 1 });
    const watcher = new EndWatcher(named);
    try {
      const waiting = watcher.wait(`${prefix}:end:away`, 30_000);
      // Once it is subscribed: the run ends with its message lost (not published here), and the subscriber is cut.
      await expect.poll(async () => (await redis.pubsub('NUMSUB', `${prefix}:end:away`))[1]).toBe(1);
      await redis.xadd(`${prefix}:end:away`, '*', 's', 'completed');
      const list = String(await redis.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
      const ids = [...list.matchAll(/^id=(\d+) .* name=(\S*)/gm)].filter((m) => m[2] === name).map((m) => m[1]!);
      expect(ids).toHaveLength(1);
      await redis.client('KILL', 'ID', ids[0]!);
      await expect(waiting).resolves.toBe(true);
    } finally {
      watcher.close();
      named.disconnect();
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
