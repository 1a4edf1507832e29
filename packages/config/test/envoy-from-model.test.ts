// The exporter that turns the model into Envoy's resources for /config_dump: every resource
// it writes must read back as Envoy's message with the generated schemas (an unknown field is
// an error), under istiod's names.
import type { JsonValue } from '@bufbuild/protobuf';
import t, { type Test } from 'tap';
import { bootstrapJson, envoyFromJson, envoyResourcesFromModel, envoyToJson, secretJson } from '@remora/config/envoy';
import { BootstrapSchema } from '@remora/config/envoy/gen/envoy/config/bootstrap/v3/bootstrap_pb.js';
import { ClusterSchema } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import { ListenerSchema } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import { RouteConfigurationSchema } from '@remora/config/envoy/gen/envoy/config/route/v3/route_pb.js';
import { SecretSchema } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import type { ProxyConfig } from '@remora/config';
import { BOOKINFO_SERVICES, INGRESS, nodeWith, PORTS, SIDECAR, translate } from './helpers/translate.ts';
import { captureMesh } from './helpers/capture-mesh.ts';
import { proxyConfigFromEnvoy } from '../src/envoy/to-model.ts';
import { formatImportIssue } from '../src/envoy/import-context.ts';

const MESH = `${BOOKINFO_SERVICES}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 10, connectTimeout: 2s}, http: {http1MaxPendingRequests: 5, maxRequestsPerConnection: 3}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}, queryParams: {debug: {regex: "on|yes"}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {exact: /gone}}]
    directResponse: {status: 410, body: {string: gone}}
  - match: [{uri: {prefix: /v3}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80, headers: {request: {set: {x-canary: "no"}}}}
    - {destination: {host: reviews, subset: v3}, weight: 20}
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,retriable-status-codes"}
    timeout: 5s
    rewrite: {uri: /reviews}
    headers: {response: {remove: [x-internal]}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 10}
    corsPolicy: {allowOrigins: [{exact: "https://shop.example.com"}], allowMethods: [GET, POST], maxAge: 1h}
`;

