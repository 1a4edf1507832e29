// The router's side of each try (Envoy's Router::Filter onUpstreamHeaders / onUpstreamReset with
// RetryStateImpl's shouldRetryHeaders / shouldRetryReset), driven against fake tries: retries
// counted, the cluster's retry budget (circuit_breakers max_retries) taken by a retry and
// given back exactly once, at its try's outcome, each try's result charged to its host
// and cluster (outlier detection included), and the hosts already tried recorded for the
// previous-hosts predicate. The cluster, hosts (never dialled), breaker and retry state are the real ones.
import t from 'tap';
import type { Cluster, OutlierDetection } from '@remora/config';
import { CompiledRetryPolicy } from '../src/router/retry-policy.ts';
import { RetryState } from '../src/router/retry-state.ts';
import { judgeFailure, judgeResponse, noteTryFailure, TRY_EXHAUSTED, TRY_FINAL, TRY_RETRY } from '../src/router/try-outcome.ts';
import type { RequestStats } from '../src/telemetry/istio-metrics.ts';
import { AttemptFailure } from '../src/upstream/connect-errors.ts';
import { UpstreamCluster } from '../src/upstream/upstream-cluster.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';
import type { UpstreamRequest } from '../src/upstream/upstream-request.ts';
import { clusterModel, NODE, OUTLIER, POOL, TestHosts } from './helpers/upstream-fixtures.ts';

function model(maxRetries: number, outlierDetection: OutlierDetection | null): Cluster {
  return clusterModel({ connectionPool: { ...POOL, maxRetries }, outlierDetection });
}

const made = new TestHosts();
t.teardown(() => made.destroyAll());

/** A cluster of two real hosts on TEST-NET addresses (never dialled here). */
function cluster(maxRetries: number, outlier: OutlierDetection | null = null): UpstreamCluster {
  const hs: ClusterHost[] = [1, 2].map((i) => made.host(`192.0.2.${i}`, 80));
  const m = model(maxRetries, outlier);
  const c = new UpstreamCluster(m, JSON.stringify(m), null as unknown as RequestStats, NODE);
  c.setHosts(hs, hs.map((h) => h.endpoint));
  return c;
}

const REQ = { requestHeader: () => null, cookie: () => null, queryParam: () => null, sourceIp: '127.0.0.1', setResponseCookie: () => {} };

/** A try as the contract describes one: it counts in its host's active gauge until released; release happens once. */
class FakeTry implements UpstreamRequest {
  readonly host: ClusterHost;
  readonly startedAt = performance.now();
  releases = 0;
  cancels = 0;

  constructor(host: ClusterHost) {
    this.host = host;
    host.host.active++;
  }

  cancel(): void {
    this.cancels++;
    this.release();
  }

  release(): void {
    if (this.releases++ > 0) return;
    this.host.host.active--;
  }

  resume(): void {}
}

/** The owner's next try, as the router makes it: a host not tried yet. */
function nextTry(c: UpstreamCluster, retry: RetryState): FakeTry {
  const host = c.pick(REQ, retry.triedHosts, retry.otherLocalities);
  if (host === null) throw new Error('no host');
  return new FakeTry(host);
}

const policy = (numRetries: number, retryOn: string[]): CompiledRetryPolicy => new CompiledRetryPolicy({ numRetries, perTryTimeoutMs: 0, retryOn, retriableStatusCodes: [], retryRemoteLocalities: false });

t.test('a 503 retried on the other host, then a 200: one retry, one budget place taken and given back once', async (t) => {
  const c = cluster(1);
  const p = policy(2, ['5xx']);
  const retry = new RetryState(p, c.breaker);

  const first = nextTry(c, retry);
  t.equal(first.host.host.active, 1);
  const v1 = judgeResponse(c, retry, first, 503, p.retriableResponse(503, -1), true, 1);
  t.equal(v1, TRY_RETRY);
  t.equal(c.stats.rqRetry, 1, 'upstream_rq_retry');
  t.equal(c.stats.rqByClass[5], 1, 'the 503 is charged to the cluster');
  t.equal(first.host.host.rqError, 1, 'and to its host');
  t.same(retry.triedHosts, [first.host], 'the host is recorded for the previous-hosts predicate');
  t.equal(retry.retriesLeft, 1);
  t.equal(c.breaker.retriesActive, 1, 'the retry holds a place in the budget');
  t.ok(retry.backoffMs >= 0 && retry.backoffMs < 25, `back-off within Envoy's 25 ms base (${retry.backoffMs})`);
  first.cancel();
  t.equal(first.host.host.active, 0);
  t.equal(c.breaker.retriesActive, 1, 'the first try held no budget place: the retry keeps it');

  const second = nextTry(c, retry);
  t.not(second.host, first.host, 'the retry goes to the host not tried yet');
  t.equal(c.breaker.retriesActive, 1, 'held while the retry try is under way');
  const v2 = judgeResponse(c, retry, second, 200, p.retriableResponse(200, -1), true, 2);
  t.equal(c.breaker.retriesActive, 0, "given back at the retry try's outcome, its response head (Envoy's shouldRetry → resetRetry), not when its body ends");
  t.equal(v2, TRY_FINAL);
  t.equal(c.stats.rqRetrySuccess, 1, 'upstream_rq_retry_success');
  t.equal(second.host.host.rqSuccess, 1);
  t.equal(c.stats.rqByClass[2], 1);
  second.release();
  t.equal(c.breaker.retriesActive, 0, 'the try ending gives back nothing more');
  second.release();
  second.cancel();
  retry.endRetry();
  t.equal(c.breaker.retriesActive, 0, 'exactly once');
  t.equal(second.host.host.active, 0);
  t.equal(c.stats.rqRetry, 1);
});

