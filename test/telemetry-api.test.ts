// Istio's Telemetry resource end to end, as istio.io's OpenTelemetry tracing task writes it:
// the MeshConfig (--mesh-config) declares `otel-tracing` (OTLP/gRPC, Istio's default transport)
// and an OTLP/HTTP provider, Telemetry resources in files pick the provider and the sampling
// mesh-wide, per namespace and per workload. A gateway → sidecar → app chain started from
// those files exports to real receivers written here (a grpc-js TraceService and an HTTP
// endpoint), which decode the spans: one trace, parent to child, the resource's tag; the
// workload's 0% overrides the namespace's 100%; another workload keeps the namespace's and
// exports to the provider its own Telemetry names. An OTLP/gRPC collector that accepts and never
// answers costs the requests nothing.
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { otlpGrpcReceiver, otlpHttpReceiver, type ReceivedSpan } from './helpers/otlp.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

// istio.io "OpenTelemetry" tracing task: the provider (resource detectors as the page has them)
// plus an OTLP/HTTP one, and the mesh's default sampling left to Telemetry.
const MESH = (grpcPort: number, httpPort: number) => `# the \`mesh\` key of the istio ConfigMap
enableTracing: true
extensionProviders:
- name: otel-tracing
  opentelemetry:
    port: 4317
    service: opentelemetry-collector.observability.svc.cluster.local
    resource_detectors:
      environment: {}
    grpc:
      initialMetadata: [{name: x-tenant, value: bookinfo}]
- name: otel-http
  opentelemetry:
    port: 4318
    service: opentelemetry-collector.observability.svc.cluster.local
    http: {path: /v1/traces, timeout: 2s}
# (receivers on 127.0.0.1:${grpcPort} and :${httpPort})
`;

/** The collector Service, as a ServiceEntry whose endpoints are the test's receivers. */
const COLLECTOR = (grpcPort: number, httpPort: number) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: opentelemetry-collector, namespace: observability}
spec:
  hosts: [opentelemetry-collector.observability.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 4317, name: grpc-otlp, protocol: GRPC}
  - {number: 4318, name: http-otlp, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, ports: {grpc-otlp: ${grpcPort}, http-otlp: ${httpPort}}}
`;

// The task's Telemetry, mesh-wide in the root namespace; a namespace-wide 100% in default; the
// productpage workload at 0%; the reviews workload sending to the OTLP/HTTP provider.
const TELEMETRY = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: otel-demo, namespace: istio-system}
spec:
  tracing:
  - providers:
    - name: otel-tracing
    randomSamplingPercentage: 100
    customTags:
      "my-attribute":
        literal:
          value: "default-value"
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: namespace-sampling, namespace: default}
spec:
  tracing:
  - randomSamplingPercentage: 100
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: productpage-off, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  tracing:
  - randomSamplingPercentage: 0
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-http, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - providers: [{name: otel-http}]
`;

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/;

