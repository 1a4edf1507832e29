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
 * Both become `LocalRateLimitConfig`. Bad values are config errors naming the resource and field.
 */
import type { LocalRateLimitConfig, LocalRateLimitRouteConfig, RateLimitAction, RateLimitActions, TokenBucketConfig } from '../model/filters.ts';
import type { HttpFilterConfig } from '../model/listener.ts';
import type { Route, RouteConfiguration } from '../model/route.ts';
import type { Resource } from '../resources/resource.ts';
import { parseDuration } from '../schema/duration.ts';
import type { TranslateContext } from './context.ts';
import { AFTER_AUTHORIZATION, type FilterInsert, type FilterPlace, type InsertOperation } from './http-filter-chain.ts';
import { labelsMatch } from './registry.ts';

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
const LOCAL_RATE_LIMIT_TYPE = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';
const TYPED_STRUCTS = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);
/** Envoy refuses token buckets that refill more often than this. */
const MIN_FILL_INTERVAL_MS = 50;
const MAX_UINT32 = 4294967295;

/** Where a listener sits, in EnvoyFilter `match.context` terms. */
export type PatchContext = 'SIDECAR_INBOUND' | 'SIDECAR_OUTBOUND' | 'GATEWAY';

type Obj = Record<string, unknown>;
type Path = (string | number)[];

function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}

/** A proto field as YAML may spell it: `snake_case` or its JSON name `camelCase`. */
function field(o: Obj, snake: string): { value: unknown; name: string } {
  if (snake in o) return { value: o[snake], name: snake };
  const camel = snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  return camel in o ? { value: o[camel], name: camel } : { value: undefined, name: snake };
}

/** Does an EnvoyFilter or LocalRateLimit apply to this proxy (root namespace: everywhere; else its namespace; selector labels)? */
function selects(ctx: TranslateContext, r: Resource, labels: Readonly<Record<string, string>> | undefined): boolean {
  const ns = r.metadata.namespace;
  if (ns !== ctx.node.rootNamespace && ns !== ctx.node.namespace) return false;
  return labels === undefined || labelsMatch(labels, ctx.node.labels);
}

/** EnvoyFilter `match.context` against the listener's; absent or ANY matches every listener. */
function contextMatches(want: unknown, context: PatchContext): boolean {
  return want === undefined || want === null || want === 'ANY' || want === context;
}

/** The listener port an EnvoyFilter `portNumber` names: the app's port on the inbound side (Istio's inbound listeners are per workload port). */
function portMatches(ctx: TranslateContext, want: unknown, context: PatchContext, listenerPort: number): boolean {
  if (want === undefined || want === null || want === 0) return true;
  if (context === 'SIDECAR_INBOUND') return want === ctx.ports.appPort || want === listenerPort;
  return want === listenerPort;
}

/** Reads one LocalRateLimit proto value; errors go to `ctx` against `at` (the path of `value`). */
class ProtoReader {
  ok = true;
  readonly ctx: TranslateContext;
  readonly r: Resource;

  constructor(ctx: TranslateContext, r: Resource) {
    this.ctx = ctx;
    this.r = r;
  }

  error(path: Path, message: string): void {
    this.ok = false;
    this.ctx.error(this.r, path, message);
  }

