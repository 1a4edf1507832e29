/**
 * Upstream clusters, shaped like Envoy's: a named set of endpoints with the policy for
 * reaching them (load balancing, connection pool, outlier detection, TLS).
 */

/** How the proxy speaks to a cluster's endpoints; `tcp`: raw bytes (TLS passthrough). */
export type UpstreamProtocol = 'http1' | 'http2' | 'tcp';

/** How a cluster learns its endpoint addresses. */
export type Discovery =
  /** Addresses are IPs given in config. */
  | 'static'
  /** Every address a hostname resolves to is an endpoint; re-resolved periodically (Envoy STRICT_DNS). */
  | 'strict-dns'
  /** One address of the hostname at a time (Envoy LOGICAL_DNS, Istio DNS_ROUND_ROBIN). */
  | 'logical-dns'
  /**
   * The downstream connection's original destination is the endpoint (Envoy ORIGINAL_DST with
   * the CLUSTER_PROVIDED balancer): Istio's PassthroughCluster and InboundPassthroughCluster.
   * The cluster lists no endpoints; a connection or request without an original destination
   * (not redirected to the proxy) has no host to go to: 503 UH.
   */
  | 'original-dst';

export interface Endpoint {
  /** An IP for static clusters, a hostname for DNS clusters; `unix://<path>` for a `pipe`. */
  readonly address: string;
  /** 0 for a `pipe`. */
  readonly port: number;
  /**
   * Envoy's `pipe` endpoint address: connections go to this unix domain socket (`@name`: Linux's
   * abstract namespace), as a Sidecar ingress `defaultEndpoint: unix://<path>` sends them.
   * `address` is then `unix://<path>` and `port` 0. Absent: `address:port` over TCP.
   */
  readonly pipe?: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Load-balancing weight, ≥ 1. */
  readonly weight: number;
  /** `region/zone/subzone`, '' when unknown. */
  readonly locality: string;
  /** Workload name for metrics (`destination_workload`), '' when unknown. */
  readonly workloadName: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export type HashKey =
  | { readonly kind: 'header'; readonly name: string }
  | { readonly kind: 'cookie'; readonly name: string; readonly path: string; readonly ttlSeconds: number }
  | { readonly kind: 'source-ip' }
  | { readonly kind: 'query-param'; readonly name: string };

export type LoadBalancerPolicy =
  | { readonly kind: 'round-robin' }
  /** Envoy's LEAST_REQUEST: power of two random choices, fewest active requests wins. */
  | { readonly kind: 'least-request' }
  | { readonly kind: 'random' }
  /** Istio `consistentHash`: a hash ring over endpoints keyed by a request property. */
  | { readonly kind: 'ring-hash'; readonly key: HashKey; readonly minimumRingSize: number };

/** Istio `connectionPool`; every limit is per cluster, as Envoy's circuit breakers. 0 = unlimited. */
export interface ConnectionPool {
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  readonly maxRequestsPerConnection: number;
  readonly maxRetries: number;
  /** Idle upstream connections close after this; 0 = keep (Envoy default 1 h). */
  readonly idleTimeoutMs: number;
  /** Connections older than this take no new requests and close once idle (Envoy max_connection_duration); 0 = no limit. */
  readonly maxConnectionDurationMs: number;
  /** TCP keepalive: idle time before the first probe (Istio `tcpKeepalive.time`); 0 = the default (60 s). */
  readonly keepaliveTimeMs: number;
  readonly maxConcurrentStreams: number;
}

/** Istio `outlierDetection` (passive health checking). */
export interface OutlierDetection {
  readonly consecutive5xxErrors: number;
  readonly consecutiveGatewayErrors: number;
  readonly consecutiveLocalOriginFailures: number;
  readonly splitExternalLocalOriginErrors: boolean;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
  readonly minHealthPercent: number;
}

/** Istio `localityLbSetting`: how traffic is spread over and fails over between localities. */
export interface LocalityLbSetting {
  /** Weighted spread: from a client locality pattern (`region/zone/*`) to destination localities with percentages. */
  readonly distribute: readonly { readonly from: string; readonly to: Readonly<Record<string, number>> }[];
  /** Region failover: when the client's region has no healthy endpoint, go to `to` before any other region. */
  readonly failover: readonly { readonly from: string; readonly to: string }[];
  /** Labels ranking endpoints by how many (leading) of them match the client's. */
  readonly failoverPriority: readonly string[];
}

/**
 * DestinationRule `tls`, resolved to file paths. `DISABLE` is kept (not turned into null) so
 * that an explicit plaintext choice also turns auto mTLS off; a null `tls` means unset.
 */
export interface UpstreamTls {
  readonly mode: 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  readonly clientCertificate: string | null;
  readonly privateKey: string | null;
  readonly caCertificates: string | null;
  readonly subjectAltNames: readonly string[];
  readonly sni: string | null;
  readonly insecureSkipVerify: boolean;
}

/** The service a cluster belongs to, for metrics labels and config dumps. */
export interface ServiceRef {
  /** Fully qualified host, `reviews.default.svc.cluster.local`. */
  readonly host: string;
  /** Short name, `reviews`. */
  readonly name: string;
  readonly namespace: string;
  readonly port: number;
}

/** A Kubernetes-style reference to the Istio resource that shaped a piece of config. */
export interface ConfigRef {
  readonly namespace: string;
  readonly name: string;
}

export interface Cluster {
  /** Istio's name: `outbound|<port>|<subset>|<host>` or `inbound|<port>||`. */
  readonly name: string;
  /** The service it reaches: istiod's `istio.services` cluster metadata. */
  readonly service: ServiceRef | null;
  /**
   * The DestinationRule whose policy the cluster carries (istiod's `istio.config` cluster
   * metadata, which `istioctl proxy-config clusters` shows); absent: none applies.
   */
  readonly destinationRule?: ConfigRef;
  /** Subset name, '' for the whole service. */
  readonly subset: string;
  readonly discovery: Discovery;
  readonly endpoints: readonly Endpoint[];
  /** How often DNS clusters re-resolve. */
  readonly dnsRefreshMs: number;
  readonly protocol: UpstreamProtocol;
  readonly lb: LoadBalancerPolicy;
  readonly connectionPool: ConnectionPool;
  readonly outlierDetection: OutlierDetection | null;
  readonly tls: UpstreamTls | null;
  /**
   * The SPIFFE IDs the service's workloads present (Istio's service accounts of the service):
   * under auto mTLS the server certificate must carry one of them. Empty: any identity the
   * mesh roots vouch for. An ISTIO_MUTUAL `tls` without `subjectAltNames` already lists them.
   */
  readonly serviceAccounts: readonly string[];
  /**
   * Locality-aware load balancing; null when off. Istio turns it on only for clusters with
   * outlier detection (without health information, failover could never happen).
   */
  readonly localityLb: LocalityLbSetting | null;
  /** Slow start (`warmupDurationSecs`): a new endpoint's share grows over this window; 0 = off. */
  readonly warmupMs: number;
  /**
   * Envoy's `upstream_bind_config.source_address`: the local address upstream connections are
   * made from. Istio's InboundPassthroughCluster binds `127.0.0.6`, which the pod's iptables
   * let through to the app (a connection from the proxy's UID to the pod IP would otherwise
   * be captured again). Absent: the kernel picks.
   */
  readonly upstreamBindAddress?: string;
  /**
   * Istio's TCP metadata exchange on this cluster's connections (istiod's `istio.metadata_exchange`
   * cluster filter): an Istio mTLS connection of TCP proxying offers ALPN `istio-peer-exchange`
   * and, when the server picks it, both sides send who they are before any byte of the app's;
   * the server's workload labels `istio_tcp_*`. Absent: no exchange (ALPN `istio` only).
   */
  readonly metadataExchange?: boolean;
}
