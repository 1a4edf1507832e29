// Envoy's RouteConfiguration read back into the route model: what the exporter writes reads
// back as the translated model (lossless), istiod's own output imports with the values it
// means, unset fields take Envoy's defaults, and what Remora cannot honour is an error that
// names the resource and the field.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JsonValue } from '@bufbuild/protobuf';
import t, { type Test } from 'tap';
import type { ListenerPorts, ProxyConfig, ProxyNode, Resource, RouteConfiguration } from '@remora/config';
import { proxyConfigFromEnvoy, translateIstioToEnvoy } from '@remora/config/envoy';
import { envoyFromJson, envoyToJson } from '../src/envoy/codec.ts';
import { envoyResourcesFromModel } from '../src/envoy/from-model.ts';
import { formatImportIssue, ImportContext } from '../src/envoy/import-context.ts';
import { hashKeysFromRoutes, routeConfigFromEnvoy } from '../src/envoy/to-model-routes.ts';
import { RouteConfigurationSchema } from '../src/envoy/gen/envoy/config/route/v3/route_pb.ts';
import type { RouteConfigurationJson } from '../src/envoy/gen/envoy/config/route/v3/route_pb.ts';
import { GOLDENS_DIR, GOLDENS_MISSING, readGolden } from './helpers/envoy.ts';
import { bk, bookinfo, BOOKINFO_DIR, BOOKINFO_MISSING, BOOKINFO_SERVICES, briefIssue, INGRESS, load, PORTS, REPO_ROOT, SIDECAR, translate } from './helpers/translate.ts';

/** Through Envoy's descriptors and back: the canonical form an xDS stream delivers. */
function canonical(json: unknown): RouteConfigurationJson {
  return envoyToJson(RouteConfigurationSchema, envoyFromJson(RouteConfigurationSchema, json as JsonValue)) as RouteConfigurationJson;
}

function importOne(json: unknown): { rc: RouteConfiguration | null; issues: string[] } {
  const ctx = new ImportContext();
  const rc = routeConfigFromEnvoy(canonical(json), ctx);
  return { rc, issues: ctx.issues.map(formatImportIssue) };
}

/** `v` with every object's keys in order: the model's meaning does not depend on the order its fields were written in. */
function sorted(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sorted);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]));
}

/** Every route table of `config`, exported, canonicalised and imported, against the original. */
function roundTrip(t: Test, config: ProxyConfig, what: string): void {
  const exported = envoyResourcesFromModel(config).routeConfigs;
  t.equal(exported.length, config.routeConfigs.length, `${what}: one exported table per model table`);
  exported.forEach((json, i) => {
    const { rc, issues } = importOne(json);
    t.same(issues, [], `${what} ${json.name ?? ''}: no issues`);
    t.strictSame(sorted(rc), sorted(config.routeConfigs[i]), `${what} ${json.name ?? ''}: imports as the model it was exported from`);
  });
}

/**
 * The model the proxy runs for a mesh: translated, exported, patched by its EnvoyFilters and
 * imported, as the loader does.
 */
function pipeline(t: Test, yaml: string, node: ProxyNode = SIDECAR, ports: ListenerPorts = PORTS): ProxyConfig {
  const resources: Resource[] = load(yaml).resources;
  const { envoy, version, issues } = translateIstioToEnvoy(resources, node, ports);
  t.same(issues.filter((i) => i.severity === 'error').map(briefIssue), [], 'translated and patched without errors');
  const imported = proxyConfigFromEnvoy(envoy, node, version, false);
  t.same(imported.issues, [], 'imported without issues');
  return imported.config;
}

