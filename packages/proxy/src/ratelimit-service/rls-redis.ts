/**
 * Fixed-window counters in Redis, as `envoyproxy/ratelimit` keeps them, so several services
 * (and the gateways that ask them) share one count: the key is
 * `<prefix><domain>_<key>_<value>_…_<window start in unix seconds>`, and one pipeline per
 * request does `INCRBY key hits` and `EXPIRE key <window>` for each of its descriptors.
 * Redis unreachable: the call fails at once (no queue, no retries), so the service answers
 * an error and the proxy's failure mode decides.
 */
import { Redis } from 'ioredis';

/** One counter to increase. */
export interface CounterHit {
  readonly key: string;
  readonly windowSeconds: number;
}

export interface CounterStoreOptions {
  /** `redis://host:port[/db]`, or `host:port` as envoyproxy/ratelimit's REDIS_URL. */
  readonly url: string;
  /** A Redis command slower than this fails (ms). */
  readonly commandTimeoutMs: number;
  readonly onError: (err: Error) => void;
}

export class RedisCounterStore {
  readonly #redis: Redis;

  constructor(o: CounterStoreOptions) {
    const url = /^[a-z]+:\/\//.test(o.url) ? o.url : `redis://${o.url}`;
    this.#redis = new Redis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: o.commandTimeoutMs,
      connectTimeout: o.commandTimeoutMs,
      // Reconnect in the background, at most every second: counting resumes when Redis is back.
      retryStrategy: (times) => Math.min(times * 100, 1000),
    });
    this.#redis.on('error', o.onError);
  }

  /** Adds `hits` to each counter; resolves with the counts after the increase, in order. */
  async increase(hits: number, counters: readonly CounterHit[]): Promise<number[]> {
    const p = this.#redis.pipeline();
    for (const c of counters) p.incrby(c.key, hits).expire(c.key, c.windowSeconds);
    const results = await p.exec();
    if (results === null) throw new Error('redis: pipeline discarded');
    const out: number[] = [];
    for (let i = 0; i < counters.length; i++) {
      const [err, n] = results[i * 2]!;
      if (err !== null) throw err;
      const [expireErr] = results[i * 2 + 1]!;
      if (expireErr !== null) throw expireErr;
      out.push(Number(n));
    }
    return out;
  }

  async close(): Promise<void> {
    this.#redis.disconnect();
  }
}
