import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';

/**
 * HTTP routing, shaped like Envoy's RouteConfiguration: route tables hold virtual hosts
 * (picked by Host/:authority), which hold ordered routes (first match wins).
 */

/** A string condition. Regexes follow RE2 syntax and must match the whole value, as Envoy's. */
export type StringMatch =
  | { readonly kind: 'exact'; readonly value: string }
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'suffix'; readonly value: string }
  /** The value holds this text anywhere (Envoy's `contains`). */
  | { readonly kind: 'contains'; readonly value: string }
  | { readonly kind: 'regex'; readonly value: string };

export interface PathMatch {
  /**
   * `any` matches every path (Istio's match without `uri`). `connect` is Envoy's
   * `connect_matcher` (a member of its path specifier): CONNECT requests only, which have no
   * path and match no other kind.
   */
  readonly match: StringMatch | { readonly kind: 'any' } | { readonly kind: 'connect' };
  /** Istio's `ignoreUriCase`; applies to the path only. */
  readonly ignoreCase: boolean;
}

/**
 * A header condition. Pseudo-headers name request properties as Envoy does: `:method`,
 * `:authority`, `:scheme`, `:path`.
 */
export interface HeaderMatch {
  /** Lower-case header name. */
  readonly name: string;
  /** `present`: the header exists, whatever its value. */
  readonly match: StringMatch | { readonly kind: 'present' };
  /** True for Istio's `withoutHeaders`: the route matches when the condition does not. */
  readonly invert: boolean;
  /** An absent header is matched as the empty value (Envoy's `treat_missing_header_as_empty`); absent: it never matches. */
  readonly missingAsEmpty?: boolean;
}

export interface QueryParamMatch {
  readonly name: string;
  readonly match: StringMatch | { readonly kind: 'present' };
}

/**
 * A condition on a claim of the request's verified JWT: what istiod makes of a VirtualService
 * header match on `@request.auth.claims.…` (Envoy's `dynamic_metadata` matcher on the
 * jwt_authn filter's payload). Never read from a request header, so a client cannot send one.
 */
export interface ClaimMatch {
  /** The claim and the keys of nested claims under it (`groups`; `group`, `id`). */
  readonly path: readonly string[];
  /**
   * A string claim matches when its value does; a list claim when one of its string elements
   * does; other types, and requests without a verified JWT, never match. `present`: the
   * claim exists.
   */
  readonly match: StringMatch | { readonly kind: 'present' };
  /** True for Istio's `withoutHeaders`: the route matches when the condition does not. */
  readonly invert: boolean;
}

/** One match block; every condition must hold. Istio's ORed blocks become separate routes. */
export interface RouteMatch {
  readonly path: PathMatch;
  readonly headers: readonly HeaderMatch[];
  readonly queryParams: readonly QueryParamMatch[];
  /** JWT claim conditions; absent when there are none. */
  readonly claims?: readonly ClaimMatch[];
}

/** Header edits, in Envoy's order: remove, then set (replace), then add (append). */
export interface HeaderMutation {
  readonly set: readonly (readonly [string, string])[];
  readonly add: readonly (readonly [string, string])[];
  readonly remove: readonly string[];
}

export interface WeightedCluster {
  /** Cluster name, Istio style: `outbound|9080|v1|reviews.default.svc.cluster.local`. */
  readonly cluster: string;
  readonly weight: number;
  /** Per-destination header edits (Istio's `route[].headers`); null when none. */
  readonly requestHeaders: HeaderMutation | null;
  readonly responseHeaders: HeaderMutation | null;
}

/** Istio's retry policy (HTTPRetry) in Envoy's terms. */
export interface RetryPolicy {
  /** Retries after the first try (Istio's `attempts`). */
  readonly numRetries: number;
  /** 0: no per-try timeout. */
  readonly perTryTimeoutMs: number;
  /** Envoy `retry_on` conditions: `5xx`, `gateway-error`, `connect-failure`, `retriable-status-codes`, … */
  readonly retryOn: readonly string[];
  readonly retriableStatusCodes: readonly number[];
  readonly retryRemoteLocalities: boolean;
}

export interface PathRewrite {
  /** Replace the matched prefix (or the whole exact path) with this. */
  readonly prefix: string | null;
  /** Regex rewrite with capture groups (`\1` … in Istio, `$1` in JS after translation). */
  readonly regex: { readonly pattern: string; readonly substitution: string } | null;
}

export interface Mirror {
  readonly cluster: string;
  /** Percentage 0–100 of requests mirrored. */
  readonly percent: number;
}

