import type { Cluster, Endpoint, ProxyNode } from '@remora/config';
import { ClusterStats } from '../telemetry/cluster-stats.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { CircuitBreaker } from './circuit-breaker.ts';
import type { HashSource, LoadBalancer } from './load-balancer.ts';
import { LeastRequestLoadBalancer } from './load-balancer-least-request.ts';
import { RandomLoadBalancer } from './load-balancer-random.ts';
import { RingHashLoadBalancer } from './load-balancer-ring-hash.ts';
import { RoundRobinLoadBalancer } from './load-balancer-round-robin.ts';
import { LocalityPlan } from './locality-plan.ts';
import { OutlierDetector } from './outlier-detector.ts';
import type { SharedCells } from '@remora/filters/internal';
import { SharedCircuitBreaker } from './circuit-breaker.ts';
import type { ClusterHost } from './upstream-host.ts';
import type { OriginalDstHosts } from './original-dst-hosts.ts';

export function createLoadBalancer(model: Cluster): LoadBalancer {
  const lb = model.lb;
  switch (lb.kind) {
    case 'round-robin':
      return new RoundRobinLoadBalancer();
    case 'random':
      return new RandomLoadBalancer();
    case 'least-request':
      return new LeastRequestLoadBalancer();
    case 'ring-hash':
      return new RingHashLoadBalancer(lb.key, lb.minimumRingSize);
  }
}

/**
 * How the clusters of one worker among several share what Envoy keeps per cluster for the
 * whole proxy: circuit-breaker counts in shared memory, and outlier detection decided in
 * one place (`outlier` builds the detector: the main thread's own, or a worker's follower).
 */
export interface ClusterSharing {
  readonly cells: SharedCells;
  outlier(model: Cluster, onChange: () => void): OutlierDetector;
  /**
   * DNS clusters, resolved in one place as Envoy's main thread does: `lead` — this thread
   * resolves and tells the others each result (cluster name, model key, endpoints); `follow` —
   * this thread never resolves and takes what it is told (ClusterManager.followDns).
   */
  readonly dns: { readonly lead: (cluster: string, modelKey: string, endpoints: readonly Endpoint[]) => void } | 'follow';
}

/** Envoy's slow start floor: a warming host gets at least 10% of its weight. */
const SLOW_START_MIN = 0.1;

/**
 * A cluster at run time: its hosts, the ones fit for traffic (not ejected by outlier
 * detection, or all of them in panic), its circuit breakers and load balancer. Host lists are
 * immutable arrays replaced as a whole on any change (DNS, ejection), so a pick never sees a
 * list being edited and balancers can cache per-list work by identity.
 */
export class UpstreamCluster {
  readonly name: string;
  readonly model: Cluster;
  /** JSON of the model: an unchanged cluster is carried over to the next snapshot as is. */
  readonly modelKey: string;
  readonly lb: LoadBalancer;
  readonly breaker: CircuitBreaker;
  /** Passive health; null when the cluster has no outlierDetection. */
  readonly outlier: OutlierDetector | null;
  readonly #node: ProxyNode;
  #hosts: readonly ClusterHost[] = [];
  /** Hosts traffic may go to now. */
  #available: readonly ClusterHost[] = [];
  #plan: LocalityPlan | null = null;
  /** True while fewer hosts are healthy than `minHealthPercent` asks: traffic goes to all. */
  panic = false;
  /** Endpoints as resolved (for DNS clusters: one per address); what `/clusters` shows. */
  resolvedEndpoints: readonly Endpoint[] = [];
  /** Requests that found no host (503 UH). */
  noHealthyUpstream = 0;
  /** Metrics for requests of this cluster that reached no host. */
  readonly noHostStats: RequestStats;
  /** Envoy's `cluster.<name>.upstream_*` counters; the same object for the same name across config changes. */
  readonly stats: ClusterStats;
  /** An ORIGINAL_DST cluster's hosts, one per destination; null for every other kind. */
  readonly originalDst: OriginalDstHosts | null;

  constructor(
    model: Cluster,
    modelKey: string,
    noHostStats: RequestStats,
    node: ProxyNode,
    stats: ClusterStats = new ClusterStats(),
    originalDst: OriginalDstHosts | null = null,
    sharing: ClusterSharing | null = null,
  ) {
    this.name = model.name;
    this.originalDst = originalDst;
    this.stats = stats;
    this.model = model;
    this.modelKey = modelKey;
    this.lb = createLoadBalancer(model);
    this.noHostStats = noHostStats;
    this.#node = node;
    this.breaker =
      (sharing !== null ? SharedCircuitBreaker.acquire(sharing.cells, model.name, model.connectionPool, model.protocol) : null) ??
      new CircuitBreaker(model.connectionPool, model.protocol);
    const refresh = (): void => this.#refresh();
    this.outlier = model.outlierDetection === null ? null : sharing !== null ? sharing.outlier(model, refresh) : new OutlierDetector(model.outlierDetection, refresh);
  }

  /** The cluster's hosts; an ORIGINAL_DST cluster's are the destinations it has pools for now. */
  get hosts(): readonly ClusterHost[] {
    return this.originalDst !== null ? this.originalDst.hosts : this.#hosts;
  }

