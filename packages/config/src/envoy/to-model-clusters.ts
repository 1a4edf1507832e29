/**
 * Envoy's Cluster and ClusterLoadAssignment read into the runtime's cluster model: what the
 * exporter (`from-model.ts`) writes, and what istiod sends (its names, `istio` metadata,
 * transport socket matches for auto mTLS), with Envoy's defaults for what is unset.
 *
 * Choices where the model and Envoy differ (each also said where it happens):
 * - An Envoy cluster without HTTP protocol options is HTTP/1.1 (`http1`): Envoy's default
 *   upstream codec. `tcp` only comes back from Remora's own metadata; a tcp_proxy reaching an
 *   `http1` cluster sends raw bytes all the same.
 * - Endpoints UNHEALTHY, DRAINING or TIMEOUT are left out, as Envoy routes around them —
 *   unless fewer than the panic threshold are healthy, where Envoy (in panic) uses them all.
 * - RING_HASH and MAGLEV hash by the route's hash policy (`hashKey`); without one Envoy picks
 *   a random host, which Remora's round robin matches closest, said as a warning.
 * - CLA priorities (istiod's locality failover, computed for the proxy) turn on Remora's
 *   locality failover, which ranks localities from this proxy's own locality the same way.
 */
import type { JsonObject, JsonValue } from '@bufbuild/protobuf';
import type { AnyJson } from '@bufbuild/protobuf/wkt';
import type {
  Cluster,
  ConfigRef,
  ConnectionPool,
  Discovery,
  Endpoint,
  HashKey,
  LoadBalancerPolicy,
  LocalityLbSetting,
  OutlierDetection,
  ServiceRef,
  UpstreamProtocol,
  UpstreamTls,
} from '../model/index.ts';
import { durationJsonMs, timerMs } from '../model/envoy-values.ts';
import { joinPath, ResourceReport, type ImportContext } from './import-context.ts';
import { metadataExchangeConfig, metadataExchangeIssues, TYPED_STRUCT_TYPES } from './filter-types.ts';
import type { SecretRef } from './secret-ref.ts';
import { endpointLabelsFromIstio, portOfClusterName, TLS_MODE_LABEL } from './istio-endpoints.ts';
import type { ClusterJson, Cluster_TransportSocketMatchJson } from './gen/envoy/config/cluster/v3/cluster_pb.ts';
import type { OutlierDetectionJson } from './gen/envoy/config/cluster/v3/outlier_detection_pb.ts';
import type { TransportSocketJson, DataSourceJson, MetadataJson } from './gen/envoy/config/core/v3/base_pb.ts';
import type { ClusterLoadAssignmentJson } from './gen/envoy/config/endpoint/v3/endpoint_pb.ts';
import type { LbEndpointJson } from './gen/envoy/config/endpoint/v3/endpoint_components_pb.ts';
import type { CertificateValidationContextJson } from './gen/envoy/extensions/transport_sockets/tls/v3/common_pb.ts';
import type { CommonTlsContextJson, UpstreamTlsContextJson } from './gen/envoy/extensions/transport_sockets/tls/v3/tls_pb.ts';
import type { SdsSecretConfigJson } from './gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.ts';
import type { HttpProtocolOptionsJson } from './gen/envoy/extensions/upstreams/http/v3/http_protocol_options_pb.ts';
import type { StringMatcherJson } from './gen/envoy/type/matcher/v3/string_pb.ts';

