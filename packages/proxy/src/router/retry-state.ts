import type { CircuitBreaker } from '../upstream/circuit-breaker.ts';
import type { ClusterStats } from '../telemetry/cluster-stats.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import { retryBackoffMs, type CompiledRetryPolicy } from './retry-policy.ts';

/**
 * One request's retries (Envoy's `RetryStateImpl`): the route's policy, the retries left,
 * the hosts already tried (Envoy's previous-hosts predicate), and the place a scheduled
 * retry holds in the cluster's retry budget (`max_retries`) until its try has an outcome.
 * Made when a request is routed to a cluster; the router asks it whether and when to retry.
 */
export class RetryState {
  readonly policy: CompiledRetryPolicy | null;
  readonly #breaker: CircuitBreaker;
  retriesLeft: number;
  /** Hosts already tried, for the previous-hosts retry predicate; null until a retry. */
  triedHosts: ClusterHost[] | null = null;
  /** Istio's retryRemoteLocalities on the route: retries go to localities not tried yet. */
  readonly otherLocalities: boolean;
  /** The back-off before the retry `noteRetry` scheduled last. */
  backoffMs = 0;
  /** A retry is scheduled and holds a place in the cluster's retry budget. */
  #holdsBudget = false;

  constructor(policy: CompiledRetryPolicy | null, breaker: CircuitBreaker) {
    this.policy = policy;
    this.#breaker = breaker;
    this.retriesLeft = policy?.numRetries ?? 0;
    this.otherLocalities = policy?.model.retryRemoteLocalities ?? false;
  }

  get perTryTimeoutMs(): number {
    return this.policy?.perTryTimeoutMs ?? 0;
  }

  /**
   * Whether another try may go: retries left, a body that can be sent again, and room in the
   * cluster's retry budget (taken now when there is).
   */
  canRetry(replayable: boolean): boolean {
    if (this.retriesLeft <= 0 || !replayable) return false;
    return this.#breaker.tryRetry();
  }

  /** Spends one retry on a try that failed on `host`; returns the back-off before the next try (Envoy's jittered exponential). */
  noteRetry(host: ClusterHost, attempts: number): number {
    this.retriesLeft--;
    (this.triedHosts ??= []).push(host);
    this.#holdsBudget = true;
    return (this.backoffMs = retryBackoffMs(attempts));
  }

  /** Out of retries on a retriable outcome: `URX` when a retry was made, the cluster's limit counter when none were left. */
  exhausted(attempts: number, stats: ClusterStats): boolean {
    if (this.retriesLeft <= 0) stats.rqRetryLimitExceeded++;
    return attempts > 1;
  }

  /** The scheduled retry had its outcome (or never got a try): its place in the budget goes back. */
  endRetry(): void {
    if (this.#holdsBudget) {
      this.#holdsBudget = false;
      this.#breaker.retryDone();
    }
  }
}
