// The bootstraps Istio's agent writes for Envoy (pkg/bootstrap/testdata/*_golden.json in
// istio/istio) read as envoy.config.bootstrap.v3.Bootstrap with the generated types: every
// `Any` inside resolves through the registry, and writing the message back gives the same
// document up to proto3 JSON's canonical form.
import t from 'tap';
import { equals, type JsonObject, type JsonValue } from '@bufbuild/protobuf';
import { envoyFromJson, envoyToJson, envoyUnpack } from '@remora/config/envoy';
import { BootstrapSchema, type Bootstrap } from '@remora/config/envoy/gen/envoy/config/bootstrap/v3/bootstrap_pb.js';
import { Cluster_DiscoveryType, Cluster_LbPolicy } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { HttpConnectionManagerSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager_pb.js';
import { HttpProtocolOptionsSchema } from '@remora/config/envoy/gen/envoy/extensions/upstreams/http/v3/http_protocol_options_pb.js';
import { RouterSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/router/v3/router_pb.js';
import { envoyRegistry } from '@remora/config/envoy';
import { assertPresent, GOLDENS_DIR, GOLDENS_MISSING, notContainedIn, readGolden, typedConfigOf } from './helpers/envoy.ts';

const GOLDENS = ['all_golden.json', 'auth_golden.json', 'authsds_golden.json', 'default_golden.json'];
const skip = GOLDENS_DIR === null ? GOLDENS_MISSING : false;

function read(file: string): { json: JsonObject; bootstrap: Bootstrap } {
  const json = readGolden(`bootstrap/${file}`) as JsonObject;
  return { json, bootstrap: envoyFromJson(BootstrapSchema, json) };
}

/** A value inside parsed JSON, by snake_case path; undefined when absent. */
function at(json: JsonValue | undefined, ...path: (string | number)[]): JsonValue | undefined {
  let v = json;
  for (const key of path) v = typeof v === 'object' && v !== null ? (v as Record<string, JsonValue>)[key as string] : undefined;
  return v;
}

t.test('every Istio bootstrap golden reads as a Bootstrap with its node, admin and xDS settings', { skip }, async (t) => {
  for (const file of GOLDENS) {
    const { json, bootstrap } = read(file);
    t.equal(bootstrap.node?.id, 'sidecar~1.2.3.4~foo~bar', `${file}: node id`);
    t.equal(bootstrap.node?.cluster, 'istio-proxy', `${file}: node cluster`);
    t.equal(bootstrap.node?.metadata?.['ISTIO_VERSION'], at(json, 'node', 'metadata', 'ISTIO_VERSION'), `${file}: node metadata is a Struct`);
    const adminAddress = bootstrap.admin?.address?.address;
    const adminPort = adminAddress?.case === 'socketAddress' && adminAddress.value.portSpecifier.case === 'portValue' ? adminAddress.value.portSpecifier.value : undefined;
    t.equal(adminPort, at(json, 'admin', 'address', 'socket_address', 'port_value'), `${file}: admin port`);
    t.ok(adminPort !== undefined && adminPort > 0);
    const ads = bootstrap.dynamicResources?.adsConfig?.grpcServices[0]?.targetSpecifier;
    t.equal(ads?.case === 'envoyGrpc' ? ads.value.clusterName : undefined, 'xds-grpc', `${file}: ADS goes to the xds-grpc cluster`);
    t.same(
      bootstrap.staticResources?.clusters.map((c) => c.name),
      (at(json, 'static_resources', 'clusters') as JsonObject[]).map((c) => c['name']),
      `${file}: every static cluster, in order`,
    );
  }
});

t.test('the static clusters keep their types, timeouts, endpoints and circuit breakers', { skip }, async (t) => {
  const { bootstrap } = read('default_golden.json');
  const clusters = bootstrap.staticResources?.clusters ?? [];
  t.same(clusters.map((c) => c.name), ['prometheus_stats', 'agent', 'sds-grpc', 'xds-grpc']);
  const xds = clusters.find((c) => c.name === 'xds-grpc');
  assertPresent(xds, 'no xds-grpc cluster');
  t.same(xds.clusterDiscoveryType, { case: 'type', value: Cluster_DiscoveryType.STATIC });
  t.equal(xds.lbPolicy, Cluster_LbPolicy.ROUND_ROBIN);
  t.same([xds.connectTimeout?.seconds, xds.connectTimeout?.nanos], [1n, 0]);
  t.same(xds.circuitBreakers?.thresholds.map((th) => th.maxRequests), [100000, 100000]);
  const host = xds.loadAssignment?.endpoints[0]?.lbEndpoints[0]?.hostIdentifier;
  const address = host?.case === 'endpoint' ? host.value.address?.address : undefined;
  t.equal(address?.case === 'pipe' ? address.value.path : undefined, '/tmp/XDS', 'istiod is reached over a Unix socket');
  const prometheus = clusters.find((c) => c.name === 'prometheus_stats');
  t.same([prometheus?.connectTimeout?.seconds, prometheus?.connectTimeout?.nanos], [0n, 250_000_000], '"0.250s" is a quarter second');

  // typed_extension_protocol_options is a map of Any: the key names the extension, the Any its config.
  const options = xds.typedExtensionProtocolOptions['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
  assertPresent(options, 'no HttpProtocolOptions on xds-grpc');
  const http = envoyUnpack(options, HttpProtocolOptionsSchema);
  t.equal(http.upstreamProtocolOptions.case, 'explicitHttpConfig');
  if (http.upstreamProtocolOptions.case === 'explicitHttpConfig') {
    t.equal(http.upstreamProtocolOptions.value.protocolConfig.case, 'http2ProtocolOptions', 'xds-grpc speaks HTTP/2');
  }
});

t.test('the health and Prometheus listeners carry an HttpConnectionManager packed in Any', { skip }, async (t) => {
  const { bootstrap } = read('default_golden.json');
  const listeners = bootstrap.staticResources?.listeners ?? [];
  t.same(listeners.map((l) => l.name), ['0.0.0.0_15090', '0.0.0.0_15021']);
  const health = listeners[1];
  const port = health?.address?.address.case === 'socketAddress' ? health.address.address.value.portSpecifier : undefined;
  t.same(port, { case: 'portValue', value: 15021 });
  const filter = health?.filterChains[0]?.filters[0];
  t.equal(filter?.name, 'envoy.filters.network.http_connection_manager');
  const hcmAny = typedConfigOf(filter, 'the HCM');
  t.equal(hcmAny.typeUrl, 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
  const hcm = envoyUnpack(hcmAny, HttpConnectionManagerSchema);
  t.equal(hcm.statPrefix, 'agent');
  const routes = hcm.routeSpecifier.case === 'routeConfig' ? hcm.routeSpecifier.value.virtualHosts[0]?.routes : undefined;
  const first = routes?.[0];
  t.same(first?.match?.pathSpecifier, { case: 'prefix', value: '/healthz/ready' });
  t.same(first?.action.case === 'route' ? first.action.value.clusterSpecifier : undefined, { case: 'cluster', value: 'agent' });
  t.same(hcm.httpFilters.map((f) => f.name), ['envoy.filters.http.router']);
  t.equal(envoyUnpack(typedConfigOf(hcm.httpFilters[0], 'the router'), RouterSchema).$typeName, 'envoy.extensions.filters.http.router.v3.Router');
});

// Istio writes some fields at their default value; proto3 JSON leaves defaults out and writes
// 64-bit integers as strings. So the round trip gives back exactly the input, minus the
// fields at their default (`lb_policy: ROUND_ROBIN`, `protocol: TCP`, `codec_type: AUTO`,
// `priority: DEFAULT`), with `max_active_downstream_connections` (int64) as a string. Both
// halves are checked: the output holds nothing the input lacks, and the output with defaults
// written (`alwaysEmitImplicit`) holds everything the input has.
t.test('writing a bootstrap back gives the input in proto3 JSON\'s canonical form', { skip }, async (t) => {
  for (const file of GOLDENS) {
    const { json, bootstrap } = read(file);
    const out = envoyToJson(BootstrapSchema, bootstrap, { useProtoFieldName: true });
    const withDefaults = envoyToJson(BootstrapSchema, bootstrap, { useProtoFieldName: true, alwaysEmitImplicit: true });
    t.same(notContainedIn(out, json), [], `${file}: nothing added`);
    t.same(notContainedIn(json, withDefaults), [], `${file}: nothing lost`);
    const dropped = new Set(notContainedIn(json, out).map((path) => path.slice(path.lastIndexOf('.') + 1)));
    t.same([...dropped].sort(), ['codec_type', 'lb_policy', 'priority', 'protocol'], `${file}: only enum fields at their default left out`);
  }
});

t.test('a bootstrap written in lowerCamelCase reads back as the same message', { skip }, async (t) => {
  for (const file of GOLDENS) {
    const { bootstrap } = read(file);
    const camel = envoyToJson(BootstrapSchema, bootstrap) as JsonObject;
    t.ok('staticResources' in camel && 'dynamicResources' in camel && !('static_resources' in camel), `${file}: lowerCamelCase by default`);
    const again = envoyFromJson(BootstrapSchema, camel);
    t.ok(equals(BootstrapSchema, again, bootstrap, { registry: envoyRegistry, unpackAny: true }), `${file}: same message`);
  }
});
