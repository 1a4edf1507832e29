// Envoy's Cluster and ClusterLoadAssignment read into the runtime's cluster model: back from
// what the exporter writes (losslessly, for every translated mesh), from what istiod sends,
// with Envoy's defaults for unset fields, and with an error or warning for each field Remora
// cannot honour.
import type { JsonValue } from '@bufbuild/protobuf';
import t from 'tap';
import type { Cluster } from '@remora/config';
import { envoyFromJson, envoyResourcesFromModel, envoyToJson } from '@remora/config/envoy';
import { ClusterSchema, type ClusterJson } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema, type ClusterLoadAssignmentJson } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import { ImportContext, formatImportIssue } from '../src/envoy/import-context.ts';
import { clusterFromEnvoy } from '../src/envoy/to-model-clusters.ts';
import { allMeshes } from './helpers/meshes.ts';
import { SIDECAR, translate } from './helpers/translate.ts';

/** Every cluster policy a DestinationRule can set, on services of each resolution and protocol. */
const POLICIES = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: grpc, protocol: GRPC}, {number: 5432, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/zone1/a, labels: {version: v1, security.istio.io/tlsMode: istio}, serviceAccount: shop}
  - {address: 10.0.0.2, locality: us-west/zone2, labels: {version: v2}, weight: 3}
  - {address: 10.0.0.3, locality: eu, labels: {version: v3, app: shop}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: default}
