// Envoy Listeners read back into the runtime's listener model: what the exporter writes for
// every mesh the translator tests translate comes back equal, istiod's listeners import as
// far as the model expresses them (and are refused, naming the field, where it does not), and
// each of Envoy's defaults and each error or warning is as documented.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JsonValue } from '@bufbuild/protobuf';
import t from 'tap';
import type { HttpTracing, Listener, ProxyConfig, ProxyNode } from '@remora/config';
import { envoyFromJson, envoyToJson } from '../src/envoy/codec.ts';
import { envoyResourcesFromModel, HTTP_FILTER_TYPES, type SecretRef } from '../src/envoy/from-model.ts';
import { envoyMessageType } from '../src/envoy/registry.ts';
import { ListenerSchema } from '../src/envoy/gen/envoy/config/listener/v3/listener_pb.ts';
import type { ListenerJson } from '../src/envoy/gen/envoy/config/listener/v3/listener_pb.ts';
import { formatImportIssue, ImportContext } from '../src/envoy/import-context.ts';
import { listenersFromEnvoy } from '../src/envoy/to-model-listeners.ts';
import { GOLDENS_DIR, GOLDENS_MISSING, notContainedIn, readGolden } from './helpers/envoy.ts';
import { BOOKINFO_DIR, BOOKINFO_MISSING, BOOKINFO_SERVICES, CHAIN_TAIL, INGRESS, ISTIO_ENVOY_HCM, recordTranslations, REPO_ROOT, SIDECAR, translate, type Translated } from './helpers/translate.ts';
import { captureMesh } from './helpers/capture-mesh.ts';

const ISTIO_TAGS: HttpTracing['customTags'] = [
  { tag: 'istio.canonical_service', kind: 'literal', value: 'productpage' },
  { tag: 'istio.mesh_id', kind: 'literal', value: 'mesh1' },
  { tag: 'istio.authorization.dry_run.allow_policy.name', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_allow_shadow_effective_policy_id', defaultValue: '' },
  { tag: 'tenant', kind: 'requestHeader', name: 'x-tenant', defaultValue: 'none' },
  { tag: 'pod', kind: 'environment', name: 'POD_NAME', defaultValue: '' },
];

/** One tracing setting per provider kind and transport, with every field away from its default somewhere. */
const TRACINGS: readonly HttpTracing[] = [
  {
    provider: { kind: 'opentelemetry', cluster: 'outbound|4318||otel.istio-system.svc.cluster.local', authority: 'otel.istio-system.svc.cluster.local', transport: 'http', path: '/v1/traces', serviceName: 'productpage.default', timeoutMs: 2000, headers: { 'x-tenant': 'a' } },
    randomSamplingPercent: 1,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: ISTIO_TAGS,
    spawnUpstreamSpan: true,
    maxPathTagLength: 256,
  },
  {
    provider: { kind: 'opentelemetry', cluster: 'outbound|4317||otel.istio-system.svc.cluster.local', authority: 'otel.istio-system.svc.cluster.local', transport: 'grpc', path: '', serviceName: 'reviews.default', timeoutMs: null, headers: {} },
    randomSamplingPercent: 12.5,
    clientSamplingPercent: 50,
    overallSamplingPercent: 90,
    customTags: [],
    spawnUpstreamSpan: false,
    maxPathTagLength: 64,
  },
  {
    provider: { kind: 'zipkin', cluster: 'outbound|9411||zipkin.istio-system.svc.cluster.local', authority: 'zipkin.istio-system.svc.cluster.local:9411', path: '/api/v2/spans', traceId128Bit: true, sharedSpanContext: false },
    randomSamplingPercent: 0,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: ISTIO_TAGS.slice(0, 2),
    spawnUpstreamSpan: false,
    maxPathTagLength: 256,
  },
];

/** Canonical proto3 JSON, as an xDS stream delivers it. */
function canonical(l: object): ListenerJson {
  return envoyToJson(ListenerSchema, envoyFromJson(ListenerSchema, l as JsonValue)) as ListenerJson;
}

/** Plain data: what a deep comparison should see (no undefined-valued keys). */
function plain<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** JSON with keys sorted: equal for equal data whatever order the keys were written in. */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stable(o[k])}`)
    .join(',')}}`;
}

function importListeners(listeners: readonly object[], node: ProxyNode, secrets: Iterable<SecretRef> = []) {
  const ctx = new ImportContext(secrets);
  const out = listenersFromEnvoy(listeners.map(canonical), node, ctx);
  return { ...out, issues: ctx.issues.map(formatImportIssue), ctx };
}

/** The value at a path `notContainedIn` names (`[0].tls.servers[1].hosts`). */
function atPath(v: unknown, path: string): unknown {
  for (const m of path.matchAll(/\[(\d+)\]|\.([^.[]+)/g)) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[m[1] ?? m[2]!];
  }
  return v;
}

function roundTrip(config: ProxyConfig): { listeners: Listener[]; issues: string[] } {
  const res = envoyResourcesFromModel(config);
  const got = importListeners(res.listeners, config.node, res.secrets);
  return { listeners: got.listeners.map(canonicalFilters), issues: got.issues };
}

/** A filter config in Envoy's form as the codec prints it (`rules: {policies: {}}` is `rules: {}`): same message, same JSON. */
function canonicalFilters(l: Listener): Listener {
  const httpFilters = l.httpFilters.map((f) => {
    const typeUrl = HTTP_FILTER_TYPES[f.name];
    const schema = typeUrl === undefined ? undefined : envoyMessageType(typeUrl);
    if (schema === undefined) return f;
    try {
      return { ...f, config: envoyToJson(schema, envoyFromJson(schema, f.config as JsonValue)) };
    } catch {
      return f;
    }
  });
  return { ...l, httpFilters };
}

/**
 * The model as Envoy's form can hold it: a chain ends with the router (the exporter adds it
 * to a chain that lacks it; the runtime routes either way), and a gateway listener whose TLS
 * servers all pass through has no HTTP connection manager, so no HTTP settings (the
 * translator's are never used).
 */
function expressible(l: Listener): Listener {
  const passthroughOnly = l.tls?.kind === 'gateway' && l.tls.servers.every((s) => s.mode === 'PASSTHROUGH');
  if (passthroughOnly) {
    const { connectionManager: _, ...rest } = l;
    return { ...rest, httpFilters: [] };
  }
  if (l.tcpProxy !== undefined || l.httpFilters[l.httpFilters.length - 1]?.name === 'envoy.filters.http.router') return canonicalFilters(l);
  return canonicalFilters({ ...l, httpFilters: [...l.httpFilters, { name: 'envoy.filters.http.router', config: {} }] });
}

// ---- 1. round trip: import(export(x)) equals x for every translated mesh ----

const recorded: Translated[] = [];
recordTranslations((x) => recorded.push(x));
const TRANSLATOR_TESTS = readdirSync(import.meta.dirname).filter((f) => /^translate-.*\.test\.ts$/.test(f) || f === 'envoy-from-model.test.ts');
for (const file of TRANSLATOR_TESTS) await import(`./${file}`);

