// Envoy's router marks every request it drops for circuit breaking with
// `x-envoy-overloaded: true` (503 UO); other 503s and the requests let through carry no such
// header. Real gateway, real slow backend, plain requests and an Upgrade.
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { rawRequest } from './helpers/raw-http.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

t.test('circuit-breaker overflow replies carry x-envoy-overloaded: true; admitted requests and other 503s do not', async (t) => {
  const slow = await startBackend('slow', (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('slow');
    }, 400);
  });
  const port = await freePort();
  const deadPort = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('slow', 'slow', [{ port: slow.port }]),
      serviceEntry('dead', 'dead', [{ port: deadPort }]),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: slow }
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
      http: { http1MaxPendingRequests: 1 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /dead } }]
    route: [{ destination: { host: dead } }]
    retries: { attempts: 0 }
  - route: [{ destination: { host: slow } }]
    retries: { attempts: 0 }
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await slow.close();
    mesh.cleanup();
  });

  // One request in flight, one waiting: the breaker is full.
  const inFlight = request(port, '/first', { headers: { host: 'x', 'x-request-id': 'cb-first' } });
  await sleep(100);
  const waiting = request(port, '/second', { headers: { host: 'x', 'x-request-id': 'cb-second' } });
  await sleep(100);

  const dropped = await request(port, '/third', { headers: { host: 'x', 'x-request-id': 'cb-third' } });
  t.equal(dropped.status, 503);
  t.match(dropped.body, /reset reason: overflow/);
  t.equal(dropped.headers['x-envoy-overloaded'], 'true', 'a request dropped by the breaker says so');

  const upgrade = await rawRequest(
    port,
    'GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-request-id: cb-upgrade\r\n\r\n',
  );
  t.equal(upgrade.status, 503, 'an upgrade beyond the limits overflows too');
  t.equal(upgrade.headers['x-envoy-overloaded'], 'true', 'and its reply says so');

  const [first, second] = await Promise.all([inFlight, waiting]);
  t.equal(first.status, 200);
  t.equal(second.status, 200);
  t.equal(first.headers['x-envoy-overloaded'], undefined, 'an admitted request has no overload header');
  t.equal(second.headers['x-envoy-overloaded'], undefined, 'nor has one that waited for room');

  const refused = await request(port, '/dead', { headers: { host: 'x', 'x-request-id': 'cb-dead' } });
  t.equal(refused.status, 503);
  t.equal(refused.headers['x-envoy-overloaded'], undefined, 'a connect failure is no overload');

  await waitFor('access log lines', () => remora.accessLog.some((l) => l.includes('"cb-dead"')));
  t.match(remora.accessLog.find((l) => l.includes('"cb-third"')) ?? '', /" 503 UO upstream_reset_before_response_started\{overflow\} /);
  t.match(remora.accessLog.find((l) => l.includes('"cb-upgrade"')) ?? '', /" 503 UO upstream_reset_before_response_started\{overflow\} /);
  t.match(remora.accessLog.find((l) => l.includes('"cb-dead"')) ?? '', /" 503 UF /);
});
