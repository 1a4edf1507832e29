import { failureLocalReply, LocalReplies, type LocalReply } from '../http/local-reply.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import { OVERFLOW, QUEUED, type BreakerWaiter, type CircuitBreaker } from '../upstream/circuit-breaker.ts';
import type { AttemptFailure } from '../upstream/connect-errors.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { UpstreamRequest } from '../upstream/upstream-request.ts';
import type { ForwardTarget, WeightedTarget } from './compiled-route.ts';
import { RetryState } from './retry-state.ts';
import { judgeFailure, judgeResponse, noteTryFailure, TRY_EXHAUSTED, TRY_RETRY } from './try-outcome.ts';

/** What the router reads and writes of the request itself (its `ActiveStream`). */
export interface RoutedRequest extends HashSource {
  /** The access log's response flags: the router adds URX and UT. */
  responseFlags: number;
  /** Envoy's upstream transport failure reason of the last failed try. */
  upstreamTransportFailureReason: string;
}

/**
 * What the router needs of the stream it routes (an HTTP request, an upgrade tunnel): the
 * request (its headers for the load balancer, its flags), the way its protocol makes and
 * starts a try, and where the router's own answers go. `R` is the kind of try the stream makes.
 */
export interface RouterStream<R extends UpstreamRequest> {
  /** The request being routed. */
  readonly stream: RoutedRequest;
  /** The request can be sent again (no body, or one still replayable). */
  readonly replayable: boolean;
  /**
   * The route's destination is picked: `cluster` null when the weighted target names no
   * cluster known (the router answers 503 NC next). Otherwise the stream prepares the
   * upstream request (rewrites, header edits) before the first try is made.
   */
  onRouted(target: ForwardTarget, weighted: WeightedTarget, cluster: UpstreamCluster | null): void;
  /**
   * A try of try number `attempt` to `host`: counted by the stream (`x-envoy-attempt-count`,
   * the host it logs) and made the way its protocol reaches a host. `slot`: the circuit
   * breaker the try releases when it ends (null: the stream's slot is not the try's). A
   * retry's place in the retry budget stays with the router's retry state, which gives it
   * back at the try's outcome.
   */
  makeTry(host: ClusterHost, attempt: number, perTryTimeoutMs: number, slot: CircuitBreaker | null): R;
  /** The try just made is the router's current one: it may go now (its callbacks then reach the router's stream). */
  startTry(r: R): void;
  /** The router cancelled a try (a retry, a timeout, a cancel): the stream stops feeding it. */
  tryDropped(r: R): void;
  /** The router answers the request itself (overflow, no host, a failed try, the route timeout). */
  localReply(reply: LocalReply): void;
  /** The route timeout fired after the response had begun: all that is left is to reset the stream. */
  resetStream(): void;
}

/** Every try holds its own breaker slot until it ends (an HTTP request). */
export const ROUTE_REQUEST = 0;
/**
 * The stream holds one breaker slot for its whole life, the route timeout bounds the
 * handshake only, and a malformed response head is not retried (an upgrade tunnel).
 */
export const ROUTE_TUNNEL = 1;
export type RouteMode = typeof ROUTE_REQUEST | typeof ROUTE_TUNNEL;

/** Waiting for an answer: queued at the breaker, a try under way, or backing off before the next. */
const WAITING = 0;
/** A try's response head was taken for the client. */
const ANSWERED = 1;
const DONE = 2;

/**
 * The router filter of one routed request (Envoy's `Router::Filter`), from the route's
 * forward target to a try's answer: the weighted cluster pick, the retry state, the cluster's
 * circuit breaker (admitted, queued, or 503 UO; the slot released exactly once), the host
 * pick (503 UH when there is none), each try made through the stream, the route timeout
 * (504 UT), each try's outcome judged (`try-outcome`), retries after their back-off, and
 * the final failure's local reply (flagged URX when retries ran out).
 *
 * Made once per routed request; its timers take the router as their argument, so no closure
 * is made per request. The stream calls `finish` when it is done, whatever ended it.
 */
export class Router<R extends UpstreamRequest = UpstreamRequest> implements BreakerWaiter {
  readonly #stream: RouterStream<R>;
  readonly #mode: RouteMode;
  cluster: UpstreamCluster | null = null;
  retry: RetryState | null = null;
  /** Tries made so far (`x-envoy-attempt-count` of the last). */
  attempts = 0;
  #current: R | null = null;
  #phase = WAITING;
  #timeoutMs = 0;
  #routeTimer: NodeJS.Timeout | null = null;
  #backoffTimer: NodeJS.Timeout | null = null;
  /** ROUTE_TUNNEL: the stream holds a slot of the cluster's breaker (released once, at `finish`). */
  #holdsSlot = false;

