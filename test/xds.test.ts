// Remora under an xDS control plane. The control plane here serves Envoy resources that
// Remora's own translator made from Istio YAML (istiod's job); Remora takes them over ADS,
// routes real requests with them, ACKs each update it applies, NACKs one it cannot use with
// the resource and the reason (the last good config keeps serving), and keeps serving
// through a control-plane outage, reconnecting when it comes back.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseResources, type ListenerPorts, type ProxyNode } from '@remora/config';
import { translateIstioToEnvoy, type EnvoyResources } from '@remora/config/envoy';
import { startBackend } from './helpers/backends.ts';
import { CLUSTER, ControlPlane, LISTENER, ROUTES } from './helpers/control-plane.ts';
import { get } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CLI, CORPUS, startRemora } from './helpers/remora.ts';
import { envoyFor as sharedEnvoyFor, weighted } from './helpers/xds-mesh.ts';
import { certificateSecret, rootsSecret, SdsAgent } from './helpers/sds-agent.ts';
import { spawnEnvoy, staticBootstrap } from './helpers/bootstrap.ts';
import { DevCa } from '@remora/proxy';
import { spawn } from 'node:child_process';
import { collectLines } from './helpers/net.ts';

const GATEWAY: ProxyNode = {
  kind: 'gateway',
  namespace: 'istio-system',
  serviceAccount: 'istio-ingressgateway-service-account',
  labels: { istio: 'ingressgateway' },
  workloadName: 'istio-ingressgateway',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};
const PORTS: ListenerPorts = { bindAddress: '127.0.0.1', outboundPort: 15001, inboundPort: 15006, appPort: null, appAddress: '127.0.0.1' };

/** What istiod would push to this test's gateway for this Istio YAML. */
function envoyFor(yaml: string): EnvoyResources {
  return sharedEnvoyFor(yaml, { node: GATEWAY, ports: PORTS });
}

function mesh(port: number, backends: { v1: number; v2: number }, weightV2: number): string {
  return weighted(port, backends.v1, backends.v2, weightV2);
}

