// One request's retry state (Envoy's RetryStateImpl): retries left, the hosts already tried
// (previous-hosts predicate), and the place a scheduled retry holds in the cluster's retry
// budget (circuit_breakers max_retries) until its try has an outcome.
import t from 'tap';
import type { ConnectionPool } from '@remora/config';
import { CircuitBreaker } from '../src/upstream/circuit-breaker.ts';
import { CompiledRetryPolicy } from '../src/router/retry-policy.ts';
import { RetryState } from '../src/router/retry-state.ts';
import { ClusterStats } from '../src/telemetry/cluster-stats.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';

const POOL: ConnectionPool = {
  maxConnections: 0,
  connectTimeoutMs: 10_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 1,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};
const policy = new CompiledRetryPolicy({ numRetries: 2, perTryTimeoutMs: 250, retryOn: ['5xx'], retriableStatusCodes: [], retryRemoteLocalities: true });
const hostA = { name: 'a' } as unknown as ClusterHost;
const hostB = { name: 'b' } as unknown as ClusterHost;

t.test('retries are counted down and the hosts tried are remembered', async (t) => {
  const breaker = new CircuitBreaker({ ...POOL, maxRetries: 0 }, 'http1');
  const r = new RetryState(policy, breaker);
  t.equal(r.retriesLeft, 2);
  t.equal(r.perTryTimeoutMs, 250);
  t.equal(r.otherLocalities, true);
  t.equal(r.triedHosts, null, 'nothing tried before a retry');
  t.ok(r.canRetry(true));
  const backoff = r.noteRetry(hostA, 1);
  t.ok(backoff >= 0 && backoff < 25, `first back-off within Envoy's 25 ms base (${backoff})`);
  t.ok(r.canRetry(true));
  r.noteRetry(hostB, 2);
  t.same(r.triedHosts, [hostA, hostB]);
  t.equal(r.retriesLeft, 0);
  t.notOk(r.canRetry(true), 'no retries left');
});

t.test('a body that cannot be replayed is never retried', async (t) => {
  const breaker = new CircuitBreaker({ ...POOL, maxRetries: 0 }, 'http1');
  const r = new RetryState(policy, breaker);
  t.notOk(r.canRetry(false));
  t.equal(breaker.retriesActive, 0, 'no place in the budget taken');
});

t.test("the cluster's retry budget: taken by canRetry, held until the retried try's outcome (endRetry), given back once", async (t) => {
  const breaker = new CircuitBreaker(POOL, 'http1');
  const r = new RetryState(policy, breaker);
  const other = new RetryState(policy, breaker);
  t.ok(r.canRetry(true));
  r.noteRetry(hostA, 1);
  t.equal(breaker.retriesActive, 1, 'the scheduled retry holds the place while its try is under way');
  t.notOk(other.canRetry(true), 'max_retries 1: a second concurrent retry overflows');
  t.equal(breaker.retryOverflows, 1);
  r.endRetry();
  t.equal(breaker.retriesActive, 0, "the retried try had its outcome: the place goes back (Envoy's resetRetry)");
  r.endRetry();
  t.equal(breaker.retriesActive, 0, 'once');

  t.ok(other.canRetry(true), 'the place is free for the other request');
  other.noteRetry(hostB, 1);
  other.endRetry();
  t.equal(breaker.retriesActive, 0, 'a retry that never got a try gives its place back too');
});

t.test('exhausted: URX only after a retry; the limit counter only when none are left', async (t) => {
  const breaker = new CircuitBreaker({ ...POOL, maxRetries: 0 }, 'http1');
  const stats = new ClusterStats();
  const r = new RetryState(policy, breaker);
  t.equal(r.exhausted(1, stats), false);
  t.equal(stats.rqRetryLimitExceeded, 0);
  r.noteRetry(hostA, 1);
  r.noteRetry(hostB, 2);
  t.equal(r.exhausted(3, stats), true);
  t.equal(stats.rqRetryLimitExceeded, 1);
});

t.test('no policy: no retries', async (t) => {
  const r = new RetryState(null, new CircuitBreaker(POOL, 'http1'));
  t.equal(r.retriesLeft, 0);
  t.equal(r.perTryTimeoutMs, 0);
  t.notOk(r.canRetry(true));
});
