/**
 * `envoy.filters.http.ratelimit`: compiles Envoy's RateLimit config once per snapshot, with
 * the snapshot's clusters to reach the rate limit service through; and for each route the
 * `rate_limits` that make its descriptors.
 */
import type { RateLimitJson as RouteRateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ratelimit/v3/rate_limit_pb.js';
import { DETACHED_STATS } from '../filter-stats.ts';
import { FilterName, type FilterCompileContext, type HttpFilterFactory, type RouteFilterInput } from '../filter.ts';
import { compileRateLimits } from './rate-limit-actions.ts';
import { RateLimitSettings } from './ratelimit-config.ts';
import { RateLimitFilterConfig, type RateLimitRouteConfig } from './ratelimit-filter.ts';

export class RateLimitFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.RateLimit;
  readonly readsRouteRateLimits = true;

  compile(config: unknown, context: FilterCompileContext): RateLimitFilterConfig {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('config must be a RateLimit message (JSON object)');
    const settings = new RateLimitSettings(config as RateLimitJson);
    return new RateLimitFilterConfig(this.name, settings, context.upstream ?? null, context.stats ?? DETACHED_STATS);
  }

  /**
   * The route's rate limits. Its RateLimitPerRoute (typed_per_filter_config) is not supported:
   * a route brings its own `rate_limits` instead. Null for a route that does not forward, as
   * Envoy calls the service for route entries only.
   */
  compileRouteConfig(config: unknown, context: FilterCompileContext, route: RouteFilterInput): RateLimitRouteConfig | null {
    if (config !== undefined && config !== null) throw new Error('typed_per_filter_config (RateLimitPerRoute) is not supported; set rate_limits on the route or virtual host');
    if (!route.forwards) return null;
    return { entries: compileRateLimits(route.rateLimits as readonly RouteRateLimitJson[], 'rate_limits', { ...route, serviceCluster: context.serviceCluster ?? '' }), cluster: route.cluster };
  }
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.ratelimit`. */
export const rateLimitFactory = new RateLimitFilterFactory();