t.test('a gateway configured over ADS: routes, updates, a NACK that keeps the last good config, an outage', async (t) => {
  const v1 = await startBackend('v1');
  const v2 = await startBackend('v2');
  t.teardown(() => Promise.all([v1.close(), v2.close()]));
  const listenPort = await freePort();
  const cp = new ControlPlane();
  await cp.start();
  t.teardown(() => cp.kill());
  const first = cp.set(envoyFor(mesh(listenPort, { v1: v1.port, v2: v2.port }, 0)));

  const remora = await startRemora('gateway', [], ['--xds-address', cp.target]);
  t.teardown(() => remora.stop());

  // The first request the proxy sent carries the node as Istio's agent builds it.
  const hello = cp.requests[0]!;
  t.match(hello.node?.id, /^router~.*~istio-ingressgateway\.istio-system~istio-system\.svc\.cluster\.local$/, 'node id as the agent writes it');
  t.equal(hello.node?.userAgentName, 'remora');

  const r1 = await get(listenPort, '/a', 'web.example');
  t.equal(r1.status, 200);
  t.equal(r1.headers['x-backend'], 'v1', 'routed by the pushed route table to subset v1');
  for (const type of [CLUSTER, LISTENER, ROUTES]) t.equal((await cp.verdict(type, first)).ack, true, `${type.split('.').pop()} ACKed`);

  // An update: all traffic to v2. ACKed once live.
  const second = cp.set(envoyFor(mesh(listenPort, { v1: v1.port, v2: v2.port }, 100)));
  t.equal((await cp.verdict(ROUTES, second)).ack, true, 'the new route table is ACKed');
  await waitFor('v2 serves', async () => (await get(listenPort, '/b', 'web.example')).headers['x-backend'] === 'v2');

  // A route table Remora cannot honour: NACKed, naming the resource and the field; v2 keeps serving.
  const bad = cp.put(ROUTES, {
    name: 'http.' + listenPort,
    virtualHosts: [{ name: 'x', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'outbound|80|v1|web.example', idleTimeout: '5s' } }] }],
  });
  const nack = await cp.verdict(ROUTES, bad);
  t.equal(nack.ack, false, 'NACKed');
  t.match(nack.error, new RegExp(`RouteConfiguration http\\.${listenPort}: virtualHosts\\[0\\]\\.routes\\[0\\]\\.route\\.idleTimeout`), 'the NACK names the resource and the field');
  t.equal((await get(listenPort, '/c', 'web.example')).headers['x-backend'], 'v2', 'the last good config keeps serving');
  const config = (await get(remora.ports.admin, '/remora/config', 'localhost')).body;
  t.match(JSON.parse(config).last_error, /idleTimeout/, '/remora/config shows the rejection');

  // The control plane goes away: nothing changes for traffic.
  cp.kill();
  for (let i = 0; i < 5; i++) t.equal((await get(listenPort, '/d', 'web.example')).headers['x-backend'], 'v2', `served during the outage (${i + 1})`);

  // It comes back (same address) with a new config: the proxy reconnects and takes it.
  await cp.start();
  const third = cp.set(envoyFor(mesh(listenPort, { v1: v1.port, v2: v2.port }, 0)));
  await waitFor('reconnected and back on v1', async () => (await get(listenPort, '/e', 'web.example')).headers['x-backend'] === 'v1', 20_000);
  t.equal((await cp.verdict(ROUTES, third, 20_000)).ack, true, 'ACKed after the reconnect');

  // /config_dump shows what was received, with the version each resource came with.
  const dump = JSON.parse((await get(remora.ports.admin, '/config_dump?resource=dynamic_route_configs', 'localhost')).body) as { configs: { route_config: { name: string }; version_info: string; last_updated: string }[] };
  t.same(
    dump.configs.map((c) => c.route_config.name),
    [`http.${listenPort}`],
    "the dump's route configuration is the one pushed",
  );
  t.equal(dump.configs[0]!.version_info, third, "the route configuration's version is the control plane's");
  t.ok(Date.parse(dump.configs[0]!.last_updated) > 0, 'and when it arrived');
  const clusters = JSON.parse((await get(remora.ports.admin, '/config_dump?mask=version_info', 'localhost')).body) as { configs: { '@type': string; version_info?: string }[] };
  t.equal(clusters.configs.find((c) => c['@type'].endsWith('ClustersConfigDump'))?.version_info, third, 'the clusters section carries the last CDS version');

  // Envoy's control-plane stats.
  const stats = (await get(remora.ports.admin, '/stats?filter=control_plane|cds|lds', 'localhost')).body;
  t.match(stats, /^control_plane\.connected_state: 1$/m, 'connected to the control plane');
  t.match(stats, /^cluster_manager\.cds\.update_success: [1-9]/m, 'CDS updates counted');
  t.match(stats, /^listener_manager\.lds\.update_success: [1-9]/m, 'LDS updates counted');
  const prom = (await get(remora.ports.admin, '/stats/prometheus', 'localhost')).body;
  t.match(prom, /^envoy_control_plane_connected_state\{\} 1$/m, 'and on Prometheus, under Envoy\'s names');
  t.match(prom, /^# TYPE envoy_cluster_manager_cds_update_success counter$/m);
});

