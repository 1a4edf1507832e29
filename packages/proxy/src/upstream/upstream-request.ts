import type { AttemptFailure } from './connect-errors.ts';
import type { ClusterHost } from './upstream-host.ts';

/** Response headers or trailers as undici reports them: lower-case names, repeats as arrays. */
export type UpstreamHeaders = Record<string, string | string[] | undefined>;

/** The trailers of a response that has none (or relays them unparsed, as a tunnel does). */
export const NO_TRAILERS: UpstreamHeaders = Object.freeze({});

/**
 * One try of a request against one host (Envoy's `UpstreamRequest`): what the router holds
 * of it between dispatching it and its outcome. Each implementation speaks one way of
 * reaching a host — a pooled HTTP request through undici, or an upgrade/CONNECT tunnel on a
 * connection of its own — and reports to its `UpstreamRequestOwner`, so routing, circuit
 * breaking, outlier detection and the retry budget are one logic for both.
 *
 * A try counts in its host's active-request gauge from the moment it is made until it is
 * released, exactly once: when its response ends, when it fails, when it is cancelled, or
 * (a tunnel) when the connection handed over to the splice is closed.
 */
export interface UpstreamRequest {
  /** The host this try went to (the router reports its outcome to outlier detection against it). */
  readonly host: ClusterHost;
  /** When the try was made (`performance.now()`): the start of the upstream service time. */
  readonly startedAt: number;
  /** Stops this try: the owner has moved on (a retry, a timeout, the client gone). No callback follows; what it holds is released. */
  cancel(): void;
  /** Gives back what this try holds (its host's active gauge, its timers, and any breaker slot it was given); idempotent. */
  release(): void;
  /** Reading resumes after the owner returned false from `onUpstreamData` (back-pressure). */
  resume(): void;
}

/**
 * The request a try works for. Callbacks come only while `isCurrent` says the try is the
 * owner's current one, so a late event of an abandoned try never touches the client's
 * response. `Head` is how the implementation presents a response head: undici's header
 * record for HTTP, the parsed head with its raw header lines for a tunnel.
 */
export interface UpstreamRequestOwner<Head, R extends UpstreamRequest = UpstreamRequest> {
  isCurrent(r: R): boolean;
  /**
   * The request has gone upstream as far as it goes before the response: in full for an
   * HTTP request; for a tunnel, its head (the connection is up, the client's further bytes may follow).
   */
  onUpstreamRequestSent(r: R): void;
  /**
   * The final response head (1xx other than 101 are the implementation's business). Returns
   * false when the response is not used — retried, or answered locally — and the owner has
   * cancelled the try.
   */
  onUpstreamResponseHead(r: R, status: number, head: Head): boolean;
  /** A response body chunk; false: the try pauses until `resume`. */
  onUpstreamData(r: R, chunk: Buffer): boolean;
  /** The response is complete. */
  onUpstreamEnd(r: R, trailers: UpstreamHeaders): void;
  /**
   * The try failed, before or after its response head, as `classifyUpstreamError` (the one
   * connect-error classifier) reads it; `reason` is Envoy's transport failure reason.
   */
  onUpstreamFailed(r: R, failure: AttemptFailure, reason: string): void;
}
