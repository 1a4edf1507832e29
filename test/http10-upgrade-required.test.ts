// HTTP/1.0 and HTTP/0.9 as Istio serves them: refused with 426 Upgrade Required by default
// (Envoy's accept_http_10 is off), before any route or upstream; served when the proxy's
// HTTP10 metadata (ISTIO_META_HTTP10=1, or --accept-http10) turns it on. Raw sockets write the
// exact bytes; curl --http1.0 is the real client.
import { execFile } from 'node:child_process';
import t, { type Test } from 'tap';
import { parseOptions } from '@remora/proxy';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { rawRequest } from './helpers/raw-http.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

/** curl's status code and headers for one request (`--http1.0` and friends in `args`). */
function curl(args: string[]): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-D', '-', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...args], (err, stdout) => {
      if (err && stdout === '') return reject(err);
      const out = stdout.toString();
      resolve({ status: Number(out.slice(-3)), head: out.slice(0, -3) });
    });
  });
}

async function meshGateway(t: Test, extraArgs: string[]): Promise<{ port: number; backend: Backend; remora: InProcessRemora }> {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('web', 'web', [{ port: backend.port }]), routeAll('gw', 'web')) });
  const remora = await startRemora('gateway', [mesh.dir], extraArgs);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  return { port, backend, remora };
}

t.test('by default HTTP/1.0 and HTTP/0.9 get 426 Upgrade Required, the upstream sees nothing, the proxy keeps serving', async (t) => {
  const { port, backend, remora } = await meshGateway(t, []);

  const http10 = await rawRequest(port, 'GET /ten HTTP/1.0\r\nHost: web.example\r\n\r\n');
  t.equal(http10.status, 426, 'HTTP/1.0: 426');
  t.equal(http10.statusLine, 'HTTP/1.1 426 Upgrade Required');
  t.equal(http10.body, 'Upgrade Required');
  t.equal(http10.headers['connection'], 'close');
  t.equal(http10.headers['server'], 'istio-envoy', 'a local reply carries the gateway\'s server header');
  t.ok(http10.closedByServer, 'the connection is closed after it');

  const http09 = await rawRequest(port, 'GET /\r\n\r\n');
  t.equal(http09.status, 426, 'HTTP/0.9: 426 too');
  t.ok(http09.closedByServer);

  const keepAlive = await rawRequest(port, 'POST /ten HTTP/1.0\r\nHost: web.example\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello');
  t.equal(keepAlive.status, 426, 'a keep-alive HTTP/1.0 request with a body: 426');
  t.ok(keepAlive.closedByServer, 'and the connection still closes');

  const upgrade = await rawRequest(port, 'GET /ws HTTP/1.0\r\nHost: web.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  t.equal(upgrade.status, 426, 'an HTTP/1.0 upgrade: 426');

  const viaCurl = await curl(['--http1.0', '-H', 'host: web.example', `http://127.0.0.1:${port}/curl`]);
  t.equal(viaCurl.status, 426, 'curl --http1.0: 426');

  t.equal(backend.seen.length, 0, 'nothing reached the upstream');

  const ok = await request(port, '/eleven', { headers: { host: 'web.example' } });
  t.equal(ok.status, 200, 'HTTP/1.1 is served as before');
  t.equal(backend.seen.length, 1);

  await waitFor('access log lines', () => remora.accessLog.filter((l) => l.includes(' 426 ')).length === 5);
  const refused = remora.accessLog.filter((l) => l.includes(' 426 '));
  t.equal(refused.filter((l) => l.includes('"- - HTTP/1.0" 426 DPE low_version ')).length, 4, 'HTTP/1.0 lines: Envoy\'s codec error form');
  t.equal(refused.filter((l) => l.includes('"- - HTTP/0.9" 426 DPE low_version ')).length, 1, 'and the HTTP/0.9 one');
  const metrics = (await request(remora.ports.admin, '/stats/prometheus')).body;
  t.match(metrics, /istio_requests_total\{[^}]*response_code="426"[^}]*response_flags="DPE"[^}]*\} 5/, 'counted in istio_requests_total');
});

t.test('with accept_http_10 (--accept-http10), HTTP/1.0 and HTTP/0.9 are proxied', async (t) => {
  const { port, backend, remora } = await meshGateway(t, ['--accept-http10']);

  const http10 = await rawRequest(port, 'GET /ten HTTP/1.0\r\nHost: web.example\r\n\r\n');
  t.equal(http10.status, 200, 'HTTP/1.0 with Host: 200');
  t.match(http10.body, /"url":"\/ten"/);

  const noHost = await rawRequest(port, 'GET /nohost HTTP/1.0\r\n\r\n');
  t.equal(noHost.status, 200, 'HTTP/1.0 without Host reaches the "*" route');

  const viaCurl = await curl(['--http1.0', '-H', 'host: web.example', `http://127.0.0.1:${port}/curl`]);
  t.equal(viaCurl.status, 200, 'curl --http1.0: 200');

  t.same(
    backend.seen.map((s) => s.url),
    ['/ten', '/nohost', '/curl'],
    'each reached the upstream',
  );
  await waitFor('access log lines', () => remora.accessLog.filter((l) => l.includes('"GET /')).length === 3);
  t.ok(remora.accessLog.some((l) => l.includes('"GET /ten HTTP/1.0" 200 - via_upstream ')));
});

t.test('ISTIO_META_HTTP10=1 turns accept_http_10 on, as Istio\'s proxy metadata does; other values do not', async (t) => {
  const node = (env: NodeJS.ProcessEnv) => {
    const o = parseOptions('gateway', ['-c', '/dev/null'], env);
    if (o === 'help') throw new Error('unexpected help');
    return o.node;
  };
  t.equal(node({ ISTIO_META_HTTP10: '1' }).http10, true);
  t.equal(node({ ISTIO_META_HTTP10: 'true' }).http10, false, 'Istio enables it only for "1"');
  t.equal(node({}).http10, false);
});
