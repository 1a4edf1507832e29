import type { Dispatcher } from 'undici';
import { AttemptFailure } from '../router/retry-policy.ts';
import type { CircuitBreaker } from '../upstream/circuit-breaker.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { Exchange } from './exchange.ts';

/** Raised into undici to stop an attempt the exchange no longer wants (retry, timeout, client gone). */
class AttemptCancelled extends Error {
  override readonly name = 'AttemptCancelled';
}

/** Raised into undici when the per-try timeout fires. */
class PerTryTimeout extends Error {
  override readonly name = 'PerTryTimeout';
  readonly code = 'per_try_timeout';
}

const cancelled = new AttemptCancelled('attempt cancelled');

/**
 * One try of an exchange against one host: the undici dispatch handler for it. It keeps the
 * host's active-request gauge honest (up at dispatch, down exactly once) and forwards
 * callbacks to the exchange only while it is the exchange's current attempt, so a late
 * callback of an abandoned try can never touch the client's response.
 */
export class UpstreamAttempt implements Dispatcher.DispatchHandler {
  readonly exchange: Exchange;
  readonly host: ClusterHost;
  readonly startedAt = performance.now();
  #controller: Dispatcher.DispatchController | null = null;
  #timer: NodeJS.Timeout | null = null;
  #done = false;
  #cancelled = false;
  #bodySentOnce = false;

  /** The cluster's breaker, when this try counts against its limits; released once. */
  readonly #breaker: CircuitBreaker | null;
  /** This try is a retry: it holds a place in the cluster's retry budget until it ends. */
  readonly #retry: boolean;

  constructor(exchange: Exchange, host: ClusterHost, perTryTimeoutMs: number, breaker: CircuitBreaker | null = null, retry = false) {
    this.exchange = exchange;
    this.host = host;
    this.#breaker = breaker;
    this.#retry = retry;
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
    const hostTls = this.host.host.tls;
    if (hostTls !== null) {
      // A TLS failure, even one a TLS 1.3 server reports after our side of the handshake
      // (our certificate refused), is a connect failure with Envoy's TLS_error reason.
      const tls = hostTls.explain(err);
      if (tls !== null) {
        this.exchange.onAttemptFailed(this, AttemptFailure.ConnectFailure, tls.code);
        return;
      }
    }
    const code = (err as { code?: string }).code ?? err.message;
    this.exchange.onAttemptFailed(this, classify(err, code), code);
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
      this.exchange.onAttemptFailed(this, AttemptFailure.PerTryTimeout, 'per_try_timeout');
    }
  }

  #release(): void {
    if (this.#done) return;
    this.#done = true;
    this.host.host.active--;
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#retry) this.exchange.cluster!.breaker.retryDone();
    // Last: releasing may admit a queued request that dispatches at once.
    if (this.#breaker !== null) this.#breaker.release();
  }
}

function classify(err: Error, code: string): AttemptFailure {
  if (err instanceof PerTryTimeout) return AttemptFailure.PerTryTimeout;
  switch (code) {
    case 'ECONNREFUSED':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return AttemptFailure.ConnectFailure;
    case 'UND_ERR_HEADERS_OVERFLOW':
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      return AttemptFailure.ProtocolError;
    default:
      // llhttp's parse errors (HPE_*): the response was malformed.
      if (code.startsWith('HPE_')) return AttemptFailure.ProtocolError;
      // HTTP/2 REFUSED_STREAM (code 7) means the server never processed the stream.
      return /REFUSED_STREAM/.test(err.message) ? AttemptFailure.RefusedStream : AttemptFailure.Reset;
  }
}
