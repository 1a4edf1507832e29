import type { Cluster, Endpoint } from '@remora/config';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import type { HashSource, LoadBalancer } from './load-balancer.ts';
import { LeastRequestLoadBalancer } from './load-balancer-least-request.ts';
import { RandomLoadBalancer } from './load-balancer-random.ts';
import { RingHashLoadBalancer } from './load-balancer-ring-hash.ts';
import { RoundRobinLoadBalancer } from './load-balancer-round-robin.ts';
import type { ClusterHost } from './upstream-host.ts';

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
 * A cluster at run time: its current hosts and load balancer. The host list is an
 * immutable array replaced as a whole when DNS answers change, so a pick never sees a list
 * being edited and balancers can cache per-list work by identity.
 */
export class UpstreamCluster {
  readonly name: string;
  readonly model: Cluster;
  /** JSON of the model: an unchanged cluster is carried over to the next snapshot as is. */
  readonly modelKey: string;
  readonly lb: LoadBalancer;
  #hosts: readonly ClusterHost[] = [];
  /** Endpoints as resolved (for DNS clusters: one per address); what `/clusters` shows. */
  resolvedEndpoints: readonly Endpoint[] = [];
  /** Requests that found no host (503 UH). */
  noHealthyUpstream = 0;
  /** Metrics for requests of this cluster that reached no host. */
  readonly noHostStats: RequestStats;

  constructor(model: Cluster, modelKey: string, noHostStats: RequestStats) {
    this.name = model.name;
    this.model = model;
    this.modelKey = modelKey;
    this.lb = createLoadBalancer(model);
    this.noHostStats = noHostStats;
  }

  get hosts(): readonly ClusterHost[] {
    return this.#hosts;
  }

  setHosts(hosts: readonly ClusterHost[], endpoints: readonly Endpoint[]): void {
    this.#hosts = hosts;
    this.resolvedEndpoints = endpoints;
  }

  pick(request: HashSource): ClusterHost | null {
    return this.lb.pick(this.#hosts, request);
  }
}
