// Istio's Telemetry resource and the MeshConfig's tracing providers → each HTTP listener's
// tracing, as istiod writes HCM tracing: mesh-wide, namespace and workload scope, CLIENT and
// SERVER modes, the provider's collector cluster, sampling and tags.
import t from 'tap';
import { envoyFromJson, envoyResourcesFromModel } from '@remora/config/envoy';
import { ListenerSchema } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import { ISTIO_JSON_ACCESS_LOG_FORMAT, ISTIO_TEXT_ACCESS_LOG_FORMAT } from '../src/access-log-format.ts';
import { proxyConfigFromEnvoy } from '../src/envoy/to-model.ts';
import type { HttpTracing, Listener } from '../src/model/listener.ts';
import type { ProxyNode } from '../src/model/node.ts';
import { parseMeshConfig, type MeshConfig } from '../src/schema/mesh-config.ts';
import { translateIstio } from '../src/translate/istio.ts';
import { briefIssue, INGRESS, load, PORTS, SIDECAR } from './helpers/translate.ts';

const MESH = `
defaultConfig:
  tracing:
    sampling: 10
extensionProviders:
- name: otel-tracing
  opentelemetry:
    port: 4317
    service: opentelemetry-collector.observability.svc.cluster.local
    grpc:
      initialMetadata: [{name: x-tenant, value: bookinfo}]
- name: otel-http
  opentelemetry:
    port: 4318
    service: observability/opentelemetry-collector.observability.svc.cluster.local
    http: {path: /v1/traces, timeout: 2s, headers: [{name: authorization, value: token}]}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: ext-authz
  envoyExtAuthzHttp: {service: authz.default.svc.cluster.local, port: 8000}
`;

const SERVICES = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.10, labels: {app: productpage, version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: otel, namespace: observability}
spec:
  hosts: [opentelemetry-collector.observability.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 4317, name: grpc-otlp, protocol: GRPC}, {number: 4318, name: http-otlp, protocol: HTTP}]
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zipkin, namespace: istio-system}
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9411, name: http-query, protocol: HTTP}]
  endpoints: [{address: 10.0.9.2}]
