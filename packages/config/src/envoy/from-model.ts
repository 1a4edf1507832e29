/**
 * The model as Envoy's v3 resources, in proto3 JSON: what `/config_dump` prints and what
 * `istioctl proxy-config` reads. Listeners, route configurations and clusters are still
 * Remora's shapes in the model; this exporter says what each of them does in Envoy's terms,
 * with istiod's names (SDS secrets `default` / `ROOTCA`, `kubernetes://<credential>`,
 * `file-cert:<cert>~<key>`, EDS clusters whose load assignment is a resource of its own).
 *
 * HTTP filter configs already in Envoy's form go out as their typed message; a config still
 * private to Remora goes out inside an `xds.type.v3.TypedStruct` of type
 * `type.googleapis.com/remora.<filter name>`, which any Envoy JSON reader accepts and which
 * says plainly that it is not Envoy's message.
 */
import type { JsonValue } from '@bufbuild/protobuf';
import type { AnyJson, StructJson } from '@bufbuild/protobuf/wkt';
import type {
  Cluster as ModelCluster,
  Endpoint as ModelEndpoint,
  HeaderMutation,
  HttpFilterConfig,
  HttpTracing,
  Listener as ModelListener,
  NameTableEntry,
  ProxyConfig,
  ProxyNode,
  Route as ModelRoute,
  RouteConfiguration as ModelRouteConfiguration,
  StringMatch,
  TcpRoute,
  TlsServer,
  TracingCustomTag,
  UpstreamTls,
} from '../model/index.ts';
import { msToDurationJson } from '../model/envoy-values.ts';
import { DEFAULT_MAX_PATH_TAG_LENGTH, OTEL_TRACER_TYPE, ZIPKIN_TRACER_TYPE } from './to-model-tracing.ts';
import { httpStatPrefix } from '../model/listener.ts';
import { serviceClusterOf } from '../model/node.ts';
import { HCM_TYPE, HTTP_FILTER_TYPES, istioStatsFilterJson, metadataExchangeFilterJson, PER_ROUTE_FILTER_TYPES, REMORA_TYPE_PREFIX } from './filter-types.ts';
import { envoyCodec } from './lazy-codec.ts';
import type { ClusterJson } from './gen/envoy/config/cluster/v3/cluster_pb.ts';
import type { AddressJson } from './gen/envoy/config/core/v3/address_pb.ts';
import type { HeaderValueOptionJson, MetadataJson } from './gen/envoy/config/core/v3/base_pb.ts';
import type { ClusterLoadAssignmentJson } from './gen/envoy/config/endpoint/v3/endpoint_pb.ts';
import type { LocalityLbEndpointsJson } from './gen/envoy/config/endpoint/v3/endpoint_components_pb.ts';
import type { ListenerJson } from './gen/envoy/config/listener/v3/listener_pb.ts';
import type { FilterChainJson, FilterJson, ListenerFilterJson } from './gen/envoy/config/listener/v3/listener_components_pb.ts';
import type { RouteConfigurationJson } from './gen/envoy/config/route/v3/route_pb.ts';
import type { HeaderMatcherJson, RouteActionJson, RouteJson, RouteMatchJson, VirtualHostJson } from './gen/envoy/config/route/v3/route_components_pb.ts';
import type { SecretJson, SdsSecretConfigJson } from './gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.ts';
import type { CommonTlsContextJson } from './gen/envoy/extensions/transport_sockets/tls/v3/tls_pb.ts';
import type { StringMatcherJson } from './gen/envoy/type/matcher/v3/string_pb.ts';
import type { BootstrapJson } from './gen/envoy/config/bootstrap/v3/bootstrap_pb.ts';
import { endpointLabelsFromIstio, portOfClusterName } from './istio-endpoints.ts';
import type { SecretRef } from './secret-ref.ts';

/** `type.googleapis.com/`, as registry.ts's TYPE_URL_PREFIX (not imported: that module loads Envoy's descriptors). */
const T = 'type.googleapis.com/';
const TCP_PROXY_TYPE = `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`;
const FILE_ACCESS_LOG_TYPE = `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`;
const CEL_FILTER_TYPE = `${T}envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter`;
const ROUTER_TYPE = `${T}envoy.extensions.filters.http.router.v3.Router`;
const DOWNSTREAM_TLS_TYPE = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`;
const UPSTREAM_TLS_TYPE = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`;
const RAW_BUFFER_TYPE = `${T}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`;
const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const TYPED_STRUCT_TYPE = `${T}xds.type.v3.TypedStruct`;

export { HTTP_FILTER_TYPES, PER_ROUTE_FILTER_TYPES };

/** istiod's SDS resource names for the workload certificate and the mesh roots. */
export const WORKLOAD_SECRET = 'default';
export const ROOT_SECRET = 'ROOTCA';

export type { SecretRef } from './secret-ref.ts';

/** One proxy's config as Envoy's resources (proto3 JSON, lowerCamelCase). */
export interface EnvoyResources {
  readonly listeners: readonly ListenerJson[];
  readonly routeConfigs: readonly RouteConfigurationJson[];
  readonly clusters: readonly ClusterJson[];
  /** One per cluster, EDS or not; `eds` says which ones Envoy would have received over EDS. */
  readonly endpoints: readonly { readonly assignment: ClusterLoadAssignmentJson; readonly eds: boolean }[];
  /** The SDS secrets referred to, in order of first use, without duplicates. */
  readonly secrets: readonly SecretRef[];
  /**
   * How each resource arrived, when a control plane sent them: per type (`Listener`,
   * `RouteConfiguration`, `Cluster`, `ClusterLoadAssignment`) the last version accepted and,
   * by name, each resource's version and when it arrived. A resource without an entry is
   * static (a bootstrap's). Absent: all came together from files, versioned as the config.
   */
  readonly versions?: ResourceVersions;
  /**
   * The sidecar's DNS name table as istiod sends it over NDS (`istio.networking.nds.v1.NameTable`,
   * proto3 JSON): not an Envoy resource, carried beside them so that a config translated from
   * files keeps it through export and import. A control plane's NDS push would arrive in this
   * same form (`nameTableFromNds` in to-model.ts reads it). Absent: no table.
   */
  readonly nameTable?: NameTableJson;
}

/** istio.networking.nds.v1.NameTable in proto3 JSON: by host, its addresses and Kubernetes names. */
export interface NameTableJson {
  readonly table?: Readonly<
    Record<string, { readonly ips?: readonly string[]; readonly registry?: string; readonly shortname?: string; readonly namespace?: string; readonly altHosts?: readonly string[] }>
  >;
}

export type ResourceVersions = Readonly<
  Record<string, { readonly version: string; readonly lastUpdated: string; readonly resources: Readonly<Record<string, { readonly version: string; readonly lastUpdated: string }>> }>
>;

export function envoyResourcesFromModel(config: ProxyConfig): EnvoyResources {
  const secrets = new Map<string, SecretRef>();
  const clustersByName = new Map(config.clusters.map((c) => [c.name, c]));
  // istiod's virtualInbound holds every inbound port as its chains; outbound ports are listeners of their own.
  const inboundCapture = config.listeners.find((l) => l.useOriginalDst === true && l.direction === 'inbound');
  const folded = inboundCapture === undefined ? [] : config.listeners.filter(foldsInto);
  const unbound = new Set(config.listeners.filter((l) => l.bindToPort === false).map((l) => l.name));
  const listeners = config.listeners
    .filter((l) => !folded.includes(l))
    .flatMap((l) => [listenerJson(l, secrets, l === inboundCapture ? folded : [], unbound), ...portListeners(l, secrets, unbound)]);
  const routeConfigs = config.routeConfigs.map((rc) => routeConfigJson(rc, clustersByName));
  const clusters = config.clusters.map((c) => clusterJson(c, secrets));
  const endpoints = config.clusters.map((c) => ({ assignment: loadAssignmentJson(c), eds: isEds(c) }));
  return {
    listeners,
    routeConfigs,
    clusters,
    endpoints,
    secrets: [...secrets.values()],
    ...(config.nameTable === undefined ? {} : { nameTable: nameTableJson(config.nameTable) }),
  };
}

/** The name table as istiod's NDS message: a Kubernetes service's entry says `Kubernetes`, any other host `External`. */
function nameTableJson(entries: readonly NameTableEntry[]): NameTableJson {
  const table: Record<string, NonNullable<NameTableJson['table']>[string]> = {};
  for (const e of entries) {
    table[e.host] = {
      ips: [...e.addresses],
      registry: e.shortName === '' ? 'External' : 'Kubernetes',
      ...(e.shortName === '' ? {} : { shortname: e.shortName }),
      ...(e.namespace === '' ? {} : { namespace: e.namespace }),
    };
  }
  return { table };
}

