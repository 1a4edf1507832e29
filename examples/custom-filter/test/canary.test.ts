// The canary filter against @remora/filters/testing: a new client is assigned by the
// configured share and gets the cookie; a returning one keeps its group; the group reaches
// the routes as a header (with the route chosen again), the access log as metadata, the
// response as x-canary-group; counters count; bad configs name the field.
import t from 'tap';
import { FilterStatus } from '@remora/filters';
import { FakeRequest, FakeResponse, namedStats, RecordingCallbacks, storeContext } from '@remora/filters/testing';
import { canaryFilter, CanaryFilter, parseCanaryConfig, type CanaryConfig } from '../src/index.ts';
import { Stat } from '@remora/filters';

function config(random: number, over: Record<string, unknown> = {}): CanaryConfig {
  return { ...parseCanaryConfig({ percent: 20, ...over }), stats: { assignedCanary: new Stat(), assignedStable: new Stat(), sticky: new Stat() }, random: () => random };
}

t.test('a new client below the share: canary, header true, route chosen again, cookie set', async (t) => {
  const c = config(5);
  const f = new CanaryFilter(c);
  const req = new FakeRequest();
  const cb = new RecordingCallbacks();
  t.equal(f.onRequest(req, cb), FilterStatus.Continue);
  t.equal(req.requestHeader('x-canary'), 'true');
  t.equal(cb.routeCacheCleared, 1);
  t.equal(req.dynamicMetadata('example.canary', 'group'), 'canary');
  const res = new FakeResponse({ status: 200 });
  f.onResponse(res);
  t.equal(res.header('x-canary-group'), 'canary');
  t.equal(res.header('set-cookie'), 'canary=canary; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax');
  t.equal(c.stats.assignedCanary.value, 1);
});

t.test('a new client above the share: stable', async (t) => {
  const c = config(50);
  const f = new CanaryFilter(c);
  const req = new FakeRequest();
  f.onRequest(req, new RecordingCallbacks());
  t.equal(req.requestHeader('x-canary'), 'false');
  const res = new FakeResponse();
  f.onResponse(res);
  t.match(res.header('set-cookie'), /^canary=stable;/);
  t.equal(c.stats.assignedStable.value, 1);
});

t.test('a returning client keeps its group and gets no new cookie', async (t) => {
  const c = config(99);
  const f = new CanaryFilter(c);
  const req = new FakeRequest({ headers: { cookie: 'a=b; canary=canary' } });
  f.onRequest(req, new RecordingCallbacks());
  t.equal(req.requestHeader('x-canary'), 'true');
  const res = new FakeResponse();
  f.onResponse(res);
  t.equal(res.header('set-cookie'), null);
  t.equal(c.stats.sticky.value, 1);
});

t.test('a client that sends the header keeps its choice: no assignment, no cookie', async (t) => {
  const c = config(1);
  const f = new CanaryFilter(c);
  const req = new FakeRequest({ headers: { 'x-canary': 'false' } });
  const cb = new RecordingCallbacks();
  f.onRequest(req, cb);
  t.equal(req.requestHeader('x-canary'), 'false');
  t.equal(cb.routeCacheCleared, 0);
  const res = new FakeResponse();
  f.onResponse(res);
  t.equal(res.header('x-canary-group'), 'stable');
  t.equal(res.header('set-cookie'), null);
  t.equal(c.stats.assignedCanary.value + c.stats.assignedStable.value + c.stats.sticky.value, 0);
});

t.test('the factory: counters under the filter\'s scope; bad configs name the field', async (t) => {
  const stats = namedStats();
  const compiled = canaryFilter.compile({ percent: 100, header: 'X-Group' }, { ...storeContext(), stats });
  const req = new FakeRequest();
  compiled.create().onRequest(req, new RecordingCallbacks());
  t.equal(req.requestHeader('x-group'), 'true');
  t.equal(stats.value('http.hcm.canary.assigned_canary'), 1);
  t.throws(() => canaryFilter.compile({ percent: 101 }, storeContext()), /percent: must be a number from 0 to 100, got 101/);
  t.throws(() => canaryFilter.compile({ cookei: 'x' }, storeContext()), /cookei: unknown field/);
  t.throws(() => canaryFilter.compile({ cookie: 'a b' }, storeContext()), /cookie: must be a cookie or header name/);
});