const ISTIO_MUTUAL_GATEWAY = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mesh-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls-mesh, protocol: HTTPS}
    hosts: ["*.mesh.example.com"]
    tls:
      mode: ISTIO_MUTUAL
      subjectAltNames: [spiffe://cluster.local/ns/default/sa/client]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]
`;

t.test('round trip: every mesh the translator tests translate reads back equal', async (t) => {
  // The translator tests' own subtests run first (queued above); their translations are recorded.
  recordTranslations(null);
  const meshes: { name: string; config: ProxyConfig }[] = recorded.map((r, i) => ({ name: `translator test #${i}`, config: r.config }));
  // Istio's bookinfo samples (when the shared corpus is there), each over the services, for a sidecar and the ingress gateway.
  if (!existsSync(BOOKINFO_DIR)) t.comment(BOOKINFO_MISSING);
  for (const file of existsSync(BOOKINFO_DIR) ? readdirSync(BOOKINFO_DIR).filter((f) => f.endsWith('.yaml')) : []) {
    const text = readFileSync(join(BOOKINFO_DIR, file), 'utf8');
    for (const node of [SIDECAR, INGRESS]) {
      try {
        meshes.push({ name: `bookinfo ${file} (${node.kind})`, config: translate([BOOKINFO_SERVICES, text], node).config });
      } catch {
        // A sample the schemas refuse is the translator tests' concern.
      }
    }
  }
  const coffee = join(REPO_ROOT, 'examples/coffee-shop/mesh');
  const coffeeYaml = readdirSync(coffee)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => readFileSync(join(coffee, f), 'utf8'));
  for (const node of [SIDECAR, INGRESS]) meshes.push({ name: `coffee-shop (${node.kind})`, config: translate(coffeeYaml, node).config });
  // A gateway server with Istio mTLS, SAN and TLS parameters: none of the translator tests has one.
  meshes.push({ name: 'ISTIO_MUTUAL gateway server', config: translate(ISTIO_MUTUAL_GATEWAY, INGRESS).config });
  // A captured sidecar with the model's capture fields (built by hand: istiod's shapes of each).
  meshes.push({ name: 'captured sidecar (ALLOW_ANY)', config: captureMesh() }, { name: 'captured sidecar (REGISTRY_ONLY)', config: captureMesh(true) });
  // The translator's older capture beside real per-port listeners: no port listener is written twice.
  const older = meshes.find((m) => m.config.listeners.some((l) => l.routeConfigsByPort !== undefined))!;
  const withUnbound = { ...older.config, listeners: [...older.config.listeners, ...captureMesh().listeners.filter((l) => l.name === '0.0.0.0_9080')] };
  meshes.push({ name: `${older.name} with an unbound 0.0.0.0_9080`, config: withUnbound });

  // Tracing on every HTTP listener, each provider kind (the translator tests trace nothing).
  const traced = (config: ProxyConfig, tracing: HttpTracing): ProxyConfig => ({ ...config, listeners: config.listeners.map((l) => (l.tcpProxy === undefined ? { ...l, tracing } : l)) });
  for (const tracing of TRACINGS) meshes.push({ name: `captured sidecar traced by ${tracing.provider.kind}/${tracing.provider.kind === 'opentelemetry' ? tracing.provider.transport : 'json'}`, config: traced(captureMesh(), tracing) });
  meshes.push({ name: 'ISTIO_MUTUAL gateway server, traced', config: traced(translate(ISTIO_MUTUAL_GATEWAY, INGRESS).config, TRACINGS[0]!) });
  t.ok(recorded.length > 100, `the translator tests' meshes are recorded (${recorded.length})`);
  let listeners = 0;
  const kinds = new Set<string>();
  for (const m of meshes) {
    const got = roundTrip(m.config);
    const errors = got.issues;
    // A capture's inbound ports come back after it, as the chains of istiod's virtualInbound: order is no part of the model.
    const byName = (ls: Listener[]): Listener[] => [...ls].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    got.listeners = byName(got.listeners);
    const want = byName(m.config.listeners.map(expressible));
    if (errors.length > 0 || stable(got.listeners) !== stable(want)) {
      t.same(errors, [], `${m.name}: no issues`);
      const a = plain(got.listeners) as unknown as JsonValue;
      const b = plain(want) as unknown as JsonValue;
      t.same([...notContainedIn(a, b), ...notContainedIn(b, a)].map((p) => `${p}: ${stable(atPath(b, p))} -> ${stable(atPath(a, p))}`), [], `${m.name}: listeners read back equal`);
      continue;
    }
    listeners += got.listeners.length;
    for (const l of got.listeners) {
      kinds.add(`${l.direction}/${l.tcpProxy !== undefined ? 'tcp' : 'http'}/${l.tls === null ? 'plain' : l.tls.kind === 'mesh' ? `mesh-${l.tls.mode}` : 'gateway'}`);
      if (l.tls?.kind === 'gateway') for (const s of l.tls.servers) kinds.add(`server/${s.mode}${s.credentialName !== undefined ? '/credential' : ''}`);
      if (l.routeConfigsByPort !== undefined) kinds.add('outbound-capture-by-port');
      if (l.useOriginalDst === true) kinds.add(`${l.direction}/capture${l.catchAll !== undefined ? '/catch-all' : ''}`);
      if (l.bindToPort === false) kinds.add(`${l.direction}/unbound${l.destinationPort !== undefined ? '/port' : ''}`);
      if (l.detectProtocol !== undefined) kinds.add(`${l.direction}/detect`);
      if (l.direction !== 'gateway' && l.tcpProxy?.some((r) => r.sniHosts.length > 0)) kinds.add('sidecar/tcp-by-sni');
    }
  }
  t.pass(`${meshes.length} meshes, ${listeners} listeners read back equal`);
  // The corpus exercises every listener shape the model has.
  for (const k of [
    'outbound/http/plain',
    'inbound/http/mesh-STRICT',
    'inbound/http/mesh-PERMISSIVE',
    'gateway/http/plain',
    'gateway/http/gateway',
    'gateway/tcp/plain',
    'server/SIMPLE/credential',
    'server/MUTUAL/credential',
    'server/PASSTHROUGH',
    'server/ISTIO_MUTUAL',
    'outbound-capture-by-port',
    'outbound/capture/catch-all',
    'inbound/capture/catch-all',
    'outbound/unbound',
    'inbound/unbound/port',
    'outbound/detect',
    'inbound/detect',
    'inbound/tcp/mesh-STRICT',
    'outbound/tcp/plain',
    'sidecar/tcp-by-sni',
  ]) {
    t.ok(kinds.has(k), `covered: ${k}`);
  }
});

// ---- 2. istiod's real output ----

