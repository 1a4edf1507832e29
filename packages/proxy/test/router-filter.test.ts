// The router filter (Envoy's Router::Filter) of one request, driven with a fake stream and fake
// tries over a real cluster, breaker and retry state: the breaker's admit / queue / overflow
// with its slot released exactly once, no healthy host, retries after their back-off, the
// route timeout and per-try timeouts, the retry budget given back once at the retried try's
// outcome, and the response flags of the final local reply. The request and tunnel modes
// differ where the tunnel holds its breaker slot for its whole life.
import t from 'tap';
import type { Cluster, ConnectionPool, RetryPolicy } from '@remora/config';
import { LocalReplies, type LocalReply } from '../src/http/local-reply.ts';
import { ForwardTarget, type WeightedTarget } from '../src/router/compiled-route.ts';
import { ROUTE_REQUEST, ROUTE_TUNNEL, Router, type RoutedRequest, type RouteMode, type RouterStream } from '../src/router/router.ts';
import type { RequestStats } from '../src/telemetry/istio-metrics.ts';
import { ResponseFlag } from '../src/telemetry/response-flags.ts';
import type { CircuitBreaker } from '../src/upstream/circuit-breaker.ts';
import { AttemptFailure, PER_TRY_TIMEOUT_REASON } from '../src/upstream/connect-errors.ts';
import { UpstreamCluster } from '../src/upstream/upstream-cluster.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';
import type { UpstreamRequest } from '../src/upstream/upstream-request.ts';
import { clusterModel, NODE, POOL, TestHosts } from './helpers/upstream-fixtures.ts';

const made = new TestHosts();
t.teardown(() => made.destroyAll());

/** A cluster of `n` real hosts on TEST-NET addresses (never dialled), its connection pool overridden by `pool`. */
function cluster(n: number, pool: Partial<ConnectionPool> = {}): UpstreamCluster {
  const hs: ClusterHost[] = [];
  for (let i = 1; i <= n; i++) hs.push(made.host(`192.0.2.${i}`, 80));
  const m: Cluster = clusterModel({ connectionPool: { ...POOL, ...pool } });
  const c = new UpstreamCluster(m, JSON.stringify(m), null as unknown as RequestStats, NODE);
  c.setHosts(hs, hs.map((h) => h.endpoint));
  return c;
}

function target(c: UpstreamCluster | null, timeoutMs: number, retry: RetryPolicy | null): ForwardTarget {
  const name = c?.model.name ?? 'missing';
  const clusters = new Map<string, UpstreamCluster>();
  if (c !== null) clusters.set(name, c);
  return new ForwardTarget(
    { kind: 'forward', clusters: [{ cluster: name, weight: 100, requestHeaders: null, responseHeaders: null }], timeoutMs, retry, rewrite: null, authorityRewrite: null, mirrors: [] },
    clusters,
  );
}

const retryPolicy = (numRetries: number, retryOn: string[], perTryTimeoutMs = 0): RetryPolicy => ({ numRetries, perTryTimeoutMs, retryOn, retriableStatusCodes: [], retryRemoteLocalities: false });

/**
 * A try as the contract describes one (and as HttpUpstreamRequest does it): it counts in its
 * host's active gauge, holds the breaker slot it was given until it is released, once; its
 * per-try timeout fails it through the stream.
 */
class FakeTry implements UpstreamRequest {
  readonly host: ClusterHost;
  readonly attempt: number;
  readonly startedAt = performance.now();
  readonly #stream: FakeStream;
  readonly #slot: CircuitBreaker | null;
  readonly #perTryTimeoutMs: number;
  #timer: NodeJS.Timeout | null = null;
  started = false;
  cancels = 0;
  releases = 0;

  constructor(stream: FakeStream, host: ClusterHost, attempt: number, perTryTimeoutMs: number, slot: CircuitBreaker | null) {
    this.#stream = stream;
    this.host = host;
    this.attempt = attempt;
    this.#perTryTimeoutMs = perTryTimeoutMs;
    this.#slot = slot;
    host.host.active++;
  }