// ---- bootstrap ----

/** istiod's node: `<type>~<ip>~<workload>.<ns>~<ns>.svc.<domain>`, the service cluster (`serviceClusterOf`), the agent's metadata. */
export function bootstrapJson(node: ProxyNode, opts: { readonly ip: string; readonly adminAddress: string; readonly adminPort: number }): BootstrapJson {
  const [region = '', zone = '', subZone = ''] = node.locality.split('/');
  const type = node.kind === 'gateway' ? 'router' : 'sidecar';
  const metadata: Record<string, JsonValue> = {
    NAMESPACE: node.namespace,
    SERVICE_ACCOUNT: node.serviceAccount,
    WORKLOAD_NAME: node.workloadName,
    LABELS: { ...node.labels },
    MESH_ID: node.trustDomain,
    CLUSTER_ID: 'Kubernetes',
  };
  if (node.http10 === true) metadata.HTTP10 = '1';
  return {
    node: {
      id: `${type}~${opts.ip}~${node.workloadName}.${node.namespace}~${node.namespace}.svc.${node.clusterDomain}`,
      cluster: serviceClusterOf(node),
      metadata: metadata as StructJson,
      ...(node.locality === '' ? {} : { locality: { region, zone, subZone } }),
      userAgentName: 'remora',
    },
    admin: { address: socketAddress(opts.adminAddress, opts.adminPort) },
  };
}

// ---- secrets ----

/**
 * An SDS secret as Envoy dumps it: the certificate chain (or roots) inline, the private key
 * replaced by `[redacted]` as Envoy's admin API does. Null content: not loaded yet.
 */
export function secretJson(name: string, content: { readonly certChainPem?: string; readonly rootsPem?: string }): SecretJson {
  if (content.rootsPem !== undefined) return { name, validationContext: { trustedCa: { inlineBytes: b64(content.rootsPem) } } };
  return {
    name,
    tlsCertificate: {
      certificateChain: { inlineBytes: b64(content.certChainPem ?? '') },
      privateKey: { inlineBytes: b64('[redacted]') },
    },
  };
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

/** istiod's SDS config: the agent's `sds-grpc` cluster. */
function sds(name: string): SdsSecretConfigJson {
  return {
    name,
    sdsConfig: {
      apiConfigSource: {
        apiType: 'GRPC',
        setNodeOnFirstMessageOnly: true,
        transportApiVersion: 'V3',
        grpcServices: [{ envoyGrpc: { clusterName: 'sds-grpc' } }],
      },
      initialFetchTimeout: '0s',
      resourceApiVersion: 'V3',
    },
  };
}

function useSecret(secrets: Map<string, SecretRef>, ref: SecretRef): SdsSecretConfigJson {
  if (!secrets.has(ref.name)) secrets.set(ref.name, ref);
  return sds(ref.name);
}

/** istiod's name for a credential given as files (pkg/security: `file-cert:<cert>~<key>`, `file-root:<ca>`). */
function certificateRef(credentialName: string | undefined, certFile: string, keyFile: string): SecretRef {
  return { name: credentialName !== undefined ? `kubernetes://${credentialName}` : `file-cert:${certFile}~${keyFile}`, kind: 'certificate', certFile, keyFile };
}

function validationRef(credentialName: string | undefined, caFile: string): SecretRef {
  return { name: credentialName !== undefined ? `kubernetes://${credentialName}-cacert` : `file-root:${caFile}`, kind: 'validation', caFile };
}

// ---- listeners ----

function socketAddress(address: string, port: number): AddressJson {
  return { socketAddress: { address, portValue: port } };
}

/** A listener's or endpoint's address: its unix domain socket (`pipe`), else IP and port. */
function addressJson(a: { readonly address: string; readonly port: number }, pipe: { readonly path: string; readonly mode?: number } | undefined): AddressJson {
  if (pipe === undefined) return socketAddress(a.address, a.port);
  return { pipe: { path: pipe.path, ...(pipe.mode ? { mode: pipe.mode } : {}) } };
}

function any(typeUrl: string, body: object = {}): AnyJson {
  return { '@type': typeUrl, ...body } as AnyJson;
}

const ORIGINAL_DST_FILTER: ListenerFilterJson = { name: 'envoy.filters.listener.original_dst', typedConfig: any(`${T}envoy.extensions.filters.listener.original_dst.v3.OriginalDst`) };
const TLS_INSPECTOR: ListenerFilterJson = { name: 'envoy.filters.listener.tls_inspector', typedConfig: any(`${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`) };
const HTTP_INSPECTOR: ListenerFilterJson = { name: 'envoy.filters.listener.http_inspector', typedConfig: any(`${T}envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`) };

/** What http_inspector reports for plaintext HTTP (istiod's plaintextHTTPALPNs, with HTTP/1.0). */
export const PLAINTEXT_HTTP_ALPNS: readonly string[] = ['http/1.0', 'http/1.1', 'h2c'];
/** What an Istio client offers over mTLS for HTTP it detected (istiod's mtlsHTTPALPNs). */
export const MTLS_HTTP_ALPNS: readonly string[] = ['istio-http/1.0', 'istio-http/1.1', 'istio-h2'];

/** The inbound listeners that fold into the inbound capture as its per-port chains, as istiod builds `virtualInbound`. */
function foldsInto(l: ModelListener): boolean {
  return l.direction === 'inbound' && l.bindToPort === false && l.destinationPort !== undefined && l.useOriginalDst !== true;
}

/**
 * A model listener as an Envoy listener. `folded`: for the inbound capture, the inbound
 * listeners not bound to a port it hands connections to, which in Envoy's terms (istiod's
 * `virtualInbound`) are its filter chains matched on their destination port.
 */
function listenerJson(l: ModelListener, secrets: Map<string, SecretRef>, folded: readonly ModelListener[] = [], unbound: ReadonlySet<string> = new Set()): ListenerJson {
  // Remora's older forms of a capture: a listener routing by destination port (routeConfigsByPort)
  // or serving one destination port, which Envoy can only say with the original destination.
  const implied = l.useOriginalDst !== true && (l.destinationPort !== undefined || l.routeConfigsByPort !== undefined);
  const capture = l.useOriginalDst === true;
  const own = sidecarOrGatewayChains(l, secrets, capture ? l.port : l.destinationPort);
  if (capture) {
    // istiod puts a blackhole chain on the capture's own port (connections made to it directly
    // would otherwise pass through back to it); Remora serves such connections with the
    // listener's own chain, matched on that port as Envoy sees their destination.
    const blackhole = l.tcpProxy !== undefined && l.tcpProxy.length === 0 && l.detectProtocol === undefined;
    for (const c of own) if (blackhole) c.name = `${l.name}-blackhole`;
  }
  const chains = [...own];
  for (const f of folded) chains.push(...foldedChains(f, l, secrets));
  if (l.catchAll !== undefined) chains.push(...catchAllChains(l, l.catchAll));

  const all = [l, ...folded];
  const detect = all.find((x) => x.detectProtocol !== undefined)?.detectProtocol;
  const listenerFilters: ListenerFilterJson[] = [];
  if (capture || implied) listenerFilters.push(ORIGINAL_DST_FILTER);
  const sni = (routes: readonly TcpRoute[] | undefined): boolean => routes?.some((r) => r.sniHosts.length > 0) === true;
  if (all.some((x) => x.tls !== null || x.detectProtocol !== undefined || (x.direction !== 'gateway' && sni(x.tcpProxy))) || sni(l.catchAll)) listenerFilters.push(TLS_INSPECTOR);
  if (detect !== undefined || (l.tcpProxy === undefined && l.direction === 'inbound' && !capture)) listenerFilters.push(HTTP_INSPECTOR);
  const out: ListenerJson = {
    name: l.name,
    address: addressJson(l, l.pipe),
    filterChains: chains,
    trafficDirection: l.direction === 'inbound' ? 'INBOUND' : 'OUTBOUND',
  };
  if (listenerFilters.length > 0) out.listenerFilters = listenerFilters;
  if (detect !== undefined) {
    // Protocol detection waits this long for the first bytes, then treats the connection as TCP.
    out.listenerFiltersTimeout = dur(detect.timeoutMs);
    out.continueOnListenerFiltersTimeout = true;
  }
  if (l.bypassOverloadManager === true) out.bypassOverloadManager = true;
  // istiod's virtualInbound serves its ports as its own chains: the original_dst listener filter, no hand-over.
  if ((capture && l.direction !== 'inbound') || implied) out.useOriginalDst = true;
  if (l.bindToPort === false) out.bindToPort = false;
  const remora: Record<string, JsonValue> = {};
  if (implied) remora.impliedOriginalDst = true;
  // A capture's own chain matches its own port; the port its direct connections count as
  // addressed to (the app's, on the inbound side) travels here.
  if (capture && l.destinationPort !== undefined) remora.destinationPort = l.destinationPort;
  // Ports of routeConfigsByPort whose per-port listener the model has itself (portListeners writes none for them).
  const shadowed = Object.entries(l.routeConfigsByPort ?? {}).filter(([port]) => unbound.has(`0.0.0.0_${port}`));
  if (shadowed.length > 0) remora.routeConfigsByPort = Object.fromEntries(shadowed);
  // A listener without an HTTP connection manager names its route table nowhere in Envoy's terms.
  if (!own.some((c) => c.filters?.some((f) => f.name === 'envoy.filters.network.http_connection_manager'))) remora.routeConfig = l.routeConfig;
  if (Object.keys(remora).length > 0) out.metadata = { filterMetadata: { remora: remora as StructJson } };
  return out;
}

/**
 * An inbound listener as the capture's chains (istiod's `virtualInbound`): matched on its
 * destination port, named `<address>_<port>` as istiod names them; what the chain name does
 * not say of the model listener (its own name, port, detection timeout) in `remora` metadata.
 */
function foldedChains(f: ModelListener, capture: ModelListener, secrets: Map<string, SecretRef>): FilterChainJson[] {
  const port = f.destinationPort!;
  const name = `${f.address}_${port}`;
  const remora: Record<string, JsonValue> = {};
  if (f.name !== `inbound_${name}`) remora.listener = f.name;
  if (f.port !== port) remora.port = f.port;
  const timeout = [capture, f].find((x) => x.detectProtocol !== undefined)?.detectProtocol?.timeoutMs;
  if (f.detectProtocol !== undefined && f.detectProtocol.timeoutMs !== timeout) remora.timeoutMs = f.detectProtocol.timeoutMs;
  // A TCP port's route table name is said nowhere in Envoy's terms; the importer's default is `tcp.<port>`.
  if (f.tcpProxy !== undefined && f.routeConfig !== `tcp.${port}`) remora.routeConfig = f.routeConfig;
  return sidecarOrGatewayChains(f, secrets, port).map((c) => {
    const meta = { ...((c.metadata?.filterMetadata ?? {}) as Record<string, StructJson>) };
    if (Object.keys(remora).length > 0) meta.remora = { ...(meta.remora ?? {}), ...remora } as StructJson;
    return { ...c, name, ...(Object.keys(meta).length > 0 ? { metadata: { filterMetadata: meta } } : {}) };
  });
}

/** A capture's catch-all: chains without a destination match, named as istiod names them. */
function catchAllChains(l: ModelListener, routes: readonly TcpRoute[]): FilterChainJson[] {
  const name = l.direction === 'inbound' ? 'virtualInbound' : 'virtualOutbound-catchall-tcp';
  return withMetadataExchange(l, routes.map((route) => {
    const names = route.sniHosts.filter((h) => h !== '*');
    return {
      name,
      ...(names.length > 0 ? { filterChainMatch: { serverNames: names } } : {}),
      filters: [tcpProxyFilter(route, l.name, l.accessLog)],
      ...tcpRouteMetadata(route, null),
    };
  }));
}

/**
 * A sidecar's outbound capture routes by destination port through istiod's per-port tables;
 * in Envoy that is a `0.0.0.0_<port>` listener per port, not bound, which the capture
 * listener hands connections to by original destination, routing through RDS `<port>`. A
 * port the model already has such a listener for (`unbound`, by name) gets none.
 */
function portListeners(l: ModelListener, secrets: Map<string, SecretRef>, unbound: ReadonlySet<string>): ListenerJson[] {
  if (l.routeConfigsByPort === undefined) return [];
  // A per-port listener stands for a port of the capture: it captures nothing itself.
  const { routeConfigsByPort: _, useOriginalDst: _u, catchAll: _c, detectProtocol: _d, destinationPort: _p, ...rest } = l;
  return Object.entries(l.routeConfigsByPort)
    .filter(([port]) => !unbound.has(`0.0.0.0_${port}`))
    .map(([port, routeConfig]) => {
      const json = listenerJson({ ...rest, name: `0.0.0.0_${port}`, address: '0.0.0.0', port: Number(port), routeConfig }, secrets);
      const remora = { ...((json.metadata?.filterMetadata?.remora ?? {}) as Record<string, JsonValue>) };
      delete remora.impliedOriginalDst;
      // Which capture's routeConfigsByPort this listener stands for (istiod's own are listeners of their own).
      remora.routeConfigsByPortOf = l.name;
      return { ...json, bindToPort: false, metadata: { filterMetadata: { remora: remora as StructJson } } };
    });
}

function sidecarOrGatewayChains(l: ModelListener, secrets: Map<string, SecretRef>, destinationPort: number | undefined): FilterChainJson[] {
  const chains = l.direction === 'gateway' ? filterChains(l, secrets) : sidecarChains(l, secrets, destinationPort);
  return withMetadataExchange(l, chains);
}

/** istiod puts the TCP metadata exchange first in every chain of an inbound port, HTTP ones too (RBAC and stats read its peer). */
function withMetadataExchange(l: ModelListener, chains: FilterChainJson[]): FilterChainJson[] {
  return withIstioStats(l, l.metadataExchange !== true ? chains : chains.map((c) => ({ ...c, filters: [metadataExchangeFilterJson() as FilterJson, ...(c.filters ?? [])] })));
}

/** istiod's stats filter before each chain's tcp_proxy (the HTTP chains have it before their router). */
function withIstioStats(l: ModelListener, chains: FilterChainJson[]): FilterChainJson[] {
  if (l.istioStats === undefined) return chains;
  const stats = istioStatsFilterJson(l.istioStats) as FilterJson;
  return chains.map((c) => {
    const fs = c.filters ?? [];
    const last = fs[fs.length - 1];
    if (last === undefined || last.name !== 'envoy.filters.network.tcp_proxy') return c;
    return { ...c, filters: [...fs.slice(0, -1), stats, last] };
  });
}

function istioMtlsSocket(secrets: Map<string, SecretRef>): NonNullable<FilterChainJson['transportSocket']> {
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: any(DOWNSTREAM_TLS_TYPE, { commonTlsContext: istioCommonTlsContext(secrets, [], ['h2', 'http/1.1']), requireClientCertificate: true }),
  };
}

