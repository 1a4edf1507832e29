import { corsFactory, extAuthzFactory, faultFactory, FilterRegistry, jwtAuthnFactory, localRateLimitFactory, rateLimitFactory, rbacFactory, routerFactory } from '@remora/filters';

/** The filters every proxy knows, registered by their Envoy names. */
export function builtinFilters(): FilterRegistry {
  return new FilterRegistry()
    .register(rbacFactory)
    .register(extAuthzFactory)
    .register(jwtAuthnFactory)
    .register(localRateLimitFactory)
    .register(rateLimitFactory)
    .register(faultFactory)
    .register(corsFactory)
    .register(routerFactory);
}