const SECURITY = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  jwtRules: [{issuer: "https://issuer.example.com", jwksUri: "https://issuer.example.com/jwks"}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
`;

const GATEWAY = `${BOOKINFO_SERVICES}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: MUTUAL, serverCertificate: /certs/partner.crt, privateKey: /certs/partner.key, caCertificates: /certs/ca.crt, subjectAltNames: [partner]}
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/bookinfo]
  http:
  - match: [{uri: {prefix: /productpage}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
  tls:
  - match: [{sniHosts: [db.example.com], port: 9443}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
`;

function sidecar(): ProxyConfig {
  const out = translate([MESH, SECURITY], SIDECAR, { ...PORTS, appPort: 9080 });
  if (out.issues.some((i) => i.severity === 'error')) throw new Error(out.brief.join('\n'));
  return out.config;
}

function gateway(): ProxyConfig {
  const out = translate(GATEWAY, INGRESS);
  if (out.issues.some((i) => i.severity === 'error')) throw new Error(out.brief.join('\n'));
  return out.config;
}

/** Reads a resource with the generated schema (unknown fields fail) and writes it back in /config_dump's spelling. */
function roundTrip(t: Test, schema: Parameters<typeof envoyFromJson>[0], json: unknown, what: string): Record<string, unknown> {
  try {
    return envoyToJson(schema, envoyFromJson(schema, json as JsonValue), { useProtoFieldName: true }) as Record<string, unknown>;
  } catch (err) {
    t.fail(`${what}: ${(err as Error).message}`);
    return {};
  }
}

t.test('every exported resource of a sidecar and a gateway reads as its Envoy message', async (t) => {
  for (const [kind, config] of [['sidecar', sidecar()], ['gateway', gateway()]] as const) {
    const res = envoyResourcesFromModel(config);
    t.ok(res.listeners.length > 0 && res.routeConfigs.length > 0 && res.clusters.length > 0, `${kind}: something to check`);
    for (const l of res.listeners) roundTrip(t, ListenerSchema, l, `${kind} listener ${l.name}`);
    for (const rc of res.routeConfigs) roundTrip(t, RouteConfigurationSchema, rc, `${kind} route config ${rc.name}`);
    for (const c of res.clusters) roundTrip(t, ClusterSchema, c, `${kind} cluster ${c.name}`);
    for (const e of res.endpoints) roundTrip(t, ClusterLoadAssignmentSchema, e.assignment, `${kind} endpoints ${e.assignment.clusterName}`);
    roundTrip(t, BootstrapSchema, bootstrapJson(config.node, { ip: '10.1.2.3', adminAddress: '127.0.0.1', adminPort: 15000 }), `${kind} bootstrap`);
  }
});

t.test("names are istiod's: listeners, route configs, clusters, SDS secrets", async (t) => {
  const sc = envoyResourcesFromModel(sidecar());
  t.same(sc.listeners.map((l) => l.name), ['virtualOutbound', '0.0.0.0_9080', 'virtualInbound']);
  t.same(sc.routeConfigs.map((r) => r.name), ['9080', 'inbound|9080||']);
  const capture = roundTrip(t, ListenerSchema, sc.listeners[0], 'virtualOutbound');
  t.equal(capture.use_original_dst, true, 'the capture listener hands connections on by original destination');
  const port = roundTrip(t, ListenerSchema, sc.listeners[1], '0.0.0.0_9080');
  t.match(port, { address: { socket_address: { address: '0.0.0.0', port_value: 9080 } }, bind_to_port: false, traffic_direction: 'OUTBOUND' });
  const hcm = ((port.filter_chains as Record<string, unknown>[])[0]!.filters as { typed_config: Record<string, unknown> }[])[0]!;
  t.match(hcm.typed_config, { stat_prefix: 'outbound_0.0.0.0_9080', rds: { route_config_name: '9080' } }, "the port's listener routes through istiod's per-port table");
  t.ok(sc.clusters.some((c) => c.name === 'outbound|9080|v1|reviews.default.svc.cluster.local'));
  t.ok(sc.clusters.some((c) => c.name === 'inbound|9080||'));
  t.same(sc.secrets.map((s) => s.name), ['default', 'ROOTCA']);
  const gw = envoyResourcesFromModel(gateway());
  t.same(gw.listeners.map((l) => l.name).sort(), ['0.0.0.0_8080', '0.0.0.0_8443', '0.0.0.0_9443']);
  t.ok(gw.routeConfigs.some((r) => r.name === 'http.8080'));
  t.same(gw.secrets.map((s) => s.name), ['kubernetes://bookinfo-cert', 'file-cert:/certs/partner.crt~/certs/partner.key', 'file-root:/certs/ca.crt']);
});

t.test('a sidecar cluster: EDS, LEAST_REQUEST, circuit breakers, outlier detection, Istio mTLS with SNI and SANs', async (t) => {
  const res = envoyResourcesFromModel(sidecar());
  const c = roundTrip(t, ClusterSchema, res.clusters.find((x) => x.name === 'outbound|9080|v1|reviews.default.svc.cluster.local'), 'cluster');
  t.equal(c.type, 'EDS');
  t.same(c.eds_cluster_config, { eds_config: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, service_name: 'outbound|9080|v1|reviews.default.svc.cluster.local' });
  t.equal(c.lb_policy, 'LEAST_REQUEST');
  t.equal(c.connect_timeout, '2s');
  t.match(c.circuit_breakers, { thresholds: [{ max_connections: 10, max_pending_requests: 5, max_requests: 4294967295, track_remaining: true }] });
  t.match(c.outlier_detection, { consecutive_5xx: 3, interval: '5s', base_ejection_time: '30s', max_ejection_percent: 50 });
  const tls = c.transport_socket as { typed_config: Record<string, unknown> };
  t.equal(tls.typed_config['@type'], 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext');
  t.equal(tls.typed_config.sni, 'outbound_.9080_.v1_.reviews.default.svc.cluster.local');
  t.match(tls.typed_config.common_tls_context, {
    tls_certificate_sds_secret_configs: [{ name: 'default' }],
    combined_validation_context: { validation_context_sds_secret_config: { name: 'ROOTCA' } },
  });
  t.same(c.metadata, {
    filter_metadata: {
      istio: {
        services: [{ host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' }],
        subset: 'v1',
        default_original_port: 9080,
        config: '/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews',
      },
      // Istio's locality setting, which Envoy's resources only carry as CLA priorities computed per proxy.
      remora: { localityLb: { distribute: [], failover: [], failoverPriority: [] } },
    },
  }, "istiod's cluster metadata: the service, and the DestinationRule that shaped the cluster");
  const ratings = roundTrip(t, ClusterSchema, res.clusters.find((x) => x.name === 'outbound|9080||ratings.default.svc.cluster.local'), 'ratings');
  t.notOk((ratings.metadata as { filter_metadata: { istio: Record<string, unknown> } }).filter_metadata.istio.config, 'no DestinationRule: no config link');
  const v3 = roundTrip(t, ClusterSchema, res.clusters.find((x) => x.name === 'outbound|9080|v3|reviews.default.svc.cluster.local'), 'v3');
  t.equal(v3.lb_policy, 'RING_HASH');
  const eds = res.endpoints.find((e) => e.assignment.clusterName === 'outbound|9080|v1|reviews.default.svc.cluster.local')!;
  t.ok(eds.eds, 'a mesh service is EDS');
  t.match(roundTrip(t, ClusterLoadAssignmentSchema, eds.assignment, 'cla'), { endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.1.1', port_value: 9080 } } }, load_balancing_weight: 1 }] }] });
});

t.test('routes: match, weighted clusters, retries, timeouts, redirects, direct responses, header edits, per-filter configs', async (t) => {
  const res = envoyResourcesFromModel(sidecar());
  const rc = roundTrip(t, RouteConfigurationSchema, res.routeConfigs.find((r) => r.name === '9080'), 'route config 9080');
  const vh = (rc.virtual_hosts as { name: string; routes: Record<string, unknown>[] }[]).find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!;
  const [jason, redirect, gone, v3, rest] = vh.routes;
  t.match(jason, {
    match: { prefix: '/api', headers: [{ name: 'end-user', string_match: { exact: 'jason' } }], query_parameters: [{ name: 'debug', string_match: { safe_regex: { regex: 'on|yes' } } }] },
    route: { cluster: 'outbound|9080|v2|reviews.default.svc.cluster.local' },
    metadata: { filter_metadata: { istio: { config: '/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews' } } },
  });
  const fault = (jason!.typed_per_filter_config as Record<string, Record<string, unknown>>)['envoy.filters.http.fault']!;
  t.ok(['type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault', 'type.googleapis.com/xds.type.v3.TypedStruct'].includes(fault['@type'] as string), 'the route fault is typed');
  if (fault['@type'] === 'type.googleapis.com/xds.type.v3.TypedStruct') t.equal(fault.type_url, 'type.googleapis.com/remora.envoy.filters.http.fault', "Remora's own config says so");
  t.match(redirect, { match: { path: '/old' }, redirect: { path_redirect: '/new', response_code: 'FOUND' } });
  t.match(gone, { match: { path: '/gone' }, direct_response: { status: 410, body: { inline_string: 'gone' } } });
  t.match(v3, { route: { cluster: 'outbound|9080|v3|reviews.default.svc.cluster.local', hash_policy: [{ header: { header_name: 'x-user' } }] } });
  t.match(rest, {
    match: { prefix: '/' },
    response_headers_to_remove: ['x-internal'],
    route: {
      weighted_clusters: {
        clusters: [
          { name: 'outbound|9080|v1|reviews.default.svc.cluster.local', weight: 80, request_headers_to_add: [{ header: { key: 'x-canary', value: 'no' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }] },
          { name: 'outbound|9080|v3|reviews.default.svc.cluster.local', weight: 20 },
        ],
      },
      timeout: '5s',
      prefix_rewrite: '/reviews',
      retry_policy: { retry_on: '5xx,retriable-status-codes', num_retries: 2, per_try_timeout: '1s' },
      request_mirror_policies: [{ cluster: 'outbound|9080||ratings.default.svc.cluster.local', runtime_fraction: { default_value: { numerator: 100000, denominator: 'MILLION' } } }],
    },
    typed_per_filter_config: {
      'envoy.filters.http.cors': { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy', allow_origin_string_match: [{ exact: 'https://shop.example.com' }], allow_methods: 'GET,POST', max_age: '3600' },
    },
  });
});

t.test("listeners: inbound mTLS chains, the connection manager's settings, HTTP filters typed or marked as Remora's own", async (t) => {
  const res = envoyResourcesFromModel(sidecar());
  const inbound = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === 'virtualInbound'), 'inbound');
  // istiod's populateListenerFilters: http_inspector only where a chain matches HTTP's ALPNs (none here: no port is sniffed).
  t.same((inbound.listener_filters as { name: string }[]).map((f) => f.name), ['envoy.filters.listener.original_dst', 'envoy.filters.listener.tls_inspector']);
  const all = inbound.filter_chains as Record<string, unknown>[];
  t.same(
    all.map((c) => [c.name ?? '', c.filter_chain_match ?? null]),
    [
      // Connections made to 15006 directly: the --app-port's chains.
      ['', { destination_port: 15006, transport_protocol: 'tls' }],
      ['', { destination_port: 15006, transport_protocol: 'raw_buffer' }],
      ['0.0.0.0_9080', { destination_port: 9080, transport_protocol: 'tls' }],
      ['0.0.0.0_9080', { destination_port: 9080, transport_protocol: 'raw_buffer' }],
      // Ports no service declares go to the app as they came.
      ['virtualInbound', null],
    ],
    "the port's chains in virtualInbound, named as istiod names them, PERMISSIVE: a TLS chain and a plaintext one",
  );
  t.match(all[4]!.filters, [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { cluster: 'InboundPassthroughCluster' } }]);
  const chains = all.slice(2, 4);
  t.match(chains[0]!.transport_socket, { typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext', require_client_certificate: true } });
  t.notOk('transport_socket' in chains[1]!, 'the plaintext chain terminates nothing');
  const hcm = (chains[1]!.filters as { name: string; typed_config: Record<string, unknown> }[])[0]!;
  t.equal(hcm.name, 'envoy.filters.network.http_connection_manager');
  t.match(hcm.typed_config, { stat_prefix: 'inbound_0.0.0.0_9080', rds: { route_config_name: 'inbound|9080||' }, server_name: 'istio-envoy' });
  const filters = hcm.typed_config.http_filters as { name: string; typed_config: Record<string, unknown> }[];
  t.same(filters.map((f) => f.name), ['envoy.filters.http.jwt_authn', 'envoy.filters.http.rbac', 'envoy.filters.http.cors', 'envoy.filters.http.router'], "istiod's order, the router once and last");
  for (const f of filters) {
    const type = f.typed_config['@type'] as string;
    if (type === 'type.googleapis.com/xds.type.v3.TypedStruct') t.equal(f.typed_config.type_url, `type.googleapis.com/remora.${f.name}`, `${f.name}: Remora's own config, marked as such`);
    else t.match(type, /^type\.googleapis\.com\/envoy\.extensions\.filters\.http\./, `${f.name}: its Envoy message`);
  }
});

