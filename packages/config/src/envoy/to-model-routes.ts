/**
 * Envoy's RouteConfiguration (proto3 JSON, canonical) read into the runtime's route model:
 * what our exporter writes (`from-model.ts`), read back without loss, and what istiod sends,
 * with Envoy's defaults for what it leaves unset.
 *
 * A field that changes what a request gets and that the model cannot express is an error
 * (the resource is not imported); a field that only tunes something Remora does not have is
 * a warning. Fields nobody reads are reported as errors too: silence would hide a behaviour.
 */
import type { HashKey } from '../model/cluster.ts';
import type {
  ClaimMatch,
  HeaderMatch,
  HeaderMutation,
  Mirror,
  PathMatch,
  QueryParamMatch,
  RetryPolicy,
  Route,
  RouteAction,
  RouteConfiguration,
  RouteMatch,
  StringMatch,
  VirtualHost,
  WeightedCluster,
} from '../model/route.ts';
import { timerMs } from '../model/envoy-values.ts';
import { foldHeaderMutations } from '../model/header-mutation.ts';
import { PER_ROUTE_FILTER_TYPES, REMORA_TYPE_PREFIX, TYPED_STRUCT_TYPES } from './filter-types.ts';
import { joinPath, ResourceReport, type ImportContext } from './import-context.ts';
import type { HeaderValueOptionJson } from './gen/envoy/config/core/v3/base_pb.ts';
import type { RouteConfigurationJson } from './gen/envoy/config/route/v3/route_pb.ts';
import type {
  HeaderMatcherJson,
  RateLimitJson,
  RedirectActionJson,
  RetryPolicyJson,
  RouteActionJson,
  RouteJson,
  RouteMatchJson,
  VirtualHostJson,
} from './gen/envoy/config/route/v3/route_components_pb.ts';
import type { StringMatcherJson } from './gen/envoy/type/matcher/v3/string_pb.ts';

const TYPE = 'RouteConfiguration';
const T = 'type.googleapis.com/';
const FILTER_CONFIG = `${T}envoy.config.route.v3.FilterConfig`;
const PREVIOUS_HOSTS = 'envoy.retry_host_predicates.previous_hosts';
const PREVIOUS_PRIORITIES = 'envoy.retry_priorities.previous_priorities';
/** Envoy's route timeout when `timeout` is unset. */
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
/** Where istiod's VirtualService metadata points: `/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`. */
const ISTIO_VS_CONFIG = /^\/apis\/networking\.istio\.io\/[^/]+\/namespaces\/([^/]+)\/virtual-service\/([^/]+)$/;

const REDIRECT_STATUS: Readonly<Record<string, number>> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};

const DENOMINATOR: Readonly<Record<string, number>> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 };

type Obj = Record<string, unknown>;

/** What the reader of one resource carries: where to report, and under which name. */
class Reader extends ResourceReport {
  constructor(ctx: ImportContext, name: string) {
    super(ctx, TYPE, name);
  }

  /**
   * Reports every field of `obj` that the caller does not read: an error, unless `warnings`
   * says it only tunes something Remora does not have (then a warning with that reason) or
   * `ignored` lists it (fields with no effect on what a request gets).
   */
  fields(obj: object, at: string, read: readonly string[], warnings: Readonly<Record<string, string>> = {}, ignored: readonly string[] = []): void {
    for (const key of Object.keys(obj)) {
      if (read.includes(key) || ignored.includes(key)) continue;
      const reason = warnings[key];
      if (reason !== undefined) this.warn(join(at, key), reason);
      else this.error(join(at, key), 'not supported by Remora');
    }
  }
}

const join = joinPath;

/** Seconds of a canonical proto3 JSON duration (`"1.5s"`) as milliseconds. */
export function durationMs(d: string): number {
  return Math.round(Number(d.slice(0, -1)) * 1000);
}

/**
 * The model of one RouteConfiguration; null when it has an error (reported on `ctx`). `rc`
 * must be canonical proto3 JSON (what `envoyToJson` prints).
 */
export function routeConfigFromEnvoy(rc: RouteConfigurationJson, ctx: ImportContext): RouteConfiguration | null {
  const name = rc.name ?? '';
  const r = new Reader(ctx, name);
  r.fields(
    rc,
    '',
    [
      'name',
      'virtualHosts',
      'ignorePortInHostMatching',
      'requestHeadersToAdd',
      'requestHeadersToRemove',
      'responseHeadersToAdd',
      'responseHeadersToRemove',
      'mostSpecificHeaderMutationsWins',
      'typedPerFilterConfig',
      'validateClusters',
    ],
    {},
    // istiod sets the direct response size limit; Remora's direct responses are inline bodies of the config.
    ['metadata', 'maxDirectResponseBodySizeBytes'],
  );
  // An unknown cluster is answered 503 NC at request time rather than rejecting the table.
  if (rc.validateClusters === true) r.warn('validateClusters', 'Remora does not reject a table for an unknown cluster; routes to it answer 503 NC');
  const outer: Levels = {
    headers: [headersAt(r, rc, '')],
    filters: [filterConfigs(r, rc.typedPerFilterConfig, 'typedPerFilterConfig')],
    specificWins: rc.mostSpecificHeaderMutationsWins === true,
  };
  const virtualHosts = (rc.virtualHosts ?? []).map((vh, i) => virtualHost(r, vh, `virtualHosts[${i}]`, outer));
  if (ctx.hasErrors(TYPE, name)) return null;
  return { name, virtualHosts, ignorePortInHostMatching: rc.ignorePortInHostMatching === true };
}

