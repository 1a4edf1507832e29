import type { LocalityLbSetting, ProxyNode } from '@remora/config';
import type { ClusterHost } from './upstream-host.ts';

/** Envoy's overprovisioning factor: a priority at ≥ 72% health (×1.4 ≥ 100%) keeps all its traffic. */
const OVERPROVISIONING = 1.4;

/** Kubernetes topology labels, filled from a locality string for failoverPriority. */
const REGION = 'topology.kubernetes.io/region';
const ZONE = 'topology.kubernetes.io/zone';
const SUBZONE = 'topology.istio.io/subzone';

function localityParts(l: string): [string, string, string] {
  const [r = '', z = '', s = ''] = l.split('/');
  return [r, z, s];
}

function localityMatches(pattern: string, locality: string): boolean {
  const p = pattern.split('/');
  const l = locality.split('/');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '*') return true;
    if (p[i] !== (l[i] ?? '')) return false;
  }
  return true;
}

function withTopology(labels: Readonly<Record<string, string>>, locality: string): Record<string, string> {
  const [r, z, s] = localityParts(locality);
  return { [REGION]: r, [ZONE]: z, [SUBZONE]: s, ...labels };
}

/**
 * Istio's locality load balancing for one cluster: endpoints sorted into priorities by how
 * close they are to this proxy (or by `failoverPriority` labels, or spread by `distribute`
 * weights), and traffic given to priorities by Envoy's rule: each priority takes as much as
 * its health allows (healthy share × 1.4, capped at 100%), the rest spills to the next.
 */
export class LocalityPlan {
  /** Healthy hosts per priority (empty priorities dropped), highest priority first. */
  readonly #levels: ClusterHost[][];
  /** Cumulative percentage of traffic per level. */
  readonly #cumulative: number[];
  /** With `distribute`: per level, locality groups and their cumulative weights. */
  readonly #weighted: { groups: ClusterHost[][]; cumulative: number[] } | null;

  constructor(hosts: readonly ClusterHost[], healthy: (h: ClusterHost) => boolean, node: ProxyNode, setting: LocalityLbSetting) {
    const dist = node.locality === '' ? undefined : setting.distribute.find((d) => localityMatches(d.from, node.locality));
    if (dist !== undefined) {
      // One priority; traffic split over destination localities by the configured weights.
      const groups: ClusterHost[][] = [];
      const weights: number[] = [];
      for (const [pattern, weight] of Object.entries(dist.to)) {
        const group: ClusterHost[] = [];
        let all = 0;
        for (const h of hosts) {
          if (!localityMatches(pattern, h.endpoint.locality)) continue;
          all++;
          if (healthy(h)) group.push(h);
        }
        // Envoy's locality weighted balancing: a locality's weight shrinks with its
        // availability (healthy share × 1.4, capped at 100%), so its load spills to the others.
        const effective = all === 0 ? 0 : weight * Math.min(1, (OVERPROVISIONING * group.length) / all);
        if (group.length > 0 && effective > 0) {
          groups.push(group);
          weights.push(effective);
        }
      }
      let sum = 0;
      const cumulative = weights.map((w) => (sum += w));
      this.#weighted = { groups, cumulative };
      this.#levels = groups.length > 0 ? [groups.flat()] : [];
      this.#cumulative = [100];
      return;
    }
    this.#weighted = null;
    const rank = this.#ranker(node, setting);
    const byLevel = new Map<number, { all: number; healthy: ClusterHost[] }>();
    for (const h of hosts) {
      const p = rank(h);
      let e = byLevel.get(p);
      if (e === undefined) byLevel.set(p, (e = { all: 0, healthy: [] }));
      e.all++;
      if (healthy(h)) e.healthy.push(h);
    }
    const levels = [...byLevel.entries()].sort((a, b) => a[0] - b[0]).map(([, e]) => e);
    const health = levels.map((e) => Math.min(100, Math.floor((OVERPROVISIONING * 100 * e.healthy.length) / e.all)));
    const totalHealth = health.reduce((a, b) => a + b, 0);
    // Envoy: when all priorities together are under 100%, loads are scaled up to fill 100%.
    const scale = totalHealth > 0 && totalHealth < 100 ? 100 / totalHealth : 1;
    let left = 100;
    const loads = health.map((hl) => {
      const l = Math.min(left, hl * scale);
      left -= l;
      return l;
    });
    this.#levels = [];
    this.#cumulative = [];
    let cum = 0;
    levels.forEach((e, i) => {
      if (loads[i]! <= 0 || e.healthy.length === 0) return;
      cum += loads[i]!;
      this.#levels.push(e.healthy);
      this.#cumulative.push(cum);
    });
  }

  /** Priority of a host: 0 is closest. */
  #ranker(node: ProxyNode, setting: LocalityLbSetting): (h: ClusterHost) => number {
    if (setting.failoverPriority.length > 0) {
      const mine = withTopology(node.labels, node.locality);
      const labels = setting.failoverPriority;
      return (h) => {
        const theirs = withTopology(h.endpoint.labels, h.endpoint.locality);
        let matched = 0;
        while (matched < labels.length && mine[labels[matched]!] !== undefined && mine[labels[matched]!] === theirs[labels[matched]!]) matched++;
        return labels.length - matched;
      };
    }
    const [r, z, s] = localityParts(node.locality);
    if (r === '') return () => 0;
    const failoverTo = setting.failover.find((f) => f.from === r)?.to ?? null;
    return (h) => {
      const [hr, hz, hs] = localityParts(h.endpoint.locality);
      if (hr === r) return hz === z ? (hs === s ? 0 : 1) : 2;
      return hr === failoverTo ? 3 : 4;
    };
  }

  /** True when no priority has a healthy host. */
  get empty(): boolean {
    return this.#levels.length === 0;
  }

  /** The hosts of the priority (or locality group) a request goes to, chosen by `random` in [0, 1). */
  choose(random: number): readonly ClusterHost[] | null {
    const w = this.#weighted;
    if (w !== null) {
      if (w.groups.length === 0) return null;
      const total = w.cumulative[w.cumulative.length - 1]!;
      const r = random * total;
      for (let i = 0; i < w.cumulative.length; i++) if (r < w.cumulative[i]!) return w.groups[i]!;
      return w.groups[w.groups.length - 1]!;
    }
    const levels = this.#levels;
    if (levels.length === 0) return null;
    if (levels.length === 1) return levels[0]!;
    const r = random * this.#cumulative[this.#cumulative.length - 1]!;
    for (let i = 0; i < levels.length; i++) if (r < this.#cumulative[i]!) return levels[i]!;
    return levels[levels.length - 1]!;
  }
}
