// The router's header-mutation stage (Envoy's request/response_headers_to_add and _to_remove,
// Istio's VirtualService `headers`): a level removes (names in any case), then sets (replacing
// every header of the name), then appends; the request gets the route's edits then the
// destination's, the response the destination's then the route's; a route without edits
// shares one stage that leaves the headers alone.
import t from 'tap';
import type { HeaderMutation } from '@remora/config';
import { finalizeRequestHeaders, finalizeResponseHeaders, HeaderMutationEdits, RouteHeaderMutation } from '@remora/filters/internal';

const m = (over: Partial<HeaderMutation>): HeaderMutation => ({ set: [], add: [], remove: [], ...over });

t.test('one level: remove in any case, set replaces every header of the name, add appends', async (t) => {
  const headers = ['X-Secret', 's', 'x-keep', 'k', 'X-Route', 'client', 'x-route', 'client2', 'x-multi', 'a'];
  new HeaderMutationEdits(m({ remove: ['x-secret'], set: [['x-route', 'proxy']], add: [['x-multi', 'b']] })).apply(headers);
  t.same(headers, ['x-keep', 'k', 'x-multi', 'a', 'x-route', 'proxy', 'x-multi', 'b']);
});

t.test("request: a weighted cluster's edits first, then the route's, whose set wins (Envoy's weighted cluster order)", async (t) => {
  const route = RouteHeaderMutation.of(m({ set: [['x-who', 'route']], add: [['x-trail', 'route']] }), null);
  const dest = RouteHeaderMutation.of(m({ set: [['x-who', 'dest']], add: [['x-trail', 'dest']] }), null);
  const headers = ['host', 'a.test'];
  finalizeRequestHeaders(headers, route, dest);
  t.same(headers, ['host', 'a.test', 'x-trail', 'dest', 'x-who', 'route', 'x-trail', 'route']);
});

t.test("response: the destination first, then the route, whose set wins (Envoy's weighted cluster order)", async (t) => {
  const route = RouteHeaderMutation.of(null, m({ set: [['x-who', 'route']], remove: ['server'] }));
  const dest = RouteHeaderMutation.of(null, m({ set: [['x-who', 'dest']], add: [['x-dest', '1']] }));
  const headers = ['server', 'app', 'content-length', '0'];
  finalizeResponseHeaders(headers, dest, route);
  t.same(headers, ['content-length', '0', 'x-dest', '1', 'x-who', 'route']);
});

t.test('request edits never touch the response and the other way round', async (t) => {
  const stage = RouteHeaderMutation.of(m({ add: [['x-req', '1']] }), m({ add: [['x-res', '1']] }));
  const req: string[] = [];
  const res: string[] = [];
  finalizeRequestHeaders(req, stage, RouteHeaderMutation.NONE);
  finalizeResponseHeaders(res, RouteHeaderMutation.NONE, stage);
  t.same(req, ['x-req', '1']);
  t.same(res, ['x-res', '1']);
});

t.test('a route without edits shares the stage that does nothing', async (t) => {
  t.equal(RouteHeaderMutation.of(null, null), RouteHeaderMutation.NONE);
  t.not(RouteHeaderMutation.of(m({}), null), RouteHeaderMutation.NONE);
  const headers = ['a', '1'];
  finalizeRequestHeaders(headers, RouteHeaderMutation.NONE, RouteHeaderMutation.NONE);
  finalizeResponseHeaders(headers, RouteHeaderMutation.NONE, RouteHeaderMutation.NONE);
  t.same(headers, ['a', '1']);
});
