/**
 * Envoy's HTTP tracing on Remora's request path: a listener with `tracing` compiles an
 * `HttpTracer` once per snapshot; each request asks it for its trace (its context is passed on
 * whether sampled or not) and a sampled one is finished when the request ends. Spans go, as
 * plain records batched once a second, to the span exporter thread, where OpenTelemetry's SDK
 * sends them to the provider's collector: OTLP/gRPC (istiod's default OpenTelemetry
 * transport), OTLP/HTTP protobuf or Zipkin v2 JSON, with bounded queues, so a slow or dead
 * collector costs dropped spans, never memory or request latency. A listener without tracing
 * has no tracer: its requests do no tracing work at all.
 */
import type { SpanContext, TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { Cluster, HttpTracing, ProxyNode, TracingCustomTag, TracingProvider, TrafficDirection } from '@remora/config';
import { randomFillSync } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { removeHeaders } from '../http/request-headers.ts';
import type { FromExporter, ProviderSpec, SpanRecord, ToExporter } from './span-export-protocol.ts';

type Sdk = typeof import('./tracing-sdk.ts');
// SpanKind and TraceFlags values (const enums of the API, fixed by the OpenTelemetry spec).
const SERVER = 1;
const CLIENT = 2;
const SAMPLED = 1;

/** The span exporter thread's module: its build output beside this file (`.ts` when run from source). */
const EXPORT_THREAD_URL = new URL(import.meta.url.endsWith('.ts') ? './span-export-thread.ts' : './span-export-thread.js', import.meta.url);

/** What the tracer reads from a request: its `ActiveStream` provides it. */
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
  /** `performance.now()` when the request arrived, and its duration in milliseconds. */
  readonly startHr: number;
  readonly durationMs: number;
  readonly responseFlagsText: string;
  dynamicMetadata(filter: string, key: string): string | null;
}

/** The span queue bound: past it new spans are dropped (Envoy's OTel tracer buffers similarly). */
export const MAX_QUEUED_SPANS = 2048;
/** How often batches leave for the exporter thread (Envoy flushes every 5 s; 1 s keeps traces timely). */
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

/** Where `bytes` fresh random bytes start in ID_POOL, never all zeros (W3C: an all-zero id is invalid). */
function drawIdBytes(bytes: number): number {
  for (;;) {
    if (idPoolAt + bytes > ID_POOL.length) {
      randomFillSync(ID_POOL);
      idPoolAt = 0;
    }
    const at = idPoolAt;
    idPoolAt += bytes;
    for (let i = at; i < at + bytes; i++) if (ID_POOL[i] !== 0) return at;
  }
}

/** `bytes` random bytes as lower-case hex, never all zeros. */
function randomHexId(bytes: number): string {
  const at = drawIdBytes(bytes);
  return ID_POOL.toString('hex', at, at + bytes);
}

/** Lower-case hex of every byte value, as char codes. */
const HEX = Buffer.from('0123456789abcdef');
/** `00-<trace id>-<span id>-00`, written in place: 55 bytes. */
const UNSAMPLED_TRACEPARENT = Buffer.from('00-00000000000000000000000000000000-0000000000000000-00', 'latin1');

/** Writes `bytes` random bytes, never all zeros, as hex into UNSAMPLED_TRACEPARENT at `to`. */
function writeRandomHex(bytes: number, to: number): void {
  const from = drawIdBytes(bytes);
  for (let i = 0; i < bytes; i++) {
    const b = ID_POOL[from + i]!;
    UNSAMPLED_TRACEPARENT[to + 2 * i] = HEX[b >> 4]!;
    UNSAMPLED_TRACEPARENT[to + 2 * i + 1] = HEX[b & 15]!;
  }
}

/**
 * The W3C context of an unsampled request that came without one: fresh ids, flag 00, as one
 * string made straight from the random bytes (the common case of every traced listener, so no
 * id strings are made that nothing reads).
 */
function unsampledTraceparent(): string {
  writeRandomHex(16, 3);
  writeRandomHex(8, 36);
  return UNSAMPLED_TRACEPARENT.toString('latin1', 0, 55);
}

/**
 * The spans of one proxy event loop, on their way to the span exporter thread: a collector's
 * key per provider (its exporter and batch queue live on the thread, kept across snapshots so
 * a reload does not drop queued spans, shut down when no snapshot uses it), and the finished
 * spans, batched here and posted about once a second. Past `MAX_QUEUED_SPANS` waiting, spans
 * are dropped: a slow or dead collector costs spans, never memory or request latency.
 */
