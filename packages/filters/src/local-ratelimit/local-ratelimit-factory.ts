/**
 * `envoy.filters.http.local_ratelimit`: compiles Envoy's LocalRateLimit (proto3 JSON) for a
 * listener, and for a route its typed_per_filter_config plus the route's `rate_limits`.
 * Buckets come from the persistent store, keyed by where the config sits (the listener, or
 * the route) and the bucket's settings, so an unchanged limit keeps its tokens across hot
 * reloads while a changed one starts full.
 */
import { durationJsonMs, fractionalPercent, httpStatusCode, type LocalRateLimitConfigJson } from '@remora/config';
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import type { TokenBucketJson } from '@remora/config/envoy/gen/envoy/type/v3/token_bucket_pb.js';
import { DETACHED_STATS } from '../filter-stats.ts';
import { FilterName, SharedFilterConfig, type FilterCompileContext, type HttpFilterFactory, type RouteFilterInput } from '../filter.ts';
import { compileRateLimits } from '../ratelimit/rate-limit-actions.ts';
import {
  type DescriptorBucket,
  LocalRateLimitFilter,
  type LocalRateLimitFilterConfig,
  LocalRateLimiter,
  type RouteLimit,
} from './local-ratelimit-filter.ts';
import type { SharedCells } from '../shared-cells.ts';
import { SharedTokenBucket } from './shared-token-bucket.ts';
import { type Bucket, bucketKey, type Clock, monotonicClock, TokenBucket, type TokenBucketSettings } from './token-bucket.ts';

/** The filter's own rate_limits belong to no route (destination_cluster yields nothing). */

/** Envoy refuses token buckets that refill more often than this. */
export const MIN_FILL_INTERVAL_MS = 50;

/** LocalRateLimit fields Remora does not implement: a config setting one is refused, not half applied. */
const UNSUPPORTED: readonly (keyof LocalRateLimitConfigJson)[] = ['localClusterRateLimit', 'vhRateLimits', 'requestHeadersToAddWhenNotEnforced'];

