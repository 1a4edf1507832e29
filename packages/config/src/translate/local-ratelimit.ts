/**
 * Local rate limits for this proxy, from the two ways users write them:
 *
 * - EnvoyFilter, as in Istio's "Enabling Rate Limits using Envoy" task: an `HTTP_FILTER` patch
 *   inserting `envoy.filters.http.local_ratelimit` (typed_config as a `TypedStruct` whose
 *   `value` is the LocalRateLimit, or the LocalRateLimit itself), selected by
 *   `workloadSelector`, `match.context` and `match.listener.portNumber`; and `HTTP_ROUTE`
 *   patches merging `typed_per_filter_config` (and `route.rate_limits`) into routes.
 * - Remora's LocalRateLimit (ratelimit.remora.dev/v1alpha1): the same limit without Envoy's
 *   config language.
 *
 * Both become Envoy's LocalRateLimit (proto3 JSON), the filter's config; an EnvoyFilter's is
 * read with Envoy's descriptors, so its errors name the resource, the patch and the exact
 * field. Route `rate_limits` land on the route as Envoy's RateLimit.
 */
import type { DescMessage } from '@bufbuild/protobuf';
import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { TokenBucketJson } from '../envoy/gen/envoy/type/v3/token_bucket_pb.ts';
import { durationJsonMs, msToDurationJson } from '../model/envoy-values.ts';
import type { LocalRateLimitConfigJson } from '../model/filters.ts';
import type { Listener } from '../model/listener.ts';
import type { Route, RouteConfiguration } from '../model/route.ts';
import type { Resource } from '../resources/resource.ts';
import { parseDuration } from '../schema/duration.ts';
import type { TranslateContext } from './context.ts';
import { AFTER_AUTHORIZATION, type FilterInsert, type FilterPlace, type InsertOperation } from './http-filter-chain.ts';
import {
  contextMatches,
  decode,
  envoyCodec,
  envoyFilterPatches,
  field,
  obj,
  portMatches,
  selects,
  subFilterOf,
  listenerMatches,
  type EnvoyFilterPatch,
  type PatchListener,
  type PatchMatch,
  type Obj,
  type PatchContext,
  type Path,
} from './envoyfilter.ts';

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
export const LOCAL_RATE_LIMIT_TYPE = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';
const RATE_LIMIT_TYPE = 'envoy.config.route.v3.RateLimit';
const TYPED_STRUCTS = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);
/** Envoy refuses token buckets that refill more often than this. */
const MIN_FILL_INTERVAL_MS = 50;

/** Envoy's validation rules (protoc-gen-validate) the codec does not check, and fields Remora lacks. */
const UNSUPPORTED_FIELDS: readonly [string, string][] = [
  ['localClusterRateLimit', 'local_cluster_rate_limit'],
  ['vhRateLimits', 'vh_rate_limits'],
  ['requestHeadersToAddWhenNotEnforced', 'request_headers_to_add_when_not_enforced'],
  ['localRateLimitPerDownstreamConnection', 'local_rate_limit_per_downstream_connection'],
];

/** A message type of Envoy's descriptors (loaded on first use). */
function schemaOf(typeName: string): DescMessage {
  return envoyCodec().messageType(typeName)!;
}

