// A Sidecar's unix domain sockets and TCP egress ports against a real sidecar, written as
// istio.io's Sidecar reference writes them: an ingress listener whose `defaultEndpoint` is
// `unix:///…` (the app listens on a socket, not a port), an egress listener bound to
// `unix://…` that the app talks to over the socket (HTTP and TCP), and an egress listener on
// a TCP port bound to 127.0.0.1 (the reference's MySQL example) carrying a TCP conversation.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { connect, createServer as createTcpServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

/** An HTTP GET over a unix domain socket. */
function getOverSocket(path: string, url: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: path, path: url, headers: { host }, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** A TCP server that answers each line with `<name>: <line>` (a server-first banner first, as MySQL speaks first). */
async function startLineServer(name: string, listen: { port: number } | { path: string }): Promise<Server> {
  const server = createTcpServer((s) => {
    s.write(`hello from ${name}\n`);
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        s.write(`${name}: ${buf.slice(0, nl)}\n`);
        buf = buf.slice(nl + 1);
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => ('path' in listen ? server.listen(listen.path, r) : server.listen(listen.port, '127.0.0.1', r)));
  return server;
}

/** Connects, sends `line`, and returns what came back once `lines` lines have. */
function converse(to: { port: number } | { path: string }, line: string, lines = 2): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = 'path' in to ? connect({ path: to.path }) : connect({ host: '127.0.0.1', port: to.port });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`timed out; got ${JSON.stringify(got)}`));
    }, 10_000);
    s.on('connect', () => s.write(`${line}\n`));
    s.on('data', (c: Buffer) => {
      got += c.toString();
      const parts = got.split('\n').filter((x) => x !== '');
      if (parts.length >= lines) {
        clearTimeout(timer);
        s.end();
        resolve(parts);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

t.test('Sidecar ingress defaultEndpoint unix:///…: the app on a unix socket gets the request through the inbound port', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-uds-'));
  const sock = join(dir, 'someuds.sock');
  const seen: string[] = [];
  const app = createHttpServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.host}`);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ratings over a unix socket');
  });
  await new Promise<void>((r) => app.listen(sock, r));
  // The reference's example, its socket in the test's directory.
  const mesh = new MeshDir({
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix://${sock}
  egress:
  - hosts:
    - "./*"
`,
  });
  t.teardown(async () => {
    await new Promise<void>((r) => app.close(() => r()));
    mesh.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  // Connections made to the inbound port directly count as addressed to --app-port.
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', '9080', '--labels', 'app=ratings', '--namespace', 'prod-us1']);
  t.teardown(() => remora.stop());
  const r = await get(remora.ports.inbound, '/ratings/0', 'ratings.prod-us1:9080');
  t.equal(r.status, 200, 'the request through the inbound port is answered');
  t.equal(r.body, 'ratings over a unix socket', 'by the app on the unix socket');
  t.same(seen, ['GET /ratings/0 ratings.prod-us1:9080'], 'the app saw the request once, as sent');
  t.notOk(remora.log.some((l) => /unix domain socket/.test(l) && /not supported/.test(l)), 'no warning that the endpoint is left out');
  await t.resolves(() => new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      const line = remora.accessLog.find((l) => l.includes('/ratings/0'));
      if (line === undefined) return;
      clearInterval(timer);
      if (line.includes(sock)) resolve();
      else reject(new Error(`access log line without the socket as upstream host: ${line}`));
    }, 20);
  }), 'the access log names the socket as the upstream host');
});

