// Istio's MeshConfig as Remora reads it: the fields it applies, Istio's defaults when they are
// absent, and wrong values as errors naming the field.
import t from 'tap';
import { translateIstio } from '@remora/config';
import { DEFAULT_PROXY_DEFAULTS, parseMeshConfig, parseProxyConfigAnnotation } from '../src/schema/mesh-config.ts';
import { briefIssue, cluster, load, PORTS, routeTable, SIDECAR } from './helpers/translate.ts';

const errors = (yaml: string): string[] => parseMeshConfig(yaml, 'mesh.yaml').issues.filter((i) => i.severity === 'error').map((i) => `${i.path}: ${i.message}`);

t.test('fields read, with Istio\'s defaults', async (t) => {
  const r = parseMeshConfig(
    `trustDomain: new-td
trustDomainAliases: [old-td]
enableAutoMtls: false
accessLogFile: /dev/stdout
accessLogEncoding: JSON
defaultHttpRetryPolicy:
  attempts: 4
  retryOn: gateway-error,connect-failure,503
  perTryTimeout: 2s
localityLbSetting:
  enabled: true
  failover:
  - from: us-east
    to: eu-west
defaultConfig:
  concurrency: 4
  terminationDrainDuration: 20s
  holdApplicationUntilProxyStarts: true
`,
    'mesh.yaml',
  );
  t.same(r.issues, [], 'concurrency is read and applied (the worker count at start): nothing to warn about');
  t.same(r.mesh?.trustDomainAliases, ['old-td']);
  t.equal(r.mesh?.enableAutoMtls, false);
  t.same(r.mesh?.accessLog, { file: '/dev/stdout', encoding: 'JSON', format: '' });
  t.same(r.mesh?.defaultHttpRetryPolicy, { attempts: 4, retryOn: 'gateway-error,connect-failure,503', perTryTimeout: '2s' });
  t.same(r.mesh?.localityLbSetting, { enabled: true, failover: [{ from: 'us-east', to: 'eu-west' }] });
  t.same(r.mesh?.defaultConfig, { concurrency: 4, drainDurationMs: 45_000, terminationDrainDurationMs: 20_000, holdApplicationUntilProxyStarts: true }, 'drainDuration: Istio\'s 45s');
  const empty = parseMeshConfig('defaultConfig: {}\n', 'mesh.yaml');
  t.same(empty.mesh?.defaultConfig, DEFAULT_PROXY_DEFAULTS, 'concurrency 2, drain 45s, termination drain 5s, no hold');
  t.equal(empty.mesh?.enableAutoMtls, undefined, 'absent: auto mTLS stays on');
});

t.test('wrong values are errors naming the field', async (t) => {
  t.same(errors('enableAutoMtls: "yes"\n'), ['enableAutoMtls: must be true or false, found "yes"']);
  t.same(errors('accessLogEncoding: XML\n'), ['accessLogEncoding: must be TEXT or JSON, found "XML"']);
  t.same(errors('trustDomainAliases: old-td\n'), ['trustDomainAliases: must be a list of strings, found "old-td"']);
  t.same(errors('defaultHttpRetryPolicy: {attempts: -1}\n'), ['defaultHttpRetryPolicy.attempts: must be a non-negative integer, found -1']);
  t.same(errors('defaultHttpRetryPolicy: {attempts: 2, retryOn: "5xx,sometimes"}\n'), ['defaultHttpRetryPolicy.retryOn: "sometimes" is not a retry condition (Envoy\'s x-envoy-retry-on, x-envoy-retry-grpc-on, or an HTTP status)']);
  t.same(errors('defaultHttpRetryPolicy: {perTryTimeout: soon}\n'), ['defaultHttpRetryPolicy.perTryTimeout: must be a duration such as "10s" or "200ms", found "soon"']);
  t.same(errors('localityLbSetting: {distribute: [{from: "a/*", to: {"a/*": 80, "b/*": 10}}]}\n'), ['localityLbSetting.distribute[0].to: weights must total 100, found 90']);
  t.same(errors('localityLbSetting: {failover: [{from: a, to: a}]}\n'), ['localityLbSetting.failover[0]: failover from and to must differ, both are "a"']);
  t.same(errors('defaultConfig: {concurrency: -2}\n'), ['defaultConfig.concurrency: must be a non-negative integer (0: all cores), found -2']);
  t.same(errors('defaultConfig: {drainDuration: 500ms}\n'), ['defaultConfig.drainDuration: must be at least 1s']);
  t.same(errors('defaultConfig: 3\n'), ['defaultConfig: must be a mapping, found 3']);
});

const MESH = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.20, labels: {app: reviews, security.istio.io/tlsMode: istio}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.21, labels: {app: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /own}}]
    retries: {attempts: 1}
    route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
