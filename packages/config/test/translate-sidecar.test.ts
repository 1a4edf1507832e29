// The sidecar's outbound route table and inbound listener: one virtual host per (service,
// HTTP port) answering every name a client may use, routes from the most specific mesh
// VirtualService or Istio's default route, VirtualService hosts that are no service, and
// the inbound path to the local app.
//
// Reference: pilot/pkg/networking/core/httproute.go (BuildSidecarOutboundVirtualHosts,
// generateVirtualHostDomains, GenerateAltVirtualHosts, mergeAllVirtualHosts),
// pilot/pkg/networking/core/route/route.go (BuildSidecarVirtualHostWrapper,
// separateVSHostsAndServices, BuildDefaultHTTPOutboundRoute), route/retry/retry.go
// (DefaultPolicy), pilot/pkg/model/sidecar.go (computeWildcardHostVirtualServiceIndex).
import t from 'tap';
import { DEFAULT_RETRY_POLICY } from '@remora/config';
import {
  BOOKINFO_SERVICES,
  bk,
  cluster,
  forward,
  ISTIO_ENVOY_HCM,
  nodeWith,
  OUTBOUND_HCM,
  PORTS,
  routeTable,
  SIDECAR,
  clusterNames,
  targets,
  translate,
  vhost,
  vhostNames, CHAIN_TAIL } from './helpers/translate.ts';

const PASSTHROUGH = { sniHosts: [], clusters: [{ cluster: 'PassthroughCluster', weight: 100 }], origin: '' };
const INBOUND_PASSTHROUGH = { sniHosts: [], clusters: [{ cluster: 'InboundPassthroughCluster', weight: 100 }], origin: '' };
const vs = (name: string, spec: string, meta = ''): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ${name}${meta}}\nspec:\n${spec}\n---\n`;
const REVIEWS_DOMAINS = [
  'reviews.default.svc.cluster.local:9080',
  'reviews.default.svc.cluster.local',
  'reviews.default.svc:9080',
  'reviews.default.svc',
  'reviews.default:9080',
  'reviews.default',
  'reviews:9080',
  'reviews',
];

t.test("the outbound listener and its route tables, one per port under istiod's name", async (t) => {
  const { config, issues } = translate(BOOKINFO_SERVICES);
  t.same(issues, []);
  t.same(config.listeners.filter((l) => l.direction === 'outbound'), [
    { name: 'virtualOutbound', address: '0.0.0.0', port: 15001, connectionManager: OUTBOUND_HCM, direction: 'outbound', routeConfig: '9080', routeConfigsByPort: { 9080: '9080' }, httpFilters: CHAIN_TAIL, tls: null, useOriginalDst: true, catchAll: [PASSTHROUGH] },
    // The port's listener, which virtualOutbound hands connections to 9080 (istiod's 0.0.0.0_9080).
    { name: '0.0.0.0_9080', address: '0.0.0.0', port: 9080, connectionManager: OUTBOUND_HCM, direction: 'outbound', routeConfig: '9080', httpFilters: CHAIN_TAIL, tls: null, bindToPort: false, detectProtocol: { tcp: [PASSTHROUGH], timeoutMs: 5000 } },
  ]);
  t.same(config.routeConfigs.map((r) => [r.name, r.ignorePortInHostMatching]), [['9080', false], ['inbound|9080||', true]]);
  t.same(vhostNames(config), [
    'productpage.default.svc.cluster.local:9080',
    'reviews.default.svc.cluster.local:9080',
    'ratings.default.svc.cluster.local:9080',
    'details.default.svc.cluster.local:9080',
    'allow_any',
  ]);
  t.match(config.version, /^[0-9a-f]{16}$/);
  t.equal(translate(BOOKINFO_SERVICES).config.version, config.version, 'the version is a content hash');
});

t.test('domains: FQDN, name.ns.svc, name.ns, and name from the same namespace, each with and without the port', async (t) => {
  // generateAltVirtualHostsForKubernetesService: same namespace → name, name.ns.svc, name.ns;
  // another namespace → name.ns and name.ns.svc only ("never just foo").
  const same = translate(BOOKINFO_SERVICES);
  t.same(vhost(same.config, 'reviews.default.svc.cluster.local:9080').domains, REVIEWS_DOMAINS);
  const other = translate(BOOKINFO_SERVICES, nodeWith(SIDECAR, { namespace: 'team-a' }));
  t.same(vhost(other.config, 'reviews.default.svc.cluster.local:9080').domains, [
    'reviews.default.svc.cluster.local:9080',
    'reviews.default.svc.cluster.local',
    'reviews.default.svc:9080',
    'reviews.default.svc',
    'reviews.default:9080',
    'reviews.default',
  ]);
});

t.test('domains: hosts outside the cluster domain have only their own name; addresses are domains too', async (t) => {
  const { config } = translate(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org, www.httpbin.org]
  addresses: [240.240.0.1]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
`);
  t.same(vhost(config, 'httpbin.org:80').domains, ['httpbin.org:80', 'httpbin.org', '240.240.0.1:80', '240.240.0.1']);
  t.same(vhost(config, 'www.httpbin.org:80').domains, ['www.httpbin.org:80', 'www.httpbin.org', '240.240.0.1:80', '240.240.0.1']);
});

