// The Envoy codecs: which types the registry resolves, Envoy's JSON field naming on the way
// in and out, and errors that name the message type, the field path and the reason —
// including an `Any` whose type Remora has no schema for.
import t from 'tap';
import { create, type DescMessage, type JsonObject } from '@bufbuild/protobuf';
import { anyPack, StringValueSchema } from '@bufbuild/protobuf/wkt';
import {
  EnvoyCodecError,
  envoyFromBinary,
  envoyFromJson,
  envoyMessageType,
  envoyPack,
  envoyRegistry,
  envoyToBinary,
  envoyToJson,
  envoyUnpack,
  typeUrlOf,
} from '@remora/config/envoy';
import { GENERATED_FILES } from '@remora/config/envoy/gen/files.js';
import { ClusterSchema } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ListenerSchema } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import { HttpConnectionManagerSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager_pb.js';
import { TypedStructSchema } from '@remora/config/envoy/gen/udpa/type/v1/typed_struct_pb.js';
import { typedConfigOf } from './helpers/envoy.ts';

/** The messages Remora's model and xDS client are built on. */
const REQUIRED_TYPES = [
  'envoy.config.listener.v3.Listener',
  'envoy.config.listener.v3.FilterChain',
  'envoy.config.listener.v3.FilterChainMatch',
  'envoy.config.listener.v3.ListenerFilter',
  'envoy.config.route.v3.RouteConfiguration',
  'envoy.config.route.v3.VirtualHost',
  'envoy.config.route.v3.Route',
  'envoy.config.route.v3.RouteMatch',
  'envoy.config.route.v3.RouteAction',
  'envoy.config.route.v3.WeightedCluster',
  'envoy.config.route.v3.RetryPolicy',
  'envoy.config.route.v3.HeaderMatcher',
  'envoy.config.route.v3.QueryParameterMatcher',
  'envoy.config.route.v3.CorsPolicy',
  'envoy.config.cluster.v3.Cluster',
  'envoy.config.cluster.v3.OutlierDetection',
  'envoy.config.cluster.v3.CircuitBreakers',
  'envoy.config.endpoint.v3.ClusterLoadAssignment',
  'envoy.config.core.v3.TransportSocket',
  'envoy.config.core.v3.Node',
  'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
  'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
  'envoy.extensions.transport_sockets.tls.v3.CommonTlsContext',
  'envoy.extensions.transport_sockets.tls.v3.Secret',
  'envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext',
  'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
  'envoy.extensions.filters.network.rbac.v3.RBAC',
  'envoy.extensions.filters.http.rbac.v3.RBAC',
  'envoy.config.rbac.v3.RBAC',
  'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
  'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
  'envoy.extensions.filters.http.fault.v3.HTTPFault',
  'envoy.extensions.filters.http.cors.v3.Cors',
  'envoy.extensions.filters.http.router.v3.Router',
  'envoy.extensions.filters.http.header_to_metadata.v3.Config',
  'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector',
  'envoy.extensions.filters.listener.http_inspector.v3.HttpInspector',
  'envoy.extensions.filters.listener.original_dst.v3.OriginalDst',
  'envoy.config.bootstrap.v3.Bootstrap',
  'envoy.admin.v3.ConfigDump',
  'envoy.admin.v3.BootstrapConfigDump',
  'envoy.admin.v3.ListenersConfigDump',
  'envoy.admin.v3.ClustersConfigDump',
  'envoy.admin.v3.RoutesConfigDump',
  'envoy.admin.v3.EndpointsConfigDump',
  'envoy.admin.v3.SecretsConfigDump',
  'envoy.service.discovery.v3.DiscoveryRequest',
  'envoy.service.discovery.v3.DiscoveryResponse',
  'envoy.service.discovery.v3.DeltaDiscoveryRequest',
  'envoy.service.discovery.v3.DeltaDiscoveryResponse',
  'google.protobuf.Any',
  'google.protobuf.Struct',
  'google.protobuf.Duration',
  'google.protobuf.StringValue',
  'google.protobuf.UInt32Value',
  'udpa.type.v1.TypedStruct',
  'xds.type.v3.TypedStruct',
];

/** Runs `fn`, which must throw an EnvoyCodecError, and returns it. */
function codecError(fn: () => unknown): EnvoyCodecError {
  try {
    fn();
  } catch (e) {
    if (e instanceof EnvoyCodecError) return e;
    throw e;
  }
  throw new Error('expected an EnvoyCodecError, nothing was thrown');
}

t.test('every type Remora builds on resolves by its type URL and packs into Any both ways', async (t) => {
  for (const name of REQUIRED_TYPES) {
    const schema = envoyMessageType(`type.googleapis.com/${name}`);
    if (schema === undefined) {
      t.fail(`${name} is not in the registry`);
      continue;
    }
    const any = envoyPack(schema, create(schema));
    t.same([any.typeUrl, envoyUnpack(any).$typeName], [`type.googleapis.com/${name}`, name], name);
  }
});

t.test('the registry holds every generated message, nested ones too', async (t) => {
  let count = 0;
  const visit = (message: DescMessage): void => {
    count++;
    if (envoyRegistry.getMessage(message.typeName) !== message) t.fail(`${message.typeName} is not in the registry`);
    for (const nested of message.nestedMessages) visit(nested);
  };
  for (const file of GENERATED_FILES) for (const message of file.messages) visit(message);
  const registered = [...envoyRegistry].filter((d) => d.kind === 'message' && !d.file.name.startsWith('google/protobuf/'));
  t.equal(registered.length, count, `${count} generated messages, each registered once, and nothing else besides the well-known types`);
});

t.test('JSON input takes snake_case and lowerCamelCase names, even mixed; output is lowerCamelCase unless asked for proto names', async (t) => {
  const listener = envoyFromJson(ListenerSchema, {
    name: 'virtualInbound',
    address: { socketAddress: { address: '0.0.0.0', port_value: 15006 } },
    use_original_dst: true,
    listenerFilters: [{ name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } }],
  });
  t.equal(listener.name, 'virtualInbound');
  t.equal(listener.useOriginalDst, true);
  t.equal(listener.listenerFilters[0]?.configType.case, 'typedConfig');
  const camel = envoyToJson(ListenerSchema, listener) as JsonObject;
  t.same(Object.keys(camel), ['name', 'address', 'useOriginalDst', 'listenerFilters']);
  t.same(camel['address'], { socketAddress: { address: '0.0.0.0', portValue: 15006 } });
  const snake = envoyToJson(ListenerSchema, listener, { useProtoFieldName: true }) as JsonObject;
  t.same(Object.keys(snake), ['name', 'address', 'use_original_dst', 'listener_filters']);
  t.same(snake['listener_filters'], [
    { name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } },
  ]);
});

