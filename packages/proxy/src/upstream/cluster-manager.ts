import type { IdentityStore } from '../tls/identity-store.ts';
import { lookup } from 'node:dns/promises';
import type { Cluster, Endpoint, ProxyNode } from '@remora/config';
import type { Logger } from '../logger.ts';
import { ClusterStats } from '../telemetry/cluster-stats.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { UpstreamCluster, type ClusterSharing } from './upstream-cluster.ts';
import { UpstreamHost, type ClusterHost, type PoolSettings } from './upstream-host.ts';
import { OriginalDstHosts } from './original-dst-hosts.ts';
import { tlsForEndpoint, type UpstreamTlsSettings } from './upstream-tls.ts';

/** How long a host no cluster uses keeps its pool, for requests still holding an older snapshot. */
const HOST_GRACE_MS = 30_000;
/** How long a new snapshot waits for the first DNS answers of its new clusters. */
const DNS_WARMING_MS = 5_000;

export interface ClusterManagerOptions {
  readonly log: Logger;
  /** This proxy, for locality load balancing. */
  readonly node: ProxyNode;
  /** The workload identity for ISTIO_MUTUAL upstreams; null: none. */
  readonly identity: IdentityStore | null;
  /** Metrics for requests of `cluster` to `endpoint`. */
  readonly statsFor: (cluster: Cluster, endpoint: Endpoint | null) => RequestStats;
  readonly resolve?: (hostname: string) => Promise<string[]>;
  /** One worker among several: what clusters share with the others; absent: this thread is the whole proxy. */
  readonly sharing?: ClusterSharing;
}

async function defaultResolve(hostname: string): Promise<string[]> {
  const answers = await lookup(hostname, { all: true, order: 'ipv4first' });
  return answers.map((a) => a.address);
}

/**
 * Owns upstream state that outlives a snapshot: hosts with their connection pools (keyed by
 * address and pool settings, shared across clusters and swaps), and clusters whose model
 * did not change (kept with their balancer state and DNS timers).
 */
export class ClusterManager {
  readonly #hosts = new Map<string, UpstreamHost>();
  #clusters = new Map<string, UpstreamCluster>();
  readonly #dnsTimers = new Map<UpstreamCluster, NodeJS.Timeout>();
  /** Compiled upstream TLS settings by key, shared by the hosts that use the same ones. */
  readonly #tls = new Map<string, UpstreamTlsSettings>();
  readonly #opts: ClusterManagerOptions;
  #sharing: ClusterSharing | null;
  /** Envoy's cluster counters by cluster name, kept while a cluster of that name is live. */
  readonly #stats = new Map<string, ClusterStats>();
  readonly #resolve: (hostname: string) => Promise<string[]>;
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;
  readonly #unsubscribe: (() => void) | null;
  /** Under `sharing.dns: 'follow'`: the last resolution told for each DNS cluster, by name (with the model it was for). */
  readonly #followed = new Map<string, { readonly modelKey: string; readonly endpoints: readonly Endpoint[] }>();

