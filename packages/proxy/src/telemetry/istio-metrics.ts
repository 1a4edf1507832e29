import { collectDefaultMetrics, Registry } from 'prom-client';
import { ISTIO_METRIC_NAMES, type IstioStatsConfig } from '@remora/config';
import type { AccessLogRecord } from './access-log-record.ts';
import { compileRecordTag } from './cel-attributes.ts';
import { refineLabels, type PeerLabels } from './peer-labels.ts';

export type { PeerLabels } from './peer-labels.ts';
import type { PeerWorkload } from './peer-metadata.ts';

/**
 * Istio's standard request metrics, with Istio's names and labels so existing dashboards
 * and Kiali work. The hot path only bumps numbers on a pre-built `RequestStats`; label sets
 * are built once per (direction, cluster, endpoint) when the config is compiled, and the
 * Prometheus text is rendered on scrape through prom-client's registry.
 */

/**
 * Envoy's default histogram buckets, which Istio's three request histograms use (Istio's
 * bootstrap sets no bucket override unless the pod's `sidecar.istio.io/statsHistogramBuckets`
 * annotation asks for one).
 */
export const ENVOY_DEFAULT_BUCKETS: readonly number[] = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
];

class Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(buckets: number) {
    this.counts = new Float64Array(buckets);
  }
  observe(v: number, bounds: readonly number[]): void {
    this.sum += v;
    this.count++;
    // Bucket counts are stored non-cumulative; ~19 compares, cheaper than a binary search here.
    for (let i = 0; i < bounds.length; i++) {
      if (v <= bounds[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

class Series {
  readonly code: number;
  readonly flags: string;
  readonly grpcStatus: string;
  requests = 0;
  /** gRPC messages each way (istio_request_messages_total, istio_response_messages_total). */
  requestMessages = 0;
  responseMessages = 0;
  readonly duration = new Histogram(ENVOY_DEFAULT_BUCKETS.length);
  readonly requestBytes = new Histogram(ENVOY_DEFAULT_BUCKETS.length);
  readonly responseBytes = new Histogram(ENVOY_DEFAULT_BUCKETS.length);
  constructor(code: number, flags: string, grpcStatus: string) {
    this.code = code;
    this.flags = flags;
    this.grpcStatus = grpcStatus;
  }
}

/** Istio's TCP metrics for one label set and final response flags. */
class TcpSeries {
  readonly flags: string;
  opened = 0;
  closed = 0;
  /** Bytes to the downstream client, and from it. */
  sent = 0;
  received = 0;
  constructor(flags: string) {
    this.flags = flags;
  }
}

/** Each istio_* metric's index in ISTIO_METRIC_NAMES. */
const Family = {
  Requests: 0,
  Duration: 1,
  RequestBytes: 2,
  ResponseBytes: 3,
  TcpOpened: 4,
  TcpClosed: 5,
  TcpSent: 6,
  TcpReceived: 7,
  RequestMessages: 8,
  ResponseMessages: 9,
} as const;
type Family = (typeof Family)[keyof typeof Family];

/** What a stats config does to one metric: dropped, or its labels edited. */
interface FamilyEdit {
  drop: boolean;
  readonly remove: Set<string>;
  /** Tag → index of its value among the config's expressions. */
  readonly upsert: Map<string, number>;
}

let nextOverridesId = 0;

/**
 * A listener's Istio stats config (`istio.stats`, a Telemetry's `metrics` overrides),
 * compiled once per config: per metric, dropped or its label edits; the CEL expressions of
 * the upserted tags, evaluated once per request into the values its label set is keyed by.
 */
export class IstioStatsOverrides {
  readonly id = nextOverridesId++;
  readonly #families: FamilyEdit[];
  readonly #expressions: ((r: AccessLogRecord) => string)[];

  /** Throws when an expression does not parse (the config was checked when it was read). */
  constructor(config: IstioStatsConfig) {
    this.#families = ISTIO_METRIC_NAMES.map(() => ({ drop: false, remove: new Set<string>(), upsert: new Map<string, number>() }));
    const exprs: string[] = [];
    for (const m of config.metrics) {
      const targets = m.name === '' ? this.#families : [this.#families[ISTIO_METRIC_NAMES.indexOf(m.name)]].filter((f) => f !== undefined);
      for (const f of targets) {
        f.drop = m.drop;
        for (const tag of m.tagsToRemove) {
          f.remove.add(tag);
          f.upsert.delete(tag);
        }
        for (const [tag, expr] of Object.entries(m.dimensions)) {
          let i = exprs.indexOf(expr);
          if (i < 0) i = exprs.push(expr) - 1;
          f.upsert.set(tag, i);
          f.remove.delete(tag);
        }
      }
    }
    this.#expressions = exprs.map((e) => compileRecordTag(e));
  }

  /** The upserted tags' values for a finished request (or a TCP connection), in expression order. */
  values(r: AccessLogRecord): string[] {
    const out = new Array<string>(this.#expressions.length);
    for (let i = 0; i < out.length; i++) out[i] = this.#expressions[i]!(r);
    return out;
  }

  /** A series' labels for metric `family` under this config, or null when the metric is dropped. */
  labels(family: Family, labels: Record<string, string | number>, values: readonly string[]): Record<string, string | number> | null {
    const f = this.#families[family]!;
    if (f.drop) return null;
    if (f.remove.size === 0 && f.upsert.size === 0) return labels;
    const out: Record<string, string | number> = {};
    // An upserted tag keeps its place; new ones follow, in name order (the same in every worker).
    for (const [k, v] of Object.entries(labels)) {
      if (f.remove.has(k)) continue;
      const i = f.upsert.get(k);
      out[k] = i === undefined ? v : values[i]!;
    }
    for (const [k, i] of [...f.upsert].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) if (!(k in labels)) out[k] = values[i]!;
    return out;
  }
}

/** Counters for one label set; one `record` per finished request. */
export class RequestStats {
  readonly labels: PeerLabels;
  /** Unflagged outcomes by status code: the common case, keyed by a small integer. */
  readonly #plain = new Map<number, Series>();
  /** Flagged or gRPC outcomes, by status code, then flags, then grpc-status: no key is built per request. */
  readonly #other = new Map<number, Map<string, Map<string, Series>>>();


  readonly key: string;
  /** The stats config these counters were kept under and its tag values; null: Istio's defaults. */
  readonly overrides: IstioStatsOverrides | null;
  readonly values: readonly string[];

  constructor(labels: PeerLabels, key: string, overrides: IstioStatsOverrides | null = null, values: readonly string[] = []) {
    this.labels = labels;
    this.key = key;
    this.overrides = overrides;
    this.values = values;
  }

  /** These labels under a listener's stats config, with the values its expressions give for `r`; made on first use. */
  #tagged: Map<IstioStatsOverrides, Map<string, RequestStats>> | null = null;

  tagged(metrics: IstioMetrics, overrides: IstioStatsOverrides, r: AccessLogRecord): RequestStats {
    const byConfig = (this.#tagged ??= new Map());
    let byValues = byConfig.get(overrides);
    if (byValues === undefined) byConfig.set(overrides, (byValues = new Map()));
    const values = overrides.values(r);
    const k = values.join('\u0000');
    let s = byValues.get(k);
    if (s === undefined) byValues.set(k, (s = metrics.taggedStats(this, overrides, values)));
    return s;
  }

  /** The same labels for a TCP connection that came over mTLS from `principal` (inbound); made on first use. */
  #mtls: Map<string, RequestStats> | null = null;

  overMtls(principal: string, metrics: IstioMetrics): RequestStats {
    const map = (this.#mtls ??= new Map());
    let s = map.get(principal);
    if (s === undefined) map.set(principal, (s = this.refine(metrics, null, `spiffe://${principal}`, metrics.localPrincipal(), 0)));
    return s;
  }

  /**
   * Variants of this label set by what a request adds (see `refineLabels`): the peer's
   * metadata, the certificate principals each side, gRPC. Nested maps keyed by the (cached,
   * interned) peer object and the principal strings, so a known request allocates nothing.
   */
  #variants: Map<PeerWorkload | null, Map<string | null, Map<string | null, (RequestStats | undefined)[]>>> | null = null;

  /**
   * These labels for a request with these facts. `peerPrincipal` and `localPrincipal` are
   * SPIFFE IDs (`spiffe://…`) from the certificates; `peer` what the peer said of itself.
   * `protocol` 0: http, 1: grpc, 2: tcp.
   */
  refine(metrics: IstioMetrics, peer: PeerWorkload | null, peerPrincipal: string | null, localPrincipal: string | null, protocol: 0 | 1 | 2): RequestStats {
    const byPeer = (this.#variants ??= new Map());
    let byPrincipal = byPeer.get(peer);
    if (byPrincipal === undefined) byPeer.set(peer, (byPrincipal = new Map()));
    let byLocal = byPrincipal.get(peerPrincipal);
    if (byLocal === undefined) byPrincipal.set(peerPrincipal, (byLocal = new Map()));
    let slots = byLocal.get(localPrincipal);
    if (slots === undefined) byLocal.set(localPrincipal, (slots = []));
    let s = slots[protocol];
    if (s === undefined) {
      s = metrics.stats(
        refineLabels(this.labels, { peer, peerPrincipal, localPrincipal, grpc: protocol === 1, ...(protocol === 2 ? { protocol: 'tcp' } : {}) }),
      );
      slots[protocol] = s;
    }
    return s;
  }

  record(
    code: number,
    flags: string,
    grpcStatus: string,
    durationMs: number,
    requestBytes: number,
    responseBytes: number,
    requestMessages = 0,
    responseMessages = 0,
  ): void {
    let s: Series | undefined;
    if (flags === '-' && grpcStatus === '') {
      s = this.#plain.get(code);
      if (s === undefined) this.#plain.set(code, (s = new Series(code, flags, grpcStatus)));
    } else {
      let byFlags = this.#other.get(code);
      if (byFlags === undefined) this.#other.set(code, (byFlags = new Map()));
      let byGrpc = byFlags.get(flags);
      if (byGrpc === undefined) byFlags.set(flags, (byGrpc = new Map()));
      s = byGrpc.get(grpcStatus);
      if (s === undefined) byGrpc.set(grpcStatus, (s = new Series(code, flags, grpcStatus)));
    }
    s.requests++;
    s.requestMessages += requestMessages;
    s.responseMessages += responseMessages;
    s.duration.observe(durationMs, ENVOY_DEFAULT_BUCKETS);
    s.requestBytes.observe(requestBytes, ENVOY_DEFAULT_BUCKETS);
    s.responseBytes.observe(responseBytes, ENVOY_DEFAULT_BUCKETS);
  }

  /** TCP connections (gateway TCP servers, TLS passthrough), by final response flags; made on first use. */
  #tcp: Map<string, TcpSeries> | null = null;

  #tcpSeries(flags: string): TcpSeries {
    const map = (this.#tcp ??= new Map());
    let s = map.get(flags);
    if (s === undefined) map.set(flags, (s = new TcpSeries(flags)));
    return s;
  }

  /** A proxied TCP connection reached its upstream host (istio_tcp_connections_opened_total). */
  tcpOpened(): void {
    this.#tcpSeries('-').opened++;
  }

  /** A proxied TCP connection ended: its flags and bytes each way. */
  tcpClosed(flags: string, sentBytes: number, receivedBytes: number): void {
    const s = this.#tcpSeries(flags);
    s.closed++;
    s.sent += sentBytes;
    s.received += receivedBytes;
  }

  *tcpSeries(): Generator<TcpSeries> {
    if (this.#tcp !== null) yield* this.#tcp.values();
  }

  *series(): Generator<Series> {
    yield* this.#plain.values();
    for (const byFlags of this.#other.values()) for (const byGrpc of byFlags.values()) yield* byGrpc.values();
  }

  /** Envoy's `/reset_counters`: counters to zero, histograms kept. */
  resetCounters(): void {
    for (const s of this.series()) {
      s.requests = 0;
      s.requestMessages = 0;
      s.responseMessages = 0;
    }
    for (const s of this.tcpSeries()) {
      s.opened = 0;
      s.closed = 0;
      s.sent = 0;
      s.received = 0;
    }
  }
}

export interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** Owns every RequestStats and exposes them to a prom-client Registry. */
export class IstioMetrics {
  readonly registry = new Registry();
  readonly #contexts = new Map<string, RequestStats>();
  /** This proxy's SPIFFE ID of the moment (`destination_principal` inbound over mTLS); null without an identity. */
  localPrincipal: () => string | null = () => null;

  constructor() {
    const self = this;
    this.registry.registerMetric({
      name: 'istio_requests_total',
      help: 'Total requests handled by the proxy, by peer and outcome',
      type: 'counter',
      get: async () => ({
        name: 'istio_requests_total',
        help: 'Total requests handled by the proxy, by peer and outcome',
        type: 'counter',
        aggregator: 'sum',
        values: self.#merged(self.#counterValues()),
      }),
    } as never);
    const histogram = (name: string, help: string, family: Family, pick: (s: Series) => Histogram): void => {
      this.registry.registerMetric({
        name,
        help,
        type: 'histogram',
        get: async () => ({ name, help, type: 'histogram', aggregator: 'sum', values: self.#merged(self.#histogramValues(name, family, pick)) }),
      } as never);
    };
    const tcpCounter = (name: string, help: string, family: Family, pick: (s: TcpSeries) => number): void => {
      this.registry.registerMetric({
        name,
        help,
        type: 'counter',
        get: async () => ({ name, help, type: 'counter', aggregator: 'sum', values: self.#merged(self.#tcpValues(family, pick)) }),
      } as never);
    };
    const grpcCounter = (name: string, help: string, family: Family, pick: (s: Series) => number): void => {
      this.registry.registerMetric({
        name,
        help,
        type: 'counter',
        get: async () => ({ name, help, type: 'counter', aggregator: 'sum', values: self.#merged(self.#grpcValues(family, pick)) }),
      } as never);
    };
    grpcCounter('istio_request_messages_total', 'gRPC messages sent by the client, on gRPC requests', Family.RequestMessages, (s) => s.requestMessages);
    grpcCounter('istio_response_messages_total', 'gRPC messages sent by the server, on gRPC requests', Family.ResponseMessages, (s) => s.responseMessages);
    tcpCounter('istio_tcp_connections_opened_total', 'TCP connections opened to upstreams', Family.TcpOpened, (s) => s.opened);
    tcpCounter('istio_tcp_connections_closed_total', 'TCP connections closed', Family.TcpClosed, (s) => s.closed);
    tcpCounter('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream on TCP connections', Family.TcpSent, (s) => s.sent);
    tcpCounter('istio_tcp_received_bytes_total', 'Bytes received from the downstream on TCP connections', Family.TcpReceived, (s) => s.received);
    histogram('istio_request_duration_milliseconds', 'Request duration in milliseconds', Family.Duration, (s) => s.duration);
    histogram('istio_request_bytes', 'Request body size in bytes', Family.RequestBytes, (s) => s.requestBytes);
    histogram('istio_response_bytes', 'Response body size in bytes', Family.ResponseBytes, (s) => s.responseBytes);
  }

  /**
   * A metric computed at scrape time (cluster gauges and counters kept elsewhere), in
   * prom-client's registry next to Istio's.
   */
  addCollected(name: string, help: string, type: 'counter' | 'gauge', values: () => MetricValue[]): void {
    this.registry.registerMetric({
      name,
      help,
      type,
      get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
    } as never);
  }

  #processMetrics = false;

  /**
   * Node's process metrics next to Istio's (prom-client's default set: CPU, resident memory,
   * heap and heap spaces, event loop lag, GC durations, handles, file descriptors), under
   * `prefix`. Read on scrape, except the event loop delay and GC, which Node measures as they
   * happen; once per registry.
   */
  collectProcessMetrics(prefix = 'remora_'): void {
    if (this.#processMetrics) return;
    this.#processMetrics = true;
    collectDefaultMetrics({ register: this.registry, prefix });
  }

  /** The stats object for a label set; the same object for the same labels, across config swaps. */
  stats(labels: PeerLabels): RequestStats {
    const key = Object.values(labels).join('\u0000');
    let s = this.#contexts.get(key);
    if (s === undefined) this.#contexts.set(key, (s = new RequestStats(labels, key)));
    return s;
  }

  /** Label sets kept under a stats config: their series may coincide once tags are removed, and are then added up on scrape. */
  #overridden = 0;

  /** `base`'s labels under `overrides` with these tag values; the same object for the same ones. */
  taggedStats(base: RequestStats, overrides: IstioStatsOverrides, values: readonly string[]): RequestStats {
    const key = `${base.key}\u0001${overrides.id}\u0001${values.join('\u0000')}`;
    let s = this.#contexts.get(key);
    if (s === undefined) {
      this.#contexts.set(key, (s = new RequestStats(base.labels, key, overrides, values)));
      this.#overridden++;
    }
    return s;
  }

  /** A series' labels for `family` (null: dropped by the config it was kept under). */
  #edit(ctx: RequestStats, family: Family, labels: Record<string, string | number>): Record<string, string | number> | null {
    return ctx.overrides === null ? labels : ctx.overrides.labels(family, labels, ctx.values);
  }

  /** Series whose labels coincide (removed tags) added up, when any label set has a stats config. */
  #merged(values: MetricValue[]): MetricValue[] {
    if (this.#overridden === 0) return values;
    const byKey = new Map<string, MetricValue>();
    for (const v of values) {
      const k = `${v.metricName ?? ''}\u0001${Object.entries(v.labels).flat().join('\u0000')}`;
      const have = byKey.get(k);
      if (have === undefined) byKey.set(k, { ...v });
      else have.value += v.value;
    }
    return [...byKey.values()];
  }

  /** Prometheus text rendered outside prom-client's registry (Envoy's own stats), appended on scrape. */
  readonly #texts: (() => string)[] = [];

  addText(render: () => string): void {
    this.#texts.push(render);
  }

  #merge: ((own: string) => Promise<string>) | null = null;

  /** What a scrape returns is `merge` of this registry's text (the main thread adds its workers'). */
  mergeWith(merge: (own: string) => Promise<string>): void {
    this.#merge = merge;
  }

  async render(): Promise<string> {
    let out = await this.registry.metrics();
    for (const t of this.#texts) out += t();
    return this.#merge === null ? out : this.#merge(out);
  }

  #labelsOf(ctx: RequestStats, s: Series): Record<string, string | number> {
    return {
      ...ctx.labels,
      response_code: s.code,
      grpc_response_status: s.grpcStatus,
      response_flags: s.flags,
    };
  }

  #tcpValues(family: Family, pick: (s: TcpSeries) => number): MetricValue[] {
    const out: MetricValue[] = [];
    for (const ctx of this.#contexts.values()) {
      for (const s of ctx.tcpSeries()) {
        const value = pick(s);
        if (value <= 0) continue;
        const labels = this.#edit(ctx, family, { ...ctx.labels, request_protocol: 'tcp', response_flags: s.flags });
        if (labels !== null) out.push({ value, labels });
      }
    }
    return out;
  }

  /** Envoy's `/reset_counters` for Istio's counters (requests, messages, TCP); histograms are kept, as Envoy keeps them. */
  resetCounters(): void {
    for (const ctx of this.#contexts.values()) ctx.resetCounters();
  }

  #grpcValues(family: Family, pick: (s: Series) => number): MetricValue[] {
    const out: MetricValue[] = [];
    for (const ctx of this.#contexts.values()) {
      if (ctx.labels.request_protocol !== 'grpc') continue;
      for (const s of ctx.series()) {
        const labels = this.#edit(ctx, family, this.#labelsOf(ctx, s));
        if (labels !== null) out.push({ value: pick(s), labels });
      }
    }
    return out;
  }

  #counterValues(): MetricValue[] {
    const out: MetricValue[] = [];
    for (const ctx of this.#contexts.values()) {
      for (const s of ctx.series()) {
        const labels = this.#edit(ctx, Family.Requests, this.#labelsOf(ctx, s));
        if (labels !== null) out.push({ value: s.requests, labels });
      }
    }
    return out;
  }

  #histogramValues(name: string, family: Family, pick: (s: Series) => Histogram): MetricValue[] {
    const out: MetricValue[] = [];
    for (const ctx of this.#contexts.values()) {
      for (const s of ctx.series()) {
        const h = pick(s);
        const labels = this.#edit(ctx, family, this.#labelsOf(ctx, s));
        if (labels === null) continue;
        let cumulative = 0;
        ENVOY_DEFAULT_BUCKETS.forEach((le, i) => {
          cumulative += h.counts[i]!;
          out.push({ value: cumulative, labels: { ...labels, le }, metricName: `${name}_bucket` });
        });
        out.push({ value: h.count, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` });
        out.push({ value: h.sum, labels, metricName: `${name}_sum` });
        out.push({ value: h.count, labels, metricName: `${name}_count` });
      }
    }
    return out;
  }
}