  uint(o: Obj, snake: string, at: Path, required: boolean, fallback: number): number {
    const f = field(o, snake);
    let v = f.value;
    // uint32 wrappers may be written `{value: n}`.
    const wrapped = obj(v);
    if (wrapped !== null && 'value' in wrapped) v = wrapped.value;
    if (v === undefined || v === null) {
      if (required) this.error([...at, f.name], `${f.name} is required`);
      return fallback;
    }
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_UINT32) {
      this.error([...at, f.name], `${f.name} must be a positive integer (1 to ${MAX_UINT32}), got ${JSON.stringify(v)}`);
      return fallback;
    }
    return n;
  }

  bucket(v: unknown, at: Path): TokenBucketConfig | null {
    const b = obj(v);
    if (b === null) {
      this.error(at, `token bucket must be an object with max_tokens and fill_interval, got ${JSON.stringify(v)}`);
      return null;
    }
    const maxTokens = this.uint(b, 'max_tokens', at, true, 1);
    const tokensPerFill = this.uint(b, 'tokens_per_fill', at, false, 1);
    const fi = field(b, 'fill_interval');
    let fillIntervalMs = 0;
    if (fi.value === undefined || fi.value === null) {
      this.error([...at, fi.name], `${fi.name} is required`);
    } else {
      const ms = typeof fi.value === 'string' ? parseDuration(fi.value) : null;
      if (ms === null) this.error([...at, fi.name], `${fi.name} must be a duration such as "60s" or "500ms", got ${JSON.stringify(fi.value)}`);
      else if (ms < MIN_FILL_INTERVAL_MS) this.error([...at, fi.name], `${fi.name} must be at least ${MIN_FILL_INTERVAL_MS}ms (Envoy's limit for token bucket refills), got ${JSON.stringify(fi.value)}`);
      else fillIntervalMs = ms;
    }
    return { maxTokens, tokensPerFill, fillIntervalMs };
  }

  /** A RuntimeFractionalPercent as a percentage; absent: `fallback` (Envoy: 0, for safety). */
  fraction(o: Obj, snake: string, at: Path, fallback: number): number {
    const f = field(o, snake);
    if (f.value === undefined || f.value === null) return fallback;
    const rf = obj(f.value);
    const dv = rf === null ? null : field(rf, 'default_value');
    const d = dv === null ? null : obj(dv.value);
    if (d === null) {
      this.error([...at, f.name], `${f.name} must have default_value {numerator, denominator}`);
      return fallback;
    }
    const num = d.numerator ?? 0;
    if (typeof num !== 'number' || !Number.isInteger(num) || num < 0) {
      this.error([...at, f.name, dv!.name, 'numerator'], `numerator must be a non-negative integer, got ${JSON.stringify(num)}`);
      return fallback;
    }
    const den = d.denominator ?? 'HUNDRED';
    const scale = den === 'HUNDRED' ? 100 : den === 'TEN_THOUSAND' ? 10_000 : den === 'MILLION' ? 1_000_000 : 0;
    if (scale === 0) {
      this.error([...at, f.name, dv!.name, 'denominator'], `denominator must be HUNDRED, TEN_THOUSAND or MILLION, got ${JSON.stringify(den)}`);
      return fallback;
    }
    // Envoy caps a numerator above the denominator at 100%.
    return Math.min(100, (num / scale) * 100);
  }

  headers(v: unknown, at: Path): [string, string][] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.error(at, 'response_headers_to_add must be a list');
      return [];
    }
    const out: [string, string][] = [];
    v.forEach((h, i) => {
      const hdr = obj(obj(h)?.header);
      const key = hdr?.key;
      if (typeof key !== 'string' || key === '' || /[^!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(key)) {
        this.error([...at, i, 'header', 'key'], `header key must be a valid header name, got ${JSON.stringify(key)}`);
        return;
      }
      const value = hdr!.value ?? '';
      if (typeof value !== 'string') {
        this.error([...at, i, 'header', 'value'], 'header value must be a string');
        return;
      }
      if (/%[A-Z_]+(\(.*?\))?%/.test(value)) this.ctx.warn(this.r, [...at, i, 'header', 'value'], 'header value formatters (%...%) are not expanded; the text is sent as written');
      out.push([key.toLowerCase(), value]);
    });
    return out;
  }

  rateLimits(v: unknown, at: Path): RateLimitActions[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.error(at, 'rate_limits must be a list');
      return [];
    }
    const out: RateLimitActions[] = [];
    v.forEach((rl, i) => {
      const acts = obj(rl)?.actions;
      if (!Array.isArray(acts) || acts.length === 0) {
        this.error([...at, i, 'actions'], 'actions must be a non-empty list');
        return;
      }
      const actions: RateLimitAction[] = [];
      acts.forEach((a, k) => {
        const o = obj(a) ?? {};
        const here = [...at, i, 'actions', k];
        const rh = obj(field(o, 'request_headers').value);
        const gk = obj(field(o, 'generic_key').value);
        if (rh !== null) {
          const headerName = field(rh, 'header_name').value;
          const descriptorKey = field(rh, 'descriptor_key').value;
          if (typeof headerName !== 'string' || headerName === '' || typeof descriptorKey !== 'string' || descriptorKey === '') {
            this.error(here, 'request_headers needs header_name and descriptor_key');
            return;
          }
          actions.push({ kind: 'request_headers', headerName, descriptorKey, skipIfAbsent: field(rh, 'skip_if_absent').value === true });
        } else if (gk !== null) {
          const descriptorValue = field(gk, 'descriptor_value').value;
          const descriptorKey = field(gk, 'descriptor_key').value ?? 'generic_key';
          if (typeof descriptorValue !== 'string' || typeof descriptorKey !== 'string') {
            this.error(here, 'generic_key needs descriptor_value');
            return;
          }
          actions.push({ kind: 'generic_key', descriptorKey, descriptorValue });
        } else if (field(o, 'remote_address').value !== undefined) {
          actions.push({ kind: 'remote_address' });
        } else {
          this.ctx.warn(this.r, here, `only request_headers, generic_key and remote_address actions are supported; this rate limit entry is ignored`);
        }
      });
      if (actions.length === acts.length) out.push({ actions });
    });
    return out;
  }

  /** The LocalRateLimit message at `at`; null when it has errors (they are reported). */
  limit(v: Obj, at: Path, key: string, origin: string, perRoute: boolean): LocalRateLimitConfig | null {
    const tb = field(v, 'token_bucket');
    let tokenBucket: TokenBucketConfig | null = null;
    if (tb.value === undefined || tb.value === null) {
      if (perRoute) this.error([...at, tb.name], `${tb.name} is required in a route's local rate limit (typed_per_filter_config)`);
    } else {
      tokenBucket = this.bucket(tb.value, [...at, tb.name]);
    }
    const statusObj = obj(field(v, 'status').value);
    let status = 429;
    if (statusObj !== null) {
      const code = statusObj.code;
      if (typeof code === 'number' && Number.isInteger(code) && code >= 400 && code <= 599) status = code;
      else if (typeof code !== 'number' || !Number.isInteger(code) || code < 100 || code > 599) this.error([...at, 'status', 'code'], `status.code must be an HTTP status, got ${JSON.stringify(code)}`);
      // Below 400 Envoy uses 429.
    }
    const descriptors: LocalRateLimitConfig['descriptors'][number][] = [];
    const ds = field(v, 'descriptors');
    if (ds.value !== undefined && ds.value !== null) {
      if (!Array.isArray(ds.value)) this.error([...at, ds.name], 'descriptors must be a list');
      else {
        ds.value.forEach((d, i) => {
          const dobj = obj(d) ?? {};
          const here = [...at, ds.name, i];
          const entries = dobj.entries;
          if (!Array.isArray(entries) || entries.length === 0) {
            this.error([...here, 'entries'], 'entries must be a non-empty list of {key, value}');
            return;
          }
          const es: { key: string; value: string }[] = [];
          for (const [k, e] of entries.entries()) {
            const eo = obj(e);
            if (typeof eo?.key !== 'string' || eo.key === '' || typeof eo.value !== 'string') {
              this.error([...here, 'entries', k], 'an entry needs key and value strings');
              return;
            }
            if (eo.value === '') this.ctx.warn(this.r, [...here, 'entries', k, 'value'], 'an empty value (a bucket per distinct value) is not supported; only the exact value "" matches');
            es.push({ key: eo.key, value: eo.value });
          }
          const dtb = field(dobj, 'token_bucket');
          if (dtb.value === undefined || dtb.value === null) {
            this.error([...here, dtb.name], `${dtb.name} is required in a descriptor`);
            return;
          }
          const bucket = this.bucket(dtb.value, [...here, dtb.name]);
          if (bucket !== null) descriptors.push({ entries: es, tokenBucket: bucket });
        });
      }
    }
    const xrl = field(v, 'enable_x_ratelimit_headers').value;
    if (xrl !== undefined && xrl !== 'OFF' && xrl !== 'DRAFT_VERSION_03') {
      this.error([...at, 'enable_x_ratelimit_headers'], `enable_x_ratelimit_headers must be OFF or DRAFT_VERSION_03, got ${JSON.stringify(xrl)}`);
    }
    const sp = field(v, 'stat_prefix');
    if (typeof sp.value !== 'string' || sp.value === '') this.error([...at, sp.name], `${sp.name} is required`);
    const rh = field(v, 'response_headers_to_add');
    const rl = field(v, 'rate_limits');
    const always = field(v, 'always_consume_default_token_bucket').value;
    const config: LocalRateLimitConfig = {
      key,
      origin,
      statPrefix: typeof sp.value === 'string' ? sp.value : '',
      tokenBucket,
      enabledPercent: this.fraction(v, 'filter_enabled', at, 0),
      enforcedPercent: this.fraction(v, 'filter_enforced', at, 0),
      status,
      grpcResourceExhausted: field(v, 'rate_limited_as_resource_exhausted').value === true,
      responseHeadersToAdd: this.headers(rh.value, [...at, rh.name]),
      xRateLimitHeaders: xrl === 'DRAFT_VERSION_03',
      descriptors,
      alwaysConsumeDefaultBucket: always === false ? false : (obj(always)?.value ?? true) !== false,
      rateLimits: this.rateLimits(rl.value, [...at, rl.name]),
    };
    return this.ok ? config : null;
  }
}

