/**
 * `envoy.filters.http.local_ratelimit`: the translator hands over a `LocalRateLimitConfig`
 * per listener (and per route, for typed_per_filter_config). Compiling checks it and fetches
 * the buckets from the persistent store, keyed by the config's key and bucket settings, so an
 * unchanged limit keeps its tokens across hot reloads while a changed one starts full.
 */
import type { LocalRateLimitConfig, LocalRateLimitRouteConfig, RateLimitAction, TokenBucketConfig } from '@remora/config';
import { FilterName, SharedFilterConfig, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import {
  type CompiledAction,
  type DescriptorBucket,
  LocalRateLimitFilter,
  type LocalRateLimitFilterConfig,
  LocalRateLimiter,
  type RouteLimit,
} from './local-ratelimit-filter.ts';
import { bucketKey, type Clock, monotonicClock, TokenBucket } from './token-bucket.ts';

/** Envoy refuses token buckets that refill more often than this. */
export const MIN_FILL_INTERVAL_MS = 50;

export class LocalRateLimitFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.LocalRateLimit;
  readonly #clock: Clock;

  constructor(clock: Clock = monotonicClock) {
    this.#clock = clock;
  }

  compile(config: unknown, context: FilterCompileContext): LocalRateLimitFilterConfig {
    const limiter = this.#limiter(checkConfig(config, false), context);
    return new SharedFilterConfig(this.name, new LocalRateLimitFilter(limiter));
  }

  /** A route's own limit (Envoy requires its token bucket; the bucket is the route's alone) and its rate_limits. */
  compileRouteConfig(config: unknown, context: FilterCompileContext): RouteLimit {
    const c = config as Partial<LocalRateLimitRouteConfig> | null;
    if (c === null || typeof c !== 'object' || !Array.isArray(c.rateLimits)) throw new Error('route config must have a rateLimits list');
    return {
      limiter: c.limit === null || c.limit === undefined ? null : this.#limiter(checkConfig(c.limit, true), context),
      rateLimits: c.rateLimits.map((r) => r.actions.map(compileAction)),
    };
  }

  #limiter(c: LocalRateLimitConfig, context: FilterCompileContext): LocalRateLimiter {
    const clock = this.#clock;
    const bucket = (key: string, b: TokenBucketConfig): TokenBucket => context.persistent(bucketKey(key, b), () => new TokenBucket(b, clock));
    const descriptors: DescriptorBucket[] = c.descriptors.map((d) => ({
      keys: d.entries.map((e) => e.key),
      values: d.entries.map((e) => e.value),
      bucket: bucket(`${c.key}#${d.entries.map((e) => `${e.key}=${e.value}`).join(',')}`, d.tokenBucket),
    }));
    if (c.tokenBucket === null && descriptors.length === 0) {
      context.warn(`local rate limit ${c.origin}: no token_bucket and no descriptors; it limits nothing unless a route brings its own`);
    }
    return new LocalRateLimiter({
      bucket: c.tokenBucket === null ? null : bucket(c.key, c.tokenBucket),
      enabledPercent: c.enabledPercent,
      enforcedPercent: c.enforcedPercent,
      status: c.status,
      grpcResourceExhausted: c.grpcResourceExhausted,
      responseHeadersToAdd: c.responseHeadersToAdd,
      xRateLimitHeaders: c.xRateLimitHeaders,
      descriptors,
      alwaysConsumeDefaultBucket: c.alwaysConsumeDefaultBucket,
      rateLimits: c.rateLimits.map((r) => r.actions.map(compileAction)),
    });
  }
}

function compileAction(a: RateLimitAction): CompiledAction {
  switch (a.kind) {
    case 'request_headers':
      return { kind: 'header', key: a.descriptorKey, header: a.headerName.toLowerCase(), skipIfAbsent: a.skipIfAbsent };
    case 'generic_key':
      return { kind: 'generic', key: a.descriptorKey, value: a.descriptorValue };
    case 'remote_address':
      return { kind: 'remote', key: 'remote_address' };
  }
}

function checkBucket(b: unknown, where: string): void {
  const t = b as Partial<TokenBucketConfig> | null;
  if (t === null || typeof t !== 'object') throw new Error(`${where} must be an object`);
  if (!Number.isInteger(t.maxTokens) || t.maxTokens! < 1) throw new Error(`${where}.maxTokens must be a positive integer, got ${String(t.maxTokens)}`);
  if (!Number.isInteger(t.tokensPerFill) || t.tokensPerFill! < 1) {
    throw new Error(`${where}.tokensPerFill must be a positive integer, got ${String(t.tokensPerFill)}`);
  }
  if (typeof t.fillIntervalMs !== 'number' || !(t.fillIntervalMs >= MIN_FILL_INTERVAL_MS)) {
    throw new Error(`${where}.fillIntervalMs must be at least ${MIN_FILL_INTERVAL_MS}, got ${String(t.fillIntervalMs)}`);
  }
}

function percent(v: unknown, where: string): void {
  if (typeof v !== 'number' || !(v >= 0 && v <= 100)) throw new Error(`${where} must be a percentage (0-100), got ${String(v)}`);
}

function checkConfig(config: unknown, perRoute: boolean): LocalRateLimitConfig {
  const c = config as Partial<LocalRateLimitConfig> | null;
  if (c === null || typeof c !== 'object') throw new Error('config must be an object');
  if (typeof c.key !== 'string' || c.key === '') throw new Error('config must have a key');
  const at = typeof c.origin === 'string' && c.origin !== '' ? `${c.origin}: ` : '';
  if (c.tokenBucket === null || c.tokenBucket === undefined) {
    if (perRoute) throw new Error(`${at}tokenBucket must be set for a route's local rate limit (typed_per_filter_config)`);
  } else {
    checkBucket(c.tokenBucket, `${at}tokenBucket`);
  }
  percent(c.enabledPercent, `${at}enabledPercent`);
  percent(c.enforcedPercent, `${at}enforcedPercent`);
  if (!Number.isInteger(c.status) || c.status! < 100 || c.status! > 599) throw new Error(`${at}status must be an HTTP status, got ${String(c.status)}`);
  if (!Array.isArray(c.responseHeadersToAdd) || !Array.isArray(c.descriptors) || !Array.isArray(c.rateLimits)) {
    throw new Error(`${at}responseHeadersToAdd, descriptors and rateLimits must be lists`);
  }
  c.descriptors.forEach((d, i) => {
    if (!Array.isArray(d?.entries) || d.entries.length === 0) throw new Error(`${at}descriptors[${i}].entries must not be empty`);
    checkBucket(d.tokenBucket, `${at}descriptors[${i}].tokenBucket`);
  });
  return {
    statPrefix: '',
    origin: '',
    grpcResourceExhausted: false,
    xRateLimitHeaders: false,
    alwaysConsumeDefaultBucket: true,
    ...c,
    tokenBucket: c.tokenBucket ?? null,
  } as LocalRateLimitConfig;
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.local_ratelimit`. */
export const localRateLimitFactory = new LocalRateLimitFilterFactory();