`;

function mesh(yaml = MESH): MeshConfig {
  const got = parseMeshConfig(yaml, 'mesh.yaml');
  if (got.mesh === null) throw new Error(got.issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  return got.mesh;
}

function run(yaml: string, node: ProxyNode = SIDECAR, m: MeshConfig = mesh()): { listeners: Listener[]; brief: string[] } {
  const { resources } = load(SERVICES + '---\n' + yaml);
  const got = translateIstio(resources, node, { ...PORTS, appPort: 9080 }, { dnsRefreshMs: 60_000, mesh: m });
  return { listeners: [...got.config.listeners], brief: got.issues.map(briefIssue) };
}

/** Listener name → its tracing's sampling (null: not traced). */
function sampling(ls: readonly Listener[]): Record<string, number | null> {
  return Object.fromEntries(ls.map((l) => [l.name, l.tracing?.randomSamplingPercent ?? null]));
}

const telemetry = (name: string, namespace: string, spec: string): string => `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ${name}, namespace: ${namespace}}
spec:
${spec}
`;

const MESH_DEFAULT = telemetry('mesh-default', 'istio-system', `  tracing:
  - providers: [{name: otel-tracing}]
    randomSamplingPercentage: 100`);

t.test("a mesh-wide Telemetry traces every HTTP listener to the provider's OTLP/gRPC cluster, as istiod writes it", async (t) => {
  const { listeners, brief } = run(MESH_DEFAULT);
  t.same(brief, []);
  const http = listeners.filter((l) => l.tcpProxy === undefined);
  t.ok(http.length >= 3, 'outbound and inbound HTTP listeners');
  for (const l of listeners) {
    if (l.tcpProxy !== undefined) t.equal(l.tracing, undefined, `${l.name}: TCP, not traced`);
  }
  const out = listeners.find((l) => l.name === '0.0.0.0_9080')!;
  const want: HttpTracing = {
    provider: {
      kind: 'opentelemetry',
      cluster: 'outbound|4317||opentelemetry-collector.observability.svc.cluster.local',
      authority: 'opentelemetry-collector.observability.svc.cluster.local',
      transport: 'grpc',
      path: '',
      serviceName: 'productpage.default',
      timeoutMs: null,
      headers: { 'x-tenant': 'bookinfo' },
    },
    randomSamplingPercent: 100,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: [
      { tag: 'istio.authorization.dry_run.allow_policy.name', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_allow_shadow_effective_policy_id', defaultValue: '' },
      { tag: 'istio.authorization.dry_run.allow_policy.result', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_allow_shadow_engine_result', defaultValue: '' },
      { tag: 'istio.authorization.dry_run.deny_policy.name', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_deny_shadow_effective_policy_id', defaultValue: '' },
      { tag: 'istio.authorization.dry_run.deny_policy.result', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_deny_shadow_engine_result', defaultValue: '' },
      { tag: 'istio.canonical_revision', kind: 'literal', value: 'latest' },
      { tag: 'istio.canonical_service', kind: 'literal', value: 'unknown' },
      { tag: 'istio.cluster_id', kind: 'literal', value: 'unknown' },
      { tag: 'istio.mesh_id', kind: 'literal', value: 'unknown' },
      { tag: 'istio.namespace', kind: 'literal', value: 'default' },
    ],
    spawnUpstreamSpan: false,
    maxPathTagLength: 256,
  };
  t.same(out.tracing, want);
  t.same(listeners.find((l) => l.direction === 'inbound' && l.tcpProxy === undefined)?.tracing, want, 'the inbound side: the same (SERVER) spec');
});

t.test('precedence: workload selector over namespace over root; a selector that does not match is not applied', async (t) => {
  const ns = telemetry('ns', 'default', `  tracing:
  - randomSamplingPercentage: 50`);
  const wl = telemetry('productpage', 'default', `  selector: {matchLabels: {app: productpage}}
  tracing:
  - randomSamplingPercentage: 0`);
  const other = telemetry('reviews', 'default', `  selector: {matchLabels: {app: reviews}}
  tracing:
  - randomSamplingPercentage: 77`);
  const elsewhere = telemetry('other-ns', 'bar', `  tracing:
  - randomSamplingPercentage: 33`);
  const pick = (yaml: string) => [...new Set(Object.values(sampling(run(yaml).listeners.filter((l) => l.tcpProxy === undefined))))];
  t.same(pick(MESH_DEFAULT), [100], 'root only');
  t.same(pick(MESH_DEFAULT + ns), [50], 'the namespace overrides the root, keeping its provider');
  t.same(pick(MESH_DEFAULT + ns + wl), [0], 'the workload overrides the namespace');
  t.same(pick(MESH_DEFAULT + ns + other + elsewhere), [50], "another workload's and another namespace's are not applied");
});

t.test('match.mode: SERVER or CLIENT only; disableSpanReporting turns a side off', async (t) => {
  const serverOff = telemetry('ns', 'default', `  tracing:
  - match: {mode: SERVER}
    disableSpanReporting: true
  - match: {mode: CLIENT}
    randomSamplingPercentage: 25`);
  const { listeners } = run(MESH_DEFAULT + serverOff);
  for (const l of listeners.filter((l) => l.tcpProxy === undefined)) {
    t.equal(l.tracing?.randomSamplingPercent ?? null, l.direction === 'inbound' ? null : 25, `${l.name} (${l.direction})`);
  }
});

t.test('defaultProviders.tracing with no Telemetry: the mesh sampling (defaultConfig.tracing.sampling), else 1%', async (t) => {
  const withDefault = mesh(MESH + 'defaultProviders: {tracing: [zipkin]}\n');
  const got = run('', SIDECAR, withDefault).listeners.find((l) => l.name === '0.0.0.0_9080')!;
  t.equal(got.tracing?.randomSamplingPercent, 10);
  t.same(got.tracing?.provider, { kind: 'zipkin', cluster: 'outbound|9411||zipkin.istio-system.svc.cluster.local', authority: 'zipkin.istio-system.svc.cluster.local', path: '/api/v2/spans', traceId128Bit: true, sharedSpanContext: false });
  const plain = mesh(MESH.replace(/defaultConfig:\n  tracing:\n    sampling: 10\n/, '') + 'defaultProviders: {tracing: [zipkin]}\n');
  t.equal(run('', SIDECAR, plain).listeners.find((l) => l.name === '0.0.0.0_9080')!.tracing?.randomSamplingPercent, 1, "istiod's default 1%");
  t.same(sampling(run('').listeners.filter((l) => l.tcpProxy === undefined)), Object.fromEntries(run('').listeners.filter((l) => l.tcpProxy === undefined).map((l) => [l.name, null])), 'no Telemetry, no default provider: not traced');
});

t.test('a gateway spawns upstream spans; OTLP/HTTP path, timeout, headers; custom tags replace the mesh ones', async (t) => {
  const gw = `---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
