/**
 * Envoy's response flags, as a bit set on the hot path and as Envoy's short codes in access
 * logs and the `response_flags` metric label. The table order is Envoy's print order, so
 * `UF,URX` reads exactly as it does in an Envoy log.
 */
export const ResponseFlag = {
  /** Local service failed health check (unused: no active health checking). */
  LH: 1 << 0,
  /** No healthy upstream host in the cluster. */
  UH: 1 << 1,
  /** Upstream request timeout. */
  UT: 1 << 2,
  /** Connection local reset. */
  LR: 1 << 3,
  /** Upstream remote reset. */
  UR: 1 << 4,
  /** Upstream connection failure. */
  UF: 1 << 5,
  /** Upstream connection termination. */
  UC: 1 << 6,
  /** Upstream overflow (circuit breaker). */
  UO: 1 << 7,
  /** No route configured for the request. */
  NR: 1 << 8,
  /** Request delayed by fault injection. */
  DI: 1 << 9,
  /** Request aborted by fault injection. */
  FI: 1 << 10,
  /** Request rate limited locally. */
  RL: 1 << 11,
  /** Request denied by the external authorization service. */
  UAEX: 1 << 12,
  /** Rate limit service error. */
  RLSE: 1 << 13,
  /** Downstream connection termination. */
  DC: 1 << 14,
  /** Upstream retry limit exceeded. */
  URX: 1 << 15,
  /** Stream idle timeout. */
  SI: 1 << 16,
  /** Invalid Envoy request headers. */
  IH: 1 << 17,
  /** Downstream protocol error. */
  DPE: 1 << 18,
  /** Max stream duration reached upstream. */
  UMSDR: 1 << 19,
  /** Upstream protocol error. */
  UPE: 1 << 20,
  /** No cluster found for the route. */
  NC: 1 << 21,
  /** Overload manager terminated the request. */
  OM: 1 << 22,
  /** DNS resolution failed. */
  DF: 1 << 23,
} as const;

export type ResponseFlagName = keyof typeof ResponseFlag;

const NAMES = Object.keys(ResponseFlag) as ResponseFlagName[];
const cache = new Map<number, string>([[0, '-']]);

/** `-` for none, else Envoy's comma-separated codes; memoised per bit set. */
export function formatResponseFlags(flags: number): string {
  let s = cache.get(flags);
  if (s === undefined) {
    const parts: string[] = [];
    for (const name of NAMES) if (flags & ResponseFlag[name]) parts.push(name);
    s = parts.join(',');
    cache.set(flags, s);
  }
  return s;
}
