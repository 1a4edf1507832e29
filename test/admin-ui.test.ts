// The admin live view's data (/ui/data) after real requests through a real sidecar: the
// listener → route configuration → cluster → endpoint edges with their request counts, error
// rates, latency percentiles and response flags, the ejected host marked, the access log
// lines kept while the page watches, and the page itself served self-contained; with two
// workers, their windows merged into one view.
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry, versionSubsets } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

export interface UiNode {
  id: string;
  kind: string;
  label: string;
  ejected?: boolean;
  ejectedHosts?: number;
}
export interface UiEdge {
  from: string;
  to: string;
  requests: number;
  total: number;
  rps: number;
  errorRate: number;
  p50Ms: number | null;
  p99Ms: number | null;
  flags: Record<string, number>;
}
export interface UiData {
  version: string | null;
  nodes: UiNode[];
  edges: UiEdge[];
  log: string[];
}

const V1 = 'outbound|9080|v1|reviews.default.svc.cluster.local';
const V2 = 'outbound|9080|v2|reviews.default.svc.cluster.local';
const RATINGS = 'outbound|9080||ratings.default.svc.cluster.local';

let mesh: MeshDir;
let remora: InProcessRemora;
let backends: Backend[] = [];

t.before(async () => {
  const v1 = await startBackend('reviews-v1');
  const v2 = await startBackend('reviews-v2');
  const good = await startBackend('ratings-good');
  const bad = await startBackend('ratings-bad', (_req, res) => {
    res.writeHead(500);
    res.end('down');
  });
  backends = [v1, v2, good, bad];
  mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('reviews', 'reviews', [
        { port: v1.port, labels: { app: 'reviews', version: 'v1' } },
        { port: v2.port, labels: { app: 'reviews', version: 'v2' } },
      ], { port: 9080 }),
      serviceEntry('ratings', 'ratings', [{ port: good.port, labels: { app: 'ratings' } }, { port: bad.port, labels: { app: 'ratings' } }], { port: 9080 }),
      versionSubsets('reviews', ['v1', 'v2']),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings }
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 50 }
`,
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
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - match: [{ uri: { prefix: /ratings } }]
    route: [{ destination: { host: ratings } }]
`,
    ),
  });
  remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage,version=v1', '--namespace', 'default']);
});

t.teardown(async () => {
  await remora?.stop();
  await Promise.all(backends.map((b) => b.close()));
  mesh?.cleanup();
});

async function data(query = ''): Promise<UiData> {
  const r = await get(remora.ports.admin, `/ui/data${query}`, 'admin');
  if (r.status !== 200) throw new Error(`/ui/data ${r.status}: ${r.body}`);
  return r.json<UiData>();
}

const edgeTo = (d: UiData, from: string | RegExp, to: string): UiEdge | undefined =>
  d.edges.find((e) => (typeof from === 'string' ? e.from === from : from.test(e.from)) && e.to === to);

t.test('/ui/data counts real requests on the edges they crossed', async (t) => {
  const before = await data();
  t.ok(before.version, 'the config version is shown');
  const listener = before.nodes.find((n) => n.kind === 'listener' && before.edges.some((e) => e.from === n.id && e.to === 'routes:9080'));
  t.ok(listener, 'an outbound listener with the 9080 route table');
  t.ok(before.nodes.some((n) => n.id === `cluster:${V1}`), 'clusters the routes name are nodes before any traffic');
  t.equal(edgeTo(before, 'routes:9080', `cluster:${V1}`)?.requests, 0);

  for (let i = 0; i < 5; i++) t.equal((await get(remora.ports.outbound, '/r', 'reviews:9080')).status, 200);
  for (let i = 0; i < 3; i++) t.equal((await get(remora.ports.outbound, '/r', 'reviews:9080', { 'end-user': 'jason' })).status, 200);
  t.equal((await get(remora.ports.outbound, '/other', 'ratings:9080')).status, 404, 'a path no route takes: 404 NR');
  const ratings: number[] = [];
  for (let i = 0; i < 6; i++) ratings.push((await get(remora.ports.outbound, '/ratings/1', 'ratings:9080')).status);
  t.ok(ratings.includes(500), 'the bad ratings host answered 500');

  const d = await data();
  const l = listener!.id;
  const toRoutes = edgeTo(d, l, 'routes:9080');
  t.equal(toRoutes?.requests, 14, 'listener → 9080 carries every request a route of that table took');
  const v1 = edgeTo(d, 'routes:9080', `cluster:${V1}`)!;
  const v2 = edgeTo(d, 'routes:9080', `cluster:${V2}`)!;
  t.equal(v1.requests, 5, 'five requests went to v1');
  t.equal(v2.requests, 3, 'three (jason) went to v2');
  t.equal(v1.errorRate, 0);
  t.ok(v1.p50Ms !== null && v1.p50Ms > 0 && v1.p99Ms! >= v1.p50Ms, 'p50 and p99 latency');
  t.ok(v1.rps > 0, 'a request rate');
  const v1Host = d.edges.find((e) => e.from === `cluster:${V1}` && e.to.startsWith(`endpoint:${V1}|127.0.0.1:`));
  t.equal(v1Host?.requests, 5, 'cluster → endpoint');

  const nr = edgeTo(d, l, 'routes:(no route)');
  t.match(nr, { requests: 1, flags: { NR: 1 } }, 'the 404 NR is an edge of its own, with its flag');

  const r = edgeTo(d, 'routes:9080', `cluster:${RATINGS}`)!;
  const errors = ratings.filter((s) => s === 500).length;
  t.equal(r.requests, 6);
  t.equal(r.errorRate, Math.round((errors / 6) * 10000) / 10000, 'the error rate is the 500s over the requests');

  await waitFor('the bad ratings host ejected', async () => (await data()).nodes.some((n) => n.kind === 'endpoint' && n.ejected === true), 5000);
  const ej = await data();
  const badNode = ej.nodes.find((n) => n.kind === 'endpoint' && n.ejected === true)!;
  t.match(badNode.id, `endpoint:${RATINGS}|127.0.0.1:${backends[3]!.port}`, 'the ejected host is the failing one');
  t.equal(ej.nodes.find((n) => n.id === `cluster:${RATINGS}`)?.ejectedHosts, 1, 'its cluster counts one ejected host');

  // The access log ring fills while the page watches (it asked for data above).
  t.ok(ej.log.some((line) => line.includes('"GET /r HTTP/1.1" 200') && line.includes(V2)), 'access log lines are kept');
  t.ok(ej.log.some((line) => / 404 NR route_not_found /.test(line)));

  // The window is whole seconds within the kept minute.
  const bad = await get(remora.ports.admin, '/ui/data?window=0', 'admin');
  t.equal(bad.status, 400);
  t.match(bad.body, /window must be 1 to 60 seconds/);
});