` + telemetry('mesh-default', 'istio-system', `  tracing:
  - providers: [{name: otel-http}]
    customTags:
      cluster: {literal: {value: east}}
      pod: {environment: {name: POD_NAME, defaultValue: unknown}}
      user: {header: {name: X-User}}`);
  const { listeners, brief } = run(gw, INGRESS);
  t.same(brief, []);
  const tr = listeners.find((l) => l.name === '0.0.0.0_8080')?.tracing;
  t.equal(tr?.spawnUpstreamSpan, true);
  t.equal(tr?.randomSamplingPercent, 10);
  t.same(tr?.provider, { kind: 'opentelemetry', cluster: 'outbound|4318||opentelemetry-collector.observability.svc.cluster.local', authority: 'opentelemetry-collector.observability.svc.cluster.local', transport: 'http', path: '/v1/traces', serviceName: 'istio-ingressgateway.istio-system', timeoutMs: 2000, headers: { authorization: 'token' } });
  t.same(tr?.customTags.filter((c) => !c.tag.startsWith('istio.')), [
    { tag: 'cluster', kind: 'literal', value: 'east' },
    { tag: 'pod', kind: 'environment', name: 'POD_NAME', defaultValue: 'unknown' },
    { tag: 'user', kind: 'requestHeader', name: 'x-user', defaultValue: '' },
  ]);
});

t.test('a provider that is unknown, not a tracer, or whose service is not in the registry: a warning naming it, not traced', async (t) => {
  const named = (p: string) => telemetry('mesh-default', 'istio-system', `  tracing:
  - providers: [{name: ${p}}]`);
  const missing = run(named('nope'));
  t.same(missing.brief, ['warning Telemetry istio-system/mesh-default spec.tracing[0].providers[0].name: tracing provider nope is not among the MeshConfig\'s extensionProviders: not traced']);
  t.ok(missing.listeners.every((l) => l.tracing === undefined));
  t.match(run(named('ext-authz')).brief, [/provider ext-authz does not support tracing/]);
  const noService = mesh(MESH + `- name: lost\n  zipkin: {service: zipkin.elsewhere.svc.cluster.local, port: 9411}\n`);
  const lost = run(named('lost'), SIDECAR, noService);
  t.match(lost.brief, [/could not find cluster for tracing provider lost: could not find service zipkin.elsewhere.svc.cluster.local in Istio service registry/]);
  t.ok(lost.listeners.every((l) => l.tracing === undefined));
});

t.test('schema and checks: Telemetry v1 and v1alpha1 load; sampling outside 0–100 is refused with its path', async (t) => {
  t.doesNotThrow(() => load(telemetry('a', 'default', '  tracing: [{randomSamplingPercentage: 5}]').replace('telemetry.istio.io/v1', 'telemetry.istio.io/v1alpha1')));
  t.throws(() => load(telemetry('a', 'default', '  tracing: [{randomSamplingPercentage: 101}]')), /spec\.tracing\[0\]\.randomSamplingPercentage.*range/);
  t.throws(() => load(telemetry('a', 'default', '  tracing: [{samplingRate: 5}]')), /samplingRate/);
});

t.test('accessLogging: providers by name, filter, disabled, match.mode; the workload over the namespace over the root', async (t) => {
  const m = mesh(MESH + `- name: errors-log
  envoyFileAccessLog:
    path: /var/log/errors.log
    logFormat: {text: "%RESPONSE_CODE%"}
- name: json-log
  envoyFileAccessLog:
    path: /var/log/json.log
    logFormat: {labels: {code: "%RESPONSE_CODE%"}}
