// VirtualService delegation in the Istio translator: a root route with `delegate` stands
// for the delegate VirtualService's routes, merged with it, for sidecars and gateways.
//
// Reference: istio.io VirtualService API page ("Delegate", its bookinfo example);
// pilot/pkg/model/virtualservice.go (mergeVirtualServicesIfNeeded, mergeHTTPRoutes,
// mergeHTTPRoute, mergeHTTPMatchRequests, mergeHTTPMatchRequest, hasConflict,
// stringMatchConflict) and its tests (TestMergeHTTPMatchRequests, TestHasConflict).
import t from 'tap';
import { parseResources, validateResource, type Route, type RouteMatch } from '@remora/config';
import {
  BOOKINFO_SERVICES,
  bk,
  forward,
  INGRESS,
  nodeWith,
  SIDECAR,
  targets,
  translate,
  translateResources,
  vhost,
  vhostNames,
  type Translated,
} from './helpers/translate.ts';

const REVIEWS_VH = 'reviews.default.svc.cluster.local:9080';

function vs(name: string, ns: string, body: string): string {
  return `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${body}\n---\n`;
}
/** A mesh `reviews` root in `default` whose first route delegates as given, then a catch-all to v1. */
function reviewsRoot(delegateRoute: string, extraRootRoutes = ''): string {
  return vs(
    'reviews',
    'default',
    `  hosts: [reviews]\n  http:\n${delegateRoute}\n${extraRootRoutes}  - name: rest\n    route:\n    - destination: {host: reviews, subset: v1}`,
  );
}
const routes = (out: Translated, name = REVIEWS_VH, table?: string): Route[] => [...vhost(out.config, name, table).routes];
/** A route by its name, else (istiod leaves it unnamed) by where it was written. */
const id = (r: Route): string => r.name || r.origin;
const path = (r: Route): RouteMatch['path']['match'] => r.match.path.match;
const any = { kind: 'any' } as const;
const prefix = (value: string) => ({ kind: 'prefix', value }) as const;
const exact = (value: string) => ({ kind: 'exact', value }) as const;
// Subsets used below, so that IST0101 warnings do not crowd the assertions.
const REVIEWS_DR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]
---
`;

t.test("istio.io's delegation example on the gateway: /productpage to nsA, /reviews to nsB", async (t) => {
  const services = ['productpage-v1.nsA', 'productpage.nsA', 'reviews.nsB']
    .map(
      (h, i) =>
        `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se${i}, namespace: istio-system}\nspec:\n  hosts: [${h}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.1.0.${i + 1}}]\n---\n`,
    )
    .join('');
  const gateway = `apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: mygateway, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [bookinfo.com]\n---\n`;
  // The three VirtualServices exactly as the API page shows them (the root in `default`).
  const docs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "bookinfo.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: "/productpage"
    delegate:
       name: productpage
       namespace: nsA
  - match:
    - uri:
        prefix: "/reviews"
    delegate:
        name: reviews
        namespace: nsB
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: nsA
spec:
  http:
  - match:
     - uri:
        prefix: "/productpage/v1/"
    route:
    - destination:
        host: productpage-v1.nsA.svc.cluster.local
  - route:
    - destination:
        host: productpage.nsA.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: nsB
spec:
  http:
  - route:
    - destination:
        host: reviews.nsB.svc.cluster.local
`;
  const out = translate([services + gateway, docs], INGRESS);
  t.same(out.brief, []);
  t.same(vhostNames(out.config, 'http.80'), ['bookinfo.com:80'], 'delegates add no virtual host of their own');
  t.same(
    routes(out, 'bookinfo.com:80', 'http.80').map((r) => [r.name, path(r), targets(r), r.origin]),
    [
      ['', prefix('/productpage/v1/'), [['outbound|9080||productpage-v1.nsa.svc.cluster.local', 100]], 'nsA/productpage#0'],
      ['', prefix('/productpage'), [['outbound|9080||productpage.nsa.svc.cluster.local', 100]], 'nsA/productpage#1'],
      ['', prefix('/reviews'), [['outbound|9080||reviews.nsb.svc.cluster.local', 100]], 'nsB/reviews#0'],
    ],
    "the delegate's match lies within the root's and replaces it; a delegate route without match takes the root's",
  );
});

