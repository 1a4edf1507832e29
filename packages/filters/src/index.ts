export * from './filter.ts';
export { FilterRegistry } from './registry.ts';
export { AuthzFilterFactory, authzFactory } from './authz/authz-factory.ts';
export { AuthzFilter, AuthzFilterConfig, RBAC_DENIED_BODY, RBAC_DENIED_NONE } from './authz/authz-filter.ts';
export { JwtAuthnFilterFactory, jwtAuthnFactory } from './jwt-authn/jwt-authn-factory.ts';
export { JwtAuthnFilter, JwtAuthnFilterConfig } from './jwt-authn/jwt-authn-filter.ts';
