/**
 * RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn` config (JwtAuthentication),
 * as istiod builds it (pilot/pkg/security/authn/policy_applier.go, convertToEnvoyJwtConfig):
 * every jwtRule of the policies that select the proxy, sorted by issuer, becomes provider
 * `origins-<i>`; one rule on prefix `/` requires any provider or, when none of their tokens
 * is present, nothing (`allow_missing`), so a request without a token passes unauthenticated
 * and authorization decides.
 */
import type {
  JwtAuthenticationJson,
  JwtProviderJson,
  JwtRequirementJson,
} from '../envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.ts';
import type { HttpFilterConfig } from '../model/listener.ts';
import type { TranslateContext } from './context.ts';
import { policyApplies } from './security.ts';

/** Envoy's filter name (also in @remora/filters, which this package may not import). */
export const JWT_AUTHN_FILTER = 'envoy.filters.http.jwt_authn';

/** Where the verified payload goes in the request's metadata (istiod's `filters.EnvoyJwtFilterPayload`); RBAC's `request.auth.*` reads it. */
export const JWT_PAYLOAD_METADATA_KEY = 'payload';

/** Claims whose space-separated string values count as lists (istiod's `buildSpaceDelimitedClaims` defaults). */
const DEFAULT_SPACE_DELIMITED_CLAIMS = ['permission', 'scope'];

/** istiod's default JWKS fetch timeout and remote JWKS cache duration. */
const DEFAULT_JWKS_TIMEOUT_MS = 5_000;
const JWKS_CACHE_DURATION = '300s';

interface IstioJwtRule {
  issuer?: string;
  audiences?: string[];
  jwks?: string;
  jwksUri?: string;
  fromHeaders?: { name?: string; prefix?: string }[];
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string;
  outputClaimToHeaders?: { header?: string; claim?: string }[];
  forwardOriginalToken?: boolean;
  spaceDelimitedClaims?: string[];
  timeout?: string;
}

/** The JWT filter for this proxy; null when no RequestAuthentication with a usable jwtRule selects it. */
export function jwtAuthnFilter(ctx: TranslateContext): HttpFilterConfig | null {
  const rules: IstioJwtRule[] = [];
  for (const r of ctx.resourcesOf('RequestAuthentication')) {
    if (!policyApplies(ctx, r)) continue;
    ((r.spec as { jwtRules?: IstioJwtRule[] } | null)?.jwtRules ?? []).forEach((j, i) => {
      if (!j.jwks && !j.jwksUri) {
        ctx.warn(r, ['spec', 'jwtRules', i], 'neither jwks nor jwksUri is set (OpenID discovery is not supported); this rule is ignored');
        return;
      }
      rules.push(j);
    });
  }
  if (rules.length === 0) return null;
  // istiod: JwtFilter(clearRouteCache = proxy is not a sidecar): claim-based routing is a gateway feature.
  const config = jwtAuthentication(rules, ctx.node.kind !== 'sidecar', (j) => ctx.durationMs(j.timeout, DEFAULT_JWKS_TIMEOUT_MS));
  return { name: JWT_AUTHN_FILTER, config };
}

/** istiod's convertToEnvoyJwtConfig, after newPolicyApplier's sort by issuer. */
function jwtAuthentication(unsorted: readonly IstioJwtRule[], clearRouteCache: boolean, timeoutMs: (j: IstioJwtRule) => number): JwtAuthenticationJson {
  // A stable sort, as Go's for the few rules a proxy has; ties keep the policies' order.
  const rules = [...unsorted].sort((a, b) => compareStrings(a.issuer ?? '', b.issuer ?? ''));
  const providers: Record<string, JwtProviderJson> = {};
  const innerAnd: JwtRequirementJson[] = [];
  const outerOr: JwtRequirementJson[] = [];
  rules.forEach((j, i) => {
    const name = `origins-${i}`;
    providers[name] = provider(j, clearRouteCache, timeoutMs(j));
    innerAnd.push({ requiresAny: { requirements: [{ providerName: name }, { allowMissing: {} }] } });
    outerOr.push({ providerName: name });
  });
  // One provider: its token, or none. More: any provider, or every token that is there valid
  // (the outer "any" covers providers sharing a location, where the inner "all" always fails).
  const requires: JwtRequirementJson = innerAnd.length === 1 ? innerAnd[0]! : { requiresAny: { requirements: [...outerOr, { requiresAll: { requirements: innerAnd } }] } };
  return { providers, rules: [{ match: { prefix: '/' }, requires }], bypassCorsPreflight: true };
}

function provider(j: IstioJwtRule, clearRouteCache: boolean, timeoutMs: number): JwtProviderJson {
  const p: JwtProviderJson = { issuer: j.issuer ?? '' };
  if (j.audiences?.length) p.audiences = [...j.audiences];
  if (j.jwks) {
    // istiod's default (PILOT_JWT_ENABLE_REMOTE_JWKS=false) inlines the keys: the rule's own, when it has them.
    p.localJwks = { inlineString: j.jwks };
  } else {
    // A jwksUri: the proxy fetches the keys itself, as istiod's `envoy` mode configures Envoy.
    p.remoteJwks = { httpUri: { uri: j.jwksUri!, cluster: jwksCluster(j.jwksUri!), timeout: durationJson(timeoutMs) }, cacheDuration: JWKS_CACHE_DURATION };
  }
  if (j.forwardOriginalToken) p.forward = true;
  if (j.fromHeaders?.length) p.fromHeaders = j.fromHeaders.map((h) => ({ name: h.name ?? '', ...(h.prefix ? { valuePrefix: h.prefix } : {}) }));
  if (j.fromParams?.length) p.fromParams = [...j.fromParams];
  if (j.fromCookies?.length) p.fromCookies = [...j.fromCookies];
  if (j.outputPayloadToHeader) p.forwardPayloadHeader = j.outputPayloadToHeader;
  p.payloadInMetadata = JWT_PAYLOAD_METADATA_KEY;
  p.normalizePayloadInMetadata = { spaceDelimitedClaims: spaceDelimitedClaims(j.spaceDelimitedClaims) };
  if (j.outputClaimToHeaders?.length) p.claimToHeaders = j.outputClaimToHeaders.map((o) => ({ headerName: o.header ?? '', claimName: o.claim ?? '' }));
  if (clearRouteCache) p.clearRouteCache = true;
  return p;
}

/** istiod's buildSpaceDelimitedClaims: the defaults, plus the rule's own, sorted and deduplicated. */
function spaceDelimitedClaims(extra: readonly string[] | undefined): string[] {
  if (extra === undefined) return [...DEFAULT_SPACE_DELIMITED_CLAIMS];
  return [...new Set([...extra, ...DEFAULT_SPACE_DELIMITED_CLAIMS])].sort(compareStrings);
}

/**
 * The cluster istiod names for a jwksUri host it does not find in the registry
 * (`outbound|<port>||<host>`, port from the URI or its scheme). Remora fetches the URI directly,
 * so the name is informational.
 */
function jwksCluster(uri: string): string {
  const url = new URL(uri);
  const port = url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80';
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return `outbound|${port}||${host}`;
}

/** A protobuf Duration in its JSON form (`5s`, `0.250s`). */
function durationJson(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(3)}s`;
}

/** Go's string order (bytes; the same as UTF-16 code units for the ASCII names used here). */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
