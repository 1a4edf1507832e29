// Envoy's HTTP tracing end to end: `remora envoy` processes whose connection managers carry
// istiod's `tracing` (OpenTelemetry over OTLP/HTTP protobuf, Zipkin v2 JSON) export spans to
// real collectors written here, which decode what they get. A gateway → sidecar → app chain
// links its spans parent to child and carries Istio's tags; an incoming traceparent and B3
// context are continued; sampling follows randomSampling, x-envoy-force-trace and the
// parent's flag; a collector that never answers costs nothing to the requests.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { spawnEnvoy } from './helpers/bootstrap.ts';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { freePorts, waitFor } from './helpers/net.ts';
import { otlpHttpReceiver, type ReceivedSpan } from './helpers/otlp.ts';

/** A span as a collector received it (OTLP, or Zipkin mapped to OTLP's kinds). */
type GotSpan = Pick<ReceivedSpan, 'service' | 'traceId' | 'spanId' | 'parentId' | 'name' | 'kind' | 'tags'>;

interface Collector {
  readonly port: number;
  readonly spans: GotSpan[];
  close(): Promise<void>;
}

/** An OTLP/HTTP collector: decodes each protobuf export and keeps its spans (helpers/otlp.ts). */
const otlpCollector = (): Promise<Collector> => otlpHttpReceiver();

/** A Zipkin collector: v2 JSON spans, kept as they come. */
async function zipkinCollector(): Promise<Collector> {
  const spans: GotSpan[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const list = JSON.parse(Buffer.concat(chunks).toString()) as { traceId: string; id: string; parentId?: string; name: string; kind?: string; localEndpoint?: { serviceName?: string }; tags?: Record<string, string> }[];
      for (const s of list) spans.push({ service: s.localEndpoint?.serviceName ?? '', traceId: s.traceId, spanId: s.id, parentId: s.parentId ?? '', name: s.name, kind: s.kind === 'SERVER' ? 2 : s.kind === 'CLIENT' ? 3 : 0, tags: s.tags ?? {} });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, spans, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const OTEL_TYPE = 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig';
const ZIPKIN_TYPE = 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig';

function otelProvider(serviceName: string): object {
  return { name: 'envoy.tracers.opentelemetry', typed_config: { '@type': OTEL_TYPE, http_service: { http_uri: { uri: 'otel-collector.observability.svc.cluster.local:4318/v1/traces', cluster: 'otel', timeout: '2s' } }, service_name: serviceName } };
}

function zipkinProvider(): object {
  return { name: 'envoy.tracers.zipkin', typed_config: { '@type': ZIPKIN_TYPE, collector_cluster: 'zipkin', collector_endpoint: '/api/v2/spans', collector_hostname: 'zipkin.istio-system:9411', trace_id_128bit: true, shared_span_context: false, collector_endpoint_version: 'HTTP_JSON' } };
}

/** istiod's service tags (buildServiceTags) for a workload. */
function istioTags(service: string, namespace: string): object[] {
  return [
    { tag: 'istio.canonical_revision', literal: { value: 'latest' } },
    { tag: 'istio.canonical_service', literal: { value: service } },
    { tag: 'istio.mesh_id', literal: { value: 'cluster.local' } },
    { tag: 'istio.namespace', literal: { value: namespace } },
  ];
}

interface ProxySpec {
  readonly nodeId: string;
  readonly adminPort: number;
  readonly port: number;
  /** Where the proxy's one route sends requests (cluster `outbound|<port>||<host>`). */
  readonly upstreamPort: number;
  readonly upstreamHost: string;
  readonly tracing: object;
  readonly collectorPort: number;
  readonly collectorCluster: 'otel' | 'zipkin';
}

/** A bootstrap with one HTTP listener routing everything to one upstream, traced as `tracing` says. */
function bootstrap(p: ProxySpec): string {
  const cluster = `outbound|${p.upstreamPort}||${p.upstreamHost}`;
  const staticCluster = (name: string, port: number): object => ({ name, type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }] } });
  return JSON.stringify({
    node: { id: p.nodeId, cluster: 'test' },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: p.adminPort } } },
    static_resources: {
      listeners: [
        {
          name: `0.0.0.0_${p.port}`,
          address: { socket_address: { address: '127.0.0.1', port_value: p.port } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                    stat_prefix: `outbound_0.0.0.0_${p.port}`,
                    route_config: { name: 'local', virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }] },
                    http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
                    tracing: p.tracing,
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [staticCluster(cluster, p.upstreamPort), staticCluster(p.collectorCluster, p.collectorPort)],
    },
  });
}

