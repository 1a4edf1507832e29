import { httpStatPrefix, routeRateLimits, type Cluster, type Listener, type ProxyConfig, type RouteConfiguration, type TrafficDirection } from '@remora/config';
import type { FilterCompileContext, FilterRegistry, HttpFilterConfig } from '@remora/filters';
import { ClusterCaller } from '../upstream/cluster-caller.ts';
import { ConnectionManagerConfig } from '../http/connection-manager.ts';
import type { ListenerSettings } from '../http/listener-settings.ts';
import type { RouteCompileContext } from '../router/compiled-route.ts';
import { RouteTable, type VirtualHostFinder } from '../router/route-table.ts';
import { RouteTableByPort } from '../router/route-table-by-port.ts';
import { EnvoyStats } from '../telemetry/envoy-stats.ts';
import { HttpConnManagerStats } from '../telemetry/http-stats.ts';
import { HttpTracer, type TracerPool } from '../telemetry/tracing.ts';
import { IstioStatsOverrides, type RequestStats } from '../telemetry/istio-metrics.ts';
import type { AccessLogFiles } from '../telemetry/access-log.ts';
import type { RequestLogger } from '../telemetry/access-log-record.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';

/** What one listener serves with, for the life of a snapshot. */
export class ListenerSnapshot implements ListenerSettings {
  readonly listener: Listener;
  readonly direction: TrafficDirection;
  /** Null when the listener's route configuration is missing: every request gets 404 NR. */
  readonly routes: VirtualHostFinder | null;
  /** The HTTP filters before the router, compiled; null when the chain is empty (nothing to run). */
  readonly filters: readonly HttpFilterConfig[] | null;
  /** Metrics for requests that never reached a cluster (no route, no cluster). */
  readonly unroutedStats: RequestStats;
  /** X-Forwarded-For hops to trust when finding the client address (Istio's numTrustedProxies). */
  readonly trustedHops: number;
  /** The snapshot's clusters, for connections routed without a route table (TLS passthrough). */
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** HTTP/1.0 acceptance and the `server` header of every response. */
  readonly connectionManager: ConnectionManagerConfig;
  /** Envoy's `bypass_overload_manager`: never shed this listener's requests (health, Prometheus). */
  readonly bypassOverloadManager: boolean;
  /** Envoy's `http.<stat_prefix>.*` connection manager and router stats of this listener. */
  readonly http: HttpConnManagerStats;
  /** The connection manager's tracing, compiled; null: no tracing work for this listener's requests. */
  readonly tracer: HttpTracer | null;
  /** The listener's own access logs, compiled; null: the proxy's access log. */
  readonly accessLog: RequestLogger | null;
  /** Istio's stats config of the listener (Telemetry `metrics` overrides), compiled; null: the default reporting, no work per request. */
  readonly istioStats: IstioStatsOverrides | null;
  /** Gateway TLS servers' own route tables, by server origin; null when the listener has one table. */
  readonly #routesByServer: ReadonlyMap<string, VirtualHostFinder | null> | null;

  constructor(
    listener: Listener,
    routes: VirtualHostFinder | null,
    filters: readonly HttpFilterConfig[] | null,
    unroutedStats: RequestStats,
    trustedHops: number,
    clusters: ReadonlyMap<string, UpstreamCluster> = new Map(),
    routesByServer: ReadonlyMap<string, VirtualHostFinder | null> | null = null,
    http: HttpConnManagerStats | null = null,
    tracer: HttpTracer | null = null,
    accessLog: RequestLogger | null = null,
  ) {
    this.tracer = tracer;
    this.accessLog = accessLog;
    this.#routesByServer = routesByServer;
    // A listener without a connection manager (TCP) counts into stats nobody shows.
    this.http = http ?? new HttpConnManagerStats(new EnvoyStats(), listener.name);
    this.clusters = clusters;
    this.listener = listener;
    this.direction = listener.direction;
    this.routes = routes;
    this.filters = filters;
    this.unroutedStats = unroutedStats;
    this.trustedHops = trustedHops;
    this.connectionManager = new ConnectionManagerConfig(listener.connectionManager, listener.name);
    this.bypassOverloadManager = listener.bypassOverloadManager === true;
    this.istioStats = listener.istioStats === undefined ? null : new IstioStatsOverrides(listener.istioStats);
  }

  /**
   * The routes for a request on a connection that `tlsServer` (a Gateway server's origin)
   * terminated: that server's own table, as istiod gives each HTTPS server its RDS. A server
   * this snapshot does not have (removed by a reload) routes nothing: 404 NR.
   */
  routesFor(tlsServer: string | null): VirtualHostFinder | null {
    if (tlsServer === null || this.#routesByServer === null) return this.routes;
    const r = this.#routesByServer.get(tlsServer);
    return r === undefined ? null : r;
  }
}

export interface SnapshotServices {
  readonly statsFor: (direction: TrafficDirection) => RequestStats;
  readonly filters: FilterRegistry;
  readonly filterContext: FilterCompileContext;
  readonly trustedHops: number;
  /** Envoy's filter stats, kept by name across snapshots. */
  readonly stats: EnvoyStats;
  /** Span exporters kept across snapshots; absent: tracing settings are ignored. */
  readonly tracers?: TracerPool;
  /** Envoy's node id, for the `node_id` span tag. */
  readonly nodeId?: string;
  /** Where listeners' own access logs go; absent: `Listener.accessLog` is ignored. */
  readonly accessLogs?: AccessLogFiles;
}

/**
 * The compiled, immutable form of a ProxyConfig. The runtime swaps snapshots in one
 * assignment; each request keeps the listener snapshot it started with. Compiling throws
 * (a bad regex, a filter config that cannot be used): the previous snapshot then stays.
 */
export class Snapshot {
  readonly config: ProxyConfig;
  readonly listeners: ReadonlyMap<string, ListenerSnapshot>;
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;