const ISTIOD_HTTP_FILTERS = [
  {
    name: 'istio.metadata_exchange',
    typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/io.istio.http.peer_metadata.Config', value: { upstream_discovery: [{ istio_headers: {} }] } },
  },
  { name: 'envoy.filters.http.grpc_stats', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig', emitFilterState: true, statsForAllMethods: false } },
  {
    name: 'istio.alpn',
    typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig', value: { alpn_override: [{ alpn_override: ['istio-http/1.0', 'istio'] }] } },
  },
  { name: 'envoy.filters.http.fault', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
  { name: 'envoy.filters.http.cors', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors' } },
  { name: 'istio.stats', typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/stats.PluginConfig', value: { disable_host_header_fallback: true } } },
  { name: 'envoy.filters.http.router', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
];

/** istiod's HTTP connection manager on an ingress gateway (`istioctl proxy-config listener -o json`), where the types are in the registry. */
function istiodGatewayHcm(routeConfigName: string, port: number): object {
  return {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    statPrefix: `outbound_0.0.0.0_${port}`,
    rds: { configSource: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, routeConfigName },
    httpFilters: ISTIOD_HTTP_FILTERS,
    tracing: { clientSampling: { value: 100 }, randomSampling: { value: 1 }, overallSampling: { value: 100 } },
    serverName: 'istio-envoy',
    useRemoteAddress: true,
    forwardClientCertDetails: 'SANITIZE_SET',
    setCurrentClientCertDetails: { subject: true, dns: true, uri: true },
    upgradeConfigs: [{ upgradeType: 'websocket' }],
    streamIdleTimeout: '0s',
    normalizePath: true,
    requestIdExtension: { typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig', useRequestIdForTraceSampling: true } },
    pathWithEscapedSlashesAction: 'KEEP_UNCHANGED',
  };
}

const HCM_NAME = 'envoy.filters.network.http_connection_manager';
const SDS = { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' };

t.test("istiod's ingress gateway: 0.0.0.0_8080 (RDS http.8080) and 0.0.0.0_8443 (a credential by SNI)", async (t) => {
  const http = {
    name: '0.0.0.0_8080',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
    filterChains: [{ filters: [{ name: HCM_NAME, typedConfig: istiodGatewayHcm('http.8080', 8080) }] }],
    accessLog: [{ name: 'envoy.access_loggers.file', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog', path: '/dev/stdout' } }],
  };
  const https = {
    name: '0.0.0.0_8443',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8443 } },
    filterChains: [
      {
        filterChainMatch: { serverNames: ['bookinfo.example.com'] },
        filters: [{ name: HCM_NAME, typedConfig: { ...istiodGatewayHcm('https.443.https.bookinfo-gateway.default', 8443) } }],
        transportSocket: {
          name: 'envoy.transport_sockets.tls',
          typedConfig: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
            commonTlsContext: {
              tlsParams: { tlsMinimumProtocolVersion: 'TLSv1_2', tlsMaximumProtocolVersion: 'TLSv1_3' },
              tlsCertificateSdsSecretConfigs: [{ name: 'kubernetes://bookinfo-credential', sdsConfig: SDS }],
              alpnProtocols: ['h2', 'http/1.1'],
            },
            requireClientCertificate: false,
          },
        },
      },
    ],
    listenerFilters: [{ name: 'envoy.filters.listener.tls_inspector', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } }],
  };
  const cred: SecretRef = { name: 'kubernetes://bookinfo-credential', kind: 'certificate', certFile: '/etc/certs/bookinfo/tls.crt', keyFile: '/etc/certs/bookinfo/tls.key' };
  const got = importListeners([http, https], INGRESS, [cred]);
  const cm = { serverName: 'istio-envoy', serverHeaderTransformation: 'OVERWRITE', httpProtocolOptions: { acceptHttp10: false } };
  const chain = [
    { name: 'envoy.filters.http.fault', config: {} },
    { name: 'envoy.filters.http.cors', config: {} },
    { name: 'envoy.filters.http.router', config: {} },
  ];
  t.same(plain(got.listeners), [
    { name: '0.0.0.0_8080', address: '0.0.0.0', port: 8080, direction: 'gateway', routeConfig: 'http.8080', httpFilters: chain, tls: null, connectionManager: cm },
    {
      name: '0.0.0.0_8443',
      address: '0.0.0.0',
      port: 8443,
      direction: 'gateway',
      routeConfig: 'https.443.https.bookinfo-gateway.default',
      httpFilters: chain,
      tls: {
        kind: 'gateway',
        servers: [
          {
            hosts: ['bookinfo.example.com'],
            mode: 'SIMPLE',
            certFile: '/etc/certs/bookinfo/tls.crt',
            keyFile: '/etc/certs/bookinfo/tls.key',
            credentialName: 'bookinfo-credential',
            caFile: null,
            subjectAltNames: [],
            minVersion: 'TLSv1.2',
            maxVersion: 'TLSv1.3',
            cipherSuites: [],
            tcpRoutes: [],
            origin: '0.0.0.0_8443#0',
            routeConfig: 'https.443.https.bookinfo-gateway.default',
          },
        ],
      },
      connectionManager: cm,
    },
  ]);
  t.same(got.issues, [
    'warning: Listener 0.0.0.0_8080: accessLog: ignored: connections no filter chain takes are not logged (the connection managers\' and tcp_proxies\' access logs are written)',
    'warning: Listener 0.0.0.0_8080: filterChains[0].filters[0].typedConfig.tracing: ignored: no provider, and Remora has no bootstrap-wide tracer: requests are not traced',
    'warning: Listener 0.0.0.0_8443: filterChains[0].filters[0].typedConfig.tracing: ignored: no provider, and Remora has no bootstrap-wide tracer: requests are not traced',
  ]);
});

t.test("istiod's sidecar listeners: the captures, per-port listeners and virtualInbound's chains import as the model's capture listeners", async (t) => {
  // What pilot/pkg/networking/core builds for a sidecar (interception REDIRECT, mesh-wide PERMISSIVE, ALLOW_ANY):
  // listener_builder.go buildVirtualOutboundListener / blackholeFilterChain / buildOutboundCatchAllNetworkFilterChains,
  // listener.go buildListenerFromEntry (per-port listeners, bindToPort false, the PassthroughFilterChain default chain,
  // plaintextHTTPALPNs on the HTTP chain of a wildcard port), listener_inbound.go inboundVirtualListener /
  // buildInboundPassthroughChains / inboundChainForOpts with filterchain_options.go's match options per mTLS mode.
  const TCP = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
  const tcp = (cluster: string): object => ({ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': TCP, statPrefix: cluster, cluster } });
  const metadataExchange = { name: 'istio.metadata_exchange', typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange', value: { protocol: 'istio-peer-exchange' } } };
  const stats = { name: 'istio.stats', typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/stats.PluginConfig', value: {} } };
  const passthroughChain = { filterChainMatch: {}, filters: [stats, tcp('PassthroughCluster')], name: 'PassthroughFilterChain' };
  const lf = (name: string): object => ({ name: `envoy.filters.listener.${name}`, typedConfig: { '@type': `type.googleapis.com/envoy.extensions.filters.listener.${name}.v3.${name === 'original_dst' ? 'OriginalDst' : name === 'tls_inspector' ? 'TlsInspector' : 'HttpInspector'}` } });
  const sidecarHcm = (direction: 'outbound' | 'inbound', port: number, routes: object): object => plain({
    ...istiodGatewayHcm('x', port),
    rds: undefined,
    ...routes,
    statPrefix: `${direction}_0.0.0.0_${port}`,
    useRemoteAddress: false,
    serverName: direction === 'outbound' ? undefined : 'istio-envoy',
    forwardClientCertDetails: direction === 'outbound' ? undefined : 'APPEND_FORWARD',
    setCurrentClientCertDetails: direction === 'outbound' ? undefined : { subject: true, dns: true, uri: true },
  });
  const rds = (name: string): object => ({ rds: { configSource: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, routeConfigName: name } });
  const mtls = {
    name: 'envoy.transport_sockets.tls',
    typedConfig: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      commonTlsContext: {
        tlsParams: {},
        alpnProtocols: ['h2', 'http/1.1'],
        tlsCertificateSdsSecretConfigs: [{ name: 'default', sdsConfig: SDS }],
        combinedValidationContext: { defaultValidationContext: {}, validationContextSdsSecretConfig: { name: 'ROOTCA', sdsConfig: SDS } },
      },
      requireClientCertificate: true,
    },
  };
  const outboundPort = (name: string, address: string, port: number, chains: object[], extra: object = {}): object => ({
    name,
    address: { socketAddress: { address, portValue: port } },
    filterChains: chains,
    trafficDirection: 'OUTBOUND',
    continueOnListenerFiltersTimeout: true,
    bindToPort: false,
    ...extra,
  });

  const virtualOutbound = {
    name: 'virtualOutbound',
    address: { socketAddress: { address: '0.0.0.0', portValue: 15001 } },
    filterChains: [
      { filterChainMatch: { destinationPort: 15001 }, filters: [stats, tcp('BlackHoleCluster')], name: 'virtualOutbound-blackhole' },
      { filters: [stats, tcp('PassthroughCluster')], name: 'virtualOutbound-catchall-tcp' },
    ],
    useOriginalDst: true,
    trafficDirection: 'OUTBOUND',
    maxConnectionsToAcceptPerSocketEvent: 1,
  };
  const http9080 = outboundPort(
    '0.0.0.0_9080',
    '0.0.0.0',
    9080,
    [{ filterChainMatch: { transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.1', 'h2c'] }, filters: [{ name: HCM_NAME, typedConfig: sidecarHcm('outbound', 9080, rds('9080')) }] }],
    { defaultFilterChain: passthroughChain, listenerFilters: [lf('http_inspector')], listenerFiltersTimeout: '0s' },
  );
  const redis = outboundPort('10.96.0.5_6379', '10.96.0.5', 6379, [{ filters: [stats, tcp('outbound|6379||redis.default.svc.cluster.local')] }], { listenerFiltersTimeout: '0s' });
  const tls443 = outboundPort(
    '0.0.0.0_443',
    '0.0.0.0',
    443,
    [{ filterChainMatch: { serverNames: ['api.example.com'] }, filters: [stats, tcp('outbound|443||api.example.com')] }],
    { defaultFilterChain: passthroughChain, listenerFilters: [lf('tls_inspector')], listenerFiltersTimeout: '0s' },
  );
  // A port declared without a protocol on a service address: the TCP chain matches all, so it is the default chain.
  const mysql = outboundPort(
    '10.96.0.7_3306',
    '10.96.0.7',
    3306,
    [{ filterChainMatch: { transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.1', 'h2c'] }, filters: [{ name: HCM_NAME, typedConfig: { ...sidecarHcm('outbound', 3306, rds('mysql.default.svc.cluster.local:3306')), statPrefix: 'outbound_10.96.0.7_3306' } }] }],
    { defaultFilterChain: { filters: [stats, tcp('outbound|3306||mysql.default.svc.cluster.local')] }, listenerFilters: [lf('http_inspector')], listenerFiltersTimeout: '5s' },
  );

  const inboundHcm = (port: number): object => ({ name: HCM_NAME, typedConfig: sidecarHcm('inbound', port, { routeConfig: { name: `inbound|${port}||`, virtualHosts: [{ name: `inbound|http|${port}`, domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: `inbound|${port}||` } }] }] } }) });
  // The passthrough's connection manager runs Istio's own filters only when no policy applies to the workload.
  const istioOnly = ISTIOD_HTTP_FILTERS.filter((f) => f.name.startsWith('istio.') || f.name === 'envoy.filters.http.router');
  const catchAllHcm = { name: HCM_NAME, typedConfig: { ...(sidecarHcm('inbound', 0, { routeConfig: { name: 'InboundPassthroughCluster', virtualHosts: [] } }) as object), statPrefix: 'InboundPassthroughCluster', httpFilters: istioOnly } };
  const ALL_ISTIO = ['istio', 'istio-peer-exchange', 'istio-http/1.0', 'istio-http/1.1', 'istio-h2'];
  const MTLS_HTTP = ['istio-http/1.0', 'istio-http/1.1', 'istio-h2'];
  const PLAIN_HTTP = ['http/1.1', 'h2c'];
  const virtualInbound = {
    name: 'virtualInbound',
    address: { socketAddress: { address: '0.0.0.0', portValue: 15006 } },
    filterChains: [
      { filterChainMatch: { destinationPort: 15006 }, filters: [metadataExchange, stats, tcp('BlackHoleCluster')], name: 'virtualInbound-blackhole' },
      // The passthrough chains, PERMISSIVE with Auto protocol (inboundPermissiveFilterChainMatchWithMxcOptions).
      { filterChainMatch: { transportProtocol: 'tls', applicationProtocols: MTLS_HTTP }, filters: [catchAllHcm], transportSocket: mtls, name: 'virtualInbound-catchall-http' },
      { filterChainMatch: { transportProtocol: 'raw_buffer', applicationProtocols: PLAIN_HTTP }, filters: [catchAllHcm], name: 'virtualInbound-catchall-http' },
      { filterChainMatch: { transportProtocol: 'tls', applicationProtocols: ['istio-peer-exchange', 'istio'] }, filters: [metadataExchange, stats, tcp('InboundPassthroughCluster')], transportSocket: mtls, name: 'virtualInbound' },
      { filterChainMatch: { transportProtocol: 'raw_buffer' }, filters: [metadataExchange, stats, tcp('InboundPassthroughCluster')], name: 'virtualInbound' },
      { filterChainMatch: { transportProtocol: 'tls' }, filters: [metadataExchange, stats, tcp('InboundPassthroughCluster')], name: 'virtualInbound' },
      // HTTP 9080, PERMISSIVE (inboundPermissiveHTTPFilterChainMatchWithMxcOptions).
      { filterChainMatch: { destinationPort: 9080, transportProtocol: 'tls', applicationProtocols: ALL_ISTIO }, filters: [metadataExchange, inboundHcm(9080)], transportSocket: mtls, name: '0.0.0.0_9080' },
      { filterChainMatch: { destinationPort: 9080, transportProtocol: 'raw_buffer' }, filters: [metadataExchange, inboundHcm(9080)], name: '0.0.0.0_9080' },
      // TCP 5432, STRICT (inboundStrictTCPFilterChainMatchOptions).
      { filterChainMatch: { destinationPort: 5432, transportProtocol: 'tls' }, filters: [metadataExchange, stats, tcp('inbound|5432||')], transportSocket: mtls, name: '0.0.0.0_5432' },
      // A port without a protocol, PERMISSIVE: HTTP and TCP, each over mTLS and plaintext, and TLS not Istio's.
      { filterChainMatch: { destinationPort: 8000, transportProtocol: 'tls', applicationProtocols: MTLS_HTTP }, filters: [metadataExchange, inboundHcm(8000)], transportSocket: mtls, name: '0.0.0.0_8000' },
      { filterChainMatch: { destinationPort: 8000, transportProtocol: 'raw_buffer', applicationProtocols: PLAIN_HTTP }, filters: [metadataExchange, inboundHcm(8000)], name: '0.0.0.0_8000' },
      { filterChainMatch: { destinationPort: 8000, transportProtocol: 'tls', applicationProtocols: ['istio-peer-exchange', 'istio'] }, filters: [metadataExchange, stats, tcp('inbound|8000||')], transportSocket: mtls, name: '0.0.0.0_8000' },
      { filterChainMatch: { destinationPort: 8000, transportProtocol: 'raw_buffer' }, filters: [metadataExchange, stats, tcp('inbound|8000||')], name: '0.0.0.0_8000' },
      { filterChainMatch: { destinationPort: 8000, transportProtocol: 'tls' }, filters: [metadataExchange, stats, tcp('inbound|8000||')], name: '0.0.0.0_8000' },
    ],
    listenerFilters: [lf('original_dst'), lf('tls_inspector'), lf('http_inspector')],
    listenerFiltersTimeout: '0s',
    continueOnListenerFiltersTimeout: true,
    trafficDirection: 'INBOUND',
  };

  const got = importListeners([http9080, redis, tls443, mysql, virtualOutbound, virtualInbound], SIDECAR);
  const route = (cluster: string, sniHosts: string[] = []): object => ({ sniHosts, clusters: [{ cluster, weight: 100 }], origin: '' });
  const chain = [{ name: 'envoy.filters.http.fault', config: {} }, ...CHAIN_TAIL];
  const out = { name: '', address: '0.0.0.0', port: 0, direction: 'outbound', routeConfig: '', httpFilters: chain, tls: null, bindToPort: false };
  const inb = (port: number): object => ({ name: `inbound_0.0.0.0_${port}`, address: '0.0.0.0', port, direction: 'inbound', routeConfig: `inbound|${port}||`, httpFilters: chain, connectionManager: ISTIO_ENVOY_HCM, destinationPort: port, bindToPort: false, metadataExchange: true });
  t.same(
    plain(got.listeners),
    [
      { ...out, name: '0.0.0.0_9080', port: 9080, routeConfig: '9080', detectProtocol: { tcp: [route('PassthroughCluster')], timeoutMs: 0 } },
      { ...out, name: '10.96.0.5_6379', address: '10.96.0.5', port: 6379, routeConfig: 'tcp.6379', httpFilters: [], tcpProxy: [route('outbound|6379||redis.default.svc.cluster.local')] },
      { ...out, name: '0.0.0.0_443', port: 443, routeConfig: 'tcp.443', httpFilters: [], tcpProxy: [route('outbound|443||api.example.com', ['api.example.com']), route('PassthroughCluster')] },
      { ...out, name: '10.96.0.7_3306', address: '10.96.0.7', port: 3306, routeConfig: 'mysql.default.svc.cluster.local:3306', detectProtocol: { tcp: [route('outbound|3306||mysql.default.svc.cluster.local')], timeoutMs: 5000 } },
      { ...out, name: 'virtualOutbound', port: 15001, bindToPort: undefined, routeConfig: 'tcp.15001', httpFilters: [], tcpProxy: [], useOriginalDst: true, catchAll: [route('PassthroughCluster')] },
      { ...out, name: 'virtualInbound', port: 15006, direction: 'inbound', bindToPort: undefined, routeConfig: 'tcp.15006', httpFilters: [], tcpProxy: [], useOriginalDst: true, catchAll: [route('InboundPassthroughCluster')], metadataExchange: true },
      { ...inb(9080), tls: { kind: 'mesh', mode: 'PERMISSIVE' } },
      { ...inb(5432), routeConfig: 'tcp.5432', httpFilters: [], connectionManager: undefined, tls: { kind: 'mesh', mode: 'STRICT' }, tcpProxy: [route('inbound|5432||')] },
      { ...inb(8000), tls: { kind: 'mesh', mode: 'PERMISSIVE' }, detectProtocol: { tcp: [route('inbound|8000||')], timeoutMs: 0 } },
    ].map((l) => plain(l)),
  );
  t.same(
    got.inlineRouteConfigs.map((rc) => rc.name),
    ['inbound|9080||', 'inbound|8000||'],
    "the inbound ports' inline route configurations go to the route importer",
  );
  t.same(
    got.issues.filter((i) => !/tracing|maxConnectionsToAcceptPerSocketEvent/.test(i)),
    [
      'warning: Listener virtualInbound: filterChains[1]: ignored: the catch-all proxies TCP without terminating Istio mTLS; an mTLS connection to a port no listener serves is passed through as it came (PERMISSIVE) or closed (STRICT: no plaintext catch-all)',
      'warning: Listener virtualInbound: filterChains[2]: ignored: HTTP to ports no listener serves is proxied as TCP by the catch-all',
      'warning: Listener virtualInbound: filterChains[3]: ignored: the catch-all proxies TCP without terminating Istio mTLS; an mTLS connection to a port no listener serves is passed through as it came (PERMISSIVE) or closed (STRICT: no plaintext catch-all)',
      "warning: Listener virtualInbound: filterChains[13]: ignored: on a port with Istio mTLS every TLS connection is taken as Istio mTLS; TLS of the app's own is not passed through",
    ],
  );

  // REGISTRY_ONLY: the catch-all goes to BlackHoleCluster, which closes the connection.
  const registryOnly = { ...virtualOutbound, filterChains: [virtualOutbound.filterChains[0], { filters: [tcp('BlackHoleCluster')], name: 'virtualOutbound-catchall-tcp' }] };
  t.same(importListeners([registryOnly], SIDECAR).listeners[0]!.catchAll, [route('BlackHoleCluster')]);

  // STRICT everywhere: only mTLS passthrough chains, so nothing plaintext to pass through: redirected connections to undeclared ports are closed.
  const strict = { ...virtualInbound, filterChains: [virtualInbound.filterChains[0], virtualInbound.filterChains[1], virtualInbound.filterChains[3]] };
  t.same(importListeners([strict], SIDECAR).listeners[0]!.catchAll, []);
});

t.test("istiod's config dump (an ambient waypoint): the internal listener is refused, the agent's health listener imports", { skip: GOLDENS_DIR === null ? GOLDENS_MISSING : false }, async (t) => {
  const dump = readGolden('proxy-config/config_dump.json') as { configs: { '@type': string; static_listeners?: { listener: object }[]; dynamic_listeners?: { active_state: { listener: object } }[] }[] };
  const ld = dump.configs.find((c) => c['@type'].endsWith('ListenersConfigDump'))!;
  // The dump uses proto names; the codec reads them, and prints the canonical form.
  const strip = (l: object): object => {
    const { '@type': _, ...rest } = l as Record<string, unknown>;
    return rest;
  };
  const dynamic = ld.dynamic_listeners!.map((d) => strip(d.active_state.listener));
  const health = { ...strip(ld.static_listeners![0]!.listener), name: 'health' };
  const got = importListeners([...dynamic, health], SIDECAR);
  t.same(
    got.issues.filter((i) => i.startsWith('Listener main_internal') && /internalListener|filterChainMatcher|address/.test(i)),
    [
      'Listener main_internal: internalListener: not supported',
      'Listener main_internal: filterChainMatcher: not supported',
      'Listener main_internal: address: a listener needs an address',
    ],
  );
  t.same(plain(got.listeners), [
    {
      name: 'health',
      address: '0.0.0.0',
      port: 15021,
      direction: 'outbound',
      routeConfig: 'health',
      httpFilters: [{ name: 'envoy.filters.http.router', config: {} }],
      tls: null,
    },
  ]);
  t.equal(got.inlineRouteConfigs.length, 1);
  t.equal(got.inlineRouteConfigs[0]!.name, 'health', 'the unnamed inline route configuration is named after its listener');
  t.same(got.inlineRouteConfigs[0]!.virtualHosts?.[0]?.routes?.[0]?.route, { cluster: 'agent' });
  t.same(
    got.issues.filter((i) => i.startsWith('warning: Listener health')).sort(),
    [
      'warning: Listener health: filterChains[0].filters[0].typedConfig.statPrefix: Remora\'s HTTP stats for this listener are under http.outbound_0.0.0.0_15021., not http.agent.',
      "warning: Listener health: filterChains[0].filters[0].typedConfig.normalizePath: Remora always normalizes request paths (Istio's pathNormalization BASE)",
      'warning: Listener health: filterChains[0].filters[0].typedConfig.upgradeConfigs: Remora tunnels WebSocket upgrades even without an upgrade config',
    ].sort(),
  );
});

// ---- 3. defaults, errors and warnings ----

/** A plain HTTP listener for `node` as the exporter writes it, with `edit` applied to its HCM config and the listener. */
function listenerWith(direction: 'gateway' | 'outbound' | 'inbound', hcm: Record<string, unknown> = {}, listener: Record<string, unknown> = {}): object {
  const base: Record<string, unknown> = {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    statPrefix: `${direction === 'inbound' ? 'inbound' : 'outbound'}_0.0.0.0_8080`,
    rds: { configSource: { ads: {} }, routeConfigName: 'http.8080' },
    httpFilters: [{ name: 'envoy.filters.http.router', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
    useRemoteAddress: direction === 'gateway',
    normalizePath: true,
    upgradeConfigs: [{ upgradeType: 'websocket' }],
    ...(direction === 'outbound' ? {} : { forwardClientCertDetails: direction === 'gateway' ? 'SANITIZE_SET' : 'APPEND_FORWARD' }),
  };
  for (const [k, v] of Object.entries(hcm)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return plain({
    name: '0.0.0.0_8080',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
    filterChains: [{ filters: [{ name: HCM_NAME, typedConfig: base }] }],
    ...(direction === 'inbound' ? { trafficDirection: 'INBOUND' } : {}),
    ...listener,
  });
}

const HCM_AT = 'filterChains[0].filters[0].typedConfig';

t.test("Envoy's defaults where a field is unset", async (t) => {
  const got = importListeners([listenerWith('gateway')], INGRESS);
  t.same(got.issues, []);
  const l = got.listeners[0]!;
  t.equal(l.connectionManager, undefined, 'no server name, server header or HTTP/1.0 setting: the runtime applies Envoy\'s (envoy, OVERWRITE, HTTP/1.0 refused)');
  t.equal(l.direction, 'gateway', "a gateway node's listeners are the gateway's");
  t.equal(l.tls, null);

  const some = importListeners([listenerWith('gateway', { serverName: 'edge' })], INGRESS).listeners[0]!;
  t.same(some.connectionManager, { serverName: 'edge', serverHeaderTransformation: 'OVERWRITE', httpProtocolOptions: { acceptHttp10: false } }, 'unset siblings take their defaults');
  const http10 = importListeners([listenerWith('gateway', { httpProtocolOptions: { acceptHttp10: true }, serverHeaderTransformation: 'PASS_THROUGH' })], INGRESS).listeners[0]!;
  t.same(http10.connectionManager, { serverName: 'envoy', serverHeaderTransformation: 'PASS_THROUGH', httpProtocolOptions: { acceptHttp10: true } });

  t.equal(importListeners([listenerWith('outbound')], SIDECAR).listeners[0]!.direction, 'outbound', 'no trafficDirection on a sidecar: outbound');
  t.equal(importListeners([listenerWith('inbound')], SIDECAR).listeners[0]!.direction, 'inbound', 'trafficDirection INBOUND');
  t.equal(importListeners([listenerWith('inbound', {}, { name: 'virtualInbound', trafficDirection: undefined })], SIDECAR).listeners[0]!.direction, 'inbound', 'named virtualInbound');

  const inline = importListeners([listenerWith('gateway', { rds: undefined, routeConfig: { virtualHosts: [{ name: 'all', domains: ['*'] }] } })], INGRESS);
  t.equal(inline.listeners[0]!.routeConfig, '0.0.0.0_8080', 'an unnamed inline route configuration is named after the listener');
  t.same(inline.inlineRouteConfigs, [{ name: '0.0.0.0_8080', virtualHosts: [{ name: 'all', domains: ['*'] }] }]);

  const filters = importListeners(
    [
      listenerWith('gateway', {
        httpFilters: [
          { name: 'my-fault', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault', maxActiveFaults: 3 } },
          { name: 'istio.metadata_exchange', typedConfig: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', typeUrl: 'type.googleapis.com/io.istio.http.peer_metadata.Config', value: {} } },
          { name: 'example.optional', isOptional: true, typedConfig: { '@type': 'type.googleapis.com/google.protobuf.Empty' } },
          { name: 'envoy.filters.http.local_ratelimit', typedConfig: { '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', typeUrl: 'type.googleapis.com/remora.envoy.filters.http.local_ratelimit', value: { statPrefix: 'rl' } } },
          { name: 'envoy.filters.http.router', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
        ],
      }),
    ],
    INGRESS,
  );
  t.same(filters.issues, []);
  t.same(
    filters.listeners[0]!.httpFilters,
    [
      { name: 'envoy.filters.http.fault', config: { maxActiveFaults: 3 } },
      { name: 'example.optional', config: {}, isOptional: true },
      { name: 'envoy.filters.http.local_ratelimit', config: { statPrefix: 'rl' } },
      { name: 'envoy.filters.http.router', config: {} },
    ],
    "filters are named by their config's type, Istio's own are skipped, an optional unknown one is kept for the runtime to skip, Remora's own config comes out of its TypedStruct",
  );
});

t.test("CONNECT in the connection manager's upgrade configs: enabled on the listener, written back for config_dump", async (t) => {
  const on = importListeners([listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'websocket' }, { upgradeType: 'CONNECT' }] })], INGRESS);
  t.same(on.issues, []);
  t.same(on.listeners[0]!.connectionManager, { serverName: 'envoy', serverHeaderTransformation: 'OVERWRITE', httpProtocolOptions: { acceptHttp10: false }, upgradeConnect: true }, "CONNECT enabled, Envoy's defaults beside it");
  const lower = importListeners([listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'websocket' }, { upgradeType: 'connect' }] })], INGRESS);
  t.equal(lower.listeners[0]!.connectionManager?.upgradeConnect, true, 'the upgrade type is matched case-insensitively, as Envoy does');
  const off = importListeners([listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'websocket' }, { upgradeType: 'CONNECT', enabled: false }] })], INGRESS);
  t.same(off.issues, []);
  t.equal(off.listeners[0]!.connectionManager, undefined, 'enabled: false is the default (routes may still enable CONNECT)');
  const only = importListeners([listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'CONNECT' }] })], INGRESS);
  t.same(only.issues, [`warning: Listener 0.0.0.0_8080: ${HCM_AT}.upgradeConfigs: Remora tunnels WebSocket upgrades even without an upgrade config`], 'CONNECT alone: WebSocket still tunnels, said in a warning');

  const back = roundTrip({ version: 'v', node: INGRESS, listeners: on.listeners, routeConfigs: [], clusters: [] });
  t.same(back.issues.filter((i) => !i.startsWith('warning')), []);
  t.same(back.listeners[0]!.connectionManager, on.listeners[0]!.connectionManager, 'exported as upgradeConfigs CONNECT and read back');
  const hcm = (envoyResourcesFromModel({ version: 'v', node: INGRESS, listeners: on.listeners, routeConfigs: [], clusters: [] }).listeners[0] as { filterChains: { filters: { typedConfig: { upgradeConfigs: unknown } }[] }[] }).filterChains[0]!.filters[0]!.typedConfig;
  t.same(hcm.upgradeConfigs, [{ upgradeType: 'websocket' }, { upgradeType: 'CONNECT' }], "config_dump shows Envoy's upgrade configs");
});

t.test('errors: the listener is not imported, the message names the field', async (t) => {
  const TCP_PROXY = (cluster: string): object => ({ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', statPrefix: cluster, cluster } });
  const DT = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
  const tlsChain = (ctx: Record<string, unknown>, match: object = { serverNames: ['a.example.com'] }): object => ({
    name: '0.0.0.0_8443',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8443 } },
    filterChains: [
      {
        filterChainMatch: match,
        filters: [{ name: HCM_NAME, typedConfig: (listenerWith('gateway') as { filterChains: { filters: { typedConfig: object }[] }[] }).filterChains[0]!.filters[0]!.typedConfig }],
        transportSocket: { name: 'envoy.transport_sockets.tls', typedConfig: { '@type': DT, ...ctx } },
      },
    ],
  });
  const cert = { tlsCertificateSdsSecretConfigs: [{ name: 'kubernetes://a' }] };
  const secrets: SecretRef[] = [
    { name: 'kubernetes://a', kind: 'certificate', certFile: '/a.crt', keyFile: '/a.key' },
    { name: 'kubernetes://a-cacert', kind: 'validation', caFile: '/ca.crt' },
  ];
  const TLS_AT = 'filterChains[0].transportSocket.typedConfig';
  const cases: [string, object, ProxyNode, string][] = [
    ['ECDS', listenerWith('gateway', { httpFilters: [{ name: 'x', configDiscovery: { configSource: { ads: {} } } }] }), INGRESS, `${HCM_AT}.httpFilters[0].configDiscovery: filter x: filter configs by discovery (ECDS) are not supported`],
    ['unknown filter', listenerWith('gateway', { httpFilters: [{ name: 'x', typedConfig: { '@type': 'type.googleapis.com/google.protobuf.Empty' } }] }), INGRESS, `${HCM_AT}.httpFilters[0]: unknown HTTP filter x (type.googleapis.com/google.protobuf.Empty); Envoy refuses it too unless it is marked isOptional`],
    ['disabled filter', listenerWith('gateway', { httpFilters: [{ name: 'f', disabled: true, typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } }] }), INGRESS, `${HCM_AT}.httpFilters[0].disabled: filter f: a filter disabled on the listener and enabled per route is not supported`],
    ['no router', listenerWith('gateway', { httpFilters: [] }), INGRESS, `${HCM_AT}.httpFilters: the chain must end with envoy.filters.http.router`],
    ['mergeSlashes', listenerWith('gateway', { mergeSlashes: true }), INGRESS, `${HCM_AT}.mergeSlashes: merging slashes is not supported; routes and policies would see paths Envoy would not`],
    ['escaped slashes', listenerWith('gateway', { pathWithEscapedSlashesAction: 'UNESCAPE_AND_FORWARD' }), INGRESS, `${HCM_AT}.pathWithEscapedSlashesAction: UNESCAPE_AND_FORWARD is not supported: Remora keeps escaped slashes unchanged`],
    ['useRemoteAddress on a sidecar', listenerWith('outbound', { useRemoteAddress: true }), SIDECAR, `${HCM_AT}.useRemoteAddress: a sidecar takes the client address from x-forwarded-for and does not append to it (useRemoteAddress false)`],
    ['XFCC forwarded where the config strips it', listenerWith('inbound', { forwardClientCertDetails: 'SANITIZE' }, { name: 'virtualInbound', trafficDirection: 'INBOUND' }), SIDECAR, `${HCM_AT}.forwardClientCertDetails: SANITIZE is not supported on a sidecar's inbound side: Remora does APPEND_FORWARD there, as Istio, and would forward the x-forwarded-client-cert a client sent`],
    ['unknown upgrade', listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'spdy/3.1' }] }), INGRESS, `${HCM_AT}.upgradeConfigs[0].upgradeType: upgrade spdy/3.1 is not supported (websocket and CONNECT only)`],
    ['upgrade filters', listenerWith('gateway', { upgradeConfigs: [{ upgradeType: 'CONNECT', filters: [{ name: 'envoy.filters.http.router' }] }, { upgradeType: 'websocket' }] }), INGRESS, `${HCM_AT}.upgradeConfigs[0].filters: not supported`],
    ['unknown HCM field', listenerWith('gateway', { scopedRoutes: { name: 's' }, rds: undefined }), INGRESS, `${HCM_AT}.scopedRoutes: not supported`],
    ['network filter', listenerWith('gateway', {}, { filterChains: [{ filters: [{ name: 'envoy.filters.network.rbac', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC', statPrefix: 'x' } }, ...(listenerWith('gateway') as { filterChains: { filters: object[] }[] }).filterChains[0]!.filters] }] }), INGRESS, 'filterChains[0].filters[0]: network filter envoy.filters.network.rbac is not supported (Remora runs the HTTP connection manager and tcp_proxy)'],
    ['filterChainMatcher', listenerWith('gateway', {}, { filterChainMatcher: { onNoMatch: { action: { name: 'x', typedConfig: { '@type': 'type.googleapis.com/google.protobuf.StringValue', value: 'x' } } } } }), INGRESS, 'filterChainMatcher: not supported'],
    ['empty defaultFilterChain', listenerWith('gateway', {}, { defaultFilterChain: { filters: [] } }), INGRESS, 'defaultFilterChain.filters: a filter chain needs an HTTP connection manager or a tcp_proxy'],
    ['UDP', listenerWith('gateway', {}, { address: { socketAddress: { address: '0.0.0.0', portValue: 8080, protocol: 'UDP' } } }), INGRESS, 'address.socketAddress.protocol: UDP listeners are not supported (TCP only)'],
    ['a destination address match', { name: 't', address: { socketAddress: { address: '0.0.0.0', portValue: 1 } }, filterChains: [{ filterChainMatch: { prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }] }, filters: [TCP_PROXY('c')] }] }, SIDECAR, "filterChains[0].filterChainMatch.prefixRanges: matching on destination addresses other than the listener's own is not supported (Remora matches destination port, SNI, transport and application protocol)"],
    ['HTTP policy on the catch-all', { name: 'virtualInbound', trafficDirection: 'INBOUND', useOriginalDst: true, address: { socketAddress: { address: '0.0.0.0', portValue: 15006 } }, filterChains: [{ filterChainMatch: { transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.1'] }, filters: [{ name: HCM_NAME, typedConfig: { ...(listenerWith('inbound') as { filterChains: { filters: { typedConfig: object }[] }[] }).filterChains[0]!.filters[0]!.typedConfig, httpFilters: [{ name: 'envoy.filters.http.rbac', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC' } }, { name: 'envoy.filters.http.router', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }] } }] }, { filters: [TCP_PROXY('InboundPassthroughCluster')] }] }, SIDECAR, "filterChains[0].filters[0].typedConfig.httpFilters: HTTP filters (envoy.filters.http.rbac) on traffic to ports no listener serves are not supported: Remora's catch-all proxies TCP"],
    ['two connection managers on one inbound port', { name: 'virtualInbound', trafficDirection: 'INBOUND', useOriginalDst: true, address: { socketAddress: { address: '0.0.0.0', portValue: 15006 } }, filterChains: ['a', 'b'].map((rc, i) => ({ filterChainMatch: { destinationPort: 9080, transportProtocol: 'raw_buffer', applicationProtocols: [i === 0 ? 'http/1.1' : 'h2c'] }, filters: [{ name: HCM_NAME, typedConfig: { ...(listenerWith('inbound') as { filterChains: { filters: { typedConfig: object }[] }[] }).filterChains[0]!.filters[0]!.typedConfig, rds: { routeConfigName: rc } } }] })) }, SIDECAR, 'filterChains[1].filters: an HTTP connection manager unlike the one of filterChains[0]; Remora runs one per listener and port (one route configuration, one filter chain)'],
    ['several ports outside a capture', { name: 'x', trafficDirection: 'INBOUND', address: { socketAddress: { address: '0.0.0.0', portValue: 15006 } }, filterChains: [1, 2].map((destinationPort) => ({ filterChainMatch: { destinationPort }, filters: [TCP_PROXY('c')] })) }, SIDECAR, 'filterChains: filter chains match different destination ports; only a capture listener (useOriginalDst) serves several, each as a listener of its own'],
    ['requireSni', tlsChain({ commonTlsContext: cert, requireSni: true }), INGRESS, `${TLS_AT}.requireSni: not supported`],
    ['OCSP', tlsChain({ commonTlsContext: cert, ocspStaplePolicy: 'MUST_STAPLE' }), INGRESS, `${TLS_AT}.ocspStaplePolicy: OCSP stapling is not supported`],
    ['CRL', tlsChain({ commonTlsContext: { ...cert, combinedValidationContext: { defaultValidationContext: { crl: { filename: '/crl.pem' } }, validationContextSdsSecretConfig: { name: 'kubernetes://a-cacert' } } }, requireClientCertificate: true }), INGRESS, `${TLS_AT}.commonTlsContext.combinedValidationContext.defaultValidationContext.crl: not supported (client certificates are checked against the roots and SAN names only); Remora cannot enforce it`],
    ['SAN prefix', tlsChain({ commonTlsContext: { ...cert, combinedValidationContext: { defaultValidationContext: { matchSubjectAltNames: [{ prefix: 'spiffe://' }] }, validationContextSdsSecretConfig: { name: 'kubernetes://a-cacert' } } }, requireClientCertificate: true }), INGRESS, `${TLS_AT}.commonTlsContext.combinedValidationContext.defaultValidationContext.matchSubjectAltNames[0]: only exact SAN matches are supported`],
    ['ECDH curves', tlsChain({ commonTlsContext: { ...cert, tlsParams: { ecdhCurves: ['P-256'] } } }), INGRESS, `${TLS_AT}.commonTlsContext.tlsParams.ecdhCurves: not supported (TLS versions and cipher suites only); Remora cannot restrict it`],
    ['TLS 1.0', tlsChain({ commonTlsContext: { ...cert, tlsParams: { tlsMinimumProtocolVersion: 'TLSv1_0' } } }), INGRESS, `${TLS_AT}.commonTlsContext.tlsParams.tlsMinimumProtocolVersion: TLSv1_0 is not supported (TLS 1.2 and 1.3 only)`],
    ['inline certificate', tlsChain({ commonTlsContext: { tlsCertificates: [{ certificateChain: { filename: '/a.crt' } }] } }), INGRESS, `${TLS_AT}.commonTlsContext.tlsCertificates: not supported (certificates and roots come from SDS secrets)`],
    ['unknown secret', tlsChain({ commonTlsContext: { tlsCertificateSdsSecretConfigs: [{ name: 'kubernetes://nope' }] } }), INGRESS, `${TLS_AT}.commonTlsContext.tlsCertificateSdsSecretConfigs[0].name: SDS secret kubernetes://nope is unknown`],
    ['client cert without roots', tlsChain({ commonTlsContext: cert, requireClientCertificate: true }), INGRESS, `${TLS_AT}.requireClientCertificate: requiring a client certificate needs roots to verify it (a validation context)`],
    ['sidecar TLS that is not Istio mTLS', tlsChain({ commonTlsContext: cert }, { transportProtocol: 'tls' }), SIDECAR, `${TLS_AT}: a sidecar's inbound TLS must be Istio mTLS: the workload certificate (SDS default), the mesh roots (SDS ROOTCA) and a client certificate required`],
  ];
  for (const [what, listener, n, message] of cases) {
    const got = importListeners([listener], n, secrets);
    const name = (listener as { name: string }).name;
    t.same(got.listeners, [], `${what}: not imported`);
    t.ok(got.issues.includes(`Listener ${name}: ${message}`), `${what}: ${message}`) || t.comment(got.issues.join('\n'));
  }
});

