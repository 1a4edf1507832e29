import type { CorsPolicyJson } from '../envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.ts';
import type { StringMatcherJson } from '../envoy/gen/envoy/type/matcher/v3/string_pb.ts';
import type { IstioCorsPolicy, IstioStringMatch } from '../resources/istio-networking.ts';

export const CORS_FILTER = 'envoy.filters.http.cors';

/**
 * A VirtualService `corsPolicy` as istiod's TranslateCORSPolicy (route.go) writes it into the
 * route's typed_per_filter_config: `allowOrigins` (else the deprecated `allowOrigin`, as exact
 * matches), lists joined with `,`, max age in whole seconds, the filter enabled at 100%, and
 * `forward_not_matching_preflights` false only for `unmatchedPreflights: IGNORE`.
 */
export function corsConfig(c: IstioCorsPolicy, durationMs: (v: string | undefined, fallback: number) => number): CorsPolicyJson {
  const out: CorsPolicyJson = { forwardNotMatchingPreflights: c.unmatchedPreflights !== 'IGNORE' };
  if (c.allowOrigins !== undefined && c.allowOrigins !== null) out.allowOriginStringMatch = c.allowOrigins.map(originMatcher);
  else if (c.allowOrigin !== undefined && c.allowOrigin !== null) out.allowOriginStringMatch = c.allowOrigin.map((o) => ({ exact: o }));
  // HUNDRED is the enum's default: canonical JSON leaves it out.
  out.filterEnabled = { defaultValue: { numerator: 100 } };
  if (c.allowCredentials !== undefined && c.allowCredentials !== null) out.allowCredentials = c.allowCredentials;
  // proto3 JSON leaves empty strings out.
  const join = (list: readonly string[] | undefined): string => (list ?? []).join(',');
  if (join(c.allowHeaders) !== '') out.allowHeaders = join(c.allowHeaders);
  if (join(c.allowMethods) !== '') out.allowMethods = join(c.allowMethods);
  if (join(c.exposeHeaders) !== '') out.exposeHeaders = join(c.exposeHeaders);
  if (c.maxAge !== undefined) out.maxAge = String(Math.floor(durationMs(c.maxAge, 0) / 1000));
  return out;
}

/** istiod's ConvertToEnvoyMatch for an origin: exact, prefix, or safe_regex (RE2). */
function originMatcher(sm: IstioStringMatch): StringMatcherJson {
  if (sm.exact !== undefined) return { exact: sm.exact };
  if (sm.prefix !== undefined) return { prefix: sm.prefix };
  return { safeRegex: { regex: sm.regex ?? '' } };
}