/** Reads route `rate_limits` (config.route.v3.RateLimit) as canonical JSON; null when one is bad (reported). */
function decodeRateLimits(ctx: TranslateContext, r: Resource, v: unknown, at: Path): RateLimitJson[] | null {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    ctx.error(r, at, 'rate_limits must be a list');
    return null;
  }
  const out: RateLimitJson[] = [];
  let ok = true;
  v.forEach((item, i) => {
    const rl = decode<RateLimitJson>(ctx, r, schemaOf(RATE_LIMIT_TYPE), item, [...at, i]);
    if (rl === null) {
      ok = false;
      return;
    }
    const actions = rl.actions ?? [];
    if (actions.length === 0) {
      ctx.error(r, [...at, i, 'actions'], 'actions must be a non-empty list');
      ok = false;
    }
    actions.forEach((a, k) => {
      if (a.requestHeaders !== undefined && (!a.requestHeaders.headerName || !a.requestHeaders.descriptorKey)) {
        ctx.error(r, [...at, i, 'actions', k], 'request_headers needs header_name and descriptor_key');
        ok = false;
      } else if (a.genericKey !== undefined && !a.genericKey.descriptorValue) {
        ctx.error(r, [...at, i, 'actions', k], 'generic_key needs descriptor_value');
        ok = false;
      } else if (a.requestHeaders === undefined && a.genericKey === undefined && a.remoteAddress === undefined) {
        ctx.error(r, [...at, i, 'actions', k], 'only request_headers, generic_key and remote_address actions are supported');
        ok = false;
      }
    });
    out.push(rl);
  });
  return ok ? out : null;
}

/**
 * One LocalRateLimit message (as written: snake_case or lowerCamelCase) as the filter's
 * config: validated with Envoy's descriptors (exact field paths), then Envoy's own rules the
 * codec does not check; null when it has errors (they are reported against `at`).
 */
