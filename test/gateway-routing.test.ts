// Gateway routing end to end: a Gateway opens a port, VirtualServices bound to it route by
// every match kind to real backends, and each condition is checked positive and negative.
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
const backends: Record<string, Backend> = {};

t.before(async () => {
  for (const name of ['a', 'b', 'c', 'd', 'fallback']) backends[name] = await startBackend(name);
  port = await freePort();
  const se = (name: string) => serviceEntry(name, name, [{ port: backends[name]!.port }]);
  const route = (host: string) => `route: [{ destination: { host: ${host} } }]`;
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      se('a'),
      se('b'),
      se('c'),
      se('d'),
      se('fallback'),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["match.example.com"]
  gateways: [gw]
  http:
  - name: exact
    match: [{ uri: { exact: /exact } }]
    ${route('a')}
  - name: prefix
    match: [{ uri: { prefix: /prefix } }]
    ${route('b')}
  - name: regex
    match: [{ uri: { regex: "/items/[0-9]+" } }]
    ${route('c')}
  - name: nocase
    match: [{ uri: { exact: /CaseLess }, ignoreUriCase: true }]
    ${route('d')}
  - name: header-exact
    match: [{ uri: { prefix: /h }, headers: { x-user: { exact: jason } } }]
    ${route('a')}
  - name: header-prefix
    match: [{ uri: { prefix: /h }, headers: { x-user: { prefix: adm } } }]
    ${route('b')}
  - name: header-regex
    match: [{ uri: { prefix: /h }, headers: { x-user: { regex: "u[0-9]{2}" } } }]
    ${route('c')}
  - name: header-present
    match: [{ uri: { prefix: /h }, headers: { x-flag: {} } }]
    ${route('d')}
  - name: without-header
    match: [{ uri: { prefix: /w }, withoutHeaders: { x-debug: {} } }]
    ${route('a')}
  - name: query
    match: [{ uri: { prefix: /q }, queryParams: { v: { exact: "2" } } }]
    ${route('b')}
  - name: query-regex
    match: [{ uri: { prefix: /q }, queryParams: { v: { regex: "[a-z]+" } } }]
    ${route('c')}
  - name: method
    match: [{ uri: { prefix: /m }, method: { exact: POST } }]
    ${route('a')}
  - name: authority
    match: [{ uri: { prefix: /auth }, authority: { prefix: match.example } }]
    ${route('b')}
  - name: port
    match: [{ uri: { prefix: /port }, port: ${port} }]
    ${route('c')}
  - name: other-port
    match: [{ uri: { prefix: /otherport }, port: 1 }]
    ${route('a')}
  - name: or-blocks
    match:
    - { uri: { exact: /or1 } }
    - { uri: { exact: /or2 } }
    ${route('d')}
  - name: and-block
    match: [{ uri: { prefix: /and }, method: { exact: PUT }, headers: { x-k: { exact: v } } }]
    ${route('a')}
  - name: first-wins-1
    match: [{ uri: { prefix: /first } }]
    ${route('b')}
  - name: first-wins-2
    match: [{ uri: { prefix: /first/second } }]
    ${route('c')}
  - name: fallback
    match: [{ uri: { prefix: /fb } }]
    ${route('fallback')}
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora.stop();
  for (const b of Object.values(backends)) await b.close();
  mesh.cleanup();
});

