// Istio's app probes (pilot-agent's /app-health/… on the status port) against real apps on
// 127.0.0.1: an HTTP app, a plain TCP listener, an h2c gRPC health service.
import t from 'tap';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { AppProbeServer, AppProbersError, parseAppProbers } from '../src/admin/app-probes.ts';

interface Seen {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly remoteAddress: string;
}

function listen<S extends Server | Http2Server | ReturnType<typeof createTcpServer>>(server: S): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('httpGet: the app answers through the status port, from 127.0.0.6, with the kubelet’s headers', async (t) => {
  const seen: Seen[] = [];
  const app = createServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers, remoteAddress: req.socket.remoteAddress ?? '' });
    if (req.url === '/ready') return void res.end('ready\n');
    if (req.url === '/sick') return void res.writeHead(503).end('sick\n');
    if (req.url === '/big') return void res.end('x'.repeat(64 * 1024));
    if (req.url === '/moved') return void res.writeHead(302, { location: '/ready' }).end();
    if (req.url === '/away') return void res.writeHead(301, { location: 'http://example.invalid/' }).end();
    if (req.url === '/loop') return void res.writeHead(302, { location: '/loop' }).end();
    if (req.url === '/slow') return void setTimeout(() => res.end('late'), 3000);
    res.writeHead(404).end();
  });
  const appPort = await listen(app);
  t.teardown(() => app.close());
  const probe = (path: string, timeoutSeconds = 1) => ({ httpGet: { path, port: appPort, scheme: 'HTTP' }, timeoutSeconds });
  const probers = parseAppProbers(
    JSON.stringify({
      '/app-health/web/readyz': probe('/ready'),
      '/app-health/web/livez': probe('/sick'),
      '/app-health/big/readyz': probe('/big'),
      '/app-health/moved/readyz': probe('/moved'),
      '/app-health/away/readyz': probe('/away'),
      '/app-health/loop/readyz': probe('/loop'),
      '/app-health/slow/readyz': probe('/slow'),
    }),
  );
  const s = new AppProbeServer(probers, { destination: '127.0.0.1', statusPort: 15020 });
  await s.listen('127.0.0.1', 0);
  t.teardown(() => s.close());
  const port = (s.server.address() as AddressInfo).port;

  const ready = await get(port, '/app-health/web/readyz', { 'user-agent': 'kube-probe/1.30', 'x-probe': 'yes' });
  t.same(ready, { status: 200, body: 'ready\n' }, 'the app’s status and body');
  t.equal(seen[0]!.remoteAddress, '127.0.0.6', 'the probe connects from 127.0.0.6, which istio-iptables never captures');
  t.equal(seen[0]!.headers['user-agent'], 'kube-probe/1.30', 'the kubelet’s User-Agent is forwarded');
  t.equal(seen[0]!.headers['x-probe'], 'yes', 'the probe’s httpHeaders are forwarded');

  // The kubelet's Host names the pod IP and the status port; the app sees its own port.
  t.equal((await get(port, '/app-health/web/readyz', { host: '10.1.2.3:15020' })).status, 200);
  t.equal(seen.at(-1)!.headers.host, `10.1.2.3:${appPort}`, 'Host with the status port gets the app’s port');

  t.same(await get(port, '/app-health/web/livez'), { status: 503, body: 'sick\n' }, 'a failing probe keeps the app’s status');
  const big = await get(port, '/app-health/big/readyz');
  t.equal(big.body.length, 10 * 1024, 'the body is cut at 10 KiB');
  const before = seen.length;
  t.equal((await get(port, '/app-health/moved/readyz')).status, 200, 'a redirect to the same host is followed');
  t.same(seen.slice(before).map((x) => x.path), ['/moved', '/ready']);
  t.equal((await get(port, '/app-health/away/readyz')).status, 200, 'a redirect elsewhere is a success, as the kubelet has it');
  t.equal((await get(port, '/app-health/loop/readyz')).status, 500, 'more than 10 redirects fail');
  const started = Date.now();
  t.equal((await get(port, '/app-health/slow/readyz')).status, 500, 'past timeoutSeconds the probe fails');
  t.ok(Date.now() - started < 2500, 'after the timeout, not the app’s answer');

  t.equal((await get(port, '/app-health/other/readyz')).status, 400, 'a probe path nobody registered: 400');
  t.equal((await get(port, '/healthz/ready')).status, 404, 'anything else: 404');
});

