// The tracer's own contract, against a real OTLP/HTTP receiver and the real span exporter thread:
// the ids written into the upstream headers are the ids of the spans the collector gets (the
// SDK runs on its thread with those ids, not ids of its own), an unsampled request writes its
// context and makes no span, an incoming context is continued with its tracestate, times are
// the request's, and the queue is bounded. Randomness is injected: no statistics.
import t, { type Test } from 'tap';
import type { Cluster, HttpTracing, ProxyNode } from '@remora/config';
import { HttpTracer, MAX_QUEUED_SPANS, TracerPool, type TracedRequest } from '../packages/proxy/src/telemetry/tracing.ts';
import { otlpHttpReceiver, type Receiver } from './helpers/otlp.ts';
import { waitFor } from './helpers/net.ts';

const NODE = { workloadName: 'gw', namespace: 'edge' } as ProxyNode;

function tracing(percent: number, spawnUpstreamSpan: boolean): HttpTracing {
  return {
    provider: { kind: 'opentelemetry', cluster: 'otel', authority: '', transport: 'http', path: '/v1/traces', serviceName: 'gw.edge', timeoutMs: 2000, headers: {} },
    randomSamplingPercent: percent,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: [{ kind: 'literal', tag: 'team', value: 'edge' }],
    spawnUpstreamSpan,
    maxPathTagLength: 256,
  };
}

function clusters(port: number): ReadonlyMap<string, Cluster> {
  return new Map([['otel', { endpoints: [{ address: '127.0.0.1', port }] } as unknown as Cluster]]);
}

function request(startHr: number, durationMs: number): TracedRequest {
  return {
    method: 'GET',
    scheme: 'http',
    authority: 'shop.example',
    path: '/cart?x=1',
    pathOnly: '/cart',
    protocol: 'HTTP/1.1',
    requestId: 'rid-1',
    userAgent: 'curl/8',
    sourceIp: '10.1.2.3',
    responseCode: 200,
    bytesReceived: 0,
    bytesSent: 12,
    upstreamCluster: 'outbound|8080||cart.shop.svc.cluster.local',
    upstreamHost: '10.0.0.7:8080',
    startHr,
    durationMs,
    responseFlagsText: '-',
    dynamicMetadata: () => null,
  };
}

const header = (h: readonly string[], name: string): string | undefined => {
  for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
  return undefined;
};

async function setup(t: Test, percent: number, spawn: boolean, rand: () => number): Promise<{ pool: TracerPool; tracer: HttpTracer; receiver: Receiver }> {
  const receiver = await otlpHttpReceiver();
  const pool = new TracerPool((m) => t.fail(m));
  await pool.load();
  t.teardown(async () => {
    await pool.close();
    await receiver.close();
  });
  const tracer = HttpTracer.compile(tracing(percent, spawn), 'gateway', NODE, 'router~1~gw~edge', clusters(receiver.port), pool, rand);
  if (tracer === null) throw new Error('no tracer');
  return { pool, tracer, receiver };
}

t.test('not sampled: the context goes on with flag 00, no span leaves', async (t) => {
  const { pool, tracer, receiver } = await setup(t, 1, true, () => 0.5);
  const h = ['host', 'shop.example'];
  t.equal(tracer.start(h), null, 'no trace kept for an unsampled request');
  t.match(header(h, 'traceparent'), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'traceparent written, not sampled');
  // Each unsampled request gets ids of its own (the header is made from fresh random bytes each time).
  const seen = new Set<string>();
  let malformed = 0;
  for (let i = 0; i < 1000; i++) {
    const hi = ['host', 'shop.example'];
    tracer.start(hi);
    const tp = header(hi, 'traceparent') ?? '';
    if (!/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/.test(tp) || /^00-0{32}-|-0{16}-00$/.test(tp)) malformed++;
    seen.add(tp.slice(3, 35)).add(tp.slice(36, 52));
  }
  t.equal(malformed, 0, 'every one well formed, no all-zero id');
  t.equal(seen.size, 2000, '1,000 distinct trace ids and 1,000 distinct span ids');
  await pool.flush();
  t.equal(receiver.spans.length, 0, 'nothing exported');
});