t.test('warnings: accepted and ignored, said once', async (t) => {
  const cases: [string, object, string][] = [
    ['tracing', listenerWith('gateway', { tracing: {} }), `${HCM_AT}.tracing: ignored: no provider, and Remora has no bootstrap-wide tracer: requests are not traced`],
    ['trusted hops', listenerWith('gateway', { xffNumTrustedHops: 2 }), `${HCM_AT}.xffNumTrustedHops: ignored: trusted x-forwarded-for hops are the proxy's --num-trusted-proxies (Istio's numTrustedProxies)`],
    ['no normalizePath', listenerWith('gateway', { normalizePath: undefined }), `${HCM_AT}.normalizePath: Remora always normalizes request paths (Istio's pathNormalization BASE)`],
    ['stream idle timeout', listenerWith('gateway', { streamIdleTimeout: '300s' }), `${HCM_AT}.streamIdleTimeout: ignored: Remora has no stream idle timeout`],
    ['request timeout', listenerWith('gateway', { requestTimeout: '10s' }), `${HCM_AT}.requestTimeout: ignored: the request timeout is the proxy's own`],
    ['no upgrade configs', listenerWith('gateway', { upgradeConfigs: undefined }), `${HCM_AT}.upgradeConfigs: Remora tunnels WebSocket upgrades even without an upgrade config`],
    ['listener filter', listenerWith('gateway', {}, { listenerFilters: [{ name: 'envoy.filters.listener.proxy_protocol' }] }), 'listenerFilters[0]: listener filter envoy.filters.listener.proxy_protocol is not run (Remora runs original_dst, tls_inspector and http_inspector\'s work itself)'],
    ['no useRemoteAddress on a gateway (Remora trusts less)', listenerWith('gateway', { useRemoteAddress: undefined }), `${HCM_AT}.useRemoteAddress: a gateway is the edge in Remora: it uses the peer address as the client address and appends it to x-forwarded-for (useRemoteAddress true), trusting no x-forwarded-for it did not add`],
    ['XFCC forwarded by the config, stripped by Remora', listenerWith('gateway', { forwardClientCertDetails: 'FORWARD_ONLY' }), `${HCM_AT}.forwardClientCertDetails: FORWARD_ONLY: Remora does SANITIZE_SET on a gateway, as Istio`],
    ["XFCC: Envoy's default SANITIZE on a gateway", listenerWith('gateway', { forwardClientCertDetails: undefined }), `${HCM_AT}.forwardClientCertDetails: SANITIZE: Remora does SANITIZE_SET on a gateway, as Istio`],
    ['nothing to say', listenerWith('gateway'), ''],
  ];
  for (const [what, listener, message] of cases) {
    const got = importListeners([listener], INGRESS);
    t.equal(got.listeners.length, 1, `${what}: imported`);
    t.same(got.issues, message === '' ? [] : [`warning: Listener 0.0.0.0_8080: ${message}`], what);
  }
});