/** Header edits and per-filter configs of the levels around a route, outermost first. */
interface Levels {
  readonly headers: readonly LevelHeaders[];
  readonly filters: readonly Readonly<Record<string, unknown>>[];
  readonly specificWins: boolean;
}

interface LevelHeaders {
  readonly request: HeaderMutation | null;
  readonly response: HeaderMutation | null;
}

function virtualHost(r: Reader, vh: VirtualHostJson, at: string, outer: Levels): VirtualHost {
  r.fields(
    vh,
    at,
    [
      'name',
      'domains',
      'routes',
      'requireTls',
      'requestHeadersToAdd',
      'requestHeadersToRemove',
      'responseHeadersToAdd',
      'responseHeadersToRemove',
      'typedPerFilterConfig',
      'retryPolicy',
      'includeRequestAttemptCount',
      'rateLimits',
    ],
    {
      virtualClusters: 'Remora keeps no virtual cluster statistics',
      includeAttemptCountInResponse: 'Remora does not send x-envoy-attempt-count downstream',
      perRequestBufferLimitBytes: 'Remora does not buffer request bodies for retries',
      requestBodyBufferLimit: 'Remora does not buffer request bodies for retries',
    },
    ['metadata'],
  );
  let requireTls = false;
  if (vh.requireTls === 'ALL') requireTls = true;
  else if (vh.requireTls === 'EXTERNAL_ONLY') r.error(join(at, 'requireTls'), 'EXTERNAL_ONLY is not supported: Remora does not tell internal from external requests (use ALL)');
  // Envoy sends x-envoy-attempt-count upstream only when asked; Remora always does (istiod always asks).
  if (vh.includeRequestAttemptCount === false) r.warn(join(at, 'includeRequestAttemptCount'), 'Remora always sends x-envoy-attempt-count upstream');
  const levels: Levels = {
    headers: [...outer.headers, headersAt(r, vh, at)],
    filters: [...outer.filters, filterConfigs(r, vh.typedPerFilterConfig, join(at, 'typedPerFilterConfig'))],
    specificWins: outer.specificWins,
  };
  const vhRetry = vh.retryPolicy === undefined ? undefined : retryPolicy(r, vh.retryPolicy, join(at, 'retryPolicy'));
  const routes: Route[] = [];
  const origins = new Origins();
  (vh.routes ?? []).forEach((route, i) => {
    const out = routeFromEnvoy(r, route, join(at, `routes[${i}]`), levels, vhRetry, origins);
    if (out !== null) routes.push(out);
  });
  const rateLimits = vh.rateLimits !== undefined && vh.rateLimits.length > 0 ? { rateLimits: vh.rateLimits } : {};
  return { name: vh.name ?? '', domains: (vh.domains ?? []).map((d) => d.toLowerCase()), routes, requireTls, ...rateLimits };
}

/**
 * Names each route's runtime state (see `Route.origin`): our exporter's `remora.origin`
 * when present; else, for istiod's routes, the VirtualService of `istio.config` and the
 * route's Envoy name (or, unnamed, its place among that VirtualService's unnamed routes in
 * this virtual host), so that it survives routes added or removed elsewhere. Unique within
 * the virtual host.
 */
class Origins {
  readonly #seen = new Map<string, number>();
  readonly #unnamed = new Map<string, number>();

  next(route: RouteJson, remora: Obj | null): string {
    const own = remora?.origin;
    if (typeof own === 'string') return own;
    const config = (route.metadata?.filterMetadata?.istio as Obj | undefined)?.config;
    const m = typeof config === 'string' ? ISTIO_VS_CONFIG.exec(config) : null;
    if (m === null) return '';
    const vs = `${m[1]!}/${m[2]!}`;
    let base: string;
    if (route.name !== undefined && route.name !== '') base = `${vs}#${route.name}`;
    else {
      const k = this.#unnamed.get(vs) ?? 0;
      this.#unnamed.set(vs, k + 1);
      base = `${vs}#${k}`;
    }
    const n = this.#seen.get(base) ?? 0;
    this.#seen.set(base, n + 1);
    return n === 0 ? base : `${base}~${n}`;
  }
}

