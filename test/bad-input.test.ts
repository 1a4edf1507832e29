// Malformed requests get the right 4xx and never take the process down; a dead upstream
// gets a clean 503 with the right flag. Runs the real CLI as its own process.
import { connect } from 'node:net';
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, spawnRemora, type SpawnedRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: SpawnedRemora;
let port: number;
let live: Backend;

/** Sends raw bytes, returns everything the server sends back before closing. */
function raw(data: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    let out = '';
    s.on('data', (c) => (out += c.toString()));
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy());
  });
}

t.before(async () => {
  live = await startBackend('live');
  port = await freePort();
  const deadPort = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('live', 'live', [{ port: live.port }]),
      serviceEntry('dead', 'dead', [{ port: deadPort }]),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: empty }
spec:
  hosts: [empty]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /empty } }]
    route: [{ destination: { host: empty } }]
  - match: [{ uri: { prefix: /dead } }]
    route: [{ destination: { host: dead } }]
    retries: { attempts: 0 }
  - route: [{ destination: { host: live } }]
`,
    ),
  });
  remora = await spawnRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora.stop();
  await live.close();
  mesh.cleanup();
});

async function stillServing(t: Test): Promise<void> {
  const r = await get(port, '/ok', 'x.example');
  t.equal(r.status, 200, 'the proxy still serves');
  t.equal(remora.child.exitCode, null, 'the process is still running');
}

t.test('a malformed request line gets 400, and the process stays up', async (t) => {
  const reply = await raw('GARBAGE\r\n\r\n');
  t.match(reply, /^HTTP\/1\.1 400 Bad Request\r\n/);
  await stillServing(t);
});

t.test('a request with a broken header line gets 400', async (t) => {
  const reply = await raw('GET / HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n');
  t.match(reply, /^HTTP\/1\.1 400 /);
  await stillServing(t);
});

t.test('headers over the 60 KiB limit get 431', async (t) => {
  const reply = await raw(`GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`);
  t.match(reply, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  await stillServing(t);
});

t.test('headers just under the limit pass', async (t) => {
  const r = await request(port, '/', { headers: { host: 'x.example', 'x-big': 'a'.repeat(50 * 1024) } });
  t.equal(r.status, 200);
});

t.test('HTTP/1.1 without Host gets 400 missing_host_header, and the access log says so', async (t) => {
  const reply = await raw('GET /no-host HTTP/1.1\r\nconnection: close\r\n\r\n');
  t.match(reply, /^HTTP\/1\.1 400 /);
  await sleep(50);
  t.ok(remora.stdout.some((l) => l.includes('"GET /no-host HTTP/1.1" 400 - missing_host_header ')), 'the access log names the reason, with no flag (not a codec error)');
  await stillServing(t);
});

t.test('a client that sends half a request and vanishes does not disturb others', async (t) => {
  await new Promise<void>((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write('POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nonly-a-bit');
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 100);
    });
  });
  await sleep(100);
  await stillServing(t);
});

t.test('paths are normalized as Envoy does; a `..` above the root or a fragment gets 400', async (t) => {
  const ok = await raw('GET /a/./b/../c/%7Euser HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.match(ok, /^HTTP\/1\.1 200 /);
  t.match(ok, /"url":"\/a\/c\/~user"/, 'the upstream gets the normalized path');
  t.match(await raw('GET /../etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.match(await raw('GET /a/%2e%2e/%2e%2e/etc HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.match(await raw('GET /a#frag HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
  await stillServing(t);
});

t.test('CONNECT has no route: 404', async (t) => {
  const reply = await raw('CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
  t.match(reply, /^HTTP\/1\.1 404 /);
  await stillServing(t);
});

t.test('a dead endpoint gets 503 UF', async (t) => {
  const r = await request(port, '/dead', { headers: { host: 'x.example', 'x-request-id': 'dead-1' } });
  t.equal(r.status, 503);
  t.match(r.body, /^upstream connect error or disconnect\/reset before headers\. reset reason: connection failure/);
  await sleep(50);
  const line = remora.stdout.find((l) => l.includes('"dead-1"'));
  t.match(line ?? '', /" 503 UF upstream_reset_before_response_started\{connection_failure\} - "ECONNREFUSED" /);
  await stillServing(t);
});

t.test('a service with no endpoint gets 503 UH', async (t) => {
  const r = await request(port, '/empty', { headers: { host: 'x.example', 'x-request-id': 'empty-1' } });
  t.equal(r.status, 503);
  t.equal(r.body, 'no healthy upstream');
  await sleep(50);
  t.match(remora.stdout.find((l) => l.includes('"empty-1"')) ?? '', /" 503 UH no_healthy_upstream /);
});

t.test('malformed requests are in the access log with DPE', async (t) => {
  await sleep(50);
  t.ok(remora.stdout.some((l) => / 400 DPE /.test(l)), 'a 400 DPE line');
  t.ok(remora.stdout.some((l) => / 431 DPE /.test(l)), 'a 431 DPE line');
});