const dir = mkdtempSync(join(tmpdir(), 'remora-tracing-'));

/** Starts `remora envoy` on a bootstrap and waits until its listener answers. */
async function startProxy(t: Test, name: string, spec: ProxySpec): Promise<void> {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, bootstrap(spec));
  const { child, err } = spawnEnvoy(['-c', file, '-l', 'warning']);
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor(`${name} serves`, async () => (await request(spec.adminPort, '/ready')).status === 200, 20_000, { output: err });
}

interface Chain {
  readonly app: Backend;
  readonly collector: Collector;
  readonly gatewayPort: number;
  readonly sidecarPort: number;
}

/** app ← sidecar (outbound, CLIENT span) ← gateway (SERVER span + upstream CLIENT span), both exporting to one OTLP collector. */
async function otelChain(t: Test, gatewayTracing: Record<string, unknown> = {}): Promise<Chain> {
  const app = await startBackend('productpage');
  const collector = await otlpCollector();
  t.teardown(() => {
    app.server.close();
    void collector.close();
  });
  const [gwAdmin, gwPort, scAdmin, scPort] = await freePorts(4);
  await startProxy(t, 'sidecar', {
    nodeId: 'sidecar~10.0.0.7~productpage-v1-1.default~default.svc.cluster.local',
    adminPort: scAdmin!,
    port: scPort!,
    upstreamPort: app.port,
    upstreamHost: 'productpage.default.svc.cluster.local',
    collectorPort: collector.port,
    collectorCluster: 'otel',
    tracing: { client_sampling: { value: 100 }, random_sampling: { value: 100 }, overall_sampling: { value: 100 }, custom_tags: istioTags('productpage', 'default'), provider: otelProvider('productpage.default') },
  });
  await startProxy(t, 'gateway', {
    nodeId: 'router~10.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local',
    adminPort: gwAdmin!,
    port: gwPort!,
    upstreamPort: scPort!,
    upstreamHost: 'productpage.default.svc.cluster.local',
    collectorPort: collector.port,
    collectorCluster: 'otel',
    tracing: { client_sampling: { value: 100 }, random_sampling: { value: 100 }, overall_sampling: { value: 100 }, custom_tags: istioTags('istio-ingressgateway', 'istio-system'), provider: otelProvider('istio-ingressgateway.istio-system'), spawn_upstream_span: true, ...gatewayTracing },
  });
  return { app, collector, gatewayPort: gwPort!, sidecarPort: scPort! };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/;

t.test('gateway → sidecar → app over OTLP/HTTP: one trace, parent to child, Envoy kinds and names, Istio tags', async (t) => {
  const c = await otelChain(t);
  const r = await request(c.gatewayPort, '/productpage?u=normal', { headers: { host: 'bookinfo.example.com', 'user-agent': 'tracing-test/1', 'x-request-id': 'rid-1' } });
  t.equal(r.status, 200);
  const tp = TRACEPARENT.exec(String(c.app.seen[0]?.headers['traceparent']));
  t.ok(tp, 'the app gets a W3C traceparent') || t.comment(c.app.seen[0]?.headers);
  t.equal(tp?.[3], '1', 'sampled');
  t.equal(c.app.seen[0]?.headers['x-b3-traceid'], undefined, 'the OpenTelemetry tracer injects W3C only');
  await waitFor('4 spans exported', () => c.collector.spans.length >= 3, 10_000);
  const spans = c.collector.spans;
  t.equal(spans.length, 3, 'gateway SERVER, gateway upstream CLIENT, sidecar CLIENT');
  const gw = spans.find((s) => s.service === 'istio-ingressgateway.istio-system' && s.kind === 2)!;
  const gwUp = spans.find((s) => s.service === 'istio-ingressgateway.istio-system' && s.kind === 3)!;
  const sc = spans.find((s) => s.service === 'productpage.default')!;
  t.ok(gw && gwUp && sc, 'each span from its proxy, with its kind') || t.comment(spans);
  t.equal(new Set(spans.map((s) => s.traceId)).size, 1, 'one trace');
  t.equal(gw.parentId, '', 'the gateway starts the trace');
  t.equal(gwUp.parentId, gw.spanId, "the gateway's upstream span is the child of its server span");
  t.equal(sc.parentId, gwUp.spanId, "the sidecar's span is the child of the gateway's upstream span");
  t.equal(sc.kind, 3, 'a sidecar outbound span is CLIENT');
  t.equal(tp?.[1], sc.traceId, "the app's traceparent carries the trace");
  t.equal(tp?.[2], sc.spanId, "…and the sidecar's span as parent");
  t.equal(gw.name, 'productpage.default.svc.cluster.local:' + c.sidecarPort + '/*', "istiod's decorator: <service>:<port>/*");
  t.equal(gwUp.name, `router outbound|${c.sidecarPort}||productpage.default.svc.cluster.local egress`, "Envoy's upstream span name");
  t.match(gw.tags, {
    'istio.canonical_service': 'istio-ingressgateway',
    'istio.namespace': 'istio-system',
    'istio.mesh_id': 'cluster.local',
    component: 'proxy',
    node_id: 'router~10.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local',
    'guid:x-request-id': 'rid-1',
    'http.method': 'GET',
    'http.url': 'http://bookinfo.example.com/productpage?u=normal',
    'http.status_code': '200',
    response_flags: '-',
    upstream_cluster: `outbound|${c.sidecarPort}||productpage.default.svc.cluster.local`,
    'peer.address': '127.0.0.1',
    user_agent: 'tracing-test/1',
    request_size: '0',
  });
  t.ok(Number(gw.tags['response_size']) > 0, 'response_size');
  t.match(sc.tags, { 'istio.canonical_service': 'productpage', 'istio.namespace': 'default', 'guid:x-request-id': 'rid-1', upstream_cluster: `outbound|${c.app.port}||productpage.default.svc.cluster.local` });
});

t.test("an incoming traceparent is continued, its sampled flag respected; B3 is read when there is no traceparent", async (t) => {
  const c = await otelChain(t, { random_sampling: { value: 0 } });
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  await request(c.gatewayPort, '/a', { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: 'vendor=x' } });
  await waitFor('spans of the continued trace', () => c.collector.spans.length >= 3, 10_000);
  const gw = c.collector.spans.find((s) => s.kind === 2)!;
  t.equal(gw.traceId, traceId, 'the trace goes on');
  t.equal(gw.parentId, '00f067aa0ba902b7', "the client's span is the gateway span's parent");
  t.equal(c.app.seen[0]?.headers['tracestate'], 'vendor=x', 'tracestate travels on');

  const before = c.collector.spans.length;
  await request(c.gatewayPort, '/b', { headers: { traceparent: `00-${traceId}-00f067aa0ba902b8-00` } });
  const tp = TRACEPARENT.exec(String(c.app.seen[1]?.headers['traceparent']));
  t.equal(tp?.[1], traceId, 'an unsampled trace still passes its context on');
  t.equal(tp?.[3], '0', 'not sampled');

  const b3Trace = '80f198ee56343ba864fe8b2a57d3eff7';
  await request(c.gatewayPort, '/c', { headers: { b3: `${b3Trace}-e457b5a2e4d86bd1-1` } });
  const tp2 = TRACEPARENT.exec(String(c.app.seen[2]?.headers['traceparent']));
  t.equal(tp2?.[1], b3Trace, 'a B3 single header starts the W3C context');
  // The sampled B3 request is the marker: each proxy exports its spans in the order the requests
  // ended, so once the B3 trace's spans of both proxies have arrived, any span of the unsampled
  // request before it would have too.
  await waitFor('spans of the B3 trace from both proxies', () => c.collector.spans.filter((s) => s.traceId === b3Trace).length >= 3, 10_000);
  t.ok(c.collector.spans.some((s) => s.traceId === b3Trace && s.parentId === 'e457b5a2e4d86bd1'), "the B3 client's span is the gateway span's parent");
  t.equal(c.collector.spans.filter((s) => s.traceId === traceId).length - 3, 0, 'the unsampled request exported nothing');
  t.equal(c.collector.spans.length, before + 3, 'only the B3 trace came after it');
});

