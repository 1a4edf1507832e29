/**
 * `envoy.filters.http.ratelimit` per request, as Envoy's: the route's `rate_limits` entries of
 * the filter's stage make the request's descriptors; none, and the request goes on untouched.
 * Else the chain stops while the rate limit service is asked (`ShouldRateLimit` over gRPC
 * through the service's cluster, bounded by `timeout`). OVER_LIMIT: the client gets 429 (or
 * `rate_limited_status`), response flag RL, details `request_rate_limited`,
 * `x-envoy-ratelimited: true`. OK: the service's headers go upstream and to the client. No
 * answer (no cluster, connection failure, timeout, a gRPC error): the request goes on
 * (`failure_mode_allowed`), or with `failure_mode_deny` gets `status_on_error` (500), flag
 * RLSE, details `rate_limiter_error`.
 */
import { GrpcStatus } from '@remora/config';
import { FilterName, FilterStatus, type FilterCallbacks, type FilterRequest, type FilterUpstream, type HttpFilter, type HttpFilterConfig } from '../filter.ts';
import type { FilterStats, Stat } from '../filter-stats.ts';
import { populateDescriptor, type RateLimitEntry } from './rate-limit-actions.ts';
import { RequestType, type RateLimitSettings } from './ratelimit-config.ts';
import { rateLimitCodec, SHOULD_RATE_LIMIT_PATH, type RateLimitCodec, type RateLimitDecision } from './ratelimit-grpc.ts';

export const RATE_LIMITED = 'request_rate_limited';
export const RATE_LIMITER_ERROR = 'rate_limiter_error';

/** gRPC RESOURCE_EXHAUSTED, for `rate_limited_as_resource_exhausted`. */
const GRPC_RESOURCE_EXHAUSTED = GrpcStatus.RESOURCE_EXHAUSTED;

/** Envoy's counters, `cluster.<route target cluster>.[<stat_prefix>.]ratelimit.*`. */
export interface RateLimitStats {
  readonly ok: Stat;
  readonly overLimit: Stat;
  readonly error: Stat;
  readonly failureModeAllowed: Stat;
}

/** A route's compiled settings for the filter: its rate limit entries and the cluster its stats are named by. */
export interface RateLimitRouteConfig {
  readonly entries: readonly RateLimitEntry[];
  /** The route's single cluster; null (weighted clusters) counts under the connection manager's `http.<prefix>.ratelimit.*`. */
  readonly cluster: string | null;
}

// Scratch space for one descriptor; requests build theirs one at a time on the loop.
const scratchKeys: string[] = [];
const scratchValues: string[] = [];

/** The compiled filter of one listener in one snapshot; each request gets its own instance. */
export class RateLimitFilterConfig implements HttpFilterConfig {
  readonly name: string;
  readonly settings: RateLimitSettings;
  readonly upstream: FilterUpstream | null;
  readonly #stats: FilterStats;
  readonly #statsByCluster = new Map<string, RateLimitStats>();
  readonly #statsOfRoute: RateLimitStats;
  codec: RateLimitCodec | null = null;
  readonly codecReady: Promise<RateLimitCodec>;

  constructor(name: string, settings: RateLimitSettings, upstream: FilterUpstream | null, stats: FilterStats) {
    this.name = name;
    this.settings = settings;
    this.upstream = upstream;
    this.#stats = stats;
    this.#statsOfRoute = this.#make((n) => stats.http(n), '');
    this.codecReady = rateLimitCodec();
    this.codecReady.then((c) => (this.codec = c), () => undefined);
  }

  create(): RateLimitFilter {
    return new RateLimitFilter(this);
  }

  /** The counters of a route's cluster, resolved on its first request and kept: a map lookup per call after that. */
  statsFor(cluster: string | null): RateLimitStats {
    if (cluster === null) return this.#statsOfRoute;
    let s = this.#statsByCluster.get(cluster);
    if (s === undefined) {
      const root = this.#stats;
      s = this.#make((n) => root.root(n), `cluster.${cluster}.`);
      this.#statsByCluster.set(cluster, s);
    }
    return s;
  }

  #make(stat: (name: string) => Stat, scope: string): RateLimitStats {
    const p = `${scope}${this.settings.statPrefix === '' ? '' : `${this.settings.statPrefix}.`}ratelimit.`;
    return { ok: stat(`${p}ok`), overLimit: stat(`${p}over_limit`), error: stat(`${p}error`), failureModeAllowed: stat(`${p}failure_mode_allowed`) };
  }
}

export class RateLimitFilter implements HttpFilter {
  readonly #config: RateLimitFilterConfig;
  #cancel: (() => void) | null = null;
  #req: FilterRequest | null = null;
  #callbacks: FilterCallbacks | null = null;
  #stats: RateLimitStats | null = null;