t.test('domains: names without a port only for the default port (80 if the service has it, else its first HTTP port)', async (t) => {
  // Remora has one outbound route table for every port, like Istio's merged table for
  // listener port 0 (mergeAllVirtualHosts), where only port 80 keeps its port-less domains.
  // Remora also gives them to the first HTTP port of a service without port 80, so that
  // `Host: reviews` reaches `reviews:9080`.
  const { config } = translate(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http-alt, protocol: HTTP}
  - {number: 80, name: http, protocol: HTTP}
  - {number: 5432, name: tcp-db, protocol: TCP}
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 5432, name: tcp-db, protocol: TCP}
  - {number: 9000, name: grpc, protocol: GRPC}
  - {number: 9001, name: http, protocol: HTTP}
  endpoints: [{address: 10.0.9.2}]
`);
  t.same(vhostNames(config), [
    'web.default.svc.cluster.local:80',
    'allow_any',
    'web.default.svc.cluster.local:8080',
    'api.default.svc.cluster.local:9000',
    'api.default.svc.cluster.local:9001',
  ]);
  // istiod's RDS tables: one per port, holding that port's virtual hosts.
  t.same(
    config.routeConfigs.map((r) => [r.name, r.virtualHosts.map((v) => v.name)]),
    [
      ['8080', ['web.default.svc.cluster.local:8080', 'allow_any']],
      ['80', ['web.default.svc.cluster.local:80', 'allow_any']],
      ['9000', ['api.default.svc.cluster.local:9000', 'allow_any']],
      ['9001', ['api.default.svc.cluster.local:9001', 'allow_any']],
    ],
  );
  t.same(config.listeners.find((l) => l.name === 'virtualOutbound')?.routeConfigsByPort, { 80: '80', 8080: '8080', 9000: '9000', 9001: '9001' });
  const portless = (name: string): string[] => vhost(config, name).domains.filter((d) => !d.includes(':'));
  t.same(portless('web.default.svc.cluster.local:8080'), []);
  t.same(portless('web.default.svc.cluster.local:80'), ['web.default.svc.cluster.local', 'web.default.svc', 'web.default', 'web']);
  t.same(portless('api.default.svc.cluster.local:9000'), ['api.default.svc.cluster.local', 'api.default.svc', 'api.default', 'api']);
  t.same(portless('api.default.svc.cluster.local:9001'), []);
  t.same(vhost(config, 'api.default.svc.cluster.local:9001').domains, [
    'api.default.svc.cluster.local:9001',
    'api.default.svc:9001',
    'api.default:9001',
    'api:9001',
  ]);
});

t.test("a service without VirtualService gets Istio's default route: whole service, default retries, no timeout", async (t) => {
  const { config } = translate(BOOKINFO_SERVICES);
  const routes = vhost(config, 'reviews.default.svc.cluster.local:9080').routes;
  t.same(routes, [
    {
      name: 'default',
      match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] },
      action: {
        kind: 'forward',
        clusters: [{ cluster: bk('reviews'), weight: 100, requestHeaders: null, responseHeaders: null }],
        timeoutMs: 0,
        retry: DEFAULT_RETRY_POLICY,
        rewrite: null,
        authorityRewrite: null,
        mirrors: [],
      },
      requestHeaders: null,
      responseHeaders: null,
      filterConfigs: {},
      origin: '',
    },
  ]);
  // retry.go DefaultPolicy: 2 retries on
  // "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" with [503].
  t.same(DEFAULT_RETRY_POLICY, {
    numRetries: 2,
    perTryTimeoutMs: 0,
    retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
    retriableStatusCodes: [503],
    retryRemoteLocalities: false,
  });
});

t.test('a mesh VirtualService for a service replaces its default route on every HTTP port', async (t) => {
  const { config } = translate(
    BOOKINFO_SERVICES +
      vs('reviews', '  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}') +
      vs('ratings-gw', '  hosts: [ratings]\n  gateways: [bookinfo-gateway]\n  http:\n  - route:\n    - destination: {host: ratings, subset: v2}'),
  );
  const reviews = vhost(config, 'reviews.default.svc.cluster.local:9080');
  t.same(reviews.domains, REVIEWS_DOMAINS, 'the VirtualService does not change the domains');
  t.same(
    reviews.routes.map((r) => [r.name, r.origin, targets(r)]),
    [['', 'default/reviews#0', [[bk('reviews', 'v1'), 100]]]],
    "istiod leaves an unnamed route unnamed; the origin says where it was written",
  );
  // A VirtualService bound only to a gateway does not apply to sidecars.
  t.same(vhost(config, 'ratings.default.svc.cluster.local:9080').routes.map((r) => r.name), ['default']);
});

t.test('VirtualService choice: exact host beats wildcard, then the oldest', async (t) => {
  const yaml = (first: string, second: string): string => BOOKINFO_SERVICES + first + second;
  const exact = vs('exact', '  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}');
  const wildcard = vs('wildcard', '  hosts: ["*.default.svc.cluster.local"]\n  http:\n  - route:\n    - destination: {host: details}');
  const widest = vs('widest', '  hosts: ["*.svc.cluster.local"]\n  http:\n  - route:\n    - destination: {host: ratings}');
  const origin = (y: string, svc: string): string[] =>
    vhost(translate(y).config, `${svc}.default.svc.cluster.local:9080`).routes.map((r) => r.origin);
  t.same(origin(yaml(wildcard, exact), 'reviews'), ['default/exact#0'], 'exact wins although younger');
  t.same(origin(yaml(wildcard, exact), 'ratings'), ['default/wildcard#0'], 'the wildcard covers the others');
  t.same(origin(yaml(widest, wildcard), 'ratings'), ['default/wildcard#0'], 'the longer wildcard wins although younger');
  const twin = vs('twin', '  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}');
  t.same(origin(yaml(exact, twin), 'reviews'), ['default/exact#0'], 'same host: the oldest wins');
  t.same(origin(yaml(twin, exact), 'reviews'), ['default/twin#0'], 'same host: the oldest wins');
  // The losing VirtualService adds no second virtual host for the same names.
  const { config } = translate(yaml(exact, twin));
  t.same(vhostNames(config), [
    'productpage.default.svc.cluster.local:9080',
    'reviews.default.svc.cluster.local:9080',
    'ratings.default.svc.cluster.local:9080',
    'details.default.svc.cluster.local:9080',
    'allow_any',
  ]);
});

t.test('VirtualService hosts that are no service get their own virtual host', async (t) => {
  // route.go separateVSHostsAndServices: hosts not in the registry are kept as plain
  // hostnames ("to affect traffic to hosts outside of the service registry (e.g. google.com)").
  const { config, issues } = translate(
    BOOKINFO_SERVICES +
      vs(
        'bookinfo-alias',
        '  hosts: [bookinfo.example.com, reviews]\n  http:\n  - match:\n    - uri: {prefix: /reviews}\n    route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: productpage}',
      ) +
      vs('wild', '  hosts: ["*.corp.example.com"]\n  http:\n  - route:\n    - destination: {host: details}') +
      // A younger VirtualService for the same name adds nothing (Istio: duplicate domain, first wins).
      vs('bookinfo-alias-2', '  hosts: [bookinfo.example.com]\n  http:\n  - route:\n    - destination: {host: ratings}'),
  );
  t.same(issues, []);
  t.same(vhostNames(config), [
    'productpage.default.svc.cluster.local:9080',
    'reviews.default.svc.cluster.local:9080',
    'ratings.default.svc.cluster.local:9080',
    'details.default.svc.cluster.local:9080',
    'bookinfo.example.com',
    '*.corp.example.com',
    'allow_any',
  ]);
  // Istio builds these for port 80 only ([h, h:80]); Remora answers them on any port, so every port's table has them (before istiod's catch-all).
  t.same(config.routeConfigs.filter((r) => !r.name.startsWith('inbound|')).map((r) => r.virtualHosts.slice(-3).map((v) => v.name)), [['bookinfo.example.com', '*.corp.example.com', 'allow_any']]);
  t.same(vhost(config, 'bookinfo.example.com').domains, ['bookinfo.example.com', 'bookinfo.example.com:*']);
  t.same(vhost(config, '*.corp.example.com').domains, ['*.corp.example.com', '*.corp.example.com:*']);
  t.same(vhost(config, 'bookinfo.example.com').routes.map((r) => r.origin), ['default/bookinfo-alias#0', 'default/bookinfo-alias#1']);
  t.same(
    vhost(config, 'bookinfo.example.com').routes.map((r) => targets(r)),
    [[[bk('reviews'), 100]], [[bk('productpage'), 100]]],
  );
  // The same VirtualService also routes the service it names.
  t.same(vhost(config, 'reviews.default.svc.cluster.local:9080').routes.map((r) => r.origin), ['default/bookinfo-alias#0', 'default/bookinfo-alias#1']);
});

t.test('a VirtualService with no route for a port leaves that port its default route', async (t) => {
  // route.go buildSidecarVirtualHostsForVirtualService returns nothing when no route applies
  // ("if err != nil || len(routes) == 0"), so BuildSidecarVirtualHostWrapper keeps the
  // service and gives it the default route.
  const { config } = translate(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: http-admin, protocol: HTTP}
  endpoints: [{address: 10.0.9.1, labels: {version: v1}}]
---
${vs('web', '  hosts: [web]\n  http:\n  - match:\n    - port: 80\n    route:\n    - destination: {host: web, port: {number: 80}}\n    timeout: 2s')}
${vs('canary', '  hosts: [ratings.example.com]\n  http:\n  - match:\n    - sourceLabels: {app: reviews}\n    route:\n    - destination: {host: web}')}`);
  t.same(vhost(config, 'web.default.svc.cluster.local:80').routes.map((r) => [r.origin, forward(r).timeoutMs]), [['default/web#0', 2000]]);
  t.same(vhost(config, 'web.default.svc.cluster.local:8080').routes.map((r) => [r.name, targets(r)]), [
    ['default', [['outbound|8080||web.default.svc.cluster.local', 100]]],
  ]);
  // A host that is no service and gets no route for this proxy gets no virtual host at all.
  t.notOk(vhostNames(config).includes('ratings.example.com'));
});