t.test('an HTTP filter whose config is Envoy JSON goes out as that message; a private one inside a TypedStruct', async (t) => {
  const base = sidecar();
  const inbound = base.listeners.find((l) => l.name === 'virtualInbound')!;
  const rbac = { rules: { action: 'DENY', policies: { 'ns[default]-policy[allow-get]-rule[0]': { permissions: [{ any: true }], principals: [{ any: true }] } } } };
  const config: ProxyConfig = {
    ...base,
    listeners: [{ ...inbound, httpFilters: [{ name: 'envoy.filters.http.rbac', config: rbac }, { name: 'envoy.filters.http.local_ratelimit', config: { key: 'private', tokens: 3 } }] }],
  };
  const l = roundTrip(t, ListenerSchema, envoyResourcesFromModel(config).listeners[0], 'listener');
  const hcm = ((l.filter_chains as Record<string, unknown>[])[0]!.filters as { typed_config: { http_filters: Record<string, unknown>[] } }[])[0]!.typed_config;
  t.same(hcm.http_filters[0], { name: 'envoy.filters.http.rbac', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC', ...rbac } });
  t.same(hcm.http_filters[1], {
    name: 'envoy.filters.http.local_ratelimit',
    typed_config: { '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', type_url: 'type.googleapis.com/remora.envoy.filters.http.local_ratelimit', value: { key: 'private', tokens: 3 } },
  });
});

t.test('gateway listeners: SNI chains with SDS credentials, mTLS validation, TLS passthrough to tcp_proxy', async (t) => {
  const res = envoyResourcesFromModel(gateway());
  const https = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === '0.0.0.0_8443'), '8443');
  const chains = https.filter_chains as Record<string, unknown>[];
  t.same(chains.map((c) => c.filter_chain_match), [{ server_names: ['bookinfo.example.com'] }, { server_names: ['partner.example.com'] }]);
  t.match(chains[0]!.transport_socket, { typed_config: { common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'kubernetes://bookinfo-cert' }] } } });
  t.match(chains[1]!.transport_socket, {
    typed_config: {
      common_tls_context: { combined_validation_context: { default_validation_context: { match_subject_alt_names: [{ exact: 'partner' }] }, validation_context_sds_secret_config: { name: 'file-root:/certs/ca.crt' } } },
      require_client_certificate: true,
    },
  });
  const passthrough = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === '0.0.0.0_9443'), '9443');
  t.match(passthrough.filter_chains, [{ filter_chain_match: { server_names: ['db.example.com'] }, filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { cluster: 'outbound|9080||ratings.default.svc.cluster.local' } }] }]);
});