t.test('Sidecar egress bind unix://…: HTTP over the socket reaches its hosts; a stale socket file is replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-uds-'));
  const sock = join(dir, 'egress.sock');
  // A socket file a process left behind (it exited without closing it).
  spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(sock)}, () => process.exit(0))`]);
  t.ok(statSync(sock).isSocket(), 'a stale socket file is there before the proxy starts');
  const ratings = await startBackend('ratings');
  const reviews = await startBackend('reviews');
  const mesh = new MeshDir({
    'services.yaml': doc(
      serviceEntry('ratings', 'ratings.bookinfo.svc.cluster.local', [{ port: ratings.port }], { namespace: 'bookinfo', port: 9080 }),
      serviceEntry('reviews', 'reviews.bookinfo.svc.cluster.local', [{ port: reviews.port }], { namespace: 'bookinfo', port: 9080 }),
    ),
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: uds-egress
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: productpage
  egress:
  - port:
      number: 0
      protocol: HTTP
      name: egresshttp
    bind: unix://${sock}
    hosts:
    - "./ratings.bookinfo.svc.cluster.local"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`,
  });
  t.teardown(async () => {
    await ratings.close();
    await reviews.close();
    mesh.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage', '--namespace', 'bookinfo']);
  t.teardown(() => remora.stop());
  const r = await getOverSocket(sock, '/ratings/0', 'ratings:9080');
  t.equal(r.status, 200, 'ratings through the socket');
  t.equal((JSON.parse(r.body) as { name: string }).name, 'ratings', 'the request reached ratings');
  const other = await getOverSocket(sock, '/reviews/0', 'reviews:9080');
  t.equal(other.status, 502, 'reviews is not among the listener\'s hosts: REGISTRY_ONLY\'s block_all');
  t.equal(reviews.seen.length, 0, 'reviews never saw a request');
  t.ok(remora.log.some((l) => l.includes(`listener unix://${sock}_0 on ${sock}`)), 'the listener is named as istiod names it, on the socket');
  await remora.stop();
  t.throws(() => statSync(sock), { code: 'ENOENT' }, 'the socket file is gone once the proxy stops');
});

t.test('Sidecar egress on a TCP port, captureMode NONE, bind 127.0.0.1: a TCP conversation with its host; on a unix socket too', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-uds-'));
  const sock = join(dir, 'mysql.sock');
  const dbPort = await freePort();
  const port = await freePort();
  const mysql = await startLineServer('mysql', { port: dbPort });
  const other = await startLineServer('other', { port: await freePort() });
  const otherPort = (other.address() as { port: number }).port;
  const mesh = new MeshDir({
    'services.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: bookinfo}
spec:
  hosts: [mysql.foo.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: ${port}, name: mysql, protocol: MYSQL}]
  endpoints: [{address: 127.0.0.1, ports: {mysql: ${dbPort}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: bookinfo}
spec:
  hosts: [other.foo.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: ${port}, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.1, ports: {tcp: ${otherPort}}}]
`,
    // The reference's MySQL egress listener, on the test's port; and the same host on a unix socket.
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: no-ip-tables
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: productpage
  egress:
  - port:
      number: ${port}
      protocol: MYSQL
      name: egressmysql
    captureMode: NONE
    bind: 127.0.0.1
    hosts:
    - "*/mysql.foo.com"
  - port:
      number: 0
      protocol: TCP
      name: egressuds
    bind: unix://${sock}
    hosts:
    - "*/mysql.foo.com"
`,
  });
  t.teardown(async () => {
    await new Promise<void>((r) => mysql.close(() => r()));
    await new Promise<void>((r) => other.close(() => r()));
    mesh.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage', '--namespace', 'bookinfo']);
  t.teardown(() => remora.stop());
  t.same(await converse({ port }, 'SELECT 1'), ['hello from mysql', 'mysql: SELECT 1'], 'the server speaks first, then answers: the conversation passes both ways');
  t.same(await converse({ path: sock }, 'SELECT 2'), ['hello from mysql', 'mysql: SELECT 2'], 'the same over the unix socket listener');
  t.notOk(remora.log.some((l) => /per-port egress listeners are applied to HTTP ports only/.test(l)), 'no warning that the TCP port is left out');
});

t.test('--concurrency 2: one worker serves a unix socket listener, every connection is answered', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-uds-'));
  const sock = join(dir, 'egress.sock');
  const ratings = await startBackend('ratings');
  const mesh = new MeshDir({
    'services.yaml': serviceEntry('ratings', 'ratings.bookinfo.svc.cluster.local', [{ port: ratings.port }], { namespace: 'bookinfo', port: 9080 }),
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: uds-egress, namespace: bookinfo}
spec:
  egress:
  - port: {number: 0, protocol: HTTP, name: egresshttp}
    bind: unix://${sock}
    hosts: ["./*"]
`,
  });
  t.teardown(async () => {
    await ratings.close();
    mesh.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage', '--namespace', 'bookinfo', '--concurrency', '2']);
  t.teardown(() => remora.stop());
  const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => getOverSocket(sock, `/ratings/${i}`, 'ratings:9080')));
  t.same(replies.map((r) => r.status), Array(8).fill(200), 'every request over the socket is answered');
  t.equal(ratings.seen.length, 8, 'and reached ratings');
  t.notOk(remora.log.some((l) => /address already in use|cannot listen/.test(l)), 'no worker fought over the path');
  t.equal(remora.log.filter((l) => l.includes(`on ${sock} (outbound)`)).length, 1, 'one worker listens on the socket (SO_REUSEPORT cannot share a path)');
});
