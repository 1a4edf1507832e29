import { corsFactory, extAuthzFactory, faultFactory, FilterRegistry, jwtAuthnFactory, LocalRateLimitFilterFactory, localRateLimitFactory, rateLimitFactory, rbacFactory, routerFactory, type SharedCells } from '@remora/filters/internal';

/**
 * The filters every proxy knows, registered by their Envoy names. `shared`: the memory the
 * worker threads of one proxy share (local rate-limit buckets are taken from by all).
 */
export function builtinFilters(shared: SharedCells | null = null): FilterRegistry {
  return new FilterRegistry()
    .register(rbacFactory)
    .register(extAuthzFactory)
    .register(jwtAuthnFactory)
    .register(shared === null ? localRateLimitFactory : new LocalRateLimitFilterFactory(undefined, shared))
    .register(rateLimitFactory)
    .register(faultFactory)
    .register(corsFactory)
    .register(routerFactory);
}
