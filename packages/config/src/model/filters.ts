import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { LocalRateLimitJson } from '../envoy/gen/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit_pb.ts';

/**
 * The configs of the built-in HTTP filters, as the translator hands them to the runtime
 * (listener `httpFilters`, route `filterConfigs`). Plain data; the filters compile them.
 * Field names follow Istio's resources where the filter comes from one.
 */

/** One `jwtRules` entry of a RequestAuthentication (security.istio.io/v1). */
export interface JwtRule {
  /** `<namespace>/<name>` of the RequestAuthentication, for messages and dumps. */
  readonly origin: string;
  readonly issuer: string;
  /** Accepted `aud` values; empty: any (Istio: then the audience is not checked). */
  readonly audiences: readonly string[];
  /** Inline JWKS JSON, or null. */
  readonly jwks: string | null;
  /** Where to fetch the JWKS, or null. One of `jwks`/`jwksUri` is set (Istio discovers by issuer otherwise; not supported). */
  readonly jwksUri: string | null;
  /** Headers carrying the token; default `Authorization: Bearer <token>`. */
  readonly fromHeaders: readonly { readonly name: string; readonly prefix: string }[];
  /** Query parameters carrying the token; default `access_token` when no location is set. */
  readonly fromParams: readonly string[];
  readonly fromCookies: readonly string[];
  /** Header that gets the verified payload, base64url-encoded; null: none. */
  readonly outputPayloadToHeader: string | null;
  readonly outputClaimToHeaders: readonly { readonly header: string; readonly claim: string }[];
  /** Keep the token in the request to the upstream (Istio default: it is removed). */
  readonly forwardOriginalToken: boolean;
  /** JWKS fetch timeout. */
  readonly timeoutMs: number;
}

export interface JwtAuthnConfig {
  readonly rules: readonly JwtRule[];
  /**
   * Envoy's `clear_route_cache`: once a token is verified the route is chosen again, so routes
   * can match its claims (and the headers the filter added). istiod sets it on gateways only.
   */
  readonly clearRouteCache: boolean;
}

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
