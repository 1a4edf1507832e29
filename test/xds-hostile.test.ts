// What a control plane sends that a proxy cannot use. Whatever arrives over ADS — a resource
// packed as another type, one with no name, a listener with no address, absurd durations, a
// route to a cluster that does not exist, a response of 20,000 clusters, a storm of pushes —
// the process stays up and keeps serving the last good config; what it cannot use is NACKed
// with a message that names the resource and the field, as Envoy's `error_detail` does.
import type { JsonValue } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { envoyFromJson, envoyMessageType, type EnvoyResources } from '@remora/config/envoy';
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { CLUSTER, LISTENER, ROUTES, type ControlPlane } from './helpers/control-plane.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { envoyFor, startGateway, type ModedGateway } from './helpers/xds-mesh.ts';

const XDS_MODES = ['sotw', 'delta'] as const;
const WEB = 'outbound|80||web.example';

type Json = Record<string, any>;

function mesh(port: number, backend: number, extra = ''): string {
  return doc(
    gateway('gw', port),
    serviceEntry('web', 'web.example', [{ port: backend }]),
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
${extra}  - route: [{ destination: { host: web.example } }]
`,
  );
}

interface Setup {
  readonly gw: ModedGateway;
  readonly cp: ControlPlane;
  readonly port: number;
  readonly backend: Backend;
  readonly envoy: EnvoyResources;
}

async function setup(t: Test, mode: (typeof XDS_MODES)[number]): Promise<Setup> {
  const backend = await startBackend('web');
  t.teardown(() => backend.close());
  const port = await freePort();
  const yaml = mesh(port, backend.port);
  const gw = await startGateway(mode, yaml);
  t.teardown(() => gw.stop());
  return { gw, cp: gw.cp!, port, backend, envoy: envoyFor(yaml) };
}

/** The proxy is up and the last good config answers. */
async function serving(t: Test, s: Setup, what: string): Promise<void> {
  const r = await request(s.port, '/', { headers: { host: 'web.example' } });
  t.same([r.status, r.headers['x-backend']], [200, 'web'], `${what}: the last good config keeps serving`);
  t.equal((await request(s.gw.remora.ports.admin, '/ready')).status, 200, `${what}: the proxy is up`);
}

const clone = (x: unknown): Json => structuredClone(x) as Json;

for (const mode of XDS_MODES) {
  t.test(`${mode}: bad resources are NACKed naming the resource; the last good config serves throughout`, async (t) => {
    const s = await setup(t, mode);
    const { cp } = s;
    const webCluster = s.envoy.clusters.find((c) => c.name === WEB)!;
    const listener = s.envoy.listeners[0]!;

    // A Listener packed into a Cluster response.
    const wrongType = cp.putAny(CLUSTER, 'intruder', anyPack(envoyMessageType(LISTENER)!, envoyFromJson(envoyMessageType(LISTENER)!, { ...clone(listener), name: 'intruder' } as JsonValue) as never));
    const n1 = await cp.verdict(CLUSTER, wrongType);
    t.equal(n1.ack, false, 'a Listener in a Cluster response is NACKed');
    t.match(n1.error, mode === 'delta' ? /^Cluster intruder: type URL "type\.googleapis\.com\/envoy\.config\.listener\.v3\.Listener" in a response of "type\.googleapis\.com\/envoy\.config\.cluster\.v3\.Cluster"/ : /^Cluster intruder \(resources\[\d+\]\): type URL "type\.googleapis\.com\/envoy\.config\.listener\.v3\.Listener"/, n1.error);
    await serving(t, s, 'wrong type');
    t.equal((await cp.verdict(CLUSTER, cp.remove(CLUSTER, 'intruder'))).ack, true, 'without it, the clusters are ACKed again');

    // A Cluster with no name.
    const CLUSTER_SCHEMA = envoyMessageType(CLUSTER)!;
    const nameless = cp.putAny(CLUSTER, 'nameless', anyPack(CLUSTER_SCHEMA, envoyFromJson(CLUSTER_SCHEMA, { ...clone(webCluster), name: '' } as JsonValue) as never));
    const n2 = await cp.verdict(CLUSTER, nameless);
    t.equal(n2.ack, false, 'a Cluster with no name is NACKed');
    t.match(n2.error, mode === 'delta' ? /^Cluster nameless: name: must not be empty/ : /^Cluster resources\[\d+\]: name: must not be empty/, n2.error);
    await serving(t, s, 'no name');
    t.equal((await cp.verdict(CLUSTER, cp.remove(CLUSTER, 'nameless'))).ack, true);

    // A Listener with no address.
    const noAddress = clone(listener);
    noAddress.name = 'no-address';
    delete noAddress.address;
    const n3 = await cp.verdict(LISTENER, cp.put(LISTENER, noAddress));
    t.equal(n3.ack, false, 'a Listener with no address is NACKed');
    t.match(n3.error, /Listener no-address: address\b/, n3.error);
    await serving(t, s, 'no address');
    t.equal((await cp.verdict(LISTENER, cp.remove(LISTENER, 'no-address'))).ack, true);

    // Absurd durations: a negative connect timeout.
    const negative = { ...clone(webCluster), name: 'negative', connectTimeout: '-5s' };
    const n4 = await cp.verdict(CLUSTER, cp.put(CLUSTER, negative));
    t.equal(n4.ack, false, 'a negative connect timeout is NACKed');
    t.match(n4.error, /Cluster negative: connectTimeout\b/, n4.error);
    await serving(t, s, 'negative duration');
    t.equal((await cp.verdict(CLUSTER, cp.remove(CLUSTER, 'negative'))).ack, true);

    // Absurd durations: the largest a Duration holds (~10,000 years) as a connect timeout and a
    // route timeout. Envoy takes them (they are valid), and so they must not fire at once.
    const huge = '315576000000s';
    const hugeCluster = cp.put(CLUSTER, { ...clone(webCluster), connectTimeout: huge });
    const v5 = await cp.verdict(CLUSTER, hugeCluster);
    t.equal(v5.ack, true, `a ~10,000-year connect timeout is valid, as in Envoy (${v5.error})`);
    const rc = clone(s.envoy.routeConfigs[0]!);
    rc.virtualHosts[0].routes[0].route.timeout = huge;
    const v6 = await cp.verdict(ROUTES, cp.put(ROUTES, rc));
    t.equal(v6.ack, true, `a ~10,000-year route timeout is valid too (${v6.error})`);
    await sleep(100);
    // A Node.js timer given more than 2^31 - 1 ms fires after 1 ms: every request would be a 504 UT.
    await serving(t, s, 'huge durations');
    t.ok(s.gw.remora.log.every((l) => !/TimeoutOverflowWarning/.test(l)), 'no timer overflowed');

    // A route to a cluster that does not exist: valid (Envoy does not check RDS against CDS); 503 NC.
    const ghost = clone(s.envoy.routeConfigs[0]!);
    ghost.virtualHosts[0].routes.unshift({ name: 'ghost', match: { prefix: '/ghost' }, route: { cluster: 'outbound|80||ghost.example' } });
    const v7 = await cp.verdict(ROUTES, cp.put(ROUTES, ghost));
    t.equal(v7.ack, true, 'a route naming an unknown cluster is ACKed, as Envoy does');
    await waitFor('the ghost route to be live', async () => (await request(s.port, '/ghost', { headers: { host: 'web.example' } })).status === 503);
    const before = s.gw.remora.accessLog.length;
    const r = await request(s.port, '/ghost/x', { headers: { host: 'web.example' } });
    t.equal(r.status, 503, "Envoy's cluster_not_found_response_code: 503");
    await waitFor('the access log line', () => s.gw.remora.accessLog.length > before);
    t.match(s.gw.remora.accessLog.slice(before).join('\n'), /" 503 NC cluster_not_found /, 'flag NC, details cluster_not_found');
    await serving(t, s, 'unknown cluster');
    t.equal(cp.verdicts.filter((v) => !v.ack).length, 4, 'four NACKs in all');
  });
}

t.test('a response of 20,000 clusters (several MB, beyond gRPC\'s default 4 MB receive limit) is taken, not a crash or a reconnect loop', async (t) => {
  const s = await setup(t, 'sotw');
  const { cp } = s;
  const base = s.envoy.clusters.find((c) => c.name === WEB)!;
  const many: Json[] = [clone(base)];
  for (let i = 0; i < 20_000; i++) {
    many.push({
      name: `outbound|80||svc-${i}.bulk.svc.cluster.local`,
      type: 'STATIC',
      connectTimeout: '10s',
      metadata: { filterMetadata: { istio: { services: [{ host: `svc-${i}.bulk.svc.cluster.local`, name: `svc-${i}`, namespace: 'bulk' }] } } },
      loadAssignment: {
        clusterName: `outbound|80||svc-${i}.bulk.svc.cluster.local`,
        endpoints: [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: 10_000 + (i % 50_000) } } } }] }],
      },
    });
  }
  const schema = envoyMessageType(CLUSTER)!;
  let bytes = 0;
  for (const c of many) bytes += anyPack(schema, envoyFromJson(schema, c as JsonValue) as never).value.length;
  t.ok(bytes > 4 * 1024 * 1024, `the response is over 4 MB (${(bytes / 1024 / 1024).toFixed(1)} MB)`);
  const version = cp.set({ ...s.envoy, clusters: many as EnvoyResources['clusters'] });
  const t0 = Date.now();
  const v = await cp.verdict(CLUSTER, version, 60_000);
  t.equal(v.ack, true, `ACKed after ${Date.now() - t0} ms (${v.error})`);
  await serving(t, s, '20,000 clusters');
  const list = (await request(s.gw.remora.ports.admin, '/clusters?format=json')).json<{ clusters: unknown[] }>().clusters;
  t.ok(list.length >= 20_001, `/clusters lists them (${list.length})`);
  const log = s.gw.remora.log.join('\n');
  t.notMatch(log, /RESOURCE_EXHAUSTED|Received message larger than max/, 'no stream was refused for its size');
});

t.test('a storm of 200 pushes in ~2 s: the proxy serves throughout, ends on the last version, memory stays bounded', async (t) => {
  const v1 = await startBackend('v1');
  const v2 = await startBackend('v2');
  t.teardown(() => Promise.all([v1.close(), v2.close()]));
  const port = await freePort();
  const yaml = (to: string) =>
    doc(
      gateway('gw', port),
      serviceEntry('v1', 'v1.example', [{ port: v1.port }]),
      serviceEntry('v2', 'v2.example', [{ port: v2.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: ${to} } }]
`,
    );
  const [a, b] = [envoyFor(yaml('v1.example')), envoyFor(yaml('v2.example'))];
  const gw = await startGateway('sotw', yaml('v1.example'));
  t.teardown(() => gw.stop());
  const cp = gw.cp!;
  const rss0 = process.memoryUsage().rss;
  const failures: string[] = [];
  let served = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      try {
        const r = await request(port, '/', { headers: { host: 'x' } });
        if (r.status === 200) served++;
        else failures.push(`${r.status} ${r.body}`);
      } catch (e) {
        failures.push((e as Error).message);
      }
    }
  })();
  let last = '';
  const t0 = Date.now();
  for (let i = 0; i < 200; i++) {
    last = cp.set(i % 2 === 0 ? b : a);
    await sleep(Math.max(0, t0 + (i + 1) * 10 - Date.now()));
  }
  const pushMs = Date.now() - t0;
  // The last push (i = 199) sends everything to v1; make the end state distinct from the start.
  last = cp.set(b);
  const v = await cp.verdict(ROUTES, last, 60_000);
  t.equal(v.ack, true, `the last version (${last}) is ACKed`);
  await waitFor('the last version to serve', async () => (await request(port, '/', { headers: { host: 'x' } })).headers['x-backend'] === 'v2');
  stop = true;
  await loop;
  t.same(failures, [], `no request failed during ${pushMs} ms of pushes (${served} served)`);
  const dump = JSON.parse((await request(gw.remora.ports.admin, '/config_dump?resource=dynamic_route_configs')).body) as { configs: { version_info: string }[] };
  t.equal(dump.configs[0]!.version_info, last, 'the route configuration in force is the last one pushed');
  const grown = (process.memoryUsage().rss - rss0) / 1024 / 1024;
  t.ok(grown < 200, `memory stayed bounded (RSS of the test process, proxy included, grew ${grown.toFixed(0)} MB)`);
});
