import type { Redis } from 'ioredis';

/** How long one blocking read waits before it is issued again; a wait that starts meanwhile interrupts it. */
const BLOCK_MS = 1000;

/**
 * Waits for the ends of many runs over one connection: one blocking XREAD on every awaited end stream.
 * A connection per wait would cost a TCP connect and the client's handshake for every run a producer
 * follows. A wait that starts while the read is blocked interrupts it (CLIENT UNBLOCK from the shared
 * connection), so the next read includes it at once.
 */
export class EndWatcher {
  private conn: Redis | undefined;
  private connId: Promise<number> | undefined;
  private readonly waiters = new Map<string, Set<(ended: boolean) => void>>();
  private reading: Promise<void> | undefined;
  private blocked = false;
  private closed = false;

  constructor(private readonly redis: Redis) {}

  /** Resolves true once the stream at `key` has an entry (now or within `blockMs`), false otherwise. */
  wait(key: string, blockMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      let waiting = this.waiters.get(key);
      if (!waiting) this.waiters.set(key, (waiting = new Set()));
      const set = waiting;
      const done = (ended: boolean): void => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        resolve(ended);
      };
      const timer = setTimeout(() => done(false), blockMs);
      set.add(done);
      if (!this.reading) this.reading = this.read().finally(() => (this.reading = undefined));
      else if (this.blocked) void this.interrupt();
    });
  }

  private async read(): Promise<void> {
    try {
      while (this.waiters.size > 0 && !this.closed) {
        const conn = this.connection();
        await this.connId;
        const keys = [...this.waiters.keys()];
        this.blocked = true;
        let reply: Array<[string, unknown]> | null;
        try {
          reply = (await conn.xread('COUNT', 1, 'BLOCK', BLOCK_MS, 'STREAMS', ...keys, ...keys.map(() => '0'))) as Array<[string, unknown]> | null;
        } finally {
          this.blocked = false;
        }
        for (const [key] of reply ?? []) for (const done of [...(this.waiters.get(key) ?? [])]) done(true);
      }
    } catch {
      // Redis failed: every wait ends as "not yet", and its caller reads the run record, which says why.
      for (const set of this.waiters.values()) for (const done of [...set]) done(false);
    }
  }

  private connection(): Redis {
    if (!this.conn) {
      const conn = this.redis.duplicate();
      conn.on('error', () => {
        // The blocked read rejects with the cause.
      });
      // The id changes with every reconnection; CLIENT UNBLOCK needs the current one.
      const id = (): Promise<number> => conn.client('ID') as Promise<number>;
      this.connId = id();
      conn.on('ready', () => void (this.connId = id()));
      this.conn = conn;
    }
    return this.conn;
  }

  private async interrupt(): Promise<void> {
    const id = await this.connId?.catch(() => undefined);
    if (id !== undefined) await this.redis.client('UNBLOCK', id).catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    for (const set of this.waiters.values()) for (const done of [...set]) done(false);
    this.conn?.disconnect();
    this.conn = undefined;
  }
}
