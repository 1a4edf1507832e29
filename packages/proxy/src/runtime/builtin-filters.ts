import { authzFactory, faultFactory, FilterRegistry, jwtAuthnFactory, localRateLimitFactory, routerFactory } from '@remora/filters';

/** The filters every proxy knows, registered by their Envoy names. */
export function builtinFilters(): FilterRegistry {
  return new FilterRegistry().register(authzFactory).register(jwtAuthnFactory).register(localRateLimitFactory).register(faultFactory).register(routerFactory);
}
