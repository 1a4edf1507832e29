/**
 * Remora's LocalRateLimit (ratelimit.remora.dev/v1alpha1): a local rate limit without Envoy's
 * config language, as Envoy's LocalRateLimit filter (proto3 JSON) on the listeners it selects.
 * The EnvoyFilter form of Istio's "Enabling Rate Limits using Envoy" task patches Envoy's
 * resources instead (envoyfilter-patch.ts; its values are read by envoyfilter-local-ratelimit.ts).
 */
import type { LocalRateLimitConfigJson } from '../model/filters.ts';
import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import { parseDuration } from '../schema/duration.ts';
import { msToDurationJson } from '../model/envoy-values.ts';
import type { TranslateContext } from './context.ts';
import { selects, type PatchContext } from './envoyfilter.ts';

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
export const LOCAL_RATE_LIMIT_TYPE = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';

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
 * The local rate limit filter of a listener of this proxy (`context`, `port` for messages)
 * from the LocalRateLimit resources that select it; null when none does. A listener has one:
 * the oldest resource wins, later ones are reported.
 */
export function localRateLimitFilter(ctx: TranslateContext, context: PatchContext, port: number): HttpFilterConfig | null {
  const found: { config: LocalRateLimitConfigJson; r: Resource }[] = [];
  for (const r of ctx.resourcesOf('LocalRateLimit')) {
    const config = nativeLimit(ctx, r, context);
    if (config !== null) found.push({ config, r });
  }
  const first = found[0];
  if (first === undefined) return null;
  for (const extra of found.slice(1)) {
    ctx.warn(extra.r, ['spec'], `LocalRateLimit ${first.r.metadata.namespace}/${first.r.metadata.name} already sets the local rate limit of this ${context} listener (port ${port}); this one is ignored`);
  }
  return { name: LOCAL_RATE_LIMIT_FILTER, config: first.config };
}