t.test('sampling: 0% exports nothing, x-envoy-force-trace and x-client-trace-id are traced', async (t) => {
  const c = await otelChain(t, { random_sampling: { value: 0 } });
  for (let i = 0; i < 20; i++) await request(c.gatewayPort, `/plain/${i}`);
  const tp = TRACEPARENT.exec(String(c.app.seen[0]?.headers['traceparent']));
  t.equal(tp?.[3], '0', 'not sampled, yet a context is passed on so the next hops agree');
  await request(c.gatewayPort, '/forced', { headers: { 'x-envoy-force-trace': 'true' } });
  await request(c.gatewayPort, '/client', { headers: { 'x-client-trace-id': 'abc' } });
  // The last request is the marker: each proxy exports its spans in the order the requests
  // ended, so once both proxies' spans of /client have arrived, any of the 20 before would have too.
  const clientTrace = (): GotSpan[] => {
    const id = c.collector.spans.find((s) => s.kind === 2 && s.tags['http.url']?.endsWith('/client'))?.traceId;
    return id === undefined ? [] : c.collector.spans.filter((s) => s.traceId === id);
  };
  await waitFor("the gateway's and the sidecar's spans of /client", () => clientTrace().some((s) => s.service === 'productpage.default'), 10_000);
  const servers = c.collector.spans.filter((s) => s.kind === 2).map((s) => s.tags['http.url']);
  t.same(servers.sort(), ['http://127.0.0.1:' + c.gatewayPort + '/client', 'http://127.0.0.1:' + c.gatewayPort + '/forced'].sort(), 'only the forced requests are traced at the gateway');
  t.equal(c.collector.spans.filter((s) => s.service === 'productpage.default').length, 2, "the sidecar follows the gateway's decision (the parent's flag)");
});