  start(): void {
    this.started = true;
    if (this.#perTryTimeoutMs > 0) this.#timer = setTimeout(() => this.fail(AttemptFailure.PerTryTimeout, PER_TRY_TIMEOUT_REASON), this.#perTryTimeoutMs);
  }

  /** The host's response head; true when the router took it. */
  answer(status: number): boolean {
    const router = this.#stream.router;
    if (!router.isCurrent(this)) throw new Error('not the current try');
    const policy = router.retry!.policy;
    return router.onResponseHead(this, status, policy !== null && policy.retriableResponse(status, -1));
  }

  /** The response is complete. */
  end(): void {
    this.release();
  }

  fail(failure: AttemptFailure, reason: string): void {
    this.release();
    const router = this.#stream.router;
    if (router.isCurrent(this)) router.onTryFailed(this, failure, reason);
  }

  cancel(): void {
    this.cancels++;
    this.release();
  }

  release(): void {
    if (this.releases++ > 0) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.host.host.active--;
    this.#slot?.release();
  }

  resume(): void {}
}

/** The stream side: records what the router asked of it. */
class FakeStream implements RouterStream<FakeTry>, RoutedRequest {
  readonly router: Router<FakeTry>;
  /** The request and the stream are one object here. */
  readonly stream: RoutedRequest = this;
  responseFlags = 0;
  upstreamTransportFailureReason = '';
  replayable = true;
  readonly sourceIp = '127.0.0.1';
  readonly tries: FakeTry[] = [];
  readonly dropped: FakeTry[] = [];
  readonly replies: LocalReply[] = [];
  routed: WeightedTarget | null = null;
  routedCluster: UpstreamCluster | null = null;
  resets = 0;

  constructor(mode: RouteMode) {
    this.router = new Router(this, mode);
  }

  requestHeader(): string | null {
    return null;
  }
  cookie(): string | null {
    return null;
  }
  queryParam(): string | null {
    return null;
  }
  setResponseCookie(): void {}

  onRouted(_target: ForwardTarget, weighted: WeightedTarget, cluster: UpstreamCluster | null): void {
    this.routed = weighted;
    this.routedCluster = cluster;
  }
  makeTry(host: ClusterHost, attempt: number, perTryTimeoutMs: number, slot: CircuitBreaker | null): FakeTry {
    const r = new FakeTry(this, host, attempt, perTryTimeoutMs, slot);
    this.tries.push(r);
    return r;
  }
  startTry(r: FakeTry): void {
    if (!this.router.isCurrent(r)) throw new Error('a try starts once it is current');
    r.start();
  }
  tryDropped(r: FakeTry): void {
    this.dropped.push(r);
  }
  localReply(reply: LocalReply): void {
    this.replies.push(reply);
    this.responseFlags |= reply.flag;
    this.router.finish();
  }
  resetStream(): void {
    this.resets++;
    this.router.finish();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Math.random fixed (the weighted pick and the back-off jitter read it) for one test. */
function fixRandom(t: { teardown(fn: () => void): void }, value: number): void {
  const original = Math.random;
  Math.random = () => value;
  t.teardown(() => {
    Math.random = original;
  });
}

t.test('admitted: one try holds the breaker slot, released once when its response ends', async (t) => {
  const c = cluster(2, { maxRequests: 1 });
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, null), 0, true);
  t.equal(s.routedCluster, c);
  t.equal(s.tries.length, 1);
  const a = s.tries[0]!;
  t.equal(a.started, true);
  t.equal(a.attempt, 1);
  t.equal(c.breaker.active, 1, 'the try holds the slot');
  t.equal(c.stats.rqTotal, 1);
  t.equal(a.answer(200), true);
  a.end();
  t.equal(c.breaker.active, 0);
  s.router.cancelTry();
  s.router.finish();
  s.router.finish();
  t.equal(c.breaker.active, 0, 'exactly once');
  t.equal(a.releases >= 1 && a.host.host.active, 0);
  t.equal(a.host.host.rqSuccess, 1);
  t.same(s.replies, []);
  t.equal(s.responseFlags, 0);
});

t.test('queued at the breaker: the try is made when a request of the cluster ends; overflow is 503 UO', async (t) => {
  const c = cluster(2, { maxConnections: 1, maxPendingRequests: 1 });
  const first = new FakeStream(ROUTE_REQUEST);
  first.router.forward(target(c, 0, null), 0, true);
  const queued = new FakeStream(ROUTE_REQUEST);
  queued.router.forward(target(c, 0, null), 0, true);
  t.equal(queued.tries.length, 0, 'queued: no try yet');
  t.equal(c.breaker.pending, 1);
  const overflow = new FakeStream(ROUTE_REQUEST);
  overflow.router.forward(target(c, 0, null), 0, true);
  t.equal(overflow.replies.length, 1);
  t.equal(overflow.replies[0], LocalReplies.overflow);
  t.equal(overflow.replies[0]!.status, 503);
  t.equal(overflow.responseFlags, ResponseFlag.UO);
  t.equal(c.breaker.overflows, 1);
  t.equal(overflow.tries.length, 0);

  first.tries[0]!.answer(200);
  first.tries[0]!.end();
  t.equal(queued.tries.length, 1, 'admitted when the first ended');
  t.equal(c.breaker.active, 1);
  queued.tries[0]!.answer(204);
  queued.tries[0]!.end();
  t.equal(c.breaker.active, 0);
  t.equal(c.stats.rqTotal, 2);
});

t.test('a queued request whose stream ended gives the slot it is handed straight back', async (t) => {
  const c = cluster(1, { maxConnections: 1, maxPendingRequests: 1 });
  const first = new FakeStream(ROUTE_REQUEST);
  first.router.forward(target(c, 0, null), 0, true);
  const gone = new FakeStream(ROUTE_REQUEST);
  gone.router.forward(target(c, 0, null), 0, true);
  gone.router.finish();
  first.tries[0]!.answer(200);
  first.tries[0]!.end();
  t.equal(gone.tries.length, 0);
  t.equal(c.breaker.active, 0);
  t.equal(c.breaker.pending, 0);
});

t.test('no healthy host: 503 UH, the breaker slot given back, no try', async (t) => {
  const c = cluster(0, { maxRequests: 5 });
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, null), 0, true);
  t.equal(s.tries.length, 0);
  t.same(s.replies, [LocalReplies.noHealthyUpstream]);
  t.equal(s.responseFlags, ResponseFlag.UH);
  t.equal(c.noHealthyUpstream, 1);
  t.equal(c.breaker.active, 0);
  t.equal(c.stats.rqTotal, 0);
});

