// Weighted destinations, DestinationRule subsets and load-balancer policies through a real
// gateway to real backends.
import { Agent } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
const b: Backend[] = [];
const agent = new Agent({ keepAlive: true, maxSockets: 16 });

t.before(async () => {
  for (const name of ['v1-a', 'v1-b', 'v2-a', 'v2-b', 'v3-a']) b.push(await startBackend(name));
  port = await freePort();
  const ep = (i: number, version: string) => `  - { address: 127.0.0.1, ports: { http: ${b[i]!.port} }, labels: { app: shop, version: ${version} } }`;
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: shop }
spec:
  hosts: [shop]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
${ep(0, 'v1')}
${ep(1, 'v1')}
${ep(2, 'v2')}
${ep(3, 'v2')}
${ep(4, 'v3')}
`,
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: shop }
spec:
  host: shop
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
  subsets:
  - name: v1
    labels: { version: v1 }
  - name: v2
    labels: { version: v2 }
    trafficPolicy:
      loadBalancer:
        consistentHash: { httpHeaderName: x-user }
  - name: v3
    labels: { version: v3 }
  - name: cookie
    labels: { version: v2 }
    trafficPolicy:
      loadBalancer:
        consistentHash: { httpCookie: { name: sticky, ttl: 60s, path: / } }
  - name: query
    labels: { version: v2 }
    trafficPolicy:
      loadBalancer:
        consistentHash: { httpQueryParameterName: user }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /split } }]
    route:
    - { destination: { host: shop, subset: v1 }, weight: 90 }
    - { destination: { host: shop, subset: v2 }, weight: 10 }
  - match: [{ uri: { prefix: /v1 } }]
    route: [{ destination: { host: shop, subset: v1 } }]
  - match: [{ uri: { prefix: /hash } }]
    route: [{ destination: { host: shop, subset: v2 } }]
  - match: [{ uri: { prefix: /cookie } }]
    route: [{ destination: { host: shop, subset: cookie } }]
  - match: [{ uri: { prefix: /query } }]
    route: [{ destination: { host: shop, subset: query } }]
  - match: [{ uri: { prefix: /zero } }]
    route:
    - { destination: { host: shop, subset: v3 }, weight: 100 }
    - { destination: { host: shop, subset: v1 }, weight: 0 }
  - match: [{ uri: { prefix: /missing } }]
    route: [{ destination: { host: shop, subset: nope } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  agent.destroy();
  await remora.stop();
  for (const x of b) await x.close();
  mesh.cleanup();
});

async function names(path: string, n: number, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const batch = 50;
  for (let i = 0; i < n; i += batch) {
    const replies = await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, () => request(port, path, { agent, headers: { host: 'shop.example.com', ...headers } })),
    );
    for (const r of replies) {
      const name = r.status === 200 ? r.json<{ name: string }>().name : `status ${r.status}`;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
  }
  return counts;
}

t.test('a 90/10 split lands within ±3 points over 2,000 requests', async (t) => {
  const counts = await names('/split', 2000);
  const v1 = (counts.get('v1-a') ?? 0) + (counts.get('v1-b') ?? 0);
  const v2 = (counts.get('v2-a') ?? 0) + (counts.get('v2-b') ?? 0);
  t.equal(v1 + v2, 2000, `every request reached v1 or v2: ${JSON.stringify([...counts])}`);
  t.ok(Math.abs(v1 / 2000 - 0.9) <= 0.03, `v1 share ${(v1 / 20).toFixed(1)}% is 90 ± 3`);
  t.ok(Math.abs(v2 / 2000 - 0.1) <= 0.03, `v2 share ${(v2 / 20).toFixed(1)}% is 10 ± 3`);
});

t.test('a subset reaches only endpoints with its labels, round robin alternates', async (t) => {
  const counts = await names('/v1', 100);
  t.same([...counts.keys()].sort(), ['v1-a', 'v1-b']);
  t.equal(counts.get('v1-a'), 50, 'ROUND_ROBIN splits evenly');
  t.equal(counts.get('v1-b'), 50);
});

t.test('weight 0 takes no traffic', async (t) => {
  const counts = await names('/zero', 50);
  t.same([...counts.entries()], [['v3-a', 50]]);
});

t.test('consistent hash on a header: same key, same endpoint; keys spread', async (t) => {
  const seen = new Map<string, string>();
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi']) {
    const counts = await names('/hash', 20, { 'x-user': user });
    t.equal(counts.size, 1, `${user} always reaches one endpoint (${JSON.stringify([...counts])})`);
    seen.set(user, [...counts.keys()][0]!);
  }
  t.same(new Set(seen.values()), new Set(['v2-a', 'v2-b']), 'different keys use both endpoints of the subset');
});

t.test('consistent hash on a query parameter', async (t) => {
  const first = await names('/query?user=zed', 15);
  t.equal(first.size, 1);
  const again = await names('/query?user=zed&other=1', 15);
  t.same([...again.keys()], [...first.keys()]);
});

t.test('consistent hash on a cookie: the proxy sets one when missing, then sticks to it', async (t) => {
  const r = await request(port, '/cookie', { headers: { host: 'shop.example.com' } });
  t.equal(r.status, 200);
  const setCookie = String(r.headers['set-cookie']);
  t.match(setCookie, /^sticky=[0-9a-f]{16}; Max-Age=60; Path=\/; HttpOnly$/);
  const cookie = setCookie.split(';')[0]!;
  const firstName = r.json<{ name: string }>().name;
  const counts = await names('/cookie', 20, { cookie });
  t.same([...counts.entries()], [[firstName, 20]], 'every request with the cookie reaches the same endpoint');
});

t.test('a subset not defined in any DestinationRule gives 503 NC', async (t) => {
  const r = await request(port, '/missing', { headers: { host: 'shop.example.com', 'x-request-id': 'missing-subset' } });
  t.equal(r.status, 503);
  await new Promise((r) => setImmediate(r));
  t.match(remora.accessLog.find((l) => l.includes('missing-subset')) ?? '', /" 503 NC cluster_not_found /);
});
