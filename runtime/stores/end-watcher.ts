import { duplicateRedis, type RedisClient } from '../redis-url.js';

/** While waits are pending, they also look this often: a cluster client resubscribes on another node without saying so. */
const LOOK_EVERY_MS = 1000;

/**
 * Waits for the ends of many runs over one subscriber connection. A run's end is written to a stream
 * and published on a channel of the same name (the finish script does both), so a wait subscribes to the
 * channel and then looks for the stream: an end written before the subscription is found by the look,
 * one written after it by the message. Pub/sub reaches a subscriber on any node of a cluster, which a
 * blocking read of many keys (one slot each) cannot.
 *
 * A message lost while the subscriber reconnects is made up for by looking again when it is ready, and
 * every second while waits are pending (an ioredis Cluster moves its subscriber to another node without
 * a 'ready'); a subscription that failed is asked for again by the next wait on that key.
 */
export class EndWatcher {
  private sub: RedisClient | undefined;
  private readonly waiters = new Map<string, Set<(ended: boolean) => void>>();
  /** Keys whose subscription was asked for and not refused. */
  private readonly subscribed = new Set<string>();
  private looking: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly redis: RedisClient) {}

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
        if (set.size === 0 && this.waiters.get(key) === set) {
          this.waiters.delete(key);
          this.subscribed.delete(key);
          if (!this.closed) void this.sub?.unsubscribe(key).catch(() => undefined);
          if (this.waiters.size === 0) {
            clearInterval(this.looking);
            this.looking = undefined;
          }
        }
        resolve(ended);
      };
      const timer = setTimeout(() => done(false), blockMs);
      set.add(done);
      this.looking ??= setInterval(() => void this.look([...this.waiters.keys()]).catch(() => undefined), LOOK_EVERY_MS).unref();
      void this.subscribe(key)
        .then(() => this.look([key]))
        .catch(() => undefined);
    });
  }

  private async subscribe(key: string): Promise<void> {
    if (this.subscribed.has(key)) return;
    this.subscribed.add(key);
    try {
      await this.subscriber().subscribe(key);
    } catch (error) {
      this.subscribed.delete(key);
      throw error;
    }
  }

  private ended(key: string): void {
    for (const done of [...(this.waiters.get(key) ?? [])]) done(true);
  }

  /** Ends the waits whose stream already has its entry. */
  private async look(keys: string[]): Promise<void> {
    const found = await Promise.all(keys.map((key) => this.redis.exists(key)));
    keys.forEach((key, i) => found[i] && this.ended(key));
  }

  private subscriber(): RedisClient {
    if (!this.sub) {
      const sub = duplicateRedis(this.redis);
      sub.on('error', () => {
        // It reconnects and subscribes again by itself; meanwhile the waits' own timers run.
      });
      sub.on('message', (channel: string) => this.ended(channel));
      // After a reconnection: ends published while it was away reached nobody.
      sub.on('ready', () => void this.look([...this.waiters.keys()]).catch(() => undefined));
      this.sub = sub;
    }
    return this.sub;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.looking);
    for (const set of this.waiters.values()) for (const done of [...set]) done(false);
    this.sub?.disconnect();
    this.sub = undefined;
  }
}
