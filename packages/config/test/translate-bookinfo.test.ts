// Bookinfo conformance: Istio's own bookinfo networking samples, read unmodified from the
// shared corpus, translate to what the istio.io tasks say they do (request routing, traffic
// shifting, fault injection, request timeouts, ingress gateway, egress TLS origination).
// ServiceEntries stand in for the bookinfo Kubernetes Services (see helpers/translate.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { type Resource, type Route } from '@remora/config';
import { loadMesh } from '@remora/config/envoy';
import {
  BOOKINFO_DIR,
  BOOKINFO_MISSING,
  BOOKINFO_SERVICES,
  bk,
  bookinfo,
  cluster,
  forward,
  INGRESS,
  ISTIO_ENVOY_HCM,
  load,
  PORTS,
  routeTable,
  SIDECAR,
  targets,
  translateResources,
  vhost,
  type Translated, CHAIN_TAIL } from './helpers/translate.ts';

/**
 * `kubectl apply` of several texts in turn: a resource applied again (same kind, namespace
 * and name) is replaced in place and keeps its age; sample files are read from the corpus.
 */
function apply(...parts: string[]): Resource[] {
  const out: Resource[] = [];
  parts.forEach((part, i) => {
    const text = part.includes('\n') ? part : bookinfo(part);
    if (text === null) throw new Error(`missing corpus file ${part}`);
    for (const r of load(text, part.includes('\n') ? `inline-${i}.yaml` : part, 1000 * i).resources) {
      const at = out.findIndex((o) => o.kind === r.kind && o.metadata.namespace === r.metadata.namespace && o.metadata.name === r.metadata.name);
      if (at < 0) out.push(r);
      else out[at] = { ...r, order: out[at]!.order };
    }
  });
  return out;
}

const hasCorpus = bookinfo('virtual-service-all-v1.yaml') !== null;
const skip = hasCorpus ? {} : { skip: BOOKINFO_MISSING };

/** The productpage sidecar's view of the mesh after applying `files` over the services and destination-rule-all. */
function mesh(...files: string[]): Translated {
  return translateResources(apply(BOOKINFO_SERVICES, 'destination-rule-all.yaml', ...files), SIDECAR);
}
const routesOf = (out: Translated, svc: string): readonly Route[] => vhost(out.config, `${svc}.default.svc.cluster.local:9080`).routes;
/** Each route as `[header matches, [cluster, weight]...]`, the shape the tasks describe. */
const view = (routes: readonly Route[]): [string[], [string, number][]][] =>
  routes.map((r) => [r.match.headers.map((h) => `${h.name}=${h.match.kind === 'present' ? '*' : h.match.value}`), targets(r)]);

t.test('destination-rule-all: a cluster per subset with the endpoints of that version', skip, async (t) => {
  const out = mesh();
  const eps = (name: string): string[] => cluster(out.config, name).endpoints.map((e) => e.address);
  t.same(eps(bk('reviews')), ['10.0.1.1', '10.0.1.2', '10.0.1.3']);
  t.same(eps(bk('reviews', 'v1')), ['10.0.1.1']);
  t.same(eps(bk('reviews', 'v2')), ['10.0.1.2']);
  t.same(eps(bk('reviews', 'v3')), ['10.0.1.3']);
  t.same(eps(bk('ratings', 'v2')), ['10.0.2.2']);
  t.same(eps(bk('productpage', 'v1')), ['10.0.0.10']);
  t.same(eps(bk('details', 'v2')), ['10.0.3.2']);
  // The mysql variants have no workloads in this registry.
  t.same(out.brief, [
    'warning DestinationRule default/ratings spec.subsets[2].labels: subset v2-mysql selects no endpoint of ratings.default.svc.cluster.local',
    'warning DestinationRule default/ratings spec.subsets[3].labels: subset v2-mysql-vm selects no endpoint of ratings.default.svc.cluster.local',
  ]);
});

t.test('virtual-service-all-v1: every service goes to v1 (request routing task)', skip, async (t) => {
  const out = mesh('virtual-service-all-v1.yaml');
  for (const svc of ['productpage', 'reviews', 'ratings', 'details']) {
    t.same(view(routesOf(out, svc)), [[[], [[bk(svc, 'v1'), 100]]]], svc);
    t.same(forward(routesOf(out, svc)[0]!).retry?.numRetries, 2, `${svc}: Istio's default retries`);
  }
});

