import { AttemptFailure, chargedStatus } from '../upstream/connect-errors.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { UpstreamRequest } from '../upstream/upstream-request.ts';
import type { RetryState } from './retry-state.ts';

/** The outcome is the request's: the response goes to the client, or the failure becomes its local reply. */
export const TRY_FINAL = 0;
/** A retry is scheduled (its place in the retry budget taken until its try's outcome, the host recorded): the owner cancels the try and makes the next after `retry.backoffMs`. */
export const TRY_RETRY = 1;
/** As TRY_FINAL, but retries were made and none is left: Envoy flags the request URX. */
export const TRY_EXHAUSTED = 2;
export type TryVerdict = typeof TRY_FINAL | typeof TRY_RETRY | typeof TRY_EXHAUSTED;

/**
 * What the router does with the outcome of one try, whatever carried it (an HTTP request, an
 * upgrade tunnel): Envoy's `Router::Filter::onUpstreamHeaders` / `onUpstreamReset` with
 * `RetryState::shouldRetryHeaders` / `shouldRetryReset`. The host's counters and outlier
 * detection hear of it, the cluster's stats are charged, and the retry state decides.
 */

/**
 * A try's final response head (`retriable`: the route's policy would retry this response).
 * The host's success/error counters and outlier detection see the status; a retried request
 * whose response is used counts as a retry success.
 */
export function judgeResponse(cluster: UpstreamCluster, retry: RetryState, r: UpstreamRequest, status: number, retriable: boolean, replayable: boolean, attempts: number): TryVerdict {
  // A retried try has its outcome: its place in the budget goes back before the next decision
  // (Envoy's RetryStateImpl::shouldRetry calls resetRetry first).
  retry.endRetry();
  const host = r.host;
  if (status >= 500) host.host.rqError++;
  else host.host.rqSuccess++;
  cluster.reportStatus(host, status);
  cluster.stats.charge(status);
  if (retriable) {
    if (retry.canRetry(replayable)) return scheduleRetry(cluster, retry, r, attempts);
    // Out of retries: the last upstream response goes to the client, flagged when retries were made.
    return retry.exhausted(attempts, cluster.stats) ? TRY_EXHAUSTED : TRY_FINAL;
  }
  if (attempts > 1) cluster.stats.rqRetrySuccess++;
  return TRY_FINAL;
}

/**
 * A try failed, before or after its response head: outlier detection hears of a
 * locally-originated failure of the host, and the connect-failure and per-try-timeout counters count it.
 */
export function noteTryFailure(cluster: UpstreamCluster, r: UpstreamRequest, failure: AttemptFailure): void {
  cluster.reportLocalFailure(r.host);
  if (failure === AttemptFailure.ConnectFailure) {
    r.host.host.connectFailures++;
    cluster.stats.cxConnectFail++;
  }
  if (failure === AttemptFailure.PerTryTimeout) cluster.stats.rqPerTryTimeout++;
}

/**
 * A try failed before its response head (after `noteTryFailure`): charged as Envoy's router
 * does (503 for a reset or connect failure, 504 for a per-try timeout), and retried when the
 * route's policy retries this kind of failure.
 */
export function judgeFailure(cluster: UpstreamCluster, retry: RetryState, r: UpstreamRequest, failure: AttemptFailure, replayable: boolean, attempts: number): TryVerdict {
  retry.endRetry();
  cluster.stats.charge(chargedStatus(failure));
  r.host.host.rqError++;
  const policy = retry.policy;
  if (policy !== null && policy.retriableFailure(failure)) {
    if (retry.canRetry(replayable)) return scheduleRetry(cluster, retry, r, attempts);
    if (retry.exhausted(attempts, cluster.stats)) return TRY_EXHAUSTED;
  }
  return TRY_FINAL;
}

function scheduleRetry(cluster: UpstreamCluster, retry: RetryState, r: UpstreamRequest, attempts: number): TryVerdict {
  cluster.stats.rqRetry++;
  // The retry holds its place in the cluster's retry budget until its try has an outcome.
  retry.noteRetry(r.host, attempts);
  return TRY_RETRY;
}
