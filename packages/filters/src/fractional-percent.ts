// Envoy's runtime fractional percent, as the filters that act on a share of requests (fault,
// local rate limit's filter_enabled / filter_enforced) draw it.

/** True for `percent`% of calls (a fresh draw each time). */
export function draw(percent: number): boolean {
  return percent >= 100 || (percent > 0 && Math.random() * 100 < percent);
}
