/**
 * `@remora/filters/internal`: what Remora's own proxy needs beyond the public filter contract —
 * the built-in filters' factories and compiled configs (for the registry, `/explain` and the
 * config dump), their constants, the chain registry, and the shared memory the local rate
 * limit and the circuit breakers count in across worker threads. Not a stable API: it changes
 * with the proxy, and a filter package must not import it (`@remora/filters` is the contract).
 */
export { SharedFilterConfig } from './filter.ts';
export { DETACHED_STATS } from './filter-stats.ts';
export { FilterRegistry, SKIPPED_ISTIO_FILTERS, type ChainEntry } from './registry.ts';
export { RouterFilterFactory, routerFactory } from './router/router-factory.ts';
export { RbacFilterFactory, rbacFactory } from './rbac/rbac-factory.ts';
export { RbacFilter, type RbacFilterConfig, type RbacVerdict, type RbacStats, RBAC_DENIED_BODY, RBAC_DENIED_NONE, deniedDetails } from './rbac/rbac-filter.ts';
export { LocalRateLimitFilterFactory, localRateLimitFactory } from './local-ratelimit/local-ratelimit-factory.ts';
export { LocalRateLimitFilter, LocalRateLimiter, LOCAL_RATE_LIMITED, type RouteLimit } from './local-ratelimit/local-ratelimit-filter.ts';
export { TokenBucket, type Bucket, type Clock } from './local-ratelimit/token-bucket.ts';
export { SharedTokenBucket, processClock } from './local-ratelimit/shared-token-bucket.ts';
export { SharedCells, CELL_INT, CELL_F64, CELL_WORDS, type SharedCellsInit } from './shared-cells.ts';
export { nodeTimers, type FilterTimers, type TimerHandle, type RandomSource } from './timers.ts';
export { FaultFilterFactory, faultFactory } from './fault/fault-factory.ts';
export { FaultFilter, FaultFilterConfig, CompiledFault, FAULT_ABORT_BODY } from './fault/fault-filter.ts';
export { JwtAuthnFilterFactory, jwtAuthnFactory } from './jwt-authn/jwt-authn-factory.ts';
export { JwtAuthnFilter, JwtAuthnFilterConfig, type JwtExplanation } from './jwt-authn/jwt-authn-filter.ts';
export { CorsFilterFactory, corsFactory, CorsFilter, CORS_RESPONSE_DETAILS } from './cors/cors-filter.ts';
export { CorsPolicy } from './cors/cors-policy.ts';
export { ExtAuthzFilterFactory, extAuthzFactory } from './ext-authz/ext-authz-factory.ts';
export { ExtAuthzFilter, ExtAuthzFilterConfig, EXT_AUTHZ_DENIED, EXT_AUTHZ_ERROR } from './ext-authz/ext-authz-filter.ts';
export { RateLimitFilterFactory, rateLimitFactory } from './ratelimit/ratelimit-factory.ts';
export { RateLimitFilter, RateLimitFilterConfig, RATE_LIMITED, RATE_LIMITER_ERROR, type RateLimitRouteConfig } from './ratelimit/ratelimit-filter.ts';
export { compileRateLimits, populateDescriptor, type DescriptorAction, type RateLimitEntry } from './ratelimit/rate-limit-actions.ts';
export { HeaderMutationEdits, RouteHeaderMutation, finalizeRequestHeaders, finalizeResponseHeaders } from './header-mutation/route-header-mutation.ts';
