/**
 * Envoy's `JitteredExponentialBackOffStrategy`: each failure doubles a ceiling from `baseMs`
 * up to `maxMs`, and the wait is drawn uniformly below the ceiling ("full jitter"), so that a
 * fleet of proxies losing their control plane together does not reconnect in step. Envoy
 * uses 500 ms and 30 s for xDS streams, and resets once a message arrives on a new stream.
 */
export interface BackoffOptions {
  /** First ceiling, milliseconds. Envoy: 500. */
  readonly baseMs?: number;
  /** Largest ceiling, milliseconds. Envoy: 30000. */
  readonly maxMs?: number;
  /** Uniform in [0, 1); injected by tests. */
  readonly random?: () => number;
}

export const XDS_BACKOFF_BASE_MS = 500;
export const XDS_BACKOFF_MAX_MS = 30_000;

export class JitteredBackoff {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly #random: () => number;
  #ceiling: number;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? XDS_BACKOFF_BASE_MS;
    this.maxMs = options.maxMs ?? XDS_BACKOFF_MAX_MS;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs)) {
      throw new RangeError(`backoff: need 0 < baseMs <= maxMs, got baseMs ${this.baseMs}, maxMs ${this.maxMs}`);
    }
    this.#random = options.random ?? Math.random;
    this.#ceiling = this.baseMs;
  }

  /** The next wait, milliseconds, in [0, ceiling); the ceiling then doubles up to `maxMs`. */
  next(): number {
    const ceiling = this.#ceiling;
    this.#ceiling = ceiling >= this.maxMs / 2 ? this.maxMs : ceiling * 2;
    return Math.min(Math.floor(this.#random() * ceiling), this.maxMs);
  }

  reset(): void {
    this.#ceiling = this.baseMs;
  }
}