const ROUTES_MESH = `${BOOKINFO_SERVICES}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, path: /, ttl: 60s}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: by-user
    match:
    - name: jason
      headers: {end-user: {exact: jason}}
      withoutHeaders: {x-skip: {regex: "y.*"}, x-gone: {}}
      uri: {prefix: /api}
      ignoreUriCase: true
      queryParams: {debug: {regex: "on|yes"}, trace: {}}
      method: {exact: GET}
    - uri: {regex: "/v[0-9]+/.*"}
      authority: {prefix: reviews}
    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302, authority: example.com, scheme: https, port: 8443}
  - match: [{uri: {exact: /derived}}]
    redirect: {uri: /d, derivePort: FROM_PROTOCOL_DEFAULT, scheme: https}
  - match: [{uri: {exact: /gone}}]
    directResponse: {status: 410, body: {string: gone}}
  - match: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
  - match: [{uri: {prefix: /v3}}]
    route: [{destination: {host: reviews, subset: v3}}]
    retries: {attempts: 0}
  - match: [{uri: {prefix: /}}]
    headers: {request: {add: {x-a: "1"}}}
    route: [{destination: {host: reviews, subset: v1}}]
    rewrite: {uri: /root, authority: reviews.internal}
    retries: {attempts: 3, retryOn: "gateway-error,503", retryRemoteLocalities: true}
  - match: [{uri: {regex: "/r/(.*)"}}]
    rewrite: {uriRegexRewrite: {match: "/r/(.*)", rewrite: "/x/\\\\1"}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80, headers: {request: {set: {x-canary: "no"}, remove: [x-debug]}, response: {add: {x-from: v1}}}}
    - {destination: {host: reviews, subset: v3}, weight: 20}
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,retriable-status-codes"}
    timeout: 5s
    rewrite: {uri: /reviews}
    headers: {response: {remove: [x-internal], set: {x-served: "yes"}}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 10}
    mirrors: [{destination: {host: details}, percentage: {value: 2.5}}]
    corsPolicy: {allowOrigins: [{exact: "https://shop.example.com"}], allowMethods: [GET, POST], maxAge: 1h}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: per-route, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_OUTBOUND
        routeConfiguration: {vhost: {name: "reviews.default.svc.cluster.local:9080", route: {action: ROUTE}}}
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 10s}
                filter_enabled: {default_value: {numerator: 100}}
                filter_enforced: {default_value: {numerator: 100}}
                rate_limits: [{actions: [{remote_address: {}}]}]
          route:
            rate_limits:
              - actions: [{remote_address: {}}]
`;

const GATEWAY_MESH = `${BOOKINFO_SERVICES}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 80, name: http2, protocol: HTTP}
    hosts: ["*.example.org"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: ["shop.example.com", "*.example.org"]
  gateways: [istio-system/web]
  http:
  - match: [{uri: {prefix: /a}}, {uri: {prefix: /b}, headers: {"@request.auth.claims.groups": {prefix: admin}}, withoutHeaders: {"@request.auth.claims[sub]": {}}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
  - route: [{destination: {host: reviews}}]
`;

t.test('round trip: the translated route tables read back as they were', async (t) => {
  roundTrip(t, translate(ROUTES_MESH).config, 'routes mesh (sidecar)');
  // Its EnvoyFilter patches the exported routes: a route's own local rate limit and rate_limits.
  const patched = pipeline(t, ROUTES_MESH);
  const reviews = patched.routeConfigs.find((rc) => rc.name === '9080')!.virtualHosts.find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!;
  const forwards = reviews.routes.filter((r) => r.action.kind === 'forward');
  t.ok(forwards.length > 0 && forwards.every((r) => 'envoy.filters.http.local_ratelimit' in r.filterConfigs && (r.rateLimits?.length ?? 0) > 0), 'the patched routes carry the limit');
  roundTrip(t, patched, 'routes mesh (sidecar, EnvoyFilter applied)');
  roundTrip(t, translate(ROUTES_MESH, SIDECAR, { ...PORTS, appPort: 9080 }).config, 'routes mesh (sidecar, inbound)');
  roundTrip(t, translate(GATEWAY_MESH, INGRESS).config, 'gateway mesh');
});

t.test('round trip: the bookinfo samples, sidecar and ingress gateway', { skip: bookinfo('bookinfo-gateway.yaml') === null ? BOOKINFO_MISSING : false }, async (t) => {
  const all = readdirSync(BOOKINFO_DIR).filter((f) => f.endsWith('.yaml'));
  const rules = bookinfo('destination-rule-all.yaml')!;
  for (const file of all) {
    const text = bookinfo(file)!;
    const { config, brief } = translate([BOOKINFO_SERVICES, rules, text]);
    if (brief.some((b) => b.startsWith('error'))) continue;
    roundTrip(t, config, `${file} (sidecar)`);
    roundTrip(t, translate([BOOKINFO_SERVICES, rules, text], INGRESS).config, `${file} (gateway)`);
  }
});

t.test('round trip: examples/coffee-shop', async (t) => {
  const dir = join(REPO_ROOT, 'examples/coffee-shop/mesh');
  const texts = readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => readFileSync(join(dir, f), 'utf8'));
  for (const node of [SIDECAR, { ...SIDECAR, namespace: 'shop', workloadName: 'frontend', labels: { app: 'frontend' } }, INGRESS]) {
    roundTrip(t, translate(texts, node, { ...PORTS, appPort: 8080 }).config, `coffee-shop (${node.kind} ${node.workloadName})`);
  }
});

