// `remora explain` and the admin API's POST /explain on a real sidecar from files: a
// VirtualService (a header match for jason, a fault, weighted subsets), an
// AuthorizationPolicy and a RequestAuthentication. Each explanation is compared with what a
// real request then does (status, response flag and cluster from the access log).
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway, gatewayLocalRateLimit, serviceEntry, versionSubsets } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CORPUS, MeshDir, runCli, startRemora, type InProcessRemora } from './helpers/remora.ts';

const DEMO_JWT = readFileSync(join(CORPUS, 'jwt/demo.jwt'), 'utf8').trim();
const ISTIO_JWKS = readFileSync(join(CORPUS, 'jwt/jwks.json'), 'utf8').trim();
const REVIEWS_V1 = 'outbound|9080|v1|reviews.default.svc.cluster.local';
const REVIEWS_V2 = 'outbound|9080|v2|reviews.default.svc.cluster.local';
const DENY_RULE = 'ns[default]-policy[deny-admin]-rule[0]';
const INTRUDER = 'cluster.local/ns/default/sa/intruder';

interface Explained {
  listener: { name: string; direction: string };
  virtualHost: { name: string; domains: string[] } | null;
  noVirtualHost: string | null;
  skippedRoutes: { index: number; why: string }[];
  route: { index: number; origin: string; action: string } | null;
  filters: { name: string; verdict: string; status?: number; detail: string; rbac?: { enforced: { matchedPolicy: string | null; allowed: boolean } | null }; jwt?: { message: string; tokens: { providers: { issuer: string; outcome: string }[] }[] } }[];
  localReply: { status: number; flag: string; details: string } | null;
  forward: { clusters: { cluster: string; weight: number; percent: number }[]; timeoutMs: number; retry: unknown } | null;
  clusters: { name: string; subset: string | null; endpoints: { address: string; health: string }[] }[];
}

let mesh: MeshDir;
let remora: InProcessRemora;
let v1: Backend;
let v2: Backend;
let app: Backend;

t.before(async () => {
  v1 = await startBackend('reviews-v1');
  v2 = await startBackend('reviews-v2');
  app = await startBackend('productpage');
  mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('ratings', 'ratings', [{ port: v1.port, labels: { app: 'ratings' } }], { port: 9080 }),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - match: [{ uri: { prefix: /v1 } }]
    route: [{ destination: { host: ratings } }]
`,
      serviceEntry('reviews', 'reviews', [
        { port: v1.port, labels: { app: 'reviews', version: 'v1' } },
        { port: v2.port, labels: { app: 'reviews', version: 'v2' } },
      ], { port: 9080 }),
      versionSubsets('reviews', ['v1', 'v2']),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{ headers: { end-user: { exact: jason } } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - name: chaos
    match: [{ uri: { prefix: /chaos } }]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
    route: [{ destination: { host: reviews, subset: v1 } }]
  - name: split
    route:
    - { destination: { host: reviews, subset: v1 }, weight: 80 }
    - { destination: { host: reviews, subset: v2 }, weight: 20 }
    timeout: 3s
    retries: { attempts: 2, perTryTimeout: 1s, retryOn: 5xx }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin*"] } }]
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-intruder, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/default/sa/intruder"] } }]
    to: [{ operation: { methods: ["POST"] } }]
`,
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: ${JSON.stringify(ISTIO_JWKS)}
`,
    ),
  });
  // A connection from 127.0.0.2 is the intruder's workload (its mTLS identity).
  remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage,version=v1', '--namespace', 'default'], {
    peerIdentity: (socket) => (socket.remoteAddress === '127.0.0.2' ? { principal: INTRUDER, namespace: 'default' } : null),
  });
});

t.teardown(async () => {
  await remora?.stop();
  await Promise.all([v1?.close(), v2?.close(), app?.close()]);
  mesh?.cleanup();
});

async function explain(body: Record<string, unknown>): Promise<Explained> {
  const r = await request(remora.ports.admin, '/explain', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  if (r.status !== 200) throw new Error(`explain ${r.status}: ${r.body}`);
  return r.json<Explained>();
}

/** The access log line of the next request `send` makes. */
async function logged(send: () => Promise<{ status: number }>): Promise<{ status: number; line: string }> {
  const before = remora.accessLog.length;
  const r = await send();
  await waitFor('access log line', () => remora.accessLog.length > before);
  return { status: r.status, line: remora.accessLog[before]! };
}

t.test('404 NR on a gateway: no virtual host answers the authority', async (t) => {
  const port = await freePort();
  const gwMesh = new MeshDir({
    'gw.yaml': doc(
      gateway('gw', port, ['bookinfo.example']),
      serviceEntry('web', 'web', [{ port: app.port }]),
      gatewayLocalRateLimit({ maxTokens: 2, fillInterval: '3600s' }),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: bookinfo }
spec:
  hosts: [bookinfo.example]
  gateways: [gw]
  http:
  - route: [{ destination: { host: web } }]
`,
    ),
  });
  const gw = await startRemora('gateway', [gwMesh.dir]);
  t.teardown(async () => {
    await gw.stop();
    gwMesh.cleanup();
  });
  const r = await request(gw.ports.admin, '/explain', { method: 'POST', body: JSON.stringify({ url: `http://other.example:${port}/x` }) });
  t.equal(r.status, 200, r.body);
  const e = r.json<Explained>();
  t.equal(e.listener.direction, 'gateway');
  t.equal(e.virtualHost, null);
  t.match(e.noVirtualHost, /no virtual host .* answers other\.example/);
  t.same(e.localReply, { status: 404, flag: 'NR', details: 'route_not_found' });
  const before = gw.accessLog.length;
  const real = await get(port, '/x', `other.example:${port}`);
  t.equal(real.status, 404, 'the real request gets the 404 explain predicted');
  await waitFor('access log line', () => gw.accessLog.length > before);
  t.match(gw.accessLog[before], / 404 NR route_not_found /);
  // The local rate limit's bucket: read, never taken from. The 404 above spent a token (the
  // filters run before the router answers), as the explanation then shows.
  const ask = async (): Promise<Explained> => (await request(gw.ports.admin, '/explain', { method: 'POST', body: JSON.stringify({ url: `http://bookinfo.example:${port}/x` }) })).json<Explained>();
  const ok = await ask();
  t.match(ok, { virtualHost: { domains: ['bookinfo.example'] }, localReply: null });
  const rl = (e: Explained) => e.filters.find((f) => f.name === 'envoy.filters.http.local_ratelimit');
  t.match(rl(ok), { verdict: 'pass', detail: /1 of 2 tokens left/ });
  t.match(rl(await ask()), { detail: /1 of 2 tokens left/ }, 'explaining takes no token');
  t.equal((await get(port, '/x', 'bookinfo.example')).status, 200);
  const empty = await ask();
  t.match(rl(empty), { verdict: 'deny', status: 429, detail: /0 of 2 tokens left/ });
  t.same(empty.localReply, { status: 429, flag: 'RL', details: 'local_rate_limited' });
  t.equal((await get(port, '/x', 'bookinfo.example')).status, 429, 'the real request is refused as explained');
});

