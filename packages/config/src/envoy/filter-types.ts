/**
 * The config message of each Envoy HTTP filter Remora runs, by filter name: the exporter
 * writes them, the importers identify filters by them. No runtime imports: the importers
 * load on the proxy's main thread, where Envoy's descriptors must not be loaded.
 */
const T = 'type.googleapis.com/';

/** The listener-level config message of each Envoy HTTP filter Remora runs, by filter name. */
export const HTTP_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`,
  'envoy.filters.http.ext_authz': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.Cors`,
  'envoy.filters.http.router': `${T}envoy.extensions.filters.http.router.v3.Router`,
};

/** The route-level (`typed_per_filter_config`) message of each filter, by filter name. */
export const PER_ROUTE_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBACPerRoute`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
};

/** The HTTP connection manager's config message. */
export const HCM_TYPE = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;

/** The `TypedStruct` a config private to Remora travels in (`type_url` `type.googleapis.com/remora.<filter name>`). */
export const TYPED_STRUCT_TYPES: ReadonlySet<string> = new Set([`${T}xds.type.v3.TypedStruct`, `${T}udpa.type.v1.TypedStruct`]);
export const REMORA_TYPE_PREFIX = `${T}remora.`;
