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

/** Envoy's local rate limit (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit), normalized. */
export interface LocalRateLimitConfig {
  /**
   * Identifies the bucket across config swaps: buckets whose key and bucket settings did not
   * change keep their tokens on reload.
   */
  readonly key: string;
  /** Where the config came from (`EnvoyFilter ns/name`, `LocalRateLimit ns/name`), for messages. */
  readonly origin: string;
  readonly statPrefix: string;
  /**
   * The filter's own bucket; null: none (Envoy allows that at listener level, where routes
   * bring their own; such a filter limits nothing by itself).
   */
  readonly tokenBucket: TokenBucketConfig | null;
  /** `filter_enabled` runtime fraction, 0–100: share of requests checked (Envoy's default when unset: 0). */
  readonly enabledPercent: number;
  /** `filter_enforced`, 0–100: share of over-limit requests actually refused (others only counted). */
  readonly enforcedPercent: number;
  /** Status of a refusal (`status.code`; Envoy uses 429 for anything below 400). */
  readonly status: number;
  /** `rate_limited_as_resource_exhausted`: gRPC refusals carry RESOURCE_EXHAUSTED (8) instead of UNAVAILABLE (14). */
  readonly grpcResourceExhausted: boolean;
  /** Headers added to responses the filter refuses (`response_headers_to_add`). */
  readonly responseHeadersToAdd: readonly (readonly [string, string])[];
  /** `enable_x_ratelimit_headers: DRAFT_VERSION_03`: x-ratelimit-limit/-remaining/-reset on every response. */
  readonly xRateLimitHeaders: boolean;
  /** Descriptor buckets (with `rate_limits` on the route); empty: only the filter's own bucket. */
  readonly descriptors: readonly RateLimitDescriptor[];
  /** `always_consume_default_token_bucket` (Envoy's default: true): the own bucket is taken from even when a descriptor matched. */
  readonly alwaysConsumeDefaultBucket: boolean;
  /** The filter's own `rate_limits` (used instead of the route's when set): each entry's actions yield one descriptor. */
  readonly rateLimits: readonly RateLimitActions[];
}

/** A route's local rate limit settings (route `filterConfigs`). */
export interface LocalRateLimitRouteConfig {
  /** The route's own limit (typed_per_filter_config), replacing the listener's; null: the listener's applies. */
  readonly limit: LocalRateLimitConfig | null;
  /** The route's `rate_limits`, which produce the request's descriptors. */
  readonly rateLimits: readonly RateLimitActions[];
}

export interface TokenBucketConfig {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
}

export interface RateLimitDescriptor {
  readonly entries: readonly { readonly key: string; readonly value: string }[];
  readonly tokenBucket: TokenBucketConfig;
}

/** One descriptor entry from the request (Envoy's route `rate_limits[].actions[]`). */
export type RateLimitAction =
  | { readonly kind: 'request_headers'; readonly headerName: string; readonly descriptorKey: string; readonly skipIfAbsent: boolean }
  | { readonly kind: 'generic_key'; readonly descriptorKey: string; readonly descriptorValue: string }
  | { readonly kind: 'remote_address' };

export interface RateLimitActions {
  readonly actions: readonly RateLimitAction[];
}

/** Istio VirtualService `fault`, normalized. Percentages 0–100 (Istio's default when unset: 100). */
export interface FaultConfig {
  readonly delay: { readonly fixedDelayMs: number; readonly percent: number } | null;
  readonly abort: { readonly httpStatus: number | null; readonly grpcStatus: number | null; readonly percent: number } | null;
}