const HOST = 'match.example.com';
async function who(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<string> {
  const r = await request(port, path, { method, headers: { host: HOST, ...headers } });
  if (r.status !== 200) return `status ${r.status}`;
  return r.json<{ name: string }>().name;
}

t.test('uri exact matches only the exact path (query ignored)', async (t) => {
  t.equal(await who('/exact'), 'a');
  t.equal(await who('/exact?x=1'), 'a');
  t.equal(await who('/exact/more'), 'status 404');
});

t.test('uri prefix matches the start of the path', async (t) => {
  t.equal(await who('/prefix'), 'b');
  t.equal(await who('/prefixed/deep'), 'b');
  t.equal(await who('/pre'), 'status 404');
});

t.test('uri regex must match the whole path', async (t) => {
  t.equal(await who('/items/42'), 'c');
  t.equal(await who('/items/42?q=1'), 'c');
  t.equal(await who('/items/42x'), 'status 404');
  t.equal(await who('/items/'), 'status 404');
});

t.test('ignoreUriCase folds the path case', async (t) => {
  t.equal(await who('/caseless'), 'd');
  t.equal(await who('/CASELESS'), 'd');
});

t.test('header exact, prefix, regex and present', async (t) => {
  t.equal(await who('/h', { 'x-user': 'jason' }), 'a');
  t.equal(await who('/h', { 'x-user': 'Jason' }), 'status 404', 'exact is case-sensitive');
  t.equal(await who('/h', { 'x-user': 'admin' }), 'b');
  t.equal(await who('/h', { 'x-user': 'u42' }), 'c');
  t.equal(await who('/h', { 'x-user': 'u421' }), 'status 404', 'regex is a full match');
  t.equal(await who('/h', { 'x-flag': '' }), 'd', 'present matches an empty value');
  t.equal(await who('/h'), 'status 404');
});

t.test('withoutHeaders matches when the header is absent', async (t) => {
  t.equal(await who('/w'), 'a');
  t.equal(await who('/w', { 'x-debug': '1' }), 'status 404');
});

t.test('queryParams exact and regex', async (t) => {
  t.equal(await who('/q?v=2'), 'b');
  t.equal(await who('/q?v=abc'), 'c');
  t.equal(await who('/q?v=3'), 'status 404');
  t.equal(await who('/q'), 'status 404');
});

t.test('method', async (t) => {
  t.equal(await who('/m', {}, 'POST'), 'a');
  t.equal(await who('/m', {}, 'GET'), 'status 404');
});

t.test('authority', async (t) => {
  t.equal(await who('/auth'), 'b');
  // A host that reaches the same virtual host only through a wildcard would not match the prefix; the
  // route table has no such host, so a different authority has no route at all.
  const r = await get(port, '/auth', 'other.example.com');
  t.equal(r.status, 404);
});

t.test('port selects routes for the listener port only', async (t) => {
  t.equal(await who('/port'), 'c');
  t.equal(await who('/otherport'), 'status 404');
});

t.test('match blocks are ORed, conditions inside one are ANDed', async (t) => {
  t.equal(await who('/or1'), 'd');
  t.equal(await who('/or2'), 'd');
  t.equal(await who('/and', { 'x-k': 'v' }, 'PUT'), 'a');
  t.equal(await who('/and', { 'x-k': 'v' }, 'POST'), 'status 404');
  t.equal(await who('/and', {}, 'PUT'), 'status 404');
});

t.test('first matching route wins', async (t) => {
  t.equal(await who('/first/second'), 'b');
});

t.test('no route gives 404 with flag NR in the access log', async (t) => {
  const r = await request(port, '/nowhere', { headers: { host: HOST, 'x-request-id': 'nr-check' } });
  t.equal(r.status, 404);
  await new Promise((r) => setImmediate(r));
  const line = remora.accessLog.find((l) => l.includes('"nr-check"'));
  t.ok(line, 'access log has the request');
  t.match(line!, /" 404 NR route_not_found /);
});

t.test('an unknown host gets 404 NR', async (t) => {
  const r = await get(port, '/exact', 'unknown.example.org');
  t.equal(r.status, 404);
});

t.test('the backend sees the original Host and an x-request-id', async (t) => {
  const r = await request(port, '/fb/x?y=1', { headers: { host: HOST } });
  t.equal(r.status, 200);
  const echo = r.json<{ url: string; headers: Record<string, string> }>();
  t.equal(echo.url, '/fb/x?y=1');
  t.equal(echo.headers.host, HOST);
  t.match(echo.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  t.equal(echo.headers['x-forwarded-proto'], 'http');
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1', 'the gateway appends the peer address');
  t.match(r.headers['x-envoy-upstream-service-time'], /^\d+$/);
});