/**
 * A sidecar listener's chains, as istiod builds them for one port: HTTP (the connection
 * manager), TCP (a tcp_proxy per route, by SNI where the route names hosts), or both under
 * protocol detection (the HTTP chain matched on what http_inspector reports); each once
 * terminating Istio mTLS (`tls`) and, for PERMISSIVE, once for plaintext (`raw_buffer`).
 */
function sidecarChains(l: ModelListener, secrets: Map<string, SecretRef>, destinationPort: number | undefined): FilterChainJson[] {
  const port = destinationPort === undefined ? {} : { destinationPort };
  const mesh = l.tls?.kind === 'mesh' ? l.tls.mode : null;
  const detect = l.detectProtocol;
  const tcpRoutes = detect?.tcp ?? l.tcpProxy;
  const chains: FilterChainJson[] = [];
  const withMatch = (c: FilterChainJson, match: Record<string, unknown>): FilterChainJson => (Object.keys(match).length > 0 ? { filterChainMatch: match, ...c } : c);
  if (l.tcpProxy === undefined) {
    // Each chain its own connection manager object: EnvoyFilter patches edit chains one by one.
    const hcm = (): FilterJson => httpConnectionManager(l, l.routeConfig);
    // A Sidecar ingress listener's own TLS (SIMPLE/MUTUAL with its files), terminated before the connection manager.
    const server = l.tls?.kind === 'gateway' ? (l.tls.servers[0] ?? null) : null;
    if (server !== null) {
      chains.push(withMatch({
        metadata: { filterMetadata: { remora: { server: server.origin } } },
        filters: [hcm()],
        transportSocket: { name: 'envoy.transport_sockets.tls', typedConfig: any(DOWNSTREAM_TLS_TYPE, downstreamTls(server, secrets)) },
      }, { ...port, transportProtocol: 'tls' }));
    } else if (mesh !== null) {
      chains.push(withMatch({ filters: [hcm()], transportSocket: istioMtlsSocket(secrets) }, { ...port, transportProtocol: 'tls', ...(detect !== undefined ? { applicationProtocols: [...MTLS_HTTP_ALPNS] } : {}) }));
      if (mesh === 'PERMISSIVE') chains.push(withMatch({ filters: [hcm()] }, { ...port, transportProtocol: 'raw_buffer', ...(detect !== undefined ? { applicationProtocols: [...PLAINTEXT_HTTP_ALPNS] } : {}) }));
    } else {
      chains.push(withMatch({ filters: [hcm()] }, { ...port, ...(detect !== undefined ? { transportProtocol: 'raw_buffer', applicationProtocols: [...PLAINTEXT_HTTP_ALPNS] } : {}) }));
    }
  }
  if (tcpRoutes !== undefined) {
    // No route: Envoy's BlackHoleCluster closes the connection.
    const routes: readonly (TcpRoute | null)[] = tcpRoutes.length === 0 ? [null] : tcpRoutes;
    for (const route of routes) {
      const names = route === null ? [] : route.sniHosts.filter((h) => h !== '*');
      const sniMatch = names.length > 0 ? { serverNames: names } : {};
      const chain = (): FilterChainJson => ({ filters: [tcpProxyFilter(route, l.name, l.accessLog)], ...(route === null ? {} : tcpRouteMetadata(route, null)) });
      if (mesh !== null) {
        chains.push(withMatch({ ...chain(), transportSocket: istioMtlsSocket(secrets) }, { ...port, ...sniMatch, transportProtocol: 'tls' }));
        if (mesh === 'PERMISSIVE') chains.push(withMatch(chain(), { ...port, ...sniMatch, transportProtocol: 'raw_buffer' }));
      } else {
        chains.push(withMatch(chain(), { ...port, ...sniMatch }));
      }
    }
  }
  return chains;
}

