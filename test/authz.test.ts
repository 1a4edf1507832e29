// AuthorizationPolicy end to end: policies written as Istio resources, selected by the
// translator, enforced by the RBAC filter in a real gateway and a real sidecar's inbound
// listener. Denials are Envoy's: 403 "RBAC: access denied", details naming the DENY rule
// (or `none` when no ALLOW policy matched), and the access log shows both.
import { request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request, type Reply } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const NONE = 'rbac_access_denied_matched_policy[none]';
const rule = (ns: string, name: string, i = 0) => `rbac_access_denied_matched_policy[ns[${ns}]-policy[${name}]-rule[${i}]]`;

/** An access log line of a denied request: method, path, 403, no response flag, the details. */
function deniedLine(method: string, path: string, details: string): RegExp {
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`"${esc(method)} ${esc(path)} HTTP/1\\.1" 403 - ${esc(details)} `);
}

/**
 * Sends a request and checks it is refused the way Envoy's RBAC filter refuses it: 403 with
 * "RBAC: access denied", and (the details are not sent to the client) a new access log line
 * naming `details`.
 */
async function denies(t: Test, remora: InProcessRemora, send: () => Promise<Reply>, method: string, path: string, details: string): Promise<void> {
  const what = `${method} ${path}`;
  const before = remora.accessLog.length;
  const r = await send();
  t.equal(r.status, 403, `${what}: 403`);
  t.equal(r.body, 'RBAC: access denied', `${what}: Envoy's body`);
  const line = deniedLine(method, path, details);
  await waitFor(`access log: ${what} 403 ${details}`, () => remora.accessLog.slice(before).some((l) => line.test(l)));
  t.pass(`${what}: access log shows 403 - ${details}`);
}

