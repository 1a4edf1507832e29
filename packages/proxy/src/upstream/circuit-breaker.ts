import type { ConnectionPool, UpstreamProtocol } from '@remora/config';

/** A request waiting for room under the cluster's limits. */
export interface BreakerWaiter {
  /** Room was made: go ahead (the waiter counts as active from now). */
  onAdmitted(): void;
  /** True once the waiter no longer wants room (answered, timed out, client gone). */
  readonly aborted: boolean;
}

export const ADMITTED = 0;
export const QUEUED = 1;
export const OVERFLOW = 2;
export type Admission = typeof ADMITTED | typeof QUEUED | typeof OVERFLOW;

/**
 * Envoy's circuit breakers for one cluster (Istio `connectionPool`), checked when a request
 * is about to go upstream. HTTP/1.1 sends one request per connection at a time, so
 * `maxConnections` bounds the requests in flight; requests beyond it wait, up to
 * `http1MaxPendingRequests`, in a FIFO queue; beyond that, or beyond `http2MaxRequests` in
 * flight, the answer is an immediate overflow (503 UO). The queue never grows unbounded
 * unless the user asked for unlimited pending requests. Limits of 0 mean unlimited.
 */
export class CircuitBreaker {
  readonly #maxConnections: number;
  readonly #maxPending: number;
  readonly #maxRequests: number;
  readonly #maxRetries: number;
  /** Requests dispatched to a host and not yet finished. */
  active = 0;
  retriesActive = 0;
  /** Counters for /stats: Envoy's upstream_rq_pending_overflow and upstream_rq_retry_overflow. */
  overflows = 0;
  retryOverflows = 0;
  #queue: BreakerWaiter[] = [];
  #head = 0;

  constructor(pool: ConnectionPool, protocol: UpstreamProtocol) {
    // HTTP/2 multiplexes: its connection count does not bound requests.
    this.#maxConnections = protocol === 'http1' ? pool.maxConnections : 0;
    // Unset pending limit with a connection limit: Envoy's own default (1024), so the queue
    // stays bounded even when only maxConnections was given.
    this.#maxPending = pool.maxPendingRequests > 0 ? pool.maxPendingRequests : 1024;
    this.#maxRequests = pool.maxRequests;
    this.#maxRetries = pool.maxRetries;
  }

  get pending(): number {
    return this.#queue.length - this.#head;
  }

  /** Envoy's `circuit_breakers.default.cx_open`: 1 while the connection limit is reached. */
  get cxOpen(): number {
    return this.#maxConnections > 0 && this.active >= this.#maxConnections ? 1 : 0;
  }

  /** `circuit_breakers.default.rq_pending_open`: 1 while the pending queue is full. */
  get rqPendingOpen(): number {
    return this.#maxConnections > 0 && this.pending >= this.#maxPending ? 1 : 0;
  }

  /** `circuit_breakers.default.rq_open`: 1 while the request limit is reached. */
  get rqOpen(): number {
    return this.#maxRequests > 0 && this.active >= this.#maxRequests ? 1 : 0;
  }

  /** `circuit_breakers.default.rq_retry_open`: 1 while the concurrent retry limit is reached. */
  get rqRetryOpen(): number {
    return this.#maxRetries > 0 && this.retriesActive >= this.#maxRetries ? 1 : 0;
  }

  /** True when the breaker has limits at all (the common case has none: nothing to count). */
  get limited(): boolean {
    return this.#maxConnections > 0 || this.#maxRequests > 0;
  }

  /** Decides for one request; ADMITTED counts it active, QUEUED calls `onAdmitted` later. */
  admit(w: BreakerWaiter): Admission {
    if (this.#maxRequests > 0 && this.active >= this.#maxRequests) {
      this.overflows++;
      return OVERFLOW;
    }
    if (this.#maxConnections > 0 && this.active >= this.#maxConnections) {
      if (this.pending >= this.#maxPending && this.#dropAborted() >= this.#maxPending) {
        this.overflows++;
        return OVERFLOW;
      }
      this.#queue.push(w);
      return QUEUED;
    }
    this.active++;
    return ADMITTED;
  }

  /** A request admitted earlier is done: room for the next waiter still waiting. */
  release(): void {
    this.active--;
    while (this.#head < this.#queue.length) {
      if (this.#maxConnections > 0 && this.active >= this.#maxConnections) return;
      const w = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as BreakerWaiter;
      if (this.#head > 64 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      if (w.aborted) continue;
      this.active++;
      w.onAdmitted();
    }
  }

  /**
   * Removes waiters that gave up (Envoy takes a cancelled request out of the pending queue at
   * once); returns the waiters left. Runs only when the queue looks full: one pass over at
   * most `maxPending` entries, on the overflow path.
   */
  #dropAborted(): number {
    const live: BreakerWaiter[] = [];
    for (let i = this.#head; i < this.#queue.length; i++) {
      const w = this.#queue[i]!;
      if (!w.aborted) live.push(w);
    }
    this.#queue = live;
    this.#head = 0;
    return live.length;
  }

  /** Envoy's max_retries: concurrent retries in the cluster. */
  tryRetry(): boolean {
    if (this.#maxRetries > 0 && this.retriesActive >= this.#maxRetries) {
      this.retryOverflows++;
      return false;
    }
    this.retriesActive++;
    return true;
  }

  retryDone(): void {
    this.retriesActive--;
  }
}