t.test('Zipkin: B3 multi headers out, B3 in, v2 JSON spans to the collector', async (t) => {
  const app = await startBackend('reviews');
  const collector = await zipkinCollector();
  t.teardown(() => {
    app.server.close();
    void collector.close();
  });
  const [admin, port] = await freePorts(2);
  await startProxy(t, 'zipkin-sidecar', {
    nodeId: 'sidecar~10.0.0.8~reviews-v1-1.default~default.svc.cluster.local',
    adminPort: admin!,
    port: port!,
    upstreamPort: app.port,
    upstreamHost: 'reviews.default.svc.cluster.local',
    collectorPort: collector.port,
    collectorCluster: 'zipkin',
    tracing: { random_sampling: { value: 100 }, custom_tags: istioTags('reviews', 'default'), provider: zipkinProvider() },
  });
  const traceId = '463ac35c9f6413ad48485a3953bb6124';
  await request(port!, '/reviews/1', { headers: { 'x-b3-traceid': traceId, 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '1' } });
  const h = app.seen[0]!.headers;
  t.equal(h['x-b3-traceid'], traceId, 'the trace id travels on');
  t.match(String(h['x-b3-spanid']), /^[0-9a-f]{16}$/);
  t.not(h['x-b3-spanid'], 'a2fb4a1d1a96d312', "this hop's own span id");
  t.equal(h['x-b3-sampled'], '1');
  t.equal(h['traceparent'], undefined, 'the Zipkin tracer injects B3 only');
  await waitFor('the Zipkin span', () => collector.spans.length >= 1, 10_000);
  const s = collector.spans[0]!;
  t.equal(s.traceId, traceId);
  t.equal(s.parentId, 'a2fb4a1d1a96d312');
  t.equal(s.spanId, h['x-b3-spanid']);
  t.equal(s.kind, 3, 'CLIENT (a sidecar outbound)');
  t.equal(s.name, `reviews.default.svc.cluster.local:${app.port}/*`);
  t.match(s.tags, { 'istio.canonical_service': 'reviews', 'http.status_code': '200', component: 'proxy' });

  await request(port!, '/reviews/2');
  const h2 = app.seen[1]!.headers;
  t.match(String(h2['x-b3-traceid']), /^[0-9a-f]{32}$/, 'a new trace gets a 128-bit id (trace_id_128bit)');
  t.equal(h2['x-b3-sampled'], '1');

  // Not sampled and no incoming context: this hop's context still goes on, B3 with sampled 0.
  const [admin0, port0] = await freePorts(2);
  await startProxy(t, 'zipkin-unsampled', {
    nodeId: 'sidecar~10.0.0.9~reviews-v1-2.default~default.svc.cluster.local',
    adminPort: admin0!,
    port: port0!,
    upstreamPort: app.port,
    upstreamHost: 'reviews.default.svc.cluster.local',
    collectorPort: collector.port,
    collectorCluster: 'zipkin',
    tracing: { random_sampling: { value: 0 }, custom_tags: istioTags('reviews', 'default'), provider: zipkinProvider() },
  });
  const spansBefore = collector.spans.length;
  await request(port0!, '/reviews/3', { headers: { tracestate: 'vendor=1' } });
  const h3 = app.seen[2]!.headers;
  t.match(String(h3['x-b3-traceid']), /^[0-9a-f]{32}$/, 'an unsampled request gets a trace id');
  t.match(String(h3['x-b3-spanid']), /^[0-9a-f]{16}$/, 'and a span id of this hop');
  t.equal(h3['x-b3-sampled'], '0', 'not sampled');
  t.equal(h3['traceparent'], undefined, 'B3 only');
  // A marker: a request sampled by its parent, after it, through the same proxy. Spans leave in
  // the order their requests ended, so when the marker's has arrived, one for /reviews/3 would have.
  const marker = 'b7ad6b7169203331a2fb4a1d1a96d312';
  await request(port0!, '/reviews/4', { headers: { 'x-b3-traceid': marker, 'x-b3-spanid': 'b2fb4a1d1a96d313', 'x-b3-sampled': '1' } });
  await waitFor("the marker's span", () => collector.spans.some((s) => s.traceId === marker), 10_000);
  t.same(collector.spans.slice(spansBefore).map((s) => s.traceId), [marker], 'nothing exported for the unsampled request');
});

