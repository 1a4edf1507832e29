// Slow start end to end (DestinationRule loadBalancer.warmupDurationSecs): through a real
// gateway to real backends, an endpoint added by a hot reload gets a small share of the
// traffic at first and its full share once the window has passed; endpoints that joined
// together share equally.
//
// Reference: istio.io DestinationRule LoadBalancerSettings.warmupDurationSecs; Envoy arch
// overview "Slow start mode" (weight × max(10%, time in cluster / window), for ROUND_ROBIN and
// LEAST_REQUEST).
import { Agent } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const WINDOW_MS = 3_000;

let a: Backend;
let b: Backend;
let c: Backend;
let port: number;
let mesh: MeshDir;
let remora: InProcessRemora;
let startedAt = 0;
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

const registry = (backends: Backend[]): string => serviceEntry('app', 'app', backends.map((x) => ({ port: x.port })));

t.before(async () => {
  a = await startBackend('a');
  b = await startBackend('b');
  c = await startBackend('c');
  port = await freePort();
  mesh = new MeshDir({
    'gateway.yaml': doc(
      gateway('gw', port),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: app }
spec:
  host: app
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN, warmupDurationSecs: ${WINDOW_MS / 1000}s }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: app } }]
`,
    ),
    'registry.yaml': registry([a, b]),
  });
  startedAt = Date.now();
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  agent.destroy();
  await remora?.stop();
  await Promise.all([a, b, c].map((x) => x?.close()));
  mesh?.cleanup();
});

/**
 * Sends requests one after another until `ms` have passed or `max` were sent; counts which
 * backend answered each.
 */
async function measure(ms: number, max: number): Promise<{ total: number; by: Record<string, number> }> {
  const by: Record<string, number> = {};
  const deadline = Date.now() + ms;
  let total = 0;
  while (Date.now() < deadline && total < max) {
    const r = await request(port, '/', { agent, headers: { host: 'app.example' }, timeoutMs: 5_000 });
    if (r.status !== 200) throw new Error(`request ${total}: ${r.status} ${r.body}`);
    const name = String(r.headers['x-backend']);
    by[name] = (by[name] ?? 0) + 1;
    total++;
  }
  return { total, by };
}

const pct = (n: number | undefined, total: number): number => (100 * (n ?? 0)) / total;

t.test('a new endpoint ramps up over the warmup window; endpoints of the same age share equally', async (t) => {
  // Both endpoints joined at start: the same age, the same weight factor.
  const first = await measure(2_000, 400);
  t.ok(first.total >= 100, `enough requests to judge (${first.total})`);
  t.same(Object.keys(first.by).sort(), ['a', 'b']);
  const aShare = pct(first.by['a'], first.total);
  t.ok(aShare > 35 && aShare < 65, `both new: about half each (a got ${aShare.toFixed(1)}%)`);

  // Let a and b finish their window, then add c by rewriting the ServiceEntry (hot reload).
  const wait = startedAt + WINDOW_MS + 300 - Date.now();
  if (wait > 0) await sleep(wait);
  mesh.write('registry.yaml', registry([a, b, c]));
  await waitFor(
    'the reload adding c',
    async () => (await request(remora.ports.admin, '/clusters')).body.includes(`127.0.0.1:${c.port}`),
    10_000,
  );
  const addedAt = Date.now();

  // Its first second: c's weight is between 10% and a third of a warm endpoint's.
  const early = await measure(1_000, 5_000);
  t.ok(early.total >= 100, `enough requests to judge (${early.total})`);
  const cEarly = pct(early.by['c'], early.total);
  t.ok((early.by['c'] ?? 0) > 0, `c gets some traffic from the start (the 10% floor): ${early.by['c'] ?? 0} of ${early.total}`);
  t.ok(cEarly < 20, `c gets clearly less than a third at first (got ${cEarly.toFixed(1)}%)`);
  t.ok(pct(early.by['a'], early.total) > 35 && pct(early.by['b'], early.total) > 35, 'a and b carry the rest evenly');

  // After the window: round robin over three equal endpoints.
  const rest = addedAt + WINDOW_MS + 200 - Date.now();
  if (rest > 0) await sleep(rest);
  const late = await measure(3_000, 300);
  t.ok(late.total >= 150, `enough requests to judge (${late.total})`);
  const cLate = pct(late.by['c'], late.total);
  t.ok(cLate > 30 && cLate < 37, `after the window c gets a third (got ${cLate.toFixed(1)}%)`);
  t.same(Object.keys(late.by).sort(), ['a', 'b', 'c']);
});