  /** Compiles in one go; `build` does the same work in slices. */
  constructor(config: ProxyConfig, clusters: ReadonlyMap<string, UpstreamCluster>, services: SnapshotServices, tables: ReadonlyMap<string, RouteTable> | null = null) {
    this.config = config;
    this.clusters = clusters;
    if (tables === null) {
      const routeContext = routeContextOf(clusters, services);
      const compiled = new Map<string, RouteTable>();
      for (const rc of config.routeConfigs) compiled.set(rc.name, new RouteTable(rc, routeContext));
      tables = compiled;
    }
    const listeners = new Map<string, ListenerSnapshot>();
    let caller: ClusterCaller | null = null;
    let clusterModels: Map<string, Cluster> | null = null;
    for (const l of config.listeners) {
      let tracer: HttpTracer | null = null;
      if (l.tracing !== undefined && l.tcpProxy === undefined && services.tracers !== undefined) {
        clusterModels ??= new Map(config.clusters.map((c) => [c.name, c]));
        tracer = HttpTracer.compile(l.tracing, l.direction, config.node, services.nodeId ?? '', clusterModels, services.tracers);
      }
      const steps = l.httpFilters.length === 0 ? null : services.filters.compileChain(l.httpFilters, { ...services.filterContext, scope: l.name, stats: services.stats.scope(httpStatPrefix(l)), upstream: (caller ??= new ClusterCaller(clusters)) });
      // A chain of only the router (and skipped filters) has nothing to run per request.
      const chain = steps === null || steps.length === 0 ? null : steps;
      const routes = routesOf(l, config, tables);
      let byServer: Map<string, VirtualHostFinder | null> | null = null;
      if (l.tls?.kind === 'gateway' && l.tls.servers.some((srv) => srv.routeConfig !== undefined)) {
        byServer = new Map();
        for (const srv of l.tls.servers) byServer.set(srv.origin, srv.routeConfig === undefined ? routes : (tables.get(srv.routeConfig) ?? null));
      }
      const http = l.tcpProxy === undefined ? new HttpConnManagerStats(services.stats, httpStatPrefix(l)) : null;
      const accessLog = l.accessLog === undefined || services.accessLogs === undefined ? null : services.accessLogs.compile(l.accessLog);
      listeners.set(l.name, new ListenerSnapshot(l, routes, chain, services.statsFor(l.direction), services.trustedHops, clusters, byServer, http, tracer, accessLog));
    }
    this.listeners = listeners;
  }

  /**
   * Compiles a config without holding the event loop for more than about `sliceMs` at a time:
   * route tables are compiled a virtual host at a time, yielding to pending I/O in between
   * (10,000 routes take a few hundred milliseconds to compile; requests keep being served).
   */
  static async build(config: ProxyConfig, clusters: ReadonlyMap<string, UpstreamCluster>, services: SnapshotServices, sliceMs = SLICE_MS): Promise<Snapshot> {
    const routeContext = routeContextOf(clusters, services);
    let sliceStart = performance.now();
    const pause = (): Promise<void> | null => {
      if (performance.now() - sliceStart < sliceMs) return null;
      return new Promise<void>((resolve) =>
        setImmediate(() => {
          sliceStart = performance.now();
          resolve();
        }),
      );
    };
    const tables = new Map<string, RouteTable>();
    for (const rc of config.routeConfigs) tables.set(rc.name, await RouteTable.compile(rc, routeContext, pause));
    await pause();
    return new Snapshot(config, clusters, services, tables);
  }
}

/** The listener's route table, or its tables by destination port (a sidecar's outbound side). */
function routesOf(l: Listener, config: ProxyConfig, tables: ReadonlyMap<string, RouteTable>): VirtualHostFinder | null {
  const fallback = tables.get(l.routeConfig) ?? null;
  if (l.routeConfigsByPort === undefined) return fallback;
  const byPort: { port: number; config: RouteConfiguration; table: RouteTable }[] = [];
  for (const [port, name] of Object.entries(l.routeConfigsByPort)) {
    const table = tables.get(name);
    const rc = config.routeConfigs.find((r) => r.name === name);
    if (table !== undefined && rc !== undefined) byPort.push({ port: Number(port), config: rc, table });
  }
  return new RouteTableByPort(byPort, fallback);
}

function isEmpty(o: Readonly<Record<string, unknown>>): boolean {
  for (const _ in o) return false;
  return true;
}

/** How long `Snapshot.build` computes before letting the event loop run. */
export const SLICE_MS = 5;

function routeContextOf(clusters: ReadonlyMap<string, UpstreamCluster>, services: SnapshotServices): RouteCompileContext {
  // A route table may serve several listeners: its filter configs have no connection manager's stats.
  const routeStats = services.stats.scope(null);
  return {
    clusters,
    routeFilters: (route, scope, vh) => {
      const a = route.action;
      const forwards = a.kind === 'forward';
      // A virtual host's rate limits reach its forwarding routes only (Envoy's route entries).
      const rateLimits = routeRateLimits(forwards ? (vh ?? null) : null, route);
      // Most routes have no filter settings: no context is made for them.
      if (rateLimits.length === 0 && isEmpty(route.filterConfigs)) return null;
      const cluster = forwards && a.clusters.length === 1 ? a.clusters[0]!.cluster : null;
      return services.filters.compileRouteConfigs(route.filterConfigs, { ...services.filterContext, scope, stats: routeStats }, { rateLimits, forwards, cluster, metadata: route.metadata ?? null });
    },
  };
}
