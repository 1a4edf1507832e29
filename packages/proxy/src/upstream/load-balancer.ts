import type { OriginalDestination } from '../listener/original-dst.ts';
import type { ClusterHost } from './upstream-host.ts';

/** Request properties a hash-based load balancer may key on. */
export interface HashSource {
  requestHeader(name: string): string | null;
  cookie(name: string): string | null;
  queryParam(name: string): string | null;
  readonly sourceIp: string;
  /** Ask the response to set a cookie (ring hash with a cookie TTL and no cookie yet). */
  setResponseCookie(name: string, value: string, path: string, ttlSeconds: number): void;
  /**
   * The downstream connection's original destination (a connection redirected to the proxy),
   * the host of an ORIGINAL_DST cluster; null or absent when there is none.
   */
  readonly originalDestination?: OriginalDestination | null;
}

/** Picks one host of a cluster for a request. Built once per cluster; `pick` never allocates. */
export interface LoadBalancer {
  pick(hosts: readonly ClusterHost[], request: HashSource): ClusterHost | null;
}
