/**
 * Envoy's per-cluster request counters (`cluster.<name>.upstream_rq_*`), plain numbers bumped
 * where the event happens. Kept by cluster name in the cluster manager, so a cluster whose
 * settings change keeps counting where it was, as Envoy's stats store keeps them by name.
 */
export class ClusterStats {
  /** Upstream requests (each try counts, as Envoy's `upstream_rq_total`). */
  rqTotal = 0;
  /** `upstream_rq_1xx` … `upstream_rq_5xx`, by the status class (index 1–5). */
  readonly rqByClass = new Float64Array(6);
  /** `upstream_rq_<code>`, made on the cluster's first response. */
  rqByCode: Float64Array | null = null;
  /** Requests retried (`upstream_rq_retry`). */
  rqRetry = 0;
  /** Retried requests whose last try succeeded (`upstream_rq_retry_success`). */
  rqRetrySuccess = 0;
  /** Requests that used up their retries (`upstream_rq_retry_limit_exceeded`). */
  rqRetryLimitExceeded = 0;
  /** Route timeouts (`upstream_rq_timeout`). */
  rqTimeout = 0;
  /** Per-try timeouts (`upstream_rq_per_try_timeout`). */
  rqPerTryTimeout = 0;
  /** Connections that could not be made (`upstream_cx_connect_fail`). */
  cxConnectFail = 0;

  /** An upstream status, as Envoy's router charges it (responses, and 503/504 for resets and timeouts). */
  charge(code: number): void {
    const cls = (code / 100) | 0;
    if (cls >= 1 && cls <= 5) this.rqByClass[cls]!++;
    if (code > 0 && code < 600) (this.rqByCode ??= new Float64Array(600))[code]!++;
  }

  reset(): void {
    this.rqTotal = 0;
    this.rqByClass.fill(0);
    this.rqByCode?.fill(0);
    this.rqRetry = 0;
    this.rqRetrySuccess = 0;
    this.rqRetryLimitExceeded = 0;
    this.rqTimeout = 0;
    this.rqPerTryTimeout = 0;
    this.cxConnectFail = 0;
  }
}
