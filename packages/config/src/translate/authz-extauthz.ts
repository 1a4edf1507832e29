/**
 * AuthorizationPolicy `action: CUSTOM` → Envoy's ext_authz, the way istiod's authz builder does
 * it (pilot/pkg/security/authz/builder/builder.go and extauthz.go). Per provider: an
 * `envoy.filters.http.rbac` whose `shadow_rules` (DENY, stat prefix `istio_ext_authz_`) are
 * the CUSTOM rules, named `istio-ext-authz-<provider>-ns[<ns>]-policy[<name>]-rule[<i>]`, so
 * that the RBAC filter records the policy a request matched in its dynamic metadata
 * (`istio_ext_authz_shadow_effective_policy_id`); then an `envoy.filters.http.ext_authz`
 * whose `filter_enabled_metadata` asks the authorizer only when that id names this provider.
 *
 * A provider that is unknown, of another kind, or badly configured turns its policies'
 * rules into enforced DENY rules (`…-deny-due-to-bad-CUSTOM-action`) with a warning: the
 * requests the authorizer should have checked are refused, never let through. So do several
 * providers on one workload (istiod needs PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS for
 * that, off by default).
 */
import type { HttpFilterConfig } from '../model/listener.ts';
import type { ExtAuthzJson } from '../envoy/gen/envoy/extensions/filters/http/ext_authz/v3/ext_authz_pb.ts';
import type { PolicyJson, RBACJson as RBACRulesJson } from '../envoy/gen/envoy/config/rbac/v3/rbac_pb.ts';
import type { RBACJson } from '../envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.ts';
import type { ListStringMatcherJson } from '../envoy/gen/envoy/type/matcher/v3/string_pb.ts';
import { httpStatusName, msToDurationJson } from '../model/envoy-values.ts';
import type { ExtAuthzGrpcProvider, ExtAuthzHttpProvider, ExtAuthzRequestBody, ExtensionProvider } from '../schema/mesh-config.ts';
import { type AuthzPolicyInput, buildPolicies, type RbacBuildOptions } from './authz-rbac.ts';

export const RBAC_FILTER = 'envoy.filters.http.rbac';
export const EXT_AUTHZ_FILTER = 'envoy.filters.http.ext_authz';

const MATCH_PREFIX = 'istio-ext-authz';
const BAD_CUSTOM_SUFFIX = '-deny-due-to-bad-CUSTOM-action';
/** istiod's authz/model: RBACExtAuthzShadowRulesStatPrefix + RBACShadowEffectivePolicyID. */
export const EXT_AUTHZ_SHADOW_PREFIX = 'istio_ext_authz_';
export const EXT_AUTHZ_METADATA_KEY = `${EXT_AUTHZ_SHADOW_PREFIX}shadow_effective_policy_id`;
/** istiod's default when a provider sets no timeout. */
const DEFAULT_TIMEOUT_MS = 600_000;

/** Where a provider's `service` and `port` lead: the hostname and its outbound cluster, or why not. */
export type ServiceLookup = (service: string, port: number) => { readonly hostname: string; readonly cluster: string } | string;

export interface ExtAuthzBuildOptions extends RbacBuildOptions {
  readonly providers: readonly ExtensionProvider[];
  readonly lookup: ServiceLookup;
}

/** A provider istiod's builder accepted (its ext_authz config), or the reasons it did not. */
type Resolved = { readonly config: ExtAuthzJson; readonly errors: null } | { readonly config: null; readonly errors: readonly string[] };

/**
 * The filters for the CUSTOM policies that apply to one proxy (all of `policies` must be
 * CUSTOM), in istiod's order: per provider, by name, the RBAC metadata producer then ext_authz.
 */
