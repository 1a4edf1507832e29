// The circuit breaker of one cluster (Istio connectionPool → Envoy circuit_breakers): which
// requests go at once, which wait in the pending queue, which overflow (503 UO), in what
// order waiters are let through, and the cluster-wide retry budget.
//
// Reference: Envoy arch overview "Circuit breaking" (max_connections, max_pending_requests,
// max_requests, max_retries; HTTP/1.1 queues while the connection limit is reached, HTTP/2
// bounds concurrent requests with max_requests); istio.io DestinationRule ConnectionPoolSettings
// (http2MaxRequests "applicable to both HTTP/1.1 and HTTP2").
import t from 'tap';
import type { ConnectionPool } from '@remora/config';
import { ADMITTED, CircuitBreaker, OVERFLOW, QUEUED, type BreakerWaiter } from '@remora/proxy';

const NO_LIMITS: ConnectionPool = {
  maxConnections: 0,
  connectTimeoutMs: 10_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 0,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};
const pool = (over: Partial<ConnectionPool>): ConnectionPool => ({ ...NO_LIMITS, ...over });

/** A waiter that records when it is let through, into a shared log. */
class Waiter implements BreakerWaiter {
  aborted = false;
  admitted = 0;
  readonly name: string;
  readonly #log: string[];
  constructor(name: string, log: string[]) {
    this.name = name;
    this.#log = log;
  }
  onAdmitted(): void {
    this.admitted++;
    this.#log.push(this.name);
  }
}

t.test('HTTP/1.1: maxConnections in flight, then up to http1MaxPendingRequests queued, then overflow', async (t) => {
  const cb = new CircuitBreaker(pool({ maxConnections: 2, maxPendingRequests: 2 }), 'http1');
  const log: string[] = [];
  const w = ['a', 'b', 'c', 'd', 'e'].map((n) => new Waiter(n, log));
  t.equal(cb.limited, true);
  t.same(
    w.map((x) => cb.admit(x)),
    [ADMITTED, ADMITTED, QUEUED, QUEUED, OVERFLOW],
  );
  t.same([cb.active, cb.pending, cb.overflows], [2, 2, 1], 'two active, two pending, one overflow counted');
  t.same(log, [], 'nobody queued was let through yet');
  // A finished request makes room for the oldest waiter, which counts as active from then on.
  cb.release();
  t.same(log, ['c']);
  t.same([cb.active, cb.pending], [2, 1]);
  // With room in the queue again, a new request queues instead of overflowing.
  const f = new Waiter('f', log);
  t.equal(cb.admit(f), QUEUED);
  t.equal(cb.admit(new Waiter('g', log)), OVERFLOW);
  t.equal(cb.overflows, 2);
  cb.release();
  cb.release();
  t.same(log, ['c', 'd', 'f'], 'FIFO');
  t.same([cb.active, cb.pending], [2, 0]);
  cb.release();
  cb.release();
  t.same([cb.active, cb.pending], [0, 0], 'everything finished: nothing active or pending');
  t.same(
    w.map((x) => x.admitted),
    [0, 0, 1, 1, 0],
    'each queued waiter is admitted exactly once; the admitted-at-once ones are never called back',
  );
});

t.test("HTTP/1.1 with maxConnections and no pending limit: Envoy's default of 1024 pending", async (t) => {
  const cb = new CircuitBreaker(pool({ maxConnections: 1 }), 'http1');
  const log: string[] = [];
  t.equal(cb.admit(new Waiter('first', log)), ADMITTED);
  const results = Array.from({ length: 1025 }, (_, i) => cb.admit(new Waiter(`w${i}`, log)));
  t.equal(results.filter((r) => r === QUEUED).length, 1024, '1024 wait');
  t.equal(results[1024], OVERFLOW, 'the 1025th overflows');
  t.same([cb.active, cb.pending, cb.overflows], [1, 1024, 1]);
});

t.test('FIFO over a long queue (the queue compacts itself as its head advances)', async (t) => {
  const cb = new CircuitBreaker(pool({ maxConnections: 1, maxPendingRequests: 500 }), 'http1');
  const log: string[] = [];
  t.equal(cb.admit(new Waiter('first', log)), ADMITTED);
  const names = Array.from({ length: 300 }, (_, i) => `w${i}`);
  t.ok(
    names.every((n) => cb.admit(new Waiter(n, log)) === QUEUED),
    'all 300 queue',
  );
  // Interleave releases with new arrivals: the newcomers still go after everyone before them.
  for (let i = 0; i < 150; i++) cb.release();
  const late = Array.from({ length: 100 }, (_, i) => `late${i}`);
  for (const n of late) cb.admit(new Waiter(n, log));
  for (let i = 0; i < 250; i++) cb.release();
  t.same(log, [...names, ...late], 'admitted in arrival order');
  t.same([cb.active, cb.pending], [1, 0]);
});

t.test('aborted waiters are skipped, never admitted, and their place goes to the next one', async (t) => {
  const cb = new CircuitBreaker(pool({ maxConnections: 1, maxPendingRequests: 10 }), 'http1');
  const log: string[] = [];
  cb.admit(new Waiter('first', log));
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => new Waiter(n, log)) as [Waiter, Waiter, Waiter, Waiter];
  for (const w of [a, b, c, d]) cb.admit(w);
  a.aborted = true;
  b.aborted = true;
  cb.release();
  t.same(log, ['c'], 'a and b gave up: c goes');
  t.same([a.admitted, b.admitted], [0, 0]);
  t.equal(cb.active, 1, 'only c counts as active');
  d.aborted = true;
  cb.release();
  t.same(log, ['c'], 'the only one left gave up: nobody is admitted');
  t.same([cb.active, cb.pending], [0, 0]);
});