t.test("istio.io's OpenTelemetry task from files: gateway → sidecar → app over OTLP/gRPC, scoped sampling", async (t) => {
  const grpcRx = await otlpGrpcReceiver();
  const httpRx = await otlpHttpReceiver();
  const app = await startBackend('productpage');
  const reviewsApp = await startBackend('reviews');
  const gwPort = await freePort();
  const files = new MeshDir({ 'collector.yaml': COLLECTOR(grpcRx.port, httpRx.port), 'telemetry.yaml': TELEMETRY });
  const meshFile = files.write('mesh.yaml', MESH(grpcRx.port, httpRx.port));
  const common = [files.dir + '/collector.yaml', files.dir + '/telemetry.yaml'];
  const sidecar = await startRemora('sidecar', common, ['--mesh-config', meshFile, '--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default']);
  const reviews = await startRemora('sidecar', common, ['--mesh-config', meshFile, '--app-port', String(reviewsApp.port), '--labels', 'app=reviews', '--namespace', 'default']);
  files.write('routes.yaml', doc(
    gateway('gw', gwPort, ['*'], 'istio-system'),
    serviceEntry('productpage', 'productpage.default.svc.cluster.local', [{ port: sidecar.ports.inbound }], { port: 9080 }),
    routeAll('gw', 'productpage.default.svc.cluster.local').replace('metadata: { name: productpage.default.svc.cluster.local }', 'metadata: { name: productpage, namespace: istio-system }'),
  ));
  const gw = await startRemora('gateway', [...common, files.dir + '/routes.yaml'], ['--mesh-config', meshFile, '--labels', 'istio=ingressgateway,app=istio-ingressgateway']);
  t.teardown(async () => {
    await gw.stop();
    await sidecar.stop();
    await reviews.stop();
    await app.close();
    await reviewsApp.close();
    await grpcRx.close();
    await httpRx.close();
    files.cleanup();
  });

  t.test('through the gateway: one trace of three spans, parent to child, exported over OTLP/gRPC with the initial metadata', async (t) => {
    const r = await request(gwPort, '/productpage', { headers: { host: 'bookinfo.example.com', 'x-request-id': 'otel-1' } });
    t.equal(r.status, 200) || t.comment(r.body, gw.log.join('\n'));
    const tp = TRACEPARENT.exec(String(app.seen.at(-1)?.headers['traceparent']));
    t.ok(tp, 'the app gets a traceparent');
    t.equal(tp?.[3], '1', 'sampled: the gateway samples at 100%, the sidecar follows its parent');
    // The request's trace: the one its spans (tagged with its x-request-id) belong to; the gateway's upstream span has no such tag.
    const trace = (): ReceivedSpan[] => {
      const id = grpcRx.spans.find((s) => s.tags['guid:x-request-id'] === 'otel-1')?.traceId;
      return id === undefined ? [] : grpcRx.spans.filter((s) => s.traceId === id);
    };
    await waitFor('3 spans over gRPC', () => trace().length >= 3, 10_000);
    const spans = trace();
    t.equal(spans.length, 3, 'gateway SERVER, gateway upstream CLIENT, sidecar inbound SERVER');
    const gwServer = spans.find((s) => s.service === 'istio-ingressgateway.istio-system' && s.kind === 2);
    const gwClient = spans.find((s) => s.service === 'istio-ingressgateway.istio-system' && s.kind === 3);
    const inbound = spans.find((s) => s.service === 'productpage.default');
    t.ok(gwServer && gwClient && inbound, 'each span from its proxy with its kind') || t.comment(spans);
    if (!gwServer || !gwClient || !inbound) return;
    t.equal(tp?.[1], gwServer.traceId, "the app's traceparent carries the trace");
    t.equal(gwServer.parentId, '', 'the gateway starts it');
    t.equal(gwClient.parentId, gwServer.spanId, "the gateway's upstream span is its server span's child");
    t.equal(inbound.parentId, gwClient.spanId, "the sidecar's span is the gateway upstream span's child");
    t.equal(inbound.kind, 2, 'a sidecar inbound span is SERVER');
    t.equal(tp?.[2], inbound.spanId, "the app's parent is the sidecar's span");
    t.equal(gwServer.tags['my-attribute'], 'default-value', "the Telemetry's literal tag");
    t.equal(inbound.tags['my-attribute'], 'default-value', '…on every proxy it applies to');
    t.equal(gwServer.tags['istio.namespace'], 'istio-system');
    t.equal(inbound.tags['istio.namespace'], 'default');
    t.equal(inbound.meta['x-tenant'], 'bookinfo', "the provider's initialMetadata rides on the export");
    t.equal(httpRx.spans.length, 0, 'nothing went to the other provider');
  });

  t.test("the workload's 0% overrides the namespace's 100%: requests straight to the sidecar make no span", async (t) => {
    const before = grpcRx.spans.length;
    for (let i = 0; i < 20; i++) {
      const r = await request(sidecar.ports.inbound, '/p', { headers: { host: 'productpage', 'x-request-id': `off-${i}` } });
      t.equal(r.status, 200);
    }
    const tp = TRACEPARENT.exec(String(app.seen.at(-1)?.headers['traceparent']));
    t.equal(tp?.[3], '0', 'the app still gets a context, not sampled');
    // reviews: the namespace's 100% (no workload override of the sampling), to its own provider.
    const r = await request(reviews.ports.inbound, '/r', { headers: { host: 'reviews', 'x-request-id': 'reviews-1' } });
    t.equal(r.status, 200);
    await waitFor("reviews' span over OTLP/HTTP", () => httpRx.spans.some((s) => s.tags['guid:x-request-id'] === 'reviews-1'), 10_000);
    // A marker through the same sidecar and provider: a request its parent sampled. The sidecar
    // exports spans in the order their requests ended, so once the marker's has arrived, any
    // span of the 20 before it would have too.
    const marker = await request(sidecar.ports.inbound, '/p', { headers: { host: 'productpage', 'x-request-id': 'marker-1', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
    t.equal(marker.status, 200);
    await waitFor("the marker's span over gRPC", () => grpcRx.spans.some((s) => s.tags['guid:x-request-id'] === 'marker-1'), 10_000);
    t.same(grpcRx.spans.slice(before).map((s) => s.tags['guid:x-request-id']), ['marker-1'], 'no productpage span was exported but the marker\'s');
    const rv = httpRx.spans.find((s) => s.tags['guid:x-request-id'] === 'reviews-1')!;
    t.equal(rv.service, 'reviews.default');
    t.equal(rv.kind, 2);
    t.equal(rv.tags['my-attribute'], 'default-value', 'the mesh-wide tag still applies');
    t.equal(grpcRx.spans.filter((s) => s.service === 'reviews.default').length, 0, "reviews' Telemetry moved it off the gRPC provider");
  });
});

t.test('an OTLP/gRPC collector that accepts and never answers neither slows the requests nor stops them', async (t) => {
  // Takes the TCP connection, never speaks HTTP/2: every export hangs until its timeout.
  const sockets = new Set<Socket>();
  const dead = createTcpServer((s) => void sockets.add(s));
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = (dead.address() as AddressInfo).port;
  const app = await startBackend('productpage');
  const files = new MeshDir({ 'collector.yaml': COLLECTOR(deadPort, deadPort), 'telemetry.yaml': TELEMETRY.split('---')[0]! });
  const meshFile = files.write('mesh.yaml', MESH(deadPort, deadPort));
  const sidecar = await startRemora('sidecar', [files.dir + '/collector.yaml', files.dir + '/telemetry.yaml'], ['--mesh-config', meshFile, '--app-port', String(app.port), '--labels', 'app=productpage']);
  t.teardown(async () => {
    await sidecar.stop();
    await app.close();
    for (const s of sockets) s.destroy();
    dead.close();
    files.cleanup();
  });
  let answered = 0;
  // 2500 traced requests: more than the span queue holds (2048).
  for (let round = 0; round < 25; round++) {
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        const r = await request(sidecar.ports.inbound, '/x', { headers: { host: 'productpage' } });
        if (r.status === 200) answered++;
      }),
    );
  }
  t.equal(answered, 2500, 'every request answered 200');
  t.ok(sockets.size > 0, 'the exporter did reach the collector');
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    await request(sidecar.ports.inbound, '/y', { headers: { host: 'productpage' } });
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  t.ok(times[25]! < 50, `requests are not held by the exports (sequential p50 ${times[25]!.toFixed(1)} ms)`);
});