accessLogFile: /dev/stdout
accessLogEncoding: JSON
`);
  const logs = (ls: readonly Listener[]) => Object.fromEntries(ls.map((l) => [l.name, l.accessLog ?? null]));
  const meshJson = [{ path: '/dev/stdout', format: { json: ISTIO_JSON_ACCESS_LOG_FORMAT } }];
  t.same(new Set(Object.values(logs(run('', SIDECAR, m).listeners)).map((v) => JSON.stringify(v))), new Set([JSON.stringify(meshJson)]), 'no Telemetry logging: accessLogFile');

  const root = telemetry('mesh-default', 'istio-system', `  accessLogging:
  - providers: [{name: errors-log}]
    filter: {expression: "response.code >= 400"}`);
  const r1 = run(root, SIDECAR, m);
  t.same(r1.brief, []);
  t.same(logs(r1.listeners)['virtualInbound'], [{ path: '/var/log/errors.log', format: { text: '%RESPONSE_CODE%\n' }, filter: 'response.code >= 400' }], 'the provider, a newline added, the filter');

  const ns = telemetry('ns', 'default', `  accessLogging:
  - providers: [{name: envoy}, {name: json-log}]
    match: {mode: SERVER}`);
  const r2 = logs(run(root + ns, SIDECAR, m).listeners);
  t.same(r2['virtualInbound'], [meshJson[0], { path: '/var/log/json.log', format: { json: { code: '%RESPONSE_CODE%' } } }], 'SERVER: the namespace names its providers (envoy formatted as the MeshConfig says), sorted by name');
  t.same(r2['0.0.0.0_9080'], r1.listeners.find((l) => l.name === '0.0.0.0_9080')?.accessLog, 'CLIENT: the namespace names none for this side, the root\'s stays');

  const wl = telemetry('wl', 'default', `  selector: {matchLabels: {app: productpage}}
  accessLogging:
  - disabled: true
    match: {mode: SERVER}`);
  const r3 = logs(run(root + ns + wl, SIDECAR, m).listeners);
  t.same(r3['virtualInbound'], [], 'the workload disables its parent\'s providers on the SERVER side');

  const bad = run(telemetry('bad', 'default', `  accessLogging:
  - providers: [{name: nope}, {name: otel-tracing}]
  - providers: [{name: envoy}]
    filter: {expression: "response.code >="}`), SIDECAR, m);
  t.ok(bad.brief.includes('warning Telemetry default/bad spec.accessLogging: access log provider nope is not among the MeshConfig\'s extensionProviders: not logged'), bad.brief.join('\n'));
  t.ok(bad.brief.includes('warning Telemetry default/bad spec.accessLogging: provider otel-tracing does not write access logs (only envoyFileAccessLog providers are applied)'));
  t.ok(bad.brief.some((b) => b.startsWith('error Telemetry default/bad spec.accessLogging[1].filter.expression: invalid CEL expression "response.code >="')), bad.brief.join('\n'));

  const defaults = mesh(MESH + 'defaultProviders: {accessLogging: [envoy]}\n');
  t.same(logs(run('', SIDECAR, defaults).listeners)['virtualInbound'], [{ path: '/dev/stdout', format: { text: ISTIO_TEXT_ACCESS_LOG_FORMAT } }], 'defaultProviders.accessLogging with no Telemetry');
});

t.test("metrics: overrides by metric and mode, tags removed and upserted, as istiod's istio.stats config; precedence; errors name the field", async (t) => {
  const stats = (ls: readonly Listener[]) => Object.fromEntries(ls.map((l) => [l.name, l.istioStats ?? null]));
  t.same(new Set(Object.values(stats(run('').listeners))), new Set([null]), 'no Telemetry metrics: the default reporting');
  const ns = telemetry('ns', 'default', `  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 30s
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        response_code: {operation: REMOVE}
        request_host: {value: request.host}
    - match: {customMetric: my_metric}
      disabled: true`);
  const r = run(ns);
  t.same(r.brief, ["warning Telemetry default/ns spec.metrics[0].overrides[2].match.customMetric: custom metric my_metric is not applied: only Istio's standard metrics are reported"]);
  const s = stats(r.listeners);
  t.same(s['0.0.0.0_9080'], {
    disableHostHeaderFallback: false,
    tcpReportingDurationMs: 30_000,
    metrics: [{ name: 'requests_total', dimensions: { request_host: 'request.host' }, tagsToRemove: ['response_code'], drop: true }],
  }, 'CLIENT (outbound): dropped, with the tag edits istiod writes all the same');
  t.same(s['virtualInbound'], {
    disableHostHeaderFallback: true,
    tcpReportingDurationMs: 30_000,
    metrics: [{ name: 'requests_total', dimensions: { request_host: 'request.host' }, tagsToRemove: ['response_code'], drop: false }],
  }, 'SERVER (inbound): kept, its tags edited');

  const all = run(telemetry('root', 'istio-system', '  metrics:\n  - overrides: [{disabled: true, match: {mode: SERVER}}]') + telemetry('wl', 'default', `  selector: {matchLabels: {app: productpage}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION, mode: CLIENT}
      tagOverrides: {user: {value: "request.headers['x-user']"}}`));
  t.same(all.brief, []);
  const sa = stats(all.listeners);
  t.ok(sa['virtualInbound']?.metrics.length === 10 && sa['virtualInbound'].metrics.every((m) => m.drop), 'ALL_METRICS disabled on SERVER: every metric dropped there');
  t.same(sa['0.0.0.0_9080']?.metrics, [{ name: 'request_duration_milliseconds', dimensions: { user: "request.headers['x-user']" }, tagsToRemove: [], drop: false }], "the workload's override on CLIENT; the root's SERVER disable stays");

  const bad = run(telemetry('bad', 'default', `  metrics:
  - overrides:
    - tagOverrides: {x: {value: "request.host =="}}`));
  t.ok(bad.brief.some((b) => b.startsWith('error Telemetry default/bad spec.metrics[0].overrides[0].tagOverrides.x.value: invalid CEL expression')), bad.brief.join('\n'));
  t.same(run(telemetry('other', 'bar', '  metrics: [{overrides: [{disabled: true}]}]')).brief, [], 'one that does not apply to this proxy is not mentioned');
});

t.test('metrics round-trip through Envoy as the istio.stats filter (HTTP and TCP chains)', async (t) => {
  const config = translateIstio(load(SERVICES + '---\n' + telemetry('m', 'istio-system', `  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
    - match: {metric: TCP_SENT_BYTES}
      tagOverrides: {response_flags: {operation: REMOVE}, sni: {value: connection.requested_server_name}}`)).resources, SIDECAR, { ...PORTS, appPort: 9080 }, { dnsRefreshMs: 60_000, mesh: mesh() }).config;
  t.ok(config.listeners.every((l) => l.istioStats !== undefined), 'every listener has the config');
  const envoy = envoyResourcesFromModel(config);
  for (const l of envoy.listeners) t.doesNotThrow(() => envoyFromJson(ListenerSchema, l as never), `${l.name} reads as Envoy's Listener`);
  const text = JSON.stringify(envoy.listeners);
  t.match(text, /"name":"istio.stats","typedConfig":\{"@type":"type.googleapis.com\/udpa.type.v1.TypedStruct","typeUrl":"type.googleapis.com\/stats.PluginConfig"/);
  const back = proxyConfigFromEnvoy(envoy, config.node, config.version, false);
  t.same(back.issues.filter((i) => i.severity === 'error'), []);
  const byName = (ls: readonly Listener[]) => Object.fromEntries(ls.map((l) => [l.name, l.istioStats]));
  t.same(byName(back.config.listeners), byName(config.listeners));
});

