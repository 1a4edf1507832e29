import type { Listener, TrafficDirection } from '@remora/config';
import type { HttpFilterConfig } from '@remora/filters';
import type { VirtualHostFinder } from '../router/route-table.ts';
import type { RequestLogger } from '../telemetry/access-log-record.ts';
import type { HttpConnManagerStats } from '../telemetry/http-stats.ts';
import type { IstioStatsOverrides, RequestStats } from '../telemetry/istio-metrics.ts';
import type { HttpTracer } from '../telemetry/tracing.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ConnectionManagerConfig } from './connection-manager.ts';

/**
 * What the request path reads of its listener, fixed for the life of one configuration: the
 * listener itself, its routes, filter chain, connection-manager settings and telemetry sinks.
 * The runtime's per-listener snapshot satisfies it.
 */
export interface ListenerSettings {
  readonly listener: Listener;
  readonly direction: TrafficDirection;
  /** The HTTP filter chain (before the router); null when there is none. */
  readonly filters: readonly HttpFilterConfig[] | null;
  /** Metrics of requests that reached no cluster. */
  readonly unroutedStats: RequestStats;
  /** X-Forwarded-For hops trusted at a gateway (Envoy's xff_num_trusted_hops). */
  readonly trustedHops: number;
  readonly connectionManager: ConnectionManagerConfig;
  readonly bypassOverloadManager: boolean;
  readonly http: HttpConnManagerStats;
  readonly tracer: HttpTracer | null;
  /** The listener's own access logs; null: the proxy's. */
  readonly accessLog: RequestLogger | null;
  readonly istioStats: IstioStatsOverrides | null;
  /** The clusters, for connections routed without a route table (TCP routes, TLS passthrough). */
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** The routes for a connection terminated by the Gateway TLS server `tlsServer` (null: any). */
  routesFor(tlsServer: string | null): VirtualHostFinder | null;
}