/** A gateway listener's chains: one HTTP chain, its TLS servers by SNI, or one TCP server. */
function filterChains(l: ModelListener, secrets: Map<string, SecretRef>): FilterChainJson[] {
  if (l.tcpProxy !== undefined) {
    const route = l.tcpProxy[0] ?? null;
    return [{ filters: [tcpProxyFilter(route, l.name, l.accessLog)], ...(route === null ? {} : tcpRouteMetadata(route, null)) }];
  }
  const hcm = (routeConfig: string = l.routeConfig): FilterJson => httpConnectionManager(l, routeConfig);
  if (l.tls === null) return [{ filters: [hcm()] }];
  if (l.tls.kind === 'mesh') return sidecarChains(l, secrets, undefined);
  const chains: FilterChainJson[] = [];
  for (const server of l.tls.servers) {
    const serverNames = server.hosts.filter((h) => h !== '*');
    const match = serverNames.length > 0 ? { filterChainMatch: { serverNames } } : {};
    // Which Gateway server a chain belongs to, and its hosts where SNI names cannot say them.
    const remora: Record<string, JsonValue> = { server: server.origin };
    if (server.mode === 'PASSTHROUGH' || (serverNames.length > 0 && serverNames.length !== server.hosts.length)) remora.hosts = [...server.hosts];
    if (server.mode === 'PASSTHROUGH') {
      for (const route of server.tcpRoutes) {
        const names = route.sniHosts.filter((h) => h !== '*');
        chains.push({ ...(names.length > 0 ? { filterChainMatch: { serverNames: names } } : match), filters: [tcpProxyFilter(route, l.name, l.accessLog)], ...tcpRouteMetadata(route, remora) });
      }
      continue;
    }
    chains.push({
      ...match,
      metadata: { filterMetadata: { remora: remora as StructJson } },
      // Each HTTPS server routes through its own table (istiod's per-server RDS).
      filters: [hcm(server.routeConfig)],
      transportSocket: { name: 'envoy.transport_sockets.tls', typedConfig: any(DOWNSTREAM_TLS_TYPE, downstreamTls(server, secrets)) },
    });
  }
  return chains;
}

function downstreamTls(s: TlsServer, secrets: Map<string, SecretRef>): object {
  const alpn = ['h2', 'http/1.1'];
  const tlsParams = {
    ...(s.minVersion === null ? {} : { tlsMinimumProtocolVersion: tlsVersion(s.minVersion) }),
    ...(s.maxVersion === null ? {} : { tlsMaximumProtocolVersion: tlsVersion(s.maxVersion) }),
    ...(s.cipherSuites.length === 0 ? {} : { cipherSuites: [...s.cipherSuites] }),
  };
  const params = Object.keys(tlsParams).length > 0 ? { tlsParams } : {};
  if (s.mode === 'ISTIO_MUTUAL') {
    return { commonTlsContext: { ...istioCommonTlsContext(secrets, s.subjectAltNames, alpn), ...params }, requireClientCertificate: true };
  }
  const common: CommonTlsContextJson = {
    ...params,
    alpnProtocols: alpn,
    tlsCertificateSdsSecretConfigs: s.certFile !== null && s.keyFile !== null ? [useSecret(secrets, certificateRef(s.credentialName, s.certFile, s.keyFile))] : [],
  };
  if ((s.mode === 'MUTUAL' || s.mode === 'OPTIONAL_MUTUAL') && s.caFile !== null) {
    common.combinedValidationContext = {
      defaultValidationContext: sanMatchers(s.subjectAltNames),
      validationContextSdsSecretConfig: useSecret(secrets, validationRef(s.credentialName, s.caFile)),
    };
  }
  return { commonTlsContext: common, requireClientCertificate: s.mode === 'MUTUAL' };
}

function tlsVersion(v: 'TLSv1.2' | 'TLSv1.3'): 'TLSv1_2' | 'TLSv1_3' {
  return v === 'TLSv1.2' ? 'TLSv1_2' : 'TLSv1_3';
}

function sanMatchers(sans: readonly string[]): object {
  return sans.length === 0 ? {} : { matchSubjectAltNames: sans.map((s) => ({ exact: s })) };
}

/** The workload certificate and the mesh roots, as istiod wires Istio mTLS. */
function istioCommonTlsContext(secrets: Map<string, SecretRef>, sans: readonly string[], alpn: readonly string[]): CommonTlsContextJson {
  return {
    alpnProtocols: [...alpn],
    tlsCertificateSdsSecretConfigs: [useSecret(secrets, { name: WORKLOAD_SECRET, kind: 'workload' })],
    combinedValidationContext: {
      defaultValidationContext: sanMatchers(sans),
      validationContextSdsSecretConfig: useSecret(secrets, { name: ROOT_SECRET, kind: 'roots' }),
    },
  };
}

/**
 * A TCP route's chain metadata: istiod's config reference to its VirtualService, and (in
 * `remora`) the Gateway server it belongs to and its own SNI names, which the chain's match
 * cannot tell apart from the server's.
 */
function tcpRouteMetadata(route: TcpRoute, server: Record<string, JsonValue> | null): { metadata?: MetadataJson } {
  const filterMetadata: Record<string, StructJson> = {};
  const [ns, name] = route.origin.split('/');
  if (ns !== undefined && name !== undefined) filterMetadata.istio = { config: `/apis/networking.istio.io/v1/namespaces/${ns}/virtual-service/${name}` };
  if (server !== null) filterMetadata.remora = { ...server, sniHosts: [...route.sniHosts] };
  return Object.keys(filterMetadata).length === 0 ? {} : { metadata: { filterMetadata } };
}

function tcpProxyFilter(route: TcpRoute | null, listenerName: string, accessLog: ModelListener['accessLog']): FilterJson {
  const clusters = route?.clusters ?? [];
  const target =
    clusters.length === 1
      ? { cluster: clusters[0]!.cluster }
      : clusters.length === 0
        ? { cluster: 'BlackHoleCluster' }
        : { weightedClusters: { clusters: clusters.map((c) => ({ name: c.cluster, weight: c.weight })) } };
  const statPrefix = clusters.length === 1 ? clusters[0]!.cluster : listenerName;
  return { name: 'envoy.filters.network.tcp_proxy', typedConfig: any(TCP_PROXY_TYPE, { statPrefix, ...target, ...accessLogJson(accessLog) }) };
}

