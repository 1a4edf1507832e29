import type { Cluster, Endpoint, ProxyConfig, ProxyNode, TrafficDirection } from '@remora/config';
import { serviceClusterOf } from '@remora/config';
import { MetadataExchange } from '../listener/metadata-exchange.ts';
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { FilterRegistry, PeerIdentity } from '@remora/filters';
import type { ListenerContext } from '../http/connection.ts';
import { HttpListener } from '../listener/http-listener.ts';
import type { Logger, Loggers } from '../logger.ts';
import type { AccessLog, AccessLogFiles } from '../telemetry/access-log.ts';
import type { IstioMetrics, MetricValue, RequestStats } from '../telemetry/istio-metrics.ts';
import type { ClusterSharing, UpstreamCluster } from '../upstream/upstream-cluster.ts';
import { EnvoyStats } from '../telemetry/envoy-stats.ts';
import { peerLabels } from '../telemetry/peer-labels.ts';
import { localPeerMetadata, PeerMetadataCache, type LocalPeerMetadata } from '../telemetry/peer-metadata.ts';
import { ClusterManager } from '../upstream/cluster-manager.ts';
import { builtinFilters } from './builtin-filters.ts';
import { NO_OVERLOAD_LIMITS, OverloadManager, type OverloadLimits } from './overload-manager.ts';
import { PersistentStore } from './persistent-store.ts';
import { Snapshot } from './snapshot.ts';
import { TracerPool } from '../telemetry/tracing.ts';
import type { IdentityStore } from '../tls/identity-store.ts';
import type { OriginalDestination } from '../listener/original-dst.ts';

export interface RuntimeOptions {
  readonly node: ProxyNode;
  /** HTTP filters by name; the built-in ones by default. */
  readonly filters?: FilterRegistry;
  /** X-Forwarded-For hops trusted when finding the client address (Istio's numTrustedProxies); 0 by default. */
  readonly trustedHops?: number;
  /**
   * The verified identity of a downstream connection's peer. The TLS layer provides it from
   * the client certificate; without TLS, tests may supply one to exercise identity-based
   * policy through the same path.
   */
  readonly peerIdentity?: (socket: Socket) => PeerIdentity | null;
  /** The workload identity (mesh mTLS on both sides); null or absent: none, plaintext only. */
  readonly identity?: IdentityStore | null;
  /** When to shed new requests (503 OM); no limits by default. */
  readonly overload?: OverloadLimits;
  /** Downstream request timeouts (defaults: headers 60 s, whole request none). */
  readonly timeouts?: { readonly headersMs: number; readonly requestMs: number };
  readonly loggers: Loggers;
  readonly accessLog: AccessLog;
  /**
   * Where the listeners' own access logs (`Listener.accessLog`) are written; absent: those are
   * ignored and every listener logs to `accessLog` (a proxy given `--access-log-format`).
   */
  readonly accessLogFiles?: AccessLogFiles;
  readonly metrics: IstioMetrics;
  /** Replaces DNS lookups (tests). */
  readonly resolve?: (hostname: string) => Promise<string[]>;
  /**
   * Where a connection accepted by a capture listener (`useOriginalDst`, listening on
   * `listenerPort`) was going: conntrack under REDIRECT, the local address under TPROXY; null
   * when it was not redirected. Absent: capture is off (Istio's interception mode NONE), every
   * connection is served by the listener that accepted it.
   */
  readonly originalDestination?: (socket: Socket, listenerPort: number) => Promise<OriginalDestination | null>;
  /** Envoy's node id (`sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`), the spans' `node_id` tag; absent: made from `node`. */
  readonly nodeId?: string;
  /**
   * How listeners open their sockets: `own` (default) the one loop that serves; `shared` one
   * of several worker threads (SO_REUSEPORT); `none` the main thread of a proxy whose workers
   * serve (it compiles and keeps the config for the admin views, and opens no socket).
   */
  readonly listen?: 'own' | 'shared' | 'none';
  /** One of several threads: what clusters share with the others (circuit breakers, outlier detection). */
  readonly sharing?: ClusterSharing;
  /**
   * Whether this runtime opens the listeners on unix domain sockets (`Listener.pipe`). A path
   * is one socket, which SO_REUSEPORT cannot share among worker threads: with `listen: 'shared'`
   * one worker (the first) serves them and the others keep them for the admin views only.
   * Absent: true.
   */
  readonly listenPipes?: boolean;
}

/**
 * The running proxy: listeners, clusters and the current snapshot. `apply` compiles a new
 * config and swaps it in; in-flight requests finish on the snapshot they started with, and
 * connection pools, balancer state and metrics carry over by name.
 */
