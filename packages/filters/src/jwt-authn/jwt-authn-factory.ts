/**
 * `envoy.filters.http.jwt_authn`: Istio RequestAuthentication. The translator hands over
 * every jwtRule that applies to this proxy (`JwtAuthnConfig`); compiling parses inline key
 * sets, finds (or creates) the cache of each `jwksUri` in the persistent state, so keys
 * survive config reloads, and builds the token locations once.
 */
import type { JwtAuthnConfig, JwtRule } from '@remora/config';
import { FilterName, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { parseJwks } from './jwt-authn-jwks.ts';
import { InlineJwks, type JwksSource, RemoteJwks } from './jwt-authn-jwks-cache.ts';
import { JwtAuthnFilterConfig } from './jwt-authn-filter.ts';
import { buildLocations, headersToSanitize, JwtProvider } from './jwt-authn-rules.ts';
import { JwtStatus } from './jwt-authn-status.ts';

/** How long fetched keys are fresh: Istio's remote JWKS cache duration. */
export const JWKS_CACHE_DURATION_MS = 5 * 60_000;
/** Least time between refreshes for an unknown kid, and between retries after a failed fetch. */
export const JWKS_MIN_REFRESH_INTERVAL_MS = 1_000;

/** A source that never has keys: an inline JWKS without a usable key (Envoy keeps serving, failing such tokens). */
class NoKeys implements JwksSource {
  current(): null {
    return null;
  }
  load(): Promise<null> {
    return Promise.resolve(null);
  }
  refreshForUnknownKid(): null {
    return null;
  }
}

export class JwtAuthnFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.JwtAuthn;

  compile(config: unknown, context: FilterCompileContext): JwtAuthnFilterConfig {
    const rules = checkConfig(config);
    const clearRouteCache = (config as Partial<JwtAuthnConfig>).clearRouteCache === true;
    const providers = rules.map((rule, i) => {
      if (rule.jwks !== null) {
        const keys = parseJwks(rule.jwks);
        if (typeof keys === 'string') {
          context.warn(`RequestAuthentication ${rule.origin}: jwtRules[${i}].jwks: ${keys}; tokens of issuer ${rule.issuer} will fail verification`);
          return new JwtProvider(rule, new NoKeys(), JwtStatus.JwksNoValidKeys);
        }
        return new JwtProvider(rule, new InlineJwks(keys), null);
      }
      const uri = rule.jwksUri!;
      const remote = context.persistent(`${this.name}/jwks/${uri}`, () => {
        return new RemoteJwks(uri, {
          cacheDurationMs: JWKS_CACHE_DURATION_MS,
          minRefreshIntervalMs: JWKS_MIN_REFRESH_INTERVAL_MS,
          timeoutMs: rule.timeoutMs,
          warn: (m) => context.warn(m),
        });
      });
      remote.timeoutMs = rule.timeoutMs;
      return new JwtProvider(rule, remote, null);
    });
    return new JwtAuthnFilterConfig(this.name, providers, buildLocations(rules, providers), headersToSanitize(providers), clearRouteCache);
  }
}

function checkConfig(config: unknown): readonly JwtRule[] {
  const c = config as Partial<JwtAuthnConfig> | null;
  if (c === null || typeof c !== 'object' || !Array.isArray(c.rules)) throw new Error('config must have a rules list');
  c.rules.forEach((r: JwtRule, i) => {
    const at = `rules[${i}]${r !== null && typeof r === 'object' && typeof r.origin === 'string' ? ` (RequestAuthentication ${r.origin})` : ''}`;
    if (r === null || typeof r !== 'object') throw new Error(`${at} must be an object`);
    if (typeof r.issuer !== 'string' || r.issuer === '') throw new Error(`${at}: issuer must be a non-empty string`);
    if (!Array.isArray(r.audiences) || !Array.isArray(r.fromHeaders) || !Array.isArray(r.fromParams) || !Array.isArray(r.fromCookies) || !Array.isArray(r.outputClaimToHeaders)) {
      throw new Error(`${at}: audiences, fromHeaders, fromParams, fromCookies and outputClaimToHeaders must be lists`);
    }
    if (r.jwks === null && r.jwksUri === null) throw new Error(`${at}: one of jwks and jwksUri must be set`);
    if (r.jwks === null) {
      let url: URL;
      try {
        url = new URL(r.jwksUri!);
      } catch {
        throw new Error(`${at}: jwksUri ${JSON.stringify(r.jwksUri)} is not a URL`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${at}: jwksUri ${JSON.stringify(r.jwksUri)} must be http or https`);
    }
    if (!(typeof r.timeoutMs === 'number' && r.timeoutMs > 0)) throw new Error(`${at}: timeoutMs must be a positive number`);
    r.fromHeaders.forEach((h, j) => {
      if (typeof h?.name !== 'string' || h.name === '') throw new Error(`${at}: fromHeaders[${j}].name must be a non-empty header name`);
    });
    r.outputClaimToHeaders.forEach((o, j) => {
      if (typeof o?.header !== 'string' || o.header === '' || typeof o.claim !== 'string' || o.claim === '') {
        throw new Error(`${at}: outputClaimToHeaders[${j}] must have a header and a claim`);
      }
    });
  });
  return c.rules;
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.jwt_authn`. */
export const jwtAuthnFactory = new JwtAuthnFilterFactory();