/** The model's tracing as Envoy's HCM `tracing`, the way istiod writes it. */
function tracingJson(t: HttpTracing): Record<string, unknown> {
  const p = t.provider;
  let provider: Record<string, unknown>;
  if (p.kind === 'opentelemetry') {
    const headers = Object.entries(p.headers);
    const timeout = p.timeoutMs === null ? {} : { timeout: msToDurationJson(p.timeoutMs) };
    const service =
      p.transport === 'http'
        ? { httpService: { httpUri: { uri: `http://${p.authority}${p.path}`, cluster: p.cluster, ...timeout }, ...(headers.length === 0 ? {} : { requestHeadersToAdd: headers.map(([key, value]) => ({ header: { key, value } })) }) } }
        : { grpcService: { envoyGrpc: { clusterName: p.cluster, authority: p.authority }, ...timeout, ...(headers.length === 0 ? {} : { initialMetadata: headers.map(([key, value]) => ({ key, value })) }) } };
    provider = { name: 'envoy.tracers.opentelemetry', typedConfig: any(OTEL_TRACER_TYPE, { ...service, serviceName: p.serviceName }) };
  } else {
    provider = {
      name: 'envoy.tracers.zipkin',
      typedConfig: any(ZIPKIN_TRACER_TYPE, {
        collectorCluster: p.cluster,
        collectorEndpoint: p.path,
        collectorHostname: p.authority,
        traceId128bit: p.traceId128Bit,
        sharedSpanContext: p.sharedSpanContext,
        collectorEndpointVersion: 'HTTP_JSON',
      }),
    };
  }
  return {
    clientSampling: { value: t.clientSamplingPercent },
    randomSampling: { value: t.randomSamplingPercent },
    overallSampling: { value: t.overallSamplingPercent },
    ...(t.customTags.length === 0 ? {} : { customTags: t.customTags.map(customTagJson) }),
    provider,
    ...(t.spawnUpstreamSpan ? { spawnUpstreamSpan: true } : {}),
    ...(t.maxPathTagLength === DEFAULT_MAX_PATH_TAG_LENGTH ? {} : { maxPathTagLength: t.maxPathTagLength }),
  };
}

function customTagJson(c: TracingCustomTag): Record<string, unknown> {
  switch (c.kind) {
    case 'literal':
      return { tag: c.tag, literal: { value: c.value } };
    case 'requestHeader':
      return { tag: c.tag, requestHeader: { name: c.name, ...(c.defaultValue === '' ? {} : { defaultValue: c.defaultValue }) } };
    case 'environment':
      return { tag: c.tag, environment: { name: c.name, ...(c.defaultValue === '' ? {} : { defaultValue: c.defaultValue }) } };
    case 'metadata':
      return { tag: c.tag, metadata: { kind: { request: {} }, metadataKey: { key: c.filter, path: [{ key: c.key }] }, ...(c.defaultValue === '' ? {} : { defaultValue: c.defaultValue }) } };
  }
}

function httpConnectionManager(l: ModelListener, routeConfig: string): FilterJson {
  const cm = l.connectionManager;
  const body: Record<string, unknown> = {
    statPrefix: httpStatPrefix(l),
    rds: { configSource: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, routeConfigName: routeConfig },
    httpFilters: withHttpIstioStats(httpFiltersJson(l.httpFilters), l),
    // What the runtime does: a gateway is the edge (the peer is the client, appended to
    // x-forwarded-for); sidecars are not. Istio's settings, as istiod writes them.
    useRemoteAddress: l.direction === 'gateway',
    upgradeConfigs: cm?.upgradeConnect === true ? [{ upgradeType: 'websocket' }, { upgradeType: 'CONNECT' }] : [{ upgradeType: 'websocket' }],
    normalizePath: true,
    pathWithEscapedSlashesAction: 'KEEP_UNCHANGED',
  };
  if (l.direction !== 'outbound') {
    body.forwardClientCertDetails = l.direction === 'gateway' ? 'SANITIZE_SET' : 'APPEND_FORWARD';
    body.setCurrentClientCertDetails = { subject: true, dns: true, uri: true };
  }
  if (cm !== undefined) {
    body.serverName = cm.serverName;
    body.serverHeaderTransformation = cm.serverHeaderTransformation;
    if (cm.httpProtocolOptions.acceptHttp10) body.httpProtocolOptions = { acceptHttp10: true };
  }
  if (l.tracing !== undefined) body.tracing = tracingJson(l.tracing);
  Object.assign(body, accessLogJson(l.accessLog));
  return { name: 'envoy.filters.network.http_connection_manager', typedConfig: any(HCM_TYPE, body) };
}

/**
 * A listener's access logs as Envoy's `access_log` of its HCM or tcp_proxy: file loggers, as
 * istiod writes MeshConfig's and the Telemetry API's, each with its CEL `filter`. An empty list
 * (access logging disabled) is written as `accessLog: []`.
 */
function accessLogJson(logs: ModelListener['accessLog']): { accessLog?: object[] } {
  if (logs === undefined) return {};
  return {
    accessLog: logs.map((a) => {
      const f = a.format;
      const logFormat = f === undefined ? undefined : 'text' in f ? { textFormatSource: { inlineString: f.text } } : { jsonFormat: f.json, jsonFormatOptions: { sortProperties: false } };
      const filter = a.filter === undefined ? {} : { filter: { extensionFilter: { name: 'envoy.access_loggers.extension_filters.cel', typedConfig: any(CEL_FILTER_TYPE, { expression: a.filter }) } } };
      return { name: 'envoy.access_loggers.file', ...filter, typedConfig: any(FILE_ACCESS_LOG_TYPE, { path: a.path, ...(logFormat === undefined ? {} : { logFormat }) }) };
    }),
  };
}

/** istiod's stats filter just before the router. */
function withHttpIstioStats(filters: object[], l: ModelListener): object[] {
  if (l.istioStats === undefined) return filters;
  return [...filters.slice(0, -1), istioStatsFilterJson(l.istioStats), filters[filters.length - 1]!];
}

/** The chain as the HCM lists it; the router ends it (a chain from an older model may lack it). */
function httpFiltersJson(chain: readonly HttpFilterConfig[]): object[] {
  const out = chain.map(httpFilterJson);
  if (chain[chain.length - 1]?.name !== 'envoy.filters.http.router') out.push({ name: 'envoy.filters.http.router', typedConfig: any(ROUTER_TYPE) });
  return out;
}

function httpFilterJson(f: HttpFilterConfig): object {
  const json: Record<string, unknown> = { name: f.name, typedConfig: typedConfig(HTTP_FILTER_TYPES, f.name, f.config) };
  if (f.isOptional === true) json.isOptional = true;
  return json;
}

/**
 * A filter's config as an Any: its Envoy message when the filter has a known type and the
 * config is that message's JSON, else Remora's own config inside a TypedStruct.
 */
function typedConfig(types: Readonly<Record<string, string>>, name: string, config: unknown): AnyJson {
  const typeUrl = types[name];
  if (typeUrl !== undefined && isMessageJson(typeUrl, config)) return any(typeUrl, config as object);
  return any(TYPED_STRUCT_TYPE, { typeUrl: `${REMORA_TYPE_PREFIX}${name}`, value: toStruct(config) });
}

/**
 * Whether a filter config is its Envoy message's JSON. The model's filter configs are Envoy's
 * messages, typed by the generated JSON types, with one exception the bundled Envoy protos
 * cannot hold: a local rate limit's own `rateLimits` descriptors (a newer Envoy field). An
 * empty config (the router's, most filters' per-route `{}`) is one without reading it; any
 * other is read with Envoy's descriptors, loaded then (about 0.3 s, once per loader thread),
 * so that a mesh whose chains hold only the router never loads them.
 */
function isMessageJson(typeUrl: string, config: unknown): boolean {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) return false;
  if (typeUrl.endsWith('.LocalRateLimit') && 'rateLimits' in config) return false;
  for (const _ in config) {
    const codec = envoyCodec();
    const schema = codec.messageType(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
    if (schema === undefined) return false;
    try {
      codec.envoyFromJson(schema, config as JsonValue);
      return true;
    } catch {
      return false;
    }
  }
  return true;
}

/** Plain data as a `google.protobuf.Struct` (JSON has no `undefined`: dropped, as JSON.stringify does). */
function toStruct(config: unknown): StructJson {
  const value = JSON.parse(JSON.stringify(config ?? {})) as unknown;
  return (value !== null && typeof value === 'object' && !Array.isArray(value) ? value : { value }) as StructJson;
}

// ---- routes ----