/** An inbound listener whose HTTP connection manager runs `istio.stats` (with the config given) and the router. */
function listenerWithStats(statsConfig: JsonObject): JsonObject {
  return {
    name: 'virtualInbound',
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'inbound_0.0.0.0_8080',
              http_filters: [
                { name: 'istio.stats', typed_config: statsConfig },
                { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
              ],
            },
          },
        ],
      },
    ],
  };
}

t.test('an Any whose type Remora has no schema for is an error naming the type and where it is', async (t) => {
  const e = codecError(() => envoyFromJson(ListenerSchema, listenerWithStats({ '@type': 'type.googleapis.com/stats.PluginConfig', reporter: 'SERVER' })));
  t.equal(e.typeName, 'envoy.config.listener.v3.Listener');
  t.equal(e.path, 'filter_chains[0].filters[0].typed_config.http_filters[0].typed_config');
  t.equal(e.reason, 'unknown type "type.googleapis.com/stats.PluginConfig": Remora has no schema for it');
  t.match(e.message, /^envoy\.config\.listener\.v3\.Listener at filter_chains\[0\]\.filters\[0\]\.typed_config\.http_filters\[0\]\.typed_config: unknown type/);
});

t.test('the same config in a TypedStruct, as istiod sends Istio\'s own filters, reads and names its type', async (t) => {
  const listener = envoyFromJson(
    ListenerSchema,
    listenerWithStats({ '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', type_url: 'type.googleapis.com/stats.PluginConfig', value: { reporter: 'SERVER' } }),
  );
  const hcm = envoyUnpack(typedConfigOf(listener.filterChains[0]?.filters[0], 'the HCM'), HttpConnectionManagerSchema);
  const stats = envoyUnpack(typedConfigOf(hcm.httpFilters[0], 'istio.stats'), TypedStructSchema);
  t.equal(stats.typeUrl, 'type.googleapis.com/stats.PluginConfig');
  t.same(stats.value, { reporter: 'SERVER' });
});

