import type { HttpFilterConfig } from '../model/listener.ts';
import type { TranslateContext } from './context.ts';

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';

/** Where a listener sits, in EnvoyFilter `match.context` terms. */
export type PatchContext = 'SIDECAR_INBOUND' | 'SIDECAR_OUTBOUND' | 'GATEWAY';

/**
 * The local rate limit filter for a listener of this proxy, from the EnvoyFilter form Istio
 * users write and from Remora's native LocalRateLimit resource; null when none applies.
 */
export function localRateLimitFilter(_ctx: TranslateContext, _context: PatchContext, _listenerPort: number): HttpFilterConfig | null {
  return null;
}

/**
 * Per-route local rate limit configs (EnvoyFilter HTTP_ROUTE patches with
 * typed_per_filter_config), by route name; empty when none.
 */
export function localRateLimitRouteConfigs(_ctx: TranslateContext, _context: PatchContext): Map<string, unknown> {
  return new Map();
}