t.test('remora envoy: a static bootstrap, Envoy command line and all', async (t) => {
  const backend = await startBackend('static');
  t.teardown(() => backend.close());
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'remora-bootstrap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'envoy.yaml');
  writeFileSync(file, staticBootstrap({ nodeId: 'router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local', adminPort, listenPort, backendPort: backend.port }));
  // Validate mode, as `envoy --mode validate` does.
  const validate = spawn(process.execPath, [CLI, 'envoy', '-c', file, '--mode', 'validate'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const vOut: string[] = [];
  validate.stdout!.on('data', collectLines(vOut));
  const vCode = await new Promise<number | null>((r) => validate.on('exit', r));
  t.equal(vCode, 0, 'the bootstrap validates');
  t.match(vOut.join('\n'), /OK/);

  const { child, err, exited } = spawnEnvoy(['-c', file, '--drain-time-s', '1', '--drain-strategy', 'immediate', '--disable-hot-restart', '--allow-unknown-static-fields', '-l', 'warning']);
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor(`remora envoy serves`, async () => (await get(listenPort, '/hello', 'anything')).status === 200, 15_000, { output: err });
  const r = await get(listenPort, '/hello', 'anything');
  t.equal(r.headers['x-backend'], 'static', 'the static route reaches the static cluster');
  t.equal((await get(adminPort, '/ready', 'localhost')).status, 200, 'the admin API listens where the bootstrap says');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM drains and exits 0');
});

t.test('remora envoy: a bootstrap with an unknown field is refused, as Envoy does, unless allowed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-bootstrap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'envoy.json');
  writeFileSync(file, JSON.stringify({ node: { id: 'sidecar~1.2.3.4~a.b~b.svc.cluster.local' }, no_such_field: 1 }));
  const run = (extra: string[]): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const c = spawn(process.execPath, [CLI, 'envoy', '-c', file, '--mode', 'validate', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      const e: string[] = [];
      c.stderr!.on('data', collectLines(e));
      c.on('exit', (code) => resolve({ code, err: e.join('\n') }));
    });
  const strict = await run([]);
  t.equal(strict.code, 1);
  t.match(strict.err, /no_such_field/);
  const lenient = await run(['--allow-unknown-static-fields']);
  t.equal(lenient.code, 0, lenient.err);
  t.match(lenient.err, /warning.*no_such_field/);
});

const GOLDEN_BOOTSTRAP = join(CORPUS, 'istio-goldens/bootstrap/default_golden.json');

t.test("Istio's agent bootstrap: remora envoy under a control plane on the agent's Unix socket, incremental ADS", { skip: existsSync(GOLDEN_BOOTSTRAP) ? false : `Istio's goldens not found at ${GOLDEN_BOOTSTRAP} (shared/corpus beside the repository)` }, async (t) => {
  const web = await startBackend('web');
  // What the agent serves on 15020: the health the bootstrap's 15021 listener forwards to.
  const agent = await startBackend('agent', (_req, res) => {
    res.writeHead(200, { 'x-backend': 'agent' });
    res.end('ready');
  });
  t.teardown(() => Promise.all([web.close(), agent.close()]));
  const dir = mkdtempSync(join(tmpdir(), 'remora-agent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [adminPort, statsPort, healthPort, outboundPort] = [await freePort(), await freePort(), await freePort(), await freePort()];

  // The agent's real bootstrap (istio-goldens), with its fixed ports moved to free ones and its
  // XDS socket into this test's directory; everything else as pilot-agent wrote it.
  const bootstrap = JSON.parse(readFileSync(GOLDEN_BOOTSTRAP, 'utf8')) as Record<string, any>;
  bootstrap.admin.address.socket_address.port_value = adminPort;
  const moved: Record<number, number> = { 15090: statsPort, 15021: healthPort, 15000: adminPort, 15020: agent.port };
  for (const l of bootstrap.static_resources.listeners) {
    l.address.socket_address.address = '127.0.0.1';
    l.address.socket_address.port_value = moved[l.address.socket_address.port_value];
  }
  for (const c of bootstrap.static_resources.clusters) {
    for (const e of c.load_assignment.endpoints[0].lb_endpoints) {
      const sa = e.endpoint.address.socket_address;
      if (sa !== undefined) sa.port_value = moved[sa.port_value] ?? sa.port_value;
      if (c.name === 'xds-grpc') e.endpoint.address.pipe.path = join(dir, 'XDS');
      if (c.name === 'sds-grpc') e.endpoint.address.pipe.path = join(dir, 'SDS');
    }
  }
  t.equal(bootstrap.dynamic_resources.ads_config.api_type, 'DELTA_GRPC', "the agent's bootstrap asks for incremental ADS");
  const file = join(dir, 'envoy-rev.json');
  writeFileSync(file, JSON.stringify(bootstrap));

  const cp = new ControlPlane(`unix:${join(dir, 'XDS')}`);
  await cp.start();
  t.teardown(() => cp.kill());
  // The agent's SDS socket, serving the workload certificate and the mesh roots.
  const ca = await DevCa.create();
  const workload = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'default' });
  const sds = new SdsAgent(`unix:${join(dir, 'SDS')}`);
  sds.set(certificateSecret(workload.certChainPem, workload.keyPem));
  sds.set(rootsSecret(ca.rootCertPem));
  await sds.start();
  t.teardown(() => sds.kill());
  const sidecar: ProxyNode = { ...GATEWAY, kind: 'sidecar', namespace: 'default', labels: {}, workloadName: 'foo', serviceAccount: 'default' };
  const yaml = serviceEntry('web', 'web.example', [{ port: web.port, labels: { app: 'web' } }]);
  const parsed = parseResources(yaml, 'mesh.yaml');
  const pushed = translateIstioToEnvoy(parsed.resources, sidecar, { ...PORTS, outboundPort });
  t.same(pushed.issues.filter((i) => i.severity === 'error'), []);
  const version = cp.set(pushed.envoy);

  // Envoy's command line exactly as pilot-agent builds it (pkg/envoy/proxy.go).
  const child = spawn(
    process.execPath,
    [CLI, 'envoy', '-c', file, '--drain-time-s', '1', '--drain-strategy', 'immediate', '--local-address-ip-version', 'v4', '--file-flush-interval-msec', '1000', '--disable-hot-restart', '--allow-unknown-static-fields', '-l', 'warning', '--component-log-level', 'misc:error', '--concurrency', '2'],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
  );
  const err: string[] = [];
  child.stderr!.on('data', collectLines(err));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor(`the sidecar serves`, async () => (await get(outboundPort, '/x', 'web.example')).status === 200, 20_000, { output: err });

  const hello = cp.deltaRequests[0]!;
  t.equal(hello.node?.id, 'sidecar~1.2.3.4~foo~bar', "the bootstrap's node goes to the control plane");
  t.equal(hello.node?.userAgentName, 'remora');
  for (const type of [CLUSTER, LISTENER]) t.equal((await cp.verdict(type, version)).ack, true, `${type.split('.').pop()} ACKed over delta`);
  t.equal((await get(outboundPort, '/x', 'web.example')).headers['x-backend'], 'web', 'outbound traffic routed by the pushed config');
  const health = await get(healthPort, '/healthz/ready', 'localhost');
  t.equal(health.headers['x-backend'], 'agent', "the bootstrap's static health listener reaches the agent");
  const stats = await get(statsPort, '/stats/prometheus', 'localhost');
  t.equal(stats.status, 200);
  t.match(stats.body, /istio_requests_total/, "the static Prometheus listener serves the admin's /stats/prometheus");

  const dump = JSON.parse((await get(adminPort, '/config_dump?resource=static_listeners', 'localhost')).body) as { configs: { listener: { name: string } }[] };
  t.same(dump.configs.map((c) => c.listener.name).sort(), ['0.0.0.0_15021', '0.0.0.0_15090'], "the bootstrap's listeners are the dump's static ones");

  t.ok(sds.verdicts.some((v) => v.ack), "the workload identity came over the agent's SDS socket and was ACKed");

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM drains and exits 0');
});

t.test('warming: a new listener waits for its route configuration; the running config serves meanwhile', async (t) => {
  const v1 = await startBackend('v1');
  const v2 = await startBackend('v2');
  t.teardown(() => Promise.all([v1.close(), v2.close()]));
  const [portA, portB] = [await freePort(), await freePort()];
  const cp = new ControlPlane();
  await cp.start();
  t.teardown(() => cp.kill());
  cp.set(envoyFor(mesh(portA, { v1: v1.port, v2: v2.port }, 0)));
  const remora = await startRemora('gateway', [], ['--xds-address', cp.target]);
  t.teardown(() => remora.stop());
  t.equal((await get(portA, '/', 'web.example')).headers['x-backend'], 'v1');

  // A second gateway port appears, but its route table is held back by the control plane.
  const both = envoyFor(doc(mesh(portA, { v1: v1.port, v2: v2.port }, 0), gateway('gw2', portB)).replace('gateways: [gw]', 'gateways: [gw, gw2]'));
  const withheld = both.routeConfigs.find((rc) => rc.name === `http.${portB}`);
  t.ok(withheld, 'the new port has its own route table');
  const lds = cp.set({ ...both, routeConfigs: both.routeConfigs.filter((rc) => rc !== withheld) });
  t.equal((await cp.verdict(LISTENER, lds)).ack, true, 'the listener update is ACKed');
  await waitFor('the route table is asked for', () => cp.requests.some((r) => r.typeUrl === ROUTES && r.resourceNames.includes(`http.${portB}`)));
  let refused = false;
  try {
    await get(portB, '/', 'web.example');
  } catch {
    refused = true;
  }
  t.ok(refused, 'the warming listener does not accept connections yet');
  t.equal((await get(portA, '/', 'web.example')).headers['x-backend'], 'v1', 'the running listener keeps serving');

  // The route table arrives: the new listener goes live.
  cp.put(ROUTES, withheld as Record<string, unknown>);
  await waitFor('the new port serves', async () => {
    try {
      return (await get(portB, '/', 'web.example')).headers['x-backend'] === 'v1';
    } catch {
      return false;
    }
  });
  t.pass('warmed and live');
});
