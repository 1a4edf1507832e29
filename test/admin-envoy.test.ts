// Envoy's admin endpoints and stats names, read after real traffic: a user who debugs Envoy
// with /stats, /listeners, /certs, /memory and /server_info finds the same here.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { DevCa } from '@remora/proxy';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let dir: string;
let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let httpsPort: number;
const backends: Backend[] = [];
let flakyCalls = 0;

const vs = (name: string, prefix: string, host: string, extra = ''): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${name}, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: ${prefix} } }]
    route: [{ destination: { host: ${host} } }]
${extra}`;

t.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'remora-admin-envoy-'));
  const ca = await DevCa.create();
  const creds = join(dir, 'credentials');
  const cert = await ca.issueServer({ dnsNames: ['shop.example.com'] });
  mkdirSync(join(creds, 'shop-cert'), { recursive: true });
  writeFileSync(join(creds, 'shop-cert', 'tls.crt'), cert.certChainPem);
  writeFileSync(join(creds, 'shop-cert', 'tls.key'), cert.keyPem);

  // ok: 200, and a stale service time of its own that the proxy must replace.
  const ok = await startBackend('ok', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-envoy-upstream-service-time': '9999' });
    res.end('ok');
  });
  // flaky: every other call is a 503, so one retry turns it into a 200.
  const flaky = await startBackend('flaky', (_req, res) => {
    flakyCalls++;
    res.writeHead(flakyCalls % 2 === 1 ? 503 : 200);
    res.end();
  });
  // bad: always 502, ejected by outlier detection after two.
  const bad = await startBackend('bad', (_req, res) => {
    res.writeHead(502);
    res.end();
  });
  const slow = await startBackend('slow', (_req, res) => {
    setTimeout(() => {
      res.writeHead(200);
      res.end();
    }, 1_000);
  });
  backends.push(ok, flaky, bad, slow);
  port = await freePort();
  httpsPort = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: http, protocol: HTTP }
    hosts: ["*"]
  - port: { number: ${httpsPort}, name: https, protocol: HTTPS }
    hosts: ["shop.example.com"]
    tls: { mode: SIMPLE, credentialName: shop-cert }
`,
      serviceEntry('ok', 'ok.internal', [{ port: ok.port }]),
      serviceEntry('flaky', 'flaky.internal', [{ port: flaky.port }]),
      serviceEntry('bad', 'bad.internal', [{ port: bad.port }]),
      serviceEntry('slow', 'slow.internal', [{ port: slow.port }]),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: bad, namespace: default }
spec:
  host: bad.internal
  trafficPolicy:
    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100 }
`,
      vs('ok', '/ok', 'ok.internal'),
      vs('flaky', '/flaky', 'flaky.internal', '    retries: { attempts: 2, retryOn: 5xx }\n'),
      vs('bad', '/bad', 'bad.internal', '    retries: { attempts: 0 }\n'),
      vs('slow', '/slow', 'slow.internal', '    timeout: 200ms\n    retries: { attempts: 0 }\n'),
    ),
  });
  remora = await startRemora('gateway', [mesh.dir], ['--credentials-dir', creds, '--log-level', 'warning']);
});

t.teardown(async () => {
  await remora.stop();
  for (const b of backends) await b.close();
  mesh.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** `/stats` as a name → value map. */
async function stats(query = ''): Promise<Map<string, number>> {
  const r = await request(remora.ports.admin, `/stats${query}`);
  const out = new Map<string, number>();
  for (const line of r.body.split('\n')) {
    const i = line.lastIndexOf(': ');
    if (i > 0) out.set(line.slice(0, i), Number(line.slice(i + 2)));
  }
  return out;
}

// The test proxies bind 127.0.0.1 (--bind), so their listeners are named by it.
const HCM = (): string => `http.outbound_127.0.0.1_${port}`;
const cluster = (host: string): string => `cluster.outbound|80||${host}`;

t.test('stats after real traffic: connection manager, cluster, listener, server', async (t) => {
  for (let i = 0; i < 3; i++) t.equal((await get(port, '/ok', 'shop')).status, 200);
  t.equal((await get(port, '/flaky', 'shop')).status, 200, 'the retry hides the 503');
  t.equal((await get(port, '/bad', 'shop')).status, 502);
  t.equal((await get(port, '/bad', 'shop')).status, 502);
  // The second 502 ejected the only host: no healthy upstream now.
  const uh = await get(port, '/bad', 'shop');
  t.equal(uh.status, 503);
  t.equal((await get(port, '/slow', 'shop')).status, 504, 'the route timeout');
  t.equal((await get(port, '/nowhere-at-all', 'nohost')).status, 404);

  const s = await stats();
  const h = HCM();
  t.equal(s.get(`${h}.downstream_rq_total`), 9);
  t.equal(s.get(`${h}.downstream_rq_2xx`), 4);
  t.equal(s.get(`${h}.downstream_rq_4xx`), 1);
  t.equal(s.get(`${h}.downstream_rq_5xx`), 4);
  t.equal(s.get(`${h}.downstream_rq_active`), 0);
  t.equal(s.get(`${h}.downstream_cx_total`), 9, 'one connection a request (the test client does not keep them)');
  t.equal(s.get(`${h}.rq_total`), 8, 'the router sent all but the unrouted one to a cluster');
  t.equal(s.get(`${h}.no_route`), 1);

  const ok = cluster('ok.internal');
  t.equal(s.get(`${ok}.upstream_rq_total`), 3);
  t.equal(s.get(`${ok}.upstream_rq_2xx`), 3);
  t.equal(s.get(`${ok}.upstream_rq_200`), 3);
  t.equal(s.get(`${ok}.membership_total`), 1);
  t.equal(s.get(`${ok}.membership_healthy`), 1);
  t.ok((s.get(`${ok}.upstream_cx_total`) ?? 0) >= 1, 'connections to the host are counted');
  for (const g of ['cx_open', 'rq_pending_open', 'rq_open', 'rq_retry_open']) t.equal(s.get(`${ok}.circuit_breakers.default.${g}`), 0, g);

  const flaky = cluster('flaky.internal');
  t.equal(s.get(`${flaky}.upstream_rq_total`), 2, 'the try and its retry');
  t.equal(s.get(`${flaky}.upstream_rq_retry`), 1);
  t.equal(s.get(`${flaky}.upstream_rq_retry_success`), 1);
  t.equal(s.get(`${flaky}.upstream_rq_503`), 1);
  t.equal(s.get(`${flaky}.upstream_rq_5xx`), 1);
  t.equal(s.get(`${flaky}.upstream_rq_2xx`), 1);

  const bad = cluster('bad.internal');
  t.equal(s.get(`${bad}.upstream_rq_total`), 2);
  t.equal(s.get(`${bad}.upstream_rq_502`), 2);
  t.equal(s.get(`${bad}.outlier_detection.ejections_active`), 1);
  t.equal(s.get(`${bad}.outlier_detection.ejections_enforced_total`), 1);
  t.equal(s.get(`${bad}.outlier_detection.ejections_enforced_consecutive_5xx`), 1);
  t.equal(s.get(`${bad}.membership_healthy`), 0, 'the ejected host is not healthy');
  t.equal(s.get(`${bad}.upstream_cx_none_healthy`), 1);

  const slow = cluster('slow.internal');
  t.equal(s.get(`${slow}.upstream_rq_timeout`), 1);
  t.equal(s.get(`${slow}.upstream_rq_504`), 1);

  t.equal(s.get(`listener.127.0.0.1_${port}.downstream_cx_total`), 9);
  t.equal(s.get('server.live'), 1);
  t.equal(s.get('server.state'), 0, 'LIVE');
  t.equal(s.get('server.concurrency'), 1);
  t.ok((s.get('server.uptime') ?? -1) >= 0);
  t.ok((s.get('server.memory_allocated') ?? 0) > 0);
  t.ok((s.get('server.memory_heap_size') ?? 0) >= (s.get('server.memory_allocated') ?? 0), 'the heap holds what is allocated');
  t.ok((s.get('server.version') ?? 0) > 0);
  const names = [...s.keys()];
  t.same(names, [...names].sort(), 'sorted by name, as Envoy prints them');
});

t.test('one x-envoy-upstream-service-time, this hop\'s', async (t) => {
  const r = await new Promise<string[]>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/ok', headers: { host: 'shop' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.rawHeaders));
    });
    req.on('error', reject);
    req.end();
  });
  const values: string[] = [];
  for (let i = 0; i < r.length; i += 2) if (r[i]!.toLowerCase() === 'x-envoy-upstream-service-time') values.push(r[i + 1]!);
  t.equal(values.length, 1);
  t.not(values[0], '9999', 'the upstream\'s own value is replaced');
  t.match(values[0], /^\d+$/);
});

t.test('/stats?format=json, ?type, ?filter, ?usedonly', async (t) => {
  const json = await request(remora.ports.admin, '/stats?format=json');
  t.equal(json.status, 200);
  t.match(json.headers['content-type'], /application\/json/);
  const body = json.json<{ stats: { name: string; value: number }[] }>();
  t.ok(Array.isArray(body.stats) && body.stats.length > 10);
  t.ok(body.stats.every((s) => typeof s.name === 'string' && typeof s.value === 'number'), 'each a name and a number');
  t.ok(body.stats.some((s) => s.name === `${cluster('ok.internal')}.upstream_rq_total` && s.value >= 3));

  const counters = await stats('?type=Counters&filter=^cluster\\.outbound\\|80\\|\\|ok\\.internal\\.');
  t.ok(counters.has(`${cluster('ok.internal')}.upstream_rq_total`));
  t.notOk(counters.has(`${cluster('ok.internal')}.membership_total`), 'gauges are not counters');
  const gauges = await stats('?type=Gauges&filter=ok\\.internal');
  t.ok(gauges.has(`${cluster('ok.internal')}.membership_total`));
  t.notOk(gauges.has(`${cluster('ok.internal')}.upstream_rq_total`));
  t.equal((await stats('?type=Histograms')).size, 0, 'no histograms');

  const used = await stats('?usedonly');
  t.ok(used.has(`${cluster('ok.internal')}.upstream_rq_total`));
  t.notOk(used.has(`${cluster('ok.internal')}.upstream_rq_retry`), 'a counter never written is left out');
  t.ok(used.has('server.live'));

  t.equal((await request(remora.ports.admin, '/stats?format=xml')).status, 400);
  t.equal((await request(remora.ports.admin, '/stats?type=Nope')).status, 400);
  t.equal((await request(remora.ports.admin, '/stats?filter=(')).status, 400);

  const prom = await request(remora.ports.admin, '/stats?format=prometheus');
  t.equal(prom.status, 200);
  t.match(prom.body, /^envoy_server_live\{\} 1$/m);
  t.match(prom.body, new RegExp(`^envoy_http_downstream_rq_total\\{http_conn_manager_prefix="outbound_127\\.0\\.0\\.1_${port}"\\} \\d+$`, 'm'));
  t.match(prom.body, /^remora_nodejs_eventloop_lag_seconds \d/m, "Node's event loop lag");
  t.match(prom.body, /^remora_nodejs_heap_size_used_bytes \d/m);
  t.match(prom.body, /^remora_process_resident_memory_bytes \d/m);
  t.match(prom.body, /^# TYPE remora_nodejs_gc_duration_seconds histogram$/m);
  const scrape = await request(remora.ports.admin, '/stats/prometheus');
  t.match(scrape.body, /^envoy_server_uptime\{\} \d+$/m, 'the same on /stats/prometheus');
});

t.test('POST /reset_counters zeroes counters, keeps gauges, and they stay used', async (t) => {
  t.equal((await request(remora.ports.admin, '/reset_counters')).status, 405, 'GET changes nothing');
  t.ok(((await stats()).get(`${cluster('ok.internal')}.upstream_rq_total`) ?? 0) > 0);
  const r = await request(remora.ports.admin, '/reset_counters', { method: 'POST' });
  t.equal(r.status, 200);
  const s = await stats();
  t.equal(s.get(`${cluster('ok.internal')}.upstream_rq_total`), 0);
  t.equal(s.get(`${HCM()}.downstream_rq_total`), 0);
  t.equal(s.get(`listener.127.0.0.1_${port}.downstream_cx_total`), 0);
  t.equal(s.get(`${cluster('bad.internal')}.outlier_detection.ejections_enforced_total`), 0);
  t.equal(s.get(`${cluster('bad.internal')}.outlier_detection.ejections_active`), 1, 'a gauge is not reset');
  t.equal(s.get(`${cluster('ok.internal')}.membership_total`), 1);
  const used = await stats('?usedonly');
  t.equal(used.get(`${cluster('ok.internal')}.upstream_rq_total`), 0, 'a reset counter is still used');
  t.equal((await get(port, '/ok', 'shop')).status, 200);
  const after = await stats();
  t.equal(after.get(`${cluster('ok.internal')}.upstream_rq_total`), 1, 'counting goes on from zero');
  t.equal(after.get(`${HCM()}.downstream_rq_2xx`), 1);
});

t.test('/listeners as text and JSON', async (t) => {
  const text = await request(remora.ports.admin, '/listeners');
  t.equal(text.status, 200);
  const lines = text.body.trim().split('\n');
  t.ok(lines.some((l) => l.endsWith(`::127.0.0.1:${port}`)), text.body);
  t.ok(lines.every((l) => /^[^:]+(::).+:\d+$/.test(l)), 'name::address:port');
  const json = (await request(remora.ports.admin, '/listeners?format=json')).json<{
    listener_statuses: { name: string; local_address: { socket_address: { address: string; port_value: number } } }[];
  }>();
  const l = json.listener_statuses.find((x) => x.local_address.socket_address.port_value === port);
  t.ok(l, 'the HTTP listener');
  t.equal(l?.local_address.socket_address.address, '127.0.0.1');
  t.ok(json.listener_statuses.some((x) => x.local_address.socket_address.port_value === httpsPort));
});

t.test('/certs shows the gateway certificate with its SANs and expiry', async (t) => {
  const r = await request(remora.ports.admin, '/certs');
  t.equal(r.status, 200);
  const body = r.json<{ certificates: { ca_cert: unknown[]; cert_chain: Record<string, unknown>[] }[] }>();
  const chain = body.certificates.flatMap((c) => c.cert_chain);
  const shop = chain.find((c) => String(c['path']).endsWith(join('shop-cert', 'tls.crt')));
  t.ok(shop, JSON.stringify(body));
  t.same(shop?.['subject_alt_names'], [{ dns: 'shop.example.com' }]);
  t.match(shop?.['serial_number'], /^[0-9a-f]+$/);
  t.match(shop?.['days_until_expiration'], /^\d+$/);
  t.ok(Number(shop?.['days_until_expiration']) > 0);
  t.ok(Date.parse(String(shop?.['valid_from'])) < Date.now());
  t.ok(Date.parse(String(shop?.['expiration_time'])) > Date.now());
});

t.test('/memory, /server_info, /runtime, /ready, /hot_restart_version', async (t) => {
  const mem = (await request(remora.ports.admin, '/memory')).json<Record<string, string>>();
  for (const k of ['allocated', 'heap_size', 'pageheap_unmapped', 'pageheap_free', 'total_thread_cache', 'total_physical_bytes']) {
    t.match(mem[k], /^\d+$/, `${k} as Envoy's uint64 string`);
  }
  t.ok(Number(mem['allocated']) > 0);
  t.ok(Number(mem['total_physical_bytes']) >= Number(mem['allocated']) / 4, 'resident memory is of the same order');

  const info = (await request(remora.ports.admin, '/server_info')).json<Record<string, unknown>>();
  t.equal(info['state'], 'LIVE');
  t.match(info['version'], /^remora\/\d+\.\d+\.\d+/);
  t.match(info['uptime_current_epoch'], /^\d+s$/);
  t.match(info['uptime_all_epochs'], /^\d+s$/);
  t.equal(info['hot_restart_version'], 'disabled');
  t.match(info['node'], { id: /^router~/, cluster: String, metadata: { NAMESPACE: String } }, "Envoy's node, as the bootstrap has it");
  const opts = info['command_line_options'] as Record<string, unknown>;
  t.equal(opts['concurrency'], 1);
  t.equal(opts['mode'], 'Serve');
  t.ok(Array.isArray(opts['args']), "the process's arguments as given");

  t.same((await request(remora.ports.admin, '/runtime')).json(), { entries: {}, layers: [] });
  t.equal((await request(remora.ports.admin, '/runtime_modify', { method: 'POST' })).status, 503);
  t.equal((await request(remora.ports.admin, '/ready')).body, 'LIVE\n');
  t.equal((await request(remora.ports.admin, '/hot_restart_version')).body, 'disabled\n');
  const get405 = await request(remora.ports.admin, '/healthcheck/fail');
  t.equal(get405.status, 405);
  t.match(get405.body, /POST required/);
});

t.test('downstream_cx_active and downstream_rq_active follow open connections and requests', async (t) => {
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.equal((await request(port, '/ok', { headers: { host: 'shop' }, agent })).status, 200);
  const open = await stats();
  t.equal(open.get(`${HCM()}.downstream_cx_active`), 1);
  t.equal(open.get(`listener.127.0.0.1_${port}.downstream_cx_active`), 1);
  agent.destroy();
  await sleep(100);
  const closed = await stats();
  t.equal(closed.get(`${HCM()}.downstream_cx_active`), 0);
  t.equal(closed.get(`listener.127.0.0.1_${port}.downstream_cx_active`), 0);
});
