import { connect } from 'node:net';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisCluster, type RedisClusterHandle } from './support/redis-cluster.js';

const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

describe('local Redis Cluster harness', () => {
  let handle: RedisClusterHandle;
  let cluster: Cluster;

  beforeAll(async () => {
    handle = await startRedisCluster();
    cluster = new Cluster(handle.nodes);
  }, 60_000);

  afterAll(async () => {
    // disconnect, unlike quit, is harmless when the last test already closed the client.
    cluster?.disconnect();
    await handle?.stop();
  });

  it('describes its 3 masters', () => {
    expect(handle.ports).toHaveLength(3);
    expect(new Set(handle.ports).size).toBe(3);
    expect(handle.nodes).toEqual(handle.ports.map((port) => ({ host: '127.0.0.1', port })));
    expect(handle.url).toBe(`redis+cluster://${handle.ports.map((port) => `127.0.0.1:${port}`).join(',')}`);
  });

  it('routes keys with different hash tags to every master, and reads them back', async () => {
    await handle.resetStats();
    const keys = Array.from({ length: 60 }, (_, i) => `{tag-${i}}:key`);
    for (const key of keys) await cluster.set(key, `value of ${key}`);
    expect(await Promise.all(keys.map((key) => cluster.get(key)))).toEqual(keys.map((key) => `value of ${key}`));

    const stats = await handle.commandStats();
    expect([...stats.keys()].sort()).toEqual([...handle.ports].sort());
    const sets = handle.ports.map((port) => stats.get(port)?.['set'] ?? 0);
    for (const count of sets) expect(count).toBeGreaterThan(0);
    // Each SET ran once, on the one master owning its slot.
    expect(sets.reduce((a, b) => a + b, 0)).toBe(keys.length);
  });

  it('keeps keys that share a hash tag on one slot, so multi-key commands work on them', async () => {
    await cluster.mset('{order-7}:status', 'paid', '{order-7}:total', '42');
    expect(await cluster.mget('{order-7}:status', '{order-7}:total')).toEqual(['paid', '42']);
    await expect(cluster.mset('{a}:x', '1', '{b}:x', '2')).rejects.toThrow(/CROSSSLOT/);
  });

  it('stop ends every node and can be called again', async () => {
    cluster.disconnect();
    await handle.stop();
    await handle.stop();
    // Neither the client ports nor the cluster bus ports accept connections any more.
    for (const port of handle.ports) {
      expect(await accepts(port)).toBe(false);
      expect(await accepts(port + 10000)).toBe(false);
    }
  });
});