t.test('virtual-service-reviews-test-v2: jason sees reviews v2, everyone else v1', skip, async (t) => {
  const out = mesh('virtual-service-all-v1.yaml', 'virtual-service-reviews-test-v2.yaml');
  t.same(view(routesOf(out, 'reviews')), [
    [['end-user=jason'], [[bk('reviews', 'v2'), 100]]],
    [[], [[bk('reviews', 'v1'), 100]]],
  ]);
  t.same(view(routesOf(out, 'ratings')), [[[], [[bk('ratings', 'v1'), 100]]]], 'the other services stay on v1');
});

t.test('virtual-service-reviews-jason-v2-v3: jason sees reviews v2, everyone else v3', skip, async (t) => {
  const out = mesh('virtual-service-all-v1.yaml', 'virtual-service-reviews-jason-v2-v3.yaml');
  t.same(view(routesOf(out, 'reviews')), [
    [['end-user=jason'], [[bk('reviews', 'v2'), 100]]],
    [[], [[bk('reviews', 'v3'), 100]]],
  ]);
  t.same(routesOf(out, 'reviews')[0]!.match.headers, [{ name: 'end-user', match: { kind: 'exact', value: 'jason' }, invert: false }]);
});

t.test('traffic shifting: 50/50, 80/20, 90/10, v2/v3, then all to v3', skip, async (t) => {
  const shift = (file: string): [string, number][] => {
    const routes = routesOf(mesh('virtual-service-all-v1.yaml', file), 'reviews');
    t.equal(routes.length, 1, `${file}: one route`);
    return targets(routes[0]!);
  };
  t.same(shift('virtual-service-reviews-50-v3.yaml'), [
    [bk('reviews', 'v1'), 50],
    [bk('reviews', 'v3'), 50],
  ]);
  t.same(shift('virtual-service-reviews-80-20.yaml'), [
    [bk('reviews', 'v1'), 80],
    [bk('reviews', 'v2'), 20],
  ]);
  t.same(shift('virtual-service-reviews-90-10.yaml'), [
    [bk('reviews', 'v1'), 90],
    [bk('reviews', 'v2'), 10],
  ]);
  t.same(shift('virtual-service-reviews-v2-v3.yaml'), [
    [bk('reviews', 'v2'), 50],
    [bk('reviews', 'v3'), 50],
  ]);
  t.same(shift('virtual-service-reviews-v3.yaml'), [[bk('reviews', 'v3'), 100]]);
});

t.test('virtual-service-ratings-test-delay: a 7s delay for jason on ratings (fault injection task)', skip, async (t) => {
  const out = mesh('virtual-service-all-v1.yaml', 'virtual-service-reviews-test-v2.yaml', 'virtual-service-ratings-test-delay.yaml');
  const routes = routesOf(out, 'ratings');
  t.same(view(routes), [
    [['end-user=jason'], [[bk('ratings', 'v1'), 100]]],
    [[], [[bk('ratings', 'v1'), 100]]],
  ]);
  t.same(routes[0]!.filterConfigs, { 'envoy.filters.http.fault': { delay: { fixedDelay: '7s', percentage: { numerator: 1000000, denominator: 'MILLION' } } } });
  t.same(routes[1]!.filterConfigs, {}, 'no fault for everyone else');
});

t.test('virtual-service-ratings-test-abort: HTTP 500 for jason on ratings', skip, async (t) => {
  const out = mesh('virtual-service-all-v1.yaml', 'virtual-service-reviews-test-v2.yaml', 'virtual-service-ratings-test-abort.yaml');
  const routes = routesOf(out, 'ratings');
  t.same(routes[0]!.filterConfigs, { 'envoy.filters.http.fault': { abort: { httpStatus: 500, percentage: { numerator: 1000000, denominator: 'MILLION' } } } });
  t.same(routes[0]!.match.headers.map((h) => h.name), ['end-user']);
  t.same(routes[1]!.filterConfigs, {});
});

t.test('fault-injection-details-v1: every details request aborts with 555', skip, async (t) => {
  // The file brings its own `details` DestinationRule (v1 only), replacing destination-rule-all's.
  const out = translateResources(apply(BOOKINFO_SERVICES, 'destination-rule-all.yaml', 'virtual-service-all-v1.yaml', 'fault-injection-details-v1.yaml'), SIDECAR);
  const first = routesOf(out, 'details')[0]!;
  t.same(first.match, { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] });
  t.same(first.filterConfigs, { 'envoy.filters.http.fault': { abort: { httpStatus: 555, percentage: { numerator: 1000000, denominator: 'MILLION' } } } });
  t.same(targets(first), [[bk('details', 'v1'), 100]]);
  t.notOk(out.config.clusters.some((c) => c.name === bk('details', 'v2')), 'the replaced rule has no v2 subset');
});