---
`;

function translate(meshYaml: string | null) {
  const mesh = meshYaml === null ? undefined : parseMeshConfig(meshYaml, 'mesh.yaml').mesh!;
  const { config, issues } = translateIstio(load(MESH).resources, SIDECAR, PORTS, { dnsRefreshMs: 60_000, ...(mesh ? { mesh } : {}) });
  t.same(issues.map(briefIssue), []);
  return config;
}

t.test('defaultHttpRetryPolicy: routes without retries take it, as istiod gives them', async (t) => {
  const istio = translate(null);
  const reviewsDefault = routeTable(istio, '9080').virtualHosts.find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!.routes[0]!.action;
  t.match(reviewsDefault, { kind: 'forward', retry: { numRetries: 2, retriableStatusCodes: [503] } }, 'no MeshConfig: Istio\'s 2 retries');
  const config = translate('defaultHttpRetryPolicy: {attempts: 5, retryOn: "gateway-error", perTryTimeout: 3s}\n');
  const vhosts = routeTable(config, '9080').virtualHosts;
  const retryOf = (vh: string, i: number) => (vhosts.find((v) => v.name === vh)!.routes[i]!.action as { retry: unknown }).retry;
  t.match(retryOf('reviews.default.svc.cluster.local:9080', 0), { numRetries: 5, retryOn: ['gateway-error'], perTryTimeoutMs: 3000 }, 'a service\'s default route');
  t.match(retryOf('ratings.default.svc.cluster.local:9080', 0), { numRetries: 5, retryOn: ['gateway-error'] }, 'a VirtualService route without retries');
  t.match(retryOf('ratings.default.svc.cluster.local:9080', 1), { numRetries: 1 }, 'a route with its own retries keeps them');
  const off = translate('defaultHttpRetryPolicy: {attempts: 0}\n');
  t.equal((routeTable(off, '9080').virtualHosts.find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!.routes[0]!.action as { retry: unknown }).retry, null, 'attempts 0: no retries');
});

t.test('enableAutoMtls: false leaves clusters without a DestinationRule tls in plaintext', async (t) => {
  t.equal(cluster(translate(null), 'outbound|9080||reviews.default.svc.cluster.local').tls, null, 'default: auto mTLS decides (the exporter sees the tlsMode label)');
  t.match(cluster(translate('enableAutoMtls: false\n'), 'outbound|9080||reviews.default.svc.cluster.local').tls, { mode: 'DISABLE' });
});

t.test('localityLbSetting: the mesh-wide setting where a DestinationRule has none', async (t) => {
  const c = cluster(translate('localityLbSetting: {failover: [{from: us-east, to: eu-west}]}\n'), 'outbound|9080||ratings.default.svc.cluster.local');
  t.same(c.localityLb, { distribute: [], failover: [{ from: 'us-east', to: 'eu-west' }], failoverPriority: [] });
  const off = cluster(translate('localityLbSetting: {enabled: false}\n'), 'outbound|9080||ratings.default.svc.cluster.local');
  t.equal(off.localityLb, null, 'enabled: false turns it off mesh-wide');
  t.same(cluster(translate(null), 'outbound|9080||ratings.default.svc.cluster.local').localityLb, { distribute: [], failover: [], failoverPriority: [] }, 'default: on, no failover order');
});

const proxyConfig = (name: string, ns: string, spec: string) => `apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;

t.test('ProxyConfig: mesh defaultConfig, then the root namespace, the namespace and the selecting resource, as istiod merges them', async (t) => {
  const mesh = parseMeshConfig('defaultConfig: {concurrency: 3, terminationDrainDuration: 12s}\n', 'mesh.yaml').mesh!;
  const yaml =
    proxyConfig('mesh-wide', 'istio-system', '  concurrency: 0\n  environmentVariables: {A: root, B: root}') +
    proxyConfig('ns-wide', 'default', '  environmentVariables: {B: ns}') +
    proxyConfig('productpage', 'default', '  selector: {matchLabels: {app: productpage}}\n  concurrency: 1\n  image: {imageType: distroless}') +
    proxyConfig('other', 'default', '  selector: {matchLabels: {app: reviews}}\n  concurrency: 8');
  const r = translateIstio(load(yaml).resources, SIDECAR, PORTS, { dnsRefreshMs: 60_000, mesh });
  t.match(r.proxySettings, {
    concurrency: 1,
    terminationDrainDurationMs: 12_000,
    drainDurationMs: 45_000,
    environmentVariables: { A: 'root', B: 'ns' },
    imageType: 'distroless',
    from: ['istio-system/mesh-wide', 'default/ns-wide', 'default/productpage'],
  });
  t.same(r.issues.map(briefIssue), [
    'warning ProxyConfig istio-system/mesh-wide spec.environmentVariables: not applied: the proxy container\'s environment is set when the pod is injected, not by the running proxy',
    'warning ProxyConfig default/ns-wide spec.environmentVariables: not applied: the proxy container\'s environment is set when the pod is injected, not by the running proxy',
    'warning ProxyConfig default/productpage spec.image: not applied: the proxy image is chosen when the pod is injected, not by the running proxy',
  ], 'what a running proxy cannot apply is said; concurrency is applied');
  const none = translateIstio([], SIDECAR, PORTS, { dnsRefreshMs: 60_000 });
  t.match(none.proxySettings, { concurrency: 2, drainDurationMs: 45_000, terminationDrainDurationMs: 5_000, holdApplicationUntilProxyStarts: false, from: [] }, 'Istio\'s defaults');
});

