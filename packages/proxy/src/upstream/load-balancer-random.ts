import type { HashSource, LoadBalancer } from './load-balancer.ts';
import type { ClusterHost } from './upstream-host.ts';

/** Uniform random pick (weights honoured by a linear walk when they differ). */
export class RandomLoadBalancer implements LoadBalancer {
  readonly #random: () => number;
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }
  pick(hosts: readonly ClusterHost[], _request: HashSource): ClusterHost | null {
    const n = hosts.length;
    if (n === 0) return null;
    let total = 0;
    for (let i = 0; i < n; i++) total += hosts[i]!.endpoint.weight;
    let r = this.#random() * total;
    for (let i = 0; i < n; i++) {
      r -= hosts[i]!.endpoint.weight;
      if (r < 0) return hosts[i]!;
    }
    return hosts[n - 1]!;
  }
}