t.test('404 NR in a sidecar: the host is known, no route of it matches the path', async (t) => {
  const e = await explain({ method: 'GET', url: 'http://ratings:9080/v2/x' });
  t.equal(e.listener.direction, 'outbound');
  t.match(e.virtualHost?.domains ?? [], ['ratings.default.svc.cluster.local']);
  t.equal(e.route, null);
  t.match(e.skippedRoutes.map((s) => s.why), [/path prefix "\/v1" does not match "\/v2\/x"/]);
  t.same(e.localReply, { status: 404, flag: 'NR', details: 'route_not_found' });
  const real = await logged(() => get(remora.ports.outbound, '/v2/x', 'ratings:9080'));
  t.equal(real.status, 404, 'the real request gets the 404 explain predicted');
  t.match(real.line, / 404 NR route_not_found /);
});

t.test('an unknown host meets allow_any, as the real request does', async (t) => {
  const e = await explain({ method: 'GET', url: 'http://nosuch.example:9080/x' });
  t.match(e.virtualHost, { name: 'allow_any', domains: ['*'] });
  t.same(e.forward?.clusters.map((c) => c.cluster), ['PassthroughCluster']);
  const real = await logged(() => get(remora.ports.outbound, '/x', 'nosuch.example:9080'));
  t.match(real.line, / PassthroughCluster .* allow_any$/);
});

