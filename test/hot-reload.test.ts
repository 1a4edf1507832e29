// Hot reload: file changes apply without a restart and without failing an in-flight request;
// a broken change is logged and the last good config keeps serving.
import { Agent } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let v1: Backend;
let v2: Backend;
let port: number;
let mesh: MeshDir;
let remora: InProcessRemora;
const agent = new Agent({ keepAlive: true, maxSockets: 8 });

const routes = (w1: number, w2: number) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - { destination: { host: app, subset: v1 }, weight: ${w1} }
    - { destination: { host: app, subset: v2 }, weight: ${w2} }
`;

t.before(async () => {
  // Each backend takes a little time, so requests are in flight whenever a reload lands.
  const slowEcho = (name: string) => (_req: unknown, res: import('node:http').ServerResponse) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name }));
    }, 20);
  };
  v1 = await startBackend('v1', slowEcho('v1'));
  v2 = await startBackend('v2', slowEcho('v2'));
  port = await freePort();
  mesh = new MeshDir({
    'gateway.yaml': gateway('gw', port),
    'registry.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: app }
spec:
  hosts: [app]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${v1.port} }, labels: { version: v1 } }
  - { address: 127.0.0.1, ports: { http: ${v2.port} }, labels: { version: v2 } }
`,
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: app }
spec:
  host: app
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
`,
    ),
    'routes.yaml': routes(100, 0),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  agent.destroy();
  await remora.stop();
  await v1.close();
  await v2.close();
  mesh.cleanup();
});

const who = async (): Promise<string> => {
  const r = await request(port, '/', { agent, headers: { host: 'app.example' } });
  return r.status === 200 ? r.json<{ name: string }>().name : `status ${r.status}`;
};

t.test('weights change under a running load loop with zero failed requests', async (t) => {
  const results: string[] = [];
  const errors: string[] = [];
  let stop = false;
  // Bounded: 6 workers, until `stop` or 20 s, whichever comes first.
  const deadline = Date.now() + 20_000;
  const worker = async () => {
    while (!stop && Date.now() < deadline) {
      try {
        results.push(await who());
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  };
  const workers = Array.from({ length: 6 }, worker);
  await sleep(300);
  const before = results.length;
  mesh.write('routes.yaml', routes(0, 100));
  await remora.waitFor('traffic to move to v2', async () => (await who()) === 'v2', 5_000);
  // Run a while on the new config, then flip again.
  await sleep(300);
  mesh.write('routes.yaml', routes(100, 0));
  await remora.waitFor('traffic to move back to v1', async () => (await who()) === 'v1', 5_000);
  await sleep(300);
  stop = true;
  await Promise.all(workers);
  t.same(errors, [], 'no request failed');
  t.same(results.filter((r) => r !== 'v1' && r !== 'v2'), [], 'every response was a 200 from a backend');
  t.ok(before > 10 && results.length > before + 50, `the loop kept running through reloads (${results.length} requests)`);
  t.ok(results.includes('v2'), 'some requests reached v2 after the first reload');
  t.equal(results[results.length - 1], 'v1', 'the last requests follow the second reload');
  t.ok(remora.log.some((l) => /\[info\]\[config\] config [0-9a-f]+ applied/.test(l)), 'the reload is logged');
});

t.test('a broken change is logged with its errors and the last good config keeps serving', async (t) => {
  const version = remora.proxy.runtime.snapshot!.config.version;
  mesh.write('routes.yaml', routes(0, 100).replace('weight: 100', 'weight: "a lot"'));
  await remora.waitFor('the error to be logged', () => remora.log.some((l) => l.includes('routes.yaml:10')), 5_000);
  const err = remora.log.find((l) => l.includes('routes.yaml:10'))!;
  t.match(err, /\[error\]\[config\] .*routes\.yaml:10: VirtualService default\/app: spec\.http\[0\]\.route\[1\]\.weight: must be integer/);
  t.ok(remora.log.some((l) => l.includes(`keeping config ${version}`)), 'says which config stays');
  t.equal(remora.proxy.runtime.snapshot!.config.version, version, 'the snapshot did not change');
  for (let i = 0; i < 10; i++) t.equal(await who(), 'v1');
  const dump = await request(remora.ports.admin, '/remora/config');
  t.match(dump.json<{ last_error: string }>().last_error, /must be integer/, '/remora/config shows the last error');
});

t.test('a YAML syntax error is reported with its line; fixing it applies the fix', async (t) => {
  mesh.write('routes.yaml', 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: app\n');
  await remora.waitFor('the syntax error to be logged', () => remora.log.some((l) => /routes\.yaml:\d+: YAML syntax/.test(l)), 5_000);
  t.equal(await who(), 'v1');
  mesh.write('routes.yaml', routes(0, 100));
  await remora.waitFor('the fixed file to apply', async () => (await who()) === 'v2', 5_000);
  t.pass('the fix applied');
});

t.test('a file removed from the directory removes its resources', async (t) => {
  mesh.write('extra.yaml', `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: extra }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${await freePort()}, name: http, protocol: HTTP }
    hosts: ["*"]
`);
  await remora.waitFor('the extra gateway listener', () => remora.proxy.runtime.listeners.size === 2, 5_000);
  const { rmSync } = await import('node:fs');
  rmSync(`${mesh.dir}/extra.yaml`);
  await remora.waitFor('the extra listener to go', () => remora.proxy.runtime.listeners.size === 1, 5_000);
  t.pass('listener added and removed by editing files');
});