t.test('no cluster: 503 NC, the weighted target still reported', async (t) => {
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(null, 0, null), 0, true);
  t.same(s.replies, [LocalReplies.noCluster]);
  t.equal(s.responseFlags, ResponseFlag.NC);
  t.equal(s.routed?.name, 'missing');
  t.equal(s.router.cluster, null);
});

t.test("a 503 retried after its back-off on the other host; the budget place held until the retry try's response head, given back once", async (t) => {
  // Back-off for the first retry: floor(0.999 * 25) = 24 ms.
  fixRandom(t, 0.999);
  const c = cluster(2, { maxRetries: 3 });
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, retryPolicy(2, ['5xx'])), 0, true);
  const first = s.tries[0]!;
  t.equal(first.answer(503), false, 'retried, not used');
  t.equal(first.cancels, 1, 'the retried try is cancelled');
  t.same(s.dropped, [first]);
  t.equal(s.router.retry!.backoffMs, 24);
  t.equal(s.tries.length, 1, 'the next try waits for the back-off');
  t.equal(c.breaker.retriesActive, 1);
  t.equal(c.stats.rqRetry, 1);
  await sleep(10);
  t.equal(s.tries.length, 1, 'still backing off at 10 ms');
  await sleep(40);
  t.equal(s.tries.length, 2, 'made after the back-off');
  const second = s.tries[1]!;
  t.equal(second.attempt, 2);
  t.not(second.host, first.host, 'the host not tried yet');
  t.equal(c.breaker.retriesActive, 1, 'held while the retry try is under way');
  t.equal(second.answer(200), true);
  t.equal(c.breaker.retriesActive, 0, "given back at the retry try's outcome (Envoy's shouldRetry → resetRetry), not when its body ends");
  second.end();
  t.equal(c.breaker.retriesActive, 0);
  s.router.finish();
  t.equal(c.breaker.retriesActive, 0, 'given back once');
  t.equal(c.stats.rqRetrySuccess, 1);
  t.equal(s.responseFlags, 0);
  t.equal(first.host.host.active + second.host.host.active, 0);
});

