import type { HashSource, LoadBalancer } from './load-balancer.ts';
import type { ClusterHost } from './upstream-host.ts';

/**
 * Weighted round robin. Equal weights (the usual case) walk the list; unequal weights use
 * smooth weighted round robin (nginx's), which spreads a heavy host's turns evenly.
 */
export class RoundRobinLoadBalancer implements LoadBalancer {
  #next = 0;
  #current: Float64Array | null = null;
  #for: readonly ClusterHost[] | null = null;
  #weighted = false;

  pick(hosts: readonly ClusterHost[], _request: HashSource): ClusterHost | null {
    const n = hosts.length;
    if (n === 0) return null;
    if (n === 1) return hosts[0]!;
    if (this.#for !== hosts) {
      // Host lists are immutable and replaced on change, so this runs once per list.
      this.#for = hosts;
      this.#weighted = hosts.some((h) => h.endpoint.weight !== hosts[0]!.endpoint.weight);
      this.#current = this.#weighted ? new Float64Array(n) : null;
    }
    if (!this.#weighted) {
      const h = hosts[this.#next % n]!;
      this.#next = (this.#next + 1) % n;
      return h;
    }
    const cur = this.#current!;
    let total = 0;
    let best = 0;
    for (let i = 0; i < n; i++) {
      const w = hosts[i]!.endpoint.weight;
      cur[i]! += w;
      total += w;
      if (cur[i]! > cur[best]!) best = i;
    }
    cur[best]! -= total;
    return hosts[best]!;
  }
}