t.test("Remora's older capture: per-port listeners marked as its routeConfigsByPort fold back into it; unmarked ones are listeners of their own", async (t) => {
  const capture = listenerWith('outbound', { rds: { routeConfigName: '80' } }, { name: 'virtualOutbound', useOriginalDst: true, address: { socketAddress: { address: '0.0.0.0', portValue: 15001 } }, metadata: { filterMetadata: { remora: { impliedOriginalDst: true } } } });
  const port = (p: number, hcm: Record<string, unknown> = {}, marked = true): object =>
    listenerWith('outbound', { rds: { routeConfigName: String(p) }, statPrefix: `outbound_0.0.0.0_${p}`, ...hcm }, { name: `0.0.0.0_${p}`, bindToPort: false, address: { socketAddress: { address: '0.0.0.0', portValue: p } }, ...(marked ? { metadata: { filterMetadata: { remora: { routeConfigsByPortOf: 'virtualOutbound' } } } } : {}) });
  const got = importListeners([capture, port(9080), port(80)], SIDECAR);
  t.same(got.issues.filter((i) => !i.includes('statPrefix')), []);
  t.equal(got.listeners.length, 1);
  t.same(got.listeners[0]!.routeConfigsByPort, { 9080: '9080', 80: '80' });
  t.equal(got.listeners[0]!.routeConfig, '80');
  t.equal(got.listeners[0]!.useOriginalDst, undefined, 'the older capture has no useOriginalDst in the model');

  const bad = importListeners([capture, port(9080, { serverName: 'other' })], SIDECAR);
  t.same(bad.listeners.map((l) => l.routeConfigsByPort), [undefined], 'the capture stays; the unlike port listener is left out');
  t.ok(bad.issues.includes("Listener 0.0.0.0_9080: filterChains: its HTTP settings differ from those of the capture listener virtualOutbound; Remora serves every port of the capture with that listener's filters and settings, routing by port"));

  const own = importListeners([capture, port(9080, {}, false)], SIDECAR);
  t.same(
    own.listeners.map((l) => [l.name, l.bindToPort, l.routeConfig]),
    [
      ['virtualOutbound', undefined, '80'],
      ['0.0.0.0_9080', false, '9080'],
    ],
    "istiod's per-port listener (no such mark) is a listener of its own, not bound to its port",
  );
  const orphan = importListeners([port(9080)], SIDECAR);
  t.same(orphan.listeners, []);
  t.ok(orphan.issues.includes('Listener 0.0.0.0_9080: metadata.filterMetadata.remora.routeConfigsByPortOf: it stands for a port of listener virtualOutbound, which is not there'));
});

