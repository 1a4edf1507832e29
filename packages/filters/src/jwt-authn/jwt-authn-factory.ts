/**
 * `envoy.filters.http.jwt_authn`: compiles Envoy's JwtAuthentication (proto3 JSON, as the
 * translator builds it from RequestAuthentication or an xDS server sends it) once per
 * snapshot: providers with their keys (inline JWKS parsed here; the cache of each remote JWKS
 * URI found, or created, in the persistent state, so keys survive config reloads), token
 * locations, the requirement trees of `rules` and `requirement_map`, and the route matchers.
 * Also compiles a route's `PerRouteConfig`.
 */
import type {
  JwtAuthenticationJson,
  JwtProviderJson,
  JwtRequirementJson,
  PerRouteConfigJson,
  RequirementRuleJson,
} from '@remora/config/envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.js';
import type { RouteMatchJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import { readFileSync } from 'node:fs';
import { DETACHED_STATS, type FilterStats } from '../filter-stats.ts';
import { FilterName, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { type Clock, monotonicClock } from '../timers.ts';
import { parseJwks } from './jwt-authn-jwks.ts';
import { InlineJwks, type JwksSource, RemoteJwks } from './jwt-authn-jwks-cache.ts';
import { JwtAuthnFilterConfig, type JwtAuthnRouteConfig, type JwtAuthnStats, type RequirementRule } from './jwt-authn-filter.ts';
import { buildLocations, CLOCK_SKEW_SECONDS, headersToSanitize, JwtProvider, type ProviderLocations, type ProviderSettings } from './jwt-authn-rules.ts';
import { JwtStatus } from './jwt-authn-status.ts';
import { ALLOW_ALL, AllVerifier, AnyProviderVerifier, AnyVerifier, ProviderVerifier, type Verifier } from './jwt-authn-verifier.ts';

/** Envoy's remote_jwks cache_duration when unset (5 minutes, which istiod also sets). */
export const JWKS_CACHE_DURATION_MS = 5 * 60_000;
/** Least time between refreshes for an unknown kid, and between retries after a failed fetch. */
export const JWKS_MIN_REFRESH_INTERVAL_MS = 1_000;
/** JWKS fetch timeout when `http_uri.timeout` is unset (istiod's default). */
const JWKS_TIMEOUT_MS = 5_000;

/** Provider fields Remora does not enforce: refused, since ignoring them would let tokens through that Envoy stops. */
const UNSUPPORTED_PROVIDER_FIELDS = ['subjects', 'requireExpiration', 'maxLifetime'] as const;

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

/** A compile-time error naming the field path in the config. */
class ConfigError extends Error {}

/** Envoy's names, in the chain's connection manager namespace. */
function jwtAuthnStats(stats: FilterStats): JwtAuthnStats {
  return {
    allowed: stats.http('jwt_authn.allowed'),
    denied: stats.http('jwt_authn.denied'),
    corsPreflightBypassed: stats.http('jwt_authn.cors_preflight_bypassed'),
    jwksFetchSuccess: stats.http('jwt_authn.jwks_fetch_success'),
    jwksFetchFailed: stats.http('jwt_authn.jwks_fetch_failed'),
  };
}

function fail(at: string, message: string): never {
  throw new ConfigError(`${at}: ${message}`);
}

export class JwtAuthnFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.JwtAuthn;
  readonly #clock: Clock;

  /** `clock`: the monotonic clock of JWKS expiry and refresh intervals (`performance.now` unless a test gives its own). */
  constructor(options: { readonly clock?: Clock } = {}) {
    this.#clock = options.clock ?? monotonicClock;
  }

  compile(config: unknown, context: FilterCompileContext): JwtAuthnFilterConfig {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('config must be a JwtAuthentication object');
    const c = config as JwtAuthenticationJson;
    if (c.filterStateRules !== undefined) fail('filter_state_rules', 'not supported');
    if (c.stripFailureResponse === true) fail('strip_failure_response', 'not supported');

    const stats = jwtAuthnStats(context.stats ?? DETACHED_STATS);
    const providers: JwtProvider[] = [];
    const byName = new Map<string, JwtProvider>();
    const where: ProviderLocations[] = [];
    for (const [name, json] of Object.entries(c.providers ?? {})) {
      const at = `providers.${name}`;
      const settings = providerSettings(name, json, at);
      const [keys, keysStatus] = this.#keys(json, settings, at, context);
      if (keys instanceof RemoteJwks) keys.countIn(stats.jwksFetchSuccess, stats.jwksFetchFailed);
      const p = new JwtProvider(settings, providers.length, keys, keysStatus);
      providers.push(p);
      byName.set(name, p);
      where.push(locationsOf(json, at));
    }
    const locations = buildLocations(providers, where);
    const sanitize = headersToSanitize(providers);

    const requirement = (json: JwtRequirementJson | undefined, at: string): Verifier => compileRequirement(json, at, byName, providers);
    const requirementMap = new Map<string, Verifier>();
    for (const [name, json] of Object.entries(c.requirementMap ?? {})) requirementMap.set(name, requirement(json, `requirement_map.${name}`));
    let needsPath = false;
    const rules: RequirementRule[] = (c.rules ?? []).map((rule: RequirementRuleJson, i) => {
      const at = `rules[${i}]`;
      const match = compileMatch(rule.match, `${at}.match`);
      if (match.needsPath) needsPath = true;
      let verifier: Verifier | null = null;
      if (rule.requires !== undefined && rule.requirementName !== undefined) fail(at, 'only one of requires and requirement_name may be set');
      if (rule.requires !== undefined) verifier = requirement(rule.requires, `${at}.requires`);
      else if (rule.requirementName !== undefined) {
        verifier = requirementMap.get(rule.requirementName) ?? fail(`${at}.requirement_name`, `${JSON.stringify(rule.requirementName)} is not in requirement_map`);
      }
      return { matches: match.matches, verifier };
    });
    return new JwtAuthnFilterConfig(this.name, {
      providers,
      locations,
      sanitize,
      rules,
      requirementMap,
      bypassCorsPreflight: c.bypassCorsPreflight === true,
      needsPath,
    }, stats);
  }

  compileRouteConfig(config: unknown): JwtAuthnRouteConfig {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('config must be a PerRouteConfig object');
    const c = config as PerRouteConfigJson;
    const disabled = c.disabled === true;
    const name = c.requirementName ?? '';
    if (disabled === (name !== '')) throw new Error('exactly one of disabled: true and requirement_name must be set');
    return Object.freeze({ disabled, requirementName: name });
  }

  /** A provider's keys: parsed inline, or the remote JWKS cache of its URI (shared across snapshots). */
  #keys(json: JwtProviderJson, settings: ProviderSettings, at: string, context: FilterCompileContext): [JwksSource, JwtStatus | null] {
    if (json.remoteJwks !== undefined && json.localJwks !== undefined) fail(at, 'only one of remote_jwks and local_jwks may be set');
    if (json.localJwks !== undefined) {
      const text = dataSource(json.localJwks, `${at}.local_jwks`);
      const keys = parseJwks(text);
      if (typeof keys === 'string') {
        context.warn(`jwt_authn provider ${settings.name} (issuer ${settings.issuer}): local_jwks: ${keys}; its tokens will fail verification`);
        return [new NoKeys(), JwtStatus.JwksNoValidKeys];
      }
      return [new InlineJwks(keys), null];
    }
    const remote = json.remoteJwks ?? fail(at, 'one of remote_jwks and local_jwks must be set');
    const uri = remote.httpUri?.uri ?? '';
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      fail(`${at}.remote_jwks.http_uri.uri`, `${JSON.stringify(uri)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(`${at}.remote_jwks.http_uri.uri`, `${JSON.stringify(uri)} must be http or https`);
    const timeoutMs = durationMs(remote.httpUri?.timeout, JWKS_TIMEOUT_MS, `${at}.remote_jwks.http_uri.timeout`);
    if (timeoutMs <= 0) fail(`${at}.remote_jwks.http_uri.timeout`, 'must be positive');
    const cacheDurationMs = durationMs(remote.cacheDuration, JWKS_CACHE_DURATION_MS, `${at}.remote_jwks.cache_duration`);
    // Remora fetches the URI itself (not through `http_uri.cluster`). One cache per URI and cache
    // duration outlives snapshots, so a reload keeps fetched keys.
    const cache = context.persistent(`${this.name}/jwks/${uri}#${cacheDurationMs}`, () => {
      return new RemoteJwks(uri, { cacheDurationMs, minRefreshIntervalMs: JWKS_MIN_REFRESH_INTERVAL_MS, timeoutMs, warn: (m) => context.warn(m), clock: this.#clock });
    });
    cache.timeoutMs = timeoutMs;
    return [cache, null];
  }
}

function providerSettings(name: string, json: JwtProviderJson, at: string): ProviderSettings {
  if (json === null || typeof json !== 'object') fail(at, 'must be a JwtProvider object');
  for (const f of UNSUPPORTED_PROVIDER_FIELDS) if (json[f] !== undefined && json[f] !== false) fail(`${at}.${snake(f)}`, 'not supported');
  const issuer = json.issuer ?? '';
  // Envoy then skips the issuer check; every provider istiod writes names one, and Remora requires it.
  if (typeof issuer !== 'string' || issuer === '') fail(`${at}.issuer`, 'issuer must be a non-empty string');
  const audiences = stringList(json.audiences, `${at}.audiences`);
  const claimHeaders = (json.claimToHeaders ?? []).map((o, j) => {
    if (typeof o?.headerName !== 'string' || o.headerName === '' || typeof o.claimName !== 'string' || o.claimName === '') {
      fail(`${at}.claim_to_headers[${j}]`, 'must have a header_name and a claim_name');
    }
    return { header: o.headerName.toLowerCase(), claim: o.claimName };
  });
  return {
    name,
    issuer,
    audiences,
    payloadHeader: json.forwardPayloadHeader ? json.forwardPayloadHeader.toLowerCase() : null,
    padPayloadHeader: json.padForwardPayloadHeader === true,
    claimHeaders,
    forward: json.forward === true,
    payloadInMetadata: json.payloadInMetadata ?? '',
    spaceDelimitedClaims: Object.freeze(stringList(json.normalizePayloadInMetadata?.spaceDelimitedClaims, `${at}.normalize_payload_in_metadata.space_delimited_claims`)),
    clockSkewSeconds: json.clockSkewSeconds ?? CLOCK_SKEW_SECONDS,
    clearRouteCache: json.clearRouteCache === true,
  };
}

/** A provider's token locations, with Envoy's defaults when it names none. */
function locationsOf(json: JwtProviderJson, at: string): ProviderLocations {
  const headers = (json.fromHeaders ?? []).map((h, j) => {
    if (typeof h?.name !== 'string' || h.name === '') fail(`${at}.from_headers[${j}].name`, 'must be a non-empty header name');
    return { name: h.name.toLowerCase(), prefix: h.valuePrefix ?? '' };
  });
  const params = stringList(json.fromParams, `${at}.from_params`);
  const cookies = stringList(json.fromCookies, `${at}.from_cookies`);
  if (headers.length + params.length + cookies.length === 0) {
    return { headers: [{ name: 'authorization', prefix: 'Bearer ' }], params: ['access_token'], cookies: [] };
  }
  return { headers, params, cookies };
}

/** A JwtRequirement as a verifier tree (Envoy's verifier.cc `innerCreate`). */
function compileRequirement(json: JwtRequirementJson | undefined, at: string, byName: ReadonlyMap<string, JwtProvider>, providers: JwtProvider[]): Verifier {
  if (json === undefined || json === null) return ALLOW_ALL;
  const set = Object.keys(json).filter((k) => (json as Record<string, unknown>)[k] !== undefined);
  if (set.length > 1) fail(at, `only one requirement type may be set (got ${set.join(', ')})`);
  const provider = (name: string | undefined, path: string) => byName.get(name ?? '') ?? fail(path, `required provider ${JSON.stringify(name ?? '')} is not configured`);
  if (json.providerName !== undefined) return new ProviderVerifier(provider(json.providerName, `${at}.provider_name`));
  if (json.providerAndAudiences !== undefined) {
    const pa = json.providerAndAudiences;
    const base = provider(pa.providerName, `${at}.provider_and_audiences.provider_name`);
    const audiences = stringList(pa.audiences, `${at}.provider_and_audiences.audiences`);
    if (audiences.length === 0) return new ProviderVerifier(base);
    const variant = base.withAudiences(audiences, providers.length);
    providers.push(variant);
    return new ProviderVerifier(variant);
  }
  if (json.requiresAny !== undefined) {
    const list = json.requiresAny.requirements ?? [];
    if (list.length === 0) fail(`${at}.requires_any.requirements`, 'must not be empty');
    let allowMissing = false;
    let allowFailed = false;
    const children: Verifier[] = [];
    list.forEach((r, i) => {
      if (r?.allowMissingOrFailed !== undefined) allowFailed = true;
      else if (r?.allowMissing !== undefined) allowMissing = true;
      else children.push(compileRequirement(r, `${at}.requires_any.requirements[${i}]`, byName, providers));
    });
    // Only bypass members: the bypass on its own, over every provider.
    if (children.length === 0) return new AnyProviderVerifier(allowFailed);
    return new AnyVerifier(children, allowMissing, allowFailed);
  }
  if (json.requiresAll !== undefined) {
    const list = json.requiresAll.requirements ?? [];
    if (list.length === 0) fail(`${at}.requires_all.requirements`, 'must not be empty');
    return new AllVerifier(list.map((r, i) => compileRequirement(r, `${at}.requires_all.requirements[${i}]`, byName, providers)));
  }
  if (json.allowMissingOrFailed !== undefined) return new AnyProviderVerifier(true);
  if (json.allowMissing !== undefined) return new AnyProviderVerifier(false);
  if (set.length === 1) fail(`${at}.${snake(set[0]!)}`, 'unknown requirement type');
  return ALLOW_ALL;
}

/** A rule's RouteMatch on the path (query string excluded): prefix, path or path_separated_prefix, optionally case-insensitive. */
function compileMatch(json: RouteMatchJson | undefined, at: string): { readonly matches: (path: string) => boolean; readonly needsPath: boolean } {
  if (json === undefined || json === null) fail(at, 'must be set');
  for (const k of ['safeRegex', 'connectMatcher', 'pathMatchPolicy', 'runtimeFraction', 'grpc', 'tlsContext'] as const) {
    if (json[k] !== undefined) fail(`${at}.${snake(k)}`, 'not supported in jwt_authn rules');
  }
  for (const k of ['headers', 'queryParameters', 'dynamicMetadata', 'filterState'] as const) {
    const v = (json as Record<string, unknown>)[k];
    if (Array.isArray(v) && v.length > 0) fail(`${at}.${snake(k)}`, 'not supported in jwt_authn rules');
  }
  const caseSensitive = json.caseSensitive !== false;
  const fold = (s: string) => (caseSensitive ? s : s.toLowerCase());
  if (json.prefix !== undefined) {
    const prefix = fold(json.prefix);
    // istiod's single rule: prefix `/` takes every request.
    if (prefix === '' || prefix === '/') return { matches: () => true, needsPath: false };
    return { matches: (path) => fold(path).startsWith(prefix), needsPath: true };
  }
  if (json.path !== undefined) {
    const exact = fold(json.path);
    return { matches: (path) => fold(path) === exact, needsPath: true };
  }
  if (json.pathSeparatedPrefix !== undefined) {
    const prefix = fold(json.pathSeparatedPrefix);
    return {
      matches: (path) => {
        const p = fold(path);
        return p.startsWith(prefix) && (p.length === prefix.length || p.charCodeAt(prefix.length) === 47 /* / */);
      },
      needsPath: true,
    };
  }
  return fail(at, 'one of prefix, path and path_separated_prefix must be set');
}

/** An Envoy DataSource's text: inline string or bytes, or a file read now. */
function dataSource(json: { inlineString?: string; inlineBytes?: string; filename?: string; environmentVariable?: string }, at: string): string {
  if (json.inlineString !== undefined) return json.inlineString;
  if (json.inlineBytes !== undefined) return Buffer.from(json.inlineBytes, 'base64').toString('utf8');
  if (json.filename !== undefined) {
    try {
      return readFileSync(json.filename, 'utf8');
    } catch (err) {
      fail(`${at}.filename`, `cannot read ${json.filename}: ${(err as Error).message}`);
    }
  }
  if (json.environmentVariable !== undefined) {
    return process.env[json.environmentVariable] ?? fail(`${at}.environment_variable`, `${json.environmentVariable} is not set`);
  }
  return fail(at, 'one of inline_string, inline_bytes, filename and environment_variable must be set');
}

/** A protobuf Duration's JSON form (`5s`, `0.250s`) in milliseconds. */
function durationMs(value: string | undefined, fallback: number, at: string): number {
  if (value === undefined) return fallback;
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(value);
  if (m === null) fail(at, `${JSON.stringify(value)} is not a duration`);
  const ms = Number(m[2]) * 1000 + Number((m[3] ?? '').padEnd(3, '0').slice(0, 3));
  return m[1] === '-' ? -ms : ms;
}

function stringList(v: unknown, at: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) fail(at, 'must be a list of strings');
  return v as string[];
}

/** A JSON name as Envoy's field name, for messages (`requireExpiration` → `require_expiration`). */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.jwt_authn`. */
export const jwtAuthnFactory = new JwtAuthnFilterFactory();
