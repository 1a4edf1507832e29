/**
 * Envoy's filter statistics. A filter resolves each of its counters by Envoy's stat name once,
 * when its config is compiled, and a request only increments the object's `value`: no name
 * building and no lookup per request. The runtime keeps the objects by name, so a counter
 * carries on across snapshot swaps as Envoy's do, and shows them on `/stats` and
 * `/stats/prometheus`.
 */

/** One Envoy counter (only grows) or gauge (goes up and down). */
export class Stat {
  value = 0;
}

/** Where a compiled filter finds its stats. */
export interface FilterStats {
  /**
   * `http.<stat_prefix>.<name>`: a stat in the namespace of the chain's HTTP connection manager
   * (RBAC, jwt_authn, fault, CORS). The same object for the same name, across snapshots.
   */
  http(name: string, gauge?: boolean): Stat;
  /** `<name>` outside any connection manager (the local rate limit's `<stat_prefix>.http_local_rate_limit.*`). */
  root(name: string, gauge?: boolean): Stat;
}

/** Stats kept by nobody: for compiles that have no stats store (unit tests, tools). */
export const DETACHED_STATS: FilterStats = {
  http: () => new Stat(),
  root: () => new Stat(),
};