t.test("the HTTP connection manager's tracing, as istiod writes it, reads into the model's tracing", async (t) => {
  const otel = {
    clientSampling: { value: 100 },
    randomSampling: { value: 1 },
    overallSampling: { value: 100 },
    customTags: [
      { tag: 'istio.authorization.dry_run.allow_policy.name', metadata: { kind: { request: {} }, metadataKey: { key: 'envoy.filters.http.rbac', path: [{ key: 'istio_dry_run_allow_shadow_effective_policy_id' }] } } },
      { tag: 'istio.canonical_service', literal: { value: 'istio-ingressgateway' } },
    ],
    provider: {
      name: 'envoy.tracers.opentelemetry',
      typedConfig: { '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig', grpcService: { envoyGrpc: { clusterName: 'outbound|4317||otel-collector.observability.svc.cluster.local', authority: 'otel-collector.observability.svc.cluster.local' } }, serviceName: 'istio-ingressgateway.istio-system' },
    },
    spawnUpstreamSpan: true,
  };
  const got = importListeners([listenerWith('gateway', { tracing: otel })], INGRESS);
  t.same(got.issues, [], 'OTLP/gRPC is exported: no warning');
  t.same(got.listeners[0]!.tracing, {
    provider: { kind: 'opentelemetry', cluster: 'outbound|4317||otel-collector.observability.svc.cluster.local', authority: 'otel-collector.observability.svc.cluster.local', transport: 'grpc', path: '', serviceName: 'istio-ingressgateway.istio-system', timeoutMs: null, headers: {} },
    randomSamplingPercent: 1,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: [
      { tag: 'istio.authorization.dry_run.allow_policy.name', kind: 'metadata', filter: 'envoy.filters.http.rbac', key: 'istio_dry_run_allow_shadow_effective_policy_id', defaultValue: '' },
      { tag: 'istio.canonical_service', kind: 'literal', value: 'istio-ingressgateway' },
    ],
    spawnUpstreamSpan: true,
    maxPathTagLength: 256,
  });

  const zipkin = {
    randomSampling: { value: 100 },
    provider: { name: 'envoy.tracers.zipkin', typedConfig: { '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig', collectorCluster: 'outbound|9411||zipkin.istio-system.svc.cluster.local', collectorEndpoint: '/api/v2/spans', collectorHostname: 'zipkin.istio-system.svc.cluster.local', traceId128bit: true, sharedSpanContext: false, collectorEndpointVersion: 'HTTP_JSON' } },
  };
  const z = importListeners([listenerWith('outbound', { tracing: zipkin })], SIDECAR);
  t.same(z.issues, []);
  t.same(z.listeners[0]!.tracing?.provider, { kind: 'zipkin', cluster: 'outbound|9411||zipkin.istio-system.svc.cluster.local', authority: 'zipkin.istio-system.svc.cluster.local', path: '/api/v2/spans', traceId128Bit: true, sharedSpanContext: false }, "istiod's legacy Zipkin fields (collectorCluster, collectorEndpoint, collectorHostname)");

  const bad: [string, object, string][] = [
    // (A type the codec knows, so the listener parses: Datadog's config is not in Remora's registry at all.)
    ['a tracer Remora cannot export to', { provider: { name: 'envoy.tracers.other', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } } }, `${HCM_AT}.tracing.provider.typedConfig: tracer envoy.tracers.other (type.googleapis.com/envoy.extensions.filters.http.router.v3.Router) is not supported: Remora exports to OpenTelemetry and Zipkin collectors`],
    ['a sampling percentage over 100', { ...zipkin, randomSampling: { value: 120 } }, `${HCM_AT}.tracing.randomSampling.value: must be a percentage from 0 to 100, found 120`],
    ['Zipkin protobuf', { provider: { name: 'envoy.tracers.zipkin', typedConfig: { ...zipkin.provider.typedConfig, collectorEndpointVersion: 'HTTP_PROTO' } } }, `${HCM_AT}.tracing.provider.typedConfig.collectorEndpointVersion: HTTP_PROTO is not supported (HTTP_JSON only)`],
  ];
  for (const [what, tracing, message] of bad) {
    const r = importListeners([listenerWith('outbound', { tracing })], SIDECAR);
    t.same(r.listeners, [], `${what}: the listener is refused`);
    t.ok(r.issues.includes(`Listener 0.0.0.0_8080: ${message}`), what) || t.comment(r.issues.join('\n'));
  }
});