/** Forward to one of the weighted clusters. */
export interface ForwardAction {
  readonly kind: 'forward';
  readonly clusters: readonly WeightedCluster[];
  /** Route total timeout; 0 means none (Istio's default for HTTP routes). */
  readonly timeoutMs: number;
  readonly retry: RetryPolicy | null;
  readonly rewrite: PathRewrite | null;
  /** Replace the Host/:authority sent upstream; null keeps the client's. */
  readonly authorityRewrite: string | null;
  readonly mirrors: readonly Mirror[];
  /**
   * Envoy's `upgrade_configs` entry for CONNECT on this route: `terminate` (enabled, with
   * `connect_config`): the proxy answers a CONNECT 200 once a TCP connection to a host of the
   * cluster is up and carries the tunnel's bytes itself; `forward` (enabled, no
   * `connect_config`): the CONNECT goes to the host as a request and its 2xx opens the tunnel;
   * `disabled` (`enabled: false`): CONNECT is refused here (403) whatever the connection
   * manager allows. Absent: the connection manager's `upgrade_configs` decide (and an allowed
   * CONNECT is forwarded).
   */
  readonly connect?: 'terminate' | 'forward' | 'disabled';
}

export interface RedirectAction {
  readonly kind: 'redirect';
  readonly status: number;
  readonly scheme: string | null;
  readonly authority: string | null;
  readonly port: number | null;
  /** Derive the port from the request scheme (Istio `derivePort: FROM_PROTOCOL_DEFAULT`). */
  readonly derivePortFromScheme: boolean;
  readonly path: string | null;
  /** Drop the request's query string from the Location (Envoy's `strip_query`); absent: keep it. */
  readonly stripQuery?: boolean;
}

export interface DirectResponseAction {
  readonly kind: 'direct-response';
  readonly status: number;
  readonly body: string | null;
}

export type RouteAction = ForwardAction | RedirectAction | DirectResponseAction;

export interface Route {
  /**
   * Envoy's route name, as istiod sets it: the VirtualService route's `name` (plus
   * `.<match name>`), `default`, `block_all`; '' for an unnamed route (Envoy prints `-`).
   */
  readonly name: string;
  readonly match: RouteMatch;
  readonly action: RouteAction;
  readonly requestHeaders: HeaderMutation | null;
  readonly responseHeaders: HeaderMutation | null;
  /** Per-route filter settings by filter name (Envoy's typed_per_filter_config). */
  readonly filterConfigs: Readonly<Record<string, unknown>>;
  /** Envoy's RouteAction `rate_limits`: the descriptors the rate limit filters make of a request; absent: none. */
  readonly rateLimits?: readonly RateLimitJson[];
  /** Envoy's RouteAction `include_vh_rate_limits`: the virtual host's `rate_limits` apply beside the route's own. */
  readonly includeVhRateLimits?: boolean;
  /**
   * Envoy's route `metadata.filter_metadata` other than what the model says itself (`istio`'s
   * config reference, `remora`): what the rate limit `metadata` action reads from the route
   * entry. Absent: none.
   */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /**
   * Where this route was written, `<namespace>/<vs>#<http index>[.<match index>]` (the match
   * index when the route has several blocks; a delegated route's delegate); '' for routes
   * Istio makes itself. Not Envoy's: it names the route's runtime state (rate-limit buckets)
   * and messages whatever its Envoy name, and gives the exporter istiod's `istio.config`.
   */
  readonly origin: string;
}

export interface VirtualHost {
  /** `reviews.default.svc.cluster.local:9080`, or the gateway host and port. */
  readonly name: string;
  /**
   * Host/:authority values this virtual host answers, lower case: exact names (with or
   * without `:port`), `*.suffix` and `prefix*` wildcards, or `*`.
   */
  readonly domains: readonly string[];
  readonly routes: readonly Route[];
  /** Gateway `httpsRedirect`: plaintext requests get a 301 to https instead of routing (Envoy `require_tls: ALL`). */
  readonly requireTls: boolean;
  /** Envoy's VirtualHost `rate_limits`: for its routes that have none of their own (see `routeRateLimits`); absent: none. */
  readonly rateLimits?: readonly RateLimitJson[];
}

export interface RouteConfiguration {
  readonly name: string;
  readonly virtualHosts: readonly VirtualHost[];
  /** Drop `:port` from the authority before matching domains (gateways: Envoy's `ignore_port_in_host_matching`). */
  readonly ignorePortInHostMatching: boolean;
}

const NO_RATE_LIMITS: readonly RateLimitJson[] = [];

/**
 * The `rate_limits` Envoy's rate limit filters apply to a route: its own and its virtual
 * host's with `include_vh_rate_limits`, else its own, else (none of its own) the virtual
 * host's — the filters' default `vh_rate_limits: OVERRIDE`.
 */
export function routeRateLimits(vh: VirtualHost | null, route: Route): readonly RateLimitJson[] {
  const own = route.rateLimits ?? NO_RATE_LIMITS;
  const host = vh?.rateLimits ?? NO_RATE_LIMITS;
  if (host.length === 0) return own;
  if (route.includeVhRateLimits === true) return own.length === 0 ? host : [...own, ...host];
  return own.length === 0 ? host : own;
}