  constructor(stream: RouterStream<R>, mode: RouteMode) {
    this.#stream = stream;
    this.#mode = mode;
  }

  /** The try under way (or whose response is being relayed); null between tries. */
  get current(): R | null {
    return this.#current;
  }

  /** The stream is done (a queued router is skipped by the breaker). */
  get aborted(): boolean {
    return this.#phase === DONE;
  }

  /** A try's callbacks count only while it is the current try of a router not done. */
  isCurrent(r: R): boolean {
    return this.#current === r && this.#phase !== DONE;
  }

  /**
   * Routes to `target`: the weighted pick, then the first try (or the breaker's queue).
   * `timeoutMs`: the route timeout (0: none), started now when `timeNow`, else by `startRouteTimer`
   * (Envoy times a request from the end of its body).
   */
  forward(target: ForwardTarget, timeoutMs: number, timeNow: boolean): void {
    const stream = this.#stream;
    const weighted = target.pick(Math.random());
    const cluster = weighted.cluster;
    if (cluster === null) {
      stream.onRouted(target, weighted, null);
      stream.localReply(LocalReplies.noCluster);
      return;
    }
    this.cluster = cluster;
    this.retry = new RetryState(target.retry, cluster.breaker);
    this.#timeoutMs = timeoutMs;
    stream.onRouted(target, weighted, cluster);
    if (this.#phase === DONE) return;
    if (timeNow) this.startRouteTimer();
    this.#nextTry();
  }

  /** Starts the route timeout, once (a request's body has been sent). */
  startRouteTimer(): void {
    if (this.#timeoutMs > 0 && this.#routeTimer === null && this.#phase !== DONE) {
      this.#routeTimer = setTimeout(Router.#onRouteTimer, this.#timeoutMs, this);
    }
  }

  static #onRouteTimer(this: void, r: Router): void {
    r.#routeTimer = null;
    r.#routeTimeout();
  }