  constructor(config: RateLimitFilterConfig) {
    this.#config = config;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const c = this.#config;
    const s = c.settings;
    const route = req.routeFilterConfig(FilterName.RateLimit) as RateLimitRouteConfig | null;
    if (route === null) return FilterStatus.Continue;
    if (s.requestType !== RequestType.Both && (req.requestHeader('x-envoy-internal') === 'true') !== (s.requestType === RequestType.Internal)) return FilterStatus.Continue;
    let descriptors: string[][] | null = null;
    const entries = route.entries;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.stage !== s.stage || !populateDescriptor(req, e.actions, scratchKeys, scratchValues)) continue;
      const flat: string[] = [];
      for (let k = 0; k < scratchKeys.length; k++) flat.push(scratchKeys[k]!, scratchValues[k]!);
      (descriptors ??= []).push(flat);
    }
    if (descriptors === null) return FilterStatus.Continue;
    this.#req = req;
    this.#callbacks = callbacks;
    this.#stats = c.statsFor(route.cluster);
    if (c.upstream === null) {
      this.#onError();
      return FilterStatus.StopIteration;
    }
    if (c.codec !== null) this.#send(c.upstream, c.codec, descriptors);
    else {
      const ds = descriptors;
      c.codecReady.then(
        (codec) => {
          if (!callbacks.aborted) this.#send(c.upstream!, codec, ds);
        },
        () => this.#onError(),
      );
    }
    return FilterStatus.StopIteration;
  }

  onDestroy(): void {
    this.#cancel?.();
    this.#cancel = null;
  }

  #send(upstream: FilterUpstream, codec: RateLimitCodec, descriptors: readonly (readonly string[])[]): void {
    const s = this.#config.settings;
    let body: Buffer;
    try {
      body = codec.encode(s.domain, descriptors);
    } catch {
      this.#onError();
      return;
    }
    const headers = ['host', s.authority, 'content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', `${Math.max(1, Math.ceil(s.timeoutMs))}m`];
    this.#cancel = upstream.send(s.cluster, { method: 'POST', path: SHOULD_RATE_LIMIT_PATH, headers, body, timeoutMs: s.timeoutMs }, (failure, res) => {
      this.#cancel = null;
      if (failure !== null || res === null || res.status !== 200 || grpcStatus(res.trailers, res.headers) !== '0') return this.#onError();
      let d: RateLimitDecision;
      try {
        d = codec.decode(res.body);
      } catch {
        return this.#onError();
      }
      this.#onDecision(d);
    });
  }

  #onDecision(d: RateLimitDecision): void {
    const cb = this.#callbacks!;
    if (cb.aborted) return;
    const s = this.#config.settings;
    const stats = this.#stats!;
    for (let i = 0; i < d.responseHeaders.length; i += 2) cb.addResponseHeader(d.responseHeaders[i]!, d.responseHeaders[i + 1]!);
    if (s.xRateLimitHeaders && d.xRateLimit !== null) {
      cb.addResponseHeader('x-ratelimit-limit', d.xRateLimit.limit);
      cb.addResponseHeader('x-ratelimit-remaining', d.xRateLimit.remaining);
      cb.addResponseHeader('x-ratelimit-reset', d.xRateLimit.reset);
    }
    if (!d.overLimit) {
      stats.ok.value++;
      const req = this.#req!;
      for (let i = 0; i < d.requestHeaders.length; i += 2) req.setRequestHeader(d.requestHeaders[i]!, d.requestHeaders[i + 1]!);
      cb.continueRequest();
      return;
    }
    stats.overLimit.value++;
    const add = s.responseHeadersToAdd;
    for (let i = 0; i < add.length; i += 2) cb.addResponseHeader(add[i]!, add[i + 1]!);
    if (s.xEnvoyRateLimitedHeader) cb.addResponseHeader('x-envoy-ratelimited', 'true');
    cb.sendLocalReply(s.rateLimitedStatus, d.body === '' ? null : d.body, 'RL', RATE_LIMITED, s.rateLimitedAsResourceExhausted ? GRPC_RESOURCE_EXHAUSTED : null);
  }

  #onError(): void {
    const cb = this.#callbacks!;
    if (cb.aborted) return;
    const s = this.#config.settings;
    const stats = this.#stats!;
    stats.error.value++;
    if (!s.failureModeDeny) {
      stats.failureModeAllowed.value++;
      cb.continueRequest();
      return;
    }
    cb.sendLocalReply(s.statusOnError, null, 'RLSE', RATE_LIMITER_ERROR);
  }
}

/** grpc-status from the trailers, or from the headers of a trailers-only response. */
function grpcStatus(trailers: readonly string[], headers: readonly string[]): string | null {
  for (const list of [trailers, headers]) {
    for (let i = 0; i < list.length; i += 2) if (list[i] === 'grpc-status') return list[i + 1]!;
  }
  return null;
}