const T = 'type.googleapis.com/';
const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const UPSTREAM_TLS_TYPE = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`;
const RAW_BUFFER_TYPE = `${T}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`;
/** Envoy's "no limit" for a circuit breaker threshold; the model says 0. */
const UNLIMITED = 4294967295;
/** Envoy's defaults. */
const CONNECT_TIMEOUT_MS = 5_000;
const DNS_REFRESH_MS = 5_000;
const IDLE_TIMEOUT_MS = 3_600_000;
const PANIC_THRESHOLD = 50;
const MIN_RING_SIZE = 1024;
const DEFAULT_THRESHOLDS = { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 };



/** Reports issues against one resource. */
class Issues extends ResourceReport {}

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A uint32/uint64 JSON value (a number, or a string for 64-bit ones) as a number. */
function count(v: number | string | undefined | null, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : dflt;
}

/** The fields of `o` set beyond `known` (canonical JSON carries only what is set). */
function extra(o: object | undefined, known: readonly string[]): string[] {
  if (o === undefined) return [];
  return Object.keys(o).filter((k) => !known.includes(k));
}

/** Fields Remora accepts and ignores (tuning of things it does not have), one warning each. */
function warnFields(is: Issues, base: string, o: object | undefined, fields: readonly string[], why: string): void {
  if (o === undefined) return;
  for (const f of fields) if ((o as Record<string, unknown>)[f] !== undefined) is.warn(join(base, f), why);
}

const join = joinPath;

function ms(is: Issues, path: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  try {
    // Every cluster duration arms a timer (connect, idle, outlier detection, health checks).
    return timerMs(durationJsonMs(v, path));
  } catch (err) {
    is.error(path, (err as Error).message);
    return dflt;
  }
}

/** Remora's own cluster metadata (`filterMetadata.remora`), for what Envoy has no field for. */
interface RemoraClusterMetadata {
  protocol?: UpstreamProtocol;
  localityLb?: LocalityLbSetting;
  serviceAccounts?: string[];
  servicePort?: number;
  dnsRefreshMs?: number;
  pool?: Partial<Pick<ConnectionPool, 'idleTimeoutMs' | 'maxConnectionDurationMs' | 'maxRequestsPerConnection' | 'maxConcurrentStreams'>>;
}

/** Every field of Cluster this importer reads; any other set field is reported. */
const CLUSTER_FIELDS = [
  'name',
  'type',
  'edsClusterConfig',
  'loadAssignment',
  'connectTimeout',
  'lbPolicy',
  'ringHashLbConfig',
  'maglevLbConfig',
  'roundRobinLbConfig',
  'leastRequestLbConfig',
  'commonLbConfig',
  'circuitBreakers',
  'typedExtensionProtocolOptions',
  'dnsRefreshRate',
  'dnsLookupFamily',
  'outlierDetection',
  'transportSocket',
  'transportSocketMatches',
  'metadata',
  'upstreamConnectionOptions',
  'filters',
  'protocolSelection',
  'upstreamBindConfig',
  'originalDstLbConfig',
];
/** Cluster fields that only tune what Remora does not have: accepted, with a warning. */
const CLUSTER_TUNING = [
  'altStatName',
  'perConnectionBufferLimitBytes',
  'respectDnsTtl',
  'dnsFailureRefreshRate',
  'dnsResolvers',
  'useTcpForDnsLookups',
  'dnsResolutionConfig',
  'typedDnsResolverConfig',
  'waitForWarmOnInit',
  'cleanupInterval',
  'closeConnectionsOnHostHealthFailure',
  'ignoreHealthOnHostRemoval',
  'lrsServer',
  'lrsReportEndpointMetrics',
  'trackTimeoutBudgets',
  'trackClusterStats',
  'preconnectPolicy',
  'connectionPoolPerDownstreamConnection',
];

/**
 * An Envoy cluster (and its load assignment: inline for STATIC/DNS clusters, `cla` for EDS)
 * as the model's cluster; null when a field it sets cannot be honoured (the issues say which).
 * An EDS cluster whose assignment has not arrived has no endpoints. `hashKey`: the hash
 * policy of the routes to a RING_HASH or MAGLEV cluster (Envoy keeps it on the route).
 */
export function clusterFromEnvoy(c: ClusterJson, cla: ClusterLoadAssignmentJson | undefined, ctx: ImportContext, hashKey?: HashKey): Cluster | null {
  const name = c.name ?? '';
  const errorsBefore = ctx.issues.filter((i) => i.severity === 'error').length;
  const is = new Issues(ctx, 'Cluster', name);
  if (name === '') is.error('name', 'a cluster needs a name');

  for (const f of extra(c, [...CLUSTER_FIELDS, ...CLUSTER_TUNING])) is.error(f, `${f} is not supported`);
  warnFields(is, '', c, CLUSTER_TUNING, 'not supported by Remora; ignored');
  if (c.protocolSelection === 'USE_DOWNSTREAM_PROTOCOL') is.warn('protocolSelection', 'the upstream protocol is the cluster\'s own, not the downstream\'s');

  const metadataExchange = clusterFilters(is, c);
  const remora = remoraMetadata(c.metadata);
  const istio = istioMetadata(is, c.metadata, name, remora);

  // ---- discovery and endpoints ----
  let discovery: Discovery = 'static';
  let assignment: ClusterLoadAssignmentJson | undefined;
  let assignmentIssues = is;
  switch (c.type ?? 'STATIC') {
    case 'STATIC':
      assignment = c.loadAssignment;
      break;
    case 'STRICT_DNS':
      discovery = 'strict-dns';
      assignment = c.loadAssignment;
      break;
    case 'LOGICAL_DNS':
      discovery = 'logical-dns';
      assignment = c.loadAssignment;
      break;
    case 'EDS': {
      const serviceName = edsServiceName(c) ?? name;
      if (cla !== undefined && (cla.clusterName ?? '') !== serviceName) {
        is.error('edsClusterConfig.serviceName', `the load assignment given is ${JSON.stringify(cla.clusterName ?? '')}, not ${JSON.stringify(serviceName)}`);
      }
      if (c.loadAssignment !== undefined) is.warn('loadAssignment', 'an EDS cluster takes its endpoints from EDS; ignored');
      assignment = cla;
      assignmentIssues = new Issues(ctx, 'ClusterLoadAssignment', cla?.clusterName ?? serviceName);
      break;
    }
    case 'ORIGINAL_DST':
      // istiod's PassthroughCluster and InboundPassthroughCluster: the downstream connection's
      // original destination is the host; Envoy refuses endpoints on such a cluster.
      discovery = 'original-dst';
      if (c.loadAssignment !== undefined && (c.loadAssignment.endpoints ?? []).length > 0) {
        is.error('loadAssignment', 'an ORIGINAL_DST cluster takes its host from the original destination and lists no endpoints');
      }
      break;
    default:
      is.error('type', `discovery type ${String(c.type)} is not supported`);
  }
  if (discovery !== 'original-dst' && c.originalDstLbConfig !== undefined) is.error('originalDstLbConfig', 'only an ORIGINAL_DST cluster has an original destination');
  const odl = c.originalDstLbConfig;
  if (odl !== undefined) {
    for (const f of extra(odl, ['useHttpHeader', 'httpHeaderName', 'upstreamPortOverride', 'metadataKey'])) is.error(join('originalDstLbConfig', f), `${f} is not supported`);
    if (odl.useHttpHeader === true) is.error('originalDstLbConfig.useHttpHeader', 'the host comes from the original destination only, not from a request header');
    if (odl.upstreamPortOverride !== undefined) is.error('originalDstLbConfig.upstreamPortOverride', 'the original destination port is kept');
    if (odl.metadataKey !== undefined) is.error('originalDstLbConfig.metadataKey', 'the host comes from the original destination only, not from metadata');
  }
  const upstreamBindAddress = bindAddress(is, c);
  if (c.clusterType !== undefined) is.error('clusterType', `custom cluster type ${c.clusterType.name ?? ''} is not supported`);

  const dnsRefreshMs = c.dnsRefreshRate === undefined ? (remora.dnsRefreshMs ?? DNS_REFRESH_MS) : ms(is, 'dnsRefreshRate', c.dnsRefreshRate, DNS_REFRESH_MS);
  switch (c.dnsLookupFamily ?? 'AUTO') {
    case 'V4_ONLY':
    case 'V4_PREFERRED':
    case 'ALL':
      break;
    default:
      // Remora resolves every family, IPv4 first (V4_PREFERRED); the same for V4_ONLY in an IPv4 network.
      if (discovery === 'strict-dns' || discovery === 'logical-dns') is.warn('dnsLookupFamily', `${c.dnsLookupFamily ?? 'AUTO'}: addresses of both families are used, IPv4 first`);
  }

  const panic = panicThreshold(is, c);
  const { endpoints, priorities } = assignment === undefined ? { endpoints: [], priorities: false } : endpointsFrom(assignmentIssues, assignment, panic, discovery);

  // ---- load balancing ----
  const lb = loadBalancer(is, c, hashKey);
  const warmupMs = slowStart(is, c, lb);
  const localityLb = localityLbFrom(is, c, remora, priorities);

  // ---- connections ----
  const { protocol, pool } = connectionPool(is, c, remora);
  const outlierDetection = outlier(is, c.outlierDetection, panic);

  // ---- TLS ----
  const sec = security(is, c, endpoints, remora);

  const cluster: Cluster = {
    name,
    service: istio.service,
    ...(istio.destinationRule === undefined ? {} : { destinationRule: istio.destinationRule }),
    subset: istio.subset,
    discovery,
    endpoints,
    dnsRefreshMs,
    protocol,
    lb,
    connectionPool: pool,
    outlierDetection,
    tls: sec.tls,
    serviceAccounts: sec.serviceAccounts,
    localityLb,
    warmupMs,
    ...(upstreamBindAddress === undefined ? {} : { upstreamBindAddress }),
    ...(metadataExchange ? { metadataExchange: true } : {}),
  };
  const errorsAfter = ctx.issues.filter((i) => i.severity === 'error').length;
  return errorsAfter > errorsBefore ? null : cluster;
}

/** `upstream_bind_config.source_address`: the local IP upstream connections are made from (istiod's 127.0.0.6 for InboundPassthroughCluster). */
function bindAddress(is: Issues, c: ClusterJson): string | undefined {
  const b = c.upstreamBindConfig;
  if (b === undefined) return undefined;
  for (const f of extra(b, ['sourceAddress', 'extraSourceAddresses'])) is.error(join('upstreamBindConfig', f), `${f} is not supported (a source address only)`);
  // istiod's dual-stack InboundPassthroughCluster adds ::6 for IPv6 destinations.
  if ((b.extraSourceAddresses ?? []).length > 0) is.warn('upstreamBindConfig.extraSourceAddresses', 'ignored: upstream connections of either family are made from sourceAddress, or from what the kernel picks when its family differs');
  const sa = b.sourceAddress;
  for (const f of extra(sa, ['address', 'portValue', 'protocol'])) is.error(join('upstreamBindConfig.sourceAddress', f), `${f} is not supported (an IP address only)`);
  if ((sa?.portValue ?? 0) !== 0) is.error('upstreamBindConfig.sourceAddress.portValue', 'a fixed source port is not supported (the kernel picks one per connection)');
  const address = sa?.address ?? '';
  if (address === '') {
    is.error('upstreamBindConfig.sourceAddress.address', 'a source address needs an IP');
    return undefined;
  }
  return address;
}

// ---- metadata ----

function filterMetadata(m: MetadataJson | undefined, key: string): JsonObject | undefined {
  const v = (m?.filterMetadata as Record<string, JsonValue> | undefined)?.[key];
  return isObject(v) ? v : undefined;
}

function remoraMetadata(m: MetadataJson | undefined): RemoraClusterMetadata {
  return (filterMetadata(m, 'remora') ?? {}) as RemoraClusterMetadata;
}

const CONFIG_PATH = /^\/apis\/networking\.istio\.io\/[^/]+\/namespaces\/([^/]+)\/destination-rule\/([^/]+)$/;

/** istiod's cluster metadata: `istio.services`, `subset`, `config`, `default_original_port`. */
function istioMetadata(
  is: Issues,
  m: MetadataJson | undefined,
  name: string,
  remora: RemoraClusterMetadata,
): { service: ServiceRef | null; subset: string; destinationRule?: ConfigRef } {
  const istio = filterMetadata(m, 'istio');
  const services = istio?.services;
  const first = Array.isArray(services) && isObject(services[0]) ? services[0] : undefined;
  let service: ServiceRef | null = null;
  if (first !== undefined) {
    const port = typeof istio?.default_original_port === 'number' ? istio.default_original_port : (remora.servicePort ?? portOfClusterName(name));
    service = {
      host: String(first.host ?? ''),
      name: String(first.name ?? ''),
      namespace: String(first.namespace ?? ''),
      port,
    };
  }
  const subset = typeof istio?.subset === 'string' ? istio.subset : '';
  const config = typeof istio?.config === 'string' ? CONFIG_PATH.exec(istio.config) : null;
  if (typeof istio?.config === 'string' && config === null) is.warn('metadata.filterMetadata.istio.config', `${istio.config} is not a DestinationRule's path; ignored`);
  return { service, subset, ...(config === null ? {} : { destinationRule: { namespace: config[1]!, name: config[2]! } }) };
}

