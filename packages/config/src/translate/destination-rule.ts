import type { ConnectionPool, HashKey, LoadBalancerPolicy, LocalityLbSetting, OutlierDetection, UpstreamTls } from '../model/cluster.ts';
import type { Resource } from '../resources/resource.ts';
import type {
  IstioClientTLSSettings,
  IstioDestinationRule,
  IstioLoadBalancerSettings,
  IstioSubset,
  IstioTrafficPolicy,
} from '../resources/istio-networking.ts';
import type { TranslateContext } from './context.ts';
import { credentialFiles, DEFAULT_CREDENTIALS_DIR } from './credentials.ts';
import { hostCovers, hostSpecificity, resolveHost } from './host.ts';

/** Istio's defaults for an HTTP cluster with no DestinationRule. */
export const DEFAULT_CONNECTION_POOL: ConnectionPool = {
  maxConnections: 0,
  connectTimeoutMs: 10_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 0,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};

/** Istio picks LEAST_REQUEST when a DestinationRule does not say. */
export const DEFAULT_LOAD_BALANCER: LoadBalancerPolicy = { kind: 'least-request' };

/** The policy one cluster gets after merging service-, port- and subset-level settings. */
export interface ClusterPolicy {
  readonly lb: LoadBalancerPolicy;
  readonly connectionPool: ConnectionPool;
  readonly outlierDetection: OutlierDetection | null;
  readonly tls: UpstreamTls | null;
  /** DestinationRule `h2UpgradePolicy: UPGRADE`: HTTP/1.1 ports are spoken to as HTTP/2. */
  readonly h2Upgrade: boolean;
  readonly localityLb: LocalityLbSetting | null;
  readonly warmupMs: number;
}

interface IndexedRule {
  readonly resource: Resource;
  readonly host: string;
  readonly spec: IstioDestinationRule;
}

/**
 * Which DestinationRule applies to a host, as Istio decides for a client: rules in the
 * client's namespace first, then the service's namespace, then the root namespace; within
 * one namespace the most specific host wins, then the oldest rule.
 */
export class DestinationRuleIndex {
  readonly #ctx: TranslateContext;
  readonly #byNamespace = new Map<string, IndexedRule[]>();
  readonly #credentialsDir: string;

  /** `credentialsDir`: where `tls.credentialName`s resolve (`<dir>/<name>/tls.crt`, `tls.key`, `ca.crt`). */
  constructor(ctx: TranslateContext, credentialsDir: string = DEFAULT_CREDENTIALS_DIR) {
    this.#ctx = ctx;
    this.#credentialsDir = credentialsDir;
    for (const r of ctx.resourcesOf('DestinationRule')) {
      if (!ctx.isVisible(r)) continue;
      const spec = r.spec as IstioDestinationRule;
      if (spec.workloadSelector?.matchLabels) {
        // Workload-scoped rules apply only to the selected workloads in their namespace.
        if (r.metadata.namespace !== ctx.node.namespace) continue;
        const sel = spec.workloadSelector.matchLabels;
        if (!Object.entries(sel).every(([k, v]) => ctx.node.labels[k] === v)) continue;
      }
      const host = resolveHost(spec.host ?? '', r.metadata.namespace, ctx.node.clusterDomain);
      let list = this.#byNamespace.get(r.metadata.namespace);
      if (list === undefined) this.#byNamespace.set(r.metadata.namespace, (list = []));
      list.push({ resource: r, host, spec });
    }
  }

  lookup(host: string, serviceNamespace: string): IndexedRule | null {
    const { node } = this.#ctx;
    for (const ns of [node.namespace, serviceNamespace, node.rootNamespace]) {
      const list = this.#byNamespace.get(ns);
      if (!list) continue;
      let best: IndexedRule | null = null;
      for (const rule of list) {
        if (!hostCovers(rule.host, host)) continue;
        if (best === null || hostSpecificity(rule.host) > hostSpecificity(best.host)) best = rule;
      }
      if (best) return best;
    }
    return null;
  }

  /** Subset by name, with its index for error paths. */
  static subset(rule: IndexedRule, name: string): { subset: IstioSubset; index: number } | null {
    const subsets = rule.spec.subsets ?? [];
    const index = subsets.findIndex((s) => s.name === name);
    return index < 0 ? null : { subset: subsets[index]!, index };
  }

