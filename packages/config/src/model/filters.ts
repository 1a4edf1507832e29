import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { LocalRateLimitJson } from '../envoy/gen/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit_pb.ts';

/**
 * The configs of the built-in HTTP filters, as the translator hands them to the runtime
 * (listener `httpFilters`, route `filterConfigs`). Plain data; the filters compile them.
 * Field names follow Istio's resources where the filter comes from one. Filters already on
 * Envoy's model take their Envoy config message in proto3 JSON form instead (the JWT filter:
 * `JwtAuthenticationJson`).
 */

/** One AuthorizationPolicy (security.istio.io/v1), its `rules` as written (already schema-valid). */
export interface AuthzPolicy {
  /** `<namespace>/<name>`. */
  readonly name: string;
  readonly action: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  /** The policy's `rules`; absent (`undefined` in the spec) is different from `[]`: see `hasRules`. */
  readonly rules: readonly unknown[];
  /**
   * False when the spec has no `rules` field at all. Istio: an ALLOW policy without rules
   * matches nothing (so it denies everything it selects, e.g. an empty `spec: {}`); a
   * `rules: [{}]` matches everything.
   */
  readonly hasRules: boolean;
  /** CUSTOM's provider name. */
  readonly provider: string | null;
}

export interface AuthzConfig {
  readonly policies: readonly AuthzPolicy[];
  /** Trust domain for principals (`cluster.local`). */
  readonly trustDomain: string;
}

/**
 * `envoy.filters.http.local_ratelimit`'s config: Envoy's LocalRateLimit in proto3 JSON, on a
 * listener's chain and in a route's typed_per_filter_config. `rateLimits` is the filter's own
 * `rate_limits` (Envoy 1.33+, newer than the bundled protos): each entry's actions yield a
 * descriptor, used instead of the route's when set.
 */
export type LocalRateLimitConfigJson = LocalRateLimitJson & { rateLimits?: RateLimitJson[] };
