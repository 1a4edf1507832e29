import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { LocalRateLimitJson } from '../envoy/gen/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit_pb.ts';

/**
 * The configs of the built-in HTTP filters, as the translator hands them to the runtime
 * (listener `httpFilters`, route `filterConfigs`). Plain data; the filters compile them.
 * Field names follow Istio's resources where the filter comes from one. Filters already on
 * Envoy's model take their Envoy config message in proto3 JSON form instead (the JWT filter:
 * `JwtAuthenticationJson`).
 */

/**
 * `envoy.filters.http.local_ratelimit`'s config: Envoy's LocalRateLimit in proto3 JSON, on a
 * listener's chain and in a route's typed_per_filter_config. `rateLimits` is the filter's own
 * `rate_limits` (Envoy 1.33+, newer than the bundled protos): each entry's actions yield a
 * descriptor, used instead of the route's when set.
 */
export type LocalRateLimitConfigJson = LocalRateLimitJson & { rateLimits?: RateLimitJson[] };