export function decodeLimit(ctx: TranslateContext, r: Resource, v: Obj, at: Path, perRoute: boolean): LocalRateLimitConfigJson | null {
  // The filter's own rate_limits is newer than the bundled protos: read apart, as route rate_limits.
  const rlField = field(v, 'rate_limits');
  const rest: Obj = { ...v };
  delete rest[rlField.name];
  const rateLimits = decodeRateLimits(ctx, r, rlField.value, [...at, rlField.name]);
  const c = decode<LocalRateLimitConfigJson>(ctx, r, schemaOf(LOCAL_RATE_LIMIT_TYPE), rest, at);
  if (c === null || rateLimits === null) return null;
  let ok = true;
  const error = (path: Path, message: string): void => {
    ok = false;
    ctx.error(r, [...at, ...path], message);
  };
  const name = (snake: string): string => field(v, snake).name;
  for (const [camel, snake] of UNSUPPORTED_FIELDS) {
    if (c[camel as keyof LocalRateLimitConfigJson] !== undefined) error([name(snake)], `${name(snake)} is not supported by Remora`);
  }
  if (!c.statPrefix) error([name('stat_prefix')], `${name('stat_prefix')} is required`);
  const bucket = (b: TokenBucketJson | undefined, path: Path, raw: Obj | null): void => {
    const n = (snake: string): string => (raw === null ? snake : field(raw, snake).name);
    if (b === undefined) return;
    if (b.maxTokens === undefined) error([...path, n('max_tokens')], `${n('max_tokens')} is required`);
    if (b.tokensPerFill !== undefined && b.tokensPerFill < 1) error([...path, n('tokens_per_fill')], `${n('tokens_per_fill')} must be a positive integer, got ${b.tokensPerFill}`);
    if (b.fillInterval === undefined) error([...path, n('fill_interval')], `${n('fill_interval')} is required`);
    else if (durationJsonMs(b.fillInterval, n('fill_interval')) < MIN_FILL_INTERVAL_MS) {
      error([...path, n('fill_interval')], `${n('fill_interval')} must be at least ${MIN_FILL_INTERVAL_MS}ms (Envoy's limit for token bucket refills), got ${JSON.stringify(b.fillInterval)}`);
    }
  };
  const tb = field(v, 'token_bucket');
  if (c.tokenBucket === undefined) {
    if (perRoute) error([tb.name], `${tb.name} is required in a route's local rate limit (typed_per_filter_config)`);
  } else {
    bucket(c.tokenBucket, [tb.name], obj(tb.value));
  }
  const ds = field(v, 'descriptors');
  const rawDs = Array.isArray(ds.value) ? ds.value : [];
  (c.descriptors ?? []).forEach((d, i) => {
    const raw = obj(rawDs[i]);
    const entries = d.entries ?? [];
    if (entries.length === 0) error([ds.name, i, 'entries'], 'entries must be a non-empty list of {key, value}');
    entries.forEach((e, k) => {
      if (!e.key) error([ds.name, i, 'entries', k, 'key'], 'an entry needs a key');
      else if (!e.value) ctx.warn(r, [...at, ds.name, i, 'entries', k, 'value'], 'an empty value (a bucket per distinct value) is not supported; only the exact value "" matches');
    });
    const dtb = raw === null ? { name: 'token_bucket', value: undefined } : field(raw, 'token_bucket');
    if (d.tokenBucket === undefined) error([ds.name, i, dtb.name], `${dtb.name} is required in a descriptor`);
    else bucket(d.tokenBucket, [ds.name, i, dtb.name], obj(dtb.value));
  });
  const rh = field(v, 'response_headers_to_add');
  (c.responseHeadersToAdd ?? []).forEach((h, i) => {
    const key = h.header?.key;
    if (typeof key !== 'string' || key === '' || /[^!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(key)) {
      error([rh.name, i, 'header', 'key'], `header key must be a valid header name, got ${JSON.stringify(key)}`);
    } else if (/%[A-Z_]+(\(.*?\))?%/.test(h.header?.value ?? '')) {
      ctx.warn(r, [...at, rh.name, i, 'header', 'value'], 'header value formatters (%...%) are not expanded; the text is sent as written');
    }
  });
  if (!ok) return null;
  return rateLimits.length > 0 ? { ...c, rateLimits } : c;
}

/** The LocalRateLimit message inside a typed_config (a TypedStruct's `value`, or the message itself), and its path. */
export function typedLocalRateLimit(ctx: TranslateContext, r: Resource, tc: unknown, at: Path): { value: Obj; at: Path } | null {
  const t = obj(tc);
  if (t === null) {
    ctx.error(r, at, 'typed_config must be an object with @type');
    return null;
  }
  const type = String(t['@type'] ?? '').replace(/^type\.googleapis\.com\//, '');
  if (TYPED_STRUCTS.has(type)) {
    const url = String(t.type_url ?? t.typeUrl ?? '').replace(/^type\.googleapis\.com\//, '');
    if (url !== LOCAL_RATE_LIMIT_TYPE) {
      ctx.error(r, [...at, 'type_url'], `type_url must be type.googleapis.com/${LOCAL_RATE_LIMIT_TYPE}, got ${JSON.stringify(t.type_url ?? t.typeUrl)}`);
      return null;
    }
    const value = obj(t.value);
    if (value === null) {
      ctx.error(r, [...at, 'value'], 'value must be the LocalRateLimit config');
      return null;
    }
    return { value, at: [...at, 'value'] };
  }
  if (type === LOCAL_RATE_LIMIT_TYPE) {
    const { '@type': _, ...value } = t;
    return { value, at };
  }
  ctx.error(r, [...at, '@type'], `@type must be type.googleapis.com/${LOCAL_RATE_LIMIT_TYPE} or a TypedStruct of it, got ${JSON.stringify(t['@type'])}`);
  return null;
}

const INSERTS: readonly string[] = ['INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'ADD'] satisfies InsertOperation[];

export function isInsert(op: string): op is InsertOperation {
  return INSERTS.includes(op);
}

/** Is this patch an HTTP_FILTER insert of the local rate limit (which {@link localRateLimitFilter} places)? */
export function isLocalRateLimitInsert(p: EnvoyFilterPatch): boolean {
  return p.applyTo === 'HTTP_FILTER' && isInsert(p.operation) && obj(p.value)?.name === LOCAL_RATE_LIMIT_FILTER;
}

interface NativeSpec {
  selector?: { matchLabels?: Record<string, string> };
  context?: PatchContext;
  tokenBucket?: { maxTokens?: number; tokensPerFill?: number; fillInterval?: string };
  responseHeaders?: boolean;
  enforcedPercent?: number;
}

/** A LocalRateLimit resource as the filter's config (Envoy's LocalRateLimit); null when it does not apply or is invalid (reported; the schema checks its values). */
function nativeLimit(ctx: TranslateContext, r: Resource, context: PatchContext): LocalRateLimitConfigJson | null {
  const spec = (r.spec ?? {}) as NativeSpec;
  if (!selects(ctx, r, spec.selector?.matchLabels)) return null;
  const want = spec.context ?? (ctx.node.kind === 'gateway' ? 'GATEWAY' : 'SIDECAR_INBOUND');
  if (want !== context) return null;
  const tb = spec.tokenBucket;
  const fillMs = tb?.fillInterval === undefined ? null : parseDuration(tb.fillInterval);
  if (tb === undefined || typeof tb.maxTokens !== 'number' || fillMs === null) {
    ctx.error(r, ['spec', 'tokenBucket'], 'tokenBucket needs maxTokens and fillInterval');
    return null;
  }
  const enforced = spec.enforcedPercent ?? 100;
  const all = { runtimeKey: 'local_rate_limit_enabled', defaultValue: { numerator: 100 } };
  return {
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: { maxTokens: tb.maxTokens, tokensPerFill: tb.tokensPerFill ?? 1, fillInterval: msToDurationJson(fillMs) },
    filterEnabled: all,
    filterEnforced: { runtimeKey: 'local_rate_limit_enforced', defaultValue: percentFraction(enforced) },
    ...(spec.responseHeaders === true ? { enableXRatelimitHeaders: 'DRAFT_VERSION_03' as const } : {}),
  };
}

/** A percentage as a FractionalPercent over a MILLION when it is not a whole number of percent. */
function percentFraction(percent: number): { numerator?: number; denominator?: 'MILLION' } {
  if (Number.isInteger(percent)) return percent === 0 ? {} : { numerator: percent };
  return { numerator: Math.round(percent * 10_000), denominator: 'MILLION' };
}

/**
 * The local rate limit filter for a listener of this proxy, from the EnvoyFilter form Istio
 * users write and from Remora's native LocalRateLimit resource; null when none applies.
 * The chain has one local rate limit: the oldest resource wins, later ones are reported.
 * An EnvoyFilter's patch says where the filter goes; the native resource's limit runs right
 * after authentication and authorization.
 */
export function localRateLimitFilter(ctx: TranslateContext, listener: PatchListener): FilterInsert | null {
  const { context, port: listenerPort } = listener;
  const found: { config: LocalRateLimitConfigJson; origin: string; r: Resource; path: Path; place: FilterPlace }[] = [];
  for (const p of envoyFilterPatches(ctx)) {
    if (!isLocalRateLimitInsert(p)) continue;
    const lm = p.match.listener;
    if (!listenerMatches(ctx, p, listener)) {
      if (context === 'SIDECAR_OUTBOUND' && p.match.context === 'SIDECAR_OUTBOUND' && !portMatches(ctx, lm?.portNumber, context, listenerPort)) {
        ctx.warn(p.r, [...p.at, 'match', 'listener', 'portNumber'], `the sidecar has one outbound listener (port ${listenerPort}), not one per service port; this patch applies to no listener`);
      }
      continue;
    }
    const at: Path = ['spec', 'configPatches', p.index, 'patch', 'value'];
    const value = obj(p.value)!;
    const tc = field(value, 'typed_config');
    const typed = typedLocalRateLimit(ctx, p.r, tc.value, [...at, tc.name]);
    if (typed === null) continue;
    const config = decodeLimit(ctx, p.r, typed.value, typed.at, false);
    const place: FilterPlace = { operation: p.operation as InsertOperation, subFilter: subFilterOf(p), r: p.r, at: p.at, rank: p.rank };
    if (config !== null) found.push({ config, origin: `EnvoyFilter ${p.r.metadata.namespace}/${p.r.metadata.name}`, r: p.r, path: at, place });
  }
  for (const r of ctx.resourcesOf('LocalRateLimit')) {
    const config = nativeLimit(ctx, r, context);
    if (config !== null) found.push({ config, origin: `LocalRateLimit ${r.metadata.namespace}/${r.metadata.name}`, r, path: ['spec'], place: AFTER_AUTHORIZATION });
  }
  if (found.length === 0) return null;
  for (const extra of found.slice(1)) {
    ctx.warn(extra.r, extra.path, `${found[0]!.origin} already sets the local rate limit of this ${context} listener (port ${listenerPort}); this one is ignored`);
  }
  const first = found[0]!;
  // Where a filter comes from is not part of Envoy's config: the model keeps only the config.
  return { filter: { name: LOCAL_RATE_LIMIT_FILTER, config: first.config }, place: first.place };
}

/** Is this an HTTP_ROUTE patch of the local rate limit (`typed_per_filter_config` or `route.rate_limits`), which Remora applies? */
export function isLocalRateLimitRoutePatch(p: EnvoyFilterPatch): boolean {
  const value = obj(p.value);
  if (p.applyTo !== 'HTTP_ROUTE' || value === null) return false;
  const tpfc = obj(field(value, 'typed_per_filter_config').value);
  const route = obj(value.route);
  return (tpfc !== null && LOCAL_RATE_LIMIT_FILTER in tpfc) || (route !== null && field(route, 'rate_limits').value !== undefined);
}

function actionName(r: Route): string {
  return r.action.kind === 'forward' ? 'ROUTE' : r.action.kind === 'redirect' ? 'REDIRECT' : 'DIRECT_RESPONSE';
}

/** The port a virtual host serves: its `name` ends in `:<port>` outbound and at gateways. */
function vhostPort(name: string, context: PatchContext, appPort: number | null, listenerPort: number): number {
  if (context === 'SIDECAR_INBOUND') return appPort ?? listenerPort;
  if (context === 'GATEWAY') return listenerPort;
  const colon = name.lastIndexOf(':');
  return colon < 0 ? 0 : Number(name.slice(colon + 1));
}

/**
 * Applies EnvoyFilter HTTP_ROUTE patches to a route table: `typed_per_filter_config` for the
 * local rate limit (the route's own limit and bucket) and `route.rate_limits` (the request's
 * descriptors). Returns the table unchanged when no patch applies.
 */
export function withLocalRateLimitRoutes(
  ctx: TranslateContext,
  rc: RouteConfiguration,
  context: PatchContext,
  listenerPort: number,
  applied: { r: Resource; index: number }[] = [],
): RouteConfiguration {
  const patches: { r: Resource; index: number; m: PatchMatch['routeConfiguration']; value: Obj }[] = [];
  for (const p of envoyFilterPatches(ctx)) {
    const value = obj(p.value);
    if (value === null || !isLocalRateLimitRoutePatch(p) || !contextMatches(p.match.context, context)) continue;
    if (p.operation !== 'MERGE') {
      ctx.warn(p.r, [...p.at, 'patch', 'operation'], 'only MERGE patches of routes are supported; this patch is ignored');
      continue;
    }
    patches.push({ r: p.r, index: p.index, m: p.match.routeConfiguration, value });
  }
  if (patches.length === 0) return rc;
  const appPort = ctx.ports.appPort;
  let changed = false;
  const virtualHosts = rc.virtualHosts.map((vh) => {
    const port = vhostPort(vh.name, context, appPort, listenerPort);
    const routes = vh.routes.map((route) => {
      let out = route;
      for (const p of patches) {
        const m = p.m ?? {};
        if (m.portNumber !== undefined && m.portNumber !== 0 && m.portNumber !== port) continue;
        if (m.name !== undefined && m.name !== rc.name) continue;
        if (m.vhost?.name !== undefined && m.vhost.name !== vh.name) continue;
        if (m.vhost?.route?.name !== undefined && m.vhost.route.name !== '' && m.vhost.route.name !== route.name) continue;
        const act = m.vhost?.route?.action ?? 'ANY';
        if (act !== 'ANY' && act !== actionName(route)) continue;
        const settings = routeSettings(ctx, p.r, p.index, p.value);
        if (settings === null) continue;
        // MERGE: what the patch sets replaces the route's (a repeated field is replaced whole here).
        const filterConfigs = settings.limit === null ? out.filterConfigs : { ...out.filterConfigs, [LOCAL_RATE_LIMIT_FILTER]: settings.limit };
        out = { ...out, filterConfigs, ...(settings.rateLimits.length > 0 ? { rateLimits: settings.rateLimits } : {}) };
        changed = true;
        if (!applied.some((a) => a.r === p.r && a.index === p.index)) applied.push({ r: p.r, index: p.index });
      }
      return out;
    });
    return { ...vh, routes };
  });
  return changed ? { ...rc, virtualHosts } : rc;
}

function routeSettings(ctx: TranslateContext, r: Resource, index: number, value: Obj): { limit: LocalRateLimitConfigJson | null; rateLimits: RateLimitJson[] } | null {
  const at: Path = ['spec', 'configPatches', index, 'patch', 'value'];
  const tpf = field(value, 'typed_per_filter_config');
  const tc = obj(tpf.value)?.[LOCAL_RATE_LIMIT_FILTER];
  let limit: LocalRateLimitConfigJson | null = null;
  if (tc !== undefined) {
    const typed = typedLocalRateLimit(ctx, r, tc, [...at, tpf.name, LOCAL_RATE_LIMIT_FILTER]);
    if (typed === null) return null;
    limit = decodeLimit(ctx, r, typed.value, typed.at, true);
    if (limit === null) return null;
  }
  const route = obj(value.route);
  const rl = route === null ? null : field(route, 'rate_limits');
  const rateLimits = rl === null ? [] : decodeRateLimits(ctx, r, rl.value, [...at, 'route', rl.name]);
  return rateLimits === null ? null : { limit, rateLimits };
}

const DIRECTION_CONTEXT: Readonly<Record<string, PatchContext>> = { outbound: 'SIDECAR_OUTBOUND', inbound: 'SIDECAR_INBOUND', gateway: 'GATEWAY' };

/** Applies the HTTP_ROUTE patches to every listener's route table (in place), each in its listener's context. */
export function applyLocalRateLimitRoutes(
  ctx: TranslateContext,
  listeners: readonly Pick<Listener, 'direction' | 'port' | 'routeConfig' | 'routeConfigsByPort' | 'httpFilters'>[],
  routeConfigs: RouteConfiguration[],
): void {
  for (const l of listeners) {
    const context = DIRECTION_CONTEXT[l.direction];
    if (context === undefined) continue;
    const applied: { r: Resource; index: number }[] = [];
    // A sidecar's outbound side routes through one table per port: each is patched.
    for (const name of new Set([l.routeConfig, ...Object.values(l.routeConfigsByPort ?? {})])) {
      const i = routeConfigs.findIndex((rc) => rc.name === name);
      if (i >= 0) routeConfigs[i] = withLocalRateLimitRoutes(ctx, routeConfigs[i]!, context, l.port, applied);
    }
    if (applied.length > 0 && !l.httpFilters.some((f) => f.name === LOCAL_RATE_LIMIT_FILTER)) {
      // Envoy only reads a route's typed_per_filter_config when the filter is in the chain.
      for (const a of applied) {
        ctx.warn(a.r, ['spec', 'configPatches', a.index], `no HTTP_FILTER patch inserts ${LOCAL_RATE_LIMIT_FILTER} on the ${context} listener (port ${l.port}), so this route patch has no effect there`);
      }
    }
  }
}
