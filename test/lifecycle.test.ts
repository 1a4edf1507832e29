// Process lifecycle through the real CLI: SIGTERM drains in-flight requests then exits 0;
// a port conflict or an invalid config at start fails fast with a clear message.
import { createServer } from 'node:net';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, MISSPELT_VIRTUAL_SERVICE, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, spawnRemora } from './helpers/remora.ts';

let slow: Backend;
t.before(async () => {
  slow = await startBackend('slow', (req, res) => {
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? '0');
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`slept ${ms}`);
    }, ms);
  });
});
t.teardown(() => slow.close());

async function meshFor(port: number): Promise<MeshDir> {
  return new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('slow', 'slow', [{ port: slow.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: slow }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: slow } }]
`,
    ),
  });
}

t.test('SIGTERM during a slow request: the request completes, then the process exits 0', async (t) => {
  const port = await freePort();
  const mesh = await meshFor(port);
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], ['--drain-time', '5s']);
  const started = Date.now();
  const inFlight = request(port, '/?ms=1500', { headers: { host: 'x' } });
  await sleep(300);
  remora.child.kill('SIGTERM');
  await sleep(200);
  // New connections are refused while draining.
  await t.rejects(request(port, '/?ms=0', { headers: { host: 'x' }, timeoutMs: 2000 }), 'new connections are refused during drain');
  const r = await inFlight;
  t.equal(r.status, 200, 'the in-flight request completed');
  t.equal(r.body, 'slept 1500');
  t.equal(r.headers.connection, 'close', 'the response tells the client the connection closes');
  const { code, signal } = await remora.exited;
  t.equal(signal, null);
  t.equal(code, 0, 'exit status 0');
  t.ok(Date.now() - started < 4500, 'exits as soon as the last request is done, before the drain time');
});

t.test('drain time bounds a request that would take longer', async (t) => {
  const port = await freePort();
  const mesh = await meshFor(port);
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], ['--drain-time', '500ms']);
  const inFlight = request(port, '/?ms=5000', { headers: { host: 'x' } }).then(
    (r) => r.status,
    () => 'reset',
  );
  await sleep(200);
  const t0 = Date.now();
  remora.child.kill('SIGTERM');
  const { code } = await remora.exited;
  t.equal(code, 0);
  t.ok(Date.now() - t0 < 3000, `exited within the drain time (${Date.now() - t0} ms)`);
  t.equal(await inFlight, 'reset', 'the unfinished request was cut off');
});

t.test('a port already in use fails the start with a clear message', async (t) => {
  const port = await freePort();
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const mesh = await meshFor(port);
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], [], false);
  const { code } = await remora.exited;
  t.equal(code, 1);
  t.match(remora.stderr.join('\n'), `cannot listen on 127.0.0.1:${port} (listener 127.0.0.1_${port}): address already in use`);
});

t.test('an admin port already in use fails the start too', async (t) => {
  const port = await freePort();
  const mesh = await meshFor(port);
  t.teardown(() => mesh.cleanup());
  const first = await spawnRemora('gateway', [mesh.dir]);
  t.teardown(() => first.stop());
  const otherPort = await freePort();
  const mesh2 = await meshFor(otherPort);
  t.teardown(() => mesh2.cleanup());
  const second = await spawnRemora('gateway', [mesh2.dir], ['--admin-port', String(first.ports.admin)], false);
  const { code } = await second.exited;
  t.equal(code, 1);
  t.match(second.stderr.join('\n'), `cannot listen on 127.0.0.1:${first.ports.admin} (admin): address already in use`);
});

t.test('an invalid config at start fails fast and names the problem', async (t) => {
  const mesh = new MeshDir({
    'bad.yaml': MISSPELT_VIRTUAL_SERVICE,
  });
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], [], false);
  const { code } = await remora.exited;
  t.equal(code, 1);
  const err = remora.stderr.join('\n');
  t.match(err, /bad\.yaml:7: VirtualService default\/broken: spec\.http\[0\]\.route\[0\]\.weigth: unknown field "weigth"/);
  t.match(err, /invalid configuration; nothing started/);
});

t.test('POST /quitquitquit exits 0', async (t) => {
  const port = await freePort();
  const mesh = await meshFor(port);
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir]);
  const get = await request(remora.ports.admin, '/quitquitquit');
  t.equal(get.status, 405, 'GET is refused: it needs POST');
  const r = await request(remora.ports.admin, '/quitquitquit', { method: 'POST' });
  t.equal(r.status, 200);
  const { code } = await remora.exited;
  t.equal(code, 0);
});
