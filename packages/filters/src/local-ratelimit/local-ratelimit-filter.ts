/**
 * `envoy.filters.http.local_ratelimit` per request: pick the route's limiter (its
 * typed_per_filter_config) or the listener's, decide whether this request is checked
 * (`filter_enabled`), take a token, and refuse (`filter_enforced`) with Envoy's 429
 * `local_rate_limited`, response flag RL and `x-envoy-ratelimited: true`. Stateless per
 * request: one instance serves every request; the buckets live in the compiled limiters.
 */
import { GrpcStatus } from '@remora/config';
import { FilterName, FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type SharedFilterConfig } from '../filter.ts';
import type { Stat } from '../filter-stats.ts';
import { populateDescriptor, type RateLimitEntry } from '../ratelimit/rate-limit-actions.ts';
import type { Bucket } from './token-bucket.ts';
import { draw } from '../fractional-percent.ts';

/** Envoy's local reply body and details for a refused request. */
export const LOCAL_RATE_LIMITED = 'local_rate_limited';

/** gRPC RESOURCE_EXHAUSTED, for `rate_limited_as_resource_exhausted`. */
const GRPC_RESOURCE_EXHAUSTED = GrpcStatus.RESOURCE_EXHAUSTED;

export interface DescriptorBucket {
  readonly keys: readonly string[];
  readonly values: readonly string[];
  readonly bucket: Bucket;
}

/**
 * Envoy's local rate limit counters, `<stat_prefix>.http_local_rate_limit.*`: requests the
 * filter was enabled for, that got a token (ok), that did not (rate_limited), and of those
 * the ones refused (enforced).
 */
export interface LocalRateLimitStats {
  readonly enabled: Stat;
  readonly ok: Stat;
  readonly rateLimited: Stat;
  readonly enforced: Stat;
}

export interface LimiterSettings {
  readonly stats: LocalRateLimitStats;
  readonly bucket: Bucket | null;
  readonly enabledPercent: number;
  readonly enforcedPercent: number;
  readonly status: number;
  readonly grpcResourceExhausted: boolean;
  readonly responseHeadersToAdd: readonly (readonly [string, string])[];
  readonly xRateLimitHeaders: boolean;
  readonly descriptors: readonly DescriptorBucket[];
  readonly alwaysConsumeDefaultBucket: boolean;
  readonly rateLimits: readonly RateLimitEntry[];
}

// Scratch space for the descriptor the request yields; requests run one at a time on the loop.
const scratchKeys: string[] = [];
const scratchValues: string[] = [];

/** A compiled local rate limit: a listener's or one route's. */
export class LocalRateLimiter {
  readonly bucket: Bucket | null;
  readonly enabledPercent: number;
  readonly enforcedPercent: number;
  readonly status: number;
  readonly grpcStatus: number | null;
  readonly responseHeadersToAdd: readonly (readonly [string, string])[];
  readonly xRateLimitHeaders: boolean;
  readonly descriptors: readonly DescriptorBucket[];
  readonly alwaysConsumeDefaultBucket: boolean;
  readonly rateLimits: readonly RateLimitEntry[];
  readonly stats: LocalRateLimitStats;
  /** The bucket the last `check` reports on (x-ratelimit-* headers); valid until the next call. */
  reported: Bucket | null = null;

  constructor(s: LimiterSettings) {
    this.stats = s.stats;
    this.bucket = s.bucket;
    this.enabledPercent = s.enabledPercent;
    this.enforcedPercent = s.enforcedPercent;
    this.status = s.status;
    this.grpcStatus = s.grpcResourceExhausted ? GRPC_RESOURCE_EXHAUSTED : null;
    this.responseHeadersToAdd = s.responseHeadersToAdd;
    this.xRateLimitHeaders = s.xRateLimitHeaders;
    this.descriptors = s.descriptors;
    this.alwaysConsumeDefaultBucket = s.alwaysConsumeDefaultBucket;
    this.rateLimits = s.rateLimits;
  }