export class LocalRateLimitFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.LocalRateLimit;
  readonly readsRouteRateLimits = true;
  readonly #clock: Clock;
  /** Shared memory of a proxy with several worker threads: its buckets are taken from by all of them; null: this thread's own. */
  readonly #shared: SharedCells | null;

  constructor(clock: Clock = monotonicClock, shared: SharedCells | null = null) {
    this.#clock = clock;
    this.#shared = shared;
  }

  compile(config: unknown, context: FilterCompileContext): LocalRateLimitFilterConfig {
    const limiter = this.#limiter(config, false, `listener ${context.scope ?? ''}`, context);
    return new SharedFilterConfig(this.name, new LocalRateLimitFilter(limiter));
  }

  /** A route's own limit (Envoy requires its token bucket; the bucket is the route's alone) and the route's rate_limits. */
  compileRouteConfig(config: unknown, context: FilterCompileContext, route: RouteFilterInput): RouteLimit {
    return {
      limiter: config === undefined || config === null ? null : this.#limiter(config, true, `route ${context.scope ?? ''}`, context),
      rateLimits: compileRateLimits(route.rateLimits as readonly RateLimitJson[], 'rate_limits', { ...route, serviceCluster: context.serviceCluster ?? '' }),
    };
  }

  #limiter(config: unknown, perRoute: boolean, scope: string, context: FilterCompileContext): LocalRateLimiter {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error('config must be a LocalRateLimit object');
    const c = config as LocalRateLimitConfigJson;
    for (const f of UNSUPPORTED) if (c[f] !== undefined) throw new Error(`${f} is not supported`);
    if (c.localRateLimitPerDownstreamConnection === true) throw new Error('localRateLimitPerDownstreamConnection is not supported (buckets are per listener or route)');
    if (typeof c.statPrefix !== 'string' || c.statPrefix === '') throw new Error('statPrefix is required');
    const clock = this.#clock;
    const shared = this.#shared;
    const bucket = (key: string, b: TokenBucketSettings): Bucket => {
      const k = bucketKey(key, b);
      return context.persistent(k, () => (shared !== null ? SharedTokenBucket.acquire(shared, k, b) : null) ?? new TokenBucket(b, clock));
    };
    let own: TokenBucketSettings | null = null;
    if (c.tokenBucket === undefined || c.tokenBucket === null) {
      if (perRoute) throw new Error("tokenBucket must be set for a route's local rate limit (typed_per_filter_config)");
    } else {
      own = tokenBucket(c.tokenBucket, 'tokenBucket');
    }
    const descriptors: DescriptorBucket[] = (c.descriptors ?? []).map((d, i) => {
      const entries = d.entries ?? [];
      if (entries.length === 0) throw new Error(`descriptors[${i}].entries must not be empty`);
      if (d.tokenBucket === undefined) throw new Error(`descriptors[${i}].tokenBucket is required`);
      const keys = entries.map((e) => e.key ?? '');
      const values = entries.map((e) => e.value ?? '');
      return { keys, values, bucket: bucket(`${scope}#${keys.map((k, j) => `${k}=${values[j]}`).join(',')}`, tokenBucket(d.tokenBucket, `descriptors[${i}].tokenBucket`)) };
    });
    if (own === null && descriptors.length === 0) {
      context.warn(`local rate limit ${c.statPrefix} (${scope}): no token_bucket and no descriptors; it limits nothing unless a route brings its own`);
    }
    const code = c.status?.code === undefined ? 429 : httpStatusCode(c.status.code);
    if (code === null) throw new Error(`status.code must be an HTTP status, got ${JSON.stringify(c.status?.code)}`);
    const responseHeadersToAdd = (c.responseHeadersToAdd ?? []).map((h, i): [string, string] => {
      const key = h.header?.key;
      if (typeof key !== 'string' || key === '') throw new Error(`responseHeadersToAdd[${i}].header.key is required`);
      return [key.toLowerCase(), h.header?.value ?? ''];
    });
    const always = c.alwaysConsumeDefaultTokenBucket;
    // Envoy's names; two limits with one stat_prefix share their counters, as in Envoy.
    const stats = context.stats ?? DETACHED_STATS;
    const ns = `${c.statPrefix}.http_local_rate_limit.`;
    return new LocalRateLimiter({
      stats: { enabled: stats.root(`${ns}enabled`), ok: stats.root(`${ns}ok`), rateLimited: stats.root(`${ns}rate_limited`), enforced: stats.root(`${ns}enforced`) },
      bucket: own === null ? null : bucket(scope, own),
      // Envoy's defaults when unset: 0%, the filter then checks and enforces nothing.
      enabledPercent: fractionalPercent(c.filterEnabled?.defaultValue, 'filterEnabled.defaultValue'),
      enforcedPercent: fractionalPercent(c.filterEnforced?.defaultValue, 'filterEnforced.defaultValue'),
      // Below 400 Envoy answers 429.
      status: code < 400 ? 429 : code,
      grpcResourceExhausted: c.rateLimitedAsResourceExhausted === true,
      responseHeadersToAdd,
      xRateLimitHeaders: c.enableXRatelimitHeaders === 'DRAFT_VERSION_03',
      descriptors,
      alwaysConsumeDefaultBucket: always === undefined || always === null || always !== false,
      rateLimits: compileRateLimits(c.rateLimits ?? [], 'rateLimits', { cluster: null, serviceCluster: context.serviceCluster ?? '' }),
    });
  }
}

function tokenBucket(b: TokenBucketJson, where: string): TokenBucketSettings {
  const maxTokens = b.maxTokens;
  if (maxTokens === undefined || !Number.isInteger(maxTokens) || maxTokens < 1) throw new Error(`${where}.maxTokens must be a positive integer, got ${String(maxTokens)}`);
  const tokensPerFill = b.tokensPerFill ?? 1;
  if (!Number.isInteger(tokensPerFill) || tokensPerFill < 1) throw new Error(`${where}.tokensPerFill must be a positive integer, got ${String(tokensPerFill)}`);
  if (b.fillInterval === undefined) throw new Error(`${where}.fillInterval is required`);
  const fillIntervalMs = durationJsonMs(b.fillInterval, `${where}.fillInterval`);
  if (fillIntervalMs < MIN_FILL_INTERVAL_MS) throw new Error(`${where}.fillInterval must be at least ${MIN_FILL_INTERVAL_MS}ms, got ${b.fillInterval}`);
  return { maxTokens, tokensPerFill, fillIntervalMs };
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.local_ratelimit`. */
export const localRateLimitFactory = new LocalRateLimitFilterFactory();
