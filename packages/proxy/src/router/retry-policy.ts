import { GrpcStatus, type RetryPolicy } from '@remora/config';

import { AttemptFailure } from '../upstream/connect-errors.ts';

export { AttemptFailure };

/** gRPC status codes named by Envoy's gRPC retry conditions. */
const GRPC_ON: Record<string, number> = {
  cancelled: GrpcStatus.CANCELLED,
  'deadline-exceeded': GrpcStatus.DEADLINE_EXCEEDED,
  internal: GrpcStatus.INTERNAL,
  'resource-exhausted': GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
};

/**
 * Envoy's `retry_on` conditions compiled to flags and sets once per route, so deciding
 * whether to retry is a few comparisons.
 */
export class CompiledRetryPolicy {
  readonly numRetries: number;
  readonly perTryTimeoutMs: number;
  readonly #on5xx: boolean;
  readonly #onGatewayError: boolean;
  readonly #onConnectFailure: boolean;
  readonly #onReset: boolean;
  readonly #onRefusedStream: boolean;
  readonly #onRetriable4xx: boolean;
  /**
   * `retriable-headers`: retry a response carrying a header the request names in
   * `x-envoy-retriable-header-names` (Istio has no `retriable_headers` field, so the request
   * header is the only source).
   */
  readonly onRetriableHeaders: boolean;
  readonly #statusCodes: ReadonlySet<number>;
  readonly #grpcCodes: ReadonlySet<number>;
  readonly model: RetryPolicy;

  constructor(p: RetryPolicy) {
    this.model = p;
    this.numRetries = p.numRetries;
    this.perTryTimeoutMs = p.perTryTimeoutMs;
    const on = new Set(p.retryOn);
    this.#on5xx = on.has('5xx');
    this.#onGatewayError = on.has('gateway-error');
    this.#onConnectFailure = on.has('connect-failure');
    this.#onReset = on.has('reset');
    this.#onRefusedStream = on.has('refused-stream');
    this.#onRetriable4xx = on.has('retriable-4xx');
    this.onRetriableHeaders = on.has('retriable-headers');
    this.#statusCodes = on.has('retriable-status-codes') ? new Set(p.retriableStatusCodes) : new Set();
    this.#grpcCodes = new Set([...on].filter((c) => c in GRPC_ON).map((c) => GRPC_ON[c]!));
  }

  /** Would Envoy retry an upstream response with this status (and gRPC status, -1 if none)? */
  retriableResponse(status: number, grpcStatus: number): boolean {
    if (this.#on5xx && status >= 500) return true;
    if (this.#onGatewayError && (status === 502 || status === 503 || status === 504)) return true;
    if (this.#onRetriable4xx && status === 409) return true;
    if (this.#statusCodes.has(status)) return true;
    return grpcStatus >= 0 && this.#grpcCodes.has(grpcStatus);
  }

  /** Would Envoy retry this failure? `5xx` and `gateway-error` include connect failures, resets and per-try timeouts. */
  retriableFailure(f: AttemptFailure): boolean {
    if (this.#on5xx || this.#onGatewayError) return true;
    switch (f) {
      case AttemptFailure.ConnectFailure:
        return this.#onConnectFailure || this.#onReset;
      case AttemptFailure.Reset:
      case AttemptFailure.ProtocolError:
      case AttemptFailure.PerTryTimeout:
        return this.#onReset;
      case AttemptFailure.RefusedStream:
        return this.#onRefusedStream || this.#onReset;
    }
    return false;
  }
}

/**
 * `retriable-headers`: does the response carry one of the headers named (comma-separated) in
 * the request's `x-envoy-retriable-header-names`? Names compare case-insensitively.
 */
export function hasRetriableHeader(names: string, responseHeaders: Readonly<Record<string, unknown>>): boolean {
  for (const raw of names.split(',')) {
    const name = raw.trim().toLowerCase();
    if (name !== '' && responseHeaders[name] !== undefined) return true;
  }
  return false;
}

/** Envoy's default back-off: fully jittered exponential, base 25 ms, capped at 10× base. */
export function retryBackoffMs(retryNumber: number, random: () => number = Math.random, baseMs = 25): number {
  const ceiling = Math.min((2 ** retryNumber - 1) * baseMs, 10 * baseMs);
  return Math.floor(random() * ceiling);
}