t.test('ratings-db / mysql / mysql-vm: reviews v3 with the ratings subset of each variant', skip, async (t) => {
  for (const [file, subset] of [
    ['virtual-service-ratings-db.yaml', 'v2'],
    ['virtual-service-ratings-mysql.yaml', 'v2-mysql'],
    ['virtual-service-ratings-mysql-vm.yaml', 'v2-mysql-vm'],
  ] as const) {
    const out = mesh('virtual-service-all-v1.yaml', file);
    t.same(view(routesOf(out, 'reviews')), [[[], [[bk('reviews', 'v3'), 100]]]], file);
    t.same(view(routesOf(out, 'ratings')), [[[], [[bk('ratings', subset), 100]]]], file);
  }
});

t.test('virtual-service-details-v2 routes details to v2', skip, async (t) => {
  t.same(view(routesOf(mesh('virtual-service-all-v1.yaml', 'virtual-service-details-v2.yaml'), 'details')), [[[], [[bk('details', 'v2'), 100]]]]);
});

t.test('destination-rule-reviews and destination-rule-all-mtls: policies reach every subset cluster', skip, async (t) => {
  const random = translateResources(apply(BOOKINFO_SERVICES, 'destination-rule-reviews.yaml'), SIDECAR);
  for (const subset of ['', 'v1', 'v2', 'v3']) t.same(cluster(random.config, bk('reviews', subset)).lb, { kind: 'random' }, `reviews ${subset}`);
  const mtls = translateResources(apply(BOOKINFO_SERVICES, 'destination-rule-all-mtls.yaml'), SIDECAR);
  for (const name of [bk('productpage', 'v1'), bk('reviews'), bk('ratings', 'v2'), bk('details', 'v1')]) {
    t.equal(cluster(mtls.config, name).tls?.mode, 'ISTIO_MUTUAL', name);
  }
});

t.test('request timeouts task: reviews v2 with a 0.5s timeout, ratings delayed 2s', skip, async (t) => {
  // istio.io tasks/traffic-management/request-timeouts, its two inline VirtualServices.
  const out = mesh(
    'virtual-service-all-v1.yaml',
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
`,
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
`,
  );
  t.equal(forward(routesOf(out, 'reviews')[0]!).timeoutMs, 500);
  t.same(targets(routesOf(out, 'reviews')[0]!), [[bk('reviews', 'v2'), 100]]);
  t.same(routesOf(out, 'ratings')[0]!.filterConfigs, { 'envoy.filters.http.fault': { delay: { fixedDelay: '2s', percentage: { numerator: 1000000, denominator: 'MILLION' } } } });
});

t.test('bookinfo-gateway: the ingress routes five paths to productpage:9080', skip, async (t) => {
  const out = translateResources(apply(BOOKINFO_SERVICES, 'destination-rule-all.yaml', 'virtual-service-all-v1.yaml', 'bookinfo-gateway.yaml'), INGRESS);
  t.same(out.config.listeners, [{ name: '0.0.0.0_8080', address: '0.0.0.0', port: 8080, connectionManager: ISTIO_ENVOY_HCM, direction: 'gateway', routeConfig: 'http.8080', httpFilters: CHAIN_TAIL, tls: null }]);
  const rc = routeTable(out.config, 'http.8080');
  t.equal(rc.ignorePortInHostMatching, true);
  t.same(rc.virtualHosts.map((v) => [v.name, v.domains]), [['*:8080', ['*']]]);
  t.same(
    rc.virtualHosts[0]!.routes.map((r) => [r.origin, r.match.path.match, targets(r)]),
    [
      ['default/bookinfo#0.0', { kind: 'exact', value: '/productpage' }, [[bk('productpage'), 100]]],
      ['default/bookinfo#0.1', { kind: 'prefix', value: '/static' }, [[bk('productpage'), 100]]],
      ['default/bookinfo#0.2', { kind: 'exact', value: '/login' }, [[bk('productpage'), 100]]],
      ['default/bookinfo#0.3', { kind: 'exact', value: '/logout' }, [[bk('productpage'), 100]]],
      ['default/bookinfo#0.4', { kind: 'prefix', value: '/api/v1/products' }, [[bk('productpage'), 100]]],
    ],
  );
  // The gateway uses only VirtualServices bound to it: the mesh `productpage` v1 rule does
  // not apply (istio.io analysis IST0140, IngressRouteRulesNotAffected).
  t.same(out.issues.filter((i) => i.kind !== 'DestinationRule'), [], 'only the mysql subset warnings');
  // A sidecar does not use the gateway-bound VirtualService.
  const side = translateResources(apply(BOOKINFO_SERVICES, 'bookinfo-gateway.yaml'), SIDECAR);
  t.same(routesOf(side, 'productpage').map((r) => r.name), ['default']);
  t.equal(side.config.listeners.some((l) => l.direction === 'gateway'), false);
});

