/**
 * Semantic checks of Remora's LocalRateLimit (ratelimit.remora.dev/v1alpha1) beyond its
 * schema: the fill interval must be a duration Envoy's local rate limiter accepts.
 */
import { duration, obj, type Obj, type Path, type Report } from './checks-common.ts';

/** Envoy refuses token buckets that refill more often than this (local_ratelimit_impl.cc). */
export const MIN_FILL_INTERVAL_MS = 50;

export function checkLocalRateLimit(r: Report, at: Path, spec: Obj): void {
  const bucket = obj(spec.tokenBucket);
  if (bucket === null) return;
  const path = [...at, 'tokenBucket', 'fillInterval'];
  const ms = duration(r, path, bucket.fillInterval, true);
  if (ms !== null && ms >= 1 && ms < MIN_FILL_INTERVAL_MS) {
    r.error(path, `fillInterval must be at least ${MIN_FILL_INTERVAL_MS}ms (Envoy's limit for token bucket refills), got ${JSON.stringify(bucket.fillInterval)}`);
  }
}