t.test('on a sidecar: the delegate (namespace defaulting to the root’s) replaces the route in place', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match: [{uri: {prefix: /api}}]\n    delegate: {name: reviews-api}`) +
      vs(
        'reviews-api',
        'default',
        `  http:\n  - match: [{uri: {prefix: /api/v2}, headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v3}}]`,
      ),
  );
  t.same(out.brief, []);
  const rs = routes(out);
  t.same(
    rs.map((r) => [id(r), path(r), r.match.headers, targets(r)]),
    [
      ['default/reviews-api#0', prefix('/api/v2'), [{ name: 'end-user', match: exact('jason'), invert: false }], [[bk('reviews', 'v2'), 100]]],
      ['default/reviews-api#1', prefix('/api'), [], [[bk('reviews', 'v3'), 100]]],
      ['rest', any, [], [[bk('reviews', 'v1'), 100]]],
    ],
  );
  t.same(vhostNames(out.config).filter((n) => n.includes('reviews-api')), [], 'the delegate is no service and gets no virtual host');
});

t.test('match merge: conditions combined, the delegate’s taking precedence on the same header', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match:
    - uri: {prefix: /api}
      method: {exact: GET}
      headers: {x-env: {prefix: pro}, x-team: {exact: a}}
      queryParams: {debug: {exact: "1"}}
    delegate: {name: d}`) +
      vs(
        'd',
        'default',
        `  http:\n  - match: [{uri: {exact: /api/items}, headers: {x-env: {exact: prod}}, withoutHeaders: {x-canary: {}}, queryParams: {v: {exact: "2"}}}]\n    route: [{destination: {host: reviews, subset: v2}}]`,
      ),
  );
  t.same(out.brief, []);
  const [r] = routes(out);
  t.same(r!.match, {
    path: { match: exact('/api/items'), ignoreCase: false },
    headers: [
      { name: ':method', match: exact('GET'), invert: false },
      { name: 'x-env', match: exact('prod'), invert: false },
      { name: 'x-team', match: exact('a'), invert: false },
      { name: 'x-canary', match: { kind: 'present' }, invert: true },
    ],
    queryParams: [
      { name: 'debug', match: exact('1') },
      { name: 'v', match: exact('2') },
    ],
  });
});

t.test('a delegate match fitting several root matches is merged with each, delegate-major', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]\n    delegate: {name: d}`) +
      vs(
        'd',
        'default',
        `  http:\n  - match: [{headers: {x-v: {exact: "2"}}}, {uri: {prefix: /b/c}}]\n    route: [{destination: {host: reviews, subset: v2}}]`,
      ),
  );
  t.same(out.brief, []);
  t.same(
    routes(out)
      .slice(0, -1)
      .map((r) => [id(r), path(r), r.match.headers.map((h) => h.name)]),
    [
      ['default/d#0.0', prefix('/a'), ['x-v']],
      ['default/d#0.1', prefix('/b'), ['x-v']],
      ['default/d#0.2', prefix('/b/c'), []],
    ],
  );
});

t.test('a delegate uri outside the root’s prefix or exact drops the delegate route, as Istio does', async (t) => {
  const cases: [string, string, boolean][] = [
    ['{prefix: /productpage}', '{exact: /productpage/v1}', true],
    ['{prefix: /productpage}', '{prefix: /productpage/v2}', true],
    ['{prefix: /productpage/v2}', '{prefix: /productpage}', false],
    ['{prefix: /productpage}', '{exact: /reviews}', false],
    ['{exact: /productpage}', '{exact: /productpage}', true],
    ['{exact: /productpage}', '{exact: /productpage/v1}', false],
    ['{exact: /productpage}', '{prefix: /productpage}', false],
  ];
  for (const [rootUri, leafUri, fits] of cases) {
    const out = translate(
      BOOKINFO_SERVICES +
        REVIEWS_DR +
        reviewsRoot(`  - match: [{uri: ${rootUri}}]\n    delegate: {name: d}`) +
        vs('d', 'default', `  http:\n  - match: [{uri: ${leafUri}}]\n    route: [{destination: {host: reviews, subset: v2}}]`),
    );
    const names = routes(out).map(id);
    if (fits) {
      t.same([names, out.brief], [['default/d#0', 'rest'], []], `${rootUri} ⊇ ${leafUri}`);
    } else {
      t.same(
        [names, out.brief],
        [
          ['rest'],
          [
            'warning VirtualService default/d spec.http[0].match: conflicts with the match of root VirtualService default/reviews spec.http[0] (a delegate\'s match must lie within the root\'s); this route is ignored, as Istio does',
          ],
        ],
        `${rootUri} ⊉ ${leafUri}`,
      );
    }
  }
});

t.test('one conflicting delegate match drops the whole delegate route; its other routes stay', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match: [{uri: {prefix: /productpage}, port: 9080}]\n    delegate: {name: d}`) +
      vs(
        'd',
        'default',
        `  http:
  - match: [{uri: {exact: /productpage/v1}}, {uri: {exact: /productpage/v2}, port: 9090}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /productpage/v3}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /productpage/v4}}]
    route: [{destination: {host: reviews, subset: v3}}]`,
      ),
  );
  t.same(
    out.issues.map((i) => `${i.resource} ${i.path}`),
    ['default/d spec.http[0].match', 'default/d spec.http[1].match'],
    'a different port, a different ignoreUriCase: conflicts',
  );
  t.same(
    routes(out).map((r) => [id(r), path(r)]),
    [
      ['default/d#2', exact('/productpage/v4')],
      ['rest', any],
    ],
    'the root’s port 9080 carries over to the merged match, which applies to this 9080 virtual host',
  );
});

