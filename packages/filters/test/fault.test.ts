// The fault filter as Envoy's envoy.filters.http.fault runs Istio's VirtualService `fault`
// (HTTPFault in the route's typed_per_filter_config, an empty one in the chain): delay (DI) then abort (FI) with `fault filter abort`, gRPC aborts
// with a grpc status, per-request percentage draws, and timers released on client abort.
// Time and chance are the test's own (ManualTimers, randomSequence): delays run without
// waiting, and percentages are exact.
import t from 'tap';
import type { HTTPFaultJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/fault/v3/fault_pb.js';
import { FilterName, FilterStatus, type FilterStats } from '@remora/filters';
import { FAULT_ABORT_BODY, faultFactory, FaultFilter, FaultFilterConfig, FaultFilterFactory, type RandomSource } from '@remora/filters/internal';
import { ManualTimers, namedStats, randomSequence, RecordingCallbacks, storeContext } from '@remora/filters/testing';
import { RouteRequest } from './local-ratelimit-helpers.ts';

const ctx = storeContext();
const listener = faultFactory.compile({}, ctx);

/** A fault filter config on timers the test moves, and (optionally) draws it chooses. */
function controlled(random?: RandomSource, stats?: FilterStats): { timers: ManualTimers; config: FaultFilterConfig } {
  const timers = new ManualTimers();
  const factory = new FaultFilterFactory(random === undefined ? { timers } : { timers, random });
  return { timers, config: factory.compile({}, stats === undefined ? ctx : { ...ctx, stats }) };
}

/** 0, 1/n, 2/n, … (n-1)/n: one of each, so p% of n draws fall under p%. */
const evenly = (n: number): number[] => Array.from({ length: n }, (_, i) => i / n);

function routeWith(fault: HTTPFaultJson, grpc = false): RouteRequest {
  return new RouteRequest({ routeConfigs: new Map([[FilterName.Fault, faultFactory.compileRouteConfig(fault, ctx)]]), grpc });
}

// Percentages as istiod writes them: over a MILLION.
const million = (percent: number) => ({ numerator: percent * 10_000, denominator: 'MILLION' as const });
const abort = (httpStatus: number | null, percent = 100, grpcStatus: number | null = null): HTTPFaultJson => ({
  abort: { ...(httpStatus !== null ? { httpStatus } : {}), ...(grpcStatus !== null ? { grpcStatus } : {}), percentage: million(percent) },
});
const delay = (fixedDelayMs: number, percent = 100): HTTPFaultJson => ({ delay: { fixedDelay: `${fixedDelayMs / 1000}s`, percentage: million(percent) } });

t.test('routes without a fault pass untouched', async (t) => {
  const cb = new RecordingCallbacks();
  t.equal(listener.create().onRequest(new RouteRequest(), cb), FilterStatus.Continue);
  t.equal(cb.reply, null);
  t.same(cb.flags, []);
});

t.test('abort: status, Envoy body, FI flag', async (t) => {
  const cb = new RecordingCallbacks();
  t.equal(listener.create().onRequest(routeWith(abort(503)), cb), FilterStatus.StopIteration);
  t.same(cb.reply, { status: 503, body: FAULT_ABORT_BODY, flag: 'FI', details: 'fault_filter_abort', grpcStatus: null });
  t.equal(FAULT_ABORT_BODY, 'fault filter abort');
});

t.test('gRPC abort: the gRPC status travels with the local reply (HTTP 200)', async (t) => {
  const cb = new RecordingCallbacks();
  listener.create().onRequest(routeWith(abort(null, 100, 14), true), cb);
  t.same(cb.reply, { status: 200, body: FAULT_ABORT_BODY, flag: 'FI', details: 'fault_filter_abort', grpcStatus: 14 });
});

t.test('percentages are fresh draws per request', async (t) => {
  const { config } = controlled(randomSequence(evenly(100)));
  const req = routeWith(abort(500, 30));
  const outcomes: boolean[] = [];
  for (let i = 0; i < 100; i++) outcomes.push(config.create().onRequest(req, new RecordingCallbacks()) === FilterStatus.StopIteration);
  t.equal(outcomes.filter(Boolean).length, 30, '30% abort: exactly the 30 draws under 0.30');
  t.same(outcomes.slice(0, 31), [...Array<boolean>(30).fill(true), false], 'one draw per request, in order: draws 0.00-0.29 abort, 0.30 does not');
  const zero = routeWith(abort(500, 0));
  const low = controlled(randomSequence([0])).config;
  t.equal(low.create().onRequest(zero, new RecordingCallbacks()), FilterStatus.Continue, '0% never aborts, not even on a draw of 0');
  const high = controlled(randomSequence([0.999999])).config;
  t.equal(high.create().onRequest(routeWith(abort(500, 100)), new RecordingCallbacks()), FilterStatus.StopIteration, '100% always aborts, even on the highest draw');
});

t.test('delay and abort draw separately: delayed by one draw, then not aborted by the next', async (t) => {
  const { timers, config } = controlled(randomSequence([0.2, 0.6]));
  const cb = new RecordingCallbacks();
  const both: HTTPFaultJson = { delay: { fixedDelay: '0.010s', percentage: million(50) }, abort: { httpStatus: 503, percentage: million(50) } };
  t.equal(config.create().onRequest(routeWith(both), cb), FilterStatus.StopIteration, 'draw 0.2 < 50%: delayed');
  timers.advance(10);
  t.equal(cb.continued, 1, 'draw 0.6 ≥ 50%: not aborted, the request goes on');
  t.equal(cb.reply, null);
  t.same(cb.flags, ['DI']);
});

t.test('delay: DI, the request resumes after the delay, not before', async (t) => {
  const { timers, config } = controlled();
  const cb = new RecordingCallbacks();
  const f = config.create() as FaultFilter;
  t.equal(f.onRequest(routeWith(delay(60)), cb), FilterStatus.StopIteration);
  t.same(cb.flags, ['DI']);
  t.same(timers.dueIn(), [60], 'one timer, for the delay');
  timers.advance(59);
  t.equal(cb.continued, 0, 'still delayed at 59 ms');
  t.ok(f.delaying);
  timers.advance(1);
  t.equal(cb.continued, 1, 'resumed at 60 ms');
  t.equal(cb.reply, null);
  t.notOk(f.delaying);
});

t.test('delay then abort in one rule: both flags, abort after the delay', async (t) => {
  const { timers, config } = controlled();
  const cb = new RecordingCallbacks();
  const f = config.create();
  f.onRequest(routeWith({ delay: { fixedDelay: '0.030s', percentage: million(100) }, abort: { httpStatus: 418, percentage: million(100) } }), cb);
  timers.advance(29);
  t.equal(cb.reply, null, 'no abort before the delay');
  timers.advance(1);
  t.same(cb.flags, ['DI']);
  t.equal(cb.reply?.status, 418);
  t.equal(cb.reply?.flag, 'FI');
  t.equal(cb.continued, 0, 'aborted, not resumed');
});

t.test('a client that goes away releases the delay timer; the request never resumes', async (t) => {
  const { timers, config } = controlled();
  const cb = new RecordingCallbacks();
  const f = config.create() as FaultFilter;
  f.onRequest(routeWith(delay(1_000)), cb);
  t.ok(f.delaying);
  t.equal(timers.pending, 1);
  timers.advance(100);
  cb.aborted = true;
  f.onDestroy();
  t.notOk(f.delaying, 'timer cleared');
  t.equal(timers.pending, 0, 'no timer left armed');
  timers.advance(10_000);
  t.equal(cb.continued, 0, 'never forwarded, however long after');
  t.equal(cb.reply, null);
  // A timer that fires after the client left (before the request was torn down) must not resume it either.
  const g = config.create() as FaultFilter;
  const cb2 = new RecordingCallbacks();
  g.onRequest(routeWith(delay(20)), cb2);
  cb2.aborted = true;
  timers.advance(20);
  t.equal(cb2.continued, 0);
  t.equal(cb2.reply, null);
  g.onDestroy();
});

t.test('bad route configs are refused', async (t) => {
  t.throws(() => faultFactory.compileRouteConfig(abort(700), ctx), /httpStatus must be an HTTP status/);
  t.throws(() => faultFactory.compileRouteConfig(abort(null), ctx), /httpStatus or grpcStatus/);
  t.throws(() => faultFactory.compileRouteConfig(delay(-5), ctx), /delay.fixedDelay must be a non-negative duration/);
  t.throws(() => faultFactory.compileRouteConfig({ abort: { httpStatus: 500, percentage: { numerator: 1, denominator: 'PERCENT' as 'HUNDRED' } } }, ctx), /abort.percentage.denominator must be HUNDRED, TEN_THOUSAND or MILLION/);
  t.throws(() => faultFactory.compileRouteConfig({ abort: { headerAbort: {} } }, ctx), /headerAbort .* is not supported/);
  t.throws(() => faultFactory.compileRouteConfig({ upstreamCluster: 'x' }, ctx), /upstreamCluster is not supported/);
});

t.test('a percentage above its denominator is capped at 100%; an unset one is 0% (Envoy)', async (t) => {
  let aborted = 0;
  const over = routeWith({ abort: { httpStatus: 500, percentage: { numerator: 150 } } });
  const unset = routeWith({ abort: { httpStatus: 500 } });
  for (let i = 0; i < 100; i++) {
    if (listener.create().onRequest(over, new RecordingCallbacks()) === FilterStatus.StopIteration) aborted++;
    if (listener.create().onRequest(unset, new RecordingCallbacks()) === FilterStatus.StopIteration) aborted += 1000;
  }
  t.equal(aborted, 100);
});

t.test("the listener's HTTPFault applies to routes without one; a route's own (even empty) replaces it", async (t) => {
  const withDefault = faultFactory.compile(abort(503), ctx);
  const cb = new RecordingCallbacks();
  t.equal(withDefault.create().onRequest(new RouteRequest(), cb), FilterStatus.StopIteration);
  t.equal(cb.reply?.status, 503);
  const own = new RecordingCallbacks();
  withDefault.create().onRequest(routeWith(abort(418)), own);
  t.equal(own.reply?.status, 418);
  const empty = new RecordingCallbacks();
  t.equal(withDefault.create().onRequest(routeWith({}), empty), FilterStatus.Continue);
});

t.test("Envoy's fault stats: delays_injected, aborts_injected, and active_faults while a fault is under way", async (t) => {
  const stats = namedStats();
  const { timers, config: counted } = controlled(undefined, stats);
  const v = (name: string) => stats.value(`http.hcm.fault.${name}`);
  t.same(stats.names().sort(), ['http.hcm.fault.aborts_injected', 'http.hcm.fault.active_faults', 'http.hcm.fault.delays_injected']);

  const delayed = counted.create() as FaultFilter;
  const cb = new RecordingCallbacks();
  delayed.onRequest(routeWith({ delay: { fixedDelay: '0.030s', percentage: million(100) }, abort: { httpStatus: 418, percentage: million(100) } }), cb);
  t.equal(v('delays_injected'), 1);
  t.equal(v('aborts_injected'), 0, 'not aborted yet');
  t.equal(v('active_faults'), 1, 'one request under a fault');
  const aborted = counted.create();
  aborted.onRequest(routeWith(abort(503)), new RecordingCallbacks());
  t.equal(v('aborts_injected'), 1);
  t.equal(v('active_faults'), 2);
  aborted.onDestroy?.();
  t.equal(v('active_faults'), 1, 'the aborted request ended');
  timers.advance(30);
  t.equal(cb.reply?.status, 418);
  t.equal(v('aborts_injected'), 2, 'the abort after the delay counts too');
  t.equal(v('delays_injected'), 1);
  delayed.onDestroy();
  t.equal(v('active_faults'), 0, 'back to zero once both ended');
  const untouched = counted.create();
  untouched.onRequest(routeWith(abort(503, 0)), new RecordingCallbacks());
  untouched.onDestroy?.();
  t.equal(v('aborts_injected'), 2, 'a fault not drawn counts nothing');
  t.equal(v('active_faults'), 0);
});

t.test('a delay longer than a Node timer holds is armed at the longest one Node keeps', async (t) => {
  const { timers, config } = controlled();
  const f = config.create() as FaultFilter;
  f.onRequest(routeWith({ delay: { fixedDelay: '315576000000s', percentage: million(100) } }), new RecordingCallbacks());
  t.same(timers.dueIn(), [2 ** 31 - 1], '2^31-1 ms, not the 10,000 years asked (Node would fire that at once)');
  f.onDestroy();
});

t.test('with Node timers: a delay longer than a Node timer holds waits (it does not fire at once)', async (t) => {
  // 10,000 years: valid in Envoy's Duration; Node would fire a timer over 2^31-1 ms after 1 ms.
  const cb = new RecordingCallbacks();
  const f = listener.create() as FaultFilter;
  t.equal(f.onRequest(routeWith({ delay: { fixedDelay: '315576000000s', percentage: million(100) } }), cb), FilterStatus.StopIteration);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(cb.continued, 0, 'still delayed after 50 ms');
  t.ok(f.delaying);
  f.onDestroy();
});