t.test('gateway: policies in istio-system selecting istio: ingressgateway', async (t) => {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({
    'routes.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: backend.port }]),
      routeAll('gw'),
    ),
    'authz.yaml': doc(
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-reads, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
  rules:
  - to:
    - operation: { methods: ["GET", "HEAD"], paths: ["/public/*", "/admin/*"] }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-item-writes, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  rules:
  - to:
    - operation: { methods: ["POST"], paths: ["/api/{*}/items"] }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to:
    - operation: { paths: ["/admin/*"] }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-token, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - when:
    - key: request.headers[x-token]
      values: ["admin"]
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-clients, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - from:
    - source: { remoteIpBlocks: ["203.0.113.0/24"] }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: for-another-gateway, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: eastwestgateway } }
  action: DENY
  rules:
  - {}
`,
    ),
  });
  t.teardown(async () => {
    await backend.close();
    mesh.cleanup();
  });
  // One trusted hop in front: remote.ip is the client X-Forwarded-For names.
  const remora = await startRemora('gateway', [mesh.dir], ['--num-trusted-proxies', '1']);
  t.teardown(() => remora.stop());
  const send = (method: string, path: string, headers: Record<string, string> = {}) =>
    request(port, path, { method, headers: { host: 'shop.example.com', ...headers } });

  t.test('allowed by method and path', async (t) => {
    const r = await send('GET', '/public/index.html?x=1');
    t.equal(r.status, 200);
    t.equal(r.json<{ url: string }>().url, '/public/index.html?x=1', 'the backend got the request');
    t.equal((await send('POST', '/api/v2/items')).status, 200, 'POST through the {*} template');
  });

  t.test('no ALLOW policy matches: 403 with details none', async (t) => {
    const seen = backend.seen.length;
    await denies(t, remora, () => send('POST', '/public/index.html'), 'POST', '/public/index.html', NONE);
    await denies(t, remora, () => send('POST', '/api/v2/x/items'), 'POST', '/api/v2/x/items', NONE);
    await denies(t, remora, () => send('DELETE', '/api/v2/items'), 'DELETE', '/api/v2/items', NONE);
    t.equal(backend.seen.length, seen, 'the backend saw none of them');
  });

  t.test('DENY before ALLOW: a path the ALLOW policy covers', async (t) => {
    await denies(t, remora, () => send('GET', '/admin/users'), 'GET', '/admin/users', rule('istio-system', 'deny-admin'));
  });

  t.test('deny by header', async (t) => {
    await denies(t, remora, () => send('GET', '/public/a', { 'x-token': 'admin' }), 'GET', '/public/a', rule('istio-system', 'deny-token'));
    t.equal((await send('GET', '/public/a', { 'x-token': 'guest' })).status, 200, 'x-token: guest');
  });

  t.test('deny by remote IP (X-Forwarded-For with one trusted hop)', async (t) => {
    await denies(t, remora, () => send('GET', '/public/b', { 'x-forwarded-for': '203.0.113.9' }), 'GET', '/public/b', rule('istio-system', 'deny-clients'));
    t.equal((await send('GET', '/public/b', { 'x-forwarded-for': '198.51.100.1' })).status, 200, 'client 198.51.100.1');
    t.equal((await send('GET', '/public/b')).status, 200, 'no X-Forwarded-For: the client is the peer, 127.0.0.1');
  });

  t.test('deny-all added at run time, then removed', async (t) => {
    mesh.write(
      'deny-all.yaml',
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-all, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - {}
`,
    );
    await waitFor('deny-all applies', async () => (await send('GET', '/public/c')).status === 403, 15_000);
    await denies(t, remora, () => send('GET', '/public/c'), 'GET', '/public/c', rule('istio-system', 'deny-all'));
    mesh.write('deny-all.yaml', '');
    await waitFor('deny-all removed', async () => (await send('GET', '/public/c')).status === 200, 15_000);
    t.pass('requests pass again');
  });

  t.test('istio.io/dry-run: a DENY-all in shadow rules is evaluated, never enforced', async (t) => {
    mesh.write(
      'dry-run.yaml',
      doc(
        `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all-trial
  namespace: istio-system
  annotations: { istio.io/dry-run: "true" }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - {}
`,
        `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-blocked, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/public/blocked"] } }]
`,
      ),
    );
    // The enforced policy beside it shows the file is live.
    await waitFor('deny-blocked applies', async () => (await send('GET', '/public/blocked')).status === 403, 15_000);
    await denies(t, remora, () => send('GET', '/public/blocked'), 'GET', '/public/blocked', rule('istio-system', 'deny-blocked'));
    t.equal((await send('GET', '/public/c')).status, 200, 'the dry-run deny-all does not refuse');
    mesh.write('dry-run.yaml', '');
    await waitFor('removed', async () => (await send('GET', '/public/blocked')).status === 200, 15_000);
  });
});

/** The peer identities the test's clients present, by the loopback address they connect from. */
const IDENTITIES: Record<string, { principal: string; namespace: string }> = {
  '127.0.0.2': { principal: 'cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account', namespace: 'istio-system' },
  '127.0.0.3': { principal: 'cluster.local/ns/default/sa/sleep', namespace: 'default' },
  '127.0.0.4': { principal: 'cluster.local/ns/dev/sa/tester', namespace: 'dev' },
};
const peerOf = (socket: Socket) => IDENTITIES[socket.remoteAddress ?? ''] ?? null;

/** One request from a given loopback address (so the peer-identity hook knows who it is). */
function from(localAddress: string, port: number, method: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, localAddress, agent: false, headers: { host: 'productpage:9080' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body) as T });
      });
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