t.test('sourceLabels merge, and decide per proxy as for any match', async (t) => {
  const yaml =
    BOOKINFO_SERVICES +
    REVIEWS_DR +
    reviewsRoot(`  - match: [{sourceLabels: {app: productpage}}]\n    delegate: {name: d}`) +
    vs('d', 'default', `  http:\n  - match: [{sourceLabels: {version: v1}}]\n    route: [{destination: {host: reviews, subset: v2}}]`);
  t.same(routes(translate(yaml)).map(id), ['default/d#0', 'rest'], 'productpage v1 has both labels');
  t.same(
    routes(translate(yaml, nodeWith(SIDECAR, { labels: { app: 'productpage', version: 'v2' } }))).map(id),
    ['rest'],
    'productpage v2 lacks version=v1',
  );
  const conflicting = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match: [{sourceLabels: {app: productpage}}]\n    delegate: {name: d}`) +
      vs('d', 'default', `  http:\n  - match: [{sourceLabels: {app: ratings}}]\n    route: [{destination: {host: reviews, subset: v2}}]`),
  );
  t.same(routes(conflicting).map(id), ['rest'], 'a different value for the same label conflicts');
});

t.test('route fields: the root’s apply only where the delegate’s route leaves them unset; names join', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - name: api
    match: [{name: m, uri: {prefix: /api}}]
    timeout: 5s
    retries: {attempts: 1, retryOn: 5xx}
    headers: {request: {set: {x-root: "1"}}}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}]}
    rewrite: {uri: /v1}
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    delegate: {name: d}`) +
      vs(
        'd',
        'default',
        `  http:
  - name: own
    match: [{name: x, uri: {prefix: /api/own}}]
    timeout: 1s
    retries: {attempts: 0}
    headers: {request: {set: {x-own: "1"}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v3}}]`,
      ),
  );
  t.same(out.brief, []);
  const [own, inherited] = routes(out);
  t.same(
    [own!.name, forward(own!).timeoutMs, forward(own!).retry, own!.requestHeaders, forward(own!).rewrite, (own!.filterConfigs['envoy.filters.http.cors'] as { allowOriginStringMatch?: unknown })?.allowOriginStringMatch],
    ['api-own.m-x', 1000, null, { set: [['x-own', '1']], add: [], remove: [] }, { prefix: '/v1', regex: null }, [{ exact: 'https://a.example' }]],
    'the delegate’s timeout, retries and headers win; rewrite and CORS come from the root',
  );
  t.same(own!.filterConfigs, {
    'envoy.filters.http.fault': { abort: { httpStatus: 418, percentage: { numerator: 1000000, denominator: 'MILLION' } } },
    'envoy.filters.http.cors': {
      forwardNotMatchingPreflights: true,
      allowOriginStringMatch: [{ exact: 'https://a.example' }],
      filterEnabled: { defaultValue: { numerator: 100 } },
    },
  });
  t.same(
    [inherited!.name, forward(inherited!).timeoutMs, forward(inherited!).retry?.retryOn, inherited!.requestHeaders, path(inherited!)],
    ['api.m', 5000, ['5xx'], { set: [['x-root', '1']], add: [], remove: [] }, prefix('/api')],
  );
});