t.test('a bad value is an error at its field path, with the reason', async (t) => {
  const cases: { json: JsonObject; path: string; reason: RegExp }[] = [
    { json: { name: 'c', connect_timeout: '10 seconds' }, path: 'connect_timeout', reason: /google\.protobuf\.Duration/ },
    { json: { name: 'c', lb_policy: 'FASTEST' }, path: 'lb_policy', reason: /FASTEST/ },
    { json: { name: 'c', circuitBreakers: { thresholds: [{}, { max_requests: -1 }] } }, path: 'circuitBreakers.thresholds[1].max_requests', reason: /-1/ },
    {
      json: { name: 'c', load_assignment: { cluster_name: 'c', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 'http' } } } }] }] } },
      path: 'load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value',
      reason: /"http"/,
    },
    {
      json: {
        name: 'c',
        typed_extension_protocol_options: {
          'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 'many' } },
          },
        },
      },
      path: 'typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options.max_concurrent_streams',
      reason: /"many"/,
    },
    { json: { name: 'c', transport_socket: { name: 'tls', typed_config: { type_url: 'x' } } }, path: 'transport_socket.typed_config', reason: /needs "@type"/ },
  ];
  for (const { json, path, reason } of cases) {
    const e = codecError(() => envoyFromJson(ClusterSchema, json));
    t.equal(e.typeName, 'envoy.config.cluster.v3.Cluster');
    t.equal(e.path, path, `path of ${JSON.stringify(json)}`);
    t.match(e.reason, reason, `reason at ${path}`);
  }
});

t.test('an unknown field is an error unless unknown fields are to be ignored', async (t) => {
  const json = { name: 'c', connect_timeout: '1s', outlier_detection: { consecutive_5xx: 5, ejection_time: '30s' } };
  const e = codecError(() => envoyFromJson(ClusterSchema, json));
  t.equal(e.path, 'outlier_detection.ejection_time');
  t.equal(e.reason, 'unknown field "ejection_time" in envoy.config.cluster.v3.OutlierDetection');
  const cluster = envoyFromJson(ClusterSchema, json, { ignoreUnknownFields: true });
  t.equal(cluster.outlierDetection?.consecutive5xx, 5);
  t.same([cluster.connectTimeout?.seconds, cluster.connectTimeout?.nanos], [1n, 0]);
});

t.test('unpacking checks the type; writing an Any of an unknown type names it', async (t) => {
  const clusterAny = envoyPack(ClusterSchema, create(ClusterSchema, { name: 'outbound|80||a.default.svc.cluster.local' }));
  t.equal(clusterAny.typeUrl, typeUrlOf(ClusterSchema));
  t.equal(envoyUnpack(clusterAny, ClusterSchema).name, 'outbound|80||a.default.svc.cluster.local');
  const wrongType = codecError(() => envoyUnpack(clusterAny, ListenerSchema));
  t.equal(wrongType.reason, 'holds "type.googleapis.com/envoy.config.cluster.v3.Cluster", expected envoy.config.listener.v3.Listener');

  // Arrives over xDS in binary: an Any Remora cannot read.
  const foreign = anyPack(StringValueSchema, create(StringValueSchema, { value: 'x' }));
  foreign.typeUrl = 'type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig';
  const unknown = codecError(() => envoyUnpack(foreign));
  t.equal(unknown.reason, 'unknown type "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig": Remora has no schema for it');
  const listener = create(ListenerSchema, {
    name: 'l',
    filterChains: [{ filters: [{ name: 'istio.alpn', configType: { case: 'typedConfig', value: foreign } }] }],
  });
  const written = codecError(() => envoyToJson(ListenerSchema, listener));
  t.equal(written.typeName, 'envoy.config.listener.v3.Listener');
  t.match(written.reason, /istio\.envoy\.config\.filter\.http\.alpn\.v2alpha1\.FilterConfig/);
  // Binary does not need to know the type: it passes through untouched.
  const again = envoyFromBinary(ListenerSchema, envoyToBinary(ListenerSchema, listener));
  const filterConfig = again.filterChains[0]?.filters[0]?.configType;
  t.same(filterConfig?.case === 'typedConfig' ? [filterConfig.value.typeUrl, filterConfig.value.value] : [], [foreign.typeUrl, foreign.value]);
});

t.test('malformed binary is an error naming the message type', async (t) => {
  const e = codecError(() => envoyFromBinary(ClusterSchema, new Uint8Array([0x0a, 0x05, 0x61])));
  t.equal(e.typeName, 'envoy.config.cluster.v3.Cluster');
  t.equal(e.path, '');
  t.ok(e.reason.length > 0);
});