t.test('ProxyConfig: wrong values are errors naming the field', async (t) => {
  t.throws(() => load(proxyConfig('bad', 'default', '  concurrency: -1')), /ProxyConfig default\/bad.*spec\.concurrency.*greater than or equal to 0/s);
  t.throws(() => load(proxyConfig('bad', 'default', '  concurency: 2')), /spec.*concurency/s, 'an unknown field');
  t.throws(() => load(proxyConfig('bad', 'default', '  environmentVariables: {A: 1}')), /environmentVariables/);
});

t.test('tracing providers, defaultProviders, enableTracing and defaultConfig.tracing are read; wrong types name the field', async (t) => {
  const r = parseMeshConfig(
    `enableTracing: false
defaultProviders: {tracing: [otel], accessLogging: [envoy]}
defaultConfig: {tracing: {sampling: 12.5, maxPathTagLength: 99, customTags: {dc: {literal: {value: east}}}}}
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, grpc: {timeout: 3s, initialMetadata: [{name: X-Tenant, value: a}]}}
- name: zip
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, enable64bitTraceId: true, path: /spans}
- name: envoy
  envoyFileAccessLog: {path: /dev/stdout}
`,
    'mesh.yaml',
  );
  t.same(r.issues, []);
  t.same(r.mesh?.telemetry, {
    tracingProviders: [
      { name: 'otel', kind: 'opentelemetry', service: 'otel.observability.svc.cluster.local', port: 4317, maxTagLength: 0, http: null, grpc: { timeoutMs: 3000, initialMetadata: { 'x-tenant': 'a' } } },
      { name: 'zip', kind: 'zipkin', service: 'zipkin.istio-system.svc.cluster.local', port: 9411, maxTagLength: 0, path: '/spans', enable64bitTraceId: true },
    ],
    accessLogProviders: [{ name: 'envoy', path: '/dev/stdout', format: '' }],
    defaultTracing: ['otel'],
    defaultAccessLogging: ['envoy'],
    defaultMetrics: null,
    enableTracing: false,
    sampling: 12.5,
    customTags: { dc: { kind: 'literal', value: 'east' } },
    maxPathTagLength: 99,
  });
  t.same(errors('extensionProviders: [{name: o, opentelemetry: {service: s, port: 99999}}]\n'), ['extensionProviders[0].opentelemetry.port: must be an integer from 0 to 65535, found 99999']);
  t.same(errors('defaultConfig: {tracing: {sampling: high}}\n'), ['defaultConfig.tracing.sampling: must be a percentage, found "high"']);
  t.same(errors('defaultProviders: {tracing: otel}\n'), ['defaultProviders.tracing: must be a list of strings, found "otel"']);
});

t.test('the proxy.istio.io/config annotation: the fields set, errors naming the annotation', async (t) => {
  const r = parseProxyConfigAnnotation('terminationDrainDuration: 30s\nholdApplicationUntilProxyStarts: true\n', 'annotations');
  t.same(r.settings, { terminationDrainDurationMs: 30_000, holdApplicationUntilProxyStarts: true }, 'only what it sets: the rest stays the merged settings\'');
  t.same(r.issues, []);
  const json = parseProxyConfigAnnotation('{"drainDuration": "10s"}', 'ISTIO_METAJSON_ANNOTATIONS');
  t.same(json.settings, { drainDurationMs: 10_000 }, 'JSON is YAML too');
  const bad = parseProxyConfigAnnotation('terminationDrainDuration: soon\n', 'annotations');
  t.equal(bad.settings, null);
  t.same(bad.issues.map((i) => [i.file, i.kind, i.resource, i.path]), [['annotations', 'ProxyConfig', 'proxy.istio.io/config', 'terminationDrainDuration']]);
  t.equal(parseProxyConfigAnnotation('- a list\n', 'annotations').settings, null, 'not a mapping: refused');
});

t.test('includeRequestBodyInCheck without maxRequestBytes is an error naming the field', async (t) => {
  const yaml = 'extensionProviders:\n- name: a\n  envoyExtAuthzHttp: { service: a.ns.svc.cluster.local, port: 80, includeRequestBodyInCheck: { allowPartialMessage: true } }\n';
  t.same(errors(yaml), ['extensionProviders[0].envoyExtAuthzHttp.includeRequestBodyInCheck.maxRequestBytes: must be greater than 0: how much of the body the check carries']);
});
