import type { ConnectionPool, UpstreamProtocol } from '@remora/config';
import { CELL_INT, type SharedCells } from '@remora/filters/internal';

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

/** Words of a breaker's shared record: requests in flight, requests waiting, retries in flight. */
const ACTIVE = CELL_INT;
const PENDING = CELL_INT + 1;
const RETRIES = CELL_INT + 2;
/** A waiting worker re-checks this often even without a wake-up (a missed notify costs no more). */
const RECHECK_MS = 20;

/**
 * The circuit breakers of one cluster for a proxy with several worker threads: Envoy's
 * limits are per cluster for the whole proxy, so the counts they are checked against
 * (requests in flight, requests waiting, retries in flight) live in memory every worker
 * shares, changed with compare-exchange so no limit is passed by two workers at once. Each
 * worker queues its own waiting requests; a request finishing in any worker wakes the
 * others' queues (`Atomics.notify`). `active`, `pending`, `retriesActive` and the overflow
 * counters stay this worker's share, so that the proxy's stats add them up.
 */
export class SharedCircuitBreaker extends CircuitBreaker implements Disposable {
  readonly #i32: Int32Array;
  readonly #cells: SharedCells;
  readonly #base: number;
  readonly #maxConn: number;
  readonly #maxPend: number;
  readonly #maxReq: number;
  readonly #maxRetry: number;
  #queue: BreakerWaiter[] = [];
  #head = 0;
  #watching = false;
  #disposed = false;
  readonly #drain = (): void => {
    this.#watching = false;
    this.#admitWaiting();
  };

  /** The breaker of cluster `name` in `cells`; null when the shared memory is full (the caller keeps its own). */
  static acquire(cells: SharedCells, name: string, pool: ConnectionPool, protocol: UpstreamProtocol): SharedCircuitBreaker | null {
    const base = cells.acquire(`circuit_breakers|${name}`, (b) => {
      cells.i32[b + ACTIVE] = 0;
      cells.i32[b + PENDING] = 0;
      cells.i32[b + RETRIES] = 0;
    });
    return base < 0 ? null : new SharedCircuitBreaker(cells, base, pool, protocol);
  }

  private constructor(cells: SharedCells, base: number, pool: ConnectionPool, protocol: UpstreamProtocol) {
    super(pool, protocol);
    this.#cells = cells;
    this.#i32 = cells.i32;
    this.#base = base;
    this.#maxConn = protocol === 'http1' ? pool.maxConnections : 0;
    this.#maxPend = pool.maxPendingRequests > 0 ? pool.maxPendingRequests : 1024;
    this.#maxReq = pool.maxRequests;
    this.#maxRetry = pool.maxRetries;
  }

  override get pending(): number {
    return this.#queue.length - this.#head;
  }

  override get cxOpen(): number {
    return this.#maxConn > 0 && Atomics.load(this.#i32, this.#base + ACTIVE) >= this.#maxConn ? 1 : 0;
  }

  override get rqPendingOpen(): number {
    return this.#maxConn > 0 && Atomics.load(this.#i32, this.#base + PENDING) >= this.#maxPend ? 1 : 0;
  }

  override get rqOpen(): number {
    return this.#maxReq > 0 && Atomics.load(this.#i32, this.#base + ACTIVE) >= this.#maxReq ? 1 : 0;
  }

  override get rqRetryOpen(): number {
    return this.#maxRetry > 0 && Atomics.load(this.#i32, this.#base + RETRIES) >= this.#maxRetry ? 1 : 0;
  }

  override get limited(): boolean {
    return this.#maxConn > 0 || this.#maxReq > 0;
  }

  override admit(w: BreakerWaiter): Admission {
    const i32 = this.#i32;
    const at = this.#base + ACTIVE;
    for (;;) {
      const n = Atomics.load(i32, at);
      if (this.#maxReq > 0 && n >= this.#maxReq) {
        this.overflows++;
        return OVERFLOW;
      }
      if (this.#maxConn > 0 && n >= this.#maxConn) return this.#enqueue(w);
      if (Atomics.compareExchange(i32, at, n, n + 1) === n) {
        this.active++;
        return ADMITTED;
      }
    }
  }

  #enqueue(w: BreakerWaiter): Admission {
    if (!this.#reservePending()) {
      // Waiters that gave up still count until looked at: drop this worker's, then look again.
      this.#dropAborted();
      if (!this.#reservePending()) {
        this.overflows++;
        return OVERFLOW;
      }
    }
    this.#queue.push(w);
    this.#watch();
    return QUEUED;
  }

  #reservePending(): boolean {
    const i32 = this.#i32;
    const at = this.#base + PENDING;
    for (;;) {
      const p = Atomics.load(i32, at);
      if (p >= this.#maxPend) return false;
      if (Atomics.compareExchange(i32, at, p, p + 1) === p) return true;
    }
  }

  #dropAborted(): void {
    const live: BreakerWaiter[] = [];
    let dropped = 0;
    for (let i = this.#head; i < this.#queue.length; i++) {
      const w = this.#queue[i]!;
      if (w.aborted) dropped++;
      else live.push(w);
    }
    this.#queue = live;
    this.#head = 0;
    if (dropped > 0) Atomics.sub(this.#i32, this.#base + PENDING, dropped);
  }

  override release(): void {
    this.active--;
    const i32 = this.#i32;
    decrement(i32, this.#base + ACTIVE);
    if (this.#head < this.#queue.length) this.#admitWaiting();
    // Requests wait in other workers: one of them may go now.
    if (Atomics.load(i32, this.#base + PENDING) > 0) Atomics.notify(i32, this.#base + ACTIVE);
  }

  /** This worker's waiters, in order, while there is room under the connection limit. */
  #admitWaiting(): void {
    const i32 = this.#i32;
    const at = this.#base + ACTIVE;
    while (this.#head < this.#queue.length) {
      const w = this.#queue[this.#head]!;
      if (!w.aborted) {
        const n = Atomics.load(i32, at);
        if (n >= this.#maxConn) break;
        if (Atomics.compareExchange(i32, at, n, n + 1) !== n) continue;
      }
      this.#queue[this.#head++] = undefined as unknown as BreakerWaiter;
      if (this.#head > 64 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      decrement(i32, this.#base + PENDING);
      if (w.aborted) continue;
      this.active++;
      w.onAdmitted();
    }
    if (this.#head < this.#queue.length) this.#watch();
  }

  /** Waits (without blocking the loop) for a request of any worker to finish. */
  #watch(): void {
    if (this.#watching || this.#disposed) return;
    this.#watching = true;
    const i32 = this.#i32;
    const at = this.#base + ACTIVE;
    const seen = Atomics.load(i32, at);
    if (seen < this.#maxConn) {
      setImmediate(this.#drain);
      return;
    }
    const r = Atomics.waitAsync(i32, at, seen, RECHECK_MS);
    if (r.async) void r.value.then(this.#drain);
    else setImmediate(this.#drain);
  }

  override tryRetry(): boolean {
    const i32 = this.#i32;
    const at = this.#base + RETRIES;
    for (;;) {
      const n = Atomics.load(i32, at);
      if (this.#maxRetry > 0 && n >= this.#maxRetry) {
        this.retryOverflows++;
        return false;
      }
      if (Atomics.compareExchange(i32, at, n, n + 1) === n) {
        this.retriesActive++;
        return true;
      }
    }
  }

  override retryDone(): void {
    this.retriesActive--;
    decrement(this.#i32, this.#base + RETRIES);
  }

  /** The cluster left this worker's config; its counts stay for the requests still finishing. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#cells.release(this.#base);
  }
}

/** One less, never below zero (a record started afresh while requests of its old holders were still finishing). */
function decrement(i32: Int32Array, at: number): void {
  for (;;) {
    const n = Atomics.load(i32, at);
    if (n <= 0) return;
    if (Atomics.compareExchange(i32, at, n, n - 1) === n) return;
  }
}