t.test('short hosts resolve, and problems are reported, where they were written', async (t) => {
  const root = vs(
    'reviews',
    'default',
    `  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    mirror: {host: ratings}\n    delegate: {name: d, namespace: team}\n  - route: [{destination: {host: reviews}}]`,
  );
  const delegate = vs(
    'd',
    'team',
    `  http:\n  - route: [{destination: {host: reviews}}]\n  - match: [{uri: {prefix: /api/x}}]\n    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v9}}]`,
  );
  const out = translate([BOOKINFO_SERVICES + root, delegate]);
  const [first, second] = routes(out);
  t.same(targets(first!), [['outbound|9080||reviews.team.svc.cluster.local', 100]], "the delegate's `reviews` is in the delegate's namespace");
  t.same(forward(first!).mirrors, [{ cluster: bk('ratings'), percent: 100 }], "the root's mirror `ratings` is in the root's namespace");
  t.equal(first!.origin, 'team/d#0');
  t.same(targets(second!), [[bk('reviews', 'v9'), 100]]);
  t.same(
    out.issues.map((i) => [i.file, i.resource, i.path]),
    [
      ['test-1.yaml', 'team/d', 'spec.http[0].route[0].destination.host'],
      ['test-1.yaml', 'team/d', 'spec.http[1].route[0].destination.subset'],
    ],
    "the delegate's problems point into the delegate's file",
  );
});

t.test('a missing delegate: a warning on the root route, which is dropped (Istio ignores it)', async (t) => {
  const out = translate(BOOKINFO_SERVICES + REVIEWS_DR + reviewsRoot(`  - match: [{uri: {prefix: /api}}]\n    delegate: {name: nowhere, namespace: team}`));
  t.same(out.brief, [
    'warning VirtualService default/reviews spec.http[0].delegate: delegate VirtualService team/nowhere not found; this route is ignored, as Istio does',
  ]);
  t.same(routes(out).map(id), ['rest']);

  const alone = translate(BOOKINFO_SERVICES + vs('reviews', 'default', `  hosts: [reviews]\n  http:\n  - delegate: {name: nowhere}`));
  t.same(
    routes(alone).map((r) => [id(r), targets(r)]),
    [['default', [[bk('reviews'), 100]]]],
    'a VirtualService left with no route leaves the service its default route',
  );
});

t.test('a VirtualService with hosts is no delegate', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      reviewsRoot(`  - match: [{uri: {prefix: /api}}]\n    delegate: {name: ratings}`) +
      vs('ratings', 'default', `  hosts: [ratings]\n  http:\n  - route: [{destination: {host: ratings}}]`),
  );
  t.same(out.brief, [
    'warning VirtualService default/reviews spec.http[0].delegate: VirtualService default/ratings has hosts, so it is no delegate; this route is ignored, as Istio does',
  ]);
  t.same(routes(out).map(id), ['rest']);
});

t.test("the delegate's exportTo must include the root's namespace", async (t) => {
  const withExport = (exportTo: string, ns = 'team'): Translated =>
    translate(
      BOOKINFO_SERVICES +
        REVIEWS_DR +
        reviewsRoot(`  - match: [{uri: {prefix: /api}}]\n    delegate: {name: d, namespace: ${ns}}`) +
        vs('d', ns, `  exportTo: ${exportTo}\n  http:\n  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]`),
    );
  for (const [exportTo, ns, ok] of [
    ['["."]', 'team', false],
    ['[other]', 'team', false],
    ['["~"]', 'team', false],
    ['[default]', 'team', true],
    ['["*"]', 'team', true],
    ['["."]', 'default', true],
  ] as const) {
    const out = withExport(exportTo, ns);
    t.same(
      [routes(out).map(id), out.brief],
      ok
        ? [[`${ns}/d#0`, 'rest'], []]
        : [
            ['rest'],
            [
              `warning VirtualService default/reviews spec.http[0].delegate: delegate VirtualService ${ns}/d is not exported to namespace default; this route is ignored, as Istio does`,
            ],
          ],
      `exportTo ${exportTo} in ${ns}`,
    );
  }
  // The delegate's exportTo is about the root's namespace, not the proxy's.
  const out = translate(
    BOOKINFO_SERVICES +
      REVIEWS_DR +
      vs('reviews', 'shop', `  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - delegate: {name: d}`) +
      vs('d', 'shop', `  exportTo: ["."]\n  http:\n  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]`),
  );
  t.same([routes(out).map(id), out.brief], [['shop/d#0'], []], 'a delegate private to the root’s namespace serves a proxy elsewhere');
});

