// Sidecar mode: the outbound listener routes by Host/:authority to mesh services under every
// name Kubernetes DNS would accept, accepts proxy-style absolute-form requests, and the
// inbound listener forwards to the local app.
import { connect } from 'node:net';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, serviceEntry, versionSubsets } from './helpers/mesh.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let reviewsV1: Backend;
let reviewsV2: Backend;
let ratings: Backend;
let other: Backend;
let app: Backend;

t.before(async () => {
  reviewsV1 = await startBackend('reviews-v1');
  reviewsV2 = await startBackend('reviews-v2');
  ratings = await startBackend('ratings');
  other = await startBackend('other-ns');
  app = await startBackend('local-app');
  mesh = new MeshDir({
    'registry.yaml': doc(
      serviceEntry('reviews', 'reviews', [
        { port: reviewsV1.port, labels: { app: 'reviews', version: 'v1' } },
        { port: reviewsV2.port, labels: { app: 'reviews', version: 'v2' } },
      ], { port: 9080 }),
      serviceEntry('ratings', 'ratings', [{ port: ratings.port, labels: { app: 'ratings' } }], { port: 80 }),
      serviceEntry('billing', 'billing', [{ port: other.port, labels: { app: 'billing' } }], { namespace: 'finance', port: 8080 }),
    ),
    'routing.yaml': doc(
      versionSubsets('reviews', ['v1', 'v2']),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - match: [{ headers: { end-user: { exact: jason } } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - route: [{ destination: { host: reviews, subset: v1 } }]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: canary-only-for-other-apps }
spec:
  hosts: [ratings]
  http:
  - match: [{ sourceLabels: { app: somebody-else } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - route: [{ destination: { host: ratings } }]
`,
    ),
  });
  remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage,version=v1']);
});

t.teardown(async () => {
  await remora.stop();
  for (const b of [reviewsV1, reviewsV2, ratings, other, app]) await b.close();
  mesh.cleanup();
});

const name = (r: { status: number; json: <T>() => T }): string => (r.status === 200 ? r.json<{ name: string }>().name : `status ${r.status}`);

t.test('every name Kubernetes DNS accepts reaches the same service', async (t) => {
  const out = remora.ports.outbound;
  for (const host of [
    'reviews:9080',
    'reviews',
    'reviews.default:9080',
    'reviews.default.svc:9080',
    'reviews.default.svc.cluster.local:9080',
    'reviews.default.svc.cluster.local',
    'REVIEWS.Default.svc.cluster.local:9080',
  ]) {
    t.equal(name(await get(out, '/', host)), 'reviews-v1', host);
  }
});

t.test('a short name from another namespace is not a service here; its qualified names are', async (t) => {
  const out = remora.ports.outbound;
  // Not a service here: Istio's default ALLOW_ANY sends it to PassthroughCluster, which has no
  // original destination for a request made to the outbound port directly: 503, not billing.
  t.equal((await get(out, '/', 'billing:8080')).status, 503, 'billing is in namespace finance, not default');
  t.equal(name(await get(out, '/', 'billing.finance:8080')), 'other-ns');
  t.equal(name(await get(out, '/', 'billing.finance.svc.cluster.local')), 'other-ns', 'no port: the only port');
});

t.test('a port the service does not have is not routed to the service', async (t) => {
  // istiod's allow_any: PassthroughCluster, without an original destination here: 503.
  t.equal((await get(remora.ports.outbound, '/', 'reviews:9999')).status, 503);
});

t.test('mesh VirtualService header match picks the subset', async (t) => {
  const out = remora.ports.outbound;
  t.equal(name(await get(out, '/', 'reviews:9080', { 'end-user': 'jason' })), 'reviews-v2');
  t.equal(name(await get(out, '/', 'reviews:9080', { 'end-user': 'alice' })), 'reviews-v1');
});

t.test('sourceLabels are resolved against this sidecar: a rule for other apps does not apply', async (t) => {
  t.equal(name(await get(remora.ports.outbound, '/', 'ratings')), 'ratings');
});

t.test('absolute-form requests (the sidecar as an HTTP proxy) route by the URL authority', async (t) => {
  const r = await request(remora.ports.outbound, 'http://reviews.default:9080/api/x?y=1', { headers: { host: 'ignored.example' } });
  t.equal(name(r), 'reviews-v1');
  const echo = r.json<{ url: string; headers: Record<string, string> }>();
  t.equal(echo.url, '/api/x?y=1', 'the upstream gets origin-form');
  t.equal(echo.headers.host, 'reviews.default:9080', 'Host follows the absolute URL');
});

t.test('the sidecar does not append to x-forwarded-for (not the edge)', async (t) => {
  const r = await get(remora.ports.outbound, '/', 'reviews:9080', { 'x-forwarded-for': '10.1.2.3' });
  t.equal(r.json<{ headers: Record<string, string> }>().headers['x-forwarded-for'], '10.1.2.3');
});

t.test('hop-by-hop request headers are not forwarded; x-request-id is kept', async (t) => {
  const r = await get(remora.ports.outbound, '/', 'reviews:9080', {
    connection: 'keep-alive, x-private',
    'x-private': 'secret',
    'keep-alive': 'timeout=5',
    'proxy-connection': 'keep-alive',
    te: 'gzip',
    'x-request-id': 'keep-me',
  });
  const h = r.json<{ headers: Record<string, string> }>().headers;
  t.equal(h['x-private'], undefined, 'headers named in Connection are dropped');
  t.equal(h['keep-alive'], undefined);
  t.equal(h['proxy-connection'], undefined);
  t.equal(h.te, undefined);
  t.equal(h['x-request-id'], 'keep-me');
});

t.test('the inbound listener forwards anything to the local app', async (t) => {
  const r = await get(remora.ports.inbound, '/local?z=1', 'whatever.example');
  t.equal(name(r), 'local-app');
  t.equal(r.json<{ url: string }>().url, '/local?z=1');
});

t.test('request bodies stream through unchanged (content-length and chunked)', async (t) => {
  const body = 'x'.repeat(200_000);
  const r = await request(remora.ports.outbound, '/upload', { method: 'POST', body, headers: { host: 'reviews:9080' } });
  t.equal(r.json<{ body: string }>().body.length, body.length);
  const chunked = await new Promise<string>((resolve, reject) => {
    const s = connect(remora.ports.outbound, '127.0.0.1', () => {
      s.write('POST /c HTTP/1.1\r\nhost: reviews:9080\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    });
    let data = '';
    s.on('data', (c) => (data += c.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
  t.match(chunked, /"body":"hello world"/);
});

t.test('Expect: 100-continue is answered by the proxy, and the body then flows', async (t) => {
  const reply = await new Promise<string>((resolve, reject) => {
    const s = connect(remora.ports.outbound, '127.0.0.1', () => {
      s.write('POST /e HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n');
    });
    let data = '';
    let sentBody = false;
    s.on('data', (c) => {
      data += c.toString();
      if (!sentBody && data.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        sentBody = true;
        s.write('hello');
      }
    });
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
  t.match(reply, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, '100 first, then the upstream answer');
  t.match(reply, /"body":"hello"/);
  t.notMatch(reply, /"expect"/, 'Expect is not forwarded');
});