  /**
   * Merged policy for a cluster: service-wide, replaced by port level, overridden field by
   * field by the subset, replaced by subset port level. Port-level settings do not inherit:
   * Istio applies defaults to the fields they omit (TrafficPolicy.portLevelSettings docs;
   * cluster_traffic_policy.go MergeSubsetTrafficPolicy).
   */
  policyFor(rule: IndexedRule | null, subset: IstioSubset | null, port: number): ClusterPolicy {
    let merged: IstioTrafficPolicy = {};
    const apply = (p: IstioTrafficPolicy | undefined): void => {
      if (!p) return;
      merged = overlay(merged, p);
      const portLevel = p.portLevelSettings?.find((s) => s.port?.number === port);
      if (portLevel) merged = overlay({}, portLevel);
    };
    apply(rule?.spec.trafficPolicy);
    apply(subset?.trafficPolicy);
    return this.#toPolicy(merged, rule?.resource ?? null);
  }

  #toPolicy(p: IstioTrafficPolicy, source: Resource | null): ClusterPolicy {
    const ctx = this.#ctx;
    const cp = p.connectionPool;
    const connectionPool: ConnectionPool = cp
      ? {
          maxConnections: cp.tcp?.maxConnections ?? 0,
          connectTimeoutMs: ctx.durationMs(cp.tcp?.connectTimeout, DEFAULT_CONNECTION_POOL.connectTimeoutMs),
          maxPendingRequests: cp.http?.http1MaxPendingRequests ?? 0,
          maxRequests: cp.http?.http2MaxRequests ?? 0,
          maxRequestsPerConnection: cp.http?.maxRequestsPerConnection ?? 0,
          maxRetries: cp.http?.maxRetries ?? 0,
          idleTimeoutMs: ctx.durationMs(cp.http?.idleTimeout ?? cp.tcp?.idleTimeout, DEFAULT_CONNECTION_POOL.idleTimeoutMs),
          maxConnectionDurationMs: ctx.durationMs(cp.tcp?.maxConnectionDuration, 0),
          // Node sets the idle time before the first probe; probe count and interval stay the OS's.
          keepaliveTimeMs: ctx.durationMs((cp.tcp?.tcpKeepalive as { time?: string } | undefined)?.time, 0),
          maxConcurrentStreams: cp.http?.maxConcurrentStreams ?? 0,
        }
      : DEFAULT_CONNECTION_POOL;
    const od = p.outlierDetection;
    const outlierDetection: OutlierDetection | null = od
      ? {
          // `consecutiveErrors` is the deprecated spelling of consecutiveGatewayErrors.
          consecutive5xxErrors: od.consecutive5xxErrors ?? 5,
          consecutiveGatewayErrors: od.consecutiveGatewayErrors ?? od.consecutiveErrors ?? 0,
          // Istio passes these two on only when > 0 (applyOutlierDetection): 0 leaves Envoy's
          // default (5 failures, 10%), it does not turn the check off.
          consecutiveLocalOriginFailures: od.consecutiveLocalOriginFailures || 5,
          splitExternalLocalOriginErrors: od.splitExternalLocalOriginErrors ?? false,
          intervalMs: ctx.durationMs(od.interval, 10_000),
          baseEjectionTimeMs: ctx.durationMs(od.baseEjectionTime, 30_000),
          maxEjectionPercent: od.maxEjectionPercent || 10,
          minHealthPercent: od.minHealthPercent ?? 0,
        }
      : null;
    const tls = p.tls ? this.#upstreamTls(p.tls, source) : null;
    // Istio's mesh default is DO_NOT_UPGRADE; only an explicit UPGRADE changes the protocol.
    const h2Upgrade = cp?.http?.h2UpgradePolicy === 'UPGRADE';
    // Istio: locality load balancing is on by default, but only where outlier detection can
    // tell healthy endpoints from the rest.
    // A DestinationRule's own setting wins; else the MeshConfig's `localityLbSetting` applies.
    const ls = (p.loadBalancer?.localityLbSetting ?? ctx.mesh.localityLbSetting) as
      | { enabled?: boolean; distribute?: { from?: string; to?: Record<string, number> }[]; failover?: { from?: string; to?: string }[]; failoverPriority?: string[] }
      | undefined;
    const localityLb: LocalityLbSetting | null =
      outlierDetection !== null && ls?.enabled !== false
        ? {
            distribute: (ls?.distribute ?? []).map((d) => ({ from: d.from ?? '*', to: d.to ?? {} })),
            failover: (ls?.failover ?? []).map((f) => ({ from: f.from ?? '', to: f.to ?? '' })),
            failoverPriority: ls?.failoverPriority ?? [],
          }
        : null;
    const lb = loadBalancer(p.loadBalancer, ctx, source);
    const warmup = p.loadBalancer as { warmupDurationSecs?: string; warmup?: { duration?: string } } | undefined;
    // Istio writes slow start only into ROUND_ROBIN and LEAST_REQUEST configs
    // (cluster_traffic_policy.go applyRoundRobinLoadBalancer / applyLeastRequestLoadBalancer):
    // a consistent hash or RANDOM cluster has none.
    const warmupMs =
      lb.kind === 'round-robin' || lb.kind === 'least-request' ? ctx.durationMs(warmup?.warmup?.duration ?? warmup?.warmupDurationSecs, 0) : 0;
    return { lb, connectionPool, outlierDetection, tls, h2Upgrade, localityLb, warmupMs };
  }

  /**
   * DestinationRule `tls` → the model. A `tls` block without a mode is DISABLE (the proto's
   * default), which keeps auto mTLS off as an explicit DISABLE does. `credentialName` stands
   * for a Kubernetes TLS secret's files: SIMPLE verifies with its `ca.crt`, MUTUAL also
   * presents `tls.crt`/`tls.key`. ISTIO_MUTUAL ignores certificate fields: it always uses the
   * workload identity (Istio's ClientTLSSettings docs).
   */
  #upstreamTls(t: IstioClientTLSSettings, source: Resource | null): UpstreamTls {
    const mode = t.mode ?? 'DISABLE';
    const base: UpstreamTls = {
      mode,
      clientCertificate: null,
      privateKey: null,
      caCertificates: null,
      subjectAltNames: t.subjectAltNames ?? [],
      sni: t.sni || null,
      insecureSkipVerify: t.insecureSkipVerify ?? false,
    };
    if (mode === 'DISABLE' || mode === 'ISTIO_MUTUAL') return base;
    const name = t.credentialName ?? '';
    if (name !== '') {
      if (name.includes('/') || name === '.' || name === '..') {
        if (source) this.#ctx.error(source, ['spec', 'trafficPolicy', 'tls', 'credentialName'], `credentialName "${name}" must be a secret name, not a path`);
        return base;
      }
      const files = credentialFiles(this.#credentialsDir, name);
      return {
        ...base,
        clientCertificate: mode === 'MUTUAL' ? files.cert : null,
        privateKey: mode === 'MUTUAL' ? files.key : null,
        caCertificates: base.insecureSkipVerify ? null : files.ca,
      };
    }
    return {
      ...base,
      clientCertificate: mode === 'MUTUAL' ? (t.clientCertificate ?? null) : null,
      privateKey: mode === 'MUTUAL' ? (t.privateKey ?? null) : null,
      caCertificates: t.caCertificates || null,
    };
  }
}