t.test('connect failures until retries run out: the last failure is the reply, flagged UF and URX', async (t) => {
  fixRandom(t, 0);
  const c = cluster(2);
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, retryPolicy(1, ['connect-failure'])), 0, true);
  s.tries[0]!.fail(AttemptFailure.ConnectFailure, 'connection_refused');
  t.equal(s.tries.length, 2, 'no back-off at random 0: the retry goes at once');
  s.tries[1]!.fail(AttemptFailure.ConnectFailure, 'connection_refused');
  t.equal(s.replies.length, 1);
  const reply = s.replies[0]!;
  t.equal(reply.status, 503);
  t.equal(reply.flag, ResponseFlag.UF);
  t.equal(s.responseFlags, ResponseFlag.UF | ResponseFlag.URX);
  t.equal(s.upstreamTransportFailureReason, 'connection_refused');
  t.equal(c.stats.cxConnectFail, 2);
  t.equal(c.stats.rqRetryLimitExceeded, 1);
  t.equal(s.router.current, null);
});

t.test('a failure not retried is the reply without URX; an unreplayable body is not retried', async (t) => {
  const c = cluster(2);
  const s = new FakeStream(ROUTE_REQUEST);
  s.replayable = false;
  s.router.forward(target(c, 0, retryPolicy(3, ['reset'])), 0, true);
  s.tries[0]!.fail(AttemptFailure.Reset, 'connection_termination');
  t.equal(s.tries.length, 1);
  t.equal(s.replies[0]!.status, 503);
  t.equal(s.responseFlags, ResponseFlag.UC);
  t.equal(c.stats.rqRetry, 0);
});

t.test('route timeout before the response: 504 UT, the try cancelled and charged to its host', async (t) => {
  const c = cluster(1, { maxRequests: 2 });
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 30, null), 30, true);
  const a = s.tries[0]!;
  await sleep(60);
  t.same(s.replies, [LocalReplies.routeTimeout]);
  t.equal(s.replies[0]!.status, 504);
  t.equal(s.responseFlags, ResponseFlag.UT);
  t.equal(a.cancels, 1);
  t.equal(c.stats.rqTimeout, 1);
  t.equal(c.stats.rqByCode?.[504], 1);
  t.equal(a.host.host.rqError, 1);
  t.equal(c.breaker.active, 0);
});

t.test('route timeout timed from the body: not before startRouteTimer', async (t) => {
  const c = cluster(1);
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 20, null), 20, false);
  await sleep(40);
  t.equal(s.replies.length, 0, 'no timer yet');
  s.router.startRouteTimer();
  await sleep(40);
  t.same(s.replies, [LocalReplies.routeTimeout]);
});

t.test('route timeout after the response head: the stream is reset, the host not charged again', async (t) => {
  const c = cluster(1);
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 20, null), 20, true);
  const a = s.tries[0]!;
  t.equal(a.answer(200), true);
  await sleep(40);
  t.equal(s.resets, 1);
  t.same(s.replies, []);
  t.equal(s.responseFlags, ResponseFlag.UT);
  t.equal(a.cancels, 1);
  t.equal(a.host.host.rqError, 0);
  t.equal(a.host.host.rqSuccess, 1);
  t.equal(c.stats.rqTimeout, 1);
});

t.test('per-try timeouts: retried on reset, then 504 UT with URX', async (t) => {
  fixRandom(t, 0);
  const c = cluster(2);
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, retryPolicy(1, ['reset'], 15)), 0, true);
  await sleep(60);
  t.equal(s.tries.length, 2);
  t.equal(s.replies.length, 1);
  t.equal(s.replies[0]!.status, 504);
  t.equal(s.replies[0]!.details, 'upstream_per_try_timeout');
  t.equal(s.responseFlags, ResponseFlag.UT | ResponseFlag.URX);
  t.equal(c.stats.rqPerTryTimeout, 2);
  t.equal(c.stats.rqByCode?.[504], 2);
  t.equal(s.upstreamTransportFailureReason, PER_TRY_TIMEOUT_REASON);
});