export function buildExtAuthzFilters(policies: readonly AuthzPolicyInput[], opts: ExtAuthzBuildOptions): HttpFilterConfig[] {
  if (policies.length === 0) return [];
  const enforce = new Map<string, Record<string, PolicyJson>>();
  const dryRun = new Map<string, Record<string, PolicyJson>>();
  const first = new Map<string, AuthzPolicyInput>();
  for (const policy of policies) {
    const provider = policy.provider ?? '';
    if (!first.has(provider)) {
      first.set(provider, policy);
      enforce.set(provider, {});
      dryRun.set(provider, {});
    }
    const prefix = provider === '' ? `${MATCH_PREFIX}-` : `${MATCH_PREFIX}-${provider}-`;
    buildPolicies(policy, prefix, (policy.dryRun ? dryRun : enforce).get(provider)!, opts);
  }
  const providers = [...first.keys()].sort();
  const out: HttpFilterConfig[] = [];
  const warn = (provider: string, message: string): void =>
    opts.report({ policy: first.get(provider)!, severity: 'warning', path: ['provider', 'name'], message });

  if (providers.length > 1) {
    for (const p of providers) {
      warn(p, `several CUSTOM providers select this workload (${providers.join(', ')}); as istiod without PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS, the requests their rules match are denied`);
      out.push(denyFilter(enforce.get(p)!));
    }
    return out;
  }

  const resolved = resolveProviders(opts);
  for (const p of providers) {
    const r = resolved.get(p);
    if (r === undefined || r.errors !== null) {
      const why = r === undefined ? `available providers are [${[...resolved.keys()].join(' ')}] but found "${p}"` : `found errors in provider ${p}: ${r.errors.join('; ')}`;
      warn(p, `CUSTOM action for provider ${p} cannot be used, the requests its rules match are denied: ${why}`);
      out.push(denyFilter(enforce.get(p)!));
      continue;
    }
    const rbac: RBACJson = { shadowRules: rbacRules(enforce.get(p)!), shadowRulesStatPrefix: EXT_AUTHZ_SHADOW_PREFIX };
    const shadow = dryRun.get(p)!;
    // istiod puts the dry-run CUSTOM rules in `rules` (builder.go), so they are enforced as DENY there too.
    if (Object.keys(shadow).length > 0) rbac.rules = rbacRules(shadow);
    const extAuthz: ExtAuthzJson = {
      ...r.config,
      filterEnabledMetadata: {
        filter: RBAC_FILTER,
        path: [{ key: EXT_AUTHZ_METADATA_KEY }],
        value: { stringMatch: { prefix: `${MATCH_PREFIX}-${p}` } },
      },
    };
    out.push({ name: RBAC_FILTER, config: rbac }, { name: EXT_AUTHZ_FILTER, config: extAuthz });
  }
  return out;
}

function rbacRules(policies: Record<string, PolicyJson>): RBACRulesJson {
  return { action: 'DENY', policies };
}

function denyFilter(policies: Record<string, PolicyJson>): HttpFilterConfig {
  const renamed: Record<string, PolicyJson> = {};
  for (const [name, p] of Object.entries(policies)) renamed[name + BAD_CUSTOM_SUFFIX] = p;
  const config: RBACJson = { rules: rbacRules(renamed) };
  return { name: RBAC_FILTER, config };
}

/** istiod's processExtensionProvider: the ext_authz providers by name, each built or with its errors. */
function resolveProviders(opts: ExtAuthzBuildOptions): Map<string, Resolved> {
  const out = new Map<string, Resolved>();
  opts.providers.forEach((provider, i) => {
    const errors: string[] = [];
    if (provider.name === '') errors.push(`extension provider name must not be empty, found empty at index: ${i}`);
    else if (out.has(provider.name)) errors.push(`extension provider name must be unique, found duplicate: ${provider.name}`);
    if (provider.name !== '') {
      const bad = providerNameProblem(provider.name);
      if (bad !== null) errors.push(`invalid provider name "${provider.name}": ${bad}`);
    }
    let config: ExtAuthzJson | null = null;
    if (provider.kind === 'envoyExtAuthzHttp') config = buildHttp(provider.http, opts.lookup, errors);
    else if (provider.kind === 'envoyExtAuthzGrpc') config = buildGrpc(provider.grpc, opts.lookup, errors);
    else return;
    out.set(provider.name, errors.length > 0 || config === null ? { config: null, errors } : { config, errors: null });
  });
  return out;
}

/** istiod's validateProviderName: a DNS-1123 label, as the name goes into policy names and metadata. */
function providerNameProblem(name: string): string | null {
  if (name.length > 63) return `provider name too long (max 63 characters): ${name.length}`;
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c === '-') continue;
    if (c >= 'A' && c <= 'Z') return `uppercase letters not allowed (use lowercase): character '${c}' at position ${i}`;
    return `invalid character '${c}' at position ${i} (only lowercase letters, digits, and hyphens allowed)`;
  }
  if (name.startsWith('-') || name.endsWith('-')) return 'provider name cannot start or end with hyphen';
  return null;
}

function common(p: ExtAuthzHttpProvider | ExtAuthzGrpcProvider, lookup: ServiceLookup, errors: string[]): { hostname: string; cluster: string; status: string | null } | null {
  if (p.port < 1 || p.port > 65535) errors.push(`port must be in the range [1, 65535], found: ${p.port}`);
  let target: { hostname: string; cluster: string } | null = null;
  if (p.service === '') errors.push('service must not be empty');
  else {
    const found = lookup(p.service, p.port);
    if (typeof found === 'string') errors.push(found);
    else target = found;
  }
  let status: string | null = null;
  if (p.statusOnError !== '') {
    const code = /^[+-]?\d+$/.test(p.statusOnError) ? Number(p.statusOnError) : NaN;
    if (Number.isNaN(code)) errors.push(`invalid statusOnError "${p.statusOnError}": not a number`);
    else {
      status = httpStatusName(code);
      if (status === null) errors.push(`unsupported statusOnError ${p.statusOnError}, supported values are Envoy's StatusCode codes`);
    }
  }
  return target === null ? null : { ...target, status };
}