t.test('certmanager-gateway: ACME challenges on port 80 of the ingress', skip, async (t) => {
  const out = translateResources(apply('certmanager-gateway.yaml'), INGRESS);
  const rc = routeTable(out.config, 'http.80');
  t.same(rc.virtualHosts.map((v) => v.domains), [['*']]);
  t.same(view(rc.virtualHosts[0]!.routes), [[[], [['outbound|8089||cert-manager-resolver.istio-system.svc.cluster.local', 100]]]]);
  t.same(rc.virtualHosts[0]!.routes[0]!.match.path.match, { kind: 'prefix', value: '/.well-known/acme-challenge/' });
  t.same(out.brief, [
    'warning VirtualService istio-system/cert-manager spec.http[0].route[0].destination.host: host cert-manager-resolver.istio-system.svc.cluster.local is not in the registry (no ServiceEntry); requests routed here get 503 NC',
  ]);
});

t.test('egress-rule-google-apis: port 80 requests go to port 443 of www.googleapis.com', skip, async (t) => {
  const out = translateResources(apply('egress-rule-google-apis.yaml'), SIDECAR);
  const routes = vhost(out.config, 'www.googleapis.com:80').routes;
  t.same(view(routes), [[[], [['outbound|443||www.googleapis.com', 100]]]]);
  t.same(
    vhost(out.config, 'www.googleapis.com:80').domains,
    ['www.googleapis.com:80', 'www.googleapis.com'],
    'the HTTPS port has no HTTP virtual host',
  );
  // Port-level settings do not inherit: port 80 keeps the rule's ROUND_ROBIN.
  t.same(cluster(out.config, 'outbound|80||www.googleapis.com').lb, { kind: 'round-robin' });
});

t.test(
  'egress TLS origination: the HTTPS port gets a cluster carrying the port-level TLS',
  {
    ...skip,
    todo:
      'Istio builds a cluster for every service port, so `outbound|443||www.googleapis.com` exists and originates TLS ' +
      '(tasks/traffic-management/egress/egress-tls-origination); Remora builds clusters for HTTP ports only, so this ' +
      'route ends in 503 NC (no cluster) until TLS origination lands',
  },
  async (t) => {
    const out = translateResources(apply('egress-rule-google-apis.yaml'), SIDECAR);
    const c = cluster(out.config, 'outbound|443||www.googleapis.com');
    t.equal(c.tls?.mode, 'SIMPLE');
    t.same(c.lb, { kind: 'least-request' }, 'port-level settings replace the rule-level load balancer');
  },
);

t.test('loadMesh: the sample files from disk validate and translate as a whole', skip, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-bookinfo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const services = join(dir, 'services.yaml');
  writeFileSync(services, BOOKINFO_SERVICES);
  const files = [services, ...['destination-rule-all.yaml', 'virtual-service-all-v1.yaml', 'bookinfo-gateway.yaml'].map((f) => join(BOOKINFO_DIR, f))];
  const side = loadMesh(files, SIDECAR, { ...PORTS, appPort: 9080 });
  t.same(
    side.issues.map((i) => `${i.severity} ${i.path}`),
    ['warning spec.subsets[2].labels', 'warning spec.subsets[3].labels'],
  );
  t.ok(side.config, 'warnings do not reject the config');
  t.same(targets(vhost(side.config!, 'reviews.default.svc.cluster.local:9080').routes[0]!), [[bk('reviews', 'v1'), 100]]);
  t.same(side.config!.listeners.map((l) => l.name), ['virtualOutbound', '0.0.0.0_9080', 'virtualInbound', 'inbound_0.0.0.0_9080']);
  const gw = loadMesh(files, INGRESS, PORTS);
  t.same(gw.config?.listeners.map((l) => l.name), ['0.0.0.0_8080']);
  // The corpus as a whole applies several versions of the same resources: loadMesh rejects it.
  const all = loadMesh([services, BOOKINFO_DIR], SIDECAR, PORTS);
  t.equal(all.config, null);
  t.ok(all.issues.some((i) => i.severity === 'error' && /defined twice/.test(i.message)));
});
