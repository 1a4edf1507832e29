/**
 * Envoy's LocalRateLimit (envoy.extensions.filters.http.local_ratelimit.v3) as an EnvoyFilter
 * patch value carries it: read with Envoy's descriptors (errors name the exact field as
 * written), then Envoy's own rules the descriptors do not carry (protoc-gen-validate: a
 * bucket's max_tokens and fill_interval, a descriptor's bucket and entries; a route's limit
 * needs its bucket) and the fields Remora lacks. The filter's own `rate_limits` is newer than
 * the bundled protos, so it is read apart, as route `rate_limits` (config.route.v3.RateLimit).
 */
import type { DescMessage } from '@bufbuild/protobuf';
import type { RateLimitJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { TokenBucketJson } from '../envoy/gen/envoy/type/v3/token_bucket_pb.ts';
import { durationJsonMs } from '../model/envoy-values.ts';
import type { LocalRateLimitConfigJson } from '../model/filters.ts';
import type { Resource } from '../resources/resource.ts';
import { MIN_FILL_INTERVAL_MS } from '../schema/checks-local-ratelimit.ts';
import type { TranslateContext } from './context.ts';
import { decode, envoyCodec, field, obj, type Obj, type Path } from './envoyfilter.ts';
import { LOCAL_RATE_LIMIT_TYPE } from './local-ratelimit.ts';

const RATE_LIMIT_TYPE = 'envoy.config.route.v3.RateLimit';

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