  get available(): readonly ClusterHost[] {
    return this.#available;
  }

  setHosts(hosts: readonly ClusterHost[], endpoints: readonly Endpoint[]): void {
    this.#hosts = hosts;
    this.resolvedEndpoints = endpoints;
    this.outlier?.setHosts(hosts.map((h) => h.host.key));
    this.#refresh();
  }

  /** Starts the outlier detector's interval (when the cluster goes live). */
  activate(): void {
    this.outlier?.start();
    this.originalDst?.start();
  }

  /** The cluster left the live config; `graceMs`: how long requests of older snapshots may still use its hosts. */
  deactivate(graceMs = 0): void {
    this.release();
    this.outlier?.stop();
    this.originalDst?.stop(graceMs);
  }

  /** The cluster is not used by this thread's config any more: shared records it held are let go. */
  release(): void {
    if (this.breaker instanceof SharedCircuitBreaker) this.breaker[Symbol.dispose]();
  }

  isEjected(h: ClusterHost): boolean {
    return this.outlier !== null && this.outlier.isEjected(h.host.key);
  }

  #refresh(): void {
    const all = this.#hosts;
    const outlier = this.outlier;
    let available = all;
    this.panic = false;
    if (outlier !== null) {
      const healthy = all.filter((h) => !outlier.isEjected(h.host.key));
      const minHealthy = this.model.outlierDetection!.minHealthPercent;
      // Istio's minHealthPercent is Envoy's panic threshold: below it, balance over every host.
      if (all.length > 0 && minHealthy > 0 && (healthy.length * 100) / all.length < minHealthy) {
        this.panic = true;
        available = all;
      } else if (healthy.length !== all.length) {
        available = healthy;
      }
    }
    this.#available = available;
    const setting = this.model.localityLb;
    this.#plan =
      setting !== null && all.length > 0
        ? new LocalityPlan(all, (h) => this.panic || !this.isEjected(h), this.#node, setting)
        : null;
  }

  /**
   * A host for a request. `avoid`: hosts already tried (Envoy's previous-hosts retry
   * predicate): when the balancer lands on one of them and an untried host is available in
   * the same locality group, the pick is made again among those, so a retry stays where the
   * locality plan sent it, as Envoy's does. `otherLocalities` (Istio's retryRemoteLocalities,
   * Envoy's previous_priorities): a retry goes to a locality not tried yet when there is one.
   */
  pick(request: HashSource, avoid: readonly ClusterHost[] | null = null, otherLocalities = false): ClusterHost | null {
    // ORIGINAL_DST: the host is where the downstream connection was going.
    if (this.originalDst !== null) return this.originalDst.hostFor(request.originalDestination);
    if (avoid !== null && avoid.length > 0 && otherLocalities && this.#plan !== null) {
      const elsewhere = this.#available.filter((x) => !avoid.some((a) => a === x || a.endpoint.locality === x.endpoint.locality));
      if (elsewhere.length > 0) return this.lb.pick(elsewhere, request);
    }
    const group = this.#group();
    if (group === null || group.length === 0) return null;
    const h = this.#pickIn(group, request);
    if (avoid === null || h === null || !avoid.includes(h)) return h;
    const others = group.filter((x) => !avoid.includes(x));
    if (others.length === 0) return h;
    return this.lb.pick(others, request) ?? h;
  }

  /** The hosts this pick chooses among: the locality plan's choice, or every available host. */
  #group(): readonly ClusterHost[] | null {
    const plan = this.#plan;
    return plan !== null ? plan.choose(Math.random()) : this.#available;
  }

  #pickIn(hosts: readonly ClusterHost[], request: HashSource): ClusterHost | null {
    const warmup = this.model.warmupMs;
    if (warmup > 0 && hosts.length > 1) {
      const h = slowStartPick(hosts, warmup);
      if (h !== null) return h;
    }
    return this.lb.pick(hosts, request);
  }

  /** Outcome of a try, for outlier detection. */
  reportStatus(h: ClusterHost, status: number): void {
    const o = this.outlier;
    if (o !== null) {
      o.reportLocalSuccess(h.host.key);
      o.reportStatus(h.host.key, status);
    }
  }

  reportLocalFailure(h: ClusterHost): void {
    this.outlier?.reportLocalFailure(h.host.key);
  }
}

/**
 * Envoy's slow start: while some host is younger than the window, pick by weights scaled by
 * each host's age (linearly, at least 10%); null when no host is warming (the balancer then
 * picks as usual).
 */
function slowStartPick(hosts: readonly ClusterHost[], windowMs: number): ClusterHost | null {
  const now = Date.now();
  let warming = false;
  for (const h of hosts) if (now - h.host.createdAt < windowMs) warming = true;
  if (!warming) return null;
  let total = 0;
  const weights = hosts.map((h) => {
    const age = now - h.host.createdAt;
    const factor = age >= windowMs ? 1 : Math.max(SLOW_START_MIN, age / windowMs);
    const w = h.endpoint.weight * factor;
    total += w;
    return w;
  });
  let r = Math.random() * total;
  for (let i = 0; i < hosts.length; i++) {
    r -= weights[i]!;
    if (r < 0) return hosts[i]!;
  }
  return hosts[hosts.length - 1]!;
}