function routeFromEnvoy(r: Reader, route: RouteJson, at: string, levels: Levels, vhRetry: RetryPolicy | null | undefined, origins: Origins): Route | null {
  r.fields(
    route,
    at,
    [
      'name',
      'match',
      'route',
      'redirect',
      'directResponse',
      'requestHeadersToAdd',
      'requestHeadersToRemove',
      'responseHeadersToAdd',
      'responseHeadersToRemove',
      'typedPerFilterConfig',
      'metadata',
    ],
    {
      tracing: 'Remora does not sample traces per route',
      statPrefix: 'Remora keeps no per-route statistics',
      perRequestBufferLimitBytes: 'Remora does not buffer request bodies for retries',
      requestBodyBufferLimit: 'Remora does not buffer request bodies for retries',
    },
    // The span's operation name (istiod's `<host>:<port>/<path>*`): tracing names spans itself.
    ['decorator'],
  );
  const remora = (route.metadata?.filterMetadata?.remora as Obj | undefined) ?? null;
  const match = routeMatch(r, route.match ?? {}, join(at, 'match'), route, remora);
  let action: RouteAction | null = null;
  let rateLimits: RateLimitJson[] | undefined;
  let includeVh = false;
  if (route.route !== undefined) {
    action = forwardAction(r, route.route, join(at, 'route'), vhRetry);
    if (route.route.rateLimits !== undefined && route.route.rateLimits.length > 0) rateLimits = route.route.rateLimits;
    if (route.route.includeVhRateLimits === true) includeVh = true;
  } else if (route.redirect !== undefined) action = redirectAction(r, route.redirect, join(at, 'redirect'), remora);
  else if (route.directResponse !== undefined) {
    const d = route.directResponse;
    r.fields(d, join(at, 'directResponse'), ['status', 'body']);
    let body: string | null = null;
    if (d.body !== undefined) {
      r.fields(d.body, join(at, 'directResponse.body'), ['inlineString', 'inlineBytes']);
      if (d.body.inlineString !== undefined) body = d.body.inlineString;
      else if (d.body.inlineBytes !== undefined) body = Buffer.from(d.body.inlineBytes, 'base64').toString('latin1');
    }
    action = { kind: 'direct-response', status: d.status ?? 0, body };
  } else r.error(at, 'a route needs one of route, redirect or directResponse');
  // Rate limits of a route that does not forward: only our exporter writes them, beside the route.
  if (rateLimits === undefined && Array.isArray(remora?.rateLimits)) rateLimits = remora.rateLimits as RateLimitJson[];
  const own = headersAt(r, route, at);
  // Envoy applies the route's edits, then the host's, then the table's (the outer level wins);
  // with most_specific_header_mutations_wins, the other way round.
  const headers = foldHeaders(levels.specificWins ? [...levels.headers, own] : [own, ...[...levels.headers].reverse()]);
  const filters: Record<string, unknown> = {};
  for (const level of levels.filters) Object.assign(filters, level);
  Object.assign(filters, filterConfigs(r, route.typedPerFilterConfig, join(at, 'typedPerFilterConfig')));
  const origin = origins.next(route, remora);
  if (match === null || action === null) return null;
  return {
    name: route.name ?? '',
    match,
    action,
    requestHeaders: headers.request,
    responseHeaders: headers.response,
    filterConfigs: filters,
    ...(rateLimits !== undefined ? { rateLimits } : {}),
    ...(includeVh ? { includeVhRateLimits: true } : {}),
    ...userMetadata(route),
    origin,
  };
}

/** The route's filter metadata beyond what the model says itself (`istio`'s config reference, `remora`). */
function userMetadata(route: RouteJson): { metadata?: Record<string, unknown> } {
  const fm = route.metadata?.filterMetadata;
  if (fm === undefined) return {};
  const out: Record<string, unknown> = {};
  for (const [ns, v] of Object.entries(fm)) if (ns !== 'istio' && ns !== 'remora') out[ns] = v;
  return Object.keys(out).length === 0 ? {} : { metadata: out };
}

// ---- match ----

function routeMatch(r: Reader, m: RouteMatchJson, at: string, route: RouteJson, remora: Obj | null): RouteMatch | null {
  r.fields(m, at, ['prefix', 'path', 'safeRegex', 'pathSeparatedPrefix', 'connectMatcher', 'caseSensitive', 'headers', 'queryParameters', 'dynamicMetadata', 'runtimeFraction']);
  const caseSensitive = m.caseSensitive !== false;
  let path: PathMatch['match'] | null = null;
  let ignoreCase = !caseSensitive;
  if (m.prefix !== undefined) {
    // A prefix of `/` (or none) holds for every path; the model says so (`any`, no path check
    // at all) unless a prefix rewrite needs the matched prefix. Our exporter says which it meant.
    const any = remora?.pathMatch === 'any' || (remora?.pathMatch !== 'prefix' && (m.prefix === '' || m.prefix === '/') && route.route?.prefixRewrite === undefined);
    path = any ? { kind: 'any' } : { kind: 'prefix', value: m.prefix };
  } else if (m.path !== undefined) path = { kind: 'exact', value: m.path };
  else if (m.safeRegex !== undefined) {
    const regex = regexOf(r, m.safeRegex, join(at, 'safeRegex'));
    if (regex !== null) {
      // Envoy's case_sensitive has no effect on a safe_regex: a `(?i)` in front says it.
      ignoreCase = regex.ignoreCase;
      path = asSuffix(regex.value) ?? { kind: 'regex', value: regex.value };
    }
  } else if (m.pathSeparatedPrefix !== undefined) {
    // The prefix is the whole path or followed by `/`; the query never counts. A regex on the
    // path without its query says exactly that; a prefix rewrite would need the prefix itself.
    if (route.route?.prefixRewrite !== undefined) r.error(join(at, 'pathSeparatedPrefix'), 'pathSeparatedPrefix with a prefixRewrite is not supported');
    path = { kind: 'regex', value: `${escapeRegex(m.pathSeparatedPrefix)}(/.*)?` };
  } else if (m.connectMatcher !== undefined) {
    r.fields(m.connectMatcher, join(at, 'connectMatcher'), []);
    path = { kind: 'connect' };
  } else r.error(at, 'a route match needs one of prefix, path, safeRegex, pathSeparatedPrefix or connectMatcher');
  if (m.runtimeFraction !== undefined) {
    const p = m.runtimeFraction.defaultValue;
    const percent = fractionPercent(p?.numerator, p?.denominator);
    // Always true at 100%: nothing to do. A share of requests matching is not in the model.
    if (percent < 100) r.error(join(at, 'runtimeFraction'), 'matching a fraction of requests is not supported');
  }
  const headers: HeaderMatch[] = [];
  (m.headers ?? []).forEach((h, i) => {
    const out = headerMatcher(r, h, join(at, `headers[${i}]`));
    if (out !== null) headers.push(out);
  });
  const queryParams: QueryParamMatch[] = [];
  (m.queryParameters ?? []).forEach((q, i) => {
    const qat = join(at, `queryParameters[${i}]`);
    r.fields(q, qat, ['name', 'stringMatch', 'presentMatch']);
    let match: QueryParamMatch['match'] | null = null;
    if (q.presentMatch === true) match = { kind: 'present' };
    else if (q.stringMatch !== undefined) match = stringMatcher(r, q.stringMatch, join(qat, 'stringMatch'));
    else r.error(qat, 'a query parameter matcher needs stringMatch or presentMatch');
    if (match !== null) queryParams.push({ name: q.name ?? '', match });
  });
  const claims: ClaimMatch[] = [];
  (m.dynamicMetadata ?? []).forEach((d, i) => {
    const c = claimMatch(r, d as Obj, join(at, `dynamicMetadata[${i}]`));
    if (c !== null) claims.push(c);
  });
  if (path === null) return null;
  return { path: { match: path, ignoreCase }, headers, queryParams, ...(claims.length > 0 ? { claims } : {}) };
}

