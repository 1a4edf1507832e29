/**
 * The upstream side's test fixtures: a gateway node, an outlier-detection policy, a cluster
 * model with Istio's defaults, and real `UpstreamHost`s (each with its pool, dialled only if
 * a test sends to it) that are destroyed together at the end of the test file.
 */
import type { Cluster, ConnectionPool, Endpoint, OutlierDetection, ProxyNode } from '@remora/config';
import type { RequestStats } from '../../src/telemetry/istio-metrics.ts';
import { UpstreamHost, type ClusterHost, type PoolSettings } from '../../src/upstream/upstream-host.ts';

export const NODE: ProxyNode = {
  kind: 'gateway',
  namespace: 'default',
  serviceAccount: 'default',
  labels: {},
  workloadName: 'gw',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};

/** Ejects on the first 5xx, for 30 s, every host if need be. */
export const OUTLIER: OutlierDetection = {
  consecutive5xxErrors: 1,
  consecutiveGatewayErrors: 0,
  consecutiveLocalOriginFailures: 5,
  splitExternalLocalOriginErrors: false,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionPercent: 100,
  minHealthPercent: 0,
};

/** No limits but a 1 s connect timeout. */
export const POOL: ConnectionPool = {
  maxConnections: 0,
  connectTimeoutMs: 1_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 0,
  idleTimeoutMs: 0,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};

/** A plaintext HTTP/1.1 host pool. */
export const POOL_SETTINGS: PoolSettings = { protocol: 'http1', maxConnections: 0, connectTimeoutMs: 1_000, idleTimeoutMs: 0, maxRequestsPerConnection: 0, maxConcurrentStreams: 0, maxConnectionDurationMs: 0, keepaliveTimeMs: 0 };

/** A static HTTP/1.1 round-robin cluster of the shop service, without endpoints, overridden by `over`. */
export function clusterModel(over: Partial<Cluster> = {}): Cluster {
  return {
    name: 'outbound|80||shop.default.svc.cluster.local',
    service: null,
    subset: '',
    discovery: 'static',
    endpoints: [],
    dnsRefreshMs: 0,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: POOL,
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
    ...over,
  };
}

/** Real hosts made for one test file; `destroyAll()` in its teardown. */
export class TestHosts {
  readonly #made: UpstreamHost[] = [];

  /** A host at `address:port`, its endpoint overridden by `endpoint`. Its per-request metrics are not read by the code under test. */
  host(address: string, port: number, endpoint: Partial<Endpoint> = {}): ClusterHost {
    const host = new UpstreamHost(UpstreamHost.keyOf(address, port, POOL_SETTINGS), address, port, POOL_SETTINGS);
    this.#made.push(host);
    const ep: Endpoint = { address, port, labels: {}, weight: 1, locality: '', workloadName: '', namespace: 'default', serviceAccount: 'default', ...endpoint };
    return { host, endpoint: ep, stats: null as unknown as RequestStats };
  }

  async destroyAll(): Promise<void> {
    await Promise.all(this.#made.map((h) => h.destroy()));
  }
}
