import type { Dispatcher } from 'undici';
import { AttemptFailure, classifyUpstreamError, PER_TRY_TIMEOUT_REASON } from '../upstream/connect-errors.ts';
import type { CircuitBreaker } from '../upstream/circuit-breaker.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { AttemptFailure as AttemptFailureCode } from '../upstream/connect-errors.ts';

type Headers = Record<string, string | string[] | undefined>;

/** The request an attempt works for: callbacks go to it only while the attempt is its current one. */
export interface AttemptOwner {
  isCurrent(a: UpstreamAttempt): boolean;
  /** A chunk of the request body went upstream. */
  onAttemptBodySent(chunk: Buffer): void;
  /** The request has been sent in full. */
  onAttemptRequestSent(): void;
  /** Response headers; false: the response is not used (retried, or answered locally). */
  onAttemptResponseStart(a: UpstreamAttempt, statusCode: number, headers: Headers): boolean;
  /** A response body chunk; false: pause until `resume`. */
  onAttemptResponseData(a: UpstreamAttempt, chunk: Buffer): boolean;
  onAttemptResponseEnd(a: UpstreamAttempt, trailers: Headers): void;
  onAttemptFailed(a: UpstreamAttempt, failure: AttemptFailureCode, reason: string): void;
}

/** Raised into undici to stop an attempt the exchange no longer wants (retry, timeout, client gone). */
class AttemptCancelled extends Error {
  override readonly name = 'AttemptCancelled';
}

/** Raised into undici when the per-try timeout fires. */
class PerTryTimeout extends Error {
  override readonly name = 'PerTryTimeout';
  readonly code = PER_TRY_TIMEOUT_REASON;
}

const cancelled = new AttemptCancelled('attempt cancelled');

/**
 * One try of an exchange against one host: the undici dispatch handler for it. It keeps the
 * host's active-request gauge honest (up at dispatch, down exactly once) and forwards
 * callbacks to the exchange only while it is the exchange's current attempt, so a late
 * callback of an abandoned try can never touch the client's response.
 */
export class UpstreamAttempt implements Dispatcher.DispatchHandler {
  readonly exchange: AttemptOwner;
  readonly host: ClusterHost;
  readonly startedAt = performance.now();
  #controller: Dispatcher.DispatchController | null = null;
  #timer: NodeJS.Timeout | null = null;
  #done = false;
  #cancelled = false;
  #bodySentOnce = false;

  /** The cluster's breaker, when this try counts against its limits; released once. */
  readonly #breaker: CircuitBreaker | null;
  /** This try is a retry: it holds a place in this breaker's retry budget until it ends. */
  readonly #retryBudget: CircuitBreaker | null;

  constructor(exchange: AttemptOwner, host: ClusterHost, perTryTimeoutMs: number, breaker: CircuitBreaker | null = null, retryBudget: CircuitBreaker | null = null) {
    this.exchange = exchange;
    this.host = host;
    this.#breaker = breaker;
    this.#retryBudget = retryBudget;
    if (perTryTimeoutMs > 0) this.#timer = setTimeout(() => this.#onPerTryTimeout(), perTryTimeoutMs);
  }

  /** Stops this attempt; the exchange has already moved on. */
  cancel(): void {
    this.#cancelled = true;
    const c = this.#controller;
    if (c !== null && !c.aborted) c.abort(cancelled);
    this.#release();
  }

  resume(): void {
    this.#controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController, _context: unknown): void {
    this.#controller = controller;
    if (this.#cancelled) controller.abort(cancelled);
  }

  onBodySent(chunk: Buffer): void {
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptBodySent(chunk);
  }

  onRequestSent(): void {
    if (!this.#bodySentOnce && this.exchange.isCurrent(this)) {
      this.#bodySentOnce = true;
      this.exchange.onAttemptRequestSent();
    }
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, _statusMessage?: string): void {
    if (!this.exchange.isCurrent(this)) {
      controller.abort(cancelled);
      return;
    }
    this.exchange.onAttemptResponseStart(this, statusCode, headers);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.exchange.isCurrent(this)) return;
    if (!this.exchange.onAttemptResponseData(this, chunk)) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.#release();
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptResponseEnd(this, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#release();
    if (this.#cancelled || !this.exchange.isCurrent(this)) return;
    // undici's own connect errors carry their codes: whether the connection was made is theirs to say.
    const f = classifyUpstreamError(err, null, this.host.host.tls);
    this.exchange.onAttemptFailed(this, f.failure, f.reason);
  }

  #onPerTryTimeout(): void {
    this.#timer = null;
    if (this.#done || !this.exchange.isCurrent(this)) return;
    const c = this.#controller;
    if (c !== null && !c.aborted) c.abort(new PerTryTimeout('per-try timeout'));
    else {
      // Still queued in the pool: fail the try now; undici drops it when its turn comes.
      this.#cancelled = true;
      this.#release();
      this.exchange.onAttemptFailed(this, AttemptFailure.PerTryTimeout, PER_TRY_TIMEOUT_REASON);
    }
  }

  #release(): void {
    if (this.#done) return;
    this.#done = true;
    this.host.host.active--;
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#retryBudget !== null) this.#retryBudget.retryDone();
    // Last: releasing may admit a queued request that dispatches at once.
    if (this.#breaker !== null) this.#breaker.release();
  }
}
