/**
 * What passes between a proxy's event loop and its span exporter thread
 * (`span-export-thread.ts`): finished spans as plain records, in batches, and the providers
 * they go to. The request path never touches OpenTelemetry's SDK, its exporters or their
 * HTTP/gRPC clients: those live on the thread, with their own heap and their own JIT state.
 */
import type { TracingProvider } from '@remora/config';

/** A finished span, as the request path records it. Ids are lower-case hex. */
export interface SpanRecord {
  /** The provider (collector, transport, service name) the span goes to: `ProviderSpec.key`. */
  readonly provider: number;
  readonly name: string;
  /** OpenTelemetry's SpanKind: 1 server, 2 client. */
  readonly kind: number;
  readonly traceId: string;
  readonly spanId: string;
  /** The parent's span id, or '' for a root span. */
  readonly parentSpanId: string;
  /** Whether the parent came from another process (an incoming trace context). */
  readonly remoteParent: boolean;
  /** The incoming W3C `tracestate`, serialised, or ''. */
  readonly traceState: string;
  /** Milliseconds since the epoch, with fractions. */
  readonly startMs: number;
  readonly endMs: number;
  readonly attributes: Readonly<Record<string, string>>;
}

/** One collector to export to, as the config names it. */
export interface ProviderSpec {
  readonly key: number;
  readonly provider: TracingProvider;
  readonly url: string;
  readonly serviceName: string;
  readonly timeoutMs: number;
}

export type ToExporter =
  | { readonly type: 'provider'; readonly spec: ProviderSpec }
  | { readonly type: 'spans'; readonly spans: readonly SpanRecord[] }
  /** Shuts down (flushing) every provider not in `keep`. */
  | { readonly type: 'retain'; readonly keep: readonly number[] }
  | { readonly type: 'flush'; readonly id: number }
  | { readonly type: 'close'; readonly id: number };

export type FromExporter =
  | { readonly type: 'done'; readonly id: number }
  | { readonly type: 'error'; readonly message: string };
