import type { HashSource, LoadBalancer } from './load-balancer.ts';
import type { ClusterHost } from './upstream-host.ts';

/**
 * Envoy's LEAST_REQUEST with equal weights: the power of two random choices — pick two
 * distinct hosts at random, send to the one with fewer requests in flight.
 */
export class LeastRequestLoadBalancer implements LoadBalancer {
  readonly #random: () => number;
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }
  pick(hosts: readonly ClusterHost[], _request: HashSource): ClusterHost | null {
    const n = hosts.length;
    if (n === 0) return null;
    if (n === 1) return hosts[0]!;
    const i = Math.floor(this.#random() * n);
    let j = Math.floor(this.#random() * (n - 1));
    if (j >= i) j++;
    const a = hosts[i]!;
    const b = hosts[j]!;
    return b.host.active < a.host.active ? b : a;
  }
}
