import { randomBytes } from 'node:crypto';
import type { HashKey } from '@remora/config';
import type { HashSource, LoadBalancer } from './load-balancer.ts';
import type { ClusterHost } from './upstream-host.ts';

/** 32-bit FNV-1a with a murmur3 finaliser: cheap, and well spread for ring points. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Istio's `consistentHash` (Envoy RING_HASH): each host owns points on a ring in proportion
 * to its weight; a request goes to the first point at or after the hash of its key. The
 * same key reaches the same host while the host set is unchanged, and only ~1/n of keys move
 * when a host comes or goes. Without a key (header absent…) the pick is random, as Envoy's.
 */
export class RingHashLoadBalancer implements LoadBalancer {
  readonly #key: HashKey;
  readonly #minimumRingSize: number;
  #ringFor: readonly ClusterHost[] | null = null;
  #points = new Uint32Array(0);
  #owners = new Uint32Array(0);

  constructor(key: HashKey, minimumRingSize: number) {
    this.#key = key;
    this.#minimumRingSize = Math.max(1, Math.min(minimumRingSize, 1 << 23));
  }

  pick(hosts: readonly ClusterHost[], request: HashSource): ClusterHost | null {
    const n = hosts.length;
    if (n === 0) return null;
    if (this.#ringFor !== hosts) this.#build(hosts);
    const value = this.#keyValue(request);
    if (value === null) return hosts[Math.floor(Math.random() * n)]!;
    const h = hash32(value);
    const points = this.#points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return hosts[this.#owners[lo === points.length ? 0 : lo]!]!;
  }

  #keyValue(request: HashSource): string | null {
    const k = this.#key;
    switch (k.kind) {
      case 'header':
        return request.requestHeader(k.name);
      case 'query-param':
        return request.queryParam(k.name);
      case 'source-ip':
        return request.sourceIp;
      case 'cookie': {
        const v = request.cookie(k.name);
        if (v !== null) return v;
        // Envoy generates the cookie when a TTL is set, so the client sticks from now on.
        if (k.ttlSeconds <= 0) return null;
        const fresh = randomBytes(8).toString('hex');
        request.setResponseCookie(k.name, fresh, k.path, k.ttlSeconds);
        return fresh;
      }
    }
  }

  #build(hosts: readonly ClusterHost[]): void {
    let total = 0;
    for (const h of hosts) total += h.endpoint.weight;
    const entries: [number, number][] = [];
    hosts.forEach((h, i) => {
      const replicas = Math.max(1, Math.ceil((this.#minimumRingSize * h.endpoint.weight) / total));
      for (let r = 0; r < replicas; r++) entries.push([hash32(`${h.host.hostPort}_${r}`), i]);
    });
    entries.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.#points = Uint32Array.from(entries, (e) => e[0]);
    this.#owners = Uint32Array.from(entries, (e) => e[1]);
    this.#ringFor = hosts;
  }
}
