// Virtual host selection order, redirect Location building, response flag formatting and
// the access log formats.
import t from 'tap';
import type { Route, RouteConfiguration, VirtualHost } from '@remora/config';
import { findRoute, plainRouteContext, formatJson, formatResponseFlags, formatText, redirectLocation, ResponseFlag, RouteTable, type AccessLogRecord } from '@remora/proxy';

const vh = (name: string, domains: string[]): VirtualHost => ({ name, domains, routes: [], requireTls: false });
const table = (ignorePort: boolean, ...vhosts: VirtualHost[]): RouteTable =>
  new RouteTable({ name: 't', virtualHosts: vhosts, ignorePortInHostMatching: ignorePort } satisfies RouteConfiguration, plainRouteContext(new Map()));

t.test('virtual host order: exact, longest suffix wildcard, longest prefix wildcard, then *', async (t) => {
  const rt = table(
    false,
    vh('exact', ['api.example.com', 'api.example.com:8080']),
    vh('suffix-short', ['*.com']),
    vh('suffix-long', ['*.example.com']),
    vh('prefix', ['api.*']),
    vh('any-port', ['svc.local:*']),
    vh('default', ['*']),
  );
  const name = (a: string) => rt.find(a)?.name ?? null;
  t.equal(name('api.example.com'), 'exact');
  t.equal(name('api.example.com:8080'), 'exact');
  t.equal(name('api.example.com:9090'), 'default', 'a port not listed does not match the exact domains');
  t.equal(name('web.example.com'), 'suffix-long');
  t.equal(name('web.other.com'), 'suffix-short');
  t.equal(name('api.internal'), 'prefix');
  t.equal(name('svc.local:1234'), 'any-port');
  t.equal(name('svc.local'), 'default', '`:*` needs a port');
  t.equal(name('example.com'), 'suffix-short', '*.example.com does not match the bare domain');
  t.equal(name('[::1]:8080'), 'default');
});

t.test("route state is keyed by where the route was written, never by its (often empty) Envoy name", async (t) => {
  const route = (name: string, origin: string): Route => ({
    name,
    origin,
    match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] },
    action: { kind: 'direct-response', status: 200, body: null },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
  });
  const scopes: string[] = [];
  const ctx = { clusters: new Map(), routeFilters: (_r: Route, scope: string) => (scopes.push(scope), null) };
  const routes = [route('', 'default/shop#0'), route('', 'default/shop#1.0'), route('api', 'default/shop#2'), route('', 'team/d#0'), route('', 'team/d#0'), route('default', '')];
  new RouteTable({ name: '80', virtualHosts: [{ name: 'shop:80', domains: ['*'], routes, requireTls: true }], ignorePortInHostMatching: false }, ctx);
  t.same(scopes, [
    '80/shop:80/default/shop#0',
    '80/shop:80/default/shop#1.0',
    '80/shop:80/default/shop#2',
    '80/shop:80/team/d#0',
    '80/shop:80/team/d#0~1',
    '80/shop:80/#5',
    '80/shop:80/https_redirect',
  ], 'unnamed routes apart; a delegate behind two root routes twice; a route Istio makes by position');
});

t.test("header conditions: contains, and Envoy's treat_missing_header_as_empty", async (t) => {
  const route = (name: string, headers: Route['match']['headers']): Route => ({
    name,
    origin: '',
    match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers, queryParams: [] },
    action: { kind: 'direct-response', status: 200, body: null },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
  });
  const rt = table(false, {
    ...vh('v', ['*']),
    routes: [
      route('contains', [{ name: 'x-tags', match: { kind: 'contains', value: 'beta' }, invert: false }]),
      // withoutHeaders x-env exact "": an absent header counts as empty only with missingAsEmpty.
      route('missing-as-empty', [
        { name: 'x-env', match: { kind: 'exact', value: '' }, invert: true, missingAsEmpty: true },
        { name: 'x-probe', match: { kind: 'present' }, invert: false },
      ]),
      route('missing-never-matches', [{ name: 'x-env', match: { kind: 'exact', value: '' }, invert: true }]),
    ],
  });
  const match = (headers: Record<string, string>): string | null =>
    rt.find('a')!.match({
      method: 'GET',
      path: '/',
      pathOnly: '/',
      authority: 'a',
      scheme: 'http',
      requestHeader: (n) => headers[n] ?? null,
      queryParam: () => null,
      auth: null,
    })?.name ?? null;
  t.equal(match({ 'x-tags': 'alpha,beta,gamma' }), 'contains');
  t.equal(match({ 'x-tags': 'alpha' }), 'missing-never-matches', 'no beta: not contained');
  t.equal(match({ 'x-probe': '1' }), 'missing-never-matches', 'absent x-env is empty: the inverted exact "" fails');
  t.equal(match({ 'x-probe': '1', 'x-env': 'prod' }), 'missing-as-empty', 'a non-empty x-env passes the inverted condition');
});