t.test('sidecar inbound: policies in default selecting app: productpage, peers with mTLS identities', async (t) => {
  const app: Backend = await startBackend('productpage');
  const inbound = await freePort();
  const mesh = new MeshDir({
    'authz.yaml': doc(
      // The HTTP-traffic task: deny by default in the namespace...
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing, namespace: default }
spec: {}
`,
      // ...then allow GET on /productpage from the ingress gateway's identity, and /health from namespace default.
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: productpage-viewer, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: ALLOW
  rules:
  - from:
    - source: { principals: ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"] }
    to:
    - operation: { methods: ["GET"], paths: ["/productpage", "/static/*"] }
  - from:
    - source: { namespaces: ["default", "dev"] }
    to:
    - operation: { paths: ["/health"] }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-dev, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: DENY
  rules:
  - from:
    - source: { namespaces: ["dev"] }
    to:
    - operation: { methods: ["POST", "DELETE"] }
  - from:
    - source: { notPrincipals: ["*"] }
    to:
    - operation: { paths: ["/health"] }
`,
      // Ports: the app's port is what captured requests were addressed to (Envoy's original
      // destination), not the sidecar's inbound listener port.
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-debug-on-app-port, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: DENY
  rules:
  - to:
    - operation: { ports: ["${app.port}"], paths: ["/static/debug"] }
  - to:
    - operation: { ports: ["${inbound}"], paths: ["/static/other"] }
`,
      // Selects another workload: not this sidecar's business.
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-deny-all, namespace: default }
spec:
  selector: { matchLabels: { app: reviews } }
  action: DENY
  rules:
  - {}
`,
    ),
  });
  t.teardown(async () => {
    await app.close();
    mesh.cleanup();
  });
  const remora: InProcessRemora = await startRemora(
    'sidecar',
    [mesh.dir],
    ['--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default', '--inbound-port', String(inbound)],
    { peerIdentity: peerOf },
  );
  t.teardown(() => remora.stop());

  t.test('principal: the gateway identity may GET /productpage', async (t) => {
    const r = await from('127.0.0.2', inbound, 'GET', '/productpage?u=normal');
    t.equal(r.status, 200);
    t.equal(r.json<{ name: string }>().name, 'productpage');
    t.equal((await from('127.0.0.2', inbound, 'GET', '/static/app.css')).status, 200, 'prefix path');
  });

  t.test('allow-nothing: anything no ALLOW rule matches is refused', async (t) => {
    await denies(t, remora, () => from('127.0.0.2', inbound, 'POST', '/productpage'), 'POST', '/productpage', NONE);
    await denies(t, remora, () => from('127.0.0.3', inbound, 'GET', '/productpage'), 'GET', '/productpage', NONE);
    await denies(t, remora, () => get(inbound, '/productpage', 'productpage:9080'), 'GET', '/productpage', NONE);
  });

  t.test('namespaces: /health from default and dev', async (t) => {
    t.equal((await from('127.0.0.3', inbound, 'GET', '/health')).status, 200, 'default/sleep');
    t.equal((await from('127.0.0.4', inbound, 'GET', '/health')).status, 200, 'dev/tester');
    await denies(t, remora, () => from('127.0.0.2', inbound, 'GET', '/health'), 'GET', '/health', NONE);
  });

  t.test('DENY by namespace and by missing identity, before ALLOW', async (t) => {
    await denies(t, remora, () => from('127.0.0.4', inbound, 'POST', '/health'), 'POST', '/health', rule('default', 'deny-dev', 0));
    await denies(t, remora, () => get(inbound, '/health', 'productpage:9080'), 'GET', '/health', rule('default', 'deny-dev', 1));
  });

  t.test('ports: a rule for the app port applies on the sidecar; one for the inbound listener port does not', async (t) => {
    await denies(t, remora, () => from('127.0.0.2', inbound, 'GET', '/static/debug'), 'GET', '/static/debug', rule('default', 'deny-debug-on-app-port', 0));
    t.equal((await from('127.0.0.2', inbound, 'GET', '/static/other')).status, 200, 'the listener port is not the destination port');
  });

  t.test("a policy selecting another workload does not apply", async (t) => {
    t.equal((await from('127.0.0.2', inbound, 'GET', '/productpage')).status, 200);
  });
});