t.test('tcpSocket: 200 when the port accepts, 500 when it refuses', async (t) => {
  const tcp = createTcpServer((c) => c.end());
  const open = await listen(tcp);
  const closedServer = createTcpServer();
  const closed = await listen(closedServer);
  await new Promise<void>((r) => closedServer.close(() => r()));
  t.teardown(() => tcp.close());
  const s = new AppProbeServer(
    parseAppProbers(JSON.stringify({ '/app-health/db/livez': { tcpSocket: { port: open } }, '/app-health/db/readyz': { tcpSocket: { port: closed } } })),
    { destination: '127.0.0.1', statusPort: 15020 },
  );
  await s.listen('127.0.0.1', 0);
  t.teardown(() => s.close());
  const port = (s.server.address() as AddressInfo).port;
  t.equal((await get(port, '/app-health/db/livez')).status, 200);
  t.equal((await get(port, '/app-health/db/readyz')).status, 500);
});

t.test('grpc: grpc.health.v1 SERVING is 200, NOT_SERVING is 500', async (t) => {
  const requested: string[] = [];
  const h2 = createH2Server();
  h2.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      // HealthCheckRequest.service (field 1) after the 5-byte gRPC prefix.
      const service = body.length > 7 ? body.subarray(7, 7 + body[6]!).toString() : '';
      requested.push(`${String(headers[':path'])} ${service}`);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, service === 'down' ? 2 : 1]));
    });
  });
  const port = await listen(h2);
  t.teardown(() => h2.close());
  const s = new AppProbeServer(
    parseAppProbers(JSON.stringify({ '/app-health/g/livez': { grpc: { port } }, '/app-health/g/readyz': { grpc: { port, service: 'down' } } })),
    { destination: '127.0.0.1', statusPort: 15020 },
  );
  await s.listen('127.0.0.1', 0);
  t.teardown(() => s.close());
  const sp = (s.server.address() as AddressInfo).port;
  t.equal((await get(sp, '/app-health/g/livez')).status, 200);
  t.equal((await get(sp, '/app-health/g/readyz')).status, 500);
  t.same(requested, ['/grpc.health.v1.Health/Check ', '/grpc.health.v1.Health/Check down']);
});

t.test('ISTIO_KUBE_APP_PROBERS mistakes are refused with the probe path and field named', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    ['{', /ISTIO_KUBE_APP_PROBERS: not JSON/],
    [{ '/healthz/web/readyz': { tcpSocket: { port: 1 } } }, /"\/healthz\/web\/readyz": the path must match/],
    [{ '/app-health/web/readyz': {} }, /"\/app-health\/web\/readyz": exactly one of httpGet, tcpSocket or grpc is needed, got none/],
    [{ '/app-health/web/readyz': { httpGet: { port: 'http' } } }, /httpGet\.port must be a port number, got "http"/],
    [{ '/app-health/web/readyz': { httpGet: { port: 80, scheme: 'FTP' } } }, /httpGet\.scheme must be HTTP or HTTPS/],
    [{ '/app-health/web/livez': { tcpSocket: { port: 80 }, grpc: { port: 80 } } }, /got tcpSocket, grpc/],
  ];
  for (const [json, message] of bad) {
    t.throws(() => parseAppProbers(typeof json === 'string' ? json : JSON.stringify(json)), { name: AppProbersError.name, message });
  }
  const ok = parseAppProbers(JSON.stringify({ '/app-health/web/startupz': { httpGet: { path: 'ready', port: 8080 } } }));
  t.same(ok.get('/app-health/web/startupz'), { kind: 'http', port: 8080, path: '/ready', https: false, timeoutMs: 1000 }, 'Kubernetes’ defaults: HTTP, 1 s, a leading slash');
});