t.test('a route miss is explained: the jason and chaos routes did not match, the split did', async (t) => {
  const e = await explain({ method: 'GET', url: 'http://reviews:9080/books', headers: { 'end-user': 'mallory' } });
  t.match(e.virtualHost?.domains ?? [], ['reviews.default.svc.cluster.local']);
  t.equal(e.skippedRoutes.length, 2);
  t.match(e.skippedRoutes[0]!.why, /header end-user exact "jason": request has "mallory"/);
  t.match(e.skippedRoutes[1]!.why, /path prefix "\/chaos" does not match "\/books"/);
  t.equal(e.route?.index, 2);
  t.match(e.route?.origin, /reviews/);
  t.same(
    e.forward?.clusters.map((c) => [c.cluster, c.weight, c.percent]),
    [
      [REVIEWS_V1, 80, 80],
      [REVIEWS_V2, 20, 20],
    ],
    'both weighted clusters, with their weights',
  );
  t.equal(e.forward?.timeoutMs, 3000);
  t.match(e.forward?.retry, { numRetries: 2 });
  t.same(e.clusters.map((c) => [c.subset, c.endpoints.map((h) => h.health)]), [['v1', ['healthy']], ['v2', ['healthy']]]);
  t.equal(e.clusters[0]!.endpoints[0]!.address, `127.0.0.1:${v1.port}`);
  t.equal(e.localReply, null);
  const seen = new Set<string>();
  for (let i = 0; i < 30 && seen.size < 2; i++) {
    const real = await logged(() => get(remora.ports.outbound, '/books', 'reviews:9080', { 'end-user': 'mallory' }));
    t.equal(real.status, 200);
    const cluster = [REVIEWS_V1, REVIEWS_V2].find((c) => real.line.includes(c));
    t.ok(cluster, 'the access log names one of the explained clusters');
    seen.add(cluster!);
  }
  t.ok(seen.has(REVIEWS_V1), 'real requests reach the 80% cluster');

  const jason = await explain({ method: 'GET', url: 'http://reviews:9080/books', headers: { 'end-user': 'jason' } });
  t.equal(jason.route?.index, 0);
  t.same(jason.skippedRoutes, []);
  t.same(jason.forward?.clusters.map((c) => c.cluster), [REVIEWS_V2]);
  const real = await logged(() => get(remora.ports.outbound, '/books', 'reviews:9080', { 'end-user': 'jason' }));
  t.match(real.line, REVIEWS_V2, 'jason goes to v2, as explained');
});

t.test('the fault would abort: 418 FI, as the real request gets', async (t) => {
  const e = await explain({ method: 'GET', url: 'http://reviews:9080/chaos' });
  t.equal(e.route?.index, 1);
  const fault = e.filters.find((f) => f.name === 'envoy.filters.http.fault');
  t.match(fault, { verdict: 'abort', status: 418 });
  t.match(fault?.detail, /would abort with HTTP 418 with probability 100%/);
  t.same(e.localReply, { status: 418, flag: 'FI', details: 'fault_filter_abort' });
  const real = await logged(() => get(remora.ports.outbound, '/chaos', 'reviews:9080'));
  t.equal(real.status, 418);
  t.match(real.line, / 418 FI fault_filter_abort /);
});

t.test('inbound: a denied request names the policy rule; JWT failures name the provider and why', async (t) => {
  const denied = await explain({ method: 'GET', url: 'http://productpage:9080/admin/users', direction: 'inbound' });
  t.equal(denied.listener.direction, 'inbound');
  const rbac = denied.filters.find((f) => f.name === 'envoy.filters.http.rbac');
  t.match(rbac, { verdict: 'deny', status: 403, rbac: { enforced: { matchedPolicy: DENY_RULE, allowed: false } } });
  t.same(denied.localReply, { status: 403, flag: '-', details: `rbac_access_denied_matched_policy[${DENY_RULE}]` });
  const real = await logged(() => get(remora.ports.inbound, '/admin/users', 'productpage:9080'));
  t.equal(real.status, 403);
  t.match(real.line, `rbac_access_denied_matched_policy[${DENY_RULE}]`);

  const allowed = await explain({ method: 'GET', url: 'http://productpage:9080/home', direction: 'inbound', headers: { authorization: `Bearer ${DEMO_JWT}` } });
  t.match(allowed.filters.find((f) => f.name === 'envoy.filters.http.rbac'), { verdict: 'pass', rbac: { enforced: { matchedPolicy: null, allowed: true } } });
  t.match(allowed.filters.find((f) => f.name === 'envoy.filters.http.jwt_authn'), { verdict: 'pass', detail: /verified: request.auth.principal testing@secure.istio.io\/testing@secure.istio.io/ });
  t.equal(allowed.localReply, null);
  t.equal((await get(remora.ports.inbound, '/home', 'productpage:9080', { authorization: `Bearer ${DEMO_JWT}` })).status, 200);

  const bad = `${DEMO_JWT.slice(0, -4)}AAAA`;
  const failed = await explain({ method: 'GET', url: 'http://productpage:9080/home', direction: 'inbound', headers: { authorization: `Bearer ${bad}` } });
  const jwt = failed.filters.find((f) => f.name === 'envoy.filters.http.jwt_authn');
  t.match(jwt, { verdict: 'deny', status: 401, jwt: { message: 'Jwt verification fails', tokens: [{ providers: [{ issuer: 'testing@secure.istio.io', outcome: 'Jwt verification fails' }] }] } });
  t.match(failed.filters.find((f) => f.name === 'envoy.filters.http.rbac'), { verdict: 'not-reached' });
  t.same(failed.localReply, { status: 401, flag: '-', details: 'jwt_authn_access_denied{Jwt_verification_fails}' });
  const realBad = await logged(() => get(remora.ports.inbound, '/home', 'productpage:9080', { authorization: `Bearer ${bad}` }));
  t.equal(realBad.status, 401);
  t.match(realBad.line, 'jwt_authn_access_denied{Jwt_verification_fails}');

  // Explaining takes no side effects: the RBAC counters did not move for the explained requests.
  const stats = await get(remora.ports.admin, '/stats?filter=rbac.denied', 'admin');
  t.match(stats.body, /rbac\.denied: 1\b/, 'only the one real denied request counted');
});

