/**
 * OTLP trace receivers for tests: an OTLP/gRPC TraceService (grpc-js) and an OTLP/HTTP
 * protobuf endpoint. Both decode what they get with opentelemetry-proto's field numbers and
 * keep the spans, with the service name of their resource and the request's metadata.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const OTLP = protobuf.parse(`
syntax = "proto3";
package otlp;
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; } }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5; int32 kind = 6;
  fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
}
message ScopeSpans { Span scope = 1; repeated Span spans = 2; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
`).root.lookupType('otlp.ExportTraceServiceRequest');

export interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentId: string;
  readonly name: string;
  /** OTLP's: 2 SERVER, 3 CLIENT. */
  readonly kind: number;
  readonly tags: Record<string, string>;
  /** W3C tracestate, serialised ('' when none). */
  readonly traceState: string;
  /** Start and end, nanoseconds since the epoch (as decimal strings: they pass 2^53). */
  readonly startNs: string;
  readonly endNs: string;
  /** The export's headers (HTTP) or metadata (gRPC), lower-case names. */
  readonly meta: Record<string, string>;
}

export interface Receiver {
  readonly port: number;
  readonly spans: ReceivedSpan[];
  close(): Promise<void>;
}

const hex = (b: Uint8Array | undefined): string => (b === undefined ? '' : Buffer.from(b).toString('hex'));

function decode(body: Uint8Array, meta: Record<string, string>, into: ReceivedSpan[]): void {
  const msg = OTLP.toObject(OTLP.decode(body), { longs: String, defaults: true }) as {
    resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: { traceId: Uint8Array; spanId: Uint8Array; parentSpanId: Uint8Array; traceState: string; name: string; kind: number; startTimeUnixNano: string; endTimeUnixNano: string; attributes: { key: string; value: { stringValue?: string; boolValue?: boolean; intValue?: string } }[] }[] }[] }[];
  };
  for (const rs of msg.resourceSpans) {
    const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
    for (const ss of rs.scopeSpans) {
      for (const s of ss.spans) {
        const tags: Record<string, string> = {};
        for (const a of s.attributes) tags[a.key] = a.value.stringValue ?? String(a.value.boolValue ?? a.value.intValue ?? '');
        into.push({ service, traceId: hex(s.traceId), spanId: hex(s.spanId), parentId: hex(s.parentSpanId), traceState: s.traceState, name: s.name, kind: s.kind, startNs: s.startTimeUnixNano, endNs: s.endTimeUnixNano, tags, meta });
      }
    }
  }
}

/** An OTLP/gRPC collector: `opentelemetry.proto.collector.trace.v1.TraceService/Export` over plaintext HTTP/2. */
export async function otlpGrpcReceiver(): Promise<Receiver> {
  const spans: ReceivedSpan[] = [];
  const raw = (b: Buffer): Buffer => b;
  const server = new grpc.Server();
  server.addService(
    {
      Export: {
        path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
        requestStream: false,
        responseStream: false,
        requestSerialize: raw,
        requestDeserialize: raw,
        responseSerialize: raw,
        responseDeserialize: raw,
      },
    },
    {
      Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        const meta: Record<string, string> = {};
        for (const [k, v] of Object.entries(call.metadata.getMap())) meta[k] = String(v);
        decode(call.request, meta, spans);
        done(null, Buffer.alloc(0));
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, spans, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

/** An OTLP/HTTP protobuf collector on `/v1/traces`. */
export async function otlpHttpReceiver(): Promise<Receiver> {
  const spans: ReceivedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url !== '/v1/traces' || req.headers['content-type'] !== 'application/x-protobuf') {
        res.writeHead(400).end();
        return;
      }
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) meta[k] = String(v);
      decode(Buffer.concat(chunks), meta, spans);
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, spans, close: () => new Promise<void>((r) => server.close(() => r())) };
}
