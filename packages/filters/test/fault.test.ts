// The fault filter as Envoy's envoy.filters.http.fault runs Istio's VirtualService `fault`:
// per-route config only, delay (DI) then abort (FI) with `fault filter abort`, gRPC aborts
// with a grpc status, per-request percentage draws, and timers released on client abort.
import t from 'tap';
import type { FaultConfig } from '@remora/config';
import { FAULT_ABORT_BODY, faultFactory, FaultFilter, FilterName, FilterStatus } from '@remora/filters';
import { RecordingCallbacks, storeContext } from './filter-fakes.ts';
import { RouteRequest } from './local-ratelimit-helpers.ts';

const ctx = storeContext();
const listener = faultFactory.compile({}, ctx);

function routeWith(fault: FaultConfig, grpc = false): RouteRequest {
  return new RouteRequest({ routeConfigs: new Map([[FilterName.Fault, faultFactory.compileRouteConfig(fault, ctx)]]), grpc });
}

const abort = (httpStatus: number | null, percent = 100, grpcStatus: number | null = null): FaultConfig => ({ delay: null, abort: { httpStatus, grpcStatus, percent } });
const delay = (fixedDelayMs: number, percent = 100): FaultConfig => ({ delay: { fixedDelayMs, percent }, abort: null });

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
  const req = routeWith(abort(500, 30));
  const n = 5000;
  let aborted = 0;
  for (let i = 0; i < n; i++) {
    const cb = new RecordingCallbacks();
    if (listener.create().onRequest(req, cb) === FilterStatus.StopIteration) aborted++;
  }
  t.ok(Math.abs(aborted / n - 0.3) < 0.03, `30% abort: ${aborted}/${n}`);
  let none = 0;
  const zero = routeWith(abort(500, 0));
  for (let i = 0; i < 200; i++) if (listener.create().onRequest(zero, new RecordingCallbacks()) === FilterStatus.StopIteration) none++;
  t.equal(none, 0, '0% never aborts');
});

t.test('delay: DI, the request resumes after the delay', async (t) => {
  const cb = new RecordingCallbacks();
  const f = listener.create() as FaultFilter;
  const started = performance.now();
  t.equal(f.onRequest(routeWith(delay(60)), cb), FilterStatus.StopIteration);
  t.same(cb.flags, ['DI']);
  t.equal(cb.continued, 0);
  await new Promise<void>((resolve) => {
    const iv = setInterval(() => {
      if (cb.continued > 0) {
        clearInterval(iv);
        resolve();
      }
    }, 5);
  });
  t.ok(performance.now() - started >= 59, 'waited the delay');
  t.equal(cb.reply, null);
  t.notOk(f.delaying);
});

t.test('delay then abort in one rule: both flags, abort after the delay', async (t) => {
  const cb = new RecordingCallbacks();
  const f = listener.create();
  f.onRequest(routeWith({ delay: { fixedDelayMs: 30, percent: 100 }, abort: { httpStatus: 418, grpcStatus: null, percent: 100 } }), cb);
  t.equal(cb.reply, null, 'no abort before the delay');
  await new Promise((r) => setTimeout(r, 80));
  t.same(cb.flags, ['DI']);
  t.equal(cb.reply?.status, 418);
  t.equal(cb.reply?.flag, 'FI');
  t.equal(cb.continued, 0, 'aborted, not resumed');
});

t.test('a client that goes away releases the delay timer', async (t) => {
  const cb = new RecordingCallbacks();
  const f = listener.create() as FaultFilter;
  f.onRequest(routeWith(delay(10_000)), cb);
  t.ok(f.delaying);
  cb.aborted = true;
  f.onDestroy();
  t.notOk(f.delaying, 'timer cleared');
  // A timer that fired anyway must not resume an aborted request.
  const g = listener.create() as FaultFilter;
  const cb2 = new RecordingCallbacks();
  g.onRequest(routeWith(delay(20)), cb2);
  cb2.aborted = true;
  await new Promise((r) => setTimeout(r, 50));
  t.equal(cb2.continued, 0);
});

t.test('bad route configs are refused', async (t) => {
  t.throws(() => faultFactory.compileRouteConfig(abort(700), ctx), /httpStatus must be an HTTP status/);
  t.throws(() => faultFactory.compileRouteConfig(abort(null), ctx), /httpStatus or grpcStatus/);
  t.throws(() => faultFactory.compileRouteConfig(delay(-5), ctx), /fixedDelayMs must be a non-negative/);
  t.throws(() => faultFactory.compileRouteConfig(abort(500, 120), ctx), /percent must be a percentage/);
});