t.test('exportTo and namespaces of VirtualServices', async (t) => {
  const yaml =
    BOOKINFO_SERVICES +
    vs('reviews', '  hosts: [reviews]\n  exportTo: ["."]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}') +
    // Short hosts resolve in the VirtualService's namespace: this one is about team-a's reviews.
    vs('team-a-reviews', '  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}', ', namespace: team-a');
  const routesFor = (ns: string): string[] =>
    vhost(translate(yaml, nodeWith(SIDECAR, { namespace: ns })).config, 'reviews.default.svc.cluster.local:9080').routes.map((r) => r.name || r.origin);
  t.same(routesFor('default'), ['default/reviews#0']);
  t.same(routesFor('team-a'), ['default']);
  const { config } = translate(yaml, nodeWith(SIDECAR, { namespace: 'team-a' }));
  t.same(vhost(config, 'reviews.team-a.svc.cluster.local').domains, ['reviews.team-a.svc.cluster.local', 'reviews.team-a.svc.cluster.local:*']);
});

t.test('inbound: virtualInbound on the inbound port forwards everything to the local app', async (t) => {
  const { config, issues } = translate(BOOKINFO_SERVICES, SIDECAR, { ...PORTS, appPort: 9080 });
  t.same(issues, []);
  t.same(config.listeners.filter((l) => l.direction === 'inbound'), [
    // Istio's default for inbound traffic is PERMISSIVE mTLS: TLS and plaintext on one port.
    // Its own chain (connections made to 15006 directly) is the app port's; redirected
    // connections go to the chain of their destination port, others to the app as they came.
    { name: 'virtualInbound', address: '0.0.0.0', port: 15006, connectionManager: ISTIO_ENVOY_HCM, direction: 'inbound', routeConfig: 'inbound|9080||', httpFilters: CHAIN_TAIL, tls: { kind: 'mesh', mode: 'PERMISSIVE' }, destinationPort: 9080, useOriginalDst: true, catchAll: [INBOUND_PASSTHROUGH] },
    { name: 'inbound_0.0.0.0_9080', address: '0.0.0.0', port: 15006, connectionManager: ISTIO_ENVOY_HCM, direction: 'inbound', routeConfig: 'inbound|9080||', httpFilters: CHAIN_TAIL, tls: { kind: 'mesh', mode: 'PERMISSIVE' }, destinationPort: 9080, bindToPort: false },
  ]);
  const rc = routeTable(config, 'inbound|9080||');
  t.equal(rc.ignorePortInHostMatching, true);
  t.same(rc.virtualHosts.map((v) => [v.name, v.domains]), [['inbound|http|9080', ['*']]]);
  const route = rc.virtualHosts[0]!.routes[0]!;
  t.same(targets(route), [['inbound|9080||', 100]]);
  t.equal(forward(route).retry, null, 'no retries on the inbound side');
  t.equal(forward(route).timeoutMs, 0);
  const c = cluster(config, 'inbound|9080||');
  // The sidecar's own service is the entry whose endpoint labels match the workload's.
  t.same(c.service, { host: 'productpage.default.svc.cluster.local', name: 'productpage', namespace: 'default', port: 9080 });
  t.same(
    c.endpoints.map((e) => [e.address, e.port, e.workloadName, e.serviceAccount]),
    [['127.0.0.1', 9080, 'productpage-v1', 'bookinfo-productpage']],
  );
  t.equal(c.protocol, 'http1');
  t.equal(c.outlierDetection, null);
  // Without an app port, the ports of the services selecting the workload still have their inbound chains.
  t.same(clusterNames(translate(BOOKINFO_SERVICES).config).filter((x) => x.startsWith('inbound|')), ['inbound|9080||']);
  // No inbound at all when nothing is served: no app port, no service selecting the workload.
  const other = translate(BOOKINFO_SERVICES, nodeWith(SIDECAR, { labels: { app: 'sleep' } })).config;
  t.same(other.listeners.filter((l) => l.direction === 'inbound'), []);
  t.notOk(clusterNames(other).some((x) => x.startsWith('inbound|')));
});