t.test('accessLogging round-trips through Envoy: the CEL filter and a disabled log', async (t) => {
  const m = mesh(MESH + 'accessLogFile: /dev/stdout\n');
  const out = translateIstio(load(SERVICES + '---\n' + telemetry('f', 'istio-system', `  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "request.headers['x-user'] == 'bob'"}
    match: {mode: CLIENT}
  - providers: [{name: envoy}]
    disabled: true
    match: {mode: SERVER}`)).resources, SIDECAR, { ...PORTS, appPort: 9080 }, { dnsRefreshMs: 60_000, mesh: m });
  const config = out.config;
  t.same(config.listeners.find((l) => l.name === 'virtualInbound')?.accessLog, []);
  t.equal(config.listeners.find((l) => l.name === '0.0.0.0_9080')?.accessLog?.[0]?.filter, "request.headers['x-user'] == 'bob'");
  const envoy = envoyResourcesFromModel(config);
  for (const l of envoy.listeners) t.doesNotThrow(() => envoyFromJson(ListenerSchema, l as never), `${l.name} reads as Envoy's Listener (the CEL filter's type is known)`);
  const back = proxyConfigFromEnvoy(envoy, config.node, config.version, false);
  const byName = (ls: readonly Listener[]) => Object.fromEntries(ls.map((l) => [l.name, l.accessLog]));
  t.same(byName(back.config.listeners), byName(config.listeners));
});