// ---- endpoints ----

function localityString(l: { region?: string; zone?: string; subZone?: string } | undefined): string {
  const parts = [l?.region ?? '', l?.zone ?? '', l?.subZone ?? ''];
  while (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
  return parts.join('/');
}

const EXCLUDED_HEALTH = new Set(['UNHEALTHY', 'DRAINING', 'TIMEOUT']);

/**
 * The endpoints of a load assignment, in order. Unhealthy ones are left out as Envoy routes
 * around them, unless the healthy share is under the panic threshold (Envoy then uses all).
 * `priorities`: some locality has a priority other than 0.
 */
function endpointsFrom(
  is: Issues,
  cla: ClusterLoadAssignmentJson,
  panic: number,
  discovery: Discovery,
): { endpoints: Endpoint[]; priorities: boolean } {
  for (const f of extra(cla, ['clusterName', 'endpoints', 'policy'])) is.error(f, `${f} is not supported`);
  const policy = cla.policy;
  if (policy !== undefined) {
    for (const f of extra(policy, ['dropOverloads', 'overprovisioningFactor', 'endpointStaleAfter', 'weightedPriorityHealth'])) is.error(`policy.${f}`, `${f} is not supported`);
    if ((policy.dropOverloads ?? []).length > 0) is.error('policy.dropOverloads', 'dropping a share of the requests is not supported');
    if (policy.overprovisioningFactor !== undefined && count(policy.overprovisioningFactor, 140) !== 140) {
      is.warn('policy.overprovisioningFactor', 'Remora spills load between priorities by Envoy\'s default factor, 140');
    }
    warnFields(is, 'policy', policy, ['endpointStaleAfter', 'weightedPriorityHealth'], 'not supported by Remora; ignored');
  }
  const all: { e: Endpoint; healthy: boolean }[] = [];
  let priorities = false;
  (cla.endpoints ?? []).forEach((group, gi) => {
    const at = `endpoints[${gi}]`;
    for (const f of extra(group, ['locality', 'lbEndpoints', 'loadBalancingWeight', 'priority', 'metadata'])) is.error(`${at}.${f}`, `${f} is not supported`);
    if ((group.priority ?? 0) > 0) priorities = true;
    const locality = localityString(group.locality);
    (group.lbEndpoints ?? []).forEach((lbe, ei) => {
      const e = endpointFrom(is, `${at}.lbEndpoints[${ei}]`, lbe, locality, discovery);
      if (e !== null) all.push({ e, healthy: !EXCLUDED_HEALTH.has(lbe.healthStatus ?? 'UNKNOWN') });
    });
  });
  const healthy = all.filter((x) => x.healthy);
  // Envoy's panic mode: with too few healthy hosts, balance over all of them.
  const inPanic = all.length > 0 && panic > 0 && (healthy.length * 100) / all.length < panic;
  return { endpoints: (inPanic ? all : healthy).map((x) => x.e), priorities };
}

function endpointFrom(is: Issues, at: string, lbe: LbEndpointJson, locality: string, discovery: Discovery): Endpoint | null {
  for (const f of extra(lbe, ['endpoint', 'healthStatus', 'metadata', 'loadBalancingWeight', 'endpointName'])) is.error(`${at}.${f}`, `${f} is not supported`);
  const ep = lbe.endpoint;
  for (const f of extra(ep, ['address', 'healthCheckConfig', 'hostname'])) is.error(`${at}.endpoint.${f}`, `${f} is not supported`);
  const addr = ep?.address;
  if (addr?.pipe !== undefined) {
    const path = addr.pipe.path ?? '';
    if (path === '') {
      is.error(`${at}.endpoint.address.pipe.path`, 'a unix domain socket endpoint needs a path');
      return null;
    }
    if (discovery !== 'static') {
      is.error(`${at}.endpoint.address.pipe`, `a unix domain socket endpoint is used as given; ${discovery} clusters resolve names`);
      return null;
    }
    return { ...endpointFacts(lbe, locality), address: `unix://${path}`, port: 0, pipe: path };
  }
  if (addr?.envoyInternalAddress !== undefined) {
    is.error(`${at}.endpoint.address.envoyInternalAddress`, 'internal listener endpoints are not supported');
    return null;
  }
  const sa = addr?.socketAddress;
  if (sa === undefined || (sa.address ?? '') === '') {
    is.error(`${at}.endpoint.address`, 'an endpoint needs a socket address');
    return null;
  }
  if (sa.namedPort !== undefined) is.error(`${at}.endpoint.address.socketAddress.namedPort`, 'named ports are not supported');
  if (sa.protocol === 'UDP') is.error(`${at}.endpoint.address.socketAddress.protocol`, 'UDP endpoints are not supported');
  if (sa.resolverName !== undefined) is.error(`${at}.endpoint.address.socketAddress.resolverName`, 'custom resolvers are not supported');
  const port = sa.portValue ?? 0;
  if (port <= 0 && discovery !== 'static') is.error(`${at}.endpoint.address.socketAddress.portValue`, 'a DNS endpoint needs a port');
  return { ...endpointFacts(lbe, locality), address: sa.address!, port };
}

/** What an endpoint's metadata and weight say of it, whatever its address. */
function endpointFacts(lbe: LbEndpointJson, locality: string): Omit<Endpoint, 'address' | 'port'> {
  const tlsMode = filterMetadata(lbe.metadata, 'envoy.transport_socket_match')?.tlsMode;
  const workload = filterMetadata(lbe.metadata, 'istio')?.workload;
  const remora = filterMetadata(lbe.metadata, 'remora');
  const [workloadName = '', namespace = ''] = typeof workload === 'string' ? workload.split(';') : [];
  const labels = isObject(remora?.labels)
    ? (remora.labels as Record<string, string>)
    : endpointLabelsFromIstio(typeof workload === 'string' ? workload : undefined, typeof tlsMode === 'string' ? tlsMode : undefined);
  return {
    labels,
    weight: count(lbe.loadBalancingWeight, 1),
    locality,
    workloadName,
    namespace,
    serviceAccount: typeof remora?.serviceAccount === 'string' ? remora.serviceAccount : '',
  };
}

// ---- load balancing ----

function panicThreshold(is: Issues, c: ClusterJson): number {
  const t = c.commonLbConfig?.healthyPanicThreshold;
  if (t === undefined) return PANIC_THRESHOLD;
  const v = Number(t.value ?? 0);
  if (!(v >= 0 && v <= 100)) {
    is.error('commonLbConfig.healthyPanicThreshold', `must be 0–100, got ${String(t.value)}`);
    return PANIC_THRESHOLD;
  }
  return v;
}

function loadBalancer(is: Issues, c: ClusterJson, hashKey: HashKey | undefined): LoadBalancerPolicy {
  if (c.loadBalancingPolicy !== undefined) is.error('loadBalancingPolicy', 'load balancing policy extensions are not supported; use lbPolicy');
  if (c.lbSubsetConfig !== undefined) is.error('lbSubsetConfig', 'subset load balancing is not supported');
  const lc = c.leastRequestLbConfig;
  if (lc !== undefined) {
    if (lc.choiceCount !== undefined && count(lc.choiceCount, 2) !== 2) is.warn('leastRequestLbConfig.choiceCount', 'Remora always picks the better of two random hosts');
    warnFields(is, 'leastRequestLbConfig', lc, ['activeRequestBias'], 'not supported by Remora; ignored');
  }
  const policy = c.lbPolicy ?? 'ROUND_ROBIN';
  switch (policy) {
    case 'ROUND_ROBIN':
      return { kind: 'round-robin' };
    case 'LEAST_REQUEST':
      return { kind: 'least-request' };
    case 'RANDOM':
      return { kind: 'random' };
    case 'RING_HASH':
    case 'MAGLEV': {
      let minimumRingSize = MIN_RING_SIZE;
      if (policy === 'MAGLEV') {
        is.warn('lbPolicy', 'MAGLEV is balanced with a hash ring (the same key reaches the same host; a host change moves more keys)');
      } else {
        const rc = c.ringHashLbConfig;
        minimumRingSize = count(rc?.minimumRingSize, MIN_RING_SIZE);
        warnFields(is, 'ringHashLbConfig', rc, ['maximumRingSize'], 'not supported by Remora; ignored');
        if (rc?.hashFunction !== undefined && rc.hashFunction !== 'XX_HASH') is.warn('ringHashLbConfig.hashFunction', 'Remora hashes with its own function');
      }
      if (hashKey === undefined) {
        is.warn('lbPolicy', `${policy} without a route hash policy: Envoy picks a random host; Remora balances round robin`);
        return { kind: 'round-robin' };
      }
      return { kind: 'ring-hash', key: hashKey, minimumRingSize };
    }
    case 'CLUSTER_PROVIDED':
      // ORIGINAL_DST's own balancer: the one host is the original destination.
      if (c.type !== 'ORIGINAL_DST') is.error('lbPolicy', 'CLUSTER_PROVIDED load balancing is for ORIGINAL_DST clusters only');
      return { kind: 'round-robin' };
    default:
      is.error('lbPolicy', `${String(policy)} is not supported`);
      return { kind: 'round-robin' };
  }
}

function slowStart(is: Issues, c: ClusterJson, lb: LoadBalancerPolicy): number {
  const rr = c.roundRobinLbConfig?.slowStartConfig;
  const lr = c.leastRequestLbConfig?.slowStartConfig;
  const [config, path] = c.lbPolicy === 'LEAST_REQUEST' ? [lr, 'leastRequestLbConfig.slowStartConfig'] : [rr, 'roundRobinLbConfig.slowStartConfig'];
  if (config === undefined || (lb.kind !== 'round-robin' && lb.kind !== 'least-request')) return 0;
  if (config.aggression !== undefined) is.warn(`${path}.aggression`, 'Remora grows a new host\'s share linearly (aggression 1)');
  if (config.minWeightPercent !== undefined && (config.minWeightPercent.value ?? 0) !== 10) is.warn(`${path}.minWeightPercent`, 'Remora starts a new host at 10% of its weight');
  return ms(is, `${path}.slowStartWindow`, config.slowStartWindow, 0);
}

function localityLbFrom(is: Issues, c: ClusterJson, remora: RemoraClusterMetadata, priorities: boolean): LocalityLbSetting | null {
  const common = c.commonLbConfig;
  for (const f of extra(common, ['healthyPanicThreshold', 'localityWeightedLbConfig', 'zoneAwareLbConfig', 'updateMergeWindow', 'closeConnectionsOnHostSetChange', 'ignoreNewHostsUntilFirstHc'])) {
    is.error(`commonLbConfig.${f}`, `${f} is not supported`);
  }
  warnFields(is, 'commonLbConfig', common, ['updateMergeWindow', 'closeConnectionsOnHostSetChange', 'ignoreNewHostsUntilFirstHc', 'zoneAwareLbConfig'], 'not supported by Remora; ignored');
  if (remora.localityLb !== undefined) return remora.localityLb;
  if (!priorities && common?.localityWeightedLbConfig === undefined) return null;
  // istiod wrote this proxy's failover order into CLA priorities (and locality weights for
  // `distribute`); Remora ranks localities from its own locality by Istio's default rule.
  is.warn(
    priorities ? 'loadAssignment.endpoints.priority' : 'commonLbConfig.localityWeightedLbConfig',
    'locality failover ranks localities by closeness to this proxy\'s locality (region, zone, sub-zone); the priorities and locality weights given are not used',
  );
  return { distribute: [], failover: [], failoverPriority: [] };
}

// ---- connections ----

function connectionPool(is: Issues, c: ClusterJson, remora: RemoraClusterMetadata): { protocol: UpstreamProtocol; pool: ConnectionPool } {
  for (const f of ['commonHttpProtocolOptions', 'httpProtocolOptions', 'upstreamHttpProtocolOptions']) {
    if ((c as Record<string, unknown>)[f] !== undefined) is.error(f, `${f} on the cluster is deprecated and not supported; use typedExtensionProtocolOptions["${HTTP_PROTOCOL_OPTIONS}"]`);
  }
  const connectTimeoutMs = ms(is, 'connectTimeout', c.connectTimeout, CONNECT_TIMEOUT_MS);
  const th = thresholds(is, c);
  let protocol: UpstreamProtocol = remora.protocol === 'tcp' ? 'tcp' : 'http1';
  let idleTimeoutMs = IDLE_TIMEOUT_MS;
  let maxConnectionDurationMs = 0;
  let maxRequestsPerConnection = count(c.maxRequestsPerConnection, 0);
  if (c.maxRequestsPerConnection !== undefined) is.warn('maxRequestsPerConnection', `deprecated; read as ${HTTP_PROTOCOL_OPTIONS} commonHttpProtocolOptions.maxRequestsPerConnection`);
  let maxConcurrentStreams = 0;
  const options = c.typedExtensionProtocolOptions ?? {};
  for (const key of Object.keys(options)) {
    if (key !== HTTP_PROTOCOL_OPTIONS && key !== `${T}${HTTP_PROTOCOL_OPTIONS}`) is.error(`typedExtensionProtocolOptions["${key}"]`, 'only HTTP protocol options are supported');
  }
  const anyOpts = options[HTTP_PROTOCOL_OPTIONS] ?? options[`${T}${HTTP_PROTOCOL_OPTIONS}`];
  if (anyOpts !== undefined) {
    const base = `typedExtensionProtocolOptions["${HTTP_PROTOCOL_OPTIONS}"]`;
    if (anyOpts['@type'] !== `${T}${HTTP_PROTOCOL_OPTIONS}`) is.error(`${base}`, `expected ${HTTP_PROTOCOL_OPTIONS}, got ${String(anyOpts['@type'])}`);
    const o = anyOpts as AnyJson & HttpProtocolOptionsJson;
    for (const f of extra(o, ['@type', 'commonHttpProtocolOptions', 'explicitHttpConfig', 'useDownstreamProtocolConfig', 'autoConfig', 'upstreamHttpProtocolOptions'])) {
      is.error(`${base}.${f}`, `${f} is not supported`);
    }
    warnFields(is, base, o, ['upstreamHttpProtocolOptions'], 'not supported by Remora (SNI and SAN checks come from the TLS settings); ignored');
    const common = o.commonHttpProtocolOptions;
    if (common !== undefined) {
      for (const f of extra(common, ['idleTimeout', 'maxConnectionDuration', 'maxRequestsPerConnection', 'maxHeadersCount', 'maxStreamDuration', 'headersWithUnderscoresAction'])) {
        is.error(`${base}.commonHttpProtocolOptions.${f}`, `${f} is not supported`);
      }
      warnFields(is, `${base}.commonHttpProtocolOptions`, common, ['maxHeadersCount', 'headersWithUnderscoresAction'], 'not supported by Remora; ignored');
      if (common.maxStreamDuration !== undefined) is.error(`${base}.commonHttpProtocolOptions.maxStreamDuration`, 'an upstream stream duration limit is not supported; use the route timeout');
      idleTimeoutMs = ms(is, `${base}.commonHttpProtocolOptions.idleTimeout`, common.idleTimeout, IDLE_TIMEOUT_MS);
      maxConnectionDurationMs = ms(is, `${base}.commonHttpProtocolOptions.maxConnectionDuration`, common.maxConnectionDuration, 0);
      maxRequestsPerConnection = count(common.maxRequestsPerConnection, maxRequestsPerConnection);
    }
    const explicit = o.explicitHttpConfig;
    const h2 = explicit?.http2ProtocolOptions ?? o.useDownstreamProtocolConfig?.http2ProtocolOptions;
    if (explicit !== undefined) {
      if (explicit.http3ProtocolOptions !== undefined) is.error(`${base}.explicitHttpConfig.http3ProtocolOptions`, 'HTTP/3 upstreams are not supported');
      protocol = explicit.http2ProtocolOptions !== undefined ? 'http2' : 'http1';
    } else if (o.useDownstreamProtocolConfig !== undefined) {
      is.warn(`${base}.useDownstreamProtocolConfig`, 'the upstream protocol is HTTP/1.1 whatever the downstream spoke');
      protocol = 'http1';
    } else if (o.autoConfig !== undefined) {
      is.warn(`${base}.autoConfig`, 'the upstream protocol is HTTP/1.1 (no ALPN choice of HTTP/2)');
      protocol = 'http1';
    }
    if (h2 !== undefined) {
      maxConcurrentStreams = count(h2.maxConcurrentStreams, 0);
      const tuning = extra(h2, ['maxConcurrentStreams']);
      for (const f of tuning) is.warn(`${base}.explicitHttpConfig.http2ProtocolOptions.${f}`, 'not supported by Remora; ignored');
    }
    const h1 = explicit?.httpProtocolOptions ?? o.useDownstreamProtocolConfig?.httpProtocolOptions;
    for (const f of extra(h1, [])) is.warn(`${base}.explicitHttpConfig.httpProtocolOptions.${f}`, 'not supported by Remora; ignored');
  }
  const uco = c.upstreamConnectionOptions;
  for (const f of extra(uco, ['tcpKeepalive'])) is.warn(`upstreamConnectionOptions.${f}`, 'not supported by Remora; ignored');
  const ka = uco?.tcpKeepalive;
  let keepaliveTimeMs = 0;
  if (ka !== undefined) {
    // Node sets the idle time before the first probe; Linux's default when unset is 7200 s.
    keepaliveTimeMs = count(ka.keepaliveTime, 7200) * 1000;
    warnFields(is, 'upstreamConnectionOptions.tcpKeepalive', ka, ['keepaliveProbes', 'keepaliveInterval'], 'the operating system\'s probe count and interval are used');
  }
  const own = remora.pool ?? {};
  return {
    protocol,
    pool: {
      maxConnections: th.maxConnections,
      connectTimeoutMs,
      maxPendingRequests: th.maxPendingRequests,
      maxRequests: th.maxRequests,
      maxRequestsPerConnection: own.maxRequestsPerConnection ?? maxRequestsPerConnection,
      maxRetries: th.maxRetries,
      idleTimeoutMs: own.idleTimeoutMs ?? idleTimeoutMs,
      maxConnectionDurationMs: own.maxConnectionDurationMs ?? maxConnectionDurationMs,
      keepaliveTimeMs,
      maxConcurrentStreams: own.maxConcurrentStreams ?? maxConcurrentStreams,
    },
  };
}

/** The DEFAULT priority's circuit breaker thresholds; Envoy's defaults when unset; unlimited → 0. */
function thresholds(is: Issues, c: ClusterJson): typeof DEFAULT_THRESHOLDS {
  const cb = c.circuitBreakers;
  for (const f of extra(cb, ['thresholds', 'perHostThresholds'])) is.error(`circuitBreakers.${f}`, `${f} is not supported`);
  if ((cb?.perHostThresholds ?? []).length > 0) is.error('circuitBreakers.perHostThresholds', 'per-host limits are not supported');
  const all = cb?.thresholds ?? [];
  const i = all.findIndex((t) => (t.priority ?? 'DEFAULT') === 'DEFAULT');
  all.forEach((t, j) => {
    if (j !== i) is.warn(`circuitBreakers.thresholds[${j}]`, `${t.priority ?? 'DEFAULT'} priority limits are not supported (Remora has one priority); ignored`);
  });
  const t = all[i];
  if (t === undefined) return { ...DEFAULT_THRESHOLDS };
  const at = `circuitBreakers.thresholds[${i}]`;
  if (t.retryBudget !== undefined) is.error(`${at}.retryBudget`, 'retry budgets are not supported; use maxRetries');
  warnFields(is, at, t, ['maxConnectionPools'], 'not supported by Remora; ignored');
  for (const f of extra(t, ['priority', 'maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries', 'retryBudget', 'trackRemaining', 'maxConnectionPools'])) is.error(`${at}.${f}`, `${f} is not supported`);
  const limit = (v: number | undefined, dflt: number): number => {
    const n = count(v, dflt);
    return n >= UNLIMITED ? 0 : n;
  };
  return {
    maxConnections: limit(t.maxConnections, DEFAULT_THRESHOLDS.maxConnections),
    maxPendingRequests: limit(t.maxPendingRequests, DEFAULT_THRESHOLDS.maxPendingRequests),
    maxRequests: limit(t.maxRequests, DEFAULT_THRESHOLDS.maxRequests),
    maxRetries: limit(t.maxRetries, DEFAULT_THRESHOLDS.maxRetries),
  };
}

/**
 * Envoy's outlier detection with its defaults for unset fields; an `enforcing*` of 0 turns
 * that check off (0 errors in the model). Partial enforcement is enforced fully.
 */
function outlier(is: Issues, od: OutlierDetectionJson | undefined, panic: number): OutlierDetection | null {
  if (od === undefined) return null;
  const at = 'outlierDetection';
  const known = [
    'interval',
    'baseEjectionTime',
    'maxEjectionPercent',
    'consecutive5xx',
    'enforcingConsecutive5xx',
    'consecutiveGatewayFailure',
    'enforcingConsecutiveGatewayFailure',
    'splitExternalLocalOriginErrors',
    'consecutiveLocalOriginFailure',
    'enforcingConsecutiveLocalOriginFailure',
    'enforcingSuccessRate',
    'enforcingLocalOriginSuccessRate',
    'enforcingFailurePercentage',
    'enforcingFailurePercentageLocalOrigin',
    'successRateMinimumHosts',
    'successRateRequestVolume',
    'successRateStdevFactor',
    'failurePercentageThreshold',
    'failurePercentageMinimumHosts',
    'failurePercentageRequestVolume',
    'maxEjectionTime',
    'maxEjectionTimeJitter',
    'successfulActiveHealthCheckUnejectHost',
    'alwaysEjectOneHost',
  ];
  for (const f of extra(od, known)) is.error(`${at}.${f}`, `${f} is not supported`);
  // Envoy ejects on success rate unless told not to (istiod always sets 0).
  if (count(od.enforcingSuccessRate, 100) > 0) is.warn(`${at}.enforcingSuccessRate`, 'success rate ejection is not supported; only consecutive errors eject');
  if (od.splitExternalLocalOriginErrors === true && count(od.enforcingLocalOriginSuccessRate, 100) > 0) {
    is.warn(`${at}.enforcingLocalOriginSuccessRate`, 'local origin success rate ejection is not supported');
  }
  for (const f of ['enforcingFailurePercentage', 'enforcingFailurePercentageLocalOrigin'] as const) {
    if (count(od[f], 0) > 0) is.warn(`${at}.${f}`, 'failure percentage ejection is not supported');
  }
  warnFields(is, at, od, ['maxEjectionTime', 'maxEjectionTimeJitter', 'alwaysEjectOneHost', 'successfulActiveHealthCheckUnejectHost'], 'not supported by Remora; ignored');
  const enforced = (field: string, value: number, enforcing: number): number => {
    if (enforcing > 0 && enforcing < 100) is.warn(`${at}.${field}`, `enforced at ${enforcing}% in Envoy; Remora always ejects`);
    return enforcing > 0 ? value : 0;
  };
  const split = od.splitExternalLocalOriginErrors === true;
  return {
    consecutive5xxErrors: enforced('enforcingConsecutive5xx', count(od.consecutive5xx, 5), count(od.enforcingConsecutive5xx, 100)),
    consecutiveGatewayErrors: enforced('enforcingConsecutiveGatewayFailure', count(od.consecutiveGatewayFailure, 5), count(od.enforcingConsecutiveGatewayFailure, 0)),
    consecutiveLocalOriginFailures: split
      ? enforced('enforcingConsecutiveLocalOriginFailure', count(od.consecutiveLocalOriginFailure, 5), count(od.enforcingConsecutiveLocalOriginFailure, 100))
      : count(od.consecutiveLocalOriginFailure, 5),
    splitExternalLocalOriginErrors: split,
    intervalMs: ms(is, `${at}.interval`, od.interval, 10_000),
    baseEjectionTimeMs: ms(is, `${at}.baseEjectionTime`, od.baseEjectionTime, 30_000),
    maxEjectionPercent: count(od.maxEjectionPercent, 10),
    minHealthPercent: panic,
  };
}

// ---- TLS ----

/** istiod's SNI for Istio mTLS to a cluster: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`. */
function istioSni(name: string): string {
  return name.split('|').join('_.');
}

/** What one transport socket says, in the model's terms. */
type SocketTls =
  | { readonly kind: 'plain' }
  | { readonly kind: 'tls'; readonly tls: UpstreamTls }
  | { readonly kind: 'invalid' };

function security(
  is: Issues,
  c: ClusterJson,
  endpoints: readonly Endpoint[],
  remora: RemoraClusterMetadata,
): { tls: UpstreamTls | null; serviceAccounts: readonly string[] } {
  const name = c.name ?? '';
  const matches = c.transportSocketMatches ?? [];
  let tls: UpstreamTls | null = null;
  let derived: readonly string[] = [];
  if (matches.length > 0) {
    const auto = autoMtls(is, matches, c.transportSocket, name);
    if (auto !== null) derived = auto;
  } else if (c.transportSocket !== undefined) {
    const s = socketTls(is, 'transportSocket', c.transportSocket, name);
    if (s.kind === 'tls') {
      tls = s.tls;
      if (s.tls.mode === 'ISTIO_MUTUAL') derived = s.tls.subjectAltNames;
    } else if (s.kind === 'plain') {
      tls = PLAINTEXT;
    }
  } else if (endpoints.some((e) => e.labels[TLS_MODE_LABEL] === 'istio')) {
    // Without a transport socket Envoy speaks plaintext; without `tls`, Remora would do auto mTLS.
    tls = PLAINTEXT;
  }
  return { tls, serviceAccounts: remora.serviceAccounts ?? derived };
}

const PLAINTEXT: UpstreamTls = {
  mode: 'DISABLE',
  clientCertificate: null,
  privateKey: null,
  caCertificates: null,
  subjectAltNames: [],
  sni: null,
  insecureSkipVerify: false,
};

/**
 * istiod's auto mTLS: a `tlsMode: istio` match with Istio mTLS, then plaintext for every
 * other endpoint. Returns the accounts the mTLS socket verifies; null (with an error) for
 * any other socket matching, which Remora cannot do.
 */
function autoMtls(is: Issues, matches: readonly Cluster_TransportSocketMatchJson[], fallback: TransportSocketJson | undefined, name: string): readonly string[] | null {
  let sans: readonly string[] | null = null;
  let plainRest = false;
  for (const [i, m] of matches.entries()) {
    const at = `transportSocketMatches[${i}]`;
    const keys = Object.keys(m.match ?? {});
    if (plainRest) {
      is.warn(at, 'never used: an earlier match takes every endpoint');
      continue;
    }
    const s = m.transportSocket === undefined ? ({ kind: 'plain' } as SocketTls) : socketTls(is, `${at}.transportSocket`, m.transportSocket, name);
    if (s.kind === 'invalid') return null;
    if (keys.length === 0 && s.kind === 'plain') {
      plainRest = true;
      continue;
    }
    if (sans === null && keys.length === 1 && (m.match as JsonObject).tlsMode === 'istio' && s.kind === 'tls' && s.tls.mode === 'ISTIO_MUTUAL' && s.tls.sni === null) {
      sans = s.tls.subjectAltNames;
      continue;
    }
    is.error(at, 'only istiod\'s auto mTLS matching is supported (Istio mTLS for `tlsMode: istio` endpoints, plaintext for the rest)');
    return null;
  }
  if (!plainRest && fallback !== undefined) {
    const s = socketTls(is, 'transportSocket', fallback, name);
    if (s.kind === 'invalid') return null;
    if (s.kind !== 'plain') {
      is.error('transportSocket', 'with auto mTLS, endpoints not labelled `tlsMode: istio` must be reached in plaintext');
      return null;
    }
  }
  if (sans === null) {
    is.error('transportSocketMatches', 'no `tlsMode: istio` match with Istio mTLS');
    return null;
  }
  return sans;
}

const TLS_SOCKETS = new Set(['envoy.transport_sockets.tls', 'tls']);
const RAW_SOCKETS = new Set(['envoy.transport_sockets.raw_buffer', 'raw_buffer']);

function socketTls(is: Issues, at: string, s: TransportSocketJson, name: string): SocketTls {
  const cfg = s.typedConfig as AnyJson | undefined;
  const type = cfg?.['@type'];
  if (type === RAW_BUFFER_TYPE || (type === undefined && RAW_SOCKETS.has(s.name ?? ''))) return { kind: 'plain' };
  if (type === UPSTREAM_TLS_TYPE || (type === undefined && TLS_SOCKETS.has(s.name ?? ''))) {
    const tls = upstreamTls(is, `${at}.typedConfig`, (cfg ?? {}) as UpstreamTlsContextJson, name);
    return tls === null ? { kind: 'invalid' } : { kind: 'tls', tls };
  }
  is.error(at, `transport socket ${s.name ?? ''}${type !== undefined ? ` (${type})` : ''} is not supported`);
  return { kind: 'invalid' };
}

/** A DataSource that names a file; inline content and environment variables are errors. */
function fileOf(is: Issues, at: string, d: DataSourceJson | undefined): string | null {
  if (d === undefined) return null;
  if (d.filename !== undefined && d.filename !== '') return d.filename;
  is.error(at, 'only certificates in files (filename) are supported, not inline content or environment variables');
  return null;
}

/**
 * istiod's SDS names resolve without being listed: `default`/`ROOTCA` (ImportContext), and
 * the agent's file names, `file-cert:<cert>~<key>` and `file-root:<ca>`.
 */
function resolveSecret(is: Issues, at: string, s: SdsSecretConfigJson): SecretRef | null {
  const name = s.name ?? '';
  const known = is.ctx.secret(name);
  if (known !== undefined) return known;
  if (name.startsWith('file-cert:')) {
    const [certFile = '', keyFile = ''] = name.slice('file-cert:'.length).split('~');
    if (certFile !== '' && keyFile !== '') return { name, kind: 'certificate', certFile, keyFile };
  }
  if (name === 'file-root:system') return { name, kind: 'validation', caFile: '' };
  if (name.startsWith('file-root:') && name.length > 'file-root:'.length) return { name, kind: 'validation', caFile: name.slice('file-root:'.length) };
  is.error(at, `SDS secret ${JSON.stringify(name)} is not known`);
  return null;
}

const COMMON_TLS_FIELDS = ['tlsParams', 'tlsCertificates', 'tlsCertificateSdsSecretConfigs', 'validationContext', 'validationContextSdsSecretConfig', 'combinedValidationContext', 'alpnProtocols', 'keyLog'];
const VALIDATION_FIELDS = ['trustedCa', 'systemRootCerts', 'matchTypedSubjectAltNames', 'matchSubjectAltNames', 'trustChainVerification', 'maxVerifyDepth'];

/**
 * An UpstreamTlsContext as the model's TLS: the workload certificate with the mesh roots is
 * Istio mTLS; a client certificate makes MUTUAL, none SIMPLE. Without any validation Envoy
 * verifies nothing (insecureSkipVerify). Anything that would verify less than Envoy does is
 * an error. ALPN is Remora's own (from the cluster's protocol).
 */
function upstreamTls(is: Issues, at: string, u: UpstreamTlsContextJson, name: string): UpstreamTls | null {
  let ok = true;
  const fail = (path: string, message: string): void => {
    is.error(path, message);
    ok = false;
  };
  for (const f of extra(u, ['@type', 'commonTlsContext', 'sni', 'allowRenegotiation', 'maxSessionKeys', 'enforceRsaKeyUsage', 'autoHostSni', 'autoSniSanValidation'])) fail(`${at}.${f}`, `${f} is not supported`);
  warnFields(is, at, u, ['allowRenegotiation', 'maxSessionKeys', 'enforceRsaKeyUsage'], 'not supported by Remora; ignored');
  const flags = u as { autoHostSni?: boolean; autoSniSanValidation?: boolean };
  if (flags.autoHostSni === true) is.warn(`${at}.autoHostSni`, 'SNI is the configured sni, else the service host, not the request\'s Host');
  if (flags.autoSniSanValidation === true) is.warn(`${at}.autoSniSanValidation`, 'without SAN matchers Remora checks the certificate against the SNI');
  const common: CommonTlsContextJson = u.commonTlsContext ?? {};
  const cat = `${at}.commonTlsContext`;
  for (const f of extra(common, COMMON_TLS_FIELDS)) fail(`${cat}.${f}`, `${f} is not supported`);
  warnFields(is, cat, common, ['keyLog'], 'not supported by Remora; ignored');
  const params = common.tlsParams;
  if (params !== undefined) {
    const min = params.tlsMinimumProtocolVersion ?? 'TLS_AUTO';
    const max = params.tlsMaximumProtocolVersion ?? 'TLS_AUTO';
    if ((min !== 'TLS_AUTO' && min !== 'TLSv1_2') || (max !== 'TLS_AUTO' && max !== 'TLSv1_3') || extra(params, ['tlsMinimumProtocolVersion', 'tlsMaximumProtocolVersion']).length > 0) {
      is.warn(`${cat}.tlsParams`, 'Remora offers TLS 1.2 to 1.3 with Node\'s ciphers and curves');
    }
  }

  // The client certificate.
  let cert: SecretRef | { kind: 'files'; certFile: string; keyFile: string } | null = null;
  const sdsCerts = common.tlsCertificateSdsSecretConfigs ?? [];
  const inlineCerts = common.tlsCertificates ?? [];
  if (sdsCerts.length + inlineCerts.length > 1) fail(`${cat}.tlsCertificates`, 'only one client certificate is supported');
  if (sdsCerts[0] !== undefined) {
    const ref = resolveSecret(is, `${cat}.tlsCertificateSdsSecretConfigs[0]`, sdsCerts[0]);
    if (ref === null) ok = false;
    else if (ref.kind !== 'workload' && ref.kind !== 'certificate') fail(`${cat}.tlsCertificateSdsSecretConfigs[0]`, `SDS secret ${ref.name} is not a certificate`);
    else cert = ref;
  } else if (inlineCerts[0] !== undefined) {
    const tc = inlineCerts[0];
    for (const f of extra(tc, ['certificateChain', 'privateKey'])) fail(`${cat}.tlsCertificates[0].${f}`, `${f} is not supported`);
    const certFile = fileOf(is, `${cat}.tlsCertificates[0].certificateChain`, tc.certificateChain);
    const keyFile = fileOf(is, `${cat}.tlsCertificates[0].privateKey`, tc.privateKey);
    if (certFile === null || keyFile === null) fail(`${cat}.tlsCertificates[0]`, 'a client certificate needs its chain and private key in files');
    else cert = { kind: 'files', certFile, keyFile };
  }

  // The validation: inline, by SDS, or both combined (the inline part adds matchers).
  let validation: CertificateValidationContextJson | undefined;
  let validationSds: SdsSecretConfigJson | undefined;
  let vat = cat;
  if (common.combinedValidationContext !== undefined) {
    const cv = common.combinedValidationContext;
    for (const f of extra(cv, ['defaultValidationContext', 'validationContextSdsSecretConfig'])) fail(`${cat}.combinedValidationContext.${f}`, `${f} is not supported`);
    validation = cv.defaultValidationContext;
    validationSds = cv.validationContextSdsSecretConfig;
    vat = `${cat}.combinedValidationContext`;
    if (common.validationContext !== undefined || common.validationContextSdsSecretConfig !== undefined) fail(cat, 'one validation context only');
  } else {
    validation = common.validationContext;
    validationSds = common.validationContextSdsSecretConfig;
  }
  const dat = validation === undefined ? '' : common.combinedValidationContext !== undefined ? `${vat}.defaultValidationContext` : `${cat}.validationContext`;
  let roots: SecretRef | { kind: 'file'; caFile: string } | { kind: 'system' } | null = null;
  let insecure = false;
  if (validation !== undefined) {
    for (const f of extra(validation, VALIDATION_FIELDS)) fail(`${dat}.${f}`, `${f} is not supported (Remora cannot check it)`);
    warnFields(is, dat, validation, ['maxVerifyDepth'], 'not supported by Remora; ignored');
    if (validation.trustChainVerification === 'ACCEPT_UNTRUSTED') insecure = true;
    if (validation.trustedCa !== undefined) {
      const caFile = fileOf(is, `${dat}.trustedCa`, validation.trustedCa);
      if (caFile === null) ok = false;
      else roots = { kind: 'file', caFile };
    } else if (validation.systemRootCerts !== undefined) {
      roots = { kind: 'system' };
    }
  }
  if (validationSds !== undefined) {
    const ref = resolveSecret(is, `${vat}.validationContextSdsSecretConfig`, validationSds);
    if (ref === null) ok = false;
    else if (ref.kind !== 'roots' && ref.kind !== 'validation') fail(`${vat}.validationContextSdsSecretConfig`, `SDS secret ${ref.name} is not a validation context`);
    else if (roots !== null) fail(`${vat}.validationContextSdsSecretConfig`, 'trusted CAs are given twice');
    else roots = ref;
  }
  const sans = sanMatchers(dat, validation, fail);
  if (!ok) return null;

  const sni = u.sni !== undefined && u.sni !== '' ? u.sni : null;
  if (cert?.kind === 'workload' || roots?.kind === 'roots') {
    if (cert?.kind !== 'workload' || roots?.kind !== 'roots' || insecure) {
      is.error(cat, 'the workload certificate and the mesh roots (SDS `default` and `ROOTCA`) go together: Istio mTLS');
      return null;
    }
    return { mode: 'ISTIO_MUTUAL', clientCertificate: null, privateKey: null, caCertificates: null, subjectAltNames: sans, sni: sni === istioSni(name) ? null : sni, insecureSkipVerify: false };
  }
  // No trusted CA at all: Envoy does not verify the server.
  if (roots === null && validation === undefined) insecure = true;
  if (roots === null && validation !== undefined && !insecure) {
    is.error(dat, 'SAN checks need trusted CAs (trustedCa, systemRootCerts or an SDS validation context)');
    return null;
  }
  const caFile = roots === null ? null : roots.kind === 'file' ? roots.caFile : roots.kind === 'validation' && roots.caFile !== '' ? roots.caFile : null;
  const files = cert === null ? null : cert.kind === 'files' || cert.kind === 'certificate' ? cert : null;
  return {
    mode: files !== null ? 'MUTUAL' : 'SIMPLE',
    clientCertificate: files?.certFile ?? null,
    privateKey: files?.keyFile ?? null,
    caCertificates: insecure ? null : caFile,
    subjectAltNames: insecure ? [] : sans,
    sni,
    insecureSkipVerify: insecure,
  };
}

/** SAN matchers as the model's exact names; any other matcher would verify differently: an error. */
function sanMatchers(at: string, v: CertificateValidationContextJson | undefined, fail: (path: string, message: string) => void): string[] {
  const out: string[] = [];
  const exact = (path: string, m: StringMatcherJson | undefined): void => {
    if (m !== undefined && typeof m.exact === 'string' && m.ignoreCase !== true) out.push(m.exact);
    else fail(path, 'only exact SAN matchers are supported');
  };
  (v?.matchSubjectAltNames ?? []).forEach((m, i) => exact(`${at}.matchSubjectAltNames[${i}]`, m));
  (v?.matchTypedSubjectAltNames ?? []).forEach((m, i) => {
    const path = `${at}.matchTypedSubjectAltNames[${i}]`;
    if (m.sanType === 'OTHER_NAME' || m.oid !== undefined) fail(`${path}.sanType`, 'OTHER_NAME SANs are not supported');
    else exact(`${path}.matcher`, m.matcher);
  });
  return out;
}

/** Cluster network filters: istiod's metadata exchange (true when there), any other is an error. */
function clusterFilters(is: Issues, c: ClusterJson): boolean {
  let mx = false;
  (c.filters ?? []).forEach((f, i) => {
    const config = metadataExchangeConfig(f);
    if (config === null) {
      is.error(`filters[${i}]`, `cluster filter ${f.name ?? ''} is not supported (Remora runs istio.metadata_exchange)`);
      return;
    }
    const type = (f.typedConfig as AnyJson | undefined)?.['@type'] ?? '';
    const path = `filters[${i}].${TYPED_STRUCT_TYPES.has(type) ? 'typedConfig.value' : 'typedConfig'}`;
    const issues = metadataExchangeIssues(config);
    for (const [k, m] of issues.errors) is.error(`${path}.${k}`, m);
    for (const [k, m] of issues.warnings) is.warn(`${path}.${k}`, m);
    mx = true;
  });
  return mx;
}

/** The load assignment an EDS cluster takes its endpoints from (`eds_cluster_config.service_name`, else its name); null for other clusters. */
export function edsServiceName(c: ClusterJson): string | null {
  if (c.type !== 'EDS' && c.edsClusterConfig === undefined) return null;
  return c.edsClusterConfig?.serviceName || (c.name ?? '');
}