  constructor(opts: ClusterManagerOptions) {
    this.#opts = opts;
    this.#sharing = opts.sharing ?? null;
    this.#resolve = opts.resolve ?? defaultResolve;
    this.#sweeper = setInterval(() => this.#sweep(), 10_000).unref();
    // Auto mTLS needs an identity: when the first one arrives, labelled endpoints switch to
    // mTLS (new pools; requests in flight finish on the old ones). Rotations need nothing here.
    let hadIdentity = opts.identity?.current != null;
    this.#unsubscribe =
      opts.identity?.onChange((id) => {
        if ((id !== null) === hadIdentity || this.#closed) return;
        hadIdentity = id !== null;
        for (const c of this.#clusters.values()) this.#assign(c, isDns(c.model) ? c.resolvedEndpoints : c.model.endpoints);
      }) ?? null;
  }

  /** Clusters built from now on share breakers and outlier detection through `sharing`. */
  share(sharing: ClusterSharing): void {
    this.#sharing = sharing;
  }

  get clusters(): ReadonlyMap<string, UpstreamCluster> {
    return this.#clusters;
  }

  get hosts(): ReadonlyMap<string, UpstreamHost> {
    return this.#hosts;
  }

  /**
   * Builds the clusters of a new config. Unchanged clusters are reused; new DNS clusters are
   * resolved before this returns (up to a few seconds), so a swap never starts with an empty
   * cluster that only needed a lookup. Nothing is live until the caller commits the result.
   */
  async prepare(models: readonly Cluster[]): Promise<Map<string, UpstreamCluster>> {
    const next = new Map<string, UpstreamCluster>();
    const warming: Promise<void>[] = [];
    for (const model of models) {
      const key = JSON.stringify(model);
      const existing = this.#clusters.get(model.name);
      if (existing && existing.modelKey === key) {
        next.set(model.name, existing);
        continue;
      }
      let stats = this.#stats.get(model.name);
      if (stats === undefined) this.#stats.set(model.name, (stats = new ClusterStats()));
      const originalDst = model.discovery === 'original-dst' ? new OriginalDstHosts(poolSettings(model), (ep) => this.#opts.statsFor(model, ep)) : null;
      const c = new UpstreamCluster(model, key, this.#opts.statsFor(model, null), this.#opts.node, stats, originalDst, this.#sharing);
      if (!isDns(model)) this.#assign(c, model.endpoints);
      else if (this.#followsDns) {
        // Another thread resolves (it applied this config first and told its result already).
        const f = this.#followed.get(model.name);
        if (f !== undefined && f.modelKey === key) this.#assign(c, f.endpoints);
      } else warming.push(this.#resolveCluster(c));
      next.set(model.name, c);
    }
    if (warming.length > 0) {
      await Promise.race([Promise.allSettled(warming), new Promise((r) => setTimeout(r, DNS_WARMING_MS).unref())]);
    }
    return next;
  }

  /** Makes `next` the live cluster set; clusters no longer in it release their hosts. */
  commit(next: Map<string, UpstreamCluster>): void {
    const prev = this.#clusters;
    this.#clusters = next;
    for (const name of this.#stats.keys()) if (!next.has(name)) this.#stats.delete(name);
    for (const [name, c] of prev) {
      if (next.get(name) === c) continue;
      c.deactivate(HOST_GRACE_MS);
      if (c.originalDst === null) this.#release(c.hosts);
      const t = this.#dnsTimers.get(c);
      if (t) clearTimeout(t);
      this.#dnsTimers.delete(c);
    }
    for (const c of next.values()) {
      c.activate();
      if (isDns(c.model) && !this.#followsDns && !this.#dnsTimers.has(c)) this.#scheduleDns(c);
    }
  }

  get #followsDns(): boolean {
    return this.#sharing !== null && this.#sharing.dns === 'follow';
  }

  /**
   * A DNS cluster's addresses as the resolving thread found them: taken now by the cluster of
   * that model (live, or built by the next `prepare`).
   */
  followDns(cluster: string, modelKey: string, endpoints: readonly Endpoint[]): void {
    this.#followed.set(cluster, { modelKey, endpoints });
    const c = this.#clusters.get(cluster);
    if (c !== undefined && c.modelKey === modelKey && !this.#closed) this.#assign(c, endpoints);
    // Resolutions of clusters no config has any more are not kept.
    if (this.#followed.size > this.#clusters.size + 64) for (const name of this.#followed.keys()) if (!this.#clusters.has(name) && name !== cluster) this.#followed.delete(name);
  }

  /** Drops clusters built by `prepare` that were never committed (a rejected config). */
  discard(built: Map<string, UpstreamCluster>): void {
    for (const [name, c] of built) {
      if (this.#clusters.get(name) === c) continue;
      c.release();
      if (c.originalDst === null) this.#release(c.hosts);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe?.();
    clearInterval(this.#sweeper);
    for (const c of this.#clusters.values()) c.deactivate();
    const passthrough = [...this.#clusters.values()].map((c) => c.originalDst?.destroy());
    for (const t of this.#dnsTimers.values()) clearTimeout(t);
    this.#dnsTimers.clear();
    // After the drain, whatever is still in flight (a hanging mirror, a stuck upstream) is cut.
    await Promise.allSettled([...[...this.#hosts.values()].map((h) => h.destroy()), ...passthrough]);
    this.#hosts.clear();
  }

  /** Endpoints → hosts (acquiring pools) for a cluster, releasing the hosts it had. */
  #assign(c: UpstreamCluster, endpoints: readonly Endpoint[]): void {
    const model = c.model;
    const plain = poolSettings(model);
    const { identity, node } = this.#opts;
    const hosts: ClusterHost[] = [];
    for (const ep of endpoints) {
      // TLS is per endpoint: auto mTLS only reaches endpoints labelled as having a sidecar.
      const tls = tlsForEndpoint(model, ep, identity, node.trustDomain, this.#tls);
      const settings = tls === null ? plain : { ...plain, tls };
      const key = UpstreamHost.keyOf(ep.address, ep.port, settings);
      let host = this.#hosts.get(key);
      if (host === undefined) this.#hosts.set(key, (host = new UpstreamHost(key, ep.address, ep.port, settings, ep.pipe ?? null)));
      host.refs++;
      hosts.push({ host, endpoint: ep, stats: this.#opts.statsFor(model, ep) });
    }
    // An ORIGINAL_DST cluster's own hosts are not the manager's (it has none from endpoints).
    const old = c.originalDst === null ? c.hosts : [];
    c.setHosts(hosts, endpoints);
    this.#release(old);
  }

  #release(hosts: readonly ClusterHost[]): void {
    const now = Date.now();
    for (const h of hosts) {
      h.host.refs--;
      if (h.host.refs === 0) h.host.unusedSince = now;
    }
  }

  /** Resolves every hostname of a DNS cluster; on failure the last good addresses stay. */
  async #resolveCluster(c: UpstreamCluster): Promise<void> {
    const model = c.model;
    const resolved: Endpoint[] = [];
    let failed = false;
    for (const ep of model.endpoints) {
      try {
        const addrs = await this.#resolve(ep.address);
        const use = model.discovery === 'logical-dns' ? addrs.slice(0, 1) : addrs;
        for (const address of use) resolved.push({ ...ep, address });
      } catch (err) {
        failed = true;
        this.#opts.log.warn(`cluster ${c.name}: DNS lookup of ${ep.address} failed: ${(err as Error).message}; keeping ${c.resolvedEndpoints.length} known address(es)`);
      }
    }
    if (this.#closed) return;
    if (failed && resolved.length === 0) return;
    const same =
      resolved.length === c.resolvedEndpoints.length &&
      resolved.every((e, i) => e.address === c.resolvedEndpoints[i]!.address && e.port === c.resolvedEndpoints[i]!.port);
    if (same) return;
    this.#assign(c, resolved);
    const dns = this.#sharing?.dns;
    if (dns !== undefined && dns !== 'follow') dns.lead(c.name, c.modelKey, resolved);
  }

  #scheduleDns(c: UpstreamCluster): void {
    const t = setTimeout(async () => {
      if (this.#clusters.get(c.name) !== c) return;
      await this.#resolveCluster(c);
      if (this.#clusters.get(c.name) === c && !this.#closed) this.#scheduleDns(c);
    }, Math.max(1_000, c.model.dnsRefreshMs || 60_000));
    t.unref();
    this.#dnsTimers.set(c, t);
  }

  #sweep(): void {
    const now = Date.now();
    for (const [key, h] of this.#hosts) {
      if (h.refs > 0 || h.active > 0 || now - h.unusedSince < HOST_GRACE_MS) continue;
      this.#hosts.delete(key);
      void h.close();
    }
  }
}

/** Clusters whose endpoints are hostnames to resolve. */
function isDns(model: Cluster): boolean {
  return model.discovery === 'strict-dns' || model.discovery === 'logical-dns';
}

/** How a cluster's plaintext pools connect (TLS is added per endpoint). */
function poolSettings(model: Cluster): PoolSettings {
  return {
    protocol: model.protocol,
    maxConnections: model.connectionPool.maxConnections,
    connectTimeoutMs: model.connectionPool.connectTimeoutMs,
    idleTimeoutMs: model.connectionPool.idleTimeoutMs,
    maxRequestsPerConnection: model.connectionPool.maxRequestsPerConnection,
    maxConnectionDurationMs: model.connectionPool.maxConnectionDurationMs,
    keepaliveTimeMs: model.connectionPool.keepaliveTimeMs,
    maxConcurrentStreams: model.connectionPool.maxConcurrentStreams,
    tls: null,
    localAddress: model.upstreamBindAddress ?? null,
  };
}