t.test('hash keys come back from the routes onto their clusters', async (t) => {
  const { config } = translate(ROUTES_MESH);
  const keys = hashKeysFromRoutes(envoyResourcesFromModel(config).routeConfigs.map(canonical));
  t.strictSame(keys.get(bk('reviews', 'v3')), { kind: 'cookie', name: 'user', path: '/', ttlSeconds: 60 });
  const model = config.clusters.find((c) => c.name === bk('reviews', 'v3'))!.lb;
  t.strictSame(model.kind === 'ring-hash' ? model.key : null, keys.get(bk('reviews', 'v3')), "the cluster's own key");
  t.equal(keys.has(bk('reviews', 'v1')), false, 'no key for a cluster not hashed');

  const ctx = new ImportContext();
  const rc = (policy: object, cluster: string): RouteConfigurationJson =>
    canonical({ name: 'x', virtualHosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster, hashPolicy: [policy] } }] }] });
  const m = hashKeysFromRoutes(
    [
      rc({ header: { headerName: 'X-User' } }, 'a'),
      rc({ connectionProperties: { sourceIp: true } }, 'b'),
      rc({ queryParameter: { name: 'q' } }, 'c'),
      rc({ connectionProperties: { sourceIp: true } }, 'a'),
      rc({ filterState: { key: 'k' } }, 'd'),
    ],
    ctx,
  );
  t.strictSame(Object.fromEntries(m), { a: { kind: 'header', name: 'x-user' }, b: { kind: 'source-ip' }, c: { kind: 'query-param', name: 'q' } });
  t.same(ctx.issues.map(formatImportIssue), [
    'warning: RouteConfiguration x: virtualHosts[0].routes[0].route.hashPolicy: cluster a is already hashed on another key; Remora keeps one key per cluster, the first',
  ]);
});

t.test("istiod's own route tables", { skip: GOLDENS_DIR === null ? GOLDENS_MISSING : false }, async (t) => {
  const tables: unknown[] = [];
  for (const file of ['proxy-config/config_dump.json', 'proxy-config/routes/configdump.json']) {
    const dump = readGolden(file) as { configs: { '@type': string; static_route_configs?: { route_config: unknown }[]; dynamic_route_configs?: { route_config: unknown }[] }[] };
    for (const c of dump.configs) {
      for (const r of [...(c.static_route_configs ?? []), ...(c.dynamic_route_configs ?? [])]) tables.push(r.route_config);
    }
  }
  const byName = new Map<string, { rc: RouteConfiguration | null; issues: string[] }>();
  for (const json of tables) {
    const { '@type': _, ...body } = json as Record<string, unknown>;
    const out = importOne(body);
    byName.set(out.rc?.name ?? String(body.name ?? ''), out);
  }
  t.strictSame([...byName.keys()].sort(), ['', 'http.8080', 'inbound-vip|8000|http|httpbin.default.svc.cluster.local']);
  for (const [name, { issues }] of byName) t.same(issues, [], `${name}: no issues`);

  t.strictSame(byName.get('http.8080')!.rc, {
    name: 'http.8080',
    ignorePortInHostMatching: true,
    virtualHosts: [
      {
        name: 'httpbin.example.com:80',
        domains: ['httpbin.example.com'],
        requireTls: false,
        routes: [
          {
            name: '',
            match: { path: { match: { kind: 'prefix', value: '/get' }, ignoreCase: false }, headers: [], queryParams: [] },
            action: {
              kind: 'forward',
              clusters: [{ cluster: 'outbound|8000||httpbin.default.svc.cluster.local', weight: 100, requestHeaders: null, responseHeaders: null }],
              timeoutMs: 0,
              retry: {
                numRetries: 2,
                perTryTimeoutMs: 0,
                retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
                retriableStatusCodes: [503],
                retryRemoteLocalities: false,
              },
              rewrite: null,
              authorityRewrite: null,
              mirrors: [],
            },
            requestHeaders: null,
            responseHeaders: null,
            filterConfigs: {},
            origin: 'default/httpbin#0',
          },
        ],
      },
    ],
  });
  const inbound = byName.get('inbound-vip|8000|http|httpbin.default.svc.cluster.local')!.rc!;
  const route = inbound.virtualHosts[0]!.routes[0]!;
  t.equal(route.name, 'default');
  t.strictSame(route.match.path.match, { kind: 'any' }, "istiod's prefix / is every path");
  t.equal(route.origin, '', 'a route istiod makes itself has no origin');
  t.strictSame(route.action.kind === 'forward' ? [route.action.timeoutMs, route.action.retry] : null, [0, null], 'timeout 0s: none; no retry policy: none');
  // The agent's static tables: Envoy's default route timeout, 15 s.
  const stats = byName.get('')!.rc!;
  t.equal(stats.virtualHosts[0]!.routes[0]!.action.kind === 'forward' && stats.virtualHosts[0]!.routes[0]!.action.timeoutMs, 15_000);
});