t.test("a secret: the chain inline, the private key '[redacted]' as Envoy's admin API prints it", async (t) => {
  const s = roundTrip(t, SecretSchema, secretJson('default', { certChainPem: '-----BEGIN CERTIFICATE-----\nabc\n' }), 'secret');
  const key = (s.tls_certificate as { private_key: { inline_bytes: string } }).private_key.inline_bytes;
  t.equal(Buffer.from(key, 'base64').toString(), '[redacted]');
  const roots = roundTrip(t, SecretSchema, secretJson('ROOTCA', { rootsPem: 'ROOTS' }), 'roots');
  t.same(roots, { name: 'ROOTCA', validation_context: { trusted_ca: { inline_bytes: Buffer.from('ROOTS').toString('base64') } } });
});

// istio-agent's bootstrap names the service cluster `<app label>.<namespace>` (pkg/bootstrap serviceClusterOrDefault).
t.test("the bootstrap node as Istio's agent describes it", async (t) => {
  const b = roundTrip(t, BootstrapSchema, bootstrapJson(nodeWith(SIDECAR, { locality: 'us-east/us-east-1a/' }), { ip: '10.1.2.3', adminAddress: '127.0.0.1', adminPort: 15000 }), 'bootstrap');
  t.match(b, {
    node: { id: 'sidecar~10.1.2.3~productpage-v1.default~default.svc.cluster.local', cluster: 'productpage.default', metadata: { NAMESPACE: 'default', LABELS: { app: 'productpage' } }, locality: { region: 'us-east', zone: 'us-east-1a' } },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 15000 } } },
  });
});

