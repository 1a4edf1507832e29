/**
 * The span exporter thread: OpenTelemetry's SDK (a TracerProvider, a BatchSpanProcessor with a
 * bounded queue, and the provider's exporter — OTLP/gRPC, OTLP/HTTP protobuf or Zipkin v2 JSON)
 * for each collector the config names. Spans arrive as records with the ids the request path
 * already put in its headers; an id generator handed each record's ids makes the SDK's span
 * carry exactly those. A slow or dead collector fills this thread's queue, never the proxy's.
 */
import { parentPort } from 'node:worker_threads';
import { ROOT_CONTEXT, trace, type Context, type Tracer } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { OTLPTraceExporter as OTLPGrpcTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { ZipkinExporter } from '@opentelemetry/exporter-zipkin';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider, type IdGenerator, type SpanExporter } from '@opentelemetry/sdk-trace';
import { Metadata } from '@grpc/grpc-js';
import type { FromExporter, ProviderSpec, SpanRecord, ToExporter } from './span-export-protocol.ts';

/** The SDK's queue bound per provider: past it new spans are dropped. */
const MAX_QUEUED_SPANS = 2048;
/** Records arrive already batched (about once a second): they leave soon after. */
const EXPORT_DELAY_MS = 100;

/** Gives the SDK the ids of the record being turned into a span. */
class GivenIds implements IdGenerator {
  traceId = '';
  spanId = '';
  generateTraceId(): string {
    return this.traceId;
  }
  generateSpanId(): string {
    return this.spanId;
  }
}

const port = parentPort;
if (port === null) throw new Error('span-export-thread.ts runs as a worker thread');

const ids = new GivenIds();
const providers = new Map<number, { provider: TracerProvider; tracer: Tracer }>();

function exporterFor(spec: ProviderSpec): SpanExporter {
  const p = spec.provider;
  const timeoutMillis = spec.timeoutMs;
  const headers: Record<string, string> = p.kind === 'opentelemetry' ? { ...p.headers } : {};
  if (p.kind === 'opentelemetry' && p.transport === 'grpc') {
    // OTLP/gRPC over plaintext HTTP/2 to the cluster's endpoint; initial metadata on every export.
    const metadata = new Metadata();
    for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
    return new OTLPGrpcTraceExporter({ url: spec.url, metadata, timeoutMillis });
  }
  if (p.authority !== '') headers['host'] = p.authority;
  return p.kind === 'zipkin' ? new ZipkinExporter({ url: spec.url, serviceName: spec.serviceName, headers }) : new OTLPTraceExporter({ url: spec.url, headers, timeoutMillis });
}

function addProvider(spec: ProviderSpec): void {
  if (providers.has(spec.key)) return;
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': spec.serviceName }),
    // The sampling decision is the request path's (Envoy's rules): only sampled spans come here.
    sampler: new AlwaysOnSampler(),
    idGenerator: ids,
    spanProcessors: [new BatchSpanProcessor({ exporter: exporterFor(spec), maxQueueSize: MAX_QUEUED_SPANS, maxExportBatchSize: 512, scheduledDelayMillis: EXPORT_DELAY_MS, exportTimeoutMillis: spec.timeoutMs })],
  });
  providers.set(spec.key, { provider, tracer: provider.getTracer('remora') });
}

function emit(r: SpanRecord): void {
  const entry = providers.get(r.provider);
  if (entry === undefined) return;
  let parent: Context = ROOT_CONTEXT;
  if (r.parentSpanId !== '') {
    parent = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: r.traceId,
      spanId: r.parentSpanId,
      traceFlags: 1,
      isRemote: r.remoteParent,
      ...(r.traceState !== '' ? { traceState: new TraceState(r.traceState) } : {}),
    });
  }
  ids.traceId = r.traceId;
  ids.spanId = r.spanId;
  const span = entry.tracer.startSpan(r.name, { kind: r.kind, attributes: r.attributes, startTime: r.startMs }, parent);
  span.end(r.endMs);
}

async function shutdown(keys: Iterable<number>): Promise<void> {
  const all: Promise<void>[] = [];
  for (const key of [...keys]) {
    const entry = providers.get(key);
    if (entry === undefined) continue;
    providers.delete(key);
    all.push(entry.provider.shutdown().catch(() => undefined));
  }
  await Promise.all(all);
}

function send(m: FromExporter): void {
  port!.postMessage(m);
}

port.on('message', (m: ToExporter) => {
  try {
    switch (m.type) {
      case 'provider':
        addProvider(m.spec);
        break;
      case 'spans':
        for (const r of m.spans) emit(r);
        break;
      case 'retain': {
        const keep = new Set(m.keep);
        void shutdown([...providers.keys()].filter((k) => !keep.has(k)));
        break;
      }
      case 'flush':
        void Promise.all([...providers.values()].map((e) => e.provider.forceFlush().catch(() => undefined))).then(() => send({ type: 'done', id: m.id }));
        break;
      case 'close':
        void shutdown(providers.keys()).then(() => send({ type: 'done', id: m.id }));
        break;
    }
  } catch (err) {
    send({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  }
});
