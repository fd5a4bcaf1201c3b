import { ReplyError, type Redis } from 'ioredis';

/** How long one blocking read waits before it is issued again; a wait that starts meanwhile interrupts it. */
const BLOCK_MS = 1000;
/** After a failed read (Redis away, loading its data), the next one waits this long. */
const RETRY_MS = 200;
/** Where CLIENT is not allowed (some managed Redis), reads block this briefly instead, so a new wait is soon included. */
const SHORT_BLOCK_MS = 20;

/**
 * Waits for the ends of many runs over one connection: one blocking XREAD on every awaited end stream.
 * A connection per wait would cost a TCP connect and the client's handshake for every run a producer
 * follows. A wait that starts while the read is blocked interrupts it (CLIENT UNBLOCK from the shared
 * connection), so the next read includes it at once.
 */
/** The connection's client id, or null when the server refuses the command (an error reply, not a lost connection). */
async function clientId(conn: Redis): Promise<number | null> {
  try {
    return (await conn.client('ID')) as number;
  } catch (error) {
    if (error instanceof ReplyError) return null;
    throw error;
  }
}

export class EndWatcher {
  private conn: Redis | undefined;
  /** The reader's client id; null where the server refuses CLIENT commands. */
  private connId: number | null | undefined;
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
    while (this.waiters.size > 0 && !this.closed) {
      try {
        const conn = this.connection();
        // The id changes with every reconnection; CLIENT UNBLOCK needs the current one.
        this.connId ??= await clientId(conn);
        const keys = [...this.waiters.keys()];
        this.blocked = true;
        let reply: Array<[string, unknown]> | null;
        try {
          const block = this.connId === null ? SHORT_BLOCK_MS : BLOCK_MS;
          reply = (await conn.xread('COUNT', 1, 'BLOCK', block, 'STREAMS', ...keys, ...keys.map(() => '0'))) as Array<[string, unknown]> | null;
        } finally {
          this.blocked = false;
        }
        for (const [key] of reply ?? []) for (const done of [...(this.waiters.get(key) ?? [])]) done(true);
      } catch {
        // Redis is away or not ready: the waits stay until their own time is up (their callers then read
        // the run record, which says why), and reading starts again shortly, not at once.
        this.connId = undefined;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  private connection(): Redis {
    if (!this.conn) {
      const conn = this.redis.duplicate();
      conn.on('error', () => {
        // The blocked read rejects with the cause.
      });
      conn.on('ready', () => (this.connId = undefined));
      this.conn = conn;
    }
    return this.conn;
  }

  private async interrupt(): Promise<void> {
    if (typeof this.connId === 'number') await this.redis.client('UNBLOCK', this.connId).catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    for (const set of this.waiters.values()) for (const done of [...set]) done(false);
    this.conn?.disconnect();
    this.conn = undefined;
  }
}