  static #onBackoffTimer(this: void, r: Router): void {
    r.#backoffTimer = null;
    r.#nextTry();
  }

  /** Through the breaker (when the cluster has limits) to the next try. */
  #nextTry(): void {
    if (this.#phase !== WAITING) return;
    const breaker = this.cluster!.breaker;
    const perTry = this.#mode === ROUTE_REQUEST;
    if (breaker.limited && (perTry || !this.#holdsSlot)) {
      const admission = breaker.admit(this);
      if (admission === OVERFLOW) {
        this.retry!.endRetry();
        this.#stream.localReply(LocalReplies.overflow);
        return;
      }
      // Queued: the breaker calls onAdmitted when a request of the cluster finishes.
      if (admission === QUEUED) return;
      this.#admitted();
      return;
    }
    this.#dispatch(false);
  }

  /** The circuit breaker made room for this queued request. */
  onAdmitted(): void {
    if (this.#phase === DONE) {
      this.cluster!.breaker.release();
      return;
    }
    this.#admitted();
  }

  #admitted(): void {
    if (this.#mode === ROUTE_REQUEST) this.#dispatch(true);
    else {
      this.#holdsSlot = true;
      this.#dispatch(false);
    }
  }

  /** Picks a host (avoiding hosts already tried, when others exist) and makes the try; `counted`: it holds a breaker slot. */
  #dispatch(counted: boolean): void {
    const cluster = this.cluster!;
    const retry = this.retry!;
    const host = cluster.pick(this.#stream.stream, retry.triedHosts, retry.otherLocalities);
    if (host === null) {
      cluster.noHealthyUpstream++;
      if (counted) cluster.breaker.release();
      retry.endRetry();
      this.#stream.localReply(LocalReplies.noHealthyUpstream);
      return;
    }
    this.attempts++;
    cluster.stats.rqTotal++;
    const r = this.#stream.makeTry(host, this.attempts, retry.perTryTimeoutMs, counted ? cluster.breaker : null);
    this.#current = r;
    this.#stream.startTry(r);
  }

  /**
   * The current try's final response head; `retriable`: the route's retry policy would retry it.
   * False: it is retried instead (the try is cancelled); true: it is the request's response.
   */
  onResponseHead(r: R, status: number, retriable: boolean): boolean {
    const retry = this.retry!;
    const stream = this.#stream;
    const verdict = judgeResponse(this.cluster!, retry, r, status, retriable, retriable && stream.replayable, this.attempts);
    if (verdict === TRY_RETRY) {
      this.#retry(r);
      return false;
    }
    if (verdict === TRY_EXHAUSTED) stream.stream.responseFlags |= ResponseFlag.URX;
    this.#phase = ANSWERED;
    // The route timeout bounds a tunnel's handshake only: an open tunnel has no deadline.
    if (this.#mode === ROUTE_TUNNEL) this.#clearTimers();
    return true;
  }

  /**
   * The current try failed before its response head: retried when the policy allows, else
   * the failure's local reply (URX when retries were made and none is left).
   */
  onTryFailed(r: R, failure: AttemptFailure, reason: string): void {
    const stream = this.#stream;
    stream.stream.upstreamTransportFailureReason = reason;
    const cluster = this.cluster!;
    // A locally-originated failure of the host (Envoy's outlier detection), charged as Envoy's router does.
    noteTryFailure(cluster, r, failure);
    const retry = this.retry!;
    const verdict = judgeFailure(cluster, retry, r, failure, stream.replayable, this.attempts);
    if (verdict === TRY_RETRY) {
      this.#retry(r);
      return;
    }
    if (verdict === TRY_EXHAUSTED) stream.stream.responseFlags |= ResponseFlag.URX;
    // An HTTP try that failed has let go of what it held; a tunnel's connection is dropped.
    if (this.#mode === ROUTE_TUNNEL) this.#drop(r);
    else this.#current = null;
    stream.localReply(failureLocalReply(failure, reason));
  }

  /** The current try failed after its response head (the stream resets the client): outlier detection hears of it. */
  onTryFailedAfterHead(r: R, failure: AttemptFailure): void {
    noteTryFailure(this.cluster!, r, failure);
    if (this.#current === r) this.#current = null;
  }

  /**
   * A try's response that cannot be used and is not retried (a malformed tunnel head): a
   * failure of the host charged with the reply's status, answered with `reply`.
   */
  onTryUnusable(r: R, reply: LocalReply, reason: string): void {
    this.#stream.stream.upstreamTransportFailureReason = reason;
    const cluster = this.cluster!;
    cluster.reportLocalFailure(r.host);
    cluster.stats.charge(reply.status);
    this.retry!.endRetry();
    this.#drop(r);
    this.#stream.localReply(reply);
  }

  /** Stops the current try, if any (the client left, a filter answered, the response could not be written). */
  cancelTry(): void {
    const r = this.#current;
    if (r !== null) this.#drop(r);
  }

  /** The retry state scheduled a retry: this try is dropped and the next goes after the back-off. */
  #retry(r: R): void {
    const delay = this.retry!.backoffMs;
    this.#drop(r);
    if (delay <= 0) this.#nextTry();
    else this.#backoffTimer = setTimeout(Router.#onBackoffTimer, delay, this);
  }

  #drop(r: R): void {
    if (this.#current === r) this.#current = null;
    r.cancel();
    this.#stream.tryDropped(r);
  }

  #routeTimeout(): void {
    if (this.#phase === DONE) return;
    const stream = this.#stream;
    stream.stream.responseFlags |= ResponseFlag.UT;
    const cluster = this.cluster!;
    cluster.stats.rqTimeout++;
    const r = this.#current;
    const answered = this.#phase === ANSWERED;
    if (r !== null) {
      // A timeout is a locally-originated failure of the host (Envoy's outlier detection).
      if (!answered) {
        r.host.host.rqError++;
        cluster.reportLocalFailure(r.host);
        cluster.stats.charge(504);
      }
      this.#drop(r);
    }
    this.retry!.endRetry();
    if (answered) stream.resetStream();
    else stream.localReply(LocalReplies.routeTimeout);
  }

  #clearTimers(): void {
    if (this.#routeTimer !== null) clearTimeout(this.#routeTimer);
    if (this.#backoffTimer !== null) clearTimeout(this.#backoffTimer);
    this.#routeTimer = null;
    this.#backoffTimer = null;
  }

  /** The stream is done: timers stop, a scheduled retry's budget place and the stream's breaker slot go back. Idempotent. */
  finish(): void {
    if (this.#phase === DONE) return;
    this.#phase = DONE;
    this.#clearTimers();
    this.retry?.endRetry();
    if (this.#holdsSlot) {
      this.#holdsSlot = false;
      this.cluster!.breaker.release();
    }
  }
}
