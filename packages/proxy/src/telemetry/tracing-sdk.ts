/**
 * OpenTelemetry's API, SDK, propagators and exporters in one module, loaded by `TracerPool`
 * only when a config first traces (they take about half a second to load): a proxy that
 * never traces never loads them.
 */
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';
import { RandomIdGenerator } from '@opentelemetry/sdk-trace';

export { ROOT_CONTEXT, SpanKind, TraceFlags, trace } from '@opentelemetry/api';
export { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
export { OTLPTraceExporter as OTLPGrpcTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
export { Metadata as GrpcMetadata } from '@grpc/grpc-js';
export { ZipkinExporter } from '@opentelemetry/exporter-zipkin';
export { resourceFromAttributes } from '@opentelemetry/resources';
export { AlwaysOnSampler, BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';

export const W3C = new W3CTraceContextPropagator();
export const B3_SINGLE = new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER });
export const B3_MULTI = new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER });
export const IDS = new RandomIdGenerator();
