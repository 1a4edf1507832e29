import type { Cluster, Discovery, UpstreamTls } from '../model/cluster.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { DEFAULT_CONNECTION_POOL, DestinationRuleIndex } from './destination-rule.ts';
import { outboundClusterName } from './virtual-service.ts';
import { endpointsFor, isHttpProtocol, portProtocol, type MeshService, type ServicePort, type ServiceRegistry } from './registry.ts';

export interface ClusterOptions {
  /** How often DNS clusters re-resolve (Istio's mesh `dnsRefreshRate`). */
  readonly dnsRefreshMs: number;
  /**
   * Where `credentialName`s resolve (Gateway TLS servers, DestinationRule tls): the files of
   * credential `NAME` are `<dir>/NAME/tls.crt`, `tls.key` and `ca.crt`, the keys of a
   * Kubernetes TLS secret. Default `/etc/remora/credentials`.
   */
  readonly credentialsDir?: string;
}

/**
 * Istio builds a cluster for every port of every visible service, and one more per
 * DestinationRule subset; routes then refer to them by name. Only HTTP ports for now.
 */
export function buildOutboundClusters(
  ctx: TranslateContext,
  registry: ServiceRegistry,
  rules: DestinationRuleIndex,
  opts: ClusterOptions,
): Cluster[] {
  const out: Cluster[] = [];
  for (const svc of registry.services()) {
    if (svc.host.startsWith('*')) {
      ctx.warn(svc.source, ['spec', 'hosts'], `wildcard host ${svc.host}: wildcard ServiceEntries are not routed yet`);
      continue;
    }
    const rule = rules.lookup(svc.host, svc.namespace);
    for (const port of svc.ports) {
      // Non-HTTP ports get clusters too: TLS passthrough (and, later, TCP) routes use them.
      out.push(cluster(ctx, svc, port, '', null, rules.policyFor(rule, null, port.number), opts, rule?.resource ?? null));
      (rule?.spec.subsets ?? []).forEach((subset, i) => {
        if (!subset.name) return;
        const eps = subset.labels ?? {};
        const c = cluster(ctx, svc, port, subset.name, eps, rules.policyFor(rule, subset, port.number), opts, rule?.resource ?? null);
        if (c.endpoints.length === 0 && svc.endpoints.length > 0 && rule) {
          ctx.warn(rule.resource, ['spec', 'subsets', i, 'labels'], `subset ${subset.name} selects no endpoint of ${svc.host}`);
        }
        out.push(c);
      });
    }
  }
  return out;
}

function cluster(
  ctx: TranslateContext,
  svc: MeshService,
  port: ServicePort,
  subset: string,
  subsetLabels: Readonly<Record<string, string>> | null,
  policy: ReturnType<DestinationRuleIndex['policyFor']>,
  opts: ClusterOptions,
  rule: Resource | null,
): Cluster {
  const proto = portProtocol(port);
  const tcp = !isHttpProtocol(proto);
  return {
    name: outboundClusterName(port.number, subset, svc.host),
    service: { host: svc.host, name: svc.name, namespace: svc.namespace, port: port.number },
    ...(rule === null ? {} : { destinationRule: { namespace: rule.metadata.namespace, name: rule.metadata.name } }),
    subset,
    discovery: discovery(svc),
    endpoints: endpointsFor(svc, port, subsetLabels).filter((ep) => {
      if (ep.address.startsWith('unix://')) {
        ctx.warn(svc.source, ['spec', 'endpoints'], `unix domain socket endpoint ${ep.address} is not supported; skipped`);
        return false;
      }
      return ep.address !== '';
    }),
    dnsRefreshMs: opts.dnsRefreshMs,
    protocol: tcp ? 'tcp' : proto === 'HTTP2' || proto === 'GRPC' || (policy.h2Upgrade && proto === 'HTTP') ? 'http2' : 'http1',
    lb: policy.lb,
    connectionPool: policy.connectionPool,
    outlierDetection: policy.outlierDetection,
    // MeshConfig `enableAutoMtls: false`: without a DestinationRule `tls`, clients speak plaintext.
    tls: policy.tls === null && ctx.mesh.enableAutoMtls === false ? AUTO_MTLS_OFF : istioMutualSans(policy.tls, svc.serviceAccounts),
    serviceAccounts: svc.serviceAccounts,
    localityLb: policy.localityLb,
    warmupMs: policy.warmupMs,
    // istiod's metadata exchange on TCP proxying (PILOT_ENABLE_METADATA_EXCHANGE, on by default); HTTP exchanges headers instead.
    ...(tcp ? { metadataExchange: true } : {}),
  };
}

/** What `enableAutoMtls: false` leaves a cluster without a DestinationRule `tls`: plaintext, as an explicit DISABLE. */
const AUTO_MTLS_OFF: UpstreamTls = { mode: 'DISABLE', clientCertificate: null, privateKey: null, caCertificates: null, subjectAltNames: [], sni: null, insecureSkipVerify: false };

/**
 * ISTIO_MUTUAL checks the server against the service's accounts unless the DestinationRule
 * lists `subjectAltNames` itself (istiod's rule for in-mesh TLS).
 */
function istioMutualSans(tls: UpstreamTls | null, serviceAccounts: readonly string[]): UpstreamTls | null {
  if (tls === null || tls.mode !== 'ISTIO_MUTUAL' || tls.subjectAltNames.length > 0 || serviceAccounts.length === 0) return tls;
  return { ...tls, subjectAltNames: serviceAccounts };
}

function discovery(svc: MeshService): Discovery {
  switch (svc.resolution) {
    case 'STATIC':
      return 'static';
    case 'DNS':
      return 'strict-dns';
    case 'DNS_ROUND_ROBIN':
      return 'logical-dns';
    default:
      // NONE is Istio's passthrough to the address the client resolved. Without the original
      // destination, endpoints given as IPs are used as they are, and hostnames are resolved.
      return svc.endpoints.every((e) => isIp(e.address)) ? 'static' : 'strict-dns';
  }
}

export function isIp(address: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(address) || address.includes(':');
}

/** istiod's names for the sidecar's catch-all clusters (pilot/pkg/networking/util). */
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster';
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';
export const INBOUND_PASSTHROUGH_CLUSTER = 'InboundPassthroughCluster';
/** The source address of InboundPassthroughCluster's connections, which the pod's iptables let reach the app. */
export const INBOUND_PASSTHROUGH_BIND = '127.0.0.6';

/**
 * The clusters istiod adds to every sidecar (cluster_builder.go): PassthroughCluster
 * (ORIGINAL_DST: the bytes go where the app sent them; ALLOW_ANY's destination),
 * BlackHoleCluster (STATIC without endpoints: REGISTRY_ONLY's, every connection fails) and
 * InboundPassthroughCluster (ORIGINAL_DST from 127.0.0.6: inbound traffic for a port no
 * service declares). Envoy's default HTTP/1 for HTTP routes that reach them; TCP routes
 * carry bytes whatever the cluster says.
 */
export function sidecarPassthroughClusters(): Cluster[] {
  const base = (name: string, discovery: Discovery): Cluster => ({
    name,
    service: null,
    subset: '',
    discovery,
    endpoints: [],
    dnsRefreshMs: 0,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: DEFAULT_CONNECTION_POOL,
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
  });
  return [
    base(BLACKHOLE_CLUSTER, 'static'),
    base(PASSTHROUGH_CLUSTER, 'original-dst'),
    { ...base(INBOUND_PASSTHROUGH_CLUSTER, 'original-dst'), upstreamBindAddress: INBOUND_PASSTHROUGH_BIND },
  ];
}
