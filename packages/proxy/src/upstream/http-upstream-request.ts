import type { Dispatcher } from 'undici';
import { AttemptFailure, classifyUpstreamError, PER_TRY_TIMEOUT_REASON } from './connect-errors.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import type { ClusterHost } from './upstream-host.ts';
import type { UpstreamHeaders, UpstreamRequest, UpstreamRequestOwner } from './upstream-request.ts';

/** The owner of an HTTP try: the router's callbacks, plus the request body as it goes out. */
export interface HttpUpstreamOwner extends UpstreamRequestOwner<UpstreamHeaders, HttpUpstreamRequest> {
  /** A chunk of the request body went upstream. */
  onUpstreamBodySent(chunk: Buffer): void;
}

/** Raised into undici to stop a try the owner no longer wants (retry, timeout, client gone). */
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
 * One try of an HTTP request against one host, through the host's pool: the undici dispatch
 * handler for it. It keeps the host's active-request gauge honest (up at dispatch, down
 * exactly once), holds the cluster's breaker slot until the try ends, and forwards callbacks
 * to the owner only while it is the owner's current try, so a late callback of an abandoned
 * try can never touch the client's response.
 */
export class HttpUpstreamRequest implements UpstreamRequest, Dispatcher.DispatchHandler {
  readonly owner: HttpUpstreamOwner;
  readonly host: ClusterHost;
  readonly startedAt = performance.now();
  #controller: Dispatcher.DispatchController | null = null;
  #timer: NodeJS.Timeout | null = null;
  #done = false;
  #cancelled = false;
  #bodySentOnce = false;

  /** The cluster's breaker, when this try counts against its limits; released once. */
  readonly #breaker: CircuitBreaker | null;

  constructor(owner: HttpUpstreamOwner, host: ClusterHost, perTryTimeoutMs: number, breaker: CircuitBreaker | null = null) {
    this.owner = owner;
    this.host = host;
    this.#breaker = breaker;
    if (perTryTimeoutMs > 0) this.#timer = setTimeout(() => this.#onPerTryTimeout(), perTryTimeoutMs);
  }

  /** Stops this try; the owner has already moved on. */
  cancel(): void {
    this.#cancelled = true;
    const c = this.#controller;
    if (c !== null && !c.aborted) c.abort(cancelled);
    this.release();
  }

  resume(): void {
    this.#controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController, _context: unknown): void {
    this.#controller = controller;
    if (this.#cancelled) controller.abort(cancelled);
  }

  onBodySent(chunk: Buffer): void {
    if (this.owner.isCurrent(this)) this.owner.onUpstreamBodySent(chunk);
  }

  onRequestSent(): void {
    if (!this.#bodySentOnce && this.owner.isCurrent(this)) {
      this.#bodySentOnce = true;
      this.owner.onUpstreamRequestSent(this);
    }
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: UpstreamHeaders, _statusMessage?: string): void {
    if (!this.owner.isCurrent(this)) {
      controller.abort(cancelled);
      return;
    }
    this.owner.onUpstreamResponseHead(this, statusCode, headers);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.owner.isCurrent(this)) return;
    if (!this.owner.onUpstreamData(this, chunk)) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: UpstreamHeaders): void {
    this.release();
    if (this.owner.isCurrent(this)) this.owner.onUpstreamEnd(this, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.release();
    if (this.#cancelled || !this.owner.isCurrent(this)) return;
    // undici's own connect errors carry their codes: whether the connection was made is theirs to say.
    const f = classifyUpstreamError(err, null, this.host.host.tls);
    this.owner.onUpstreamFailed(this, f.failure, f.reason);
  }

  #onPerTryTimeout(): void {
    this.#timer = null;
    if (this.#done || !this.owner.isCurrent(this)) return;
    const c = this.#controller;
    if (c !== null && !c.aborted) c.abort(new PerTryTimeout('per-try timeout'));
    else {
      // Still queued in the pool: fail the try now; undici drops it when its turn comes.
      this.#cancelled = true;
      this.release();
      this.owner.onUpstreamFailed(this, AttemptFailure.PerTryTimeout, PER_TRY_TIMEOUT_REASON);
    }
  }

  release(): void {
    if (this.#done) return;
    this.#done = true;
    this.host.host.active--;
    if (this.#timer !== null) clearTimeout(this.#timer);
    // Last: releasing may admit a queued request that dispatches at once.
    if (this.#breaker !== null) this.#breaker.release();
  }
}