t.test('regression: waiters that gave up do not hold places in a full pending queue', async (t) => {
  // Envoy removes a cancelled pending request from the queue at once (the downstream reset or
  // timed out), so the pending limit counts only requests still waiting.
  const cb = new CircuitBreaker(pool({ maxConnections: 1, maxPendingRequests: 2 }), 'http1');
  const log: string[] = [];
  cb.admit(new Waiter('first', log));
  const a = new Waiter('a', log);
  const b = new Waiter('b', log);
  t.same([cb.admit(a), cb.admit(b)], [QUEUED, QUEUED]);
  a.aborted = true;
  b.aborted = true;
  const c = new Waiter('c', log);
  t.equal(cb.admit(c), QUEUED, 'the queue has room: both waiters in it gave up');
  t.equal(cb.overflows, 0);
  t.equal(cb.pending, 1);
  t.equal(cb.admit(new Waiter('d', log)), QUEUED);
  t.equal(cb.admit(new Waiter('e', log)), OVERFLOW, 'two live waiters: full');
  cb.release();
  t.same(log, ['c']);
});

t.test('HTTP/2: maxConnections does not bound requests; http2MaxRequests does, with no queue', async (t) => {
  const onlyConnections = new CircuitBreaker(pool({ maxConnections: 1, maxPendingRequests: 1 }), 'http2');
  t.equal(onlyConnections.limited, false, 'nothing to count: the exchange skips the breaker');
  const log: string[] = [];
  t.same(
    Array.from({ length: 50 }, (_, i) => onlyConnections.admit(new Waiter(`h${i}`, log))),
    Array.from({ length: 50 }, () => ADMITTED),
    'multiplexed: 50 concurrent requests over "one connection" all go',
  );

  const cb = new CircuitBreaker(pool({ maxConnections: 1, maxPendingRequests: 5, maxRequests: 2 }), 'http2');
  t.equal(cb.limited, true);
  t.same(
    ['a', 'b', 'c', 'd'].map((n) => cb.admit(new Waiter(n, log))),
    [ADMITTED, ADMITTED, OVERFLOW, OVERFLOW],
    'beyond maxRequests: overflow at once, never queued',
  );
  t.same([cb.active, cb.pending, cb.overflows], [2, 0, 2]);
  cb.release();
  t.equal(cb.admit(new Waiter('e', log)), ADMITTED, 'a finished request makes room');
  t.same(log, [], 'nobody was ever queued');
});

t.test('http2MaxRequests bounds HTTP/1.1 requests too, before the pending queue', async (t) => {
  // istio.io: http2MaxRequests "Maximum number of active requests to a destination ... applicable
  // to both HTTP/1.1 and HTTP2".
  const cb = new CircuitBreaker(pool({ maxConnections: 5, maxPendingRequests: 5, maxRequests: 3 }), 'http1');
  const log: string[] = [];
  t.same(
    ['a', 'b', 'c', 'd'].map((n) => cb.admit(new Waiter(n, log))),
    [ADMITTED, ADMITTED, ADMITTED, OVERFLOW],
  );
  t.equal(cb.pending, 0);
  // maxRequests alone (no maxConnections) also limits HTTP/1.1.
  const only = new CircuitBreaker(pool({ maxRequests: 1 }), 'http1');
  t.equal(only.limited, true);
  t.same([only.admit(new Waiter('x', log)), only.admit(new Waiter('y', log))], [ADMITTED, OVERFLOW]);
});

t.test('no limits: the breaker is off and admits everything', async (t) => {
  const cb = new CircuitBreaker(NO_LIMITS, 'http1');
  t.equal(cb.limited, false);
  const log: string[] = [];
  let admitted = 0;
  for (let i = 0; i < 2000; i++) if (cb.admit(new Waiter(`w${i}`, log)) === ADMITTED) admitted++;
  t.equal(admitted, 2000);
  t.same([cb.active, cb.pending, cb.overflows], [2000, 0, 0]);
});

t.test('retry budget: maxRetries concurrent retries per cluster, overflow counted, budget returned', async (t) => {
  const cb = new CircuitBreaker(pool({ maxRetries: 2 }), 'http1');
  t.equal(cb.limited, false, 'a retry budget alone does not gate first tries');
  t.same([cb.tryRetry(), cb.tryRetry(), cb.tryRetry()], [true, true, false]);
  t.same([cb.retriesActive, cb.retryOverflows], [2, 1]);
  cb.retryDone();
  t.equal(cb.retriesActive, 1);
  t.equal(cb.tryRetry(), true, 'a finished retry gives its place back');
  t.equal(cb.tryRetry(), false);
  t.equal(cb.retryOverflows, 2);

  // Unset (Istio's default is 2^32-1): unlimited.
  const open = new CircuitBreaker(NO_LIMITS, 'http2');
  let ok = 0;
  for (let i = 0; i < 1000; i++) if (open.tryRetry()) ok++;
  t.same([ok, open.retriesActive, open.retryOverflows], [1000, 1000, 0]);
});
