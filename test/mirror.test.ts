// Traffic mirroring: the mirror gets a copy (authority + -shadow), fire and forget; a mirror
// that hangs or fails changes nothing for the client; mirrorPercentage samples requests.
import { Agent } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let main: Backend;
let mirror: Backend;
let hang: Backend;
const agent = new Agent({ keepAlive: true, maxSockets: 20 });

t.before(async () => {
  main = await startBackend('main');
  mirror = await startBackend('mirror');
  hang = await startBackend('hang', () => {});
  const dead = await freePort();
  port = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('main', 'main', [{ port: main.port }]),
      serviceEntry('mirror', 'mirror', [{ port: mirror.port }]),
      serviceEntry('hang', 'hang', [{ port: hang.port }]),
      serviceEntry('dead', 'dead', [{ port: dead }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /all } }]
    route: [{ destination: { host: main } }]
    mirror: { host: mirror }
  - match: [{ uri: { prefix: /half } }]
    route: [{ destination: { host: main } }]
    mirror: { host: mirror }
    mirrorPercentage: { value: 50 }
  - match: [{ uri: { prefix: /to-hang } }]
    route: [{ destination: { host: main } }]
    mirror: { host: hang }
  - match: [{ uri: { prefix: /to-dead } }]
    route: [{ destination: { host: main } }]
    mirrors: [{ destination: { host: dead } }, { destination: { host: mirror } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  agent.destroy();
  await remora.stop();
  for (const b of [main, mirror, hang]) await b.close();
  mesh.cleanup();
});

t.test('the mirror sees a copy with the -shadow authority; the client sees only the main answer', async (t) => {
  mirror.seen.length = 0;
  const body = 'payload-123';
  const r = await request(port, '/all/x?q=1', { method: 'POST', body, headers: { host: 'shop.example.com:8080', 'x-request-id': 'm-1' } });
  t.equal(r.status, 200);
  t.equal(r.json<{ name: string }>().name, 'main');
  await waitFor('the mirror to see the request', () => mirror.seen.length === 1, 3000);
  const copy = mirror.seen[0]!;
  t.equal(copy.url, '/all/x?q=1');
  t.equal(copy.method, 'POST');
  t.equal(copy.body, body, 'the body is mirrored too');
  t.equal(copy.headers.host, 'shop.example.com-shadow:8080', 'Envoy appends -shadow to the host, before the port');
  t.equal(copy.headers['x-request-id'], 'm-1');
});

t.test('a mirror that hangs changes nothing for the client', async (t) => {
  const t0 = Date.now();
  for (let i = 0; i < 5; i++) {
    const r = await request(port, '/to-hang', { headers: { host: 'x' } });
    t.equal(r.status, 200);
  }
  t.ok(Date.now() - t0 < 1000, `five requests in ${Date.now() - t0} ms despite the hanging mirror`);
  await waitFor('the hanging mirror to have received copies', () => hang.seen.length === 5, 3000);
});

t.test('a mirror that fails changes nothing; other mirrors still get their copy', async (t) => {
  mirror.seen.length = 0;
  const r = await request(port, '/to-dead', { headers: { host: 'x', 'x-request-id': 'dead-mirror' } });
  t.equal(r.status, 200);
  await waitFor('the working mirror to see the request', () => mirror.seen.length === 1, 3000);
  await sleep(30);
  t.match(remora.accessLog.find((l) => l.includes('"dead-mirror"')) ?? '', /" 200 - via_upstream /, 'the client request logs clean');
});

t.test('mirrorPercentage 50 mirrors 50 ± 5 % of 1,000 requests', async (t) => {
  mirror.seen.length = 0;
  for (let i = 0; i < 1000; i += 50) {
    await Promise.all(Array.from({ length: 50 }, () => request(port, '/half', { agent, headers: { host: 'x' } })));
  }
  await sleep(300);
  const n = mirror.seen.length;
  t.ok(n >= 450 && n <= 550, `${n} of 1000 mirrored`);
});
