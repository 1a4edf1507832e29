// VirtualService route actions with their exact observable results at the upstream or the
// client: rewrite (prefix, regex, authority), redirect, directResponse, headers.
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let app: Backend;
let other: Backend;

t.before(async () => {
  app = await startBackend('app', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream-secret': 'hide-me', 'x-keep': 'yes' });
    res.end(JSON.stringify({ url: req.url, headers: req.headers }));
  });
  other = await startBackend('other');
  port = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: app.port }]),
      serviceEntry('other', 'other', [{ port: other.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: actions }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /api/v1/ } }]
    rewrite: { uri: /v2/ }
    route: [{ destination: { host: app } }]
  - match: [{ uri: { exact: /old } }]
    rewrite: { uri: /new, authority: internal.example.com }
    route: [{ destination: { host: app } }]
  - match: [{ uri: { prefix: /users/ } }]
    rewrite:
      uriRegexRewrite: { match: "^/users/([0-9]+)/profile$", rewrite: "/profiles/\\\\1" }
    route: [{ destination: { host: app } }]
  - match: [{ uri: { prefix: /moved } }]
    redirect: { uri: /here, authority: new.example.com }
  - match: [{ uri: { prefix: /secure } }]
    redirect: { scheme: https, redirectCode: 308 }
  - match: [{ uri: { prefix: /port } }]
    redirect: { port: 9090 }
  - match: [{ uri: { prefix: /teapot } }]
    directResponse: { status: 418, body: { string: "short and stout" } }
  - match: [{ uri: { prefix: /empty } }]
    directResponse: { status: 204 }
  - match: [{ uri: { prefix: /cors-ignore } }]
    corsPolicy:
      allowOrigins: [{ exact: "https://shop.example.com" }]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{ destination: { host: app } }]
  - match: [{ uri: { prefix: /cors } }]
    corsPolicy:
      allowOrigins: [{ exact: "https://shop.example.com" }, { regex: 'https://.*\\.partner\\.example' }]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-request-id]
      maxAge: 24h
      allowCredentials: true
    route: [{ destination: { host: app } }]
  - match: [{ uri: { prefix: /headers } }]
    headers:
      request:
        set: { x-route-set: route }
        add: { x-route-add: added }
        remove: [x-client-secret]
      response:
        set: { x-resp-set: "1" }
        remove: [x-upstream-secret]
    route:
    - destination: { host: app }
      headers:
        request: { set: { x-dest: app } }
        response: { add: { x-dest-resp: app } }
  - match: [{ uri: { prefix: /who-one } }]
    headers: { request: { set: { x-who: route } }, response: { set: { x-who: route } } }
    route:
    - destination: { host: app }
      headers: { request: { set: { x-who: dest } }, response: { set: { x-who: dest } } }
  - match: [{ uri: { prefix: /who-split } }]
    headers: { request: { set: { x-who: route } }, response: { set: { x-who: route } } }
    route:
    - destination: { host: app }
      weight: 50
      headers: { request: { set: { x-who: dest } }, response: { set: { x-who: dest } } }
    - destination: { host: app }
      weight: 50
      headers: { request: { set: { x-who: dest } }, response: { set: { x-who: dest } } }
  - rewrite: { uri: /fallback/ }
    route: [{ destination: { host: app } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora.stop();
  await app.close();
  await other.close();
  mesh.cleanup();
});

const echo = (r: { json: <T>() => T }) => r.json<{ url: string; headers: Record<string, string> }>();

t.test('rewrite uri replaces the matched prefix; x-envoy-original-path carries the old path', async (t) => {
  const r = await request(port, '/api/v1/items?page=2', { headers: { host: 'shop.example.com' } });
  t.equal(r.status, 200);
  t.equal(echo(r).url, '/v2/items?page=2');
  t.equal(echo(r).headers['x-envoy-original-path'], '/api/v1/items?page=2');
  t.equal(echo(r).headers.host, 'shop.example.com', 'authority kept without an authority rewrite');
  await new Promise((r) => setTimeout(r, 20));
  t.ok(remora.accessLog.some((l) => l.includes('"GET /api/v1/items?page=2 HTTP/1.1"')), 'the access log shows the original path');
});

t.test('rewrite uri on an exact match, with an authority rewrite', async (t) => {
  const r = await request(port, '/old', { headers: { host: 'shop.example.com' } });
  t.equal(echo(r).url, '/new');
  t.equal(echo(r).headers.host, 'internal.example.com');
  const q = await request(port, '/old?a=1&b=2', { headers: { host: 'shop.example.com' } });
  t.equal(echo(q).url, '/new?a=1&b=2', 'the whole path is swapped, the query string kept (Envoy)');
});

t.test('rewrite uri on a route without a match keeps the query string', async (t) => {
  const r = await request(port, '/anything/else?x=1', { headers: { host: 'shop.example.com' } });
  t.equal(echo(r).url, '/fallback/anything/else?x=1', 'the matched prefix "/" is swapped, as istiod writes a match-less route (prefix: /)');
  t.equal(echo(r).headers['x-envoy-original-path'], '/anything/else?x=1');
});

t.test('uriRegexRewrite with a capture group', async (t) => {
  t.equal(echo(await request(port, '/users/42/profile?x=1', { headers: { host: 'x' } })).url, '/profiles/42?x=1');
});

