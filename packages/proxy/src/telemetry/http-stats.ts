import type { EnvoyStats, NamedStat } from './envoy-stats.ts';

/**
 * Envoy's HTTP connection manager and router stats of one `stat_prefix`
 * (`http.<stat_prefix>.downstream_rq_total`, `downstream_rq_2xx`, `downstream_cx_active`,
 * `rq_total`, ...). The objects come from the stats store by name, so every snapshot of a
 * listener bumps the same numbers and they carry on across config changes.
 */
export class HttpConnManagerStats {
  readonly cxTotal: NamedStat;
  readonly cxActive: NamedStat;
  readonly cxHttp1Total: NamedStat;
  readonly cxHttp2Total: NamedStat;
  readonly rqTotal: NamedStat;
  readonly rqActive: NamedStat;
  readonly rqHttp1Total: NamedStat;
  readonly rqHttp2Total: NamedStat;
  readonly rqCompleted: NamedStat;
  /** `downstream_rq_1xx` … `downstream_rq_5xx` at index 1–5. */
  readonly #rqByClass: readonly NamedStat[];
  /** The router's: requests it sent to a cluster, no route, no cluster, direct responses and redirects. */
  readonly routed: NamedStat;
  readonly noRoute: NamedStat;
  readonly noCluster: NamedStat;
  readonly directResponse: NamedStat;
  readonly redirect: NamedStat;
  /** Envoy's `downstream_rq_ws_on_non_ws_route`: upgrades (CONNECT) refused 403 because the route does not enable them. */
  readonly upgradeRefused: NamedStat;

  constructor(store: EnvoyStats, statPrefix: string) {
    const s = store.scope(statPrefix);
    this.cxTotal = s.http('downstream_cx_total') as NamedStat;
    this.cxActive = s.http('downstream_cx_active', true) as NamedStat;
    this.cxHttp1Total = s.http('downstream_cx_http1_total') as NamedStat;
    this.cxHttp2Total = s.http('downstream_cx_http2_total') as NamedStat;
    this.rqTotal = s.http('downstream_rq_total') as NamedStat;
    this.rqActive = s.http('downstream_rq_active', true) as NamedStat;
    this.rqHttp1Total = s.http('downstream_rq_http1_total') as NamedStat;
    this.rqHttp2Total = s.http('downstream_rq_http2_total') as NamedStat;
    this.rqCompleted = s.http('downstream_rq_completed') as NamedStat;
    const byClass: NamedStat[] = [];
    for (let i = 0; i <= 5; i++) byClass.push(s.http(`downstream_rq_${Math.max(i, 1)}xx`) as NamedStat);
    this.#rqByClass = byClass;
    this.routed = s.http('rq_total') as NamedStat;
    this.noRoute = s.http('no_route') as NamedStat;
    this.noCluster = s.http('no_cluster') as NamedStat;
    this.directResponse = s.http('rq_direct_response') as NamedStat;
    this.redirect = s.http('rq_redirect') as NamedStat;
    this.upgradeRefused = s.http('downstream_rq_ws_on_non_ws_route') as NamedStat;
  }

  /** A request arrived (headers read). */
  requestStarted(h2: boolean): void {
    this.rqTotal.value++;
    this.rqActive.value++;
    if (h2) this.rqHttp2Total.value++;
    else this.rqHttp1Total.value++;
  }

  /** A request ended with the status sent downstream (0: none was sent). */
  requestDone(code: number): void {
    this.rqActive.value--;
    this.rqCompleted.value++;
    const cls = (code / 100) | 0;
    if (cls >= 1 && cls <= 5) this.#rqByClass[cls]!.value++;
  }

  /** A request the codec refused before it became one (it still counts, with its status). */
  codecRefused(code: number): void {
    this.rqTotal.value++;
    this.rqHttp1Total.value++;
    this.rqCompleted.value++;
    const cls = (code / 100) | 0;
    if (cls >= 1 && cls <= 5) this.#rqByClass[cls]!.value++;
  }
}