t.test('inbound with a peer principal: the rule naming it denies its POST, not its GET', async (t) => {
  const post = await explain({ method: 'POST', url: 'http://productpage:9080/orders', principal: INTRUDER, sourceIp: '127.0.0.2' });
  t.equal(post.listener.direction, 'inbound', 'a principal means inbound');
  t.match(post.filters.find((f) => f.name === 'envoy.filters.http.rbac'), { verdict: 'deny', rbac: { enforced: { matchedPolicy: 'ns[default]-policy[deny-intruder]-rule[0]' } } });
  const realPost = await logged(() => fromAddress('127.0.0.2', remora.ports.inbound, 'POST', '/orders'));
  t.equal(realPost.status, 403);
  t.match(realPost.line, 'rbac_access_denied_matched_policy[ns[default]-policy[deny-intruder]-rule[0]]');
  const getIt = await explain({ method: 'GET', url: 'http://productpage:9080/orders', principal: INTRUDER, sourceIp: '127.0.0.2' });
  t.equal(getIt.localReply, null);
  t.equal((await fromAddress('127.0.0.2', remora.ports.inbound, 'GET', '/orders')).status, 200);
  const other = await explain({ method: 'POST', url: 'http://productpage:9080/orders', principal: 'cluster.local/ns/default/sa/friend' });
  t.equal(other.localReply, null, 'another principal may POST');
});

/** A request to the inbound listener from a given local address (which names the peer's identity). */
function fromAddress(localAddress: string, port: number, method: string, path: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, localAddress, agent: false, headers: { host: 'productpage:9080' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('remora explain prints the text form and -o json; bad input is a clear error', async (t) => {
  const admin = `127.0.0.1:${remora.ports.admin}`;
  const text = await runCli(['explain', '--admin', admin, 'GET', 'http://reviews:9080/books', '-H', 'end-user: mallory']);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /virtual host .*reviews/);
  t.match(text.stdout, /no match: header end-user exact "jason": request has "mallory"/);
  t.match(text.stdout, new RegExp(`${REVIEWS_V1.replace(/\|/g, '\\|')}\\s+weight 80 \\(80%\\)`));
  t.match(text.stdout, /retry\s+2 retries on 5xx, 1000 ms per try/);
  t.match(text.stdout, /result\s+forwarded upstream/);
  const denied = await runCli(['explain', '--admin', admin, '--direction', 'inbound', 'http://productpage:9080/admin/x']);
  t.match(denied.stdout, `envoy.filters.http.rbac: deny 403: DENY engine (2 policies): denied, matched policy ${DENY_RULE}`);
  t.match(denied.stdout, /result\s+403 - rbac_access_denied_matched_policy/);
  const json = await runCli(['explain', '--admin', admin, '-o', 'json', 'http://ratings:9080/v2']);
  t.equal(json.code, 0, json.stderr);
  t.match(JSON.parse(json.stdout), { localReply: { status: 404, flag: 'NR' } });
  const unknown = await runCli(['explain', '--admin', admin, '--listener', 'nope', 'http://reviews:9080/']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no listener named nope; listeners: /);
  const help = await runCli(['explain', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: remora explain/);
  t.match((await runCli(['--help'])).stdout, /\n {2}explain {4}what a running proxy would do with a request/);
  const badHeader = await runCli(['explain', '--admin', admin, '-H', 'no-colon', 'http://reviews:9080/']);
  t.equal(badHeader.code, 2);
  t.match(badHeader.stderr, /-H wants 'name: value', got "no-colon"/);
  const relative = await runCli(['explain', '--admin', admin, 'GET', '/x']);
  t.equal(relative.code, 2);
  t.match(relative.stderr, /URL must be absolute/);
  const closed = await freePort();
  const down = await runCli(['explain', '--admin', `127.0.0.1:${closed}`, 'http://reviews:9080/']);
  t.equal(down.code, 1);
  t.match(down.stderr, `remora explain: cannot reach the admin API at 127.0.0.1:${closed}`);
  const notJson = await request(remora.ports.admin, '/explain', { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } });
  t.equal(notJson.status, 400);
  t.match(notJson.body, /not JSON/);
});