t.test("CONNECT: only connect_matcher routes take it, and they take nothing else (Envoy's pathless requests)", async (t) => {
  const route = (name: string, path: Route['match']['path']['match'], headers: Route['match']['headers'] = []): Route => ({
    name,
    origin: '',
    match: { path: { match: path, ignoreCase: false }, headers, queryParams: [] },
    action: { kind: 'direct-response', status: 200, body: null },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
  });
  const request = (method: string, path: string, authority = 'a:7') => ({
    method,
    path,
    pathOnly: path,
    authority,
    scheme: 'http',
    requestHeader: (n: string) => (n === ':authority' ? authority : n === ':method' ? method : null),
    queryParam: () => null,
    auth: null,
  });
  const routes = [route('any', { kind: 'any' }), route('connect-b', { kind: 'connect' }, [{ name: ':authority', match: { kind: 'exact', value: 'b:7' }, invert: false }]), route('connect', { kind: 'connect' })];
  // Enough routes for the path index too: the connect routes sit among its always-tried ones.
  const many = [...Array.from({ length: 20 }, (_, i) => route(`p${i}`, { kind: 'prefix', value: `/p${i}` })), ...routes];
  for (const [what, list] of [['scanned', routes], ['indexed', many]] as const) {
    const rt = table(false, { ...vh('v', ['*']), routes: list });
    t.equal(findRoute(rt, request('CONNECT', ''))?.name, 'connect', `${what}: a CONNECT skips the match-all route for the first connect_matcher route whose conditions hold`);
    t.equal(findRoute(rt, request('CONNECT', '', 'b:7'))?.name, 'connect-b', `${what}: connect_matcher routes keep their header conditions and order`);
    t.equal(findRoute(rt, request('GET', '/'))?.name, 'any', `${what}: a request with a path never reaches a connect_matcher route`);
  }
  const none = table(false, { ...vh('v', ['*']), routes: [route('any', { kind: 'any' })] });
  t.equal(findRoute(none, request('CONNECT', '')), null, 'no connect_matcher route: no route (404)');
  const only = table(false, { ...vh('v', ['*']), routes: [route('connect', { kind: 'connect' })] });
  t.equal(only.find('a')!.match(request('GET', '/')), null, 'a connect_matcher route does not match another method');
});

t.test('gateways ignore the port', async (t) => {
  const rt = table(true, vh('a', ['a.example.com']), vh('w', ['*.example.com']));
  t.equal(rt.find('a.example.com:8080')?.name, 'a');
  t.equal(rt.find('b.example.com:443')?.name, 'w');
  t.equal(rt.find('c.org'), null, 'no default: no virtual host');
});