t.test('a connect failure retried, then a per-try timeout with no retry left: URX, counters per try, outlier detection told', async (t) => {
  const c = cluster(0, OUTLIER);
  const p = policy(1, ['connect-failure', 'reset']);
  const retry = new RetryState(p, c.breaker);

  const first = nextTry(c, retry);
  noteTryFailure(c, first, AttemptFailure.ConnectFailure);
  t.equal(judgeFailure(c, retry, first, AttemptFailure.ConnectFailure, true, 1), TRY_RETRY);
  t.equal(first.host.host.connectFailures, 1);
  t.equal(c.stats.cxConnectFail, 1, 'upstream_cx_connect_fail');
  t.equal(c.stats.rqByCode?.[503], 1, 'a connect failure is charged as a 503');
  t.equal(c.isEjected(first.host), true, 'outlier detection heard the local-origin failure (consecutive5xxErrors 1)');
  first.cancel();

  const second = nextTry(c, retry);
  t.not(second.host, first.host);
  noteTryFailure(c, second, AttemptFailure.PerTryTimeout);
  t.equal(judgeFailure(c, retry, second, AttemptFailure.PerTryTimeout, true, 2), TRY_EXHAUSTED, 'out of retries after a retry: URX');
  t.equal(c.stats.rqPerTryTimeout, 1, 'upstream_rq_per_try_timeout');
  t.equal(c.stats.rqByCode?.[504], 1, 'a per-try timeout is charged as a 504');
  t.equal(c.stats.rqRetryLimitExceeded, 1, 'upstream_rq_retry_limit_exceeded');
  t.equal(c.stats.rqRetry, 1);
  t.equal(c.stats.rqRetrySuccess, 0);
  t.equal(second.host.host.rqError, 1);
  second.release();
  t.equal(c.breaker.retriesActive, 0);
  t.equal(first.releases + second.releases, 2);
});

t.test('the retry budget is full: the retriable response is used as is, the overflow counted, no retry made', async (t) => {
  const c = cluster(1);
  const p = policy(2, ['5xx']);
  const other = new RetryState(p, c.breaker);
  t.ok(other.canRetry(true), 'another request holds the only place');
  const retry = new RetryState(p, c.breaker);
  const only = nextTry(c, retry);
  t.equal(judgeResponse(c, retry, only, 503, true, true, 1), TRY_FINAL, 'no retry was made, so no URX');
  t.equal(c.breaker.retryOverflows, 1, 'upstream_rq_retry_overflow');
  t.equal(c.breaker.retriesActive, 1, 'nothing taken');
  t.equal(c.stats.rqRetry, 0);
  t.equal(c.stats.rqRetryLimitExceeded, 0, 'retries were left; the budget stopped it');
  t.equal(retry.triedHosts, null);
  other.endRetry();
});

t.test('a failure not named by retryOn, or a body that cannot be replayed, is final', async (t) => {
  const c = cluster(0);
  const retry = new RetryState(policy(3, ['connect-failure']), c.breaker);
  const a = nextTry(c, retry);
  noteTryFailure(c, a, AttemptFailure.Reset);
  t.equal(judgeFailure(c, retry, a, AttemptFailure.Reset, true, 1), TRY_FINAL);
  const other = new RetryState(policy(3, ['connect-failure']), c.breaker);
  const b = nextTry(c, other);
  t.equal(judgeFailure(c, other, b, AttemptFailure.ConnectFailure, false, 1), TRY_FINAL, 'not replayable');
  t.equal(other.retriesLeft, 3);
  t.equal(c.stats.rqRetry, 0);
  t.equal(c.breaker.retriesActive, 0);
  t.equal(retry.retriesLeft, 3);
  t.equal(c.stats.rqByCode?.[503], 2, 'each failed try is still charged');
});
