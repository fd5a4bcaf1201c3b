import calculateSlot from 'cluster-key-slot';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CellLayoutError, Cells } from '../runtime/stores/cells.js';
import { isClusterUrl, parseClusterUrl, redactUrl, RedisUrlError } from '../runtime/redis-url.js';

/** The slot a key is stored in: its first non-empty {…}, as Redis Cluster hashes it. */
const slotOfKey = (key: string): number => calculateSlot(key);

describe('Cells: where a run is kept', () => {
  it('keeps every key of one run in one slot, whatever the run id', () => {
    const cells = new Cells('palisade', 16);
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), (runId) => {
        const prefix = cells.prefixOf(runId);
        const keys = [`${prefix}:run:${runId}`, `${prefix}:run:${runId}:events`, `${prefix}:seen:agent:${runId}`, `${prefix}:agent.triage:${runId}`, `${prefix}:audit:head`];
        expect(new Set(keys.map(slotOfKey)).size).toBe(1);
        expect(cells.of(runId)).toBe(cells.of(runId));
      }),
    );
  });

  it('gives each cell its own share of the slot range, so cells spread evenly over any masters holding contiguous ranges', () => {
    for (const count of [2, 3, 7, 12, 16, 24, 64]) {
      const cells = new Cells('p', count);
      const slots = cells.all.map((prefix) => slotOfKey(`${prefix}:x`));
      slots.forEach((slot, k) => {
        expect(slot).toBeGreaterThanOrEqual((k * 16384) / count);
        expect(slot).toBeLessThan(((k + 1) * 16384) / count);
      });
      // Masters with equal ranges (as redis-cli --cluster create makes them: 0-5460, 5461-10922, 10923-16383 for
      // three) get count/masters cells each, give or take one, and exactly that when it divides.
      for (const masters of [2, 3, 4, 6]) {
        const perMaster = new Array<number>(masters).fill(0);
        for (const slot of slots) perMaster[Math.min(masters - 1, Math.floor(slot / Math.ceil(16384 / masters)))]! += 1;
        expect(Math.max(...perMaster) - Math.min(...perMaster)).toBeLessThanOrEqual(count % masters === 0 ? 0 : 1);
      }
    }
  });

  it('spreads runs over the cells', () => {
    const cells = new Cells('p', 8);
    const counts = new Array<number>(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[cells.of(`run-${i}-${(i * 2654435761) % 1e9}`)]! += 1;
    expect(Math.min(...counts)).toBeGreaterThan(800);
  });

  it('keeps the plain prefix with one untagged cell, and refuses a prefix with braces once cells are tagged', () => {
    expect(new Cells('palisade').prefixOf('r1')).toBe('palisade');
    expect(new Cells('palisade', 1, true).prefixOf('r1')).toMatch(/^palisade:\{c0\.\d+\}$/);
    expect(() => new Cells('{palisade}', 4)).toThrow(CellLayoutError);
    expect(() => new Cells('p', 0)).toThrow(/whole number/);
    expect(() => new Cells('p', 1.5)).toThrow(/whole number/);
  });
});

describe('cluster URLs', () => {
  it('reads the seed nodes, credentials and TLS of redis+cluster:// and rediss+cluster://', () => {
    expect(isClusterUrl('redis+cluster://a:7000,b:7001')).toBe(true);
    expect(isClusterUrl('redis://a:7000')).toBe(false);
    const plain = parseClusterUrl('redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002');
    expect(plain.nodes).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: '10.0.0.2', port: 6379 },
      { host: '::1', port: 7002 },
    ]);
    expect(plain.options.redisOptions).toEqual({});
    const secure = parseClusterUrl('rediss+cluster://ops:p%40ss@h1:7000,h2:7001/');
    expect(secure.options.redisOptions).toEqual({ username: 'ops', password: 'p@ss', tls: {} });
    expect(parseClusterUrl('redis+cluster://:secret@h1:7000').options.redisOptions).toEqual({ password: 'secret' });
  });

  it('refuses what is not host:port, and never prints the password', () => {
    expect(() => parseClusterUrl('redis+cluster://h1:7000,h2:notaport')).toThrow(RedisUrlError);
    expect(() => parseClusterUrl('redis+cluster://h1:99999')).toThrow(/not host:port/);
    expect(() => parseClusterUrl('redis+cluster://u:hunter2@h1:1,h2:x')).toThrow(/^(?!.*hunter2)/);
    expect(redactUrl('redis+cluster://u:hunter2@h1:7000,h2:7001')).toBe('redis+cluster://***@h1:7000,h2:7001');
  });
});