function loadBalancer(lb: IstioLoadBalancerSettings | undefined, ctx: TranslateContext, source: Resource | null): LoadBalancerPolicy {
  if (!lb) return DEFAULT_LOAD_BALANCER;
  const ch = lb.consistentHash;
  if (ch) {
    let key: HashKey | null = null;
    if (ch.httpHeaderName) key = { kind: 'header', name: ch.httpHeaderName.toLowerCase() };
    else if (ch.httpCookie?.name)
      key = {
        kind: 'cookie',
        name: ch.httpCookie.name,
        path: ch.httpCookie.path ?? '',
        ttlSeconds: Math.floor(ctx.durationMs(ch.httpCookie.ttl, 0) / 1000),
      };
    else if (ch.useSourceIp) key = { kind: 'source-ip' };
    else if (ch.httpQueryParameterName) key = { kind: 'query-param', name: ch.httpQueryParameterName };
    if (key) return { kind: 'ring-hash', key, minimumRingSize: ch.ringHash?.minimumRingSize ?? ch.minimumRingSize ?? 1024 };
    if (source) ctx.warn(source, ['spec', 'trafficPolicy', 'loadBalancer', 'consistentHash'], 'no hash key set; using the default load balancer');
    return DEFAULT_LOAD_BALANCER;
  }
  switch (lb.simple) {
    case 'ROUND_ROBIN':
      return { kind: 'round-robin' };
    case 'RANDOM':
      return { kind: 'random' };
    case 'PASSTHROUGH':
      if (source) ctx.warn(source, ['spec', 'trafficPolicy', 'loadBalancer', 'simple'], 'PASSTHROUGH is not supported; using LEAST_REQUEST');
      return DEFAULT_LOAD_BALANCER;
    default:
      // LEAST_REQUEST, its deprecated alias LEAST_CONN, and UNSPECIFIED.
      return DEFAULT_LOAD_BALANCER;
  }
}

/** Istio's field-level override: a set top-level field of `over` replaces the one in `base`. */
function overlay(base: IstioTrafficPolicy, over: IstioTrafficPolicy): IstioTrafficPolicy {
  const out: IstioTrafficPolicy = { ...base };
  if (over.loadBalancer) out.loadBalancer = over.loadBalancer;
  if (over.connectionPool) out.connectionPool = over.connectionPool;
  if (over.outlierDetection) out.outlierDetection = over.outlierDetection;
  if (over.tls) out.tls = over.tls;
  return out;
}