/** The LocalRateLimit message inside a typed_config (a TypedStruct's `value`, or the message itself), and its path. */
function typedLocalRateLimit(ctx: TranslateContext, r: Resource, tc: unknown, at: Path): { value: Obj; at: Path } | null {
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
  if (type === LOCAL_RATE_LIMIT_TYPE) return { value: t, at };
  ctx.error(r, [...at, '@type'], `@type must be type.googleapis.com/${LOCAL_RATE_LIMIT_TYPE} or a TypedStruct of it, got ${JSON.stringify(t['@type'])}`);
  return null;
}

interface EnvoyFilterSpec {
  workloadSelector?: { labels?: Record<string, string> };
  configPatches?: {
    applyTo?: string;
    match?: {
      context?: string;
      listener?: { portNumber?: number; filterChain?: { filter?: { name?: string; subFilter?: { name?: string } } } };
      routeConfiguration?: {
        portNumber?: number;
        name?: string;
        gateway?: string;
        vhost?: { name?: string; route?: { name?: string; action?: string } };
      };
    };
    patch?: { operation?: string; value?: unknown };
  }[];
}

const INSERTS: readonly string[] = ['INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'ADD'] satisfies InsertOperation[];

function isInsert(op: string): op is InsertOperation {
  return INSERTS.includes(op);
}

/** The local rate limit filter patches of the EnvoyFilters applying here, oldest first. */
function* filterPatches(
  ctx: TranslateContext,
): Generator<{ r: Resource; index: number; context: unknown; port: unknown; value: unknown; operation: InsertOperation; subFilter: string | null }> {
  for (const r of ctx.resourcesOf('EnvoyFilter')) {
    const spec = (r.spec ?? {}) as EnvoyFilterSpec;
    if (!selects(ctx, r, spec.workloadSelector?.labels)) continue;
    for (const [index, p] of (spec.configPatches ?? []).entries()) {
      if (p.applyTo !== 'HTTP_FILTER') continue;
      const value = obj(p.patch?.value);
      if (value?.name !== LOCAL_RATE_LIMIT_FILTER) continue;
      const operation = p.patch?.operation ?? '';
      if (!isInsert(operation)) {
        ctx.warn(r, ['spec', 'configPatches', index, 'patch', 'operation'], `${String(p.patch?.operation)} of ${LOCAL_RATE_LIMIT_FILTER} is not supported; only inserting the filter is`);
        continue;
      }
      const subFilter = p.match?.listener?.filterChain?.filter?.subFilter?.name;
      yield { r, index, context: p.match?.context, port: p.match?.listener?.portNumber, value, operation, subFilter: typeof subFilter === 'string' && subFilter !== '' ? subFilter : null };
    }
  }
}

interface NativeSpec {
  selector?: { matchLabels?: Record<string, string> };
  context?: PatchContext;
  tokenBucket?: { maxTokens?: number; tokensPerFill?: number; fillInterval?: string };
  responseHeaders?: boolean;
  enforcedPercent?: number;
}

/** A LocalRateLimit resource as the filter's config; null when it does not apply or is invalid (reported). */
function nativeLimit(ctx: TranslateContext, r: Resource, context: PatchContext, listenerPort: number): LocalRateLimitConfig | null {
  const spec = (r.spec ?? {}) as NativeSpec;
  if (!selects(ctx, r, spec.selector?.matchLabels)) return null;
  const want = spec.context ?? (ctx.node.kind === 'gateway' ? 'GATEWAY' : 'SIDECAR_INBOUND');
  if (want !== context) return null;
  const origin = `LocalRateLimit ${r.metadata.namespace}/${r.metadata.name}`;
  const reader = new ProtoReader(ctx, r);
  const tb = spec.tokenBucket;
  let bucket: TokenBucketConfig | null = null;
  if (tb === undefined) reader.error(['spec', 'tokenBucket'], 'tokenBucket is required');
  else bucket = reader.bucket({ max_tokens: tb.maxTokens, tokens_per_fill: tb.tokensPerFill, fill_interval: tb.fillInterval }, ['spec', 'tokenBucket']);
  const enforced = spec.enforcedPercent ?? 100;
  if (typeof enforced !== 'number' || !(enforced >= 0 && enforced <= 100)) reader.error(['spec', 'enforcedPercent'], `enforcedPercent must be 0-100, got ${JSON.stringify(enforced)}`);
  if (!reader.ok || bucket === null) return null;
  return {
    key: `${origin}@${context}:${listenerPort}`,
    origin,
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: bucket,
    enabledPercent: 100,
    enforcedPercent: enforced,
    status: 429,
    grpcResourceExhausted: false,
    responseHeadersToAdd: [],
    xRateLimitHeaders: spec.responseHeaders === true,
    descriptors: [],
    alwaysConsumeDefaultBucket: true,
    rateLimits: [],
  };
}

/**
 * The local rate limit filter for a listener of this proxy, from the EnvoyFilter form Istio
 * users write and from Remora's native LocalRateLimit resource; null when none applies.
 * The chain has one local rate limit: the oldest resource wins, later ones are reported.
 * An EnvoyFilter's patch says where the filter goes; the native resource's limit runs right
 * after authentication and authorization.
 */
export function localRateLimitFilter(ctx: TranslateContext, context: PatchContext, listenerPort: number): FilterInsert | null {
  const found: { config: LocalRateLimitConfig; r: Resource; path: Path; place: FilterPlace }[] = [];
  for (const p of filterPatches(ctx)) {
    if (!contextMatches(p.context, context)) continue;
    if (!portMatches(ctx, p.port, context, listenerPort)) {
      if (context === 'SIDECAR_OUTBOUND' && p.context === 'SIDECAR_OUTBOUND') {
        ctx.warn(p.r, ['spec', 'configPatches', p.index, 'match', 'listener', 'portNumber'], `the sidecar has one outbound listener (port ${listenerPort}), not one per service port; this patch applies to no listener`);
      }
      continue;
    }
    const at: Path = ['spec', 'configPatches', p.index, 'patch', 'value'];
    const value = obj(p.value)!;
    const tc = field(value, 'typed_config');
    const typed = typedLocalRateLimit(ctx, p.r, tc.value, [...at, tc.name]);
    if (typed === null) continue;
    const origin = `EnvoyFilter ${p.r.metadata.namespace}/${p.r.metadata.name}`;
    const config = new ProtoReader(ctx, p.r).limit(typed.value, typed.at, `${origin}#${p.index}@${context}:${listenerPort}`, origin, false);
    const place: FilterPlace = { operation: p.operation, subFilter: p.subFilter, r: p.r, at: ['spec', 'configPatches', p.index] };
    if (config !== null) found.push({ config, r: p.r, path: at, place });
  }
  for (const r of ctx.resourcesOf('LocalRateLimit')) {
    const config = nativeLimit(ctx, r, context, listenerPort);
    if (config !== null) found.push({ config, r, path: ['spec'], place: AFTER_AUTHORIZATION });
  }
  if (found.length === 0) return null;
  for (const extra of found.slice(1)) {
    ctx.warn(extra.r, extra.path, `${found[0]!.config.origin} already sets the local rate limit of this ${context} listener (port ${listenerPort}); this one is ignored`);
  }
  return { filter: { name: LOCAL_RATE_LIMIT_FILTER, config: found[0]!.config }, place: found[0]!.place };
}

/** Istio's names for Remora's route tables, which EnvoyFilter `routeConfiguration.name` uses. */
function istioRouteConfigName(rc: RouteConfiguration, context: PatchContext, listenerPort: number, appPort: number | null): string[] {
  if (context === 'SIDECAR_INBOUND') return [rc.name, `inbound|${appPort ?? listenerPort}||`];
  if (context === 'GATEWAY') return [rc.name];
  return [rc.name];
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
  const patches: { r: Resource; index: number; m: NonNullable<NonNullable<EnvoyFilterSpec['configPatches']>[number]['match']>['routeConfiguration']; value: Obj }[] = [];
  for (const r of ctx.resourcesOf('EnvoyFilter')) {
    const spec = (r.spec ?? {}) as EnvoyFilterSpec;
    if (!selects(ctx, r, spec.workloadSelector?.labels)) continue;
    for (const [index, p] of (spec.configPatches ?? []).entries()) {
      if (p.applyTo !== 'HTTP_ROUTE' || !contextMatches(p.match?.context, context)) continue;
      const value = obj(p.patch?.value);
      if (value === null) continue;
      const tpfc = obj(field(value, 'typed_per_filter_config').value);
      const route = obj(value.route);
      const hasLimit = tpfc !== null && LOCAL_RATE_LIMIT_FILTER in tpfc;
      const hasRateLimits = route !== null && field(route, 'rate_limits').value !== undefined;
      if (!hasLimit && !hasRateLimits) continue;
      if ((p.patch?.operation ?? '') !== 'MERGE') {
        ctx.warn(r, ['spec', 'configPatches', index, 'patch', 'operation'], 'only MERGE patches of routes are supported; this patch is ignored');
        continue;
      }
      patches.push({ r, index, m: p.match?.routeConfiguration, value });
    }
  }
  if (patches.length === 0) return rc;
  const appPort = ctx.ports.appPort;
  const names = istioRouteConfigName(rc, context, listenerPort, appPort);
  let changed = false;
  const virtualHosts = rc.virtualHosts.map((vh) => {
    const port = vhostPort(vh.name, context, appPort, listenerPort);
    const routes = vh.routes.map((route) => {
      let out = route;
      for (const p of patches) {
        const m = p.m ?? {};
        if (m.portNumber !== undefined && m.portNumber !== 0 && m.portNumber !== port) continue;
        if (m.name !== undefined && !names.includes(m.name)) continue;
        if (m.vhost?.name !== undefined && m.vhost.name !== vh.name) continue;
        if (m.vhost?.route?.name !== undefined && m.vhost.route.name !== route.name) continue;
        const act = m.vhost?.route?.action ?? 'ANY';
        if (act !== 'ANY' && act !== actionName(route)) continue;
        const settings = routeSettings(ctx, p.r, p.index, p.value, `${rc.name}/${vh.name}/${route.name}`);
        if (settings === null) continue;
        const prev = out.filterConfigs[LOCAL_RATE_LIMIT_FILTER] as LocalRateLimitRouteConfig | undefined;
        const merged: LocalRateLimitRouteConfig = {
          limit: settings.limit ?? prev?.limit ?? null,
          rateLimits: settings.rateLimits.length > 0 ? settings.rateLimits : (prev?.rateLimits ?? []),
        };
        out = { ...out, filterConfigs: { ...out.filterConfigs, [LOCAL_RATE_LIMIT_FILTER]: merged } };
        changed = true;
        if (!applied.some((a) => a.r === p.r && a.index === p.index)) applied.push({ r: p.r, index: p.index });
      }
      return out;
    });
    return { ...vh, routes };
  });
  return changed ? { ...rc, virtualHosts } : rc;
}

function routeSettings(ctx: TranslateContext, r: Resource, index: number, value: Obj, routeKey: string): LocalRateLimitRouteConfig | null {
  const at: Path = ['spec', 'configPatches', index, 'patch', 'value'];
  const tpf = field(value, 'typed_per_filter_config');
  const tc = obj(tpf.value)?.[LOCAL_RATE_LIMIT_FILTER];
  const reader = new ProtoReader(ctx, r);
  let limit: LocalRateLimitConfig | null = null;
  if (tc !== undefined) {
    const typed = typedLocalRateLimit(ctx, r, tc, [...at, tpf.name, LOCAL_RATE_LIMIT_FILTER]);
    if (typed === null) return null;
    const origin = `EnvoyFilter ${r.metadata.namespace}/${r.metadata.name}`;
    limit = reader.limit(typed.value, typed.at, `${origin}#${index}@route:${routeKey}`, origin, true);
    if (limit === null) return null;
  }
  const route = obj(value.route);
  const rl = route === null ? null : field(route, 'rate_limits');
  const rateLimits = rl === null ? [] : reader.rateLimits(rl.value, [...at, 'route', rl.name]);
  return reader.ok ? { limit, rateLimits } : null;
}

const DIRECTION_CONTEXT: Readonly<Record<string, PatchContext>> = { outbound: 'SIDECAR_OUTBOUND', inbound: 'SIDECAR_INBOUND', gateway: 'GATEWAY' };

/** Applies the HTTP_ROUTE patches to every listener's route table (in place), each in its listener's context. */
export function applyLocalRateLimitRoutes(
  ctx: TranslateContext,
  listeners: readonly { readonly direction: string; readonly port: number; readonly routeConfig: string; readonly httpFilters: readonly HttpFilterConfig[] }[],
  routeConfigs: RouteConfiguration[],
): void {
  for (const l of listeners) {
    const i = routeConfigs.findIndex((rc) => rc.name === l.routeConfig);
    const context = DIRECTION_CONTEXT[l.direction];
    if (i < 0 || context === undefined) continue;
    const applied: { r: Resource; index: number }[] = [];
    routeConfigs[i] = withLocalRateLimitRoutes(ctx, routeConfigs[i]!, context, l.port, applied);
    if (applied.length > 0 && !l.httpFilters.some((f) => f.name === LOCAL_RATE_LIMIT_FILTER)) {
      // Envoy only reads a route's typed_per_filter_config when the filter is in the chain.
      for (const a of applied) {
        ctx.warn(a.r, ['spec', 'configPatches', a.index], `no HTTP_FILTER patch inserts ${LOCAL_RATE_LIMIT_FILTER} on the ${context} listener (port ${l.port}), so this route patch has no effect there`);
      }
    }
  }
}