function buildHttp(p: ExtAuthzHttpProvider, lookup: ServiceLookup, errors: string[]): ExtAuthzJson | null {
  const c = common(p, lookup, errors);
  if (p.pathPrefix !== '') {
    if (!p.pathPrefix.startsWith('/')) errors.push(`pathPrefix must begin with \`/\`, found: "${p.pathPrefix}"`);
  }
  const wildcard = (field: string, values: readonly string[]): void => {
    if (values.includes('*')) errors.push(`a single wildcard ("*") is not supported, change it to either prefix or suffix match: ${field}`);
  };
  wildcard('IncludeRequestHeadersInCheck', p.includeRequestHeadersInCheck);
  wildcard('IncludeHeadersInCheck', p.includeHeadersInCheck);
  wildcard('HeadersToDownstreamOnDeny', p.headersToDownstreamOnDeny);
  wildcard('HeadersToDownstreamOnAllow', p.headersToDownstreamOnAllow);
  wildcard('HeadersToUpstreamOnAllow', p.headersToUpstreamOnAllow);
  if (c === null || errors.length > 0) return null;

  const service: NonNullable<ExtAuthzJson['httpService']> = {
    serverUri: { uri: `http://${c.hostname}`, cluster: c.cluster, timeout: msToDurationJson(p.timeoutMs ?? DEFAULT_TIMEOUT_MS) },
  };
  if (p.pathPrefix !== '') service.pathPrefix = p.pathPrefix;
  const additional = Object.keys(p.includeAdditionalHeadersInCheck).sort();
  if (additional.length > 0) {
    service.authorizationRequest = { headersToAdd: additional.map((key) => ({ key, value: p.includeAdditionalHeadersInCheck[key]! })) };
  }
  if (p.headersToUpstreamOnAllow.length > 0 || p.headersToDownstreamOnDeny.length > 0 || p.headersToDownstreamOnAllow.length > 0) {
    const response: NonNullable<NonNullable<ExtAuthzJson['httpService']>['authorizationResponse']> = {};
    const up = headerMatchers(p.headersToUpstreamOnAllow);
    const deny = headerMatchers(p.headersToDownstreamOnDeny);
    const allow = headerMatchers(p.headersToDownstreamOnAllow);
    if (up !== null) response.allowedUpstreamHeaders = up;
    if (deny !== null) response.allowedClientHeaders = deny;
    if (allow !== null) response.allowedClientHeadersOnSuccess = allow;
    service.authorizationResponse = response;
  }
  const config: ExtAuthzJson = { transportApiVersion: 'V3', httpService: service, ...base(p, c.status) };
  const allowed = headerMatchers(p.includeRequestHeadersInCheck.length > 0 ? p.includeRequestHeadersInCheck : p.includeHeadersInCheck);
  if (allowed !== null) config.allowedHeaders = allowed;
  return config;
}

function buildGrpc(p: ExtAuthzGrpcProvider, lookup: ServiceLookup, errors: string[]): ExtAuthzJson | null {
  const c = common(p, lookup, errors);
  if (c === null || errors.length > 0) return null;
  return {
    transportApiVersion: 'V3',
    grpcService: { envoyGrpc: { clusterName: c.cluster, authority: c.hostname }, timeout: msToDurationJson(p.timeoutMs ?? DEFAULT_TIMEOUT_MS) },
    ...base(p, c.status),
  };
}

function base(p: ExtAuthzHttpProvider | ExtAuthzGrpcProvider, status: string | null): Partial<ExtAuthzJson> {
  const out: Partial<ExtAuthzJson> = {};
  if (status !== null) out.statusOnError = { code: status as never };
  if (p.failOpen) out.failureModeAllow = true;
  const body = withRequestBody(p.includeRequestBodyInCheck);
  if (body !== null) out.withRequestBody = body;
  return out;
}

function withRequestBody(b: ExtAuthzRequestBody | null): NonNullable<ExtAuthzJson['withRequestBody']> | null {
  if (b === null) return null;
  const out: NonNullable<ExtAuthzJson['withRequestBody']> = {};
  if (b.maxRequestBytes !== 0) out.maxRequestBytes = b.maxRequestBytes;
  if (b.allowPartialMessage) out.allowPartialMessage = true;
  if (b.packAsBytes) out.packAsBytes = true;
  return out;
}

/** istiod's generateHeaders: `*x` a suffix, `x*` a prefix, else exact; all ignoring case. */
function headerMatchers(headers: readonly string[]): ListStringMatcherJson | null {
  if (headers.length === 0) return null;
  return {
    patterns: headers.map((h) => {
      if (h.startsWith('*')) return { suffix: h.slice(1), ignoreCase: true };
      if (h.endsWith('*')) return { prefix: h.slice(0, -1), ignoreCase: true };
      return { exact: h, ignoreCase: true };
    }),
  };
}
