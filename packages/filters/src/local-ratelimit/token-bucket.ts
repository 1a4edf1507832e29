/**
 * A token bucket refilled lazily: no timer, the tokens owed since the last fill are added
 * when a request looks at the bucket. Fills happen on fill-interval boundaries counted from
 * the bucket's creation, as Envoy's timer-driven fills would.
 */
import type { Clock } from '../timers.ts';

export { monotonicClock, type Clock } from '../timers.ts';

/** A bucket's settings, from Envoy's TokenBucket (fill interval in milliseconds). */
export interface TokenBucketSettings {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
}

/** What the limiter asks of a bucket: one thread's own (`TokenBucket`) or one shared by every worker (`SharedTokenBucket`). */
export interface Bucket extends TokenBucketSettings {
  /** Takes one token; false when none is left. */
  consume(): boolean;
  /** Tokens left now. */
  readonly remaining: number;
  /** Seconds until the next fill, rounded up (x-ratelimit-reset). */
  readonly resetSeconds: number;
}

export class TokenBucket implements Bucket {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
  readonly #clock: Clock;
  #tokens: number;
  /** When the last fill happened (or the bucket was made). */
  #lastFill: number;

  constructor(config: TokenBucketSettings, clock: Clock) {
    this.maxTokens = config.maxTokens;
    this.tokensPerFill = config.tokensPerFill;
    this.fillIntervalMs = config.fillIntervalMs;
    this.#clock = clock;
    this.#tokens = config.maxTokens;
    this.#lastFill = clock();
  }

  /** Takes one token; false when none is left. */
  consume(): boolean {
    this.#refill(this.#clock());
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  /** Tokens left now. */
  get remaining(): number {
    this.#refill(this.#clock());
    return this.#tokens;
  }

  /** Seconds until the next fill, rounded up (x-ratelimit-reset). */
  get resetSeconds(): number {
    const now = this.#clock();
    this.#refill(now);
    return Math.ceil((this.#lastFill + this.fillIntervalMs - now) / 1000);
  }

  /** True when `config` describes this bucket (then it may be kept across a reload). */
  sameAs(config: TokenBucketSettings): boolean {
    return config.maxTokens === this.maxTokens && config.tokensPerFill === this.tokensPerFill && config.fillIntervalMs === this.fillIntervalMs;
  }

  #refill(now: number): void {
    const elapsed = now - this.#lastFill;
    if (elapsed < this.fillIntervalMs) return;
    const fills = Math.floor(elapsed / this.fillIntervalMs);
    this.#lastFill += fills * this.fillIntervalMs;
    const t = this.#tokens + fills * this.tokensPerFill;
    this.#tokens = t > this.maxTokens ? this.maxTokens : t;
  }
}

/** The persistent-state key of a bucket: its owner's key plus its settings, so changed settings start a fresh bucket. */
export function bucketKey(key: string, b: TokenBucketSettings): string {
  return `envoy.filters.http.local_ratelimit|${key}|${b.maxTokens}/${b.tokensPerFill}/${b.fillIntervalMs}`;
}