t.test('PeerAuthentication decides the inbound listener\'s mTLS: workload port, workload, namespace, mesh-wide; UNSET inherits', async (t) => {
  const pa = (name: string, ns: string, spec: string): string =>
    `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;
  const inboundTls = (yaml: string) => translate(BOOKINFO_SERVICES + yaml, SIDECAR, { ...PORTS, appPort: 9080 }).config.listeners.find((l) => l.direction === 'inbound')!.tls;
  t.same(inboundTls(''), { kind: 'mesh', mode: 'PERMISSIVE' }, 'Istio\'s default');
  const mesh = pa('default', 'istio-system', '  mtls: {mode: STRICT}');
  t.same(inboundTls(mesh), { kind: 'mesh', mode: 'STRICT' }, 'mesh-wide, from the root namespace');
  t.same(inboundTls(mesh + pa('ns', 'default', '  mtls: {mode: PERMISSIVE}')), { kind: 'mesh', mode: 'PERMISSIVE' }, 'the namespace overrides the mesh');
  t.same(inboundTls(mesh + pa('ns', 'default', '  mtls: {mode: UNSET}')), { kind: 'mesh', mode: 'STRICT' }, 'UNSET inherits');
  t.same(inboundTls(mesh + pa('other', 'team-a', '  mtls: {mode: DISABLE}')), { kind: 'mesh', mode: 'STRICT' }, 'another namespace does not apply');
  const workload = pa('pp', 'default', '  selector: {matchLabels: {app: productpage}}\n  mtls: {mode: DISABLE}');
  t.equal(inboundTls(mesh + workload), null, 'a selected workload may turn mTLS off: plaintext listener');
  const other = pa('rv', 'default', '  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: DISABLE}');
  t.same(inboundTls(mesh + other), { kind: 'mesh', mode: 'STRICT' }, 'a selector for another workload does not apply');
  const port = pa('pp', 'default', '  selector: {matchLabels: {app: productpage}}\n  mtls: {mode: DISABLE}\n  portLevelMtls:\n    "9080": {mode: STRICT}');
  t.same(inboundTls(port), { kind: 'mesh', mode: 'STRICT' }, 'portLevelMtls for the app port wins');
});

t.test('Sidecar resource: egress hosts scope the outbound route table; REGISTRY_ONLY answers the rest with block_all', async (t) => {
  const other = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: finance}
spec:
  hosts: [billing.finance.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: audit, namespace: istio-system}
spec:
  hosts: [audit.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.0.2}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: billing-routes, namespace: finance}
spec:
  hosts: [pay.example.com]
  http:
  - route: [{destination: {host: billing.finance.svc.cluster.local}}]
---
`;
  const sidecar = (name: string, ns: string, spec: string) => `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;
  const names = (yaml: string) => {
    const out = translate(BOOKINFO_SERVICES + other + yaml);
    return { hosts: vhostNames(out.config).map((n) => n.split(':')[0]!), brief: out.brief };
  };
  const all = names('');
  t.ok(all.hosts.includes('billing.finance.svc.cluster.local') && all.hosts.includes('pay.example.com'), 'no Sidecar: every service and VirtualService');

  // Istio's documented default: own namespace and istio-system only.
  const mesh = names(sidecar('default', 'istio-system', '  egress:\n  - hosts: ["./*", "istio-system/*"]'));
  t.ok(mesh.hosts.includes('reviews.default.svc.cluster.local'), "the root namespace's `.` is the workload's namespace");
  t.ok(mesh.hosts.includes('audit.istio-system.svc.cluster.local'));
  t.notOk(mesh.hosts.includes('billing.finance.svc.cluster.local'), 'another namespace: not visible');
  t.notOk(mesh.hosts.includes('pay.example.com'), "a VirtualService of another namespace: not visible");
  t.notOk(mesh.hosts.includes('block_all'), 'ALLOW_ANY: no block_all');

  // A namespace Sidecar overrides the root's; a selected workload's overrides both.
  const ns = names(sidecar('default', 'istio-system', '  egress:\n  - hosts: ["./*"]') + sidecar('ns', 'default', '  egress:\n  - hosts: ["finance/*", "./reviews.default.svc.cluster.local"]'));
  t.same(ns.hosts.sort(), ['allow_any', 'billing.finance.svc.cluster.local', 'pay.example.com', 'reviews.default.svc.cluster.local'].sort());
  const selected = names(
    sidecar('ns', 'default', '  egress:\n  - hosts: ["finance/*"]') +
      sidecar('pp', 'default', '  workloadSelector: {labels: {app: productpage}}\n  egress:\n  - hosts: ["*/*.default.svc.cluster.local"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}'),
  );
  t.ok(selected.hosts.includes('ratings.default.svc.cluster.local'), 'the workload-selecting Sidecar applies');
  t.notOk(selected.hosts.includes('billing.finance.svc.cluster.local'));
  t.equal(selected.hosts.at(-1), 'block_all', 'REGISTRY_ONLY: block_all last, for every other host');
  const out = translate(BOOKINFO_SERVICES + sidecar('pp', 'default', '  workloadSelector: {labels: {app: productpage}}\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}'));
  t.same(vhost(out.config, 'block_all').routes[0]!.action, { kind: 'direct-response', status: 502, body: null }, "Istio's block_all: 502");

  // What Remora does not apply is said (ingress listeners: translate-sidecar-listeners.test.ts).
  const warned = names(sidecar('ns', 'default', '  egress:\n  - port: {number: 6379, protocol: TCP, name: tcp}\n    hosts: ["./*"]\n  - bind: 127.0.0.1\n    hosts: ["./*"]'));
  t.same(warned.brief, [
    'warning Sidecar default/ns spec.egress[1]: bind and captureMode of the egress listener without a port are not applied; its hosts apply to the outbound listener',
  ]);

  // A per-port HTTP egress listener: its port's table holds its own hosts; bound with captureMode NONE.
  const perPort = translate(
    BOOKINFO_SERVICES + other +
      sidecar('ns', 'default', '  egress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    captureMode: NONE\n    bind: 127.0.0.1\n    hosts: ["./ratings.default.svc.cluster.local"]\n  - hosts: ["./*", "finance/*"]'),
  );
  t.same(perPort.brief, []);
  const table9080 = vhostNames(perPort.config, '9080').map((n) => n.split(':')[0]!);
  t.ok(table9080.includes('ratings.default.svc.cluster.local'), 'port 9080: the listener\'s own host');
  t.notOk(table9080.includes('reviews.default.svc.cluster.local'), 'port 9080: another service of the namespace is not in its table');
  const bound = perPort.config.listeners.find((l) => l.name === '127.0.0.1_9080');
  t.match(bound, { address: '127.0.0.1', port: 9080, direction: 'outbound', routeConfig: '9080', tls: null }, 'captureMode NONE: a listener bound to 127.0.0.1:9080');
  t.equal(bound?.bindToPort, undefined, 'it opens its socket');
});

t.test('Sidecar egress listener on a TCP port: its hosts\' services on that port, per address or bound to bind:port, to outbound|port||host', async (t) => {
  const se = (name: string, host: string, address: string | null, ports: string, endpoint: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${host}]
${address === null ? '' : `  addresses: [${address}]\n`}  location: MESH_INTERNAL
  resolution: STATIC
  ports: ${ports}
  endpoints: [{address: ${endpoint}}]
---
`;
  const services =
    se('mysql', 'mysql.default.svc.cluster.local', '10.96.0.30', '[{number: 3306, name: tcp-mysql, protocol: TCP}]', '10.1.0.30') +
    se('redis', 'redis.default.svc.cluster.local', '10.96.0.31', '[{number: 3306, name: tcp, protocol: TCP}, {number: 6379, name: redis, protocol: REDIS}]', '10.1.0.31') +
    se('other', 'other.default.svc.cluster.local', '10.96.0.32', '[{number: 3306, name: tcp, protocol: TCP}]', '10.1.0.32');
  const sidecar = (egress: string) => `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: pp, namespace: default}\nspec:\n  workloadSelector: {labels: {app: productpage}}\n  egress:\n${egress}\n---\n`;
  const tcp = (cluster: string) => [{ sniHosts: [], clusters: [{ cluster, weight: 100 }], origin: '' }];

  // Captured (captureMode DEFAULT): per service address, as istiod's buildSidecarOutboundListener for the port.
  const captured = translate(BOOKINFO_SERVICES + services + sidecar('  - port: {number: 3306, protocol: MYSQL, name: egressmysql}\n    hosts: ["./mysql.default.svc.cluster.local", "./redis.default.svc.cluster.local"]\n  - hosts: ["./*"]'));
  t.same(captured.brief, []);
  const mysql = captured.config.listeners.find((l) => l.name === '10.96.0.30_3306');
  t.match(mysql, { address: '10.96.0.30', port: 3306, bindToPort: false, tcpProxy: tcp('outbound|3306||mysql.default.svc.cluster.local') }, 'mysql: 10.96.0.30_3306 to outbound|3306||mysql');
  t.match(captured.config.listeners.find((l) => l.name === '10.96.0.31_3306'), { tcpProxy: tcp('outbound|3306||redis.default.svc.cluster.local') }, 'redis (two ports): the listener port\'s cluster');
  t.ok(captured.config.listeners.some((l) => l.name === '10.96.0.32_3306'), 'the catch-all egress listener still builds other hosts\' listeners');

  // captureMode NONE with bind: one listener on bind:port, the first host\'s route (istiod: TCP over TCP, first wins).
  const bound = translate(BOOKINFO_SERVICES + services + sidecar('  - port: {number: 3306, protocol: MYSQL, name: egressmysql}\n    captureMode: NONE\n    bind: 127.0.0.1\n    hosts: ["*/mysql.default.svc.cluster.local"]'));
  t.same(bound.brief, []);
  const l = bound.config.listeners.find((x) => x.name === '127.0.0.1_3306');
  t.match(l, { address: '127.0.0.1', port: 3306, direction: 'outbound', tcpProxy: tcp('outbound|3306||mysql.default.svc.cluster.local') }, 'bound to 127.0.0.1:3306, to mysql');
  t.equal(l?.bindToPort, undefined, 'it opens its socket');
  t.equal(l?.pipe, undefined);

  // A port the host's only service port is not: that port's cluster (istiod: a single-port service keeps its port).
  const other = translate(BOOKINFO_SERVICES + services + sidecar('  - port: {number: 3306, protocol: TCP, name: tcp}\n    captureMode: NONE\n    hosts: ["./other.default.svc.cluster.local"]'));
  t.match(other.config.listeners.find((x) => x.name === '127.0.0.1_3306'), { tcpProxy: tcp('outbound|3306||other.default.svc.cluster.local') }, 'captureMode NONE without bind: 127.0.0.1');

  // A unix domain socket: every port of its hosts' services, on the socket (port 0).
  const uds = translate(BOOKINFO_SERVICES + services + sidecar('  - port: {number: 0, protocol: TCP, name: tcp-uds}\n    bind: unix:///var/run/mysql.sock\n    hosts: ["./mysql.default.svc.cluster.local"]'));
  t.same(uds.brief, []);
  t.match(uds.config.listeners.find((x) => x.name === 'unix:///var/run/mysql.sock_0'), {
    address: 'unix:///var/run/mysql.sock',
    port: 0,
    pipe: { path: '/var/run/mysql.sock', mode: 0 },
    tcpProxy: tcp('outbound|3306||mysql.default.svc.cluster.local'),
  }, 'a listener on the unix socket, to the service\'s one port');

  // HTTP on a unix domain socket: its hosts on every HTTP port, in the table named after the bind.
  const http = translate(BOOKINFO_SERVICES + sidecar('  - port: {number: 0, protocol: HTTP, name: http-uds}\n    bind: unix:///var/run/egress.sock\n    hosts: ["./ratings.default.svc.cluster.local"]\n  - hosts: ["./*"]'));
  t.same(http.brief, []);
  const hl = http.config.listeners.find((x) => x.name === 'unix:///var/run/egress.sock_0');
  t.match(hl, { pipe: { path: '/var/run/egress.sock' }, routeConfig: 'unix:///var/run/egress.sock', direction: 'outbound' }, 'an HTTP listener on the socket');
  const table = http.config.routeConfigs.find((rc) => rc.name === 'unix:///var/run/egress.sock')!;
  t.same(table.virtualHosts.map((v) => v.name), ['ratings.default.svc.cluster.local:9080', 'allow_any'], 'its table: its own host, then the outbound policy\'s catch-all');
});