t.test('/ui is one self-contained page', async (t) => {
  const r = await get(remora.ports.admin, '/ui', 'admin');
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /text\/html/);
  t.match(r.body, /<svg id="graph"/);
  t.match(r.body, /fetch\("\/ui\/data"/);
  t.notMatch(r.body, /<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no external scripts, styles or URLs');
});

t.test('with --concurrency 2 the view merges both workers: every request on its edges, every line kept, the ejection decided once', async (t) => {
  const two = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage,version=v1', '--namespace', 'default', '--concurrency', '2']);
  t.teardown(() => two.stop());
  const dataOf = async (): Promise<UiData> => (await get(two.ports.admin, '/ui/data?window=60', 'admin')).json<UiData>();
  await dataOf(); // the page is watching from here on
  const n = 12;
  for (let i = 0; i < n; i += 3) {
    const replies = await Promise.all([0, 1, 2].map(() => get(two.ports.outbound, '/r', 'reviews:9080')));
    t.same(replies.map((r) => r.status), [200, 200, 200]);
  }
  const perWorker = new Map<string, number>();
  for (const line of (await get(two.ports.admin, '/stats', 'admin')).body.split('\n')) {
    const m = /^listener\..*\.(worker_\d+)\.downstream_cx_total: (\d+)$/.exec(line);
    if (m !== null) perWorker.set(m[1]!, (perWorker.get(m[1]!) ?? 0) + Number(m[2]));
  }
  t.ok((perWorker.get('worker_0') ?? 0) > 0 && (perWorker.get('worker_1') ?? 0) > 0, `both workers accepted connections (${[...perWorker].map(([w, c]) => `${w} ${c}`).join(', ')})`);

  const d = await dataOf();
  const v1 = edgeTo(d, 'routes:9080', `cluster:${V1}`)!;
  t.equal(v1.total, n, 'routes → v1 carries the requests of both workers');
  t.equal(v1.requests, n, 'all within the window');
  t.ok(v1.p50Ms !== null && v1.p99Ms! >= v1.p50Ms, 'latency from the merged histograms');
  t.equal(d.edges.filter((e) => e.from === `cluster:${V1}`).reduce((a, e) => a + e.total, 0), n, 'cluster → endpoint too');
  t.equal(d.log.filter((l) => l.includes('"GET /r HTTP/1.1" 200')).length, n, 'one log line per request, from both workers');

  for (let i = 0; i < 6; i++) await get(two.ports.outbound, '/ratings/1', 'ratings:9080');
  await waitFor('the bad ratings host ejected', async () => (await dataOf()).nodes.some((nd) => nd.kind === 'endpoint' && nd.ejected === true), 5000);
  const ej = await dataOf();
  t.equal(ej.nodes.find((nd) => nd.id === `cluster:${RATINGS}`)?.ejectedHosts, 1, 'the ejection the main thread decided is shown');
  t.equal(edgeTo(ej, 'routes:9080', `cluster:${RATINGS}`)?.total, 6, 'the ratings requests, both workers\'');
});
