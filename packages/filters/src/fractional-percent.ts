// Envoy's runtime fractional percent, as the filters that act on a share of requests (fault,
// local rate limit's filter_enabled / filter_enforced) draw it.

/** True for `percent`% of calls (a fresh draw from `random` each time). */
export function draw(percent: number, random: () => number = Math.random): boolean {
  return percent >= 100 || (percent > 0 && random() * 100 < percent);
}
