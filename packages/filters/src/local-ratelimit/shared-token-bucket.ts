import { CELL_F64, type SharedCells } from '../shared-cells.ts';
import { type Bucket, type TokenBucketSettings } from './token-bucket.ts';

/**
 * A clock every thread of the process reads alike: milliseconds since the epoch, from the
 * monotonic clock (each thread's `performance.now()` counts from its own start, its
 * `timeOrigin` says when that was).
 */
export const processClock = (): number => performance.timeOrigin + performance.now();

/**
 * A token bucket every worker thread takes from (Envoy's local rate limit is one bucket per
 * listener or route for the whole proxy, whatever its worker count): the tokens and the last
 * fill live in shared memory, updated under the record's lock; refilled lazily, as
 * `TokenBucket`, with no allocation per request.
 */
export class SharedTokenBucket implements Bucket, Disposable {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
  readonly #cells: SharedCells;
  readonly #f64: Float64Array;
  /** Index of the tokens in `#f64`; the last fill follows it. */
  readonly #at: number;
  readonly #base: number;
  #released = false;

  /** The bucket of `key` in `cells`; null when the shared memory is full (the caller keeps its own). */
  static acquire(cells: SharedCells, key: string, config: TokenBucketSettings): SharedTokenBucket | null {
    const base = cells.acquire(key, (b) => {
      const at = b / 2 + CELL_F64;
      cells.f64[at] = config.maxTokens;
      cells.f64[at + 1] = processClock();
    });
    return base < 0 ? null : new SharedTokenBucket(cells, base, config);
  }

  private constructor(cells: SharedCells, base: number, config: TokenBucketSettings) {
    this.maxTokens = config.maxTokens;
    this.tokensPerFill = config.tokensPerFill;
    this.fillIntervalMs = config.fillIntervalMs;
    this.#cells = cells;
    this.#f64 = cells.f64;
    this.#base = base;
    this.#at = base / 2 + CELL_F64;
  }

  consume(): boolean {
    const cells = this.#cells;
    cells.lock(this.#base);
    this.#refill(processClock());
    const f = this.#f64;
    const at = this.#at;
    const ok = f[at]! >= 1;
    if (ok) f[at]!--;
    cells.unlock(this.#base);
    return ok;
  }

  get remaining(): number {
    this.#cells.lock(this.#base);
    this.#refill(processClock());
    const t = this.#f64[this.#at]!;
    this.#cells.unlock(this.#base);
    return t;
  }

  get resetSeconds(): number {
    const now = processClock();
    this.#cells.lock(this.#base);
    this.#refill(now);
    const last = this.#f64[this.#at + 1]!;
    this.#cells.unlock(this.#base);
    return Math.ceil((last + this.fillIntervalMs - now) / 1000);
  }

  /** Called with the record's lock held. */
  #refill(now: number): void {
    const f = this.#f64;
    const at = this.#at;
    const elapsed = now - f[at + 1]!;
    if (elapsed < this.fillIntervalMs) return;
    const fills = Math.floor(elapsed / this.fillIntervalMs);
    f[at + 1] = f[at + 1]! + fills * this.fillIntervalMs;
    const t = f[at]! + fills * this.tokensPerFill;
    f[at] = t > this.maxTokens ? this.maxTokens : t;
  }

  /** No snapshot of this thread uses the bucket any more: once no thread does, its key starts full again. */
  [Symbol.dispose](): void {
    if (this.#released) return;
    this.#released = true;
    this.#cells.release(this.#base);
  }
}