export class Runtime implements ListenerContext {
  readonly node: ProxyNode;
  readonly accessLog: AccessLog;
  readonly accessLogFiles: AccessLogFiles | null;
  readonly metrics: IstioMetrics;
  readonly log: Logger;
  readonly connectionLog: Logger;
  readonly clusterManager: ClusterManager;
  /** Envoy's filter stats (`http.<stat_prefix>.rbac.allowed`, ...), kept by name across snapshots. */
  readonly envoyStats = new EnvoyStats();
  readonly peerMetadata: LocalPeerMetadata;
  readonly peerCache = new PeerMetadataCache();
  readonly metadataExchange: MetadataExchange;
  /** Span exporters of the listeners' tracing, kept across snapshots. */
  readonly tracers: TracerPool;
  readonly #nodeId: string;
  /** Envoy's local service cluster (the rate limit action `source_cluster`). */
  readonly #serviceCluster: string;
  #snapshot: Snapshot | null = null;
  #snapshotLiveAt = 0;
  #draining = false;
  readonly #listeners = new Map<string, HttpListener>();
  readonly #loggers: Loggers;
  /** Serialises applies: a reload that lands while another is compiling waits its turn. */
  #applying: Promise<unknown> = Promise.resolve();
  #filters: FilterRegistry;
  readonly #store = new PersistentStore();
  readonly #trustedHops: number;
  readonly peerIdentity: ((socket: Socket) => PeerIdentity | null) | null;
  readonly overload: OverloadManager;
  readonly identity: IdentityStore | null;
  readonly timeouts: { readonly headersMs: number; readonly requestMs: number };
  readonly originalDestination: ((socket: Socket, listenerPort: number) => Promise<OriginalDestination | null>) | null;
  #listen: 'own' | 'shared' | 'none';
  readonly #listenPipes: boolean;
  /** False while the workers of a main thread have not all bound their listeners. */
  #workersServing = true;
  /** Envoy's hand-off by original destination: per direction, listeners by `address:port` (their `destinationPort` when set). */
  #handOff = new Map<TrafficDirection, Map<string, HttpListener>>();

