/**
 * Envoy's HTTP tracing on Remora's request path: a listener with `tracing` compiles an
 * `HttpTracer` once per snapshot; each request asks it for a `RequestTrace` (a span, or only
 * a context to pass on when not sampled) and finishes it when the request ends. Spans go
 * through OpenTelemetry's SDK to the provider's collector: OTLP/gRPC (istiod's default
 * OpenTelemetry transport), OTLP/HTTP protobuf or Zipkin v2 JSON, batched with a bounded queue, so a slow or dead collector costs dropped spans, never
 * memory or request latency. A listener without tracing has no tracer: its requests do no
 * tracing work at all.
 */
import type { Context, Span, SpanContext, TextMapGetter, TextMapSetter, Tracer } from '@opentelemetry/api';
import type { SpanExporter, TracerProvider } from '@opentelemetry/sdk-trace';
import type { Cluster, HttpTracing, ProxyNode, TracingCustomTag, TracingProvider, TrafficDirection } from '@remora/config';
import { randomFillSync } from 'node:crypto';

type Sdk = typeof import('./tracing-sdk.ts');
// SpanKind and TraceFlags values (const enums of the API, fixed by the OpenTelemetry spec).
const SERVER = 1;
const CLIENT = 2;
const SAMPLED = 1;

/** What the tracer reads from a request: `ProxiedRequest` provides it. */
export interface TracedRequest {
  readonly method: string;
  readonly scheme: string;
  readonly authority: string;
  readonly path: string;
  readonly pathOnly: string;
  readonly protocol: string;
  readonly requestId: string | null;
  readonly userAgent: string | null;
  readonly sourceIp: string;
  readonly responseCode: number;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly upstreamCluster: string | null;
  readonly upstreamHost: string | null;
  readonly startTime: number;
  readonly responseFlagsText: string;
  dynamicMetadata(filter: string, key: string): string | null;
}

/** The span queue bound: past it new spans are dropped (Envoy's OTel tracer buffers similarly). */
export const MAX_QUEUED_SPANS = 2048;
/** How often batches leave (Envoy flushes every 5 s; 1 s keeps traces timely). */
export const EXPORT_DELAY_MS = 1000;
const DEFAULT_EXPORT_TIMEOUT_MS = 10_000;


/** The headers a provider writes; the incoming ones of the same names are replaced. */
const W3C_HEADERS = new Set(['traceparent', 'tracestate']);
const B3_HEADERS = new Set(['b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags']);

/** Reads a flat `[name, value, …]` header list (names in any case). */
const FLAT_GETTER: TextMapGetter<string[]> = {
  keys: (h) => {
    const out: string[] = [];
    for (let i = 0; i < h.length; i += 2) out.push(h[i]!.toLowerCase());
    return out;
  },
  get: (h, key) => {
    for (let i = 0; i < h.length; i += 2) if (h[i]!.length === key.length && h[i]!.toLowerCase() === key) return h[i + 1];
    return undefined;
  },
};

const FLAT_SETTER: TextMapSetter<string[]> = {
  set: (h, key, value) => {
    h.push(key, value);
  },
};

