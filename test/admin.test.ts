// The admin API, health endpoint and Istio metrics, as platform tooling reads them.
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let deadPort: number;
let backend: Backend;

t.before(async () => {
  backend = await startBackend('ratings-v1', (req, res) => {
    const status = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('status') ?? '200');
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end('x'.repeat(100));
  });
  port = await freePort();
  deadPort = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: shop }
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${backend.port} }, labels: { app: ratings, version: v1 } }
  - { address: 127.0.0.1, ports: { http: ${deadPort} }, labels: { app: ratings, version: v2 } }
`,
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings, namespace: shop }
spec:
  host: ratings
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings, namespace: shop }
spec:
  hosts: ["*"]
  gateways: [default/gw]
  http:
  - match: [{ uri: { prefix: /down } }]
    route: [{ destination: { host: ratings, subset: v2 } }]
    retries: { attempts: 0 }
  - route: [{ destination: { host: ratings, subset: v1 } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora.stop();
  await backend.close();
  mesh.cleanup();
});

t.test('/ready and /healthz/ready say LIVE / 200 once serving', async (t) => {
  const ready = await request(remora.ports.admin, '/ready');
  t.equal(ready.status, 200);
  t.equal(ready.body, 'LIVE\n');
  t.equal((await request(remora.ports.health, '/healthz/ready')).status, 200);
});

t.test('/healthcheck/fail turns health unready until /healthcheck/ok', async (t) => {
  await request(remora.ports.admin, '/healthcheck/fail', { method: 'POST' });
  t.equal((await request(remora.ports.health, '/healthz/ready')).status, 503);
  await request(remora.ports.admin, '/healthcheck/ok', { method: 'POST' });
  t.equal((await request(remora.ports.health, '/healthz/ready')).status, 200);
});

t.test("/config_dump is the live snapshot in Envoy's format", async (t) => {
  const r = await request(remora.ports.admin, '/config_dump');
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'application/json');
  type Section = Record<string, unknown> & { '@type': string };
  const sections = r.json<{ configs: Section[] }>().configs;
  const of = (kind: string): unknown => sections.find((s) => s['@type'] === `type.googleapis.com/envoy.admin.v3.${kind}`)!;
  const version = remora.proxy.runtime.snapshot!.config.version;
  const listeners = of('ListenersConfigDump') as { version_info: string; dynamic_listeners: { name: string; active_state: { listener: { address: { socket_address: { port_value: number } } } } }[] };
  t.equal(listeners.version_info, version);
  t.same(listeners.dynamic_listeners.map((l) => [l.name, l.active_state.listener.address.socket_address.port_value]), [[`127.0.0.1_${port}`, port]]);
  const routes = of('RoutesConfigDump') as { dynamic_route_configs: { route_config: { name: string } }[] };
  t.same(routes.dynamic_route_configs.map((r) => r.route_config.name), [`http.${port}`]);
  const clusters = of('ClustersConfigDump') as { dynamic_active_clusters: { cluster: { name: string } }[] };
  t.same(clusters.dynamic_active_clusters.map((c) => c.cluster.name).sort(), [
    'outbound|9080|v1|ratings.shop.svc.cluster.local',
    'outbound|9080|v2|ratings.shop.svc.cluster.local',
    'outbound|9080||ratings.shop.svc.cluster.local',
  ]);
});

t.test("/remora/config is Remora's own model of the live snapshot", async (t) => {
  const r = await request(remora.ports.admin, '/remora/config');
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'application/json');
  const dump = r.json<{ version: string; last_error: string | null; config: { listeners: { name: string; port: number }[]; clusters: { name: string }[]; routeConfigs: { name: string }[] } }>();
  t.equal(dump.version, remora.proxy.runtime.snapshot!.config.version);
  t.equal(dump.last_error, null);
  t.same(dump.config.listeners.map((l) => [l.name, l.port]), [[`127.0.0.1_${port}`, port]]);
  t.same(dump.config.routeConfigs.map((r) => r.name), [`http.${port}`]);
  t.same(dump.config.clusters.map((c) => c.name).sort(), [
    'outbound|9080|v1|ratings.shop.svc.cluster.local',
    'outbound|9080|v2|ratings.shop.svc.cluster.local',
    'outbound|9080||ratings.shop.svc.cluster.local',
  ]);
});

t.test('/clusters shows each endpoint with labels, active requests and health', async (t) => {
  await get(port, '/', 'x');
  const text = (await request(remora.ports.admin, '/clusters')).body;
  const c = 'outbound|9080|v1|ratings.shop.svc.cluster.local';
  const h = `127.0.0.1:${backend.port}`;
  t.match(text, `${c}::${h}::rq_active::0\n`);
  t.match(text, new RegExp(`${escape(c)}::${escape(h)}::rq_total::[1-9]`));
  t.match(text, `${c}::${h}::health_flags::healthy\n`);
  t.match(text, `${c}::${h}::labels::app=ratings,version=v1\n`);
  const json = (await request(remora.ports.admin, '/clusters?format=json')).json<{ clusters: { name: string; endpoints: { address: string; labels: Record<string, string>; health: string }[] }[] }>();
  const v1 = json.clusters.find((x) => x.name === c)!;
  t.same(v1.endpoints.map((e) => [e.address, e.labels, e.health]), [[h, { app: 'ratings', version: 'v1' }, 'healthy']]);
});

t.test('/stats/prometheus has Istio\'s request metrics with Istio\'s labels', async (t) => {
  for (let i = 0; i < 3; i++) await get(port, '/', 'x');
  await get(port, '/?status=503', 'x');
  await get(port, '/down', 'x');
  await sleep(20);
  const text = (await request(remora.ports.admin, '/stats/prometheus')).body;
  const ok = line(text, 'istio_requests_total', ['response_code="200"', 'destination_version="v1"']);
  t.ok(ok, 'a 200 series for v1');
  for (const label of [
    'reporter="source"',
    'source_workload="istio-ingressgateway"',
    'source_workload_namespace="istio-system"',
    'source_app="istio-ingressgateway"',
    'destination_service="ratings.shop.svc.cluster.local"',
    'destination_service_name="ratings"',
    'destination_service_namespace="shop"',
    'destination_app="ratings"',
    'destination_canonical_service="ratings"',
    'destination_canonical_revision="v1"',
    'destination_workload_namespace="shop"',
    'request_protocol="http"',
    'response_flags="-"',
    'grpc_response_status=""',
    'connection_security_policy="unknown"',
  ]) {
    t.ok(ok!.includes(label), label);
  }
  t.ok(Number(ok!.split(' ').pop()) >= 4, 'at least 4 requests counted (3 here, 1 in an earlier test)');
  // Istio's default retry policy retries a 503 twice; the last 503 goes out flagged URX.
  t.ok(line(text, 'istio_requests_total', ['response_code="503"', 'response_flags="URX"', 'destination_version="v1"']), 'the upstream 503 is counted, retries exhausted');
  t.ok(line(text, 'istio_requests_total', ['response_code="503"', 'response_flags="UF"', 'destination_version="v2"']), 'the connect failure carries UF');
  t.ok(line(text, 'istio_request_duration_milliseconds_bucket', ['le="+Inf"', 'destination_version="v1"']), 'duration histogram');
  t.ok(line(text, 'istio_response_bytes_sum', ['response_code="200"']), 'response bytes histogram');
  t.match(text, /# TYPE istio_request_bytes histogram/);
  const bytes = line(text, 'istio_response_bytes_sum', ['response_code="200"', 'destination_version="v1"'])!;
  const sum = Number(bytes.split(' ').pop());
  t.equal(sum % 100, 0, 'response bytes are the 100-byte bodies');
  t.ok(sum >= 400);
});

t.test('/stats lists Envoy-style cluster counters, filterable', async (t) => {
  const text = (await request(remora.ports.admin, '/stats?filter=upstream_rq_total')).body;
  t.match(text, /^cluster\.outbound\|9080\|v1\|ratings\.shop\.svc\.cluster\.local\.upstream_rq_total: [1-9]\d*$/m);
  t.notMatch(text, /membership_total/, 'the filter applies');
  const bad = await request(remora.ports.admin, '/stats?filter=(');
  t.equal(bad.status, 400);
  t.match(bad.body, /missing closing \)/, "RE2's reason");
  // The filter is RE2, as Envoy's (linear time): its syntax, here an inline flag V8 refuses.
  const folded = (await request(remora.ports.admin, `/stats?filter=${encodeURIComponent('(?i)UPSTREAM_RQ_TOTAL')}`)).body;
  t.match(folded, /\.upstream_rq_total: /m, 'an RE2 inline flag works');
});

t.test('/logging shows and changes levels; mutations need POST', async (t) => {
  t.match((await request(remora.ports.admin, '/logging')).body, /active loggers:\n(.*\n)*  config: info\n/);
  t.equal((await request(remora.ports.admin, '/logging?level=debug')).status, 405);
  t.match((await request(remora.ports.admin, '/logging?config=debug', { method: 'POST' })).body, /  config: debug\n/);
  t.equal(remora.proxy.loggers.get('config').level, 'debug');
  const all = await request(remora.ports.admin, '/logging?level=warning', { method: 'POST' });
  t.notMatch(all.body, /: (info|debug)\n/);
  t.equal((await request(remora.ports.admin, '/logging?level=loud', { method: 'POST' })).status, 400);
  await request(remora.ports.admin, '/logging?level=info', { method: 'POST' });
});

t.test('unknown admin paths get 404 with a pointer to the list', async (t) => {
  const r = await request(remora.ports.admin, '/nope');
  t.equal(r.status, 404);
  t.match((await request(remora.ports.admin, '/')).body, /\/config_dump/);
  t.match((await request(remora.ports.admin, '/')).body, /\/remora\/config/);
});

function line(text: string, metric: string, labels: string[]): string | undefined {
  return text.split('\n').find((l) => l.startsWith(`${metric}{`) && labels.every((x) => l.includes(x)));
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
