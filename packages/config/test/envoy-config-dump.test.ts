// Real Envoy `/config_dump` outputs of Istio proxies (istioctl's testdata in istio/istio)
// read as envoy.admin.v3.ConfigDump: each section and each resource inside is an `Any` the
// registry resolves, and writing the dump back with Envoy's field names gives the same JSON.
import t from 'tap';
import { type JsonObject, type JsonValue } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { envoyFromJson, envoyToJson, envoyUnpack } from '@remora/config/envoy';
import { ConfigDumpSchema, SecretsConfigDumpSchema, type ConfigDump } from '@remora/config/envoy/gen/envoy/admin/v3/config_dump_pb.js';
import {
  ClustersConfigDumpSchema,
  EndpointsConfigDumpSchema,
  ListenersConfigDumpSchema,
  RoutesConfigDumpSchema,
} from '@remora/config/envoy/gen/envoy/admin/v3/config_dump_shared_pb.js';
import { ClusterSchema, Cluster_DiscoveryType } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import { HealthStatus } from '@remora/config/envoy/gen/envoy/config/core/v3/health_check_pb.js';
import { ListenerSchema } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import { RouteConfigurationSchema } from '@remora/config/envoy/gen/envoy/config/route/v3/route_pb.js';
import { HttpConnectionManagerSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager_pb.js';
import { SecretSchema } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { InternalUpstreamTransportSchema } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/internal_upstream/v3/internal_upstream_pb.js';
import { TypedStructSchema } from '@remora/config/envoy/gen/udpa/type/v1/typed_struct_pb.js';
import { assertPresent, GOLDENS_DIR, GOLDENS_MISSING, readGolden, typedConfigOf } from './helpers/envoy.ts';

const DUMPS = ['proxy-config/config_dump.json', 'proxy-config/routes/configdump.json', 'proxy-config/endpoint/configdump.json'];
const skip = GOLDENS_DIR === null ? GOLDENS_MISSING : false;

function read(file: string): { json: JsonObject; dump: ConfigDump } {
  const json = readGolden(file) as JsonObject;
  return { json, dump: envoyFromJson(ConfigDumpSchema, json) };
}

/** The `@type` of each entry of a dump's `configs`, read from the raw JSON. */
function sectionTypes(json: JsonObject): JsonValue[] {
  return (json['configs'] as JsonObject[]).map((c) => c['@type'] ?? null);
}

t.test('a full config dump reads section by section, in order', { skip }, async (t) => {
  const { json, dump } = read('proxy-config/config_dump.json');
  t.same(dump.configs.map((c) => c.typeUrl), sectionTypes(json));
  t.equal(dump.configs.length, 7);
});

t.test('the listeners section unpacks to Listeners with their HTTP connection manager and filters', { skip }, async (t) => {
  const { dump } = read('proxy-config/config_dump.json');
  const section = dump.configs.find((c) => c.typeUrl.endsWith('.ListenersConfigDump'));
  assertPresent(section, 'no listeners section');
  const listeners = envoyUnpack(section, ListenersConfigDumpSchema);

  const health = listeners.staticListeners[0]?.listener;
  assertPresent(health, 'no static listener');
  const address = envoyUnpack(health, ListenerSchema).address?.address;
  t.same(address?.case === 'socketAddress' ? [address.value.address, address.value.portSpecifier.value] : [], ['0.0.0.0', 15021]);

  const dynamic = listeners.dynamicListeners[0];
  t.equal(dynamic?.name, 'main_internal');
  const active = dynamic?.activeState?.listener;
  assertPresent(active, 'main_internal has no active state');
  const listener = envoyUnpack(active, ListenerSchema);
  t.equal(listener.name, 'main_internal');
  const hcm = envoyUnpack(typedConfigOf(listener.filterChains[0]?.filters[0], 'the first filter'), HttpConnectionManagerSchema);
  t.equal(hcm.statPrefix, 'inbound_0.0.0.0_8000');
  t.equal(hcm.routeSpecifier.case === 'routeConfig' ? hcm.routeSpecifier.value.name : '', 'inbound-vip|8000|http|httpbin.default.svc.cluster.local');
  t.same(hcm.httpFilters.map((f) => f.name), [
    'envoy.filters.http.grpc_stats',
    'envoy.filters.http.fault',
    'envoy.filters.http.cors',
    'waypoint_upstream_peer_metadata',
    'istio.stats',
    'envoy.filters.http.router',
  ]);
  // Istio's own filters arrive wrapped in a TypedStruct that names their (Istio) type.
  const typed = envoyUnpack(typedConfigOf(hcm.httpFilters.find((f) => f.name === 'istio.stats'), 'istio.stats'), TypedStructSchema);
  t.equal(typed.typeUrl, 'type.googleapis.com/stats.PluginConfig');
  t.same(typed.value, { reporter: 'SERVER_GATEWAY' });
});

t.test('the clusters and secrets sections unpack to Clusters and Secrets', { skip }, async (t) => {
  const { dump } = read('proxy-config/config_dump.json');
  const clustersAny = dump.configs.find((c) => c.typeUrl.endsWith('.ClustersConfigDump'));
  const secretsAny = dump.configs.find((c) => c.typeUrl.endsWith('.SecretsConfigDump'));
  assertPresent(clustersAny, 'sections missing');
  assertPresent(secretsAny, 'sections missing');

  const clusters = envoyUnpack(clustersAny, ClustersConfigDumpSchema);
  t.same(clusters.staticClusters.map((c) => (c.cluster === undefined ? '' : envoyUnpack(c.cluster, ClusterSchema).name)), ['agent', 'prometheus_stats']);
  const active = clusters.dynamicActiveClusters[0];
  assertPresent(active?.cluster, 'no dynamic cluster');
  const cluster = envoyUnpack(active.cluster, ClusterSchema);
  t.equal(cluster.name, 'inbound-vip|8000|http|httpbin.default.svc.cluster.local');
  t.same(cluster.clusterDiscoveryType, { case: 'type', value: Cluster_DiscoveryType.EDS });
  t.equal(cluster.edsClusterConfig?.serviceName, cluster.name);
  t.equal(active.lastUpdated === undefined ? '' : timestampDate(active.lastUpdated).toISOString(), '2023-12-26T05:57:09.956Z');
  const internal = envoyUnpack(typedConfigOf(cluster.transportSocket, 'the transport socket'), InternalUpstreamTransportSchema);
  t.equal(internal.transportSocket?.name, 'raw_buffer');

  const secrets = envoyUnpack(secretsAny, SecretsConfigDumpSchema);
  t.same(secrets.dynamicActiveSecrets.map((s) => s.name), ['default', 'ROOTCA']);
  const secretAny = secrets.dynamicActiveSecrets[0]?.secret;
  assertPresent(secretAny, 'no secret');
  const secret = envoyUnpack(secretAny, SecretSchema);
  const chain = secret.type.case === 'tlsCertificate' ? secret.type.value.certificateChain?.specifier : undefined;
  t.equal(chain?.case, 'inlineBytes');
  t.match(chain?.case === 'inlineBytes' ? Buffer.from(chain.value).toString('latin1') : '', /^-----BEGIN CERTIFICATE-----\n/, 'inline_bytes decode from base64');
});

t.test('the routes dump unpacks to RouteConfigurations with retry policies', { skip }, async (t) => {
  const { dump } = read('proxy-config/routes/configdump.json');
  const section = dump.configs[0];
  assertPresent(section, 'empty dump');
  const routes = envoyUnpack(section, RoutesConfigDumpSchema);
  t.equal(routes.staticRouteConfigs.length, 2);
  const dynamic = routes.dynamicRouteConfigs[0];
  t.equal(dynamic?.versionInfo, '2023-11-29T10:46:50Z/15');
  assertPresent(dynamic?.routeConfig, 'no dynamic route config');
  const config = envoyUnpack(dynamic.routeConfig, RouteConfigurationSchema);
  t.equal(config.name, 'http.8080');
  const vhost = config.virtualHosts[0];
  t.equal(vhost?.name, 'httpbin.example.com:80');
  t.same(vhost?.domains, ['httpbin.example.com']);
  const route = vhost?.routes[0];
  t.same(route?.match?.pathSpecifier, { case: 'prefix', value: '/get' });
  t.equal(route?.match?.caseSensitive, true);
  const action = route?.action.case === 'route' ? route.action.value : undefined;
  t.same(action?.clusterSpecifier, { case: 'cluster', value: 'outbound|8000||httpbin.default.svc.cluster.local' });
  t.equal(action?.retryPolicy?.retryOn, 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes');
  t.equal(action?.retryPolicy?.numRetries, 2);
  t.equal(action?.retryPolicy?.hostSelectionRetryMaxAttempts, 5n, 'an int64 written as "5" reads as a bigint');
  t.same(action?.retryPolicy?.retriableStatusCodes, [503]);
});

t.test('the endpoints dump unpacks to ClusterLoadAssignments with health and metadata', { skip }, async (t) => {
  const { json, dump } = read('proxy-config/endpoint/configdump.json');
  const section = dump.configs[0];
  assertPresent(section, 'empty dump');
  const endpoints = envoyUnpack(section, EndpointsConfigDumpSchema);
  const raw = (json['configs'] as JsonObject[])[0]?.['dynamic_endpoint_configs'] as JsonObject[];
  const names = endpoints.dynamicEndpointConfigs.map((e) => (e.endpointConfig === undefined ? '' : envoyUnpack(e.endpointConfig, ClusterLoadAssignmentSchema).clusterName));
  t.same(names, raw.map((e) => (e['endpoint_config'] as JsonObject)['cluster_name']));
  const reviewsAny = endpoints.dynamicEndpointConfigs[0]?.endpointConfig;
  assertPresent(reviewsAny, 'no endpoints');
  const reviews = envoyUnpack(reviewsAny, ClusterLoadAssignmentSchema);
  t.equal(reviews.clusterName, 'outbound|9080||reviews.default.svc.cluster.local');
  const lbEndpoints = reviews.endpoints[0]?.lbEndpoints ?? [];
  t.same(
    lbEndpoints.map((e) => {
      const address = e.hostIdentifier.case === 'endpoint' ? e.hostIdentifier.value.address?.address : undefined;
      return address?.case === 'socketAddress' ? `${address.value.address}:${address.value.portSpecifier.value}` : '';
    }),
    ['10.244.0.192:9080', '10.244.0.193:9080', '10.244.0.195:9080'],
  );
  t.ok(lbEndpoints.every((e) => e.healthStatus === HealthStatus.HEALTHY));
  t.same(lbEndpoints.map((e) => e.metadata?.filterMetadata['istio']?.['workload']), [
    'reviews-v3;default;reviews;v3;Kubernetes',
    'reviews-v2;default;reviews;v2;Kubernetes',
    'reviews-v1;default;reviews;v1;Kubernetes',
  ]);
  t.equal(reviews.endpoints[0]?.loadBalancingWeight, 3);
  t.equal(reviews.policy?.overprovisioningFactor, 140);
});

// Envoy writes its dumps in proto3 JSON's canonical form (defaults left out, int64 as
// strings), so with Envoy's field names the round trip gives back every byte of meaning.
t.test('writing a dump back with Envoy\'s field names gives the same JSON', { skip }, async (t) => {
  for (const file of DUMPS) {
    const { json, dump } = read(file);
    t.same(envoyToJson(ConfigDumpSchema, dump, { useProtoFieldName: true }), json, file);
  }
});