t.test('tunnel: one breaker slot for the stream across retries, released once at finish; a retry gives its budget place back at its outcome', async (t) => {
  fixRandom(t, 0);
  const c = cluster(2, { maxRequests: 1, maxRetries: 1 });
  const s = new FakeStream(ROUTE_TUNNEL);
  s.router.forward(target(c, 1000, retryPolicy(1, ['connect-failure'])), 1000, true);
  t.equal(c.breaker.active, 1);
  s.tries[0]!.fail(AttemptFailure.ConnectFailure, 'connection_refused');
  t.equal(s.tries.length, 2, 'retried without a second admission');
  t.equal(c.breaker.active, 1);
  t.equal(c.breaker.overflows, 0);
  t.equal(c.breaker.retriesActive, 1);
  t.equal(s.tries[1]!.answer(101), true);
  t.equal(c.breaker.retriesActive, 0, 'the budget place went back when the retry try answered');
  t.equal(c.breaker.active, 1, 'the open tunnel holds the slot');
  await sleep(5);
  s.router.finish();
  s.router.finish();
  t.equal(c.breaker.active, 0, 'released once');
  t.equal(c.stats.rqTimeout, 0, 'the route timer stopped at the head');
});

t.test('tunnel: a malformed head is not retried, charged with the reply status', async (t) => {
  const c = cluster(2);
  const s = new FakeStream(ROUTE_TUNNEL);
  s.router.forward(target(c, 0, retryPolicy(2, ['reset'])), 0, true);
  const a = s.tries[0]!;
  s.router.onTryUnusable(a, LocalReplies.upstreamInvalid, 'invalid_response');
  t.equal(s.tries.length, 1);
  t.same(s.replies, [LocalReplies.upstreamInvalid]);
  t.equal(s.responseFlags, ResponseFlag.UPE);
  t.equal(a.cancels, 1);
  t.equal(c.stats.rqByCode?.[502], 1);
  t.equal(s.upstreamTransportFailureReason, 'invalid_response');
});

t.test('tunnel: the route timeout during the handshake is 504 UT, the try dropped, the stream slot released once', async (t) => {
  const c = cluster(1, { maxRequests: 1 });
  const s = new FakeStream(ROUTE_TUNNEL);
  s.router.forward(target(c, 20, null), 20, true);
  const a = s.tries[0]!;
  t.equal(a.started, true);
  await sleep(50);
  t.same(s.replies, [LocalReplies.routeTimeout]);
  t.equal(s.responseFlags, ResponseFlag.UT);
  t.same(s.dropped, [a]);
  t.equal(a.cancels, 1);
  t.equal(a.host.host.rqError, 1);
  t.equal(c.stats.rqTimeout, 1);
  t.equal(c.breaker.active, 0);
  s.router.finish();
  t.equal(c.breaker.active, 0, 'once');
});

t.test('tunnel: queued at the breaker, admitted when the slot holder ends', async (t) => {
  const c = cluster(1, { maxConnections: 1, maxPendingRequests: 1 });
  const open = new FakeStream(ROUTE_TUNNEL);
  open.router.forward(target(c, 0, null), 0, true);
  t.equal(open.tries[0]!.answer(101), true);
  const waiting = new FakeStream(ROUTE_TUNNEL);
  waiting.router.forward(target(c, 0, null), 0, true);
  t.equal(waiting.tries.length, 0);
  open.tries[0]!.end();
  t.equal(waiting.tries.length, 0, 'the open tunnel still holds the slot after its try is released');
  open.router.finish();
  t.equal(waiting.tries.length, 1, 'admitted when the tunnel ended');
  t.equal(c.breaker.active, 1);
  waiting.router.cancelTry();
  waiting.router.finish();
  t.equal(c.breaker.active, 0);
});

t.test('the client leaves: the try is cancelled, its breaker slot and budget place given back once', async (t) => {
  fixRandom(t, 0);
  const c = cluster(2, { maxRequests: 1, maxRetries: 1 });
  const s = new FakeStream(ROUTE_REQUEST);
  s.router.forward(target(c, 0, retryPolicy(1, ['5xx'])), 0, true);
  t.equal(s.tries[0]!.answer(503), false);
  const retryTry = s.tries[1]!;
  t.equal(c.breaker.active, 1);
  t.equal(c.breaker.retriesActive, 1);
  s.router.finish();
  s.router.cancelTry();
  s.router.cancelTry();
  t.equal(retryTry.cancels, 1);
  t.equal(c.breaker.active, 0);
  t.equal(c.breaker.retriesActive, 0);
  t.equal(retryTry.host.host.active, 0);
});