t.test('nested delegation: rejected by validation, and not followed by the translator', async (t) => {
  const yaml =
    BOOKINFO_SERVICES +
    REVIEWS_DR +
    reviewsRoot(`  - match: [{uri: {prefix: /api}}]\n    delegate: {name: d}`) +
    vs('d', 'default', `  http:\n  - match: [{uri: {prefix: /api/deep}}]\n    delegate: {name: e}\n  - route: [{destination: {host: reviews, subset: v2}}]`) +
    vs('e', 'default', `  http:\n  - route: [{destination: {host: reviews, subset: v3}}]`);
  const parsed = parseResources(yaml, 'nested.yaml', 0);
  t.same(parsed.issues, []);
  t.same(
    parsed.resources.flatMap(validateResource).map((i) => `${i.severity} ${i.resource} ${i.path}: ${i.message}`),
    [
      'error default/d spec.http[0]: HTTP route, redirect or directResponse is required',
      'error default/d spec.http[0].delegate: delegate HTTP route cannot contain delegate',
    ],
  );
  // Given it anyway, the translator follows one level only.
  const out = translateResources(parsed.resources);
  t.same(out.brief, [
    'warning VirtualService default/d spec.http[0].delegate: a delegate VirtualService cannot delegate again (Istio follows one level); this route is ignored',
  ]);
  t.same(
    routes(out).map((r) => [id(r), targets(r)]),
    [
      ['default/d#1', [[bk('reviews', 'v2'), 100]]],
      ['rest', [[bk('reviews', 'v1'), 100]]],
    ],
  );
});

t.test('delegates alone are no VirtualServices: no virtual host, no route, on sidecars and gateways', async (t) => {
  const gateway = `apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["*"]\n---\n`;
  const delegate = vs('d', 'default', `  http:\n  - route: [{destination: {host: ratings}}]`);
  for (const node of [SIDECAR, INGRESS]) {
    const without = translate(BOOKINFO_SERVICES + gateway, node);
    const withDelegate = translate(BOOKINFO_SERVICES + gateway + delegate, node);
    t.same(withDelegate.brief, [], node.kind);
    t.same(withDelegate.config.routeConfigs, without.config.routeConfigs, `${node.kind}: the same route tables as without it`);
  }
});

t.test('gateway and mesh: merged match gateways decide where each delegated route applies', async (t) => {
  const gateway = `apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["*"]\n---\n`;
  const yaml =
    BOOKINFO_SERVICES +
    REVIEWS_DR +
    gateway +
    vs(
      'reviews',
      'default',
      `  hosts: [reviews]\n  gateways: [gw, mesh]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    delegate: {name: d, namespace: team}\n  - name: rest\n    route: [{destination: {host: reviews, subset: v1}}]`,
    ) +
    vs(
      'd',
      'team',
      `  http:
  - match: [{uri: {prefix: /api/mesh}, gateways: [mesh]}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - match: [{uri: {prefix: /api/edge}, gateways: [default/gw]}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
  - match: [{uri: {prefix: /api/short}, gateways: [gw]}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]`,
    );
  const sidecar = translate(yaml);
  t.same(sidecar.brief, []);
  t.same(
    routes(sidecar).map((r) => [id(r), path(r)]),
    [
      ['team/d#0', prefix('/api/mesh')],
      ['team/d#3', prefix('/api')],
      ['rest', any],
    ],
  );
  const ingress = translate(yaml, INGRESS);
  t.same(ingress.brief, []);
  t.same(
    routes(ingress, 'reviews.default.svc.cluster.local:80', 'http.80').map((r) => [id(r), path(r), targets(r)]),
    [
      ['team/d#1', prefix('/api/edge'), [[bk('reviews', 'v3'), 100]]],
      ['team/d#3', prefix('/api'), [[bk('reviews', 'v2'), 100]]],
      ['rest', any, [[bk('reviews', 'v1'), 100]]],
    ],
    "`gw` written in the delegate's namespace is team/gw, another gateway",
  );
});