function routeConfigJson(rc: ModelRouteConfiguration, clusters: ReadonlyMap<string, ModelCluster>): RouteConfigurationJson {
  const out: RouteConfigurationJson = {
    name: rc.name,
    virtualHosts: rc.virtualHosts.map((vh): VirtualHostJson => {
      const v: VirtualHostJson = { name: vh.name, domains: [...vh.domains], routes: vh.routes.map((r) => routeJson(r, clusters)) };
      if (vh.requireTls) v.requireTls = 'ALL';
      if (vh.rateLimits !== undefined && vh.rateLimits.length > 0) v.rateLimits = [...vh.rateLimits];
      return v;
    }),
    validateClusters: false,
  };
  if (rc.ignorePortInHostMatching) out.ignorePortInHostMatching = true;
  return out;
}

function stringMatcher(m: StringMatch, ignoreCase = false): StringMatcherJson {
  const ic = ignoreCase ? { ignoreCase: true } : {};
  switch (m.kind) {
    case 'exact':
      return { exact: m.value, ...ic };
    case 'prefix':
      return { prefix: m.value, ...ic };
    case 'suffix':
      return { suffix: m.value, ...ic };
    case 'contains':
      return { contains: m.value, ...ic };
    case 'regex':
      return { safeRegex: { regex: m.value } };
  }
}