spec:
  host: shop
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmupDurationSecs: 30s
      localityLbSetting:
        failover: [{from: us-east, to: eu}]
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms, maxConnectionDuration: 1h, tcpKeepalive: {time: 30s}, idleTimeout: 90s}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 20, maxRequestsPerConnection: 5, maxRetries: 2, maxConcurrentStreams: 50}
    outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 4, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 40, minHealthPercent: 25}
    portLevelSettings:
    - port: {number: 81}
      loadBalancer: {consistentHash: {httpCookie: {name: session, path: /, ttl: 60s}, minimumRingSize: 2048}}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 64}}
      tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/other], sni: shop.internal}
    - port: {number: 5432}
      tls: {mode: DISABLE}
      connectionPool: {tcp: {idleTimeout: 20s, maxConnectionDuration: 30m}, http: {maxRequestsPerConnection: 3, maxConcurrentStreams: 9}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 10s, localityLbSetting: {distribute: [{from: us-east/*, to: {"us-east/*": 80, "us-west/*": 20}}]}}
      outlierDetection: {consecutive5xxErrors: 7}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}, localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, version]}}
      outlierDetection: {consecutive5xxErrors: 1}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpQueryParameterName: user}}
      tls: {mode: MUTUAL, clientCertificate: /certs/client.crt, privateKey: /certs/client.key, caCertificates: /certs/ca.crt, subjectAltNames: [shop.example.com]}
  - name: h
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, sni: api.example.com, caCertificates: /certs/ext-ca.crt, subjectAltNames: [api.example.com]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: default}
spec:
  host: legacy.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: true}
`;

/** A dump's entries are Anys: their `@type` goes before reading the message. */
function withoutType(json: unknown): JsonValue {
  const { '@type': _, ...rest } = json as Record<string, JsonValue>;
  return rest;
}

/** As from xDS: read with the generated schema (unknown fields fail) and written back in canonical form. */
function canonicalCluster(json: unknown): ClusterJson {
  return envoyToJson(ClusterSchema, envoyFromJson(ClusterSchema, withoutType(json))) as ClusterJson;
}

function canonicalCla(json: unknown): ClusterLoadAssignmentJson {
  return envoyToJson(ClusterLoadAssignmentSchema, envoyFromJson(ClusterLoadAssignmentSchema, withoutType(json))) as ClusterLoadAssignmentJson;
}

t.test('round trip: every cluster of every translated mesh reads back as it was exported', async (t) => {
  const policies = translate(POLICIES, SIDECAR);
  t.same(policies.brief.filter((b) => b.startsWith('error')), [], 'the policy mesh translates');
  const meshes = [{ name: 'policies', config: policies.config }, ...allMeshes()];
  t.ok(meshes.length > 40, `${meshes.length} meshes`);
  let clusters = 0;
  for (const { name, config } of meshes) {
    const res = envoyResourcesFromModel(config);
    const ctx = new ImportContext(res.secrets);
    config.clusters.forEach((model: Cluster, i) => {
      const cla = res.endpoints[i]!;
      const got = clusterFromEnvoy(canonicalCluster(res.clusters[i]), cla.eds ? canonicalCla(cla.assignment) : undefined, ctx, model.lb.kind === 'ring-hash' ? model.lb.key : undefined);
      t.strictSame(got, model, `${name}: ${model.name}`);
      clusters++;
    });
    t.same(ctx.issues.map(formatImportIssue), [], `${name}: no issues`);
  }
  t.comment(`${clusters} clusters`);
});

// ---- istiod's real output ----

import { readGolden, GOLDENS_DIR, GOLDENS_MISSING } from './helpers/envoy.ts';

const goldens = { skip: GOLDENS_DIR === null ? GOLDENS_MISSING : false };

type DumpSection = { '@type': string } & Record<string, unknown>;
function sections(file: string): DumpSection[] {
  return (readGolden(file) as { configs: DumpSection[] }).configs;
}

/** A cluster as it appears in a dump (snake_case), canonical. */
function dumped(section: DumpSection, key: string): ClusterJson[] {
  return ((section[key] ?? []) as { cluster: unknown }[]).map((c) => canonicalCluster(c.cluster));
}

function issuesOf(ctx: ImportContext): string[] {
  return ctx.issues.map(formatImportIssue);
}

const DEFAULT_POOL = {
  maxConnections: 1024,
  connectTimeoutMs: 5000,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRequestsPerConnection: 0,
  maxRetries: 3,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};

t.test("istiod's static clusters import with Envoy's defaults; an internal listener cluster is refused by name", goldens, async (t) => {
  const dump = sections('proxy-config/config_dump.json').find((s) => s['@type'].endsWith('.ClustersConfigDump'))!;
  const ctx = new ImportContext();
  const [agent, prometheus] = dumped(dump, 'static_clusters').map((c) => clusterFromEnvoy(c, undefined, ctx));
  t.strictSame(agent, {
    name: 'agent',
    service: null,
    subset: '',
    discovery: 'static',
    endpoints: [{ address: '127.0.0.1', port: 15020, labels: {}, weight: 1, locality: '', workloadName: '', namespace: '', serviceAccount: '' }],
    dnsRefreshMs: 5000,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: { ...DEFAULT_POOL, connectTimeoutMs: 250 },
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
  });
  t.equal(prometheus?.name, 'prometheus_stats');
  t.same(issuesOf(ctx), []);
  const [vip] = dumped(dump, 'dynamic_active_clusters');
  t.equal(clusterFromEnvoy(vip!, undefined, ctx), null);
  t.same(issuesOf(ctx), [
    'Cluster inbound-vip|8000|http|httpbin.default.svc.cluster.local: transportSocket: transport socket internal_upstream (type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport) is not supported',
  ]);
});

/** istiod's outbound cluster for a subset with a DestinationRule (istioctl's describe testdata), Istio mTLS by auto mTLS. */
const ISTIOD_PRODUCTPAGE_V1 = {
  name: 'outbound|9080|v1|productpage.default.svc.cluster.local',
  type: 'EDS',
  eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, service_name: 'outbound|9080|v1|productpage.default.svc.cluster.local' },
  connect_timeout: '10s',
  lb_policy: 'LEAST_REQUEST',
  circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] },
  metadata: {
    filter_metadata: {
      istio: {
        default_original_port: 9080,
        services: [{ host: 'productpage.default.svc.cluster.local', namespace: 'default', name: 'productpage' }],
        config: '/apis/networking.istio.io/v1alpha3/namespaces/default/destination-rule/productpage',
        subset: 'v1',
      },
    },
  },
  filters: [{ name: 'istio.metadata_exchange', typed_config: { '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange', protocol: 'istio-peer-exchange' } }],
  transport_socket_matches: [
    {
      name: 'tlsMode-istio',
      match: { tlsMode: 'istio' },
      transport_socket: {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
          common_tls_context: {
            tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
            alpn_protocols: ['istio-peer-exchange', 'istio'],
            tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
            combined_validation_context: {
              default_validation_context: {
                match_subject_alt_names: [{ exact: 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage' }, { exact: 'spiffe://cluster.local/ns/default/sa/default' }],
              },
              validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {}, resource_api_version: 'V3' } },
            },
          },
          sni: 'outbound_.9080_.v1_.productpage.default.svc.cluster.local',
        },
      },
    },
    { name: 'tlsMode-disabled', match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' } } },
  ],
};

t.test("istiod's outbound EDS cluster with the endpoint dump's assignments: auto mTLS, service, subset, workloads", goldens, async (t) => {
  const eds = sections('proxy-config/endpoint/configdump.json')[0]!;
  const clas = ((eds['dynamic_endpoint_configs'] ?? []) as { endpoint_config: unknown }[]).map((e) => canonicalCla(e.endpoint_config));
  // The dump has the service's assignment; the v1 subset's (istiod's subset CLA) is the same pod under the subset's name.
  const whole = clas.find((c) => c.clusterName === 'outbound|9080||productpage.default.svc.cluster.local')!;
  const cla = { ...whole, clusterName: ISTIOD_PRODUCTPAGE_V1.name };
  const ctx = new ImportContext();
  // Istio's MetadataExchange is not in the codec's registry: the filter goes back in after canonicalising.
  const { filters, ...rest } = ISTIOD_PRODUCTPAGE_V1;
  const json: ClusterJson = { ...canonicalCluster(rest), filters: [{ name: filters[0]!.name, typedConfig: { ...filters[0]!.typed_config } }] };
  const c = clusterFromEnvoy(json, cla, ctx);
  t.ok(c, issuesOf(ctx).join('\n'));
  if (c === null) return;
  t.same(c.service, { host: 'productpage.default.svc.cluster.local', name: 'productpage', namespace: 'default', port: 9080 });
  t.same(c.destinationRule, { namespace: 'default', name: 'productpage' }, 'the v1alpha3 path names the rule too');
  t.equal(c.subset, 'v1');
  t.equal(c.discovery, 'static');
  t.same(c.lb, { kind: 'least-request' });
  t.equal(c.protocol, 'http1', 'no HTTP options: HTTP/1.1, Envoy\'s default codec');
  t.same(c.connectionPool, { ...DEFAULT_POOL, connectTimeoutMs: 10_000, maxConnections: 0, maxPendingRequests: 0, maxRequests: 0, maxRetries: 0 }, '4294967295 is unlimited: 0');
  t.equal(c.outlierDetection, null);
  t.equal(c.tls, null, 'auto mTLS');
  t.same(c.serviceAccounts, ['spiffe://cluster.local/ns/default/sa/bookinfo-productpage', 'spiffe://cluster.local/ns/default/sa/default']);
  t.same(c.endpoints, [
    {
      address: '10.244.0.194',
      port: 9080,
      labels: { 'security.istio.io/tlsMode': 'istio', 'service.istio.io/canonical-name': 'productpage', app: 'productpage', 'service.istio.io/canonical-revision': 'v1', version: 'v1' },
      weight: 1,
      locality: '',
      workloadName: 'productpage-v1',
      namespace: 'default',
      serviceAccount: '',
    },
  ]);
  t.equal(c.metadataExchange, true, "istiod's cluster filter: Istio's TCP metadata exchange on this cluster's mTLS connections");
  t.same(issuesOf(ctx), []);
});

t.test("every assignment of istiod's endpoint dump imports, or is refused for a named field", goldens, async (t) => {
  const eds = sections('proxy-config/endpoint/configdump.json')[0]!;
  const ctx = new ImportContext();
  let endpoints = 0;
  for (const e of (eds['dynamic_endpoint_configs'] ?? []) as { endpoint_config: unknown }[]) {
    const cla = canonicalCla(e.endpoint_config);
    const c = clusterFromEnvoy({ name: cla.clusterName!, type: 'EDS', edsClusterConfig: { serviceName: cla.clusterName! } }, cla, ctx);
    t.ok(c, cla.clusterName ?? '');
    endpoints += c?.endpoints.length ?? 0;
  }
  t.ok(endpoints > 30, `${endpoints} endpoints`);
  t.same(issuesOf(ctx), []);
  const istiod = clusterFromEnvoy(
    { name: 'outbound|443||istiod.istio-system.svc.cluster.local', type: 'EDS' },
    ((eds['dynamic_endpoint_configs'] ?? []) as { endpoint_config: unknown }[]).map((x) => canonicalCla(x.endpoint_config)).find((x) => x.clusterName === 'outbound|443||istiod.istio-system.svc.cluster.local'),
    ctx,
  );
  t.same(istiod?.endpoints[0], { address: '10.244.0.175', port: 15017, labels: {}, weight: 1, locality: '', workloadName: 'istiod', namespace: 'istio-system', serviceAccount: '' }, 'no canonical name or revision: no labels');
  const vip = sections('proxy-config/config_dump.json').find((s) => s['@type'].endsWith('.EndpointsConfigDump'))!;
  const internal = canonicalCla(((vip['dynamic_endpoint_configs'] ?? []) as { endpoint_config: unknown }[])[0]!.endpoint_config);
  const ctx2 = new ImportContext();
  t.equal(clusterFromEnvoy({ name: internal.clusterName!, type: 'EDS' }, internal, ctx2), null);
  t.same(issuesOf(ctx2), ['ClusterLoadAssignment inbound-vip|8100|http|httpbin.default.svc.cluster.local: endpoints[0].lbEndpoints[0].endpoint.address.envoyInternalAddress: internal listener endpoints are not supported']);
});

// ---- defaults, errors and warnings ----

const EP = (address: string, extra: object = {}): object => ({ endpoint: { address: { socketAddress: { address, portValue: 80 } } }, ...extra });
const STATIC = (name: string, body: object = {}, endpoints: object[] = [EP('10.0.0.1')]): ClusterJson =>
  canonicalCluster({ name, type: 'STATIC', loadAssignment: { clusterName: name, endpoints: [{ lbEndpoints: endpoints }] }, ...body });
const TLS = (common: object, extra: object = {}): object => ({
  transportSocket: { name: 'envoy.transport_sockets.tls', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', commonTlsContext: common, ...extra } },
});

const EMPTY_CONFIG = { version: 'v', node: SIDECAR, listeners: [], routeConfigs: [], clusters: [] };

function importOne(json: ClusterJson, cla?: ClusterLoadAssignmentJson, hashKey?: Parameters<typeof clusterFromEnvoy>[3]): { c: Cluster | null; issues: string[] } {
  const ctx = new ImportContext([{ name: 'kubernetes://client', kind: 'certificate', certFile: '/c.crt', keyFile: '/c.key' }]);
  const c = clusterFromEnvoy(json, cla, ctx, hashKey);
  return { c, issues: issuesOf(ctx) };
}

t.test("Envoy's defaults for unset fields", async (t) => {
  const { c, issues } = importOne(STATIC('d'));
  t.same(issues, []);
  t.same(c?.connectionPool, DEFAULT_POOL, 'connect timeout 5 s, circuit breakers 1024/1024/1024/3, idle timeout 1 h');
  t.same(c?.lb, { kind: 'round-robin' });
  t.equal(c?.dnsRefreshMs, 5000);
  const od = importOne(STATIC('od', { outlierDetection: { enforcingSuccessRate: 0 } })).c?.outlierDetection;
  t.same(od, { consecutive5xxErrors: 5, consecutiveGatewayErrors: 0, consecutiveLocalOriginFailures: 5, splitExternalLocalOriginErrors: false, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10, minHealthPercent: 50 }, 'outlier detection present: consecutive 5xx 5, 10 s, 30 s, 10%, panic 50%');
  const gw = importOne(STATIC('gw', { outlierDetection: { enforcingSuccessRate: 0, enforcingConsecutive5xx: 0, consecutiveGatewayFailure: 2, enforcingConsecutiveGatewayFailure: 100 }, commonLbConfig: { healthyPanicThreshold: {} } })).c?.outlierDetection;
  t.match(gw, { consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, minHealthPercent: 0 }, 'enforcing 0 turns a check off; an empty panic threshold is 0');
  const h2 = importOne(STATIC('h2', { typedExtensionProtocolOptions: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions', explicitHttpConfig: { http2ProtocolOptions: { maxConcurrentStreams: 7 } }, commonHttpProtocolOptions: { maxRequestsPerConnection: 4, maxConnectionDuration: '60s' } } } })).c;
  t.equal(h2?.protocol, 'http2');
  t.match(h2?.connectionPool, { maxConcurrentStreams: 7, maxRequestsPerConnection: 4, maxConnectionDurationMs: 60_000, idleTimeoutMs: 3_600_000 });
  const ka = importOne(STATIC('ka', { upstreamConnectionOptions: { tcpKeepalive: { keepaliveTime: 30 } }, circuitBreakers: { thresholds: [{ maxConnections: 4294967295, maxRetries: 9 }] } })).c;
  t.match(ka?.connectionPool, { keepaliveTimeMs: 30_000, maxConnections: 0, maxPendingRequests: 1024, maxRetries: 9 });
  const ring = importOne(STATIC('ring', { lbPolicy: 'RING_HASH', ringHashLbConfig: { minimumRingSize: '4096' } }), undefined, { kind: 'header', name: 'x-user' }).c;
  t.same(ring?.lb, { kind: 'ring-hash', key: { kind: 'header', name: 'x-user' }, minimumRingSize: 4096 });
  t.equal(importOne(STATIC('slow', { lbPolicy: 'LEAST_REQUEST', leastRequestLbConfig: { slowStartConfig: { slowStartWindow: '45s' } } })).c?.warmupMs, 45_000);
});

t.test('endpoints: locality, weight, health (panic keeps all), istiod metadata, DNS', async (t) => {
  const name = 'outbound|80||a.default.svc.cluster.local';
  const cla = canonicalCla({
    clusterName: name,
    endpoints: [
      { locality: { region: 'us', zone: 'us-1' }, lbEndpoints: [EP('10.0.0.1', { loadBalancingWeight: 3, metadata: { filterMetadata: { istio: { workload: 'a-v1;default;a;latest;Kubernetes' } } } }), EP('10.0.0.2', { healthStatus: 'UNHEALTHY' })] },
      { locality: { region: 'eu', zone: 'eu-1', subZone: 'x' }, lbEndpoints: [EP('10.0.0.3', { healthStatus: 'DRAINING' }), EP('10.0.0.4', { healthStatus: 'DEGRADED' })] },
    ],
  });
  const { c, issues } = importOne(canonicalCluster({ name, type: 'EDS', edsClusterConfig: { serviceName: name } }), cla);
  t.same(issues, []);
  t.same(c?.endpoints.map((e) => [e.address, e.weight, e.locality, e.labels]), [
    ['10.0.0.1', 3, 'us/us-1', { 'service.istio.io/canonical-name': 'a', app: 'a', 'service.istio.io/canonical-revision': 'latest' }],
    ['10.0.0.4', 1, 'eu/eu-1/x', {}],
  ], 'UNHEALTHY and DRAINING left out; no version label for `latest`');
  const panic = importOne(canonicalCluster({ name, type: 'EDS', commonLbConfig: { healthyPanicThreshold: { value: 60 } } }), cla).c;
  t.equal(panic?.endpoints.length, 4, 'under the panic threshold Envoy balances over every host');
  t.same(importOne(canonicalCluster({ name, type: 'EDS' })).c?.endpoints, [], 'an EDS cluster whose assignment has not arrived has no endpoints');
  const dns = importOne(canonicalCluster({ name: 'd', type: 'STRICT_DNS', dnsRefreshRate: '30s', dnsLookupFamily: 'V4_ONLY', loadAssignment: { clusterName: 'd', endpoints: [{ lbEndpoints: [EP('api.example.com')] }] } })).c;
  t.match(dns, { discovery: 'strict-dns', dnsRefreshMs: 30_000, endpoints: [{ address: 'api.example.com', port: 80 }] });
  t.equal(importOne(canonicalCluster({ name: 'l', type: 'LOGICAL_DNS', loadAssignment: { clusterName: 'l', endpoints: [{ lbEndpoints: [EP('x.example.com')] }] } })).c?.discovery, 'logical-dns');
});

t.test("istiod's passthrough clusters: ORIGINAL_DST to the original destination, the inbound one bound to 127.0.0.6; BlackHoleCluster without endpoints", async (t) => {
  // pilot/pkg/networking/core/cluster_builder.go: buildDefaultPassthroughCluster,
  // buildInboundPassthroughCluster (InboundPassthroughBindIpv4 and, dual-stack, ::6), buildBlackHoleCluster.
  const HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
  const passthroughOptions = { [HPO]: { '@type': `type.googleapis.com/${HPO}`, commonHttpProtocolOptions: { idleTimeout: '3600s' }, useDownstreamProtocolConfig: { httpProtocolOptions: {}, http2ProtocolOptions: {} } } };
  const passthrough = importOne(canonicalCluster({ name: 'PassthroughCluster', type: 'ORIGINAL_DST', connectTimeout: '10s', lbPolicy: 'CLUSTER_PROVIDED', typedExtensionProtocolOptions: passthroughOptions, altStatName: 'PassthroughCluster;' }));
  t.match(passthrough.c, { name: 'PassthroughCluster', discovery: 'original-dst', endpoints: [], lb: { kind: 'round-robin' }, connectionPool: { connectTimeoutMs: 10_000 } });
  t.equal(passthrough.c?.upstreamBindAddress, undefined, 'the kernel picks the source address');
  t.same(passthrough.issues, [
    'warning: Cluster PassthroughCluster: altStatName: not supported by Remora; ignored',
    'warning: Cluster PassthroughCluster: typedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].useDownstreamProtocolConfig: the upstream protocol is HTTP/1.1 whatever the downstream spoke',
  ]);
  const inbound = importOne(
    canonicalCluster({
      name: 'InboundPassthroughCluster',
      type: 'ORIGINAL_DST',
      connectTimeout: '10s',
      lbPolicy: 'CLUSTER_PROVIDED',
      upstreamBindConfig: { sourceAddress: { address: '127.0.0.6', portValue: 0 }, extraSourceAddresses: [{ address: { address: '::6', portValue: 0 } }] },
    }),
  );
  t.match(inbound.c, { name: 'InboundPassthroughCluster', discovery: 'original-dst', upstreamBindAddress: '127.0.0.6' });
  t.same(inbound.issues, [
    'warning: Cluster InboundPassthroughCluster: upstreamBindConfig.extraSourceAddresses: ignored: upstream connections of either family are made from sourceAddress, or from what the kernel picks when its family differs',
  ]);
  const blackhole = importOne(canonicalCluster({ name: 'BlackHoleCluster', type: 'STATIC', connectTimeout: '10s', lbPolicy: 'ROUND_ROBIN', altStatName: 'BlackHoleCluster;' }));
  t.match(blackhole.c, { name: 'BlackHoleCluster', discovery: 'static', endpoints: [] });

  // And the other way: the exporter writes them as istiod does.
  const [pt, ipt, bh] = envoyResourcesFromModel({ ...EMPTY_CONFIG, clusters: [passthrough.c!, inbound.c!, blackhole.c!] }).clusters;
  t.match(pt, { name: 'PassthroughCluster', type: 'ORIGINAL_DST', lbPolicy: 'CLUSTER_PROVIDED' });
  t.notOk('loadAssignment' in pt!, 'no load assignment on an ORIGINAL_DST cluster');
  t.same(ipt?.upstreamBindConfig, { sourceAddress: { address: '127.0.0.6', portValue: 0 } });
  t.match(bh, { name: 'BlackHoleCluster', type: 'STATIC', lbPolicy: 'ROUND_ROBIN' });
  t.notOk('loadAssignment' in bh!, "BlackHoleCluster has no load assignment, as istiod's");
  t.same(envoyFromJson(ClusterSchema, bh as JsonValue).name, 'BlackHoleCluster', 'reads as an Envoy Cluster');
});

t.test('upstream TLS: SDS names, files, SNI, SANs; no validation is no verification', async (t) => {
  const v = (sans: object = {}): object => ({ combinedValidationContext: { defaultValidationContext: sans, validationContextSdsSecretConfig: { name: 'file-root:/ca.crt' } } });
  const mutual = importOne(STATIC('m', TLS({ tlsCertificateSdsSecretConfigs: [{ name: 'kubernetes://client' }], ...v({ matchTypedSubjectAltNames: [{ sanType: 'DNS', matcher: { exact: 'a.example.com' } }] }) }, { sni: 'a.example.com' }))).c;
  t.same(mutual?.tls, { mode: 'MUTUAL', clientCertificate: '/c.crt', privateKey: '/c.key', caCertificates: '/ca.crt', subjectAltNames: ['a.example.com'], sni: 'a.example.com', insecureSkipVerify: false });
  const files = importOne(STATIC('f', TLS({ tlsCertificates: [{ certificateChain: { filename: '/x.crt' }, privateKey: { filename: '/x.key' } }], validationContext: { trustedCa: { filename: '/ca2.crt' } } }))).c;
  t.match(files?.tls, { mode: 'MUTUAL', clientCertificate: '/x.crt', privateKey: '/x.key', caCertificates: '/ca2.crt' });
  t.match(importOne(STATIC('s', TLS({ validationContext: { systemRootCerts: {} } }))).c?.tls, { mode: 'SIMPLE', caCertificates: null, insecureSkipVerify: false }, 'system roots');
  t.match(importOne(STATIC('i', TLS({}))).c?.tls, { mode: 'SIMPLE', insecureSkipVerify: true }, 'no validation context: Envoy verifies nothing');
  const istio = importOne(STATIC('outbound|80||a.b.svc.cluster.local', TLS({ tlsCertificateSdsSecretConfigs: [{ name: 'default' }], ...{ combinedValidationContext: { defaultValidationContext: { matchSubjectAltNames: [{ exact: 'spiffe://td/ns/b/sa/a' }] }, validationContextSdsSecretConfig: { name: 'ROOTCA' } } } }, { sni: 'outbound_.80_._.a.b.svc.cluster.local' }))).c;
  t.match(istio, { tls: { mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://td/ns/b/sa/a'], sni: null }, serviceAccounts: ['spiffe://td/ns/b/sa/a'] }, "istiod's own SNI is the runtime's default");
  const plain = importOne(STATIC('p', {}, [EP('10.0.0.1', { metadata: { filterMetadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } } })])).c;
  t.equal(plain?.tls?.mode, 'DISABLE', 'no transport socket is plaintext, even to endpoints that could take auto mTLS');
});

t.test('each field Remora cannot honour is an error naming it; tuning it lacks is a warning', async (t) => {
  const cases: [string, ClusterJson, string[], boolean][] = [
    ['ORIGINAL_DST with endpoints', canonicalCluster({ name: 'o', type: 'ORIGINAL_DST', lbPolicy: 'CLUSTER_PROVIDED', loadAssignment: { clusterName: 'o', endpoints: [{ lbEndpoints: [EP('10.0.0.1')] }] } }), ['Cluster o: loadAssignment: an ORIGINAL_DST cluster takes its host from the original destination and lists no endpoints'], false],
    ['original destination from a header', canonicalCluster({ name: 'oh', type: 'ORIGINAL_DST', lbPolicy: 'CLUSTER_PROVIDED', originalDstLbConfig: { useHttpHeader: true } }), ['Cluster oh: originalDstLbConfig.useHttpHeader: the host comes from the original destination only, not from a request header'], false],
    ['CLUSTER_PROVIDED elsewhere', STATIC('cp', { lbPolicy: 'CLUSTER_PROVIDED' }), ['Cluster cp: lbPolicy: CLUSTER_PROVIDED load balancing is for ORIGINAL_DST clusters only'], false],
    ['a fixed source port', STATIC('sp', { upstreamBindConfig: { sourceAddress: { address: '127.0.0.6', portValue: 4000 } } }), ['Cluster sp: upstreamBindConfig.sourceAddress.portValue: a fixed source port is not supported (the kernel picks one per connection)'], false],
    ['freebind', STATIC('fb', { upstreamBindConfig: { sourceAddress: { address: '127.0.0.6' }, freebind: true } }), ['Cluster fb: upstreamBindConfig.freebind: freebind is not supported (a source address only)'], false],
    ['pipe', STATIC('u', {}, [{ endpoint: { address: { pipe: { path: '/s.sock' } } } }]), [], true],
    ['pipe without a path', STATIC('u', {}, [{ endpoint: { address: { pipe: {} } } }]), ['Cluster u: endpoints[0].lbEndpoints[0].endpoint.address.pipe.path: a unix domain socket endpoint needs a path'], false],
    ['regex SAN', STATIC('r', TLS({ validationContext: { trustedCa: { filename: '/ca' }, matchSubjectAltNames: [{ prefix: 'spiffe://' }] } })), ['Cluster r: transportSocket.typedConfig.commonTlsContext.validationContext.matchSubjectAltNames[0]: only exact SAN matchers are supported'], false],
    ['unknown SDS', STATIC('k', TLS({ validationContextSdsSecretConfig: { name: 'kubernetes://nope' } })), ['Cluster k: transportSocket.typedConfig.commonTlsContext.validationContextSdsSecretConfig: SDS secret "kubernetes://nope" is not known'], false],
    ['inline CA', STATIC('n', TLS({ validationContext: { trustedCa: { inlineString: 'PEM' } } })), ['Cluster n: transportSocket.typedConfig.commonTlsContext.validationContext.trustedCa: only certificates in files (filename) are supported, not inline content or environment variables'], false],
    ['CRL', STATIC('crl', TLS({ validationContext: { trustedCa: { filename: '/ca' }, crl: { filename: '/crl' } } })), ['Cluster crl: transportSocket.typedConfig.commonTlsContext.validationContext.crl: crl is not supported (Remora cannot check it)'], false],
    ['half Istio', STATIC('h', TLS({ tlsCertificateSdsSecretConfigs: [{ name: 'default' }], validationContext: { trustedCa: { filename: '/ca' } } })), ['Cluster h: transportSocket.typedConfig.commonTlsContext: the workload certificate and the mesh roots (SDS `default` and `ROOTCA`) go together: Istio mTLS'], false],
    ['other match', STATIC('x', { transportSocketMatches: [{ name: 'x', match: { zone: 'a' }, transportSocket: { name: 'envoy.transport_sockets.raw_buffer' } }] }), ["Cluster x: transportSocketMatches[0]: only istiod's auto mTLS matching is supported (Istio mTLS for `tlsMode: istio` endpoints, plaintext for the rest)"], false],
    ['health checks', STATIC('hc', { healthChecks: [{ timeout: '1s', interval: '1s', tcpHealthCheck: {} }] }), ['Cluster hc: healthChecks: healthChecks is not supported'], false],
    ['drop overloads', canonicalCluster({ name: 'dr', type: 'STATIC', loadAssignment: { clusterName: 'dr', policy: { dropOverloads: [{ category: 'x', dropPercentage: { numerator: 1 } }] } } }), ['Cluster dr: policy.dropOverloads: dropping a share of the requests is not supported'], false],
    ['MAGLEV', STATIC('mg', { lbPolicy: 'MAGLEV' }), ['warning: Cluster mg: lbPolicy: MAGLEV is balanced with a hash ring (the same key reaches the same host; a host change moves more keys)', 'warning: Cluster mg: lbPolicy: MAGLEV without a route hash policy: Envoy picks a random host; Remora balances round robin'], true],
    ['success rate', STATIC('sr', { outlierDetection: {} }), ['warning: Cluster sr: outlierDetection.enforcingSuccessRate: success rate ejection is not supported; only consecutive errors eject'], true],
    ['downstream protocol', STATIC('dp', { typedExtensionProtocolOptions: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions', useDownstreamProtocolConfig: { httpProtocolOptions: {}, http2ProtocolOptions: {} } } } }), ['warning: Cluster dp: typedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].useDownstreamProtocolConfig: the upstream protocol is HTTP/1.1 whatever the downstream spoke'], true],
    ['priorities', canonicalCluster({ name: 'pr', type: 'STATIC', loadAssignment: { clusterName: 'pr', endpoints: [{ lbEndpoints: [EP('10.0.0.1')] }, { priority: 1, lbEndpoints: [EP('10.0.0.2')] }] } }), ["warning: Cluster pr: loadAssignment.endpoints.priority: locality failover ranks localities by closeness to this proxy's locality (region, zone, sub-zone); the priorities and locality weights given are not used"], true],
    ['respectDnsTtl', canonicalCluster({ name: 'ttl', type: 'STRICT_DNS', respectDnsTtl: true, dnsLookupFamily: 'V4_ONLY', loadAssignment: { clusterName: 'ttl', endpoints: [{ lbEndpoints: [EP('a.example.com')] }] } }), ['warning: Cluster ttl: respectDnsTtl: not supported by Remora; ignored'], true],
  ];
  for (const [what, json, expected, imported] of cases) {
    const { c, issues } = importOne(json);
    t.same(issues, expected, what);
    t.equal(c !== null, imported, `${what}: ${imported ? 'imported' : 'not imported'}`);
  }
});
