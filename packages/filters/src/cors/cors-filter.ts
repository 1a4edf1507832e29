/**
 * `envoy.filters.http.cors`: Envoy's CORS filter (source/extensions/filters/http/cors). The
 * chain holds an empty `Cors`; each route brings its `CorsPolicy` in typed_per_filter_config
 * (istiod's translateCORSPolicy). A route without one is left alone.
 *
 * - A preflight (OPTIONS with a non-empty Origin and Access-Control-Request-Method) from an
 *   allowed origin is answered here with 200 and the allow headers (details `cors_response`).
 *   From another origin it goes upstream, or, with `forward_not_matching_preflights: false`
 *   (Istio's `unmatchedPreflights: IGNORE`), is answered here without allow-origin.
 * - Any other request from an allowed origin goes on; whatever response it gets (upstream's,
 *   or the router's local reply) carries allow-origin, allow-credentials and expose-headers,
 *   replacing the upstream's.
 * - As Envoy, the filter never writes `Vary`: an upstream that varies by Origin says so itself.
 */
import type { CorsJson, CorsPolicyJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import {
  FilterName,
  FilterStatus,
  SharedFilterConfig,
  type FilterCallbacks,
  type FilterCompileContext,
  type FilterRequest,
  type HttpFilter,
  type HttpFilterFactory,
} from '../filter.ts';
import { DETACHED_STATS, type FilterStats, type Stat } from '../filter-stats.ts';
import {
  CorsPolicy,
  H_ALLOW_CREDENTIALS,
  H_ALLOW_HEADERS,
  H_ALLOW_METHODS,
  H_ALLOW_ORIGIN,
  H_ALLOW_PRIVATE_NETWORK,
  H_EXPOSE_HEADERS,
  H_MAX_AGE,
} from './cors-policy.ts';

/** Envoy's response code details for a preflight answered by the filter. */
export const CORS_RESPONSE_DETAILS = 'cors_response';

/** Stateless: everything it needs per request is the route's compiled policy and the request's headers. */
/** Envoy's CORS filter counters, `http.<stat_prefix>.cors.origin_valid` and `.origin_invalid`. */
export interface CorsStats {
  readonly originValid: Stat;
  readonly originInvalid: Stat;
}

export class CorsFilter implements HttpFilter {
  readonly #random: () => number;
  readonly stats: CorsStats;

  constructor(random: () => number = Math.random, stats: FilterStats = DETACHED_STATS) {
    this.#random = random;
    this.stats = { originValid: stats.http('cors.origin_valid'), originInvalid: stats.http('cors.origin_invalid') };
  }

  onRequest(req: FilterRequest, cb: FilterCallbacks): FilterStatus {
    const policy = req.routeFilterConfig(FilterName.Cors) as CorsPolicy | null;
    if (policy === null) return FilterStatus.Continue;
    // Envoy checks filter_enabled before reading Origin; the draw only happens below 100%.
    if (policy.enabledPercent < 100 && !(this.#random() * 100 < policy.enabledPercent)) return FilterStatus.Continue;
    const origin = req.requestHeader('origin');
    if (origin === null || origin === '') return FilterStatus.Continue;
    const allowed = policy.isOriginAllowed(origin);
    if (allowed) this.stats.originValid.value++;
    else this.stats.originInvalid.value++;
    const acrm = req.method === 'OPTIONS' ? req.requestHeader('access-control-request-method') : null;
    if (acrm === null || acrm === '') {
      // Not a preflight: the response gets the CORS headers when the origin is allowed.
      if (allowed) setActualHeaders(cb, policy, origin);
      return FilterStatus.Continue;
    }
    if (!allowed && policy.forwardNotMatchingPreflights) return FilterStatus.Continue;
    if (allowed) cb.setResponseHeader(H_ALLOW_ORIGIN, origin);
    if (policy.allowCredentials) cb.setResponseHeader(H_ALLOW_CREDENTIALS, 'true');
    if (policy.allowMethods !== '') cb.setResponseHeader(H_ALLOW_METHODS, policy.echoMethod ? acrm : policy.allowMethods);
    // Envoy sets the echoed value even when the request sent none (an empty header).
    if (policy.allowHeaders !== '') cb.setResponseHeader(H_ALLOW_HEADERS, policy.echoHeaders ? (req.requestHeader('access-control-request-headers') ?? '') : policy.allowHeaders);
    if (policy.maxAge !== '') cb.setResponseHeader(H_MAX_AGE, policy.maxAge);
    if (policy.allowPrivateNetworkAccess && req.requestHeader('access-control-request-private-network') === 'true') {
      cb.setResponseHeader(H_ALLOW_PRIVATE_NETWORK, 'true');
    }
    // Envoy's own encodeHeaders runs on the answer it generated: expose-headers for an allowed origin.
    if (allowed && policy.exposeHeaders !== '') cb.setResponseHeader(H_EXPOSE_HEADERS, policy.exposeHeaders);
    cb.sendLocalReply(200, null, null, CORS_RESPONSE_DETAILS);
    return FilterStatus.StopIteration;
  }
}

function setActualHeaders(cb: FilterCallbacks, policy: CorsPolicy, origin: string): void {
  cb.setResponseHeader(H_ALLOW_ORIGIN, origin);
  if (policy.allowCredentials) cb.setResponseHeader(H_ALLOW_CREDENTIALS, 'true');
  if (policy.exposeHeaders !== '') cb.setResponseHeader(H_EXPOSE_HEADERS, policy.exposeHeaders);
}

export class CorsFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Cors;
  readonly #random: () => number;

  /** `random` decides `filter_enabled` fractions below 100% (tests inject it). */
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** The chain's `Cors` message has no fields: the policy is the route's. */
  compile(config: unknown, context: FilterCompileContext): SharedFilterConfig<CorsFilter> {
    if (config !== null && config !== undefined && (typeof config !== 'object' || Array.isArray(config))) throw new Error('config must be a Cors object');
    const unknown = config === null || config === undefined ? [] : Object.keys(config as CorsJson);
    if (unknown.length > 0) throw new Error(`Cors has no field ${unknown[0]!}; the policy belongs in the route's typed_per_filter_config`);
    return new SharedFilterConfig(this.name, new CorsFilter(this.#random, context.stats ?? DETACHED_STATS));
  }

  compileRouteConfig(config: unknown, _context: FilterCompileContext): CorsPolicy {
    return new CorsPolicy(config as CorsPolicyJson);
  }
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.cors`. */
export const corsFactory = new CorsFilterFactory();