/** A table with one virtual host holding `routes`, and optional fields on the host and table. */
function table(routes: object[], vh: object = {}, rc: object = {}): object {
  return { name: 'rc', virtualHosts: [{ name: 'vh', domains: ['*'], routes, ...vh }], ...rc };
}

function fwd(extra: object = {}, routeExtra: object = {}): object {
  return { match: { prefix: '/x' }, route: { ...('weightedClusters' in extra ? {} : { cluster: 'c' }), ...extra }, ...routeExtra };
}

function firstRoute(json: object): RouteConfiguration['virtualHosts'][number]['routes'][number] {
  const { rc, issues } = importOne(json);
  if (rc === null) throw new Error(`not imported: ${issues.join('; ')}`);
  return rc.virtualHosts[0]!.routes[0]!;
}

t.test("Envoy's defaults for what is unset", async (t) => {
  const r = firstRoute(table([fwd({ retryPolicy: {} })]));
  const a = r.action.kind === 'forward' ? r.action : null;
  t.equal(a?.timeoutMs, 15_000, 'route timeout 15s');
  t.strictSame(a?.retry, { numRetries: 1, perTryTimeoutMs: 0, retryOn: [], retriableStatusCodes: [], retryRemoteLocalities: false }, 'num_retries 1, retry on nothing');
  const m = firstRoute(table([{ match: { prefix: '/', headers: [{ name: 'X-A' }] }, redirect: {} }]));
  t.strictSame(m.match.headers, [{ name: 'x-a', match: { kind: 'present' }, invert: false }], 'a header matcher without a condition: present');
  t.strictSame(m.action, { kind: 'redirect', status: 301, scheme: null, authority: null, port: null, derivePortFromScheme: false, path: null }, 'redirect: 301');
  const mirror = firstRoute(table([fwd({ requestMirrorPolicies: [{ cluster: 'm' }, { cluster: 'n', runtimeFraction: { defaultValue: { numerator: 5 } } }] })]));
  t.strictSame(mirror.action.kind === 'forward' && mirror.action.mirrors, [
    { cluster: 'm', percent: 100 },
    { cluster: 'n', percent: 5 },
  ], 'mirror: all without a fraction; the denominator defaults to HUNDRED');
  t.equal(firstRoute(table([fwd({ timeout: '0s' })])).action.kind === 'forward' && (firstRoute(table([fwd({ timeout: '0s' })])).action as { timeoutMs: number }).timeoutMs, 0, 'timeout 0s: none');
});

t.test('matches: every form istiod and Envoy write', async (t) => {
  const r = firstRoute(
    table([
      {
        match: {
          safeRegex: { regex: '(?i)/A.*' },
          headers: [
            { name: 'a', exactMatch: 'x' },
            { name: 'b', prefixMatch: 'p' },
            { name: 'c', suffixMatch: 's' },
            { name: 'd', containsMatch: 'm' },
            { name: 'e', safeRegexMatch: { regex: 'r+' } },
            { name: 'f', presentMatch: true, invertMatch: true },
            { name: 'g', presentMatch: false },
            { name: 'h', stringMatch: { contains: 'z' }, invertMatch: true, treatMissingHeaderAsEmpty: true },
          ],
          queryParameters: [
            { name: 'q', stringMatch: { exact: '' } },
            { name: 'p', presentMatch: true },
          ],
          dynamicMetadata: [
            {
              filter: 'envoy.filters.http.jwt_authn',
              path: [{ key: 'payload' }, { key: 'groups' }],
              value: { orMatch: { valueMatchers: [{ listMatch: { oneOf: { stringMatch: { exact: 'admin' } } } }, { stringMatch: { exact: 'admin' } }] } },
            },
            { filter: 'istio_authn', path: [{ key: 'request.auth.claims' }, { key: 'sub' }], value: { presentMatch: true }, invert: true },
          ],
        },
        directResponse: { status: 200 },
      },
    ]),
  );
  t.strictSame(r.match, {
    path: { match: { kind: 'regex', value: '/A.*' }, ignoreCase: true },
    headers: [
      { name: 'a', match: { kind: 'exact', value: 'x' }, invert: false },
      { name: 'b', match: { kind: 'prefix', value: 'p' }, invert: false },
      { name: 'c', match: { kind: 'suffix', value: 's' }, invert: false },
      { name: 'd', match: { kind: 'contains', value: 'm' }, invert: false },
      { name: 'e', match: { kind: 'regex', value: 'r+' }, invert: false },
      { name: 'f', match: { kind: 'present' }, invert: true },
      { name: 'g', match: { kind: 'present' }, invert: true },
      { name: 'h', match: { kind: 'contains', value: 'z' }, invert: true, missingAsEmpty: true },
    ],
    queryParams: [
      { name: 'q', match: { kind: 'exact', value: '' } },
      { name: 'p', match: { kind: 'present' } },
    ],
    claims: [
      { path: ['groups'], match: { kind: 'exact', value: 'admin' }, invert: false },
      { path: ['sub'], match: { kind: 'present' }, invert: true },
    ],
  });
  const sep = firstRoute(table([{ match: { pathSeparatedPrefix: '/api' }, route: { cluster: 'c' } }]));
  t.strictSame(sep.match.path.match, { kind: 'regex', value: '/api(/.*)?' }, 'pathSeparatedPrefix: the prefix alone or followed by /');
  const slash = firstRoute(table([{ match: { prefix: '/' }, route: { cluster: 'c', prefixRewrite: '/v2' } }]));
  t.strictSame(slash.match.path.match, { kind: 'prefix', value: '/' }, 'prefix / with a prefix rewrite keeps the prefix it replaces');
  const full = firstRoute(table([{ match: { prefix: '/', runtimeFraction: { defaultValue: { numerator: 100 } } }, route: { cluster: 'c' } }]));
  t.strictSame(full.match.path.match, { kind: 'any' }, 'a runtime fraction of 100% always holds');
});