/** `name` (any case) equals `lower` (lower-case letters, digits and `-`), without allocating. */
function sameName(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** Bits of `traceHeaders`: which trace headers a request carries. */
const HAS_TRACESTATE = 1;
/** traceparent, any B3 header, x-envoy-force-trace or x-client-trace-id: the full path decides. */
const HAS_CONTEXT = 2;

/** One pass over the header list: the trace headers it carries (see HAS_*). */
function traceHeaders(h: readonly string[]): number {
  let found = 0;
  for (let i = 0; i < h.length; i += 2) {
    const n = h[i]!;
    switch (n.length) {
      case 2:
        if (sameName(n, 'b3')) found |= HAS_CONTEXT;
        break;
      case 10:
        if (sameName(n, 'tracestate')) found |= HAS_TRACESTATE;
        else if (sameName(n, 'x-b3-flags')) found |= HAS_CONTEXT;
        break;
      case 11:
        if (sameName(n, 'traceparent') || sameName(n, 'x-b3-spanid')) found |= HAS_CONTEXT;
        break;
      case 12:
        if (sameName(n, 'x-b3-traceid') || sameName(n, 'x-b3-sampled')) found |= HAS_CONTEXT;
        break;
      case 17:
        if (sameName(n, 'x-b3-parentspanid') || sameName(n, 'x-client-trace-id')) found |= HAS_CONTEXT;
        break;
      case 19:
        if (sameName(n, 'x-envoy-force-trace')) found |= HAS_CONTEXT;
        break;
    }
  }
  return found;
}

/** Random ids from a pooled buffer of crypto-random bytes (OpenTelemetry's generator draws Math.random per byte). */
const ID_POOL = Buffer.allocUnsafe(4096);
let idPoolAt = ID_POOL.length;

/** `bytes` random bytes as lower-case hex, never all zeros (W3C: an all-zero id is invalid). */
function randomHexId(bytes: number): string {
  for (;;) {
    if (idPoolAt + bytes > ID_POOL.length) {
      randomFillSync(ID_POOL);
      idPoolAt = 0;
    }
    const at = idPoolAt;
    idPoolAt += bytes;
    for (let i = at; i < at + bytes; i++) if (ID_POOL[i] !== 0) return ID_POOL.toString('hex', at, at + bytes);
  }
}

function removeHeaders(h: string[], names: ReadonlySet<string>): void {
  let w = 0;
  for (let r = 0; r < h.length; r += 2) {
    if (names.has(h[r]!.toLowerCase())) continue;
    h[w++] = h[r]!;
    h[w++] = h[r + 1]!;
  }
  h.length = w;
}

/**
 * One exporter and batch queue per provider and collector address, kept across snapshots
 * (a reload does not drop queued spans) and shut down when no snapshot uses it.
 */
export class TracerPool {
  #sdk: Sdk | null = null;
  readonly #providers = new Map<string, { provider: TracerProvider; tracer: Tracer }>();
  #used = new Set<string>();

  /** The OpenTelemetry SDK, once `load` has run; null before. */
  get sdk(): Sdk | null {
    return this.#sdk;
  }

  /** Loads the SDK (once): the runtime calls it before compiling the first config that traces. */
  async load(): Promise<Sdk> {
    return (this.#sdk ??= await import('./tracing-sdk.ts'));
  }

  /** The SDK tracer for `provider`'s collector at `url`. */
  tracerFor(provider: TracingProvider, url: string, serviceName: string): Tracer {
    const sdk = this.#sdk!;
    const key = JSON.stringify([provider, url, serviceName]);
    this.#used.add(key);
    const got = this.#providers.get(key);
    if (got !== undefined) return got.tracer;
    const timeoutMillis = provider.kind === 'opentelemetry' && provider.timeoutMs !== null ? provider.timeoutMs : DEFAULT_EXPORT_TIMEOUT_MS;
    const headers = provider.kind === 'opentelemetry' ? { ...provider.headers } : {};
    let exporter: SpanExporter;
    if (provider.kind === 'opentelemetry' && provider.transport === 'grpc') {
      // OTLP/gRPC over plaintext HTTP/2 to the cluster's endpoint; initial metadata on every export.
      const metadata = new sdk.GrpcMetadata();
      for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
      exporter = new sdk.OTLPGrpcTraceExporter({ url, metadata, timeoutMillis });
    } else {
      if (provider.authority !== '') headers['host'] = provider.authority;
      exporter = provider.kind === 'zipkin' ? new sdk.ZipkinExporter({ url, serviceName, headers }) : new sdk.OTLPTraceExporter({ url, headers, timeoutMillis });
    }
    const tp: TracerProvider = new sdk.TracerProvider({
      resource: sdk.resourceFromAttributes({ 'service.name': serviceName }),
      // The sampling decision is Remora's (Envoy's rules): only sampled requests reach the SDK.
      sampler: new sdk.AlwaysOnSampler(),
      spanProcessors: [new sdk.BatchSpanProcessor({ exporter, maxQueueSize: MAX_QUEUED_SPANS, maxExportBatchSize: 512, scheduledDelayMillis: EXPORT_DELAY_MS, exportTimeoutMillis: timeoutMillis })],
    });
    const entry = { provider: tp, tracer: tp.getTracer('remora') };
    this.#providers.set(key, entry);
    return entry.tracer;
  }

  /** Starts counting which providers the next snapshot uses. */
  beginSnapshot(): void {
    this.#used = new Set();
  }

  /** Shuts down (flushing) the providers the new snapshot does not use. */
  endSnapshot(): void {
    for (const [key, entry] of this.#providers) {
      if (this.#used.has(key)) continue;
      this.#providers.delete(key);
      void entry.provider.shutdown().catch(() => undefined);
    }
  }

  /** Sends what is queued (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.#providers.values()].map((e) => e.provider.forceFlush().catch(() => undefined)));
  }

  async close(): Promise<void> {
    const all = [...this.#providers.values()];
    this.#providers.clear();
    await Promise.all(all.map((e) => e.provider.shutdown().catch(() => undefined)));
  }
}

/** `http://<first endpoint>:<port><path>` of the collector's cluster, or null when it has none. */
function collectorUrl(provider: TracingProvider, clusters: ReadonlyMap<string, Cluster>): string | null {
  const c = clusters.get(provider.cluster);
  const ep = c?.endpoints[0];
  if (ep === undefined) return null;
  const host = ep.address.includes(':') ? `[${ep.address}]` : ep.address;
  if (provider.kind === 'opentelemetry' && provider.transport === 'grpc') return `http://${host}:${ep.port}`;
  const path = provider.kind === 'opentelemetry' ? (provider.path === '' ? '/v1/traces' : provider.path) : provider.path;
  return `http://${host}:${ep.port}${path}`;
}

/** Envoy's default span name, or istiod's route decorator when the cluster says which service: `reviews.default.svc.cluster.local:9080/*`. */
function operationName(r: TracedRequest): string {
  const cluster = r.upstreamCluster;
  if (cluster !== null) {
    const parts = cluster.split('|');
    if (parts.length === 4) return `${parts[3]}:${parts[1]}/*`;
  }
  return `${r.authority}${r.pathOnly}`;
}

/**
 * A listener's tracing, compiled: the sampling rates, the propagation format its provider
 * uses, the tags every span gets. Null from `compile` when the collector cannot be reached
 * (its cluster is unknown or has no endpoint): requests then pass trace headers on untouched.
 */
export class HttpTracer {
  readonly #sdk: Sdk;
  readonly #tracer: Tracer;
  readonly #random: number;
  readonly #client: number;
  readonly #overall: number;
  readonly #b3: boolean;
  readonly #spawnUpstream: boolean;
  readonly #kind: number;
  readonly #maxUrl: number;
  readonly #staticTags: Readonly<Record<string, string>>;
  readonly #requestTags: readonly TracingCustomTag[];
  readonly #rand: () => number;

  private constructor(sdk: Sdk, tracer: Tracer, t: HttpTracing, direction: TrafficDirection, node: ProxyNode, nodeId: string, rand: () => number) {
    this.#sdk = sdk;
    this.#tracer = tracer;
    this.#random = t.randomSamplingPercent / 100;
    this.#client = t.clientSamplingPercent / 100;
    this.#overall = t.overallSamplingPercent / 100;
    this.#b3 = t.provider.kind === 'zipkin';
    this.#spawnUpstream = t.spawnUpstreamSpan;
    this.#kind = t.spawnUpstreamSpan || direction !== 'outbound' ? SERVER : CLIENT;
    this.#maxUrl = t.maxPathTagLength;
    this.#rand = rand;
    const tags: Record<string, string> = { component: 'proxy', node_id: nodeId, downstream_cluster: '-' };
    const perRequest: TracingCustomTag[] = [];
    for (const c of t.customTags) {
      if (c.kind === 'literal') tags[c.tag] = c.value;
      else if (c.kind === 'environment') {
        const v = process.env[c.name] ?? c.defaultValue;
        if (v !== '') tags[c.tag] = v;
      } else perRequest.push(c);
    }
    void node;
    this.#staticTags = tags;
    this.#requestTags = perRequest;
  }

  /** Envoy's random_sampling: a request with no context and nothing forcing the decision is sampled this often. */
  #drawRandom(): boolean {
    return this.#random >= 1 || (this.#random > 0 && this.#rand() < this.#random);
  }

  static compile(t: HttpTracing, direction: TrafficDirection, node: ProxyNode, nodeId: string, clusters: ReadonlyMap<string, Cluster>, pool: TracerPool, rand: () => number = Math.random): HttpTracer | null {
    const url = collectorUrl(t.provider, clusters);
    const sdk = pool.sdk;
    if (url === null || sdk === null) return null;
    const serviceName = t.provider.kind === 'opentelemetry' && t.provider.serviceName !== '' ? t.provider.serviceName : `${node.workloadName}.${node.namespace}`;
    return new HttpTracer(sdk, pool.tracerFor(t.provider, url, serviceName), t, direction, node, nodeId, rand);
  }

  /**
   * The request's trace, from its upstream header list (as the client sent it): the incoming
   * context (W3C traceparent, else B3 single or multi header) is the parent; Envoy's sampling
   * decides when the parent does not; the provider's headers are rewritten to this hop's span.
   */
  start(headers: string[]): RequestTrace {
    // The common case, kept off OpenTelemetry's propagators: no incoming context, nothing
    // forcing a decision, and the random draw says no. This hop's unsampled context is
    // written as the propagator would write it (W3C `00-<trace>-<span>-00`, B3 sampled 0).
    const found = traceHeaders(headers);
    if ((found & HAS_CONTEXT) === 0 && !this.#drawRandom()) {
      const traceId = randomHexId(16);
      const spanId = randomHexId(8);
      if (this.#b3) headers.push('x-b3-traceid', traceId, 'x-b3-spanid', spanId, 'x-b3-sampled', '0');
      else {
        if ((found & HAS_TRACESTATE) !== 0) removeHeaders(headers, W3C_HEADERS);
        headers.push('traceparent', `00-${traceId}-${spanId}-00`);
      }
      return new RequestTrace(this, null, null);
    }
    return this.#startTraced(headers, (found & HAS_CONTEXT) === 0);
  }

  /** The full path: an incoming context, a forced decision, or a sampled draw (`drawn`: the random draw already said yes). */
  #startTraced(headers: string[], drawn: boolean): RequestTrace {
    const { W3C, B3_SINGLE, B3_MULTI, IDS, ROOT_CONTEXT, trace } = this.#sdk;
    let parent: Context = W3C.extract(ROOT_CONTEXT, headers, FLAT_GETTER);
    let parentSpan = trace.getSpanContext(parent);
    if (parentSpan === undefined) {
      parent = B3_SINGLE.extract(ROOT_CONTEXT, headers, FLAT_GETTER);
      parentSpan = trace.getSpanContext(parent);
    }
    let sampled: boolean;
    if (parentSpan !== undefined) sampled = (parentSpan.traceFlags & SAMPLED) !== 0;
    else {
      if (FLAT_GETTER.get(headers, 'x-envoy-force-trace') !== undefined) sampled = true;
      else if (FLAT_GETTER.get(headers, 'x-client-trace-id') !== undefined) sampled = this.#client >= 1 || this.#rand() < this.#client;
      else sampled = drawn || this.#drawRandom();
      if (sampled && this.#overall < 1) sampled = this.#rand() < this.#overall;
    }
    let span: Span;
    let upstream: Span | null = null;
    if (sampled) {
      span = this.#tracer.startSpan('ingress', { kind: this.#kind, attributes: this.#staticTags }, parent);
      if (this.#spawnUpstream) upstream = this.#tracer.startSpan('router egress', { kind: CLIENT, attributes: this.#staticTags }, trace.setSpan(parent, span));
    } else {
      // Not sampled: no span, but a context of this hop's own so the next hops agree.
      const sc: SpanContext = { traceId: parentSpan?.traceId ?? IDS.generateTraceId(), spanId: IDS.generateSpanId(), traceFlags: 0, isRemote: false };
      span = trace.wrapSpanContext(sc);
    }
    const injected = trace.setSpan(ROOT_CONTEXT, upstream ?? span);
    if (this.#b3) {
      removeHeaders(headers, B3_HEADERS);
      B3_MULTI.inject(injected, headers, FLAT_SETTER);
    } else {
      removeHeaders(headers, W3C_HEADERS);
      W3C.inject(trace.setSpan(parent, upstream ?? span), headers, FLAT_SETTER);
    }
    return new RequestTrace(this, sampled ? span : null, upstream);
  }

  /** Sets the outcome's tags on a sampled request's spans and ends them. */
  finish(t: RequestTrace, r: TracedRequest): void {
    const span = t.span;
    if (span === null) return;
    const name = operationName(r);
    span.updateName(name);
    const url = `${r.scheme}://${r.authority}${r.path}`;
    const status = String(r.responseCode);
    const attrs: Record<string, string> = {
      'http.url': url.length > this.#maxUrl ? url.slice(0, this.#maxUrl) : url,
      'http.method': r.method,
      'http.protocol': r.protocol,
      'http.status_code': status,
      response_flags: r.responseFlagsText,
      'guid:x-request-id': r.requestId ?? '',
      'peer.address': r.sourceIp,
      user_agent: r.userAgent ?? '-',
      request_size: String(r.bytesReceived),
      response_size: String(r.bytesSent),
    };
    if (r.upstreamCluster !== null) {
      attrs['upstream_cluster'] = r.upstreamCluster;
      attrs['upstream_cluster.name'] = r.upstreamCluster;
    }
    if (r.upstreamHost !== null) attrs['upstream_address'] = r.upstreamHost;
    if (r.responseCode >= 500 || r.responseCode === 0) attrs['error'] = 'true';
    for (const c of this.#requestTags) {
      if (c.kind !== 'requestHeader' && c.kind !== 'metadata') continue;
      const value = (c.kind === 'requestHeader' ? t.header(c.name) : r.dynamicMetadata(c.filter, c.key)) ?? c.defaultValue;
      if (value !== '') attrs[c.tag] = value;
    }
    span.setAttributes(attrs);
    const up = t.upstream;
    if (up !== null) {
      up.updateName(`router ${r.upstreamCluster ?? '-'} egress`);
      up.setAttributes({ 'http.status_code': status, 'upstream_cluster': r.upstreamCluster ?? '-', ...(r.upstreamHost === null ? {} : { upstream_address: r.upstreamHost }), 'http.protocol': r.protocol });
      up.end();
    }
    span.end();
  }
}

/** One request's trace: its span (null when not sampled) and the upstream child span (spawn_upstream_span). */
export class RequestTrace {
  readonly tracer: HttpTracer;
  readonly span: Span | null;
  readonly upstream: Span | null;
  /** The request's headers, for header tags; set by the request. */
  headers: readonly string[] | null = null;

  constructor(tracer: HttpTracer, span: Span | null, upstream: Span | null) {
    this.tracer = tracer;
    this.span = span;
    this.upstream = upstream;
  }

  header(name: string): string | null {
    const h = this.headers;
    if (h === null) return null;
    for (let i = 0; i < h.length; i += 2) if (h[i]!.toLowerCase() === name) return h[i + 1]!;
    return null;
  }
}
