/**
 * A listener's HTTP filter chain, in the order istiod builds it (listener_builder.go), of the
 * filters Remora runs: CUSTOM authorization (ext_authz), authentication and authorization (not on a sidecar's outbound side),
 * then where gRPC stats stands in Istio's chain Remora's LocalRateLimit, then the fault filter,
 * CORS (an empty Cors, as istiod's) and the router (Envoy's terminal filter, last). Istio's
 * own filters (metadata exchange, gRPC stats, ALPN, stats) are not in the model; EnvoyFilters
 * patch the exported chain with those in their places (envoyfilter-patch.ts).
 */
import type { HttpFilterConfig } from '../model/listener.ts';
import type { PatchContext } from './envoyfilter.ts';
import type { AuthzFilters } from './security.ts';

const CORS = 'envoy.filters.http.cors';
const ROUTER = 'envoy.filters.http.router';
/** istiod's filters: an empty Cors (the policy is per route) and a Router with its defaults. */
const CORS_FILTER: HttpFilterConfig = { name: CORS, config: {} };
const ROUTER_FILTER: HttpFilterConfig = { name: ROUTER, config: {} };

/**
 * The filters a listener runs, in order. `jwtAuthn` and the `authz` filters are in Istio's
 * chain only where policies select the proxy (and never on the outbound side); the fault
 * filter only where a route uses it; `localRateLimit` is Remora's LocalRateLimit resource's,
 * right after authentication and authorization.
 */
export function httpFilterChain(
  context: PatchContext,
  parts: {
    readonly jwtAuthn: HttpFilterConfig | null;
    readonly authz: AuthzFilters;
    readonly localRateLimit: HttpFilterConfig | null;
    readonly fault: HttpFilterConfig | null;
  },
): HttpFilterConfig[] {
  const out: HttpFilterConfig[] = [];
  if (context !== 'SIDECAR_OUTBOUND') {
    // istiod's CUSTOM filters (RBAC metadata producer, ext_authz) come before authentication.
    out.push(...parts.authz.custom);
    if (parts.jwtAuthn !== null) out.push(parts.jwtAuthn);
    // istiod's RBAC filters: AUDIT, DENY, ALLOW.
    out.push(...parts.authz.rbac);
  }
  if (parts.localRateLimit !== null) out.push(parts.localRateLimit);
  if (parts.fault !== null) out.push(parts.fault);
  out.push(CORS_FILTER, ROUTER_FILTER);
  return out;
}
