/**
 * `envoy.filters.http.ratelimit` compiled once per snapshot from Envoy's RateLimit message
 * (envoy.extensions.filters.http.ratelimit.v3, proto3 JSON): the domain and stage of the
 * descriptors, the rate limit service (a gRPC cluster of the snapshot), the timeout, what an
 * error means (`failure_mode_deny`, `status_on_error`) and what a refused request gets. What
 * Remora cannot honour is a compile error naming the field.
 */
import { durationJsonMs, httpStatusCode, timerMs } from '@remora/config';
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ratelimit/v3/rate_limit_pb.js';

/** Envoy's RLS call timeout when `timeout` is unset. */
export const DEFAULT_TIMEOUT_MS = 20;

/** Which requests the filter checks: Envoy's `request_type` (internal: `x-envoy-internal: true`). */
export const RequestType = { Both: 0, Internal: 1, External: 2 } as const;
export type RequestType = (typeof RequestType)[keyof typeof RequestType];

/** The compiled RateLimit message. */
export class RateLimitSettings {
  readonly domain: string;
  readonly stage: number;
  readonly requestType: RequestType;
  readonly timeoutMs: number;
  readonly failureModeDeny: boolean;
  /** gRPC requests refused get RESOURCE_EXHAUSTED instead of the status mapped from the HTTP one. */
  readonly rateLimitedAsResourceExhausted: boolean;
  readonly cluster: string;
  /** The `:authority` of the call; the cluster's name when unset. */
  readonly authority: string;
  readonly xRateLimitHeaders: boolean;
  readonly xEnvoyRateLimitedHeader: boolean;
  readonly rateLimitedStatus: number;
  /** `response_headers_to_add`, for refused requests: flat name, value list. */
  readonly responseHeadersToAdd: readonly string[];
  readonly statusOnError: number;
  readonly statPrefix: string;

  constructor(c: RateLimitJson) {
    if (typeof c.domain !== 'string' || c.domain === '') throw new Error('domain: required');
    this.domain = c.domain;
    const stage = c.stage ?? 0;
    if (!Number.isInteger(stage) || stage < 0 || stage > 10) throw new Error(`stage: must be 0 to 10, got ${String(stage)}`);
    this.stage = stage;
    const type = c.requestType ?? 'both';
    if (type !== 'both' && type !== 'internal' && type !== 'external') throw new Error(`requestType: must be internal, external or both, got ${JSON.stringify(type)}`);
    this.requestType = type === 'internal' ? RequestType.Internal : type === 'external' ? RequestType.External : RequestType.Both;
    this.timeoutMs = c.timeout === undefined ? DEFAULT_TIMEOUT_MS : timerMs(durationJsonMs(c.timeout, 'timeout'));
    this.failureModeDeny = c.failureModeDeny === true;
    this.rateLimitedAsResourceExhausted = c.rateLimitedAsResourceExhausted === true;

    const rls = c.rateLimitService;
    if (rls === undefined) throw new Error('rateLimitService: required');
    if (rls.transportApiVersion !== undefined && rls.transportApiVersion !== 'V3' && (rls.transportApiVersion as unknown) !== 2) {
      throw new Error(`rateLimitService.transportApiVersion: only V3 is supported, got ${String(rls.transportApiVersion)}`);
    }
    const g = rls.grpcService;
    if (g === undefined) throw new Error('rateLimitService.grpcService: required');
    if (g.googleGrpc !== undefined) throw new Error('rateLimitService.grpcService.googleGrpc: not supported; use envoyGrpc (a cluster)');
    const cluster = g.envoyGrpc?.clusterName;
    if (typeof cluster !== 'string' || cluster === '') throw new Error('rateLimitService.grpcService.envoyGrpc.clusterName: required');
    this.cluster = cluster;
    this.authority = g.envoyGrpc?.authority || cluster;
    // Envoy bounds the call by the filter's `timeout`; grpcService.timeout is not read for it.

    const x = c.enableXRatelimitHeaders ?? 'OFF';
    if (x !== 'OFF' && x !== 'DRAFT_VERSION_03') throw new Error(`enableXRatelimitHeaders: must be OFF or DRAFT_VERSION_03, got ${JSON.stringify(x)}`);
    this.xRateLimitHeaders = x === 'DRAFT_VERSION_03';
    this.xEnvoyRateLimitedHeader = c.disableXEnvoyRatelimitedHeader !== true;
    this.rateLimitedStatus = status(c.rateLimitedStatus?.code, 'rateLimitedStatus.code', 429);
    // Envoy answers 429 for a rate_limited_status below 400.
    if (this.rateLimitedStatus < 400) this.rateLimitedStatus = 429;
    this.statusOnError = status(c.statusOnError?.code, 'statusOnError.code', 500);
    const add: string[] = [];
    (c.responseHeadersToAdd ?? []).forEach((h, i) => {
      const key = h.header?.key;
      if (typeof key !== 'string' || key === '') throw new Error(`responseHeadersToAdd[${i}].header.key: required`);
      add.push(key.toLowerCase(), h.header?.value ?? '');
    });
    this.responseHeadersToAdd = add;
    this.statPrefix = c.statPrefix ?? '';
  }
}

function status(code: unknown, at: string, fallback: number): number {
  if (code === undefined) return fallback;
  const s = httpStatusCode(code);
  if (s === null) throw new Error(`${at}: not an HTTP status: ${JSON.stringify(code)}`);
  return s;
}