t.test('access logs of the connection manager and tcp_proxy: file and stdout loggers read, formats checked', async (t) => {
  const FILE = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog';
  const TCP = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
  const hcm = {
    ...istiodGatewayHcm('http.8080', 8080),
    accessLog: [
      { name: 'envoy.access_loggers.file', typedConfig: { '@type': FILE, path: '/var/log/a.log', logFormat: { jsonFormat: { code: '%RESPONSE_CODE%' } } } },
      { name: 'envoy.access_loggers.stdout', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog' } },
      { name: 'envoy.access_loggers.open_telemetry' },
    ],
  };
  const listeners = [
    { name: '0.0.0.0_8080', address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } }, filterChains: [{ filters: [{ name: HCM_NAME, typedConfig: hcm }] }] },
    {
      name: '0.0.0.0_9000',
      address: { socketAddress: { address: '0.0.0.0', portValue: 9000 } },
      filterChains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': TCP, statPrefix: 'x', cluster: 'x', accessLog: [{ name: 'f', typedConfig: { '@type': FILE, path: '/dev/stdout', logFormat: { textFormatSource: { inlineString: '%DURATION%\n' } } } }] } }] }],
    },
  ];
  const got = importListeners(listeners, INGRESS);
  t.same(got.listeners.find((l) => l.name === '0.0.0.0_8080')?.accessLog, [{ path: '/var/log/a.log', format: { json: { code: '%RESPONSE_CODE%' } } }, { path: '/dev/stdout' }]);
  t.same(got.listeners.find((l) => l.name === '0.0.0.0_9000')?.accessLog, [{ path: '/dev/stdout', format: { text: '%DURATION%\n' } }]);
  t.ok(got.issues.some((i) => /accessLog\[2\]: ignored: access logger envoy.access_loggers.open_telemetry is not supported/.test(i)), 'an OpenTelemetry logger is warned about');

  const bad = { ...hcm, accessLog: [{ name: 'f', typedConfig: { '@type': FILE, path: '/dev/stdout', logFormat: { textFormat: '%NOPE%' } } }] };
  const refused = importListeners([{ ...listeners[0]!, filterChains: [{ filters: [{ name: HCM_NAME, typedConfig: bad }] }] }], INGRESS);
  t.match(refused.issues.join('\n'), /Listener 0.0.0.0_8080: filterChains\[0\].filters\[0\].typedConfig.accessLog\[0\].typedConfig.logFormat: command operator %NOPE% is not supported/);
});
