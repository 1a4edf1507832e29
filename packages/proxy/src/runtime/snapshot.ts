import type { Listener, ProxyConfig, TrafficDirection } from '@remora/config';
import { RouteTable } from '../router/route-table.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';

/** What one listener serves with, for the life of a snapshot. */
export class ListenerSnapshot {
  readonly listener: Listener;
  readonly direction: TrafficDirection;
  /** Null when the listener's route configuration is missing: every request gets 404 NR. */
  readonly routes: RouteTable | null;
  /** Metrics for requests that never reached a cluster (no route, no cluster). */
  readonly unroutedStats: RequestStats;

  constructor(listener: Listener, routes: RouteTable | null, unroutedStats: RequestStats) {
    this.listener = listener;
    this.direction = listener.direction;
    this.routes = routes;
    this.unroutedStats = unroutedStats;
  }
}

/**
 * The compiled, immutable form of a ProxyConfig. The runtime swaps snapshots in one
 * assignment; each request keeps the listener snapshot it started with.
 */
export class Snapshot {
  readonly config: ProxyConfig;
  readonly listeners: ReadonlyMap<string, ListenerSnapshot>;
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;

  constructor(config: ProxyConfig, clusters: ReadonlyMap<string, UpstreamCluster>, statsFor: (direction: TrafficDirection) => RequestStats) {
    this.config = config;
    this.clusters = clusters;
    const tables = new Map<string, RouteTable>();
    for (const rc of config.routeConfigs) tables.set(rc.name, new RouteTable(rc, clusters));
    const listeners = new Map<string, ListenerSnapshot>();
    for (const l of config.listeners) {
      listeners.set(l.name, new ListenerSnapshot(l, tables.get(l.routeConfig) ?? null, statsFor(l.direction)));
    }
    this.listeners = listeners;
  }
}
