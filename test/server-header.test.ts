// The `server` response header as Istio's Envoy sets it (server_header_transformation
// OVERWRITE everywhere): `istio-envoy` on a gateway and on a sidecar's inbound side, Envoy's
// own `envoy` on the outbound side, whatever the app sent; local replies carry it too. Real
// gateway and sidecar, real backends with and without their own `server` header.
import { connect as h2connect } from 'node:http2';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { rawRequest } from './helpers/raw-http.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

/** A backend that names itself in `server`, as most app servers do. */
const namedApp = (): Promise<Backend> =>
  startBackend('named', (_req, res) => {
    res.writeHead(200, { server: 'gunicorn/20.1', 'content-type': 'text/plain' });
    res.end('named');
  });

/** One request over HTTP/2 with prior knowledge (h2c); resolves with the response headers. */
function h2Get(port: number, path: string, authority: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':path': path, ':authority': authority });
    req.on('response', (headers) => {
      req.resume();
      req.on('end', () => {
        session.close();
        resolve(headers);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('gateway: every response says server: istio-envoy, the app\'s own name and a route\'s set one included', async (t) => {
  const named = await namedApp();
  const plain = await startBackend('plain');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port, ['*.example']),
      serviceEntry('named', 'named', [{ port: named.port }]),
      serviceEntry('plain', 'plain', [{ port: plain.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*.example"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /named } }]
    route: [{ destination: { host: named } }]
  - match: [{ uri: { prefix: /renamed } }]
    route: [{ destination: { host: named } }]
    headers: { response: { set: { server: my-own } } }
  - match: [{ uri: { prefix: /direct } }]
    directResponse: { status: 418, body: { string: teapot } }
  - route: [{ destination: { host: plain } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await named.close();
    await plain.close();
    mesh.cleanup();
  });
  const get = (path: string, host = 'shop.example') => request(port, path, { headers: { host } });

  const fromNamed = await get('/named');
  t.equal(fromNamed.status, 200);
  t.equal(fromNamed.headers.server, 'istio-envoy', 'the app\'s server header is overwritten');
  t.equal((await get('/plain')).headers.server, 'istio-envoy', 'and added when the app sends none');
  t.equal((await get('/renamed')).headers.server, 'istio-envoy', 'a route\'s own server header does not survive OVERWRITE');

  const direct = await get('/direct');
  t.equal(direct.status, 418);
  t.equal(direct.headers.server, 'istio-envoy', 'direct responses carry it');
  const noRoute = await get('/x', 'elsewhere.test');
  t.equal(noRoute.status, 404);
  t.equal(noRoute.headers.server, 'istio-envoy', 'local replies (404 NR) carry it');
  const bad = await rawRequest(port, 'GET / HTTP/1.1\r\nbad header\r\n\r\n');
  t.equal(bad.status, 400);
  t.equal(bad.headers.server, 'istio-envoy', 'codec error replies carry it');

  const upgrade = await rawRequest(port, 'GET /named HTTP/1.1\r\nhost: shop.example\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n');
  t.equal(upgrade.status, 200, 'an upgrade the app answers as a plain request');
  t.equal(upgrade.headers.server, 'istio-envoy', 'the relayed upgrade response is overwritten too');

  const h2 = await h2Get(port, '/named', 'shop.example');
  t.equal(h2[':status'], 200);
  t.equal(h2.server, 'istio-envoy', 'over HTTP/2 as well');
});

t.test('sidecar: outbound responses say server: envoy, inbound ones istio-envoy, whatever the app sent', async (t) => {
  const upstream = await namedApp();
  const app = await namedApp();
  const mesh = new MeshDir({ 'mesh.yaml': serviceEntry('reviews', 'reviews', [{ port: upstream.port }], { port: 9080 }) });
  const remora: InProcessRemora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage']);
  t.teardown(async () => {
    await remora.stop();
    await upstream.close();
    await app.close();
    mesh.cleanup();
  });

  const out = await request(remora.ports.outbound, '/', { headers: { host: 'reviews:9080' } });
  t.equal(out.status, 200);
  t.equal(out.headers.server, 'envoy', 'outbound: Envoy\'s default name, as istiod leaves it');
  // ALLOW_ANY: istiod's allow_any route to PassthroughCluster, which has no original
  // destination for a request made to the outbound port directly: a local 503.
  const unknown = await request(remora.ports.outbound, '/', { headers: { host: 'nowhere:9080' } });
  t.equal(unknown.status, 503);
  t.equal(unknown.headers.server, 'envoy', 'an outbound local reply too');

  const inbound = await request(remora.ports.inbound, '/', { headers: { host: 'productpage' } });
  t.equal(inbound.status, 200);
  t.equal(inbound.headers.server, 'istio-envoy', 'inbound: the app\'s name is replaced by istio-envoy');
});