t.test('sampled: the exported spans carry the ids the upstream was given, and the request times', async (t) => {
  const { pool, tracer, receiver } = await setup(t, 1, true, () => 0.001);
  const h = ['host', 'shop.example'];
  const startHr = performance.now();
  const trace = tracer.start(h);
  t.ok(trace !== null, 'sampled at 1% when the draw is under 0.01');
  const tp = header(h, 'traceparent')!;
  const [, traceId, upstreamSpanId, flags] = tp.split('-');
  t.equal(flags, '01', 'traceparent says sampled');
  tracer.finish(trace!, request(startHr, 25));
  await pool.flush();
  await waitFor('both spans at the collector', () => receiver.spans.length === 2, 5000);
  const server = receiver.spans.find((s) => s.kind === 2)!;
  const client = receiver.spans.find((s) => s.kind === 3)!;
  t.equal(server.traceId, traceId, 'one trace id in the header and the spans');
  t.equal(client.spanId, upstreamSpanId, 'the upstream was given the upstream span (spawn_upstream_span)');
  t.equal(client.parentId, server.spanId, 'the upstream span is the server span’s child');
  t.equal(server.parentId, '', 'the server span is a root');
  t.equal(server.name, 'cart.shop.svc.cluster.local:8080/*', 'istiod’s decorator as the name');
  t.equal(client.name, 'router outbound|8080||cart.shop.svc.cluster.local egress');
  t.equal(server.service, 'gw.edge');
  t.equal(server.tags['team'], 'edge', 'a literal custom tag');
  t.equal(server.tags['http.url'], 'http://shop.example/cart?x=1');
  t.equal(server.tags['upstream_cluster'], 'outbound|8080||cart.shop.svc.cluster.local');
  const startMs = Number(BigInt(server.startNs) / 1000n) / 1000;
  const endMs = Number(BigInt(server.endNs) / 1000n) / 1000;
  t.ok(Math.abs(startMs - (performance.timeOrigin + startHr)) < 2, `the span starts when the request did (${startMs - (performance.timeOrigin + startHr)} ms off)`);
  t.ok(Math.abs(endMs - startMs - 25) < 0.01, `and lasts as long (${endMs - startMs} ms)`);
});

t.test('an incoming sampled context is continued: same trace, its span the parent, tracestate kept', async (t) => {
  const { pool, tracer, receiver } = await setup(t, 0, false, () => 0.99);
  const parent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const h = ['Traceparent', parent, 'tracestate', 'vendor=abc', 'host', 'shop.example'];
  const trace = tracer.start(h);
  t.ok(trace !== null, 'the parent’s sampled flag decides, whatever the sampling rate');
  t.equal(h.filter((x) => x.toLowerCase() === 'traceparent').length, 1, 'one traceparent upstream');
  const tp = header(h, 'traceparent')!;
  t.match(tp, /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/, 'same trace, this hop’s span, sampled');
  t.equal(header(h, 'tracestate'), 'vendor=abc', 'tracestate passed on');
  tracer.finish(trace!, request(performance.now(), 1));
  await pool.flush();
  await waitFor('the span at the collector', () => receiver.spans.length === 1, 5000);
  const [span] = receiver.spans;
  t.equal(span!.parentId, 'b7ad6b7169203331', 'the incoming span is the parent');
  t.equal(span!.spanId, tp.split('-')[2], 'the upstream was given this span');
  t.equal(span!.traceState, 'vendor=abc', 'the span keeps the tracestate');
});

t.test('an incoming unsampled context is passed on unsampled, without a span', async (t) => {
  const { pool, tracer, receiver } = await setup(t, 100, false, () => 0);
  const h = ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'];
  t.equal(tracer.start(h), null);
  t.match(header(h, 'traceparent'), /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-00$/);
  await pool.flush();
  t.equal(receiver.spans.length, 0);
});

t.test('the queue is bounded: past it spans are dropped and counted', async (t) => {
  const { pool, tracer } = await setup(t, 100, false, () => 0);
  for (let i = 0; i < MAX_QUEUED_SPANS + 10; i++) {
    const trace = tracer.start([]);
    tracer.finish(trace!, request(performance.now(), 1));
  }
  t.equal(pool.dropped, 10, 'the spans past the bound');
});