t.test('header edits of the table, host and route fold in the order Envoy applies them', async (t) => {
  const h = (key: string, value: string, appendAction?: string): object => ({ header: { key, value }, ...(appendAction ? { appendAction } : {}) });
  const json = table(
    [{ ...fwd(), requestHeadersToAdd: [h('x-r', 'route', 'OVERWRITE_IF_EXISTS_OR_ADD'), h('x-v', 'route')], requestHeadersToRemove: ['x-gone'] }],
    { requestHeadersToAdd: [h('x-v', 'vhost', 'OVERWRITE_IF_EXISTS_OR_ADD'), { header: { key: 'x-old', value: '1' }, append: false }], requestHeadersToRemove: ['x-r'] },
    { requestHeadersToAdd: [h('x-t', 'table')], responseHeadersToRemove: ['server'] },
  );
  const r = firstRoute(json);
  t.strictSame(r.requestHeaders, {
    set: [
      ['x-v', 'vhost'],
      ['x-old', '1'],
    ],
    add: [['x-t', 'table']],
    remove: ['x-gone', 'x-r'],
  }, "the host's remove of x-r and set of x-v win over the route's edits of them");
  t.strictSame(r.responseHeaders, { set: [], add: [], remove: ['server'] });
  const specific = firstRoute({ ...json, mostSpecificHeaderMutationsWins: true });
  t.strictSame(specific.requestHeaders, {
    set: [
      ['x-v', 'vhost'],
      ['x-old', '1'],
      ['x-r', 'route'],
    ],
    add: [
      ['x-t', 'table'],
      ['x-v', 'route'],
    ],
    remove: ['x-r', 'x-gone'],
  }, 'most specific wins: the route is applied last');
});

t.test('origins: stable and unique per route for istiod input', async (t) => {
  const meta = (ns: string, name: string): object => ({ metadata: { filterMetadata: { istio: { config: `/apis/networking.istio.io/v1/namespaces/${ns}/virtual-service/${name}` } } } });
  const { rc } = importOne(
    table([
      fwd({}, { name: 'a', ...meta('ns', 'vs') }),
      fwd({}, meta('ns', 'vs')),
      fwd({}, meta('ns', 'vs')),
      fwd({}, { name: 'a', ...meta('ns', 'vs') }),
      fwd({}, meta('ns', 'other')),
      fwd({}, { name: 'default' }),
    ]),
  );
  t.strictSame(
    rc!.virtualHosts[0]!.routes.map((r) => r.origin),
    ['ns/vs#a', 'ns/vs#0', 'ns/vs#1', 'ns/vs#a~1', 'ns/other#0', ''],
  );
});