export class TracerPool {
  #sdk: Sdk | null = null;
  #thread: Worker | null = null;
  readonly #onError: (message: string) => void;
  /** Provider specs by their JSON, for the thread (posted again if the thread is restarted). */
  readonly #specs = new Map<string, ProviderSpec>();
  #nextKey = 1;
  #used = new Set<number>();
  #pending: SpanRecord[] = [];
  #timer: NodeJS.Timeout | null = null;
  #dropped = 0;
  #nextId = 1;
  readonly #waiting = new Map<number, () => void>();

  constructor(onError: (message: string) => void = () => undefined) {
    this.#onError = onError;
  }

  /** OpenTelemetry's propagators, once `load` has run; null before. */
  get sdk(): Sdk | null {
    return this.#sdk;
  }

  /** Spans dropped because the queue was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Loads the propagators (once): the runtime calls it before compiling the first config that traces. */
  async load(): Promise<Sdk> {
    return (this.#sdk ??= await import('./tracing-sdk.ts'));
  }

  /** The key of `provider`'s collector at `url`, under which the thread exports its spans. */
  providerFor(provider: TracingProvider, url: string, serviceName: string): number {
    const json = JSON.stringify([provider, url, serviceName]);
    let spec = this.#specs.get(json);
    if (spec === undefined) {
      const timeoutMs = provider.kind === 'opentelemetry' && provider.timeoutMs !== null ? provider.timeoutMs : DEFAULT_EXPORT_TIMEOUT_MS;
      spec = { key: this.#nextKey++, provider, url, serviceName, timeoutMs };
      this.#specs.set(json, spec);
      this.#thread?.postMessage({ type: 'provider', spec } satisfies ToExporter);
    }
    this.#used.add(spec.key);
    return spec.key;
  }

  /** A finished span: queued, and posted with the others of its second. */
  record(span: SpanRecord): void {
    if (this.#pending.length >= MAX_QUEUED_SPANS) {
      this.#dropped++;
      return;
    }
    this.#pending.push(span);
    if (this.#timer === null) this.#timer = setTimeout(() => this.#send(), EXPORT_DELAY_MS).unref();
  }

  /** Starts counting which providers the next snapshot uses. */
  beginSnapshot(): void {
    this.#used = new Set();
  }

  /** Shuts down (flushing) the providers the new snapshot does not use. */
  endSnapshot(): void {
    let removed = false;
    for (const [json, spec] of this.#specs) {
      if (this.#used.has(spec.key)) continue;
      this.#specs.delete(json);
      removed = true;
    }
    if (!removed || this.#thread === null) return;
    this.#send();
    this.#thread.postMessage({ type: 'retain', keep: [...this.#used] } satisfies ToExporter);
  }

  /** Sends what is queued, and waits until the collectors got it or gave up (tests, shutdown). */
  async flush(): Promise<void> {
    this.#send();
    if (this.#thread !== null) await this.#ask('flush');
  }

  async close(): Promise<void> {
    this.#send();
    const thread = this.#thread;
    if (thread === null) return;
    await this.#ask('close');
    this.#thread = null;
    await thread.terminate();
  }

  #send(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#pending.length === 0) return;
    const spans = this.#pending;
    this.#pending = [];
    this.#start().postMessage({ type: 'spans', spans } satisfies ToExporter);
  }

  /** Asks the thread for a flush or a close; resolves when it is done (or after 15 s, or if the thread ends). */
  #ask(type: 'flush' | 'close'): Promise<void> {
    const id = this.#nextId++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, 15_000).unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#waiting.set(id, done);
      this.#thread!.postMessage({ type, id } satisfies ToExporter);
    });
  }

  #start(): Worker {
    if (this.#thread !== null) return this.#thread;
    const thread = new Worker(EXPORT_THREAD_URL, { stdout: false, stderr: false });
    thread.unref();
    thread.on('message', (m: FromExporter) => {
      if (m.type === 'done') {
        const done = this.#waiting.get(m.id);
        this.#waiting.delete(m.id);
        done?.();
      } else this.#onError(`span exporter: ${m.message}`);
    });
    thread.on('error', (err) => this.#onError(`span exporter thread failed: ${err.message}; spans queued there are lost, a new thread takes the next ones`));
    thread.on('exit', () => {
      if (this.#thread === thread) this.#thread = null;
      for (const done of this.#waiting.values()) done();
      this.#waiting.clear();
    });
    for (const spec of this.#specs.values()) thread.postMessage({ type: 'provider', spec } satisfies ToExporter);
    this.#thread = thread;
    return thread;
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
 *
 * A request with no incoming context (the common case) is decided and written here by hand:
 * ids from pooled random bytes, W3C `00-<trace>-<span>-<flags>` or B3's three headers. An
 * incoming context goes through OpenTelemetry's propagators. A sampled request's spans are
 * plain records handed to the `TracerPool` at the end; the SDK makes them on its thread.
 */
export class HttpTracer {
  readonly #sdk: Sdk;
  readonly #pool: TracerPool;
  readonly #provider: number;
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

  private constructor(sdk: Sdk, pool: TracerPool, provider: number, t: HttpTracing, direction: TrafficDirection, nodeId: string, rand: () => number) {
    this.#sdk = sdk;
    this.#pool = pool;
    this.#provider = provider;
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
    this.#staticTags = tags;
    this.#requestTags = perRequest;
  }

  /** Envoy's random_sampling: a request with no context and nothing forcing the decision is sampled this often. */
  #drawRandom(): boolean {
    return this.#random >= 1 || (this.#random > 0 && this.#rand() < this.#random);
  }

  /** Envoy's overall_sampling, applied after the other decisions (not to a parent's). */
  #drawOverall(): boolean {
    return this.#overall >= 1 || this.#rand() < this.#overall;
  }

  static compile(t: HttpTracing, direction: TrafficDirection, node: ProxyNode, nodeId: string, clusters: ReadonlyMap<string, Cluster>, pool: TracerPool, rand: () => number = Math.random): HttpTracer | null {
    const url = collectorUrl(t.provider, clusters);
    const sdk = pool.sdk;
    if (url === null || sdk === null) return null;
    const serviceName = t.provider.kind === 'opentelemetry' && t.provider.serviceName !== '' ? t.provider.serviceName : `${node.workloadName}.${node.namespace}`;
    return new HttpTracer(sdk, pool, pool.providerFor(t.provider, url, serviceName), t, direction, nodeId, rand);
  }

  /**
   * The request's trace, from its upstream header list (as the client sent it): the incoming
   * context (W3C traceparent, else B3 single or multi header) is the parent; Envoy's sampling
   * decides when the parent does not; the provider's headers are rewritten to this hop's span.
   * Null when the request is not sampled (its context is passed on all the same).
   */
  start(headers: string[]): RequestTrace | null {
    const found = traceHeaders(headers);
    if ((found & HAS_CONTEXT) !== 0) return this.#startFromContext(headers);
    // No incoming context and nothing forcing a decision: Envoy's random sampling decides.
    const sampled = this.#drawRandom() && this.#drawOverall();
    if (!sampled && !this.#b3) {
      // A tracestate without a traceparent is not a context (W3C): it is dropped.
      if ((found & HAS_TRACESTATE) !== 0) removeHeaders(headers, W3C_HEADERS);
      headers.push('traceparent', unsampledTraceparent());
      return null;
    }
    const traceId = randomHexId(16);
    const spanId = randomHexId(8);
    const upstreamId = sampled && this.#spawnUpstream ? randomHexId(8) : '';
    const next = upstreamId === '' ? spanId : upstreamId;
    if (this.#b3) headers.push('x-b3-traceid', traceId, 'x-b3-spanid', next, 'x-b3-sampled', sampled ? '1' : '0');
    else {
      // A tracestate without a traceparent is not a context (W3C): it is dropped.
      if ((found & HAS_TRACESTATE) !== 0) removeHeaders(headers, W3C_HEADERS);
      headers.push('traceparent', `00-${traceId}-${next}-${sampled ? '01' : '00'}`);
    }
    return sampled ? new RequestTrace(this, headers, traceId, spanId, '', false, '', upstreamId) : null;
  }

  /** An incoming context, or a header forcing the decision (x-envoy-force-trace, x-client-trace-id). */
  #startFromContext(headers: string[]): RequestTrace | null {
    const { W3C, B3_SINGLE, B3_MULTI, ROOT_CONTEXT, trace } = this.#sdk;
    let parentSpan = trace.getSpanContext(W3C.extract(ROOT_CONTEXT, headers, FLAT_GETTER));
    if (parentSpan === undefined) parentSpan = trace.getSpanContext(B3_SINGLE.extract(ROOT_CONTEXT, headers, FLAT_GETTER));
    let sampled: boolean;
    if (parentSpan !== undefined) sampled = (parentSpan.traceFlags & SAMPLED) !== 0;
    else {
      if (FLAT_GETTER.get(headers, 'x-envoy-force-trace') !== undefined) sampled = true;
      else if (FLAT_GETTER.get(headers, 'x-client-trace-id') !== undefined) sampled = this.#client >= 1 || this.#rand() < this.#client;
      else sampled = this.#drawRandom();
      if (sampled) sampled = this.#drawOverall();
    }
    const traceId = parentSpan?.traceId ?? randomHexId(16);
    const spanId = randomHexId(8);
    const upstreamId = sampled && this.#spawnUpstream ? randomHexId(8) : '';
    // This hop's context, as the next hop sees it: its own span (or the upstream child), the parent's tracestate.
    const next: SpanContext = { traceId, spanId: upstreamId === '' ? spanId : upstreamId, traceFlags: sampled ? SAMPLED : 0, isRemote: false };
    if (parentSpan?.traceState !== undefined) next.traceState = parentSpan.traceState;
    const injected = trace.setSpanContext(ROOT_CONTEXT, next);
    if (this.#b3) {
      removeHeaders(headers, B3_HEADERS);
      B3_MULTI.inject(injected, headers, FLAT_SETTER);
    } else {
      removeHeaders(headers, W3C_HEADERS);
      W3C.inject(injected, headers, FLAT_SETTER);
    }
    if (!sampled) return null;
    return new RequestTrace(this, headers, traceId, spanId, parentSpan?.spanId ?? '', parentSpan !== undefined, parentSpan?.traceState?.serialize() ?? '', upstreamId);
  }

  /** A sampled request's spans, with the outcome's tags, to the exporter thread. */
  finish(t: RequestTrace, r: TracedRequest): void {
    const url = `${r.scheme}://${r.authority}${r.path}`;
    const status = String(r.responseCode);
    const attrs: Record<string, string> = {
      ...this.#staticTags,
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
    const startMs = performance.timeOrigin + r.startHr;
    const endMs = startMs + r.durationMs;
    this.#pool.record({
      provider: this.#provider,
      name: operationName(r),
      kind: this.#kind,
      traceId: t.traceId,
      spanId: t.spanId,
      parentSpanId: t.parentSpanId,
      remoteParent: t.remoteParent,
      traceState: t.traceState,
      startMs,
      endMs,
      attributes: attrs,
    });
    if (t.upstreamSpanId !== '') {
      const upstream: Record<string, string> = { ...this.#staticTags, 'http.status_code': status, upstream_cluster: r.upstreamCluster ?? '-', 'http.protocol': r.protocol };
      if (r.upstreamHost !== null) upstream['upstream_address'] = r.upstreamHost;
      this.#pool.record({
        provider: this.#provider,
        name: `router ${r.upstreamCluster ?? '-'} egress`,
        kind: CLIENT,
        traceId: t.traceId,
        spanId: t.upstreamSpanId,
        parentSpanId: t.spanId,
        remoteParent: false,
        traceState: t.traceState,
        startMs,
        endMs,
        attributes: upstream,
      });
    }
  }
}

/** A sampled request's trace: this hop's span ids and its parent, until the request ends. */
export class RequestTrace {
  readonly tracer: HttpTracer;
  /** The request's upstream header list, for header tags. */
  readonly headers: readonly string[];
  readonly traceId: string;
  readonly spanId: string;
  /** The parent span's id, '' for a root span. */
  readonly parentSpanId: string;
  readonly remoteParent: boolean;
  readonly traceState: string;
  /** The upstream child span's id (spawn_upstream_span), or ''. */
  readonly upstreamSpanId: string;

  constructor(tracer: HttpTracer, headers: readonly string[], traceId: string, spanId: string, parentSpanId: string, remoteParent: boolean, traceState: string, upstreamSpanId: string) {
    this.tracer = tracer;
    this.headers = headers;
    this.traceId = traceId;
    this.spanId = spanId;
    this.parentSpanId = parentSpanId;
    this.remoteParent = remoteParent;
    this.traceState = traceState;
    this.upstreamSpanId = upstreamSpanId;
  }

  header(name: string): string | null {
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2) if (h[i]!.toLowerCase() === name) return h[i + 1]!;
    return null;
  }
}