function fractionPercent(numerator: number | undefined, denominator: string | undefined): number {
  return ((numerator ?? 0) * 100) / (DENOMINATOR[denominator ?? 'HUNDRED'] ?? 100);
}

/** `.*` followed by a literal: our exporter's form of a suffix. */
function asSuffix(regex: string): StringMatch | null {
  if (!regex.startsWith('.*')) return null;
  const rest = regex.slice(2);
  const literal = rest.replace(/\\(.)/g, '$1');
  return rest !== '' && escapeRegex(literal) === rest ? { kind: 'suffix', value: literal } : null;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function regexOf(r: Reader, m: { regex?: string; googleRe2?: unknown }, at: string): { value: string; ignoreCase: boolean } | null {
  r.fields(m, at, ['regex'], { googleRe2: 'RE2 program size limits are not configurable' });
  const regex = m.regex ?? '';
  return regex.startsWith('(?i)') ? { value: regex.slice(4), ignoreCase: true } : { value: regex, ignoreCase: false };
}

function stringMatcher(r: Reader, m: StringMatcherJson, at: string): StringMatch | null {
  r.fields(m, at, ['exact', 'prefix', 'suffix', 'contains', 'safeRegex', 'ignoreCase']);
  if (m.ignoreCase === true && m.safeRegex === undefined) {
    r.error(join(at, 'ignoreCase'), 'case-insensitive header, query parameter and claim matches are not supported');
    return null;
  }
  if (m.exact !== undefined) return { kind: 'exact', value: m.exact };
  if (m.prefix !== undefined) return { kind: 'prefix', value: m.prefix };
  if (m.suffix !== undefined) return { kind: 'suffix', value: m.suffix };
  if (m.contains !== undefined) return { kind: 'contains', value: m.contains };
  if (m.safeRegex !== undefined) {
    const re = regexOf(r, m.safeRegex, join(at, 'safeRegex'));
    if (re === null) return null;
    return { kind: 'regex', value: re.ignoreCase ? `(?i)${re.value}` : re.value };
  }
  r.error(at, 'a string matcher needs one of exact, prefix, suffix, contains or safeRegex');
  return null;
}

function headerMatcher(r: Reader, h: HeaderMatcherJson, at: string): HeaderMatch | null {
  r.fields(h, at, [
    'name',
    'stringMatch',
    'presentMatch',
    'invertMatch',
    'treatMissingHeaderAsEmpty',
    'exactMatch',
    'safeRegexMatch',
    'prefixMatch',
    'suffixMatch',
    'containsMatch',
  ]);
  const name = (h.name ?? '').toLowerCase();
  let match: HeaderMatch['match'] | null = null;
  if (h.stringMatch !== undefined) match = stringMatcher(r, h.stringMatch, join(at, 'stringMatch'));
  else if (h.exactMatch !== undefined) match = { kind: 'exact', value: h.exactMatch };
  else if (h.prefixMatch !== undefined) match = { kind: 'prefix', value: h.prefixMatch };
  else if (h.suffixMatch !== undefined) match = { kind: 'suffix', value: h.suffixMatch };
  else if (h.containsMatch !== undefined) match = { kind: 'contains', value: h.containsMatch };
  else if (h.safeRegexMatch !== undefined) {
    const re = regexOf(r, h.safeRegexMatch, join(at, 'safeRegexMatch'));
    if (re !== null) match = { kind: 'regex', value: re.ignoreCase ? `(?i)${re.value}` : re.value };
  } else if (h.presentMatch !== undefined) {
    // `present_match: false` holds when the header is absent: the inverse of present.
    return { name, match: { kind: 'present' }, invert: (h.presentMatch === false) !== (h.invertMatch === true) };
  }
  // Envoy with no match specifier: the header is present.
  else match = { kind: 'present' };
  if (match === null) return null;
  // istiod sets it on `withoutHeaders`: an absent header is matched as the empty value.
  const missingAsEmpty = h.treatMissingHeaderAsEmpty === true && match.kind !== 'present';
  return { name, match, invert: h.invertMatch === true, ...(missingAsEmpty ? { missingAsEmpty: true } : {}) };
}

/**
 * A condition on a claim of the verified JWT, in istiod's forms: the `istio_authn` filter's
 * `request.auth.claims` (older istiod) or `envoy.filters.http.jwt_authn`'s `payload`, with
 * a list matcher (one element matches), istiod's "list or string" or-matcher, or present.
 */
function claimMatch(r: Reader, d: Obj, at: string): ClaimMatch | null {
  r.fields(d, at, ['filter', 'path', 'value', 'invert']);
  const keys = Array.isArray(d.path) ? (d.path as Obj[]).map((p) => (typeof p.key === 'string' ? p.key : null)) : [];
  const root = d.filter === 'istio_authn' ? 'request.auth.claims' : d.filter === 'envoy.filters.http.jwt_authn' ? 'payload' : null;
  if (root === null || keys[0] !== root || keys.length < 2 || keys.includes(null)) {
    r.error(at, 'only conditions on JWT claims (istio_authn request.auth.claims, envoy.filters.http.jwt_authn payload) are supported');
    return null;
  }
  const path = keys.slice(1) as string[];
  const value = (d.value ?? {}) as Obj;
  let match: ClaimMatch['match'] | null = null;
  const oneOf = (v: Obj | undefined): StringMatcherJson | undefined => {
    const list = v?.listMatch as Obj | undefined;
    const elem = list?.oneOf as Obj | undefined;
    return elem !== undefined && Object.keys(list!).length === 1 && Object.keys(elem).length === 1 ? (elem.stringMatch as StringMatcherJson | undefined) : undefined;
  };
  if (value.presentMatch === true && Object.keys(value).length === 1) match = { kind: 'present' };
  else if (oneOf(value) !== undefined && Object.keys(value).length === 1) match = stringMatcher(r, oneOf(value)!, join(at, 'value.listMatch.oneOf.stringMatch'));
  else {
    const or = (value.orMatch as Obj | undefined)?.valueMatchers;
    if (Array.isArray(or) && or.length === 2 && Object.keys(value).length === 1) {
      const [a, b] = or as Obj[];
      const inList = oneOf(a);
      if (inList !== undefined && JSON.stringify(b) === JSON.stringify({ stringMatch: inList })) match = stringMatcher(r, inList, join(at, 'value.orMatch.valueMatchers[1].stringMatch'));
    }
    if (match === null) {
      r.error(join(at, 'value'), 'a claim condition must be presentMatch, a listMatch oneOf a stringMatch, or istiod\'s orMatch of both');
      return null;
    }
  }
  if (match === null) return null;
  return { path, match, invert: d.invert === true };
}

// ---- actions ----

function forwardAction(r: Reader, a: RouteActionJson, at: string, vhRetry: RetryPolicy | null | undefined): RouteAction | null {
  r.fields(
    a,
    at,
    [
      'cluster',
      'weightedClusters',
      'timeout',
      'idleTimeout',
      'retryPolicy',
      'prefixRewrite',
      'regexRewrite',
      'hostRewriteLiteral',
      'autoHostRewrite',
      'requestMirrorPolicies',
      'hashPolicy',
      'rateLimits',
      'includeVhRateLimits',
      'maxGrpcTimeout',
      'maxStreamDuration',
      'upgradeConfigs',
      'clusterNotFoundResponseCode',
    ],
    {
      appendXForwardedHost: 'Remora does not append x-forwarded-host on a host rewrite',
      grpcTimeoutOffset: 'Remora does not read grpc-timeout',
      hedgePolicy: 'Remora does not hedge requests',
      internalRedirectPolicy: 'Remora does not follow upstream redirects',
      maxInternalRedirects: 'Remora does not follow upstream redirects',
      priority: 'Remora has one routing priority',
    },
  );
  const clusters: WeightedCluster[] = [];
  if (a.cluster !== undefined) clusters.push({ cluster: a.cluster, weight: 100, requestHeaders: null, responseHeaders: null });
  else if (a.weightedClusters !== undefined) {
    const wat = join(at, 'weightedClusters');
    r.fields(a.weightedClusters, wat, ['clusters', 'totalWeight'], { runtimeKeyPrefix: 'Remora reads no runtime keys' });
    (a.weightedClusters.clusters ?? []).forEach((c, i) => {
      const cat = join(wat, `clusters[${i}]`);
      r.fields(c, cat, ['name', 'weight', 'requestHeadersToAdd', 'requestHeadersToRemove', 'responseHeadersToAdd', 'responseHeadersToRemove', 'hostRewriteLiteral']);
      let { request, response } = headersAt(r, c, cat);
      // istiod's per-destination authority: the Host sent upstream, set after the route's edits.
      if (c.hostRewriteLiteral !== undefined) {
        const set = [...(request?.set.filter(([k]) => k !== 'host') ?? []), ['host', c.hostRewriteLiteral] as const];
        request = { set, add: request?.add.filter(([k]) => k !== 'host') ?? [], remove: request?.remove ?? [] };
      }
      clusters.push({ cluster: c.name ?? '', weight: c.weight ?? 0, requestHeaders: request, responseHeaders: response });
    });
  } else r.error(at, 'a route action needs cluster or weightedClusters');
  if (a.clusterNotFoundResponseCode !== undefined && a.clusterNotFoundResponseCode !== 'SERVICE_UNAVAILABLE') {
    r.error(join(at, 'clusterNotFoundResponseCode'), `${a.clusterNotFoundResponseCode} is not supported: Remora answers 503 for an unknown cluster`);
  }
  const timeoutMs = a.timeout === undefined ? DEFAULT_ROUTE_TIMEOUT_MS : durationMs(a.timeout);
  if (a.idleTimeout !== undefined && durationMs(a.idleTimeout) !== 0) r.error(join(at, 'idleTimeout'), 'a per-route stream idle timeout is not supported');
  // istiod's boilerplate beside `timeout`: a gRPC request's grpc-timeout capped by the route's.
  if (a.maxGrpcTimeout !== undefined && durationMs(a.maxGrpcTimeout) !== 0 && durationMs(a.maxGrpcTimeout) !== timeoutMs) {
    r.warn(join(at, 'maxGrpcTimeout'), 'Remora bounds a request by the route timeout only');
  }
  if (a.maxStreamDuration !== undefined) {
    const m = a.maxStreamDuration;
    r.fields(m, join(at, 'maxStreamDuration'), ['maxStreamDuration', 'grpcTimeoutHeaderMax'], { grpcTimeoutHeaderOffset: 'Remora does not read grpc-timeout' });
    for (const key of ['maxStreamDuration', 'grpcTimeoutHeaderMax'] as const) {
      const v = m[key];
      if (v !== undefined && durationMs(v) !== 0 && durationMs(v) !== timeoutMs) r.warn(join(at, `maxStreamDuration.${key}`), 'Remora bounds a request by the route timeout only');
    }
  }
  let connect: 'terminate' | 'forward' | 'disabled' | undefined;
  (a.upgradeConfigs ?? []).forEach((u, i) => {
    const uat = join(at, `upgradeConfigs[${i}]`);
    r.fields(u, uat, ['upgradeType', 'enabled', 'connectConfig']);
    if (u.upgradeType?.toLowerCase() === 'connect') {
      if (u.enabled === false) connect = 'disabled';
      else if (u.connectConfig === undefined) connect = 'forward';
      else {
        // The tunnel's bytes go to the host as they are; no PROXY protocol header, no POST tunnels.
        r.fields(u.connectConfig, join(uat, 'connectConfig'), []);
        connect = 'terminate';
      }
      return;
    }
    // WebSocket upgrades are always allowed through; refusing one per route is not supported.
    if (u.upgradeType?.toLowerCase() !== 'websocket' || u.enabled === false || u.connectConfig !== undefined) {
      r.error(uat, 'only enabling websocket upgrades and CONNECT are supported');
    }
  });
  if (a.autoHostRewrite === true) r.error(join(at, 'autoHostRewrite'), 'rewriting the Host to the upstream host name is not supported (use hostRewriteLiteral)');
  const retry = a.retryPolicy !== undefined ? retryPolicy(r, a.retryPolicy, join(at, 'retryPolicy')) : (vhRetry ?? null);
  let rewrite: { prefix: string | null; regex: { pattern: string; substitution: string } | null } | null = null;
  if (a.prefixRewrite !== undefined || a.regexRewrite !== undefined) {
    let regex: { pattern: string; substitution: string } | null = null;
    if (a.regexRewrite !== undefined) {
      const rat = join(at, 'regexRewrite');
      r.fields(a.regexRewrite, rat, ['pattern', 'substitution']);
      const p = regexOf(r, a.regexRewrite.pattern ?? {}, join(rat, 'pattern'));
      // The substitution is RE2's (GlobalReplace, `\1`), as the runtime applies it.
      if (p !== null) regex = { pattern: p.ignoreCase ? `(?i)${p.value}` : p.value, substitution: a.regexRewrite.substitution ?? '' };
    }
    rewrite = { prefix: a.prefixRewrite ?? null, regex };
  }
  const mirrors: Mirror[] = [];
  (a.requestMirrorPolicies ?? []).forEach((m, i) => {
    const mat = join(at, `requestMirrorPolicies[${i}]`);
    r.fields(m, mat, ['cluster', 'runtimeFraction'], { disableShadowHostSuffixAppend: 'Remora sends mirrored requests with the -shadow host suffix' }, ['traceSampled']);
    if (m.cluster === undefined) {
      r.error(mat, 'a mirror policy needs a cluster');
      return;
    }
    const f = m.runtimeFraction?.defaultValue;
    mirrors.push({ cluster: m.cluster, percent: m.runtimeFraction === undefined ? 100 : fractionPercent(f?.numerator, f?.denominator) });
  });
  (a.hashPolicy ?? []).forEach((h, i) => {
    if (hashKey(h as Obj) === null) r.error(join(at, `hashPolicy[${i}]`), 'only header, cookie, source IP and query parameter hash policies are supported');
  });
  return {
    kind: 'forward',
    clusters,
    timeoutMs: timerMs(timeoutMs),
    retry,
    rewrite,
    authorityRewrite: a.hostRewriteLiteral ?? null,
    mirrors,
    ...(connect !== undefined ? { connect } : {}),
  };
}

/** A retry policy; null when it never retries. */
function retryPolicy(r: Reader, p: RetryPolicyJson, at: string): RetryPolicy | null {
  r.fields(
    p,
    at,
    ['retryOn', 'numRetries', 'perTryTimeout', 'retriableStatusCodes', 'retryHostPredicate', 'retryPriority'],
    {
      retryBackOff: 'Remora retries without back-off',
      rateLimitedRetryBackOff: 'Remora retries without back-off',
      perTryIdleTimeout: 'Remora has no per-try idle timeout',
    },
    // How often to retry host selection when the predicate rejects a host: Remora picks among untried hosts directly.
    ['hostSelectionRetryMaxAttempts'],
  );
  // istiod leaves previous_hosts out for consistent hashing; Remora always prefers untried hosts.
  (p.retryHostPredicate ?? []).forEach((h, i) => {
    if (h.name !== PREVIOUS_HOSTS) r.error(join(at, `retryHostPredicate[${i}]`), `retry host predicate ${h.name ?? ''} is not supported (only ${PREVIOUS_HOSTS})`);
  });
  let retryRemoteLocalities = false;
  if (p.retryPriority !== undefined) {
    if (p.retryPriority.name === PREVIOUS_PRIORITIES) retryRemoteLocalities = true;
    else r.error(join(at, 'retryPriority'), `retry priority ${p.retryPriority.name ?? ''} is not supported (only ${PREVIOUS_PRIORITIES})`);
  }
  const numRetries = p.numRetries ?? 1;
  if (numRetries === 0) return null;
  return {
    numRetries,
    perTryTimeoutMs: p.perTryTimeout === undefined ? 0 : timerMs(durationMs(p.perTryTimeout)),
    retryOn: (p.retryOn ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
    retriableStatusCodes: p.retriableStatusCodes ?? [],
    retryRemoteLocalities,
  };
}

function redirectAction(r: Reader, d: RedirectActionJson, at: string, remora: Obj | null): RouteAction | null {
  r.fields(d, at, ['schemeRedirect', 'httpsRedirect', 'hostRedirect', 'portRedirect', 'pathRedirect', 'prefixRewrite', 'responseCode', 'stripQuery']);
  if (d.prefixRewrite !== undefined) {
    r.error(join(at, 'prefixRewrite'), 'a redirect that rewrites the matched prefix is not supported (use pathRedirect)');
    return null;
  }
  const status = REDIRECT_STATUS[d.responseCode ?? 'MOVED_PERMANENTLY'];
  if (status === undefined) {
    r.error(join(at, 'responseCode'), `unknown response code ${d.responseCode ?? ''}`);
    return null;
  }
  return {
    kind: 'redirect',
    status,
    scheme: d.httpsRedirect === true ? 'https' : (d.schemeRedirect ?? null),
    authority: d.hostRedirect ?? null,
    port: d.portRedirect ?? null,
    derivePortFromScheme: remora?.derivePort === true,
    path: d.pathRedirect ?? null,
    ...(d.stripQuery === true ? { stripQuery: true } : {}),
  };
}

// ---- per-filter configs ----

/**
 * Envoy's typed_per_filter_config, unwrapped: each filter's config message without `@type`,
 * by filter name. Our exporter's own configs (a TypedStruct of `remora.<filter name>`) read
 * back as they were; another TypedStruct or a message the filter does not take is an error,
 * unless wrapped in an optional FilterConfig (then skipped with a warning).
 */
function filterConfigs(r: Reader, typed: Readonly<Record<string, unknown>> | undefined, at: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(typed ?? {})) {
    const fat = join(at, name);
    let any = raw as Obj;
    let optional = false;
    if (any['@type'] === FILTER_CONFIG) {
      r.fields(any, fat, ['@type', 'config', 'isOptional', 'disabled']);
      optional = any.isOptional === true;
      if (any.disabled === true) {
        if (optional) r.warn(join(fat, 'disabled'), `disabling ${name} per route is not supported; the optional setting is ignored`);
        else r.error(join(fat, 'disabled'), `disabling ${name} per route is not supported`);
        continue;
      }
      any = (any.config ?? {}) as Obj;
    }
    const type = typeof any['@type'] === 'string' ? (any['@type'] as string) : '';
    const { '@type': _, ...config } = any;
    if (TYPED_STRUCT_TYPES.has(type) && config.typeUrl === `${REMORA_TYPE_PREFIX}${name}`) {
      out[name] = config.value ?? {};
      continue;
    }
    if (PER_ROUTE_FILTER_TYPES[name] === type) {
      out[name] = config;
      continue;
    }
    const what = TYPED_STRUCT_TYPES.has(type) ? `a TypedStruct of ${String(config.typeUrl ?? '')}` : `${type.replace(T, '')}`;
    if (optional) r.warn(fat, `${what} is not a per-route config Remora knows for ${name}; the optional setting is ignored`);
    else r.error(fat, `${what} is not a per-route config Remora knows for ${name}`);
  }
  return out;
}

// ---- header edits ----

interface HeaderFields {
  requestHeadersToAdd?: HeaderValueOptionJson[];
  requestHeadersToRemove?: string[];
  responseHeadersToAdd?: HeaderValueOptionJson[];
  responseHeadersToRemove?: string[];
}

function headersAt(r: Reader, obj: HeaderFields, at: string): LevelHeaders {
  return {
    request: mutation(r, obj.requestHeadersToAdd, obj.requestHeadersToRemove, join(at, 'requestHeadersToAdd')),
    response: mutation(r, obj.responseHeadersToAdd, obj.responseHeadersToRemove, join(at, 'responseHeadersToAdd')),
  };
}

/** Envoy's header formatters (`%REQ(x)%`, `%DOWNSTREAM_REMOTE_ADDRESS%`, …) are not expanded by Remora. */
const FORMATTER = /%[A-Z_]+(\(.*?\))?(:\d+)?%/;

function mutation(r: Reader, add: readonly HeaderValueOptionJson[] | undefined, remove: readonly string[] | undefined, at: string): HeaderMutation | null {
  const set: (readonly [string, string])[] = [];
  const append: (readonly [string, string])[] = [];
  (add ?? []).forEach((o, i) => {
    const oat = join(at, i);
    r.fields(o, oat, ['header', 'appendAction', 'append'], {}, ['keepEmptyValue']);
    const key = (o.header?.key ?? '').toLowerCase();
    const value = o.header?.value ?? (o.header?.rawValue !== undefined ? Buffer.from(o.header.rawValue, 'base64').toString('utf8') : '');
    if (FORMATTER.test(value.replace(/%%/g, ''))) {
      r.error(join(oat, 'header.value'), 'header value formatters (%…%) are not supported');
      return;
    }
    // `append` (deprecated) wins when set; else `append_action`, whose default appends.
    const action = o.append !== undefined ? (o.append ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD') : (o.appendAction ?? 'APPEND_IF_EXISTS_OR_ADD');
    if (action === 'OVERWRITE_IF_EXISTS_OR_ADD') set.push([key, value]);
    else if (action === 'APPEND_IF_EXISTS_OR_ADD') append.push([key, value]);
    else r.error(join(oat, 'appendAction'), `${action} is not supported (only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD)`);
  });
  const removed = (remove ?? []).map((k) => k.toLowerCase());
  return set.length === 0 && append.length === 0 && removed.length === 0 ? null : { set, add: append, remove: removed };
}

/**
 * The header edits of the levels, in the order Envoy applies them (each level removes, then
 * adds), as one mutation (which removes, then sets, then appends): a later level's remove or
 * set of a header cancels what earlier levels set or appended for it.
 */
function foldHeaders(levels: readonly LevelHeaders[]): LevelHeaders {
  return { request: foldHeaderMutations(levels.map((l) => l.request)), response: foldHeaderMutations(levels.map((l) => l.response)) };
}

// ---- hash keys ----

function hashKey(h: Obj): HashKey | null {
  const keys = Object.keys(h).filter((k) => k !== 'terminal');
  if (keys.length !== 1) return null;
  const header = h.header as Obj | undefined;
  if (header !== undefined && typeof header.headerName === 'string' && header.regexRewrite === undefined) return { kind: 'header', name: header.headerName.toLowerCase() };
  const cookie = h.cookie as Obj | undefined;
  if (cookie !== undefined && typeof cookie.name === 'string' && cookie.attributes === undefined) {
    return { kind: 'cookie', name: cookie.name, path: typeof cookie.path === 'string' ? cookie.path : '', ttlSeconds: typeof cookie.ttl === 'string' ? durationMs(cookie.ttl) / 1000 : 0 };
  }
  const conn = h.connectionProperties as Obj | undefined;
  if (conn !== undefined && conn.sourceIp === true) return { kind: 'source-ip' };
  const query = h.queryParameter as Obj | undefined;
  if (query !== undefined && typeof query.name === 'string') return { kind: 'query-param', name: query.name };
  return null;
}

/**
 * The ring-hash key of each cluster: Envoy keeps it on the route (`hash_policy`), the model
 * on the cluster (`Cluster.lb.key`). The first usable hash policy seen for a cluster wins; a
 * later route hashing the same cluster on another key is reported as a warning on `ctx`.
 */
export function hashKeysFromRoutes(rcs: readonly RouteConfigurationJson[], ctx?: ImportContext): Map<string, HashKey> {
  const out = new Map<string, HashKey>();
  for (const rc of rcs) {
    (rc.virtualHosts ?? []).forEach((vh, i) => {
      (vh.routes ?? []).forEach((route, j) => {
        const a = route.route;
        const first = a?.hashPolicy?.[0];
        if (a === undefined || first === undefined) return;
        const key = hashKey(first as Obj);
        if (key === null) return;
        const clusters = a.cluster !== undefined ? [a.cluster] : (a.weightedClusters?.clusters ?? []).map((c) => c.name ?? '');
        for (const c of clusters) {
          const known = out.get(c);
          if (known === undefined) out.set(c, key);
          else if (ctx !== undefined && JSON.stringify(known) !== JSON.stringify(key)) {
            ctx.warn(TYPE, rc.name ?? '', `virtualHosts[${i}].routes[${j}].route.hashPolicy`, `cluster ${c} is already hashed on another key; Remora keeps one key per cluster, the first`);
          }
        }
      });
    });
  }
  return out;
}