t.test('per-route filter configs: unwrapped, by filter name', async (t) => {
  const T = 'type.googleapis.com/';
  const r = firstRoute(
    table([
      fwd(
        {},
        {
          typedPerFilterConfig: {
            'envoy.filters.http.fault': { '@type': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`, abort: { httpStatus: 503, percentage: { numerator: 1 } } },
            'envoy.filters.http.cors': { '@type': `${T}envoy.config.route.v3.FilterConfig`, config: { '@type': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`, allowMethods: 'GET' } },
            'envoy.filters.http.ext_authz': {
              '@type': `${T}envoy.config.route.v3.FilterConfig`,
              isOptional: true,
              config: { '@type': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`, disabled: true },
            },
          },
        },
      ),
    ], {
      typedPerFilterConfig: { 'envoy.filters.http.cors': { '@type': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`, allowMethods: 'POST' } },
    }),
  );
  t.strictSame(r.filterConfigs, {
    'envoy.filters.http.cors': { allowMethods: 'GET' },
    'envoy.filters.http.fault': { abort: { httpStatus: 503, percentage: { numerator: 1 } } },
  }, "the route's config wins over the host's; an optional unknown one is skipped");
});

t.test('what Remora cannot honour: errors naming the field, warnings for tuning', async (t) => {
  const T = 'type.googleapis.com/';
  const cases: [string, object, string[]][] = [
    ['runtime fraction below 100%', table([{ match: { prefix: '/', runtimeFraction: { defaultValue: { numerator: 50 } } }, route: { cluster: 'c' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].match.runtimeFraction: matching a fraction of requests is not supported',
    ]],
    ['grpc match', table([{ match: { prefix: '/', grpc: {} }, route: { cluster: 'c' } }]), ['RouteConfiguration rc: virtualHosts[0].routes[0].match.grpc: not supported by Remora']],
    ['EXTERNAL_ONLY', table([fwd()], { requireTls: 'EXTERNAL_ONLY' }), [
      'RouteConfiguration rc: virtualHosts[0].requireTls: EXTERNAL_ONLY is not supported: Remora does not tell internal from external requests (use ALL)',
    ]],
    ['ignoreCase header', table([{ match: { prefix: '/', headers: [{ name: 'a', stringMatch: { exact: 'x', ignoreCase: true } }] }, route: { cluster: 'c' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].match.headers[0].stringMatch.ignoreCase: case-insensitive header, query parameter and claim matches are not supported',
    ]],
    ['range match', table([{ match: { prefix: '/', headers: [{ name: 'a', rangeMatch: { start: '1', end: '2' } }] }, route: { cluster: 'c' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].match.headers[0].rangeMatch: not supported by Remora',
    ]],
    ['other metadata', table([{ match: { prefix: '/', dynamicMetadata: [{ filter: 'x', path: [{ key: 'y' }], value: { presentMatch: true } }] }, route: { cluster: 'c' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].match.dynamicMetadata[0]: only conditions on JWT claims (istio_authn request.auth.claims, envoy.filters.http.jwt_authn payload) are supported',
    ]],
    ['idle timeout', table([fwd({ idleTimeout: '30s' })]), ['RouteConfiguration rc: virtualHosts[0].routes[0].route.idleTimeout: a per-route stream idle timeout is not supported']],
    ['auto host rewrite', table([fwd({ autoHostRewrite: true })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].route.autoHostRewrite: rewriting the Host to the upstream host name is not supported (use hostRewriteLiteral)',
    ]],
    ['cluster header', table([{ match: { prefix: '/' }, route: { clusterHeader: 'x-cluster' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].route.clusterHeader: not supported by Remora',
      'RouteConfiguration rc: virtualHosts[0].routes[0].route: a route action needs cluster or weightedClusters',
    ]],
    ['retry predicate', table([fwd({ retryPolicy: { retryHostPredicate: [{ name: 'envoy.retry_host_predicates.omit_canary_hosts' }] } })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].route.retryPolicy.retryHostPredicate[0]: retry host predicate envoy.retry_host_predicates.omit_canary_hosts is not supported (only envoy.retry_host_predicates.previous_hosts)',
    ]],
    ['redirect prefix rewrite', table([{ match: { prefix: '/a' }, redirect: { prefixRewrite: '/b' } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].redirect.prefixRewrite: a redirect that rewrites the matched prefix is not supported (use pathRedirect)',
    ]],
    ['header formatter', table([fwd({}, { requestHeadersToAdd: [{ header: { key: 'x-ip', value: '%DOWNSTREAM_REMOTE_ADDRESS%' } }] })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].requestHeadersToAdd[0].header.value: header value formatters (%…%) are not supported',
    ]],
    ['add if absent', table([fwd({}, { requestHeadersToAdd: [{ header: { key: 'x', value: '1' }, appendAction: 'ADD_IF_ABSENT' }] })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].requestHeadersToAdd[0].appendAction: ADD_IF_ABSENT is not supported (only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD)',
    ]],
    ['foreign TypedStruct', table([fwd({}, { typedPerFilterConfig: { 'envoy.filters.http.fault': { '@type': `${T}xds.type.v3.TypedStruct`, typeUrl: `${T}acme.Fault`, value: {} } } })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].typedPerFilterConfig.envoy.filters.http.fault: a TypedStruct of type.googleapis.com/acme.Fault is not a per-route config Remora knows for envoy.filters.http.fault',
    ]],
    ['unknown filter', table([fwd({}, { typedPerFilterConfig: { 'envoy.filters.http.ext_authz': { '@type': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`, disabled: true } } })]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].typedPerFilterConfig.envoy.filters.http.ext_authz: envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute is not a per-route config Remora knows for envoy.filters.http.ext_authz',
    ]],
    ['vhds', table([fwd()], {}, { vhds: { configSource: { ads: {} } } }), ['RouteConfiguration rc: vhds: not supported by Remora']],
  ];
  for (const [what, json, expected] of cases) {
    const { rc, issues } = importOne(json);
    t.equal(rc, null, `${what}: not imported`);
    t.same(issues, expected, what);
  }
  const warnings: [string, object, string[]][] = [
    ['validate clusters', table([fwd()], {}, { validateClusters: true }), ['warning: RouteConfiguration rc: validateClusters: Remora does not reject a table for an unknown cluster; routes to it answer 503 NC']],
    ['virtual clusters', table([fwd()], { virtualClusters: [{ name: 'v', headers: [{ name: ':path', exactMatch: '/' }] }] }), [
      'warning: RouteConfiguration rc: virtualHosts[0].virtualClusters: Remora keeps no virtual cluster statistics',
    ]],
    ['retry back-off', table([fwd({ retryPolicy: { retryBackOff: { baseInterval: '0.1s' } } })]), [
      'warning: RouteConfiguration rc: virtualHosts[0].routes[0].route.retryPolicy.retryBackOff: Remora retries without back-off',
    ]],
    ['optional unknown filter', table([fwd({}, { typedPerFilterConfig: { x: { '@type': `${T}envoy.config.route.v3.FilterConfig`, isOptional: true, config: { '@type': `${T}google.protobuf.Empty` } } } })]), [
      'warning: RouteConfiguration rc: virtualHosts[0].routes[0].typedPerFilterConfig.x: google.protobuf.Empty is not a per-route config Remora knows for x; the optional setting is ignored',
    ]],
  ];
  for (const [what, json, expected] of warnings) {
    const { rc, issues } = importOne(json);
    t.not(rc, null, `${what}: imported`);
    t.same(issues, expected, what);
  }
});

t.test("CONNECT: connect_matcher and the route's CONNECT upgrade config", async (t) => {
  const terminate = { upgradeConfigs: [{ upgradeType: 'CONNECT', connectConfig: {} }] };
  const r = firstRoute(table([{ match: { connectMatcher: {} }, route: { cluster: 'c', ...terminate } }]));
  t.strictSame(r.match.path, { match: { kind: 'connect' }, ignoreCase: false }, 'connect_matcher: CONNECT requests only');
  t.equal(r.action.kind === 'forward' && r.action.connect, 'terminate', 'connect_config: the proxy terminates CONNECT');
  const headers = firstRoute(table([{ match: { connectMatcher: {}, headers: [{ name: ':authority', stringMatch: { exact: 'echo:7' } }] }, route: { cluster: 'c', ...terminate } }]));
  t.strictSame(headers.match.headers, [{ name: ':authority', match: { kind: 'exact', value: 'echo:7' }, invert: false }], 'header conditions go with it');
  const disabled = firstRoute(table([fwd({ upgradeConfigs: [{ upgradeType: 'connect', enabled: false }] })]));
  t.equal(disabled.action.kind === 'forward' && disabled.action.connect, 'disabled', 'enabled: false refuses CONNECT on the route');
  const forward = firstRoute(table([{ match: { connectMatcher: {} }, route: { cluster: 'c', upgradeConfigs: [{ upgradeType: 'CONNECT' }] } }]));
  t.equal(forward.action.kind === 'forward' && forward.action.connect, 'forward', 'no connect_config: the CONNECT is forwarded upstream');
  const unset = firstRoute(table([{ match: { connectMatcher: {} }, route: { cluster: 'c' } }]));
  t.equal(unset.action.kind === 'forward' && 'connect' in unset.action, false, "no CONNECT config on the route: the connection manager's decides");
  const direct = firstRoute(table([{ match: { connectMatcher: {} }, directResponse: { status: 403 } }]));
  t.equal(direct.match.path.match.kind, 'connect', 'a connect_matcher route may answer directly');
  t.equal(firstRoute(table([fwd()])).action.kind === 'forward' && 'connect' in firstRoute(table([fwd()])).action, false, 'no upgrade config: nothing in the model');

  const errors: [string, object, string[]][] = [
    ['PROXY protocol', table([{ match: { connectMatcher: {} }, route: { cluster: 'c', upgradeConfigs: [{ upgradeType: 'CONNECT', connectConfig: { proxyProtocolConfig: { version: 'V2' } } }] } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].route.upgradeConfigs[0].connectConfig.proxyProtocolConfig: not supported by Remora',
    ]],
    ['POST tunnels', table([{ match: { connectMatcher: {} }, route: { cluster: 'c', upgradeConfigs: [{ upgradeType: 'CONNECT', connectConfig: { allowPost: true } }] } }]), [
      'RouteConfiguration rc: virtualHosts[0].routes[0].route.upgradeConfigs[0].connectConfig.allowPost: not supported by Remora',
    ]],
  ];
  for (const [what, json, expected] of errors) {
    const { rc, issues } = importOne(json);
    t.equal(rc, null, `${what}: not imported`);
    t.same(issues, expected, what);
  }

  const { rc } = importOne(
    table([
      { match: { connectMatcher: {} }, route: { cluster: 'c', ...terminate } },
      fwd({ upgradeConfigs: [{ upgradeType: 'CONNECT', enabled: false }] }),
      { match: { connectMatcher: {} }, route: { cluster: 'c', upgradeConfigs: [{ upgradeType: 'CONNECT' }] } },
      fwd({ upgradeConfigs: [{ upgradeType: 'websocket' }] }),
    ]),
  );
  roundTrip(t, { version: 'v', node: INGRESS, listeners: [], routeConfigs: [rc!], clusters: [] }, 'CONNECT routes');
});

t.test('redirects and direct responses: every field', async (t) => {
  const r = firstRoute(table([{ match: { path: '/a' }, redirect: { httpsRedirect: true, hostRedirect: 'h', portRedirect: 8443, pathRedirect: '/b', responseCode: 'PERMANENT_REDIRECT', stripQuery: true } }]));
  t.strictSame(r.action, { kind: 'redirect', status: 308, scheme: 'https', authority: 'h', port: 8443, derivePortFromScheme: false, path: '/b', stripQuery: true });
  const d = firstRoute(table([{ match: { path: '/a' }, directResponse: { status: 418, body: { inlineBytes: Buffer.from('tea').toString('base64') } } }]));
  t.strictSame(d.action, { kind: 'direct-response', status: 418, body: 'tea' });
  const w = firstRoute(table([fwd({ weightedClusters: { clusters: [{ name: 'a', weight: 30, hostRewriteLiteral: 'a.internal' }, { name: 'b', weight: 70 }] } })]));
  t.strictSame(w.action.kind === 'forward' && w.action.clusters, [
    { cluster: 'a', weight: 30, requestHeaders: { set: [['host', 'a.internal']], add: [], remove: [] }, responseHeaders: null },
    { cluster: 'b', weight: 70, requestHeaders: null, responseHeaders: null },
  ], "istiod's per-destination authority: the Host sent to that cluster");
});

t.test('a timeout longer than a Node.js timer holds is capped at 2^31 - 1 ms, not turned into 1 ms', async (t) => {
  const huge = '315576000000s';
  const { rc, issues } = importOne({
    name: 'r',
    virtualHosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c', timeout: huge, retryPolicy: { retryOn: '5xx', numRetries: 1, perTryTimeout: huge } } }] }],
  });
  t.same(issues, [], 'a valid Duration, as in Envoy');
  const action = rc!.virtualHosts[0]!.routes[0]!.action as { timeoutMs: number; retry: { perTryTimeoutMs: number } };
  t.equal(action.timeoutMs, 2_147_483_647);
  t.equal(action.retry.perTryTimeoutMs, 2_147_483_647);
});

t.test("route metadata: the rate limit actions' ROUTE_ENTRY source, read and written back", async (t) => {
  const json = table([
    fwd(
      {},
      {
        metadata: { filterMetadata: { 'acme.plans': { plan: 'gold' }, istio: { config: '/apis/networking.istio.io/v1/namespaces/default/virtual-service/vs' } } },
        route: { cluster: 'c', rateLimits: [{ actions: [{ metadata: { descriptorKey: 'plan', metadataKey: { key: 'acme.plans', path: [{ key: 'plan' }] }, source: 'ROUTE_ENTRY' } }] }] },
      },
    ),
  ]);
  const r = firstRoute(json);
  t.strictSame(r.metadata, { 'acme.plans': { plan: 'gold' } }, "the user's namespaces; istio's config reference becomes the origin");
  t.equal(r.origin, 'default/vs#0');
  const out = envoyResourcesFromModel({ version: 'v', node: SIDECAR, listeners: [], clusters: [], routeConfigs: [{ name: 'rc', virtualHosts: [{ name: 'vh', domains: ['*'], routes: [r], requireTls: false }], ignorePortInHostMatching: false }] }).routeConfigs[0]!;
  const back = canonical(out).virtualHosts![0]!.routes![0]!;
  t.strictSame(back.metadata?.filterMetadata?.['acme.plans'], { plan: 'gold' }, 'the user\'s metadata is written back');
  t.strictSame(back.metadata?.filterMetadata?.istio, { config: '/apis/networking.istio.io/v1/namespaces/default/virtual-service/vs' }, 'beside istiod\'s config reference');
  t.strictSame(firstRoute(out), r, 'and reads back as it was');
});