t.test('a collector that never answers neither slows the requests nor stops them', async (t) => {
  // Accepts connections and reads, never responds: every export waits for its timeout.
  const sockets = new Set<import('node:net').Socket>();
  const dead = createServer(() => undefined);
  dead.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    dead.close();
  });
  const app = await startBackend('app');
  t.teardown(() => app.server.close());
  const [admin, port] = await freePorts(2);
  await startProxy(t, 'dead-collector', {
    nodeId: 'sidecar~10.0.0.9~app-1.default~default.svc.cluster.local',
    adminPort: admin!,
    port: port!,
    upstreamPort: app.port,
    upstreamHost: 'app.default.svc.cluster.local',
    collectorPort: (dead.address() as AddressInfo).port,
    collectorCluster: 'otel',
    tracing: { random_sampling: { value: 100 }, provider: otelProvider('app.default') },
  });
  let answered = 0;
  // 3000 traced requests: more than the span queue holds (2048), over several export rounds.
  for (let round = 0; round < 30; round++) {
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        const r = await request(port!, '/x');
        if (r.status === 200) answered++;
      }),
    );
  }
  t.equal(answered, 3000, 'every request answered 200');
  // With the queue full and exports hanging, one request at a time still takes a usual time.
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    await request(port!, '/y');
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const p50 = times[25]!;
  t.ok(p50 < 50, `requests are not held by the exports (sequential p50 ${p50.toFixed(1)} ms)`);
  t.equal((await request(port!, '/after')).status, 200, 'still serving with exports pending');
});
