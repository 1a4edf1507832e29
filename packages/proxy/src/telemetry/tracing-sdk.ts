/**
 * OpenTelemetry's API and propagators, loaded by `TracerPool` only when a config first traces:
 * a proxy that never traces never loads them. The SDK and the exporters load on the span
 * exporter thread (`span-export-thread.ts`), never on the request path's event loop.
 */
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';

export { ROOT_CONTEXT, trace } from '@opentelemetry/api';

export const W3C = new W3CTraceContextPropagator();
export const B3_SINGLE = new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER });
export const B3_MULTI = new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER });
