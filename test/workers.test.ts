// `--concurrency 2`: two worker threads serve the gateway's listener (SO_REUSEPORT), with
// Envoy's proxy-wide semantics for what they share: one circuit breaker, one token bucket,
// one outlier decision, one /stats and one Prometheus view summing both, one /ui/data live
// view, one /clusters (host and circuit-breaker counts) and one /explain merging both; hot
// reload reaches both, and SIGTERM drains both and exits 0.
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, gatewayLocalRateLimit, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, spawnRemora, startRemora, type InProcessRemora } from './helpers/remora.ts';

let slow: Backend;
let good: Backend;
let bad: Backend;
t.before(async () => {
  slow = await startBackend('slow', (req, res) => {
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? '0');
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`slept ${ms}`);
    }, ms);
  });
  good = await startBackend('good');
  bad = await startBackend('bad', (_req, res) => {
    res.writeHead(500, { 'content-type': 'text/plain', 'x-backend': 'bad' });
    res.end('broken');
  });
});
t.teardown(async () => {
  await Promise.all([slow.close(), good.close(), bad.close()]);
});

const route = (name: string, host: string, extra = ''): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${name} }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: ${host} } }]
${extra}`;

const breaker = (host: string): string => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ${host}-limits }
spec:
  host: ${host}
  trafficPolicy:
    connectionPool:
      http: { http2MaxRequests: 1 }
`;

const ejector = (host: string): string => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ${host}-outliers }
spec:
  host: ${host}
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    outlierDetection: { consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100 }
`;

async function stats(r: InProcessRemora): Promise<Map<string, number>> {
  const text = (await request(r.ports.admin, '/stats')).body;
  return new Map(text.split('\n').filter((l) => l.includes(': ')).map((l) => [l.slice(0, l.indexOf(': ')), Number(l.slice(l.indexOf(': ') + 2))]));
}

/** `n` requests, each on a new connection (the kernel picks a worker per connection), `parallel` at a time. */
async function many(port: number, n: number, path = '/', parallel = 1): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = Array.from({ length: Math.min(parallel, n - i) }, () => request(port, path, { headers: { host: 'x' } }));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

async function gatewayWithWorkers(t: Test, files: Record<string, string>): Promise<{ remora: InProcessRemora; mesh: MeshDir }> {
  const mesh = new MeshDir(files);
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('gateway', [mesh.dir], ['--concurrency', '2']);
  t.teardown(() => remora.stop());
  return { remora, mesh };
}

t.test('both workers accept connections; /stats and /stats/prometheus add them up', async (t) => {
  const port = await freePort();
  const { remora } = await gatewayWithWorkers(t, { 'mesh.yaml': doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), route('good', 'good')) });
  const replies = await many(port, 40, '/', 4);
  t.same(new Set(replies.map((r) => r.status)), new Set([200]), 'every request answered');
  const s = await stats(remora);
  const listener = `listener.127.0.0.1_${port}`;
  const w0 = s.get(`${listener}.worker_0.downstream_cx_total`) ?? 0;
  const w1 = s.get(`${listener}.worker_1.downstream_cx_total`) ?? 0;
  t.ok(w0 > 0 && w1 > 0, `each worker accepted connections (worker_0 ${w0}, worker_1 ${w1})`);
  t.equal(s.get(`${listener}.downstream_cx_total`), 40, 'the listener total is the sum of both workers');
  t.equal(w0 + w1, 40);
  t.equal(s.get('cluster.outbound|80||good.default.svc.cluster.local.upstream_rq_total'), 40, 'cluster counters summed');
  t.equal(s.get('cluster.outbound|80||good.default.svc.cluster.local.membership_total'), 1, 'membership is the cluster\'s, not added per worker');
  t.equal(s.get('server.concurrency'), 2, 'server.concurrency is the worker count');
  const prom = (await request(remora.ports.admin, '/stats/prometheus')).body;
  const total = prom
    .split('\n')
    .filter((l) => l.startsWith('istio_requests_total{') && l.includes('response_code="200"'))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  t.equal(total, 40, 'istio_requests_total summed across workers');
  const count = prom.split('\n').filter((l) => l.startsWith('istio_request_duration_milliseconds_count{') && l.includes('response_code="200"'));
  t.equal(count.length, 1, 'one histogram series, the workers\' merged');
  t.equal(Number(count[0]!.slice(count[0]!.lastIndexOf(' ') + 1)), 40, 'its count is both workers\'');
  t.equal(prom.split('\n').filter((l) => l === '# TYPE istio_requests_total counter').length, 1, 'each family once');
  t.equal(remora.accessLog.length, 40, 'every request logged once, whole lines, from both workers');
});

t.test('workers write the access log to stdout themselves: long lines from both, none cut or mixed', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), route('good', 'good')) });
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], ['--concurrency', '2']);
  t.teardown(() => void remora.stop('SIGKILL'));
  // ~1,700-byte lines: a worker's batch of them is written in several pieces of at most 4 KiB.
  const pad = 'p'.repeat(1_500);
  const n = 400;
  const parallel = 20;
  for (let i = 0; i < n; i += parallel) {
    const batch = Array.from({ length: parallel }, (_, j) => request(port, `/r${i + j}/${pad}`, { headers: { host: 'x' } }));
    const replies = await Promise.all(batch);
    if (replies.some((r) => r.status !== 200)) t.fail(`a request failed: ${replies.map((r) => r.status).join(',')}`);
  }
  await remora.waitFor(`${n} access log lines`, () => remora.stdout.length >= n, 10_000);
  const s = (await request(remora.ports.admin, '/stats')).body;
  const accepted = [0, 1].map((w) => Number(new RegExp(`listener\\.127\\.0\\.0\\.1_${port}\\.worker_${w}\\.downstream_cx_total: (\\d+)`).exec(s)?.[1] ?? 0));
  t.ok(accepted[0]! > 0 && accepted[1]! > 0, `both workers served (${accepted.join(', ')} connections)`);
  const line = new RegExp(`^\\[[^\\]]+\\] "GET /r(\\d+)/${pad} HTTP/1\\.1" 200 - via_upstream - "-" 0 \\d+ \\d+ \\d+ "[^"]*" "[^"]*" "[^"]+" "x" "127\\.0\\.0\\.1:${good.port}" outbound\\|80\\|\\|good\\.default\\.svc\\.cluster\\.local - \\S+ \\S+ - \\S+$`);
  const seen = new Set<number>();
  const bad: string[] = [];
  for (const l of remora.stdout) {
    const m = line.exec(l);
    if (m === null) bad.push(l.replace(pad, '<pad>'));
    else seen.add(Number(m[1]));
  }
  t.same(bad, [], 'every line whole, in Istio\'s text format');
  t.equal(remora.stdout.length, n, 'one line per request');
  t.equal(seen.size, n, 'every request logged once');
});

interface UiEdge {
  from: string;
  to: string;
  requests: number;
  total: number;
}

/** `/clusters` text lines of one host as stat → value. */
function hostLines(text: string, cluster: string, hostPort: string): Map<string, string> {
  const prefix = `${cluster}::${hostPort}::`;
  return new Map(text.split('\n').filter((l) => l.startsWith(prefix)).map((l) => [l.slice(prefix.length, l.lastIndexOf('::')), l.slice(l.lastIndexOf('::') + 2)]));
}

t.test('/ui/data and /clusters show what both workers served, added up', async (t) => {
  const port = await freePort();
  const { remora } = await gatewayWithWorkers(t, { 'mesh.yaml': doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), route('good', 'good')) });
  const cluster = 'outbound|80||good.default.svc.cluster.local';
  // The page asks first: from then on every worker keeps its access log lines.
  const before = (await request(remora.ports.admin, '/ui/data')).json<{ edges: UiEdge[]; log: string[] }>();
  t.equal(before.log.length, 0, 'no lines before any request');
  const listener = `listener.127.0.0.1_${port}`;
  const s0 = await stats(remora);
  const n = 30;
  const replies = await many(port, n, '/seen', 3);
  t.same(new Set(replies.map((r) => r.status)), new Set([200]), 'every request answered');
  const s1 = await stats(remora);
  const served = [0, 1].map((w) => (s1.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0) - (s0.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0));
  t.ok(served[0]! > 0 && served[1]! > 0, `both workers served (${served.join(', ')})`);

  const d = (await request(remora.ports.admin, '/ui/data?window=60')).json<{ edges: UiEdge[]; log: string[] }>();
  const sum = (from: string, to: string, key: 'requests' | 'total'): number =>
    d.edges.filter((e) => e.from.startsWith(from) && e.to.startsWith(to)).reduce((a, e) => a + e[key], 0);
  t.equal(sum('listener:', 'routes:', 'total'), n, 'listener → routes: every request, from both workers');
  t.equal(sum('listener:', 'routes:', 'requests'), n, 'all of them within the window');
  t.equal(sum(`routes:`, `cluster:${cluster}`, 'total'), n, 'routes → cluster');
  t.equal(sum(`cluster:${cluster}`, `endpoint:${cluster}|127.0.0.1:${good.port}`, 'total'), n, 'cluster → endpoint');
  const lines = d.log.filter((l) => l.includes('"GET /seen HTTP/1.1" 200'));
  t.equal(lines.length, n, 'the log ring has every line, from both workers');

  const text = (await request(remora.ports.admin, '/clusters')).body;
  const h = hostLines(text, cluster, `127.0.0.1:${good.port}`);
  t.equal(h.get('rq_total'), String(n), '/clusters rq_total sums both workers');
  t.equal(h.get('rq_success'), String(n), 'rq_success too');
  t.equal(h.get('rq_error'), '0');
  t.equal(h.get('rq_active'), '0');
  t.ok(Number(h.get('cx_total')) >= 2, `connections from both workers (cx_total ${h.get('cx_total')})`);
  t.equal(h.get('health_flags'), 'healthy');
  const json = (await request(remora.ports.admin, '/clusters?format=json')).json<{ clusters: { name: string; endpoints: { address: string; rq_total: number; rq_success: number }[] }[] }>();
  const ep = json.clusters.find((c) => c.name === cluster)?.endpoints.find((e) => e.address === `127.0.0.1:${good.port}`);
  t.match(ep, { rq_total: n, rq_success: n }, '?format=json the same');
});

t.test('a circuit breaker with max_requests 1 holds across workers: one request in flight, the rest 503 UO', async (t) => {
  const port = await freePort();
  const { remora } = await gatewayWithWorkers(t, { 'mesh.yaml': doc(gateway('gw', port), serviceEntry('slow', 'slow', [{ port: slow.port }]), route('slow', 'slow'), breaker('slow')) });
  const listener = `listener.127.0.0.1_${port}`;
  // Both workers accept before the burst (one connection at a time, each through the breaker alone).
  const warm = { served: [0, 0], tries: 0 };
  while ((warm.served[0] === 0 || warm.served[1] === 0) && warm.tries < 64) {
    warm.tries++;
    t.equal((await request(port, '/?ms=0', { headers: { host: 'x' } })).status, 200, 'a lone request passes the breaker');
    const s = await stats(remora);
    warm.served = [0, 1].map((w) => s.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0);
  }
  t.ok(warm.served[0]! > 0 && warm.served[1]! > 0, `both workers accept connections (${warm.served.join(', ')} after ${warm.tries})`);
  const before = await stats(remora);
  // Sixteen connections at once: the kernel puts them all on one worker with probability 2⁻¹⁵.
  const n = 16;
  const replies = await Promise.all(Array.from({ length: n }, () => request(port, '/?ms=800', { headers: { host: 'x' } })));
  const after = await stats(remora);
  const served = perWorker(before, after, port);
  t.ok(served[0]! > 0 && served[1]! > 0, `the ${n} connections went to both workers (${served.join(', ')})`);
  t.equal(replies.filter((r) => r.status === 200).length, 1, 'one request admitted');
  const refused = replies.filter((r) => r.status === 503);
  t.equal(refused.length, n - 1, 'the others overflow');
  t.ok(refused.every((r) => r.headers['x-envoy-overloaded'] === 'true' || /overflow/.test(r.body)), 'as circuit-breaker overflows');
  const overflow = 'cluster.outbound|80||slow.default.svc.cluster.local.upstream_rq_pending_overflow';
  t.equal((after.get(overflow) ?? 0) - (before.get(overflow) ?? 0), n - 1, 'each overflow counted, summed over workers');
  t.equal(remora.accessLog.filter((l) => / UO /.test(l)).length, n - 1, 'logged with flag UO');
});

t.test('a local rate limit of 5 tokens admits 5 requests in all, whichever worker serves them', async (t) => {
  const port = await freePort();
  const { remora } = await gatewayWithWorkers(t, {
    'mesh.yaml': doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), route('good', 'good'), gatewayLocalRateLimit({ maxTokens: 5, fillInterval: '3600s' })),
  });
  const replies = await many(port, 20, '/', 2);
  const s = await stats(remora);
  const listener = `listener.127.0.0.1_${port}`;
  t.ok((s.get(`${listener}.worker_0.downstream_cx_total`) ?? 0) > 0 && (s.get(`${listener}.worker_1.downstream_cx_total`) ?? 0) > 0, 'both workers served');
  t.equal(replies.filter((r) => r.status === 200).length, 5, 'five admitted in total');
  t.equal(replies.filter((r) => r.status === 429).length, 15, 'the rest limited');
});

t.test('an upstream ejected after one worker saw its 5xx is ejected for every worker', async (t) => {
  const port = await freePort();
  const { remora } = await gatewayWithWorkers(t, {
    'mesh.yaml': doc(gateway('gw', port), serviceEntry('pair', 'pair', [{ port: good.port }, { port: bad.port }]), route('pair', 'pair'), ejector('pair')),
  });
  const cluster = 'cluster.outbound|80||pair.default.svc.cluster.local';
  // One request at a time until the bad host answers once.
  for (let i = 0; i < 20; i++) {
    if ((await request(port, '/', { headers: { host: 'x' } })).status === 500) break;
  }
  await remora.waitFor('the bad host ejected', async () => (await stats(remora)).get(`${cluster}.outlier_detection.ejections_active`) === 1, 5_000);
  await sleep(50);
  const replies = await many(port, 30, '/', 3);
  t.same(new Set(replies.map((r) => r.status)), new Set([200]), 'no worker sends to the ejected host');
  const s = await stats(remora);
  t.equal(s.get(`${cluster}.outlier_detection.ejections_enforced_total`), 1, 'ejected once, for all');
  t.equal(s.get(`${cluster}.membership_healthy`), 1);
  const text = (await request(remora.ports.admin, '/clusters')).body;
  const name = cluster.slice('cluster.'.length);
  const badHost = hostLines(text, name, `127.0.0.1:${bad.port}`);
  const goodHost = hostLines(text, name, `127.0.0.1:${good.port}`);
  t.equal(badHost.get('health_flags'), '/failed_outlier_check', '/clusters marks the ejected host, as the main thread decided');
  t.equal(badHost.get('rq_error'), '1', 'its one 5xx counted by the worker that saw it');
  t.equal(goodHost.get('health_flags'), 'healthy');
  t.equal(Number(goodHost.get('rq_success')), Number(goodHost.get('rq_total')), 'the good host: every try a success');
  t.ok(Number(goodHost.get('rq_total')) >= 30, 'summed over both workers');
});

t.test('a hot reload reaches both workers', async (t) => {
  const port = await freePort();
  const { remora, mesh } = await gatewayWithWorkers(t, { 'mesh.yaml': doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), serviceEntry('bad', 'bad', [{ port: bad.port }]), route('r', 'good')) });
  t.same(new Set((await many(port, 10, '/', 2)).map((r) => r.status)), new Set([200]));
  const listener = `listener.127.0.0.1_${port}`;
  const before = await stats(remora);
  mesh.write('mesh.yaml', doc(gateway('gw', port), serviceEntry('good', 'good', [{ port: good.port }]), serviceEntry('bad', 'bad', [{ port: bad.port }]), route('r', 'bad')));
  await remora.waitFor('the new route served', async () => (await request(port, '/', { headers: { host: 'x' } })).status === 500, 10_000);
  await sleep(100);
  const replies = await many(port, 30, '/', 3);
  const after = await stats(remora);
  const served = [0, 1].map((w) => (after.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0) - (before.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0));
  t.ok(served[0]! > 0 && served[1]! > 0, `both workers served after the reload (${served.join(', ')})`);
  t.same(new Set(replies.map((r) => r.headers['x-backend'])), new Set(['bad']), 'every worker routes by the new config');
});

t.test('SIGTERM with two workers: in-flight requests finish on both, then exit 0', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('slow', 'slow', [{ port: slow.port }]), route('slow', 'slow')) });
  t.teardown(() => mesh.cleanup());
  const remora = await spawnRemora('gateway', [mesh.dir], ['--concurrency', '2', '--drain-time', '5s']);
  t.teardown(() => void remora.stop('SIGKILL'));
  const inFlight = Promise.all(Array.from({ length: 6 }, () => request(port, '/?ms=1000', { headers: { host: 'x' } })));
  await sleep(300);
  remora.child.kill('SIGTERM');
  const replies = await inFlight;
  t.same(replies.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'every in-flight request completed');
  t.ok(replies.every((r) => r.headers.connection === 'close'), 'with Connection: close');
  const { code } = await remora.exited;
  t.equal(code, 0, 'exit status 0');
  t.ok(remora.stderr.some((l) => /2 workers serve/.test(l)), 'the log says two workers served');
});

interface ClustersJson {
  clusters: { name: string; circuit_breakers: Record<'rq_active' | 'rq_pending_active' | 'rq_pending_overflow' | 'rq_retry_active' | 'rq_retry_overflow', number> }[];
}

async function breakerOf(r: InProcessRemora, cluster: string): Promise<ClustersJson['clusters'][number]['circuit_breakers'] | undefined> {
  return (await request(r.ports.admin, '/clusters?format=json')).json<ClustersJson>().clusters.find((c) => c.name === cluster)?.circuit_breakers;
}

/** Connections each worker accepted between two /stats readings. */
function perWorker(before: Map<string, number>, after: Map<string, number>, port: number): number[] {
  const listener = `listener.127.0.0.1_${port}`;
  return [0, 1].map((w) => (after.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0) - (before.get(`${listener}.worker_${w}.downstream_cx_total`) ?? 0));
}

t.test('pending overflows on both workers: /clusters, /stats and /explain report their sum', async (t) => {
  const port = await freePort();
  const limits = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: slow-pending }
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
      http: { http1MaxPendingRequests: 1 }
`;
  const { remora } = await gatewayWithWorkers(t, { 'mesh.yaml': doc(gateway('gw', port), serviceEntry('slow', 'slow', [{ port: slow.port }]), route('slow', 'slow'), limits) });
  const cluster = 'outbound|80||slow.default.svc.cluster.local';
  const before = await stats(remora);
  // All at once, each on its own connection: one goes upstream (1.5 s), one waits, the other
  // 18 overflow at once, in whichever worker took them.
  const n = 20;
  let refused = 0;
  const replies = Promise.all(
    Array.from({ length: n }, () =>
      request(port, '/?ms=1500', { headers: { host: 'x' } }).then((r) => {
        if (r.status === 503) refused++;
        return r;
      }),
    ),
  );
  await remora.waitFor('the overflows answered', () => refused === n - 2, 5_000);
  // While the two admitted requests are still held: one in flight, one waiting, summed over the workers.
  const during = await breakerOf(remora, cluster);
  t.match(during, { rq_active: 1, rq_pending_active: 1, rq_pending_overflow: n - 2 }, '/clusters?format=json: the workers\' counts added up');
  const explained = (
    await request(remora.ports.admin, '/explain', { method: 'POST', body: JSON.stringify({ url: `http://x:${port}/` }), headers: { 'content-type': 'application/json' } })
  ).json<{ clusters: { name: string; circuitBreaker: { rqActive: number; rqPending: number; overflows: number; retryOverflows: number } }[] }>();
  t.same(explained.clusters.find((c) => c.name === cluster)?.circuitBreaker, { rqActive: 1, rqPending: 1, overflows: n - 2, retryOverflows: 0 }, '/explain: the same sum');

  const all = await replies;
  const after = await stats(remora);
  const served = perWorker(before, after, port);
  // At most two requests hold the breaker at any time, so a worker that took three or more
  // connections refused at least one: both workers' counts are in the sums below.
  t.ok(served[0]! >= 3 && served[1]! >= 3, `each worker took at least 3 of the connections, so overflowed (${served.join(', ')})`);
  const uo = all.filter((r) => r.status === 503 && r.headers['x-envoy-overloaded'] === 'true');
  t.equal(all.filter((r) => r.status === 200).length, 2, 'the one in flight and the one waiting are served');
  t.equal(uo.length, n - 2, 'the rest are 503 overflows');
  t.equal(after.get(`cluster.${cluster}.upstream_rq_pending_overflow`), uo.length, '/stats upstream_rq_pending_overflow: the 503s the client saw');
  t.match(await breakerOf(remora, cluster), { rq_active: 0, rq_pending_active: 0, rq_pending_overflow: uo.length }, '/clusters: the same, nothing left in flight');
  const prom = (await request(remora.ports.admin, '/stats/prometheus')).body.split('\n').find((l) => l.startsWith('envoy_cluster_upstream_rq_pending_overflow{') && l.includes(cluster));
  t.equal(Number(prom?.slice(prom.lastIndexOf(' ') + 1)), uo.length, 'Prometheus: the same');
});

t.test('retry overflows on both workers: /clusters, /stats and /explain report their sum', async (t) => {
  // First tries get a 503 after 300 ms; retries a 200 after 300 ms.
  const flaky = await startBackend('flaky', (req, res) => {
    const first = req.headers['x-envoy-attempt-count'] === '1';
    setTimeout(() => {
      res.writeHead(first ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(first ? 'try again' : 'ok');
    }, 300);
  });
  t.teardown(() => flaky.close());
  const port = await freePort();
  const policy = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: flaky-retries }
spec:
  host: flaky
  trafficPolicy:
    connectionPool:
      http: { maxRetries: 1 }
`;
  const { remora } = await gatewayWithWorkers(t, {
    'mesh.yaml': doc(gateway('gw', port), serviceEntry('flaky', 'flaky', [{ port: flaky.port }]), route('flaky', 'flaky', '    retries: { attempts: 1, retryOn: 5xx }\n'), policy),
  });
  const cluster = 'outbound|80||flaky.default.svc.cluster.local';
  const before = await stats(remora);
  // Twelve first tries fail together; one retry at a time fits the budget, the others overflow
  // and their clients get the upstream's 503.
  const n = 12;
  const all = await Promise.all(Array.from({ length: n }, () => request(port, '/', { headers: { host: 'x' } })));
  const after = await stats(remora);
  const served = perWorker(before, after, port);
  t.ok(served[0]! > 0 && served[1]! > 0, `both workers served (${served.join(', ')})`);
  const overflowed = all.filter((r) => r.status === 503).length;
  t.equal(overflowed + all.filter((r) => r.status === 200).length, n, 'every request answered: retried (200) or not (503)');
  t.ok(overflowed >= n / 2, `most retries found no room (${overflowed} of ${n})`);
  t.equal(after.get(`cluster.${cluster}.upstream_rq_retry_overflow`), overflowed, '/stats upstream_rq_retry_overflow: the 503s the client saw');
  t.match(await breakerOf(remora, cluster), { rq_retry_active: 0, rq_retry_overflow: overflowed }, '/clusters?format=json: the same sum');
  const explained = (
    await request(remora.ports.admin, '/explain', { method: 'POST', body: JSON.stringify({ url: `http://x:${port}/` }), headers: { 'content-type': 'application/json' } })
  ).json<{ clusters: { name: string; circuitBreaker: { overflows: number; retryOverflows: number } }[] }>();
  t.match(explained.clusters.find((c) => c.name === cluster)?.circuitBreaker, { overflows: 0, retryOverflows: overflowed }, '/explain: the same sum');
});