  constructor(opts: RuntimeOptions) {
    this.node = opts.node;
    const n = opts.node;
    this.#nodeId = opts.nodeId ?? `${n.kind === 'gateway' ? 'router' : 'sidecar'}~0.0.0.0~${n.workloadName}.${n.namespace}~${n.namespace}.svc.${n.clusterDomain}`;
    this.#serviceCluster = serviceClusterOf(n);
    this.accessLog = opts.accessLog;
    this.accessLogFiles = opts.accessLogFiles ?? null;
    this.metrics = opts.metrics;
    this.#loggers = opts.loggers;
    this.log = opts.loggers.get('http');
    const tracingLog = opts.loggers.get('tracing');
    this.tracers = new TracerPool((message) => tracingLog.warn(message));
    this.connectionLog = opts.loggers.get('connection');
    this.#filters = opts.filters ?? builtinFilters();
    this.#trustedHops = opts.trustedHops ?? 0;
    this.peerIdentity = opts.peerIdentity ?? null;
    this.identity = opts.identity ?? null;
    this.peerMetadata = localPeerMetadata(opts.node);
    this.metadataExchange = new MetadataExchange(opts.node, this.peerMetadata.id, this.envoyStats, this.peerCache);
    this.metrics.localPrincipal = () => this.identity?.current?.spiffeId ?? null;
    this.timeouts = opts.timeouts ?? { headersMs: 60_000, requestMs: 0 };
    this.originalDestination = opts.originalDestination ?? null;
    this.#listen = opts.listen ?? 'own';
    this.#listenPipes = opts.listenPipes ?? true;
    this.overload = new OverloadManager(opts.overload ?? NO_OVERLOAD_LIMITS, () => {
      let n = 0;
      for (const l of this.#listeners.values()) n += l.activeConnections;
      return n;
    });
    this.#registerClusterMetrics();
    this.metrics.addText(() => this.envoyStats.prometheus());
    this.clusterManager = new ClusterManager({
      log: opts.loggers.get('upstream'),
      node: opts.node,
      identity: this.identity,
      statsFor: (cluster, endpoint) => this.#statsFor(cluster, endpoint),
      ...(opts.resolve ? { resolve: opts.resolve } : {}),
      ...(opts.sharing ? { sharing: opts.sharing } : {}),
    });
  }

  /**
   * Makes this the main thread of a proxy whose workers serve: listeners are compiled but
   * open no socket, clusters share breakers and outlier detection through `sharing`, filters
   * come from `filters`. Only before the first config.
   */
  serveFromWorkers(sharing: ClusterSharing, filters: FilterRegistry): void {
    if (this.#snapshot !== null) throw new Error('serveFromWorkers: a config is live already');
    this.#listen = 'none';
    this.#workersServing = false;
    this.#filters = filters;
    this.clusterManager.share(sharing);
  }

  /** The workers serve the first config: the proxy is ready. */
  markWorkersServing(): void {
    this.#workersServing = true;
  }

  get snapshot(): Snapshot | null {
    return this.#snapshot;
  }

  /** When the current snapshot went live (ms since the epoch); 0 before the first. Envoy's `last_updated`. */
  get snapshotLiveAt(): number {
    return this.#snapshotLiveAt;
  }

  get draining(): boolean {
    return this.#draining;
  }

  get overloaded(): boolean {
    return this.overload.overloaded;
  }

  noteShed(): void {
    this.overload.shed++;
  }

  get listeners(): ReadonlyMap<string, HttpListener> {
    return this.#listeners;
  }

  handOff(direction: TrafficDirection, dest: OriginalDestination): HttpListener | null {
    const index = this.#handOff.get(direction);
    if (index === undefined) return null;
    return (
      index.get(`${dest.address}:${dest.port}`) ??
      index.get(dest.family === 'IPv6' ? `:::${dest.port}` : `0.0.0.0:${dest.port}`) ??
      null
    );
  }

  /** Every listener but the capture ones, by direction and the destination it serves. */
  #buildHandOff(): void {
    const next = new Map<TrafficDirection, Map<string, HttpListener>>();
    for (const l of this.#listeners.values()) {
      const model = l.snapshot.listener;
      if (model.useOriginalDst === true) continue;
      let index = next.get(model.direction);
      if (index === undefined) next.set(model.direction, (index = new Map()));
      const key = `${model.address}:${model.destinationPort ?? model.port}`;
      if (!index.has(key)) index.set(key, l);
    }
    this.#handOff = next;
  }

  /** True once a config is live and every listener is bound. */
  get ready(): boolean {
    return this.#snapshot !== null && !this.#draining && this.#workersServing;
  }

  /**
   * Compiles and swaps in a config. On the first apply a listener that cannot bind rejects
   * the whole start; later, it is logged and the rest of the config still applies.
   */
  apply(config: ProxyConfig): Promise<void> {
    const run = this.#applying.then(() => this.#apply(config));
    this.#applying = run.catch(() => undefined);
    return run;
  }

  async #apply(config: ProxyConfig): Promise<void> {
    const first = this.#snapshot === null;
    const built = await this.clusterManager.prepare(config.clusters);
    let snap: Snapshot;
    // OpenTelemetry loads with the first config that traces (about 0.5 s), never before.
    if (config.listeners.some((l) => l.tracing !== undefined)) await this.tracers.load();
    this.tracers.beginSnapshot();
    try {
      snap = await Snapshot.build(config, built, {
        tracers: this.tracers,
        nodeId: this.#nodeId,
        statsFor: (direction) => this.#unroutedStats(direction),
        filters: this.#filters,
        filterContext: { ...this.#store.begin(this.#loggers.get('config'), this.#loggers), serviceCluster: this.#serviceCluster },
        trustedHops: this.#trustedHops,
        stats: this.envoyStats,
        ...(this.accessLogFiles !== null ? { accessLogs: this.accessLogFiles } : {}),
      });
    } catch (err) {
      this.clusterManager.discard(built);
      throw new Error(`config ${config.version} does not compile: ${(err as Error).message}`);
    }
    this.tracers.endSnapshot();
    const startedHere: HttpListener[] = [];
    const wanted = new Set<string>();
    for (const [name, ls] of snap.listeners) {
      wanted.add(name);
      const existing = this.#listeners.get(name);
      const bound = ls.listener.bindToPort !== false;
      if (existing && existing.address === ls.listener.address && existing.port === ls.listener.port && existing.bound === bound) {
        existing.snapshot = ls;
        continue;
      }
      if (existing) this.#retire(existing);
      const l = new HttpListener(ls, this);
      const pipe = ls.listener.pipe !== undefined;
      if (bound && (this.#listen === 'none' || (pipe && !this.#listenPipes))) {
        // The workers (or, for a unix socket, the first of them) open the sockets; this thread keeps the listener for the admin views.
        startedHere.push(l);
        this.#listeners.set(name, l);
        continue;
      }
      if (!bound) {
        // Envoy's bind_to_port false: no socket; it serves what capture listeners hand it.
        startedHere.push(l);
        this.#listeners.set(name, l);
        this.#loggers.get('main').debug(`listener ${name} for ${ls.listener.address}:${ls.listener.destinationPort ?? ls.listener.port} (${ls.direction}, not bound: served by hand-off)`);
        continue;
      }
      try {
        await l.listen(this.#listen === 'shared' && !pipe);
      } catch (err) {
        if (first) {
          for (const s of startedHere) s.closeAll();
          for (const s of startedHere) s.stopAccepting();
          this.clusterManager.discard(built);
          throw err;
        }
        this.#loggers.get('config').error(`${(err as Error).message}; the rest of config ${config.version} is applied`);
        continue;
      }
      startedHere.push(l);
      this.#listeners.set(name, l);
      this.#loggers.get('main').info(`listener ${name} on ${l.boundAt} (${ls.direction})`);
    }
    for (const [name, l] of [...this.#listeners]) if (!wanted.has(name)) this.#retire(l);
    this.#buildHandOff();
    this.clusterManager.commit(built);
    this.#store.commit();
    this.#snapshot = snap;
    this.#snapshotLiveAt = Date.now();
    this.#checkCredentials(config);
  }

  /**
   * Says, when a config is applied, which Gateway TLS servers cannot serve yet because their
   * certificate files are missing (their handshakes fail until the files appear), and which
   * ISTIO_MUTUAL or mesh-mTLS listeners have no workload identity to serve with.
   */
  #checkCredentials(config: ProxyConfig): void {
    const log = this.#loggers.get('secret');
    for (const l of config.listeners) {
      const tls = l.tls;
      if (tls === null) continue;
      if (tls.kind === 'mesh') {
        if (this.identity?.current == null && tls.mode === 'STRICT') {
          log.warn(`listener ${l.name}: STRICT mTLS but no workload identity (certificate files) yet; every connection is refused until one is found`);
        }
        continue;
      }
      for (const server of tls.servers) {
        if (server.mode === 'ISTIO_MUTUAL' && this.identity?.current == null) {
          log.warn(`Gateway server ${server.origin} (ISTIO_MUTUAL): no workload identity (certificate files) yet; its handshakes fail until one is found`);
        }
        const missing = [server.certFile, server.keyFile, server.caFile].filter((f): f is string => f !== null && !existsSync(f));
        if (missing.length > 0) {
          log.error(`Gateway server ${server.origin} (${server.hosts.join(', ')}): missing ${missing.join(', ')}; its TLS handshakes fail until the files appear`);
        }
      }
    }
  }

  /** A listener removed by a config change: stop accepting now, cut what is left after a grace period. */
  #retire(l: HttpListener): void {
    this.#listeners.delete(l.name);
    l.stopAccepting();
    setTimeout(() => l.closeAll(), 30_000).unref();
    this.#loggers.get('main').info(`listener ${l.name} removed`);
  }

  /**
   * Envoy-style drain: health turns unready, listeners stop accepting, responses carry
   * `Connection: close`; resolves when no request is in flight or `drainMs` has passed.
   */
  async drain(drainMs: number): Promise<void> {
    this.#draining = true;
    for (const l of this.#listeners.values()) l.stopAccepting();
    const deadline = Date.now() + drainMs;
    while (Date.now() < deadline) {
      let busy = 0;
      for (const l of this.#listeners.values()) {
        l.closeIdle();
        busy += l.busyConnections();
      }
      if (busy === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    for (const l of this.#listeners.values()) {
      l.stopAccepting();
      l.closeAll();
    }
    this.#listeners.clear();
    this.overload.close();
    this.accessLog.flush();
    this.accessLogFiles?.close();
    await Promise.all([this.clusterManager.close(), this.tracers.close()]);
  }

  /** Envoy's cluster stats that dashboards use for resilience, under Envoy's Prometheus names. */
  #registerClusterMetrics(): void {
    const per = (f: (c: UpstreamCluster) => number | null) => () => {
      const out: MetricValue[] = [];
      for (const c of this.clusterManager.clusters.values()) {
        const v = f(c);
        if (v !== null) out.push({ value: v, labels: { cluster_name: c.name } });
      }
      return out;
    };
    const m = this.metrics;
    m.addCollected('envoy_cluster_outlier_detection_ejections_active', 'Hosts ejected by outlier detection now', 'gauge', per((c) => c.outlier?.ejectedCount ?? null));
    m.addCollected('envoy_cluster_outlier_detection_ejections_enforced_total', 'Ejections enforced by outlier detection', 'counter', per((c) => c.outlier?.ejectionsTotal ?? null));
    m.addCollected('envoy_cluster_upstream_rq_pending_overflow', 'Requests refused by the circuit breaker (503 UO)', 'counter', per((c) => c.breaker.overflows));
    m.addCollected('envoy_cluster_upstream_rq_pending_active', 'Requests waiting under the circuit breaker', 'gauge', per((c) => c.breaker.pending));
  }

  #statsFor(cluster: Cluster, endpoint: Endpoint | null): RequestStats {
    const direction: TrafficDirection = cluster.name.startsWith('inbound|') ? 'inbound' : 'outbound';
    return this.metrics.stats(peerLabels(this.node, direction, cluster, endpoint));
  }

  #unroutedStats(direction: TrafficDirection): RequestStats {
    return this.metrics.stats(peerLabels(this.node, direction, null, null));
  }
}
