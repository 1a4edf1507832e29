/**
 * The config message of each Envoy HTTP filter Remora runs, by filter name: plain data, so
 * the importers can read it without loading the message registry.
 */
const T = 'type.googleapis.com/';
const ROUTER_TYPE = `${T}envoy.extensions.filters.http.router.v3.Router`;

/** The listener-level config message of each Envoy HTTP filter Remora runs, by filter name. */
export const HTTP_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.Cors`,
  'envoy.filters.http.router': ROUTER_TYPE,
};

/** The route-level (`typed_per_filter_config`) message of each filter, by filter name. */
export const PER_ROUTE_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBACPerRoute`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
};

