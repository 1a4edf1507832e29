import { corsFactory, extAuthzFactory, faultFactory, FilterRegistry, jwtAuthnFactory, LocalRateLimitFilterFactory, localRateLimitFactory, rateLimitFactory, rbacFactory, routerFactory, type Clock, type SharedCells } from '@remora/filters/internal';

/**
 * The filters every proxy knows, registered by their Envoy names. `shared`: the memory the
 * worker threads of one proxy share (local rate-limit buckets are taken from by all).
 * `clock`: the one this thread's local rate-limit buckets fill by (milliseconds, monotonic);
 * buckets in shared memory read the process clock every thread reads alike.
 */
export function builtinFilters(shared: SharedCells | null = null, clock?: Clock): FilterRegistry {
  return new FilterRegistry()
    .register(rbacFactory)
    .register(extAuthzFactory)
    .register(jwtAuthnFactory)
    .register(shared === null && clock === undefined ? localRateLimitFactory : new LocalRateLimitFilterFactory(clock, shared))
    .register(rateLimitFactory)
    .register(faultFactory)
    .register(corsFactory)
    .register(routerFactory);
}