  /**
   * Takes the request's tokens: from every descriptor bucket its descriptors match (stopping
   * at the first that is empty), then from the limiter's own bucket (always, or only when no
   * descriptor matched). true: allowed, or nothing applies.
   */
  check(req: FilterRequest, routeRateLimits: readonly RateLimitEntry[]): boolean {
    this.reported = this.bucket;
    let matched = false;
    if (this.descriptors.length > 0) {
      const limits = this.rateLimits.length > 0 ? this.rateLimits : routeRateLimits;
      for (let i = 0; i < limits.length; i++) {
        const entry = limits[i]!;
        // Envoy's local rate limit reads the stage 0 entries only.
        if (entry.stage !== 0 || !populateDescriptor(req, entry.actions, scratchKeys, scratchValues)) continue;
        const ds = this.descriptors;
        for (let d = 0; d < ds.length; d++) {
          const desc = ds[d]!;
          if (!sameDescriptor(desc)) continue;
          matched = true;
          if (this.reported === null || desc.bucket.remaining < this.reported.remaining) this.reported = desc.bucket;
          if (!desc.bucket.consume()) {
            this.reported = desc.bucket;
            return false;
          }
        }
      }
    }
    if (this.bucket === null || (matched && !this.alwaysConsumeDefaultBucket)) return true;
    return this.bucket.consume();
  }
}

function sameDescriptor(d: DescriptorBucket): boolean {
  const n = d.keys.length;
  if (n !== scratchKeys.length) return false;
  for (let i = 0; i < n; i++) if (d.keys[i] !== scratchKeys[i] || d.values[i] !== scratchValues[i]) return false;
  return true;
}

/** A route's compiled settings: its own limiter (or null) and its `rate_limits`. */
export interface RouteLimit {
  readonly limiter: LocalRateLimiter | null;
  readonly rateLimits: readonly RateLimitEntry[];
}

const NO_RATE_LIMITS: readonly RateLimitEntry[] = [];

export class LocalRateLimitFilter implements HttpFilter {
  readonly limiter: LocalRateLimiter;

  constructor(limiter: LocalRateLimiter) {
    this.limiter = limiter;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    // A route's own config replaces the listener's, bucket and all (Envoy's per-route config).
    const route = req.routeFilterConfig(FilterName.LocalRateLimit) as RouteLimit | null;
    const limiter = route?.limiter ?? this.limiter;
    if (!draw(limiter.enabledPercent)) return FilterStatus.Continue;
    const stats = limiter.stats;
    stats.enabled.value++;
    const allowed = limiter.check(req, route === null ? NO_RATE_LIMITS : route.rateLimits);
    const reported = limiter.reported;
    if (limiter.xRateLimitHeaders && reported !== null) {
      callbacks.addResponseHeader('x-ratelimit-limit', String(reported.maxTokens));
      callbacks.addResponseHeader('x-ratelimit-remaining', String(reported.remaining));
      callbacks.addResponseHeader('x-ratelimit-reset', String(reported.resetSeconds));
    }
    if (allowed) {
      stats.ok.value++;
      return FilterStatus.Continue;
    }
    stats.rateLimited.value++;
    // Over the limit but not enforced for this request: it goes on, only counted (Envoy's stats).
    if (!draw(limiter.enforcedPercent)) return FilterStatus.Continue;
    stats.enforced.value++;
    const extra = limiter.responseHeadersToAdd;
    for (let i = 0; i < extra.length; i++) callbacks.addResponseHeader(extra[i]![0], extra[i]![1]);
    callbacks.addResponseHeader('x-envoy-ratelimited', 'true');
    callbacks.sendLocalReply(limiter.status, LOCAL_RATE_LIMITED, 'RL', LOCAL_RATE_LIMITED, limiter.grpcStatus);
    return FilterStatus.StopIteration;
  }
}

export type LocalRateLimitFilterConfig = SharedFilterConfig<LocalRateLimitFilter>;