function routeMatch(r: ModelRoute): RouteMatchJson {
  const p = r.match.path;
  const out: RouteMatchJson = {};
  switch (p.match.kind) {
    case 'any':
      out.prefix = '/';
      break;
    case 'connect':
      out.connectMatcher = {};
      break;
    case 'exact':
      out.path = p.match.value;
      break;
    case 'prefix':
      out.prefix = p.match.value;
      break;
    // Envoy's case_sensitive does not apply to a safe_regex: RE2's `(?i)` says it.
    case 'suffix':
      out.safeRegex = { regex: `${p.ignoreCase ? '(?i)' : ''}.*${escapeRegex(p.match.value)}` };
      break;
    case 'contains':
      out.safeRegex = { regex: `${p.ignoreCase ? '(?i)' : ''}.*${escapeRegex(p.match.value)}.*` };
      break;
    case 'regex':
      out.safeRegex = { regex: `${p.ignoreCase ? '(?i)' : ''}${p.match.value}` };
      break;
  }
  if (p.ignoreCase) out.caseSensitive = false;
  const headers: HeaderMatcherJson[] = r.match.headers.map((h) => ({
    name: h.name,
    ...(h.match.kind === 'present' ? { presentMatch: true } : { stringMatch: stringMatcher(h.match) }),
    ...(h.invert ? { invertMatch: true } : {}),
    ...(h.missingAsEmpty === true ? { treatMissingHeaderAsEmpty: true } : {}),
  }));
  if (headers.length > 0) out.headers = headers;
  if (r.match.queryParams.length > 0) {
    out.queryParameters = r.match.queryParams.map((q) => ({ name: q.name, ...(q.match.kind === 'present' ? { presentMatch: true } : { stringMatch: stringMatcher(q.match) }) }));
  }
  const claims = r.match.claims ?? [];
  if (claims.length > 0) {
    // istiod's form (route.go): the claims istio_authn puts in the request's dynamic metadata.
    out.dynamicMetadata = claims.map((c) => ({
      filter: 'istio_authn',
      path: [{ key: 'request.auth.claims' }, ...c.path.map((key) => ({ key }))],
      value: c.match.kind === 'present' ? { presentMatch: true } : { listMatch: { oneOf: { stringMatch: stringMatcher(c.match) } } },
      ...(c.invert ? { invert: true } : {}),
    }));
  }
  return out;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function headersToAdd(m: HeaderMutation | null): HeaderValueOptionJson[] {
  if (m === null) return [];
  return [
    ...m.set.map(([key, value]): HeaderValueOptionJson => ({ header: { key, value }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' })),
    ...m.add.map(([key, value]): HeaderValueOptionJson => ({ header: { key, value }, appendAction: 'APPEND_IF_EXISTS_OR_ADD' })),
  ];
}

/** Header edits under Envoy's field names, only those present. */
function headerFields(req: HeaderMutation | null, res: HeaderMutation | null): object {
  const out: Record<string, unknown> = {};
  const reqAdd = headersToAdd(req);
  const resAdd = headersToAdd(res);
  if (reqAdd.length > 0) out.requestHeadersToAdd = reqAdd;
  if (req !== null && req.remove.length > 0) out.requestHeadersToRemove = [...req.remove];
  if (resAdd.length > 0) out.responseHeadersToAdd = resAdd;
  if (res !== null && res.remove.length > 0) out.responseHeadersToRemove = [...res.remove];
  return out;
}

const REDIRECT_CODES: Readonly<Record<number, string>> = { 301: 'MOVED_PERMANENTLY', 302: 'FOUND', 303: 'SEE_OTHER', 307: 'TEMPORARY_REDIRECT', 308: 'PERMANENT_REDIRECT' };

function dur(ms: number): string {
  return `${ms / 1000}s`;
}

function routeJson(r: ModelRoute, clusters: ReadonlyMap<string, ModelCluster>): RouteJson {
  const out: RouteJson = { ...(r.name !== '' ? { name: r.name } : {}), match: routeMatch(r), ...headerFields(r.requestHeaders, r.responseHeaders) };
  const perFilter: Record<string, AnyJson> = {};
  for (const [name, config] of Object.entries(r.filterConfigs)) perFilter[name] = typedConfig(PER_ROUTE_FILTER_TYPES, name, config);
  const a = r.action;
  if (a.kind === 'forward') {
    const route: RouteActionJson = {};
    const first = a.clusters[0];
    if (a.clusters.length === 1 && first !== undefined && first.requestHeaders === null && first.responseHeaders === null) route.cluster = first.cluster;
    else route.weightedClusters = { clusters: a.clusters.map((c) => ({ name: c.cluster, weight: c.weight, ...headerFields(c.requestHeaders, c.responseHeaders) })) };
    route.timeout = dur(a.timeoutMs);
    if (a.retry !== null) {
      route.retryPolicy = {
        retryOn: a.retry.retryOn.join(','),
        numRetries: a.retry.numRetries,
        ...(a.retry.perTryTimeoutMs > 0 ? { perTryTimeout: dur(a.retry.perTryTimeoutMs) } : {}),
        ...(a.retry.retriableStatusCodes.length > 0 ? { retriableStatusCodes: [...a.retry.retriableStatusCodes] } : {}),
        // istiod's default: retry on another host.
        retryHostPredicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typedConfig: any(`${T}envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate`) }],
        hostSelectionRetryMaxAttempts: '5',
        // istiod's retryRemoteLocalities.
        ...(a.retry.retryRemoteLocalities
          ? { retryPriority: { name: 'envoy.retry_priorities.previous_priorities', typedConfig: any(`${T}envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig`, { updateFrequency: 2 }) } }
          : {}),
      };
    }
    if (a.rewrite?.prefix != null) route.prefixRewrite = a.rewrite.prefix;
    if (a.rewrite?.regex != null) route.regexRewrite = { pattern: { regex: a.rewrite.regex.pattern }, substitution: a.rewrite.regex.substitution.replace(/\$(\d)/g, '\\$1') };
    if (a.authorityRewrite !== null) route.hostRewriteLiteral = a.authorityRewrite;
    if (a.connect !== undefined) route.upgradeConfigs = [a.connect === 'terminate' ? { upgradeType: 'CONNECT', connectConfig: {} } : a.connect === 'forward' ? { upgradeType: 'CONNECT' } : { upgradeType: 'CONNECT', enabled: false }];
    if (a.mirrors.length > 0) {
      route.requestMirrorPolicies = a.mirrors.map((m) => ({ cluster: m.cluster, runtimeFraction: { defaultValue: { numerator: Math.round(m.percent * 10_000), denominator: 'MILLION' } }, traceSampled: false }));
    }
    const lb = first === undefined ? undefined : clusters.get(first.cluster)?.lb;
    if (lb?.kind === 'ring-hash') route.hashPolicy = [hashPolicy(lb.key)];
    if (r.rateLimits !== undefined && r.rateLimits.length > 0) route.rateLimits = [...r.rateLimits];
    if (r.includeVhRateLimits === true) route.includeVhRateLimits = true;
    out.route = route;
  } else if (a.kind === 'redirect') {
    out.redirect = {
      ...(a.scheme !== null ? { schemeRedirect: a.scheme } : {}),
      ...(a.authority !== null ? { hostRedirect: a.authority } : {}),
      ...(a.port !== null ? { portRedirect: a.port } : {}),
      ...(a.path !== null ? { pathRedirect: a.path } : {}),
      ...(REDIRECT_CODES[a.status] !== undefined && a.status !== 301 ? { responseCode: REDIRECT_CODES[a.status] as 'FOUND' } : {}),
      ...(a.stripQuery === true ? { stripQuery: true } : {}),
    };
  } else {
    out.directResponse = { status: a.status, ...(a.body !== null ? { body: { inlineString: a.body } } : {}) };
  }
  if (Object.keys(perFilter).length > 0) out.typedPerFilterConfig = perFilter;
  const filterMetadata: Record<string, StructJson> = { ...((r.metadata ?? {}) as Record<string, StructJson>) };
  if (r.origin !== '') {
    const hash = r.origin.indexOf('#');
    const [ns, name] = (hash < 0 ? r.origin : r.origin.slice(0, hash)).split('/');
    filterMetadata.istio = { config: `/apis/networking.istio.io/v1/namespaces/${ns}/virtual-service/${name}` };
  }
  const remora = remoraRouteMetadata(r);
  if (remora !== null) filterMetadata.remora = remora;
  if (Object.keys(filterMetadata).length > 0) out.metadata = { filterMetadata };
  return out;
}

/**
 * What the model says of a route that Envoy has no field for, for the importer to read back:
 * its origin (the state key), which of `any` and a `/` prefix a `prefix: /` means where the
 * importer would guess otherwise, a redirect's port derived from the scheme, and the rate
 * limits of a route that does not forward (Envoy keeps them on the route action).
 */
function remoraRouteMetadata(r: ModelRoute): StructJson | null {
  const out: Record<string, JsonValue> = {};
  if (r.origin !== '') out.origin = r.origin;
  const p = r.match.path.match;
  const prefixRewrite = r.action.kind === 'forward' && r.action.rewrite?.prefix != null;
  if (p.kind === 'any' && prefixRewrite) out.pathMatch = 'any';
  if (p.kind === 'prefix' && (p.value === '/' || p.value === '') && !prefixRewrite) out.pathMatch = 'prefix';
  if (r.action.kind === 'redirect' && r.action.derivePortFromScheme) out.derivePort = true;
  if (r.action.kind !== 'forward' && r.rateLimits !== undefined && r.rateLimits.length > 0) out.rateLimits = JSON.parse(JSON.stringify(r.rateLimits)) as JsonValue;
  return Object.keys(out).length === 0 ? null : (out as StructJson);
}

function hashPolicy(key: Extract<ModelCluster['lb'], { kind: 'ring-hash' }>['key']): object {
  switch (key.kind) {
    case 'header':
      return { header: { headerName: key.name } };
    case 'cookie':
      return { cookie: { name: key.name, ...(key.path !== '' ? { path: key.path } : {}), ...(key.ttlSeconds > 0 ? { ttl: `${key.ttlSeconds}s` } : {}) } };
    case 'source-ip':
      return { connectionProperties: { sourceIp: true } };
    case 'query-param':
      return { queryParameter: { name: key.name } };
  }
}

// ---- clusters and endpoints ----

/** A cluster whose endpoints istiod sends over EDS: a mesh service's, with addresses known up front. */
function isEds(c: ModelCluster): boolean {
  return c.discovery === 'static' && c.service !== null && !c.name.startsWith('inbound|');
}

const UNLIMITED = 4294967295;
/** Envoy's default `dns_refresh_rate`. */
const DNS_REFRESH_MS = 5_000;

function clusterJson(c: ModelCluster, secrets: Map<string, SecretRef>): ClusterJson {
  const out: ClusterJson = { name: c.name };
  if (isEds(c)) {
    out.type = 'EDS';
    out.edsClusterConfig = { edsConfig: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, serviceName: c.name };
  } else if (c.discovery === 'original-dst') {
    // istiod's PassthroughCluster / InboundPassthroughCluster: the host is the connection's original destination.
    out.type = 'ORIGINAL_DST';
  } else {
    out.type = c.discovery === 'strict-dns' ? 'STRICT_DNS' : c.discovery === 'logical-dns' ? 'LOGICAL_DNS' : 'STATIC';
    // A static cluster without endpoints (istiod's BlackHoleCluster) has no load assignment.
    if (c.discovery !== 'static' || c.endpoints.length > 0) out.loadAssignment = loadAssignmentJson(c);
    if (c.discovery !== 'static') out.dnsLookupFamily = 'V4_ONLY';
  }
  if (c.upstreamBindAddress !== undefined) out.upstreamBindConfig = { sourceAddress: { address: c.upstreamBindAddress, portValue: 0 } };
  // Envoy's own field (ignored by non-DNS clusters), when not its default; 0 is not valid there.
  if (c.dnsRefreshMs > 0 && c.dnsRefreshMs !== DNS_REFRESH_MS) out.dnsRefreshRate = dur(c.dnsRefreshMs);
  const pool = c.connectionPool;
  out.connectTimeout = dur(pool.connectTimeoutMs);
  // ORIGINAL_DST's own balancer: the one host is the original destination.
  if (c.discovery === 'original-dst') out.lbPolicy = 'CLUSTER_PROVIDED';
  else switch (c.lb.kind) {
    case 'least-request':
      out.lbPolicy = 'LEAST_REQUEST';
      break;
    case 'random':
      out.lbPolicy = 'RANDOM';
      break;
    case 'ring-hash':
      out.lbPolicy = 'RING_HASH';
      out.ringHashLbConfig = { minimumRingSize: String(c.lb.minimumRingSize) };
      break;
    case 'round-robin':
      out.lbPolicy = 'ROUND_ROBIN';
      break;
  }
  if (c.warmupMs > 0) {
    const slowStart = { slowStartConfig: { slowStartWindow: dur(c.warmupMs) } };
    if (c.lb.kind === 'round-robin') out.roundRobinLbConfig = slowStart;
    else if (c.lb.kind === 'least-request') out.leastRequestLbConfig = slowStart;
  }
  const limit = (n: number): number => (n === 0 ? UNLIMITED : n);
  out.circuitBreakers = {
    thresholds: [
      {
        maxConnections: limit(pool.maxConnections),
        maxPendingRequests: limit(pool.maxPendingRequests),
        maxRequests: limit(pool.maxRequests),
        maxRetries: limit(pool.maxRetries),
        trackRemaining: true,
      },
    ],
  };
  if (c.protocol !== 'tcp') {
    const common = {
      // Unset is Envoy's 1 h, so a 0 (no idle limit) is written as "0s", which Envoy reads as off.
      idleTimeout: dur(pool.idleTimeoutMs),
      ...(pool.maxConnectionDurationMs > 0 ? { maxConnectionDuration: dur(pool.maxConnectionDurationMs) } : {}),
      ...(pool.maxRequestsPerConnection > 0 ? { maxRequestsPerConnection: pool.maxRequestsPerConnection } : {}),
    };
    const explicit =
      c.protocol === 'http2'
        ? { http2ProtocolOptions: pool.maxConcurrentStreams > 0 ? { maxConcurrentStreams: pool.maxConcurrentStreams } : {} }
        : { httpProtocolOptions: {} };
    out.typedExtensionProtocolOptions = {
      [HTTP_PROTOCOL_OPTIONS]: any(`${T}${HTTP_PROTOCOL_OPTIONS}`, { commonHttpProtocolOptions: common, explicitHttpConfig: explicit }),
    };
  }
  if (pool.keepaliveTimeMs > 0) out.upstreamConnectionOptions = { tcpKeepalive: { keepaliveTime: Math.round(pool.keepaliveTimeMs / 1000) } };
  const od = c.outlierDetection;
  if (od !== null) {
    out.outlierDetection = {
      // Envoy ejects on success rate unless told not to; Istio has no such check (istiod writes 0).
      enforcingSuccessRate: 0,
      ...(od.consecutive5xxErrors > 0 ? { consecutive5xx: od.consecutive5xxErrors } : { enforcingConsecutive5xx: 0 }),
      ...(od.consecutiveGatewayErrors > 0 ? { consecutiveGatewayFailure: od.consecutiveGatewayErrors, enforcingConsecutiveGatewayFailure: 100 } : {}),
      ...(od.consecutiveLocalOriginFailures > 0 ? { consecutiveLocalOriginFailure: od.consecutiveLocalOriginFailures } : {}),
      ...(od.splitExternalLocalOriginErrors ? { splitExternalLocalOriginErrors: true, enforcingLocalOriginSuccessRate: 0 } : {}),
      interval: dur(od.intervalMs),
      baseEjectionTime: dur(od.baseEjectionTimeMs),
      maxEjectionPercent: od.maxEjectionPercent,
    };
    out.commonLbConfig = { healthyPanicThreshold: { value: od.minHealthPercent } };
  }
  if (c.metadataExchange === true) out.filters = [metadataExchangeFilterJson() as NonNullable<ClusterJson['filters']>[number]];
  const tls = upstreamTls(c, secrets);
  if (tls !== null) out.transportSocket = tls;
  else if (c.tls?.mode === 'DISABLE') out.transportSocket = { name: 'envoy.transport_sockets.raw_buffer', typedConfig: any(RAW_BUFFER_TYPE) };
  else if (autoMtls(c)) {
    out.transportSocketMatches = [
      { name: 'tlsMode-istio', match: { tlsMode: 'istio' }, transportSocket: istioMutual(c, [...c.serviceAccounts], secrets) },
      { name: 'tlsMode-disabled', match: {}, transportSocket: { name: 'envoy.transport_sockets.raw_buffer', typedConfig: any(RAW_BUFFER_TYPE) } },
    ];
  }
  const filterMetadata: Record<string, StructJson> = {};
  if (c.service !== null) {
    const istio: Record<string, JsonValue> = { services: [{ host: c.service.host, name: c.service.name, namespace: c.service.namespace }] };
    if (c.subset !== '') istio.subset = c.subset;
    if (c.name.startsWith('outbound|')) istio.default_original_port = c.service.port;
    if (c.destinationRule !== undefined) istio.config = `/apis/networking.istio.io/v1/namespaces/${c.destinationRule.namespace}/destination-rule/${c.destinationRule.name}`;
    filterMetadata.istio = istio as StructJson;
  }
  const remora = remoraClusterMetadata(c);
  if (Object.keys(remora).length > 0) filterMetadata.remora = remora as StructJson;
  if (Object.keys(filterMetadata).length > 0) out.metadata = { filterMetadata } satisfies MetadataJson;
  return out;
}

/**
 * What Envoy's fields and istiod's metadata cannot say, and the importer reads back: a TCP
 * cluster (Envoy's clusters have no protocol without HTTP options), Istio's locality setting
 * (istiod writes it per proxy into CLA priorities), service accounts not in an mTLS socket,
 * an inbound cluster's service port, a DNS refresh of 0, pool settings
 * the protocol has no field for.
 */
function remoraClusterMetadata(c: ModelCluster): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  if (c.protocol === 'tcp') out.protocol = 'tcp';
  if (c.localityLb !== null) out.localityLb = JSON.parse(JSON.stringify(c.localityLb)) as JsonValue;
  const t = c.tls;
  const inSocket = autoMtls(c) ? c.serviceAccounts : t?.mode === 'ISTIO_MUTUAL' ? (t.subjectAltNames.length > 0 ? t.subjectAltNames : c.serviceAccounts) : [];
  if (inSocket.length !== c.serviceAccounts.length || inSocket.some((s, i) => s !== c.serviceAccounts[i])) out.serviceAccounts = [...c.serviceAccounts];
  if (c.service !== null && !c.name.startsWith('outbound|') && c.service.port !== portOfClusterName(c.name)) out.servicePort = c.service.port;
  if (c.dnsRefreshMs <= 0) out.dnsRefreshMs = c.dnsRefreshMs;
  // Pool settings with no Envoy field for the cluster's protocol (HTTP options of a TCP cluster, h2 streams of an HTTP/1.1 one).
  const p = c.connectionPool;
  const pool: Record<string, number> = {};
  if (c.protocol === 'tcp') {
    if (p.idleTimeoutMs !== 3_600_000) pool.idleTimeoutMs = p.idleTimeoutMs;
    if (p.maxConnectionDurationMs > 0) pool.maxConnectionDurationMs = p.maxConnectionDurationMs;
    if (p.maxRequestsPerConnection > 0) pool.maxRequestsPerConnection = p.maxRequestsPerConnection;
  }
  if (c.protocol !== 'http2' && p.maxConcurrentStreams > 0) pool.maxConcurrentStreams = p.maxConcurrentStreams;
  if (Object.keys(pool).length > 0) out.pool = pool;
  return out;
}

/** Auto mTLS: without a DestinationRule `tls`, endpoints labelled `tlsMode: istio` get Istio mTLS. */
function autoMtls(c: ModelCluster): boolean {
  return c.tls === null && c.name.startsWith('outbound|') && c.endpoints.some((e) => e.labels['security.istio.io/tlsMode'] === 'istio');
}

/** istiod's SNI for Istio mTLS to a cluster: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`. */
function istioSni(c: ModelCluster): string {
  return c.name.split('|').join('_.');
}

function istioMutual(c: ModelCluster, sans: string[], secrets: Map<string, SecretRef>): { name: string; typedConfig: AnyJson } {
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: any(UPSTREAM_TLS_TYPE, { commonTlsContext: istioCommonTlsContext(secrets, sans, ['istio-peer-exchange', 'istio']), sni: c.tls?.sni ?? istioSni(c) }),
  };
}