t.test('redirect: exact Location, 301 by default, query kept', async (t) => {
  const r = await request(port, '/moved/a?b=1', { headers: { host: 'shop.example.com:8080' } });
  t.equal(r.status, 301);
  t.equal(r.headers.location, 'http://new.example.com/here?b=1');
  t.equal(r.body, '');
});

t.test('redirect: scheme change with redirectCode 308', async (t) => {
  const r = await request(port, '/secure/x', { headers: { host: 'shop.example.com' } });
  t.equal(r.status, 308);
  t.equal(r.headers.location, 'https://shop.example.com/secure/x');
});

t.test('redirect: port', async (t) => {
  const r = await request(port, '/port', { headers: { host: 'shop.example.com' } });
  t.equal(r.headers.location, 'http://shop.example.com:9090/port');
});

t.test('directResponse: status and body; without body, no content', async (t) => {
  const r = await request(port, '/teapot', { headers: { host: 'x' } });
  t.equal(r.status, 418);
  t.equal(r.body, 'short and stout');
  const e = await request(port, '/empty', { headers: { host: 'x' } });
  t.equal(e.status, 204);
  t.equal(e.body, '');
  t.equal(app.seen.filter((s) => s.url.startsWith('/teapot')).length, 0, 'no upstream saw it');
});

t.test('headers: request and response set/add/remove at route and destination level', async (t) => {
  const r = await request(port, '/headers', { headers: { host: 'x', 'x-client-secret': 's3cret', 'x-route-set': 'client-value' } });
  const h = echo(r).headers;
  t.equal(h['x-route-set'], 'route', 'set replaces what the client sent');
  t.equal(h['x-route-add'], 'added');
  t.equal(h['x-client-secret'], undefined, 'removed');
  t.equal(h['x-dest'], 'app', 'destination-level set');
  t.equal(r.headers['x-resp-set'], '1');
  t.equal(r.headers['x-upstream-secret'], undefined, 'response header removed');
  t.equal(r.headers['x-keep'], 'yes');
  t.equal(r.headers['x-dest-resp'], 'app', 'destination-level response add');
});

t.test("headers set at both levels: a single destination's set wins (istiod appends it to the route's); in a split the route's wins (Envoy applies a weighted cluster's first)", async (t) => {
  const one = await request(port, '/who-one', { headers: { host: 'x' } });
  t.equal(echo(one).headers['x-who'], 'dest', 'single destination: upstream sees the destination value');
  t.equal(one.headers['x-who'], 'dest', 'single destination: the client sees the destination value');
  const split = await request(port, '/who-split', { headers: { host: 'x' } });
  t.equal(echo(split).headers['x-who'], 'route', 'split: upstream sees the route value');
  t.equal(split.headers['x-who'], 'route', 'split: the client sees the route value');
});

t.test('corsPolicy: the proxy answers an allowed preflight; actual requests get the CORS headers', async (t) => {
  const before = app.seen.length;
  const pre = await request(port, '/cors/items', {
    method: 'OPTIONS',
    headers: { host: 'api.example.com', origin: 'https://shop.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-token' },
  });
  t.equal(pre.status, 200);
  t.equal(pre.headers['access-control-allow-origin'], 'https://shop.example.com');
  t.equal(pre.headers['access-control-allow-methods'], 'GET,POST');
  t.equal(pre.headers['access-control-allow-headers'], 'x-token');
  t.equal(pre.headers['access-control-max-age'], '86400');
  t.equal(pre.headers['access-control-allow-credentials'], 'true');
  t.equal(app.seen.length, before, 'the preflight never reached the upstream');
  const actual = await request(port, '/cors/items', { headers: { host: 'api.example.com', origin: 'https://eu.partner.example' } });
  t.equal(actual.status, 200);
  t.equal(actual.headers['access-control-allow-origin'], 'https://eu.partner.example', 'a regex origin, echoed');
  t.equal(actual.headers['access-control-expose-headers'], 'x-request-id');
  const foreign = await request(port, '/cors/items', { headers: { host: 'api.example.com', origin: 'https://evil.example' } });
  t.equal(foreign.status, 200, 'a foreign origin still reaches the upstream (the browser enforces CORS)');
  t.equal(foreign.headers['access-control-allow-origin'], undefined);
  const foreignPre = await request(port, '/cors/items', {
    method: 'OPTIONS',
    headers: { host: 'api.example.com', origin: 'https://evil.example', 'access-control-request-method': 'POST' },
  });
  t.equal(foreignPre.headers['access-control-allow-origin'], undefined, 'a foreign preflight gets no allow-origin');
  t.equal(app.seen.length, before + 3, 'and goes upstream, as Istio forwards unmatched preflights');

  // unmatchedPreflights: IGNORE — the proxy answers a foreign preflight itself, without CORS headers.
  const ignored = await request(port, '/cors-ignore/items', {
    method: 'OPTIONS',
    headers: { host: 'api.example.com', origin: 'https://evil.example', 'access-control-request-method': 'GET' },
  });
  t.equal(ignored.status, 200);
  t.equal(ignored.headers['access-control-allow-origin'], undefined);
  t.equal(app.seen.length, before + 3, 'IGNORE: the foreign preflight did not reach the upstream');
});
