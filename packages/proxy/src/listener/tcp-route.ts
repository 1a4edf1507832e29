import type { TcpRoute } from '@remora/config';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import { serverNameMatches } from './client-hello.ts';

/**
 * The cluster a TCP connection goes to: the first route whose SNI names match (exact,
 * `*.suffix`, or `*`; a route without names matches any), then a weighted pick among its
 * destinations.
 */
export function pickTcpRoute(routes: readonly TcpRoute[], sni: string | null, clusters: ReadonlyMap<string, UpstreamCluster>): UpstreamCluster | null {
  for (const route of routes) {
    if (route.sniHosts.length > 0 && !route.sniHosts.some((h) => serverNameMatches(h, sni))) continue;
    let total = 0;
    for (const c of route.clusters) total += c.weight;
    if (total <= 0) return null;
    let r = Math.random() * total;
    for (const c of route.clusters) {
      r -= c.weight;
      if (r < 0) return clusters.get(c.cluster) ?? null;
    }
    return clusters.get(route.clusters[route.clusters.length - 1]!.cluster) ?? null;
  }
  return null;
}