function upstreamTls(c: ModelCluster, secrets: Map<string, SecretRef>): { name: string; typedConfig: AnyJson } | null {
  const t: UpstreamTls | null = c.tls;
  if (t === null || t.mode === 'DISABLE') return null;
  if (t.mode === 'ISTIO_MUTUAL') return istioMutual(c, t.subjectAltNames.length > 0 ? [...t.subjectAltNames] : [...c.serviceAccounts], secrets);
  const common: CommonTlsContextJson = {};
  if (t.mode === 'MUTUAL' && t.clientCertificate !== null && t.privateKey !== null) {
    common.tlsCertificateSdsSecretConfigs = [useSecret(secrets, certificateRef(undefined, t.clientCertificate, t.privateKey))];
  }
  if (!t.insecureSkipVerify) {
    common.combinedValidationContext = {
      defaultValidationContext: sanMatchers(t.subjectAltNames),
      validationContextSdsSecretConfig: useSecret(secrets, t.caCertificates !== null ? validationRef(undefined, t.caCertificates) : { name: 'file-root:system', kind: 'validation', caFile: '' }),
    };
  }
  return { name: 'envoy.transport_sockets.tls', typedConfig: any(UPSTREAM_TLS_TYPE, { commonTlsContext: common, ...(t.sni !== null ? { sni: t.sni } : {}) }) };
}

/** Endpoints grouped by locality, in the order they first appear, with istiod's endpoint metadata. */
function loadAssignmentJson(c: ModelCluster): ClusterLoadAssignmentJson {
  const byLocality = new Map<string, ModelEndpoint[]>();
  for (const e of c.endpoints) {
    const list = byLocality.get(e.locality);
    if (list === undefined) byLocality.set(e.locality, [e]);
    else list.push(e);
  }
  const endpoints: LocalityLbEndpointsJson[] = [];
  for (const [locality, list] of byLocality) {
    const [region = '', zone = '', subZone = ''] = locality.split('/');
    endpoints.push({
      ...(locality === '' ? {} : { locality: { region, zone, subZone } }),
      lbEndpoints: list.map((e) => ({
        endpoint: { address: addressJson(e, e.pipe === undefined ? undefined : { path: e.pipe }) },
        ...(endpointMetadata(e) ?? {}),
        loadBalancingWeight: e.weight,
      })),
      loadBalancingWeight: list.reduce((sum, e) => sum + e.weight, 0),
    });
  }
  return { clusterName: c.name, endpoints };
}

function endpointMetadata(e: ModelEndpoint): { metadata: MetadataJson } | null {
  const filterMetadata: Record<string, StructJson> = {};
  const tlsMode = e.labels['security.istio.io/tlsMode'];
  if (tlsMode !== undefined) filterMetadata['envoy.transport_socket_match'] = { tlsMode };
  let workload: string | undefined;
  if (e.workloadName !== '' || e.namespace !== '') {
    // istiod's `istio.workload`: `<workload>;<namespace>;<canonical service>;<revision>;<cluster>`.
    const service = e.labels['service.istio.io/canonical-name'] ?? e.labels.app ?? e.workloadName;
    const revision = e.labels['service.istio.io/canonical-revision'] ?? e.labels.version ?? 'latest';
    workload = `${e.workloadName};${e.namespace};${service};${revision};Kubernetes`;
    filterMetadata.istio = { workload };
  }
  // Labels istiod's metadata does not carry (subset and failover labels), and the account.
  const remora: Record<string, JsonValue> = {};
  if (!sameLabels(e.labels, endpointLabelsFromIstio(workload, tlsMode))) remora.labels = { ...e.labels };
  if (e.serviceAccount !== '') remora.serviceAccount = e.serviceAccount;
  if (Object.keys(remora).length > 0) filterMetadata.remora = remora as StructJson;
  return Object.keys(filterMetadata).length === 0 ? null : { metadata: { filterMetadata } };
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}