t.test('redirect Location', async (t) => {
  const base = { status: 301, scheme: null, authority: null, port: null, derivePortFromScheme: false, path: null } as const;
  const req = { scheme: 'http', authority: 'shop.example.com:8080', path: '/old/page?x=1' };
  t.equal(redirectLocation({ kind: 'redirect', ...base, path: '/new' }, req), 'http://shop.example.com:8080/new?x=1');
  t.equal(redirectLocation({ kind: 'redirect', ...base, path: '/new?y=2' }, req), 'http://shop.example.com:8080/new?y=2');
  t.equal(redirectLocation({ kind: 'redirect', ...base, authority: 'other.example.com' }, req), 'http://other.example.com/old/page?x=1');
  t.equal(redirectLocation({ kind: 'redirect', ...base, scheme: 'https' }, req), 'https://shop.example.com/old/page?x=1');
  t.equal(redirectLocation({ kind: 'redirect', ...base, scheme: 'https', port: 8443 }, req), 'https://shop.example.com:8443/old/page?x=1');
  t.equal(redirectLocation({ kind: 'redirect', ...base, port: 80 }, req), 'http://shop.example.com/old/page?x=1', 'the default port is left out');
  t.equal(redirectLocation({ kind: 'redirect', ...base, stripQuery: true }, req), 'http://shop.example.com:8080/old/page', "strip_query drops the request's query");
  t.equal(redirectLocation({ kind: 'redirect', ...base, path: '/new', stripQuery: true }, req), 'http://shop.example.com:8080/new');
  t.equal(redirectLocation({ kind: 'redirect', ...base, path: '/new?y=2', stripQuery: true }, req), 'http://shop.example.com:8080/new?y=2', "a query in path_redirect is kept, as Envoy's");
});

t.test('response flags print in Envoy\'s order', async (t) => {
  t.equal(formatResponseFlags(0), '-');
  t.equal(formatResponseFlags(ResponseFlag.URX | ResponseFlag.UF), 'UF,URX');
  t.equal(formatResponseFlags(ResponseFlag.DC | ResponseFlag.UT), 'UT,DC');
  t.equal(formatResponseFlags(ResponseFlag.NR), 'NR');
});

const record: AccessLogRecord = {
  startTime: Date.UTC(2024, 4, 1, 10, 0, 0, 123),
  method: 'GET',
  originalPath: '/status/418',
  protocol: 'HTTP/1.1',
  responseCode: 418,
  responseFlags: 0,
  responseCodeDetails: 'via_upstream',
  upstreamTransportFailureReason: '',
  bytesReceived: 0,
  bytesSent: 135,
  durationMs: 4.4,
  upstreamServiceTimeMs: 3.6,
  xForwardedFor: null,
  userAgent: 'curl/8.0',
  requestId: '84961386-6d84-929d-98bd-c5aee93b5c88',
  authority: 'httpbin:8000',
  upstreamHost: '10.44.1.27:80',
  upstreamCluster: 'outbound|8000||httpbin.foo.svc.cluster.local',
  downstreamLocalAddress: '10.0.45.184:8000',
  downstreamRemoteAddress: '10.44.1.23:46520',
  requestedServerName: null,
  routeName: 'default',
};

t.test('text access log: Istio\'s default format, field for field', async (t) => {
  t.equal(
    formatText(record),
    '[2024-05-01T10:00:00.123Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/8.0" ' +
      '"84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local - ' +
      '10.0.45.184:8000 10.44.1.23:46520 - default\n',
  );
  t.match(formatText({ ...record, responseCode: 503, responseFlags: ResponseFlag.UF | ResponseFlag.URX, upstreamServiceTimeMs: -1 }), /" 503 UF,URX via_upstream - "-" 0 135 4 - "-"/);
});

t.test('JSON access log: Istio\'s keys', async (t) => {
  const j = JSON.parse(formatJson(record)) as Record<string, unknown>;
  t.same(
    { start_time: j.start_time, method: j.method, path: j.path, response_code: j.response_code, response_flags: j.response_flags, duration: j.duration, upstream_service_time: j.upstream_service_time, upstream_cluster: j.upstream_cluster, route_name: j.route_name, x_forwarded_for: j.x_forwarded_for },
    { start_time: '2024-05-01T10:00:00.123Z', method: 'GET', path: '/status/418', response_code: 418, response_flags: '-', duration: 4, upstream_service_time: '4', upstream_cluster: 'outbound|8000||httpbin.foo.svc.cluster.local', route_name: 'default', x_forwarded_for: null },
  );
});