t.test("a captured sidecar in istiod's shapes: virtualOutbound, virtualInbound with a chain per port, per-port listeners not bound, protocol detection", async (t) => {
  // Names, matches and listener filters as pilot/pkg/networking/core builds them (listener_builder.go,
  // listener.go buildListenerFromEntry, listener_inbound.go, filterchain_options.go).
  const e = envoyResourcesFromModel(captureMesh());
  for (const l of e.listeners) t.doesNotThrow(() => envoyFromJson(ListenerSchema, l as JsonValue), `${l.name} reads as an Envoy Listener`);
  const byName = new Map(e.listeners.map((l) => [l.name, l]));
  t.same([...byName.keys()], ['virtualOutbound', '0.0.0.0_9080', '0.0.0.0_8080', '10.96.0.5_6379', '0.0.0.0_443', '10.96.0.7_3306', 'virtualInbound'], 'the inbound ports are chains of virtualInbound, not listeners');
  const filterNames = (name: string) => (byName.get(name)!.listenerFilters ?? []).map((f) => f.name);
  const chainSummary = (name: string) =>
    byName.get(name)!.filterChains!.map((c) => ({
      name: c.name,
      match: c.filterChainMatch,
      tls: c.transportSocket !== undefined,
      // The terminal filter (Istio's metadata exchange goes before it where the port has it).
      filter: c.filters!.at(-1)!.name === 'envoy.filters.network.tcp_proxy' ? (c.filters!.at(-1)!.typedConfig as { cluster?: string }).cluster : 'hcm',
    }));

  const vo = byName.get('virtualOutbound')!;
  t.equal(vo.useOriginalDst, true);
  t.same(filterNames('virtualOutbound'), ['envoy.filters.listener.original_dst']);
  t.same(chainSummary('virtualOutbound'), [
    { name: 'virtualOutbound-blackhole', match: { destinationPort: 15001 }, tls: false, filter: 'BlackHoleCluster' },
    { name: 'virtualOutbound-catchall-tcp', match: undefined, tls: false, filter: 'PassthroughCluster' },
  ]);

  const http = byName.get('0.0.0.0_8080')!;
  t.equal(http.bindToPort, false);
  t.equal(http.useOriginalDst, undefined, 'a per-port listener is handed connections; it hands none on');
  t.same(filterNames('0.0.0.0_8080'), ['envoy.filters.listener.tls_inspector', 'envoy.filters.listener.http_inspector']);
  t.equal(http.listenerFiltersTimeout, '0s');
  t.equal(http.continueOnListenerFiltersTimeout, true);
  t.same(chainSummary('0.0.0.0_8080'), [
    { name: undefined, match: { transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.0', 'http/1.1', 'h2c'] }, tls: false, filter: 'hcm' },
    { name: undefined, match: undefined, tls: false, filter: 'PassthroughCluster' },
  ]);
  t.same(chainSummary('0.0.0.0_443'), [
    { name: undefined, match: { serverNames: ['api.example.com'] }, tls: false, filter: 'outbound|443||api.example.com' },
    { name: undefined, match: undefined, tls: false, filter: 'PassthroughCluster' },
  ]);
  t.same(filterNames('0.0.0.0_443'), ['envoy.filters.listener.tls_inspector'], 'SNI needs the TLS inspector');
  t.same(filterNames('10.96.0.5_6379'), [], 'a plain TCP port inspects nothing');

  const vi = byName.get('virtualInbound')!;
  t.equal(vi.useOriginalDst, undefined, "istiod's virtualInbound serves its ports as its own chains: no hand-over");
  t.same(filterNames('virtualInbound'), ['envoy.filters.listener.original_dst', 'envoy.filters.listener.tls_inspector', 'envoy.filters.listener.http_inspector']);
  t.same(chainSummary('virtualInbound'), [
    { name: 'virtualInbound-blackhole', match: { destinationPort: 15006 }, tls: false, filter: 'BlackHoleCluster' },
    { name: '0.0.0.0_9080', match: { destinationPort: 9080, transportProtocol: 'tls' }, tls: true, filter: 'hcm' },
    { name: '0.0.0.0_9080', match: { destinationPort: 9080, transportProtocol: 'raw_buffer' }, tls: false, filter: 'hcm' },
    { name: '0.0.0.0_5432', match: { destinationPort: 5432, transportProtocol: 'tls' }, tls: true, filter: 'inbound|5432||' },
    { name: '0.0.0.0_8000', match: { destinationPort: 8000, transportProtocol: 'tls', applicationProtocols: ['istio-http/1.0', 'istio-http/1.1', 'istio-h2'] }, tls: true, filter: 'hcm' },
    { name: '0.0.0.0_8000', match: { destinationPort: 8000, transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.0', 'http/1.1', 'h2c'] }, tls: false, filter: 'hcm' },
    { name: '0.0.0.0_8000', match: { destinationPort: 8000, transportProtocol: 'tls' }, tls: true, filter: 'inbound|8000||' },
    { name: '0.0.0.0_8000', match: { destinationPort: 8000, transportProtocol: 'raw_buffer' }, tls: false, filter: 'inbound|8000||' },
    { name: 'virtualInbound', match: undefined, tls: false, filter: 'InboundPassthroughCluster' },
  ]);
  const hcm = vi.filterChains![1]!.filters![0]!.typedConfig as { statPrefix?: string; forwardClientCertDetails?: string };
  t.equal(hcm.statPrefix, 'inbound_0.0.0.0_9080', "the port's HTTP stats as istiod names them");
  t.equal(hcm.forwardClientCertDetails, 'APPEND_FORWARD');

  t.same(e.nameTable, {
    table: {
      'reviews.default.svc.cluster.local': { ips: ['10.96.0.9'], registry: 'Kubernetes', shortname: 'reviews', namespace: 'default' },
      'api.example.com': { ips: ['240.240.0.1', '240.240.0.2'], registry: 'External' },
    },
  }, "the name table as istiod's NDS message");
});

t.test('a captured sidecar reads back whole: listeners, clusters and the name table', async (t) => {
  const config = captureMesh();
  const { config: got, issues } = proxyConfigFromEnvoy(envoyResourcesFromModel(config), config.node, config.version, false);
  t.same(issues, []);
  const byName = <T extends { name: string }>(xs: readonly T[]): T[] => [...xs].sort((a, b) => (a.name < b.name ? -1 : 1));
  t.same(byName(got.listeners), byName(config.listeners));
  t.strictSame(got.clusters, config.clusters);
  t.same(got.nameTable, config.nameTable);
  const { nameTable: _, ...noTable } = config;
  const without = proxyConfigFromEnvoy(envoyResourcesFromModel(noTable), config.node, 'v', false);
  t.equal(without.config.nameTable, undefined, 'no table: none comes back');
});

t.test("Istio's TCP metadata exchange goes out as istiod writes it and reads back", async (t) => {
  const config = captureMesh();
  const res = envoyResourcesFromModel(config);
  // istiod's TCPListenerMx / TCPClusterMx, as the waypoint golden's direct-tcp chain prints it.
  const ISTIOD_MX = {
    name: 'istio.metadata_exchange',
    typed_config: {
      '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct',
      type_url: 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange',
      value: { protocol: 'istio-peer-exchange', enable_discovery: true },
    },
  };
  const vi = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === 'virtualInbound'), 'virtualInbound') as { filter_chains: { name?: string; filters: { name: string }[] }[] };
  const tcp5432 = vi.filter_chains.filter((c) => c.name === '0.0.0.0_5432');
  t.equal(tcp5432.length, 1, 'the STRICT TCP port: one mTLS chain');
  t.same(tcp5432[0]!.filters[0], ISTIOD_MX, 'first in the chain, in istiod\'s shape');
  t.same(tcp5432[0]!.filters.map((f) => f.name), ['istio.metadata_exchange', 'envoy.filters.network.tcp_proxy']);
  const blackhole = vi.filter_chains.find((c) => c.name === 'virtualInbound-blackhole')!;
  t.equal(blackhole.filters[0]!.name, 'istio.metadata_exchange', "the capture's own chain carries it (istiod's buildInboundBlackhole)");
  for (const c of vi.filter_chains.filter((x) => x.name === '0.0.0.0_9080')) t.notOk(c.filters.some((f) => f.name === 'istio.metadata_exchange'), 'a port without the setting has none');
  const redis = roundTrip(t, ClusterSchema, res.clusters.find((c) => c.name === 'outbound|6379||redis.default.svc.cluster.local'), 'redis');
  t.same(redis.filters, [ISTIOD_MX], "the cluster filter, as istiod's TCPClusterMx");
  const bare = roundTrip(t, ClusterSchema, res.clusters.find((c) => c.name === 'inbound|5432||'), 'inbound|5432||');
  t.equal(bare.filters, undefined, 'a cluster without the setting has no filters');

  const { config: got, issues } = proxyConfigFromEnvoy(res, config.node, config.version, false);
  t.same(issues, []);
  t.equal(got.listeners.find((l) => l.name === 'inbound_0.0.0.0_5432')?.metadataExchange, true);
  t.equal(got.listeners.find((l) => l.name === 'virtualInbound')?.metadataExchange, true);
  t.equal(got.listeners.find((l) => l.name === 'inbound_0.0.0.0_9080')?.metadataExchange, undefined);
  t.equal(got.clusters.find((c) => c.name === 'outbound|6379||redis.default.svc.cluster.local')?.metadataExchange, true);
  t.equal(got.clusters.find((c) => c.name === 'inbound|5432||')?.metadataExchange, undefined);
});

t.test('a MetadataExchange the runtime cannot honour is named by resource and field', async (t) => {
  const config = captureMesh();
  const res = envoyResourcesFromModel(config);
  const cluster = res.clusters.find((c) => c.name === 'outbound|6379||redis.default.svc.cluster.local')!;
  const odd = { ...cluster, filters: [{ name: 'istio.metadata_exchange', typedConfig: { '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange', protocol: 'other', additionalLabels: ['role'] } }] };
  const { issues } = proxyConfigFromEnvoy({ ...res, clusters: res.clusters.map((c) => (c === cluster ? odd : c)) } as typeof res, config.node, config.version, false);
  const lines = issues.map(formatImportIssue);
  t.ok(lines.includes("Cluster outbound|6379||redis.default.svc.cluster.local: filters[0].typedConfig.protocol: only istio-peer-exchange is supported (the ALPN Istio's proxies exchange metadata under)"), lines.join('\n'));
  t.ok(lines.includes("warning: Cluster outbound|6379||redis.default.svc.cluster.local: filters[0].typedConfig.additionalLabels: ignored: Istio's standard peer labels are the ones reported"), lines.join('\n'));
});

t.test('unix domain sockets: a Sidecar\'s pipe listeners and pipe endpoint go out as Envoy pipe addresses and read back', async (t) => {
  const sidecarYaml = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: uds, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: somename}
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port: {number: 0, protocol: HTTP, name: http-uds}
    bind: unix:///var/run/egress.sock
    hosts: ["./ratings.default.svc.cluster.local"]
  - port: {number: 0, protocol: TCP, name: tcp-uds}
    bind: unix://@egress-tcp
    hosts: ["./ratings.default.svc.cluster.local"]
  - hosts: ["./*"]
---
`;
  const out = translate(BOOKINFO_SERVICES + sidecarYaml, SIDECAR, { ...PORTS, appPort: 9080 });
  t.same(out.brief, []);
  const config = out.config;
  const res = envoyResourcesFromModel(config);
  const http = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === 'unix:///var/run/egress.sock_0'), 'http pipe listener');
  t.same(http.address, { pipe: { path: '/var/run/egress.sock' } }, 'the HTTP listener: a pipe address, as istiod\'s BuildAddress writes a unix bind');
  const tcp = roundTrip(t, ListenerSchema, res.listeners.find((l) => l.name === 'unix://@egress-tcp_0'), 'tcp pipe listener');
  t.same(tcp.address, { pipe: { path: '@egress-tcp' } }, 'an abstract socket keeps its @');
  const cla = roundTrip(t, ClusterLoadAssignmentSchema, res.endpoints.find((e) => e.assignment.clusterName === 'inbound|9080||')?.assignment, 'inbound|9080||') as { endpoints: { lb_endpoints: { endpoint: { address: unknown } }[] }[] };
  t.same(cla.endpoints[0]!.lb_endpoints[0]!.endpoint.address, { pipe: { path: '/var/run/someuds.sock' } }, 'the inbound cluster\'s endpoint is the pipe');

  const { config: got, issues } = proxyConfigFromEnvoy(res, config.node, config.version, false);
  t.same(issues, []);
  const byName = <T extends { name: string }>(xs: readonly T[]): T[] => [...xs].sort((a, b) => (a.name < b.name ? -1 : 1));
  t.same(byName(got.listeners), byName(config.listeners), 'the listeners read back whole');
  t.strictSame(got.clusters.find((c) => c.name === 'inbound|9080||'), config.clusters.find((c) => c.name === 'inbound|9080||'), 'the inbound cluster reads back whole');
  t.match(got.listeners.find((l) => l.name === 'unix:///var/run/egress.sock_0'), { address: 'unix:///var/run/egress.sock', port: 0, pipe: { path: '/var/run/egress.sock', mode: 0 } });

  // Envoy's own: a pipe with a mode; bad ones named by resource and field.
  const withMode = structuredClone(res);
  const l = withMode.listeners.find((x) => x.name === 'unix:///var/run/egress.sock_0')!;
  l.address = { pipe: { path: '/var/run/egress.sock', mode: 0o660 } };
  t.match(proxyConfigFromEnvoy(withMode, config.node, 'v', false).config.listeners.find((x) => x.name === l.name)?.pipe, { mode: 0o660 }, 'mode is read');
  l.address = { pipe: { path: '' } };
  const bad = proxyConfigFromEnvoy(withMode, config.node, 'v', false);
  t.match(bad.issues.map(formatImportIssue).join('\n'), /unix:\/\/\/var\/run\/egress\.sock_0.*address\.pipe\.path.*needs a path/, 'an empty path is named');
});
