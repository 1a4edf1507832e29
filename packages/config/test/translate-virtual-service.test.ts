// VirtualService HTTP routes in the Istio translator: match blocks, conditions resolved per
// proxy, request matchers, weighted destinations and their ports, and every route action
// (retries, timeout, rewrite, redirect, direct response, headers, mirrors, CORS, fault).
//
// Reference: istio.io VirtualService API page; pilot/pkg/networking/core/route/route.go
// (BuildHTTPRoutesForVirtualService, translateRoute, sourceMatchHTTP, TranslateRouteMatch,
// translateHeaderMatch, translateQueryParamMatch, applyHTTPRouteDestination,
// GetDestinationCluster, ApplyRedirect, MirrorPercent), route/retry/retry.go (ConvertPolicy).
import t from 'tap';
import type { JsonValue } from '@bufbuild/protobuf';
import { envoyFromJson, envoyToJson } from '@remora/config/envoy';
import { CorsPolicySchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import { DEFAULT_RETRY_POLICY, type Route, type RouteMatch } from '@remora/config';
import { BOOKINFO_SERVICES, bk, forward, INGRESS, nodeWith, routeTable, SIDECAR, targets, translate, vhost, type Translated } from './helpers/translate.ts';

const REVIEWS_VH = 'reviews.default.svc.cluster.local:9080';

/** Translates a `reviews` VirtualService (http section given) for the productpage sidecar. */
function reviewsVs(http: string, node = SIDECAR, extra = ''): Translated & { routes: Route[] } {
  const out = translate(
    `${BOOKINFO_SERVICES}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n${extra}  http:\n${http}\n`,
    node,
  );
  return { ...out, routes: [...vhost(out.config, REVIEWS_VH).routes] };
}
const any = { kind: 'any' } as const;
const match = (over: Partial<RouteMatch> = {}): RouteMatch => ({ path: { match: any, ignoreCase: false }, headers: [], queryParams: [], ...over });
const to = (subset: string): string => `    route:\n    - destination: {host: reviews, subset: ${subset}}`;

t.test('each ORed match block becomes its own route, in order, named after the VirtualService', async (t) => {
  // The bookinfo gateway VirtualService's shape: five ORed matches, one destination.
  const { routes, issues } = reviewsVs(`  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    - uri: {regex: '^/api/v[0-9]+/.*'}
${to('v1')}
  - name: fallback
    route:
    - destination: {host: reviews, subset: v2}`);
  // No DestinationRule defines the subsets here: istioctl analyze's IST0101, as warnings.
  t.same(
    issues.map((i) => [i.severity, i.path]),
    [
      ['warning', 'spec.http[0].route[0].destination.subset'],
      ['warning', 'spec.http[1].route[0].destination.subset'],
    ],
  );
  t.same(
    routes.map((r) => [r.name, r.origin, r.match.path.match, targets(r)]),
    [
      ['', 'default/reviews#0.0', { kind: 'exact', value: '/productpage' }, [[bk('reviews', 'v1'), 100]]],
      ['', 'default/reviews#0.1', { kind: 'prefix', value: '/static' }, [[bk('reviews', 'v1'), 100]]],
      ['', 'default/reviews#0.2', { kind: 'regex', value: '^/api/v[0-9]+/.*' }, [[bk('reviews', 'v1'), 100]]],
      ['fallback', 'default/reviews#1', any, [[bk('reviews', 'v2'), 100]]],
    ],
    'istiod leaves unnamed routes unnamed; the origin names the route and match block',
  );
  t.equal(routes[0]!.action, routes[2]!.action, 'the blocks of one HTTP route share its action');
  t.same(
    reviewsVs(`  - name: api\n    match:\n    - name: v1\n      uri: {prefix: /v1}\n    - uri: {prefix: /v2}\n${to('v1')}`).routes.map((r) => r.name),
    ['api.v1', 'api'],
    'Istio route names: `<http.name>.<match.name>`, else `<http.name>`',
  );
  t.same(
    reviewsVs(`  - match:\n    - name: v1\n      uri: {prefix: /v1}\n    - uri: {prefix: /v2}\n${to('v1')}`).routes.map((r) => r.name),
    ['.v1', ''],
    'an unnamed route with a named match block: `.<match.name>`, as route.go joins them',
  );
});

t.test('uri, ignoreUriCase, method, authority, scheme, headers and withoutHeaders', async (t) => {
  const { routes } = reviewsVs(`  - match:
    - uri: {prefix: /Reviews}
      ignoreUriCase: true
      method: {exact: POST}
      authority: {prefix: reviews}
      scheme: {exact: https}
      headers:
        End-User: {exact: jason}
        x-canary: {}
        x-debug: {prefix: ""}
        x-version: {regex: 'v[0-9]+'}
      withoutHeaders:
        x-internal: {}
        x-env: {exact: prod}
${to('v2')}
  - match:
    - uri: {}
${to('v1')}`);
  t.same(routes[0]!.match, {
    path: { match: { kind: 'prefix', value: '/Reviews' }, ignoreCase: true },
    headers: [
      { name: ':method', match: { kind: 'exact', value: 'POST' }, invert: false },
      { name: ':authority', match: { kind: 'prefix', value: 'reviews' }, invert: false },
      { name: ':scheme', match: { kind: 'exact', value: 'https' }, invert: false },
      { name: 'end-user', match: { kind: 'exact', value: 'jason' }, invert: false },
      // `{}`: presence (VirtualService docs: "To provide an empty value, use {}"); an empty
      // prefix matches every value, so it is presence too.
      { name: 'x-canary', match: { kind: 'present' }, invert: false },
      { name: 'x-debug', match: { kind: 'present' }, invert: false },
      { name: 'x-version', match: { kind: 'regex', value: 'v[0-9]+' }, invert: false },
      { name: 'x-internal', match: { kind: 'present' }, invert: true },
      { name: 'x-env', match: { kind: 'exact', value: 'prod' }, invert: true },
    ],
    queryParams: [],
  });
  t.same(routes[1]!.match, match(), 'an empty uri matcher matches every path');
});

t.test('queryParams: {} is presence, exact "" is the empty value, exact and regex as given', async (t) => {
  // VirtualService docs, queryParams: "for a query parameter like “?key”, ... exact: """.
  // route.go translateQueryParamMatch: present_match only for an empty matcher; `exact: ""`
  // goes to Envoy as an exact match on "" (so `?key=true` does not match it).
  const { routes } = reviewsVs(`  - match:
    - queryParams:
        debug: {}
        flag: {exact: ""}
        user: {exact: jason}
        id: {regex: '[0-9]+'}
${to('v2')}`);
  t.same(routes[0]!.match.queryParams, [
    { name: 'debug', match: { kind: 'present' } },
    { name: 'flag', match: { kind: 'exact', value: '' } },
    { name: 'user', match: { kind: 'exact', value: 'jason' } },
    { name: 'id', match: { kind: 'regex', value: '[0-9]+' } },
  ]);
});

t.test('port, sourceLabels and sourceNamespace are resolved for this proxy at compile time', async (t) => {
  // route.go translateRoute drops a match whose port is not the listener port, and
  // sourceMatchHTTP drops those whose sourceLabels/sourceNamespace do not fit the proxy.
  const http = `  - match:
    - sourceLabels: {app: productpage}
      headers: {end-user: {exact: jason}}
    - sourceLabels: {app: productpage, version: v2}
    - sourceNamespace: team-a
    - port: 9080
      uri: {prefix: /p9080}
    - port: 8080
${to('v2')}
  - route:
    - destination: {host: reviews, subset: v1}`;
  const names = (node = SIDECAR): string[] => reviewsVs(http, node).routes.map((r) => r.origin);
  t.same(names(), ['default/reviews#0.0', 'default/reviews#0.3', 'default/reviews#1']);
  t.same(names(nodeWith(SIDECAR, { labels: { app: 'productpage', version: 'v2' } })), [
    'default/reviews#0.0',
    'default/reviews#0.1',
    'default/reviews#0.3',
    'default/reviews#1',
  ]);
  t.same(names(nodeWith(SIDECAR, { namespace: 'team-a', labels: { app: 'ratings' } })), ['default/reviews#0.2', 'default/reviews#0.3', 'default/reviews#1']);
  // The resolved conditions leave no trace in the match.
  t.same(reviewsVs(http).routes[1]!.match, match({ path: { match: { kind: 'prefix', value: '/p9080' }, ignoreCase: false } }));
});

t.test('match-level gateways replace the VirtualService gateways for that block', async (t) => {
  const { routes } = reviewsVs(
    `  - match:
    - uri: {prefix: /gw-only}
      gateways: [bookinfo-gateway]
    - uri: {prefix: /mesh}
      gateways: [mesh]
    - uri: {prefix: /both}
${to('v2')}`,
    SIDECAR,
    '  gateways: [mesh, bookinfo-gateway]\n',
  );
  t.same(routes.map((r) => r.origin), ['default/reviews#0.1', 'default/reviews#0.2']);
});

t.test('weights: one destination takes 100, weight 0 destinations are dropped, others keep theirs', async (t) => {
  const { routes } = reviewsVs(`  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
      weight: 100
  - match:
    - headers: {end-user: {exact: mike}}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v3}
      weight: 100
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10`);
  t.same(routes.map(targets), [
    [[bk('reviews', 'v2'), 100]],
    [[bk('reviews', 'v3'), 100]],
    [
      [bk('reviews', 'v1'), 90],
      [bk('reviews', 'v2'), 10],
    ],
  ]);
});

t.test('destination port: optional for a single-port service or the virtual host own port; unknown hosts are warned about', async (t) => {
  const out = translate(`${BOOKINFO_SERVICES}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 9080, name: http-alt, protocol: HTTP}
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /own}}]
    route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /single}}]
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /explicit}}]
    route: [{destination: {host: web, port: {number: 9080}}}]
  - match: [{uri: {prefix: /unknown}}]
    route: [{destination: {host: nowhere.example.com}}]
  - match: [{uri: {prefix: /wrong-port}}]
    route: [{destination: {host: ratings, port: {number: 8080}}}]
`);
  const view = (port: number): [string, number][][] => vhost(out.config, `web.default.svc.cluster.local:${port}`).routes.map(targets);
  t.same(view(80), [
    [['outbound|80||web.default.svc.cluster.local', 100]],
    [[bk('ratings'), 100]],
    [['outbound|9080||web.default.svc.cluster.local', 100]],
    [['outbound|80||nowhere.example.com', 100]],
    [['outbound|8080||ratings.default.svc.cluster.local', 100]],
  ]);
  t.same(view(9080).map((r) => r[0]![0]), [
    'outbound|9080||web.default.svc.cluster.local',
    bk('ratings'),
    'outbound|9080||web.default.svc.cluster.local',
    'outbound|9080||nowhere.example.com',
    'outbound|8080||ratings.default.svc.cluster.local',
  ]);
  t.same(out.brief, [
    'warning VirtualService default/web spec.http[3].route[0].destination.host: host nowhere.example.com is not in the registry (no ServiceEntry); requests routed here get 503 NC',
    'warning VirtualService default/web spec.http[4].route[0].destination.port: service ratings.default.svc.cluster.local has no port 8080; requests routed here get 503 NC',
  ]);
});

t.test('destination port: a multi-port service without the virtual host port needs an explicit port', async (t) => {
  // Istio would build `outbound|<listener port>||web...`, a cluster that does not exist
  // (503 NC at run time); Remora rejects the route at compile time instead.
  const out = translate(`${BOOKINFO_SERVICES}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: web}}]
`);
  t.same(out.brief, [
    'error VirtualService default/reviews spec.http[0].route[0].destination.port: service web.default.svc.cluster.local has several ports (80, 8080); the destination must name one',
    'error VirtualService default/reviews spec.http[0].route: no destination with a weight above 0',
  ]);
});

t.test("retries: none set is Istio's default; attempts 0 disables; retryOn codes become retriable status codes", async (t) => {
  const retry = (yaml: string): ReturnType<typeof forward>['retry'] => forward(reviewsVs(`  - route:\n    - destination: {host: reviews}\n${yaml}`).routes[0]!).retry;
  t.same(retry(''), DEFAULT_RETRY_POLICY);
  t.equal(retry('    retries: {attempts: 0}'), null);
  // The VirtualService docs example.
  t.same(retry('    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,refused-stream"}'), {
    numRetries: 3,
    perTryTimeoutMs: 2000,
    retryOn: ['gateway-error', 'connect-failure', 'refused-stream'],
    retriableStatusCodes: [],
    retryRemoteLocalities: false,
  });
  t.same(retry('    retries: {attempts: 2, retryOn: "5xx,503,429", retryRemoteLocalities: true}'), {
    numRetries: 2,
    perTryTimeoutMs: 0,
    retryOn: ['5xx', 'retriable-status-codes'],
    retriableStatusCodes: [503, 429],
    retryRemoteLocalities: true,
  });
  t.same(retry('    retries: {attempts: 1, retryOn: "retriable-status-codes,502"}')?.retryOn, ['retriable-status-codes'], 'not added twice');
  // retry.go ConvertPolicy: "Start with the default and override with user-provided fields";
  // retryOn is only replaced when set, so the default conditions and 503 stay.
  t.same(retry('    retries: {attempts: 5, perTryTimeout: 1s}'), {
    numRetries: 5,
    perTryTimeoutMs: 1000,
    retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
    retriableStatusCodes: [503],
    retryRemoteLocalities: false,
  });
});

t.test('timeout, rewrite (prefix, regex, authority)', async (t) => {
  const { routes } = reviewsVs(`  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: reviews.internal}
    timeout: 1.5s
${to('v1')}
  - match: [{uri: {prefix: /api}}]
    rewrite:
      uriRegexRewrite: {match: '^/api/(.*)$', rewrite: '/\\1'}
${to('v1')}
  - route:
    - destination: {host: reviews}`);
  const a = forward(routes[0]!);
  t.equal(a.timeoutMs, 1500);
  t.same(a.rewrite, { prefix: '/new', regex: null });
  t.equal(a.authorityRewrite, 'reviews.internal');
  t.same(forward(routes[1]!).rewrite, { prefix: null, regex: { pattern: '^/api/(.*)$', substitution: '/\\1' } });
  t.equal(forward(routes[1]!).authorityRewrite, null);
  t.equal(forward(routes[2]!).timeoutMs, 0, 'no timeout by default (Istio disables route timeouts)');
  t.equal(forward(routes[2]!).rewrite, null);
});

t.test('redirect (301 by default) and directResponse', async (t) => {
  const { routes } = reviewsVs(`  - match: [{uri: {exact: /v1/getProductRatings}}]
    redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {prefix: /derive}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 410, body: {string: "gone"}}
  - match: [{uri: {prefix: /bytes}}]
    directResponse: {status: 503, body: {bytes: "dW5hdmFpbGFibGU="}}
  - directResponse: {status: 404}`);
  t.same(
    routes.map((r) => r.action),
    [
      { kind: 'redirect', status: 301, scheme: null, authority: 'newratings.default.svc.cluster.local', port: null, derivePortFromScheme: false, path: '/v1/bookRatings' },
      { kind: 'redirect', status: 308, scheme: 'https', authority: null, port: 8443, derivePortFromScheme: false, path: null },
      { kind: 'redirect', status: 301, scheme: 'https', authority: null, port: null, derivePortFromScheme: true, path: null },
      { kind: 'direct-response', status: 410, body: 'gone' },
      { kind: 'direct-response', status: 503, body: 'unavailable' },
      { kind: 'direct-response', status: 404, body: null },
    ],
  );
});

t.test('headers: route-level and per-destination set/add/remove, names lower-cased', async (t) => {
  const { routes } = reviewsVs(`  - headers:
      request:
        set: {X-Route: reviews}
        add: {X-Trace: on}
        remove: [X-Debug]
      response:
        remove: [Server]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers:
        response: {set: {x-version: v1}}
    - destination: {host: reviews, subset: v2}
      weight: 50`);
  const r = routes[0]!;
  t.same(r.requestHeaders, { set: [['x-route', 'reviews']], add: [['x-trace', 'on']], remove: ['x-debug'] });
  t.same(r.responseHeaders, { set: [], add: [], remove: ['server'] });
  t.same(
    forward(r).clusters.map((c) => [c.cluster, c.requestHeaders, c.responseHeaders]),
    [
      [bk('reviews', 'v1'), null, { set: [['x-version', 'v1']], add: [], remove: [] }],
      [bk('reviews', 'v2'), null, null],
    ],
  );
});

t.test("headers: a single destination's edits join the route's, after them (istiod's applyHTTPRouteDestination), so its set wins", async (t) => {
  const { routes } = reviewsVs(`  - headers:
      request:
        set: {x-who: route, x-route: r}
        add: {x-trail: route}
      response:
        set: {x-who: route}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 100
      headers:
        request:
          set: {x-who: dest}
          remove: [x-trail]
        response:
          add: {x-dest: v1}
    - destination: {host: reviews, subset: v2}
      weight: 0`);
  const r = routes[0]!;
  t.same(r.requestHeaders, { set: [['x-route', 'r'], ['x-who', 'dest']], add: [], remove: ['x-trail'] }, "the destination's set replaces the route's, its remove drops the route's add");
  t.same(r.responseHeaders, { set: [['x-who', 'route']], add: [['x-dest', 'v1']], remove: [] });
  t.same(
    forward(r).clusters.map((c) => [c.cluster, c.requestHeaders, c.responseHeaders]),
    [[bk('reviews', 'v1'), null, null]],
    'the one cluster keeps no edits of its own',
  );
});

t.test('headers: a Host/:authority set is an authority rewrite in Istio', { todo: 'Istio (route.go TranslateHeadersOperations) turns `host`/`:authority` in headers.request.set/add into host_rewrite_literal and drops them, and other `:`-prefixed names, from the header lists; Remora keeps them as ordinary header edits' }, async (t) => {
  const { routes } = reviewsVs(`  - headers:\n      request:\n        set: {host: reviews.internal}\n${to('v1')}`);
  t.equal(forward(routes[0]!).authorityRewrite, 'reviews.internal');
  t.equal(routes[0]!.requestHeaders, null);
});

t.test('mirror (100% unless mirrorPercentage says) and mirrors', async (t) => {
  const { routes } = reviewsVs(`  - match: [{uri: {prefix: /a}}]
    mirror: {host: reviews, subset: v2}
${to('v1')}
  - match: [{uri: {prefix: /b}}]
    mirror: {host: ratings}
    mirrorPercentage: {value: 12.5}
${to('v1')}
  - mirrors:
    - destination: {host: reviews, subset: v3}
      percentage: {value: 50}
    - destination: {host: details}
${to('v1')}`);
  t.same(routes.map((r) => forward(r).mirrors), [
    [{ cluster: bk('reviews', 'v2'), percent: 100 }],
    [{ cluster: bk('ratings'), percent: 12.5 }],
    [
      { cluster: bk('reviews', 'v3'), percent: 50 },
      { cluster: bk('details'), percent: 100 },
    ],
  ]);
});

t.test("corsPolicy becomes the CORS filter's route config (istiod's TranslateCORSPolicy)", async (t) => {
  // The VirtualService docs example, plus the deprecated allowOrigin.
  const { routes } = reviewsVs(`  - corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - prefix: https://app.
      - regex: 'https://.*\\.example\\.org'
      allowMethods: [POST, GET]
      allowCredentials: false
      allowHeaders: [X-Foo-Bar]
      exposeHeaders: [X-Expose]
      maxAge: "24h"
${to('v1')}
  - corsPolicy: {allowOrigin: [https://legacy.example.com], unmatchedPreflights: IGNORE}
${to('v1')}
  - corsPolicy: {allowOrigins: [{exact: https://new.example.com}], allowOrigin: [https://legacy.example.com], maxAge: 90s}
    redirect: {uri: /moved}`);
  const enabled = { defaultValue: { numerator: 100 } };
  t.same(routes[0]!.filterConfigs, {
    'envoy.filters.http.cors': {
      forwardNotMatchingPreflights: true,
      allowOriginStringMatch: [{ exact: 'https://example.com' }, { prefix: 'https://app.' }, { safeRegex: { regex: 'https://.*\\.example\\.org' } }],
      filterEnabled: enabled,
      allowCredentials: false,
      allowHeaders: 'X-Foo-Bar',
      allowMethods: 'POST,GET',
      exposeHeaders: 'X-Expose',
      maxAge: '86400',
    },
  });
  t.same(routes[1]!.filterConfigs, {
    'envoy.filters.http.cors': {
      // IGNORE: a preflight from another origin is answered here, not forwarded.
      forwardNotMatchingPreflights: false,
      allowOriginStringMatch: [{ exact: 'https://legacy.example.com' }],
      filterEnabled: enabled,
    },
  });
  t.same(
    routes[2]!.filterConfigs,
    {
      'envoy.filters.http.cors': {
        forwardNotMatchingPreflights: true,
        allowOriginStringMatch: [{ exact: 'https://new.example.com' }],
        filterEnabled: enabled,
        maxAge: '90',
      },
    },
    'allowOrigins wins over the deprecated allowOrigin; a redirect route keeps its policy, as istiod writes it',
  );
  // The generated types parse what the translator wrote, field for field.
  for (const r of routes) {
    const json = r.filterConfigs['envoy.filters.http.cors'] as JsonValue;
    t.same(envoyToJson(CorsPolicySchema, envoyFromJson(CorsPolicySchema, json)), json, `${r.name}: a valid CorsPolicy`);
  }
});

t.test('fault becomes the fault filter\'s route config (Envoy HTTPFault: Duration JSON, percentages over a MILLION)', async (t) => {
  const { routes } = reviewsVs(`  - fault:
      delay: {percentage: {value: 10}, fixedDelay: 5s}
      abort: {percentage: {value: 0.5}, httpStatus: 400}
${to('v1')}
  - route:
    - destination: {host: reviews}`);
  t.same(routes[0]!.filterConfigs, {
    'envoy.filters.http.fault': {
      delay: { fixedDelay: '5s', percentage: { numerator: 100_000, denominator: 'MILLION' } },
      abort: { httpStatus: 400, percentage: { numerator: 5000, denominator: 'MILLION' } },
    },
  });
  t.same(routes[1]!.filterConfigs, {});
});

t.test('a missing delegate is reported and its route skipped', async (t) => {
  const { routes, brief } = reviewsVs(`  - match: [{uri: {prefix: /productpage}}]
    delegate: {name: productpage, namespace: nsA}
  - route:
    - destination: {host: reviews}`);
  t.same(routes.map((r) => r.origin), ['default/reviews#1']);
  t.same(brief, ['warning VirtualService default/reviews spec.http[0].delegate: delegate VirtualService nsA/productpage not found; this route is ignored, as Istio does']);
});

t.test('a subset no DestinationRule defines is warned about (IST0101); a defined one is not', async (t) => {
  const dr = `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n---\n`;
  const out = translate(
    `${BOOKINFO_SERVICES}${dr}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /a}}]\n${to('v1')}\n  - route:\n    - destination: {host: reviews, subset: v9}\n`,
    SIDECAR,
  );
  t.same(
    out.issues.map((i) => `${i.severity} ${i.path}: ${i.message}`),
    ['warning spec.http[1].route[0].destination.subset: subset v9 of reviews.default.svc.cluster.local is not defined by any DestinationRule; requests routed here get 503 NC'],
  );
});

t.test('@request.auth.claims header matches become claim conditions, never header conditions (route.go translateMetadataMatch)', async (t) => {
  const gw = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
`;
  const vs = (match: string) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [gw]
  http:
  - match:
${match}
${to('v1')}
`;
  const first = (match: string) => routeTable(translate([BOOKINFO_SERVICES, gw, vs(match)], INGRESS).config, 'http.8080').virtualHosts[0]!.routes[0]!.match;
  const m = first(`    - headers:
        "@request.auth.claims.groups": {exact: group1}
        "@Request.Auth.Claims[org][team]": {prefix: pay}
        x-user: {exact: jason}
      withoutHeaders:
        "@request.auth.claims.iss": {}`);
  t.same(m.headers, [{ name: 'x-user', match: { kind: 'exact', value: 'jason' }, invert: false }], 'only the real header stays a header');
  t.same(m.claims, [
    { path: ['groups'], match: { kind: 'exact', value: 'group1' }, invert: false },
    { path: ['org', 'team'], match: { kind: 'prefix', value: 'pay' }, invert: false },
    { path: ['iss'], match: { kind: 'present' }, invert: true },
  ]);
  t.notOk('claims' in first(`    - headers:\n        x-user: {exact: jason}`), 'no claim conditions: no claims field');
});
