// DestinationRule resilience with Envoy's semantics, through a real gateway to real
// backends: circuit breaking (503 UO), outlier detection (ejection, return, caps, panic),
// locality failover, the overload guard (503 OM), slow-loris clients, upstream resets.
import { execFile } from 'node:child_process';
import { Agent } from 'node:http';
import { once } from 'node:events';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

/** A backend whose status can be switched by the test. */
async function switchable(name: string): Promise<Backend & { status: number; delayMs: number }> {
  const state = { status: 200, delayMs: 0 };
  const b = await startBackend(name, (_req, res) => {
    setTimeout(() => {
      res.writeHead(state.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name }));
    }, state.delayMs);
  });
  return Object.defineProperties(b, {
    status: { get: () => state.status, set: (v: number) => (state.status = v) },
    delayMs: { get: () => state.delayMs, set: (v: number) => (state.delayMs = v) },
  }) as Backend & { status: number; delayMs: number };
}

const se = (name: string, eps: { port: number; locality?: string }[]) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name} }
spec:
  hosts: [${name}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
${eps.map((e) => `  - { address: 127.0.0.1, ports: { http: ${e.port} }${e.locality ? `, locality: ${e.locality}` : ''} }`).join('\n')}
`;

const dr = (host: string, policy: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ${host} }
spec:
  host: ${host}
  trafficPolicy:
${policy}
`;

const vs = (routes: [string, string][]) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
${routes.map(([prefix, host]) => `  - match: [{ uri: { prefix: /${prefix} } }]\n    route: [{ destination: { host: ${host} } }]\n    retries: { attempts: 0 }`).join('\n')}
`;

async function clusterJson(remora: InProcessRemora, name: string) {
  const r = await request(remora.ports.admin, '/clusters?format=json');
  return r.json<{ clusters: { name: string; panic: boolean; endpoints: { address: string; health: string; rq_total: number }[] }[] }>().clusters.find((c) => c.name === name)!;
}

t.test('circuit breaker: beyond maxConnections 1 + 1 pending, requests get 503 UO at once; then traffic flows', async (t) => {
  const slow = await switchable('slow');
  slow.delayMs = 600;
  const port = await freePort();
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      se('slow', [{ port: slow.port }]),
      dr('slow', `    connectionPool:\n      tcp: { maxConnections: 1 }\n      http: { http1MaxPendingRequests: 1 }`),
      vs([['', 'slow']]),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await slow.close();
    mesh.cleanup();
  });
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      request(port, `/r${i}`, { headers: { host: 'x', 'x-request-id': `cb-${i}` } }).then((r) => ({ status: r.status, at: Date.now() - started, body: r.body })),
    ),
  );
  const ok = results.filter((r) => r.status === 200);
  const uo = results.filter((r) => r.status === 503);
  t.equal(ok.length, 2, 'one in flight and one pending get through');
  t.equal(uo.length, 3, 'the rest overflow');
  for (const r of uo) {
    t.ok(r.at < 300, `overflow answered at once (${r.at} ms)`);
    t.match(r.body, /reset reason: overflow/);
  }
  t.ok(Math.max(...ok.map((r) => r.at)) >= 1100, 'the pending request waited for the first to finish');
  await sleep(20);
  t.equal(remora.accessLog.filter((l) => / 503 UO upstream_reset_before_response_started\{overflow\} /.test(l)).length, 3);
  slow.delayMs = 0;
  for (let i = 0; i < 5; i++) t.equal((await request(port, '/after', { headers: { host: 'x' } })).status, 200, 'after the burst, traffic flows');
  const stats = (await request(remora.ports.admin, '/stats?filter=pending_overflow')).body;
  t.match(stats, /upstream_rq_pending_overflow: 3/);
});

t.test('outlier detection: consecutive 5xx ejects a host, nothing reaches it, it returns after the ejection time', async (t) => {
  const b = [await switchable('a'), await switchable('b'), await switchable('bad')];
  const port = await freePort();
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      se('svc', b.map((x) => ({ port: x.port }))),
      dr('svc', `    loadBalancer: { simple: ROUND_ROBIN }\n    outlierDetection: { consecutive5xxErrors: 3, interval: 100ms, baseEjectionTime: 1s, maxEjectionPercent: 100 }`),
      vs([['', 'svc']]),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    for (const x of b) await x.close();
    mesh.cleanup();
  });
  b[2]!.status = 500;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  // Round robin: every third request reaches the bad host; three of them eject it.
  for (let i = 0; i < 9; i++) await request(port, '/', { agent, headers: { host: 'x' } });
  const cluster = 'outbound|80||svc.default.svc.cluster.local';
  const c = await clusterJson(remora, cluster);
  t.same(c.endpoints.map((e) => e.health), ['healthy', 'healthy', 'failed_outlier_check']);
  const seenBefore = b[2]!.seen.length;
  const ejectedAt = Date.now();
  const during: number[] = [];
  for (let i = 0; i < 12; i++) during.push((await request(port, '/', { agent, headers: { host: 'x' } })).status);
  t.same([...new Set(during)], [200], 'only healthy hosts answer while the bad one is ejected');
  t.equal(b[2]!.seen.length, seenBefore, 'no request reached the ejected host');
  b[2]!.status = 200;
  await waitFor('the host to come back', async () => (await clusterJson(remora, cluster)).endpoints[2]!.health === 'healthy', 3000);
  const back = Date.now() - ejectedAt;
  t.ok(back >= 900, `back after the base ejection time (${back} ms)`);
  for (let i = 0; i < 6; i++) await request(port, '/', { agent, headers: { host: 'x' } });
  t.ok(b[2]!.seen.length > seenBefore, 'it gets traffic again');
  const metrics = (await request(remora.ports.admin, '/stats/prometheus')).body;
  t.match(metrics, new RegExp(`envoy_cluster_outlier_detection_ejections_enforced_total\\{cluster_name="${cluster.replace(/[|.]/g, '\\$&')}"\\} 1`));
});

t.test('maxEjectionPercent caps ejections; below minHealthPercent the cluster panics and routes to all', async (t) => {
  const b = [await switchable('x1'), await switchable('x2'), await switchable('x3')];
  for (const x of b) x.status = 503;
  const port = await freePort();
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      se('capped', b.map((x) => ({ port: x.port }))),
      se('panicky', b.map((x) => ({ port: x.port }))),
      dr('capped', `    loadBalancer: { simple: ROUND_ROBIN }\n    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 30 }`),
      dr('panicky', `    loadBalancer: { simple: ROUND_ROBIN }\n    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100, minHealthPercent: 50 }`),
      vs([
        ['capped', 'capped'],
        ['panicky', 'panicky'],
      ]),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    for (const x of b) await x.close();
    mesh.cleanup();
  });
  for (let i = 0; i < 12; i++) await request(port, '/capped', { headers: { host: 'x' } });
  const capped = await clusterJson(remora, 'outbound|80||capped.default.svc.cluster.local');
  t.equal(capped.endpoints.filter((e) => e.health !== 'healthy').length, 1, 'one ejected (33%) reaches the 30% cap: no second one');
  for (let i = 0; i < 12; i++) await request(port, '/panicky', { headers: { host: 'x' } });
  const p = await clusterJson(remora, 'outbound|80||panicky.default.svc.cluster.local');
  t.ok(p.endpoints.filter((e) => e.health !== 'healthy').length >= 2, 'most hosts ejected');
  t.equal(p.panic, true, 'healthy share under minHealthPercent: panic');
  const before = b.map((x) => x.seen.length);
  for (let i = 0; i < 9; i++) t.equal((await request(port, '/panicky', { headers: { host: 'x' } })).status, 503, 'panic routes anyway (to failing hosts)');
  const after = b.map((x) => x.seen.length);
  t.ok(after.every((n, i) => n > before[i]!), 'every host, ejected or not, gets traffic in panic');
});

t.test('locality: the local zone takes the traffic; when it fails, the failover locality does', async (t) => {
  const local1 = await switchable('local-1');
  const local2 = await switchable('local-2');
  const remote = await switchable('remote');
  const port = await freePort();
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      se('geo', [
        { port: local1.port, locality: 'us-east/zone-a/rack1' },
        { port: local2.port, locality: 'us-east/zone-a/rack2' },
        { port: remote.port, locality: 'eu-west/zone-b/rack1' },
      ]),
      dr('geo', `    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        enabled: true\n        failover: [{ from: us-east, to: eu-west }]\n    outlierDetection: { consecutive5xxErrors: 1, interval: 100ms, baseEjectionTime: 30s, maxEjectionPercent: 100 }`),
      vs([['', 'geo']]),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--locality', 'us-east/zone-a/rack1']);
  t.teardown(async () => {
    await remora.stop();
    for (const x of [local1, local2, remote]) await x.close();
    mesh.cleanup();
  });
  const names = async (n: number) => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await request(port, '/', { headers: { host: 'x' } });
      out.push(r.status === 200 ? r.json<{ name: string }>().name : `status ${r.status}`);
    }
    return out;
  };
  t.same([...new Set(await names(10))], ['local-1'], 'the closest endpoint (same rack) takes all traffic');
  local1.status = 503;
  await names(3);
  t.same([...new Set(await names(10))], ['local-2'], 'same zone, other rack, next');
  local2.status = 503;
  await names(3);
  t.same([...new Set(await names(10))], ['remote'], 'then the failover region');
});

t.test('overload: past the connection limit new requests get 503 OM; below it they pass', async (t) => {
  const ok = await startBackend('ok');
  const port = await freePort();
  const mesh = new MeshDir({ 'm.yaml': doc(gateway('gw', port), se('ok', [{ port: ok.port }]), vs([['', 'ok']])) });
  const remora = await startRemora('gateway', [mesh.dir], ['--overload-max-connections', '2']);
  t.teardown(async () => {
    await remora.stop();
    await ok.close();
    mesh.cleanup();
  });
  const idle = await Promise.all(
    [0, 1].map(
      () =>
        new Promise<import('node:net').Socket>((resolve) => {
          const s = connect(port, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  await sleep(50);
  const r = await request(port, '/', { headers: { host: 'x', 'x-request-id': 'om-1' } });
  t.equal(r.status, 503);
  t.equal(r.body, 'envoy overloaded');
  await sleep(20);
  t.match(remora.accessLog.find((l) => l.includes('"om-1"')) ?? '', /" 503 OM overload_manager /);
  for (const s of idle) s.destroy();
  await sleep(50);
  t.equal((await request(port, '/', { headers: { host: 'x' } })).status, 200, 'under the limit again');
});

t.test('a slow-loris client is cut off at the header timeout; others are served meanwhile', async (t) => {
  const ok = await startBackend('ok');
  const port = await freePort();
  const mesh = new MeshDir({ 'm.yaml': doc(gateway('gw', port), se('ok', [{ port: ok.port }]), vs([['', 'ok']])) });
  const remora = await startRemora('gateway', [mesh.dir], ['--request-headers-timeout', '400ms']);
  t.teardown(async () => {
    await remora.stop();
    await ok.close();
    mesh.cleanup();
  });
  const t0 = Date.now();
  const reply = new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: x\r\nx-slow: '));
    let data = '';
    s.on('data', (c) => (data += c.toString()));
    s.on('close', () => resolve(data));
    // Dribble a byte now and then, never finishing the headers.
    const tick = setInterval(() => s.writable && s.write('a'), 100);
    s.on('close', () => clearInterval(tick));
  });
  t.equal((await request(port, '/', { headers: { host: 'x' } })).status, 200, 'a normal request meanwhile');
  const out = await reply;
  const took = Date.now() - t0;
  t.match(out, /^HTTP\/1\.1 408 /, 'the slow client gets 408');
  t.ok(took >= 350 && took < 2000, `cut off after ${took} ms`);
});

t.test('an upstream that resets mid-response: the client is cut off, the log says UC', async (t) => {
  const broken = await startBackend('broken', (_req, res) => {
    res.writeHead(200, { 'content-length': '100000' });
    res.write('x'.repeat(1000));
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const port = await freePort();
  const mesh = new MeshDir({ 'm.yaml': doc(gateway('gw', port), se('broken', [{ port: broken.port }]), vs([['', 'broken']])) });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await broken.close();
    mesh.cleanup();
  });
  await t.rejects(request(port, '/', { headers: { host: 'x', 'x-request-id': 'reset-1' } }), 'the client sees the stream cut');
  await sleep(50);
  t.match(remora.accessLog.find((l) => l.includes('"reset-1"')) ?? '', /" 200 UC via_upstream /);
  t.equal((await clusterJson(remora, 'outbound|80||broken.default.svc.cluster.local')).endpoints[0]!.health, 'healthy');
});

t.test('an upstream response that cannot be parsed is a protocol error: 502, the log says UPE', async (t) => {
  const garbled = createNetServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.write('HTTP/1.1 2x0 Nonsense\r\n\r\n'));
  });
  garbled.listen(0, '127.0.0.1');
  await once(garbled, 'listening');
  const port = await freePort();
  const mesh = new MeshDir({ 'm.yaml': doc(gateway('gw', port), se('garbled', [{ port: (garbled.address() as AddressInfo).port }]), vs([['', 'garbled']])) });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    garbled.close();
    mesh.cleanup();
  });
  const r = await request(port, '/', { headers: { host: 'x', 'x-request-id': 'upe-1' } });
  t.equal(r.status, 502);
  t.match(r.body, /reset reason: protocol error/);
  await sleep(50);
  t.match(remora.accessLog.find((l) => l.includes('"upe-1"')) ?? '', /" 502 UPE upstream_reset_before_response_started\{protocol_error\} /);
});

t.test('connectionPool.tcp: maxConnectionDuration retires old connections; tcpKeepalive sets the probe timer', async (t) => {
  // Each backend reports the proxy-side port of the connection a request came on.
  const remotePort = (name: string) =>
    startBackend(name, (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(String(req.socket.remotePort));
    });
  const aged = await remotePort('aged');
  const kept = await remotePort('kept');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      se('aged', [{ port: aged.port }]),
      se('kept', [{ port: kept.port }]),
      dr('aged', '    connectionPool:\n      tcp: { maxConnectionDuration: 300ms }'),
      dr('kept', '    connectionPool:\n      tcp: { tcpKeepalive: { time: 300s, interval: 30s, probes: 3 } }'),
      vs([
        ['aged', 'aged'],
        ['kept', 'kept'],
      ]),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await aged.close();
    await kept.close();
    mesh.cleanup();
  });
  const via = async (path: string): Promise<string> => (await request(port, path, { headers: { host: 'x' } })).body;

  const first = await via('/aged/1');
  t.equal(await via('/aged/2'), first, 'a young connection is reused');
  await sleep(450);
  const later = await via('/aged/3');
  t.not(later, first, 'past maxConnectionDuration a new connection is opened');
  t.equal(await via('/aged/4'), later, 'and that one is reused in turn');

  const k1 = await via('/kept/1');
  await sleep(450);
  t.equal(await via('/kept/2'), k1, 'without maxConnectionDuration the connection stays');
  // The kernel's view of the proxy's connection to `kept`: a keepalive timer of about 300 s.
  const ss = await new Promise<string>((resolve) => {
    execFile('ss', ['-tnoH', 'state', 'established', `( sport = :${k1} )`], (_err, stdout) => resolve(stdout));
  });
  t.match(ss, /timer:\(keepalive,(4min5\d|5min)/, `tcpKeepalive.time 300s: ${ss.trim()}`);
});

t.test('retryRemoteLocalities: a retry leaves the locality that failed; without it the retry stays local', async (t) => {
  const local = await switchable('local');
  const remote = await switchable('remote');
  local.status = 503;
  const port = await freePort();
  // Outlier detection is on (locality balancing needs it) but slow to eject, so the failing
  // local host stays in its priority for the whole test.
  const policy = `    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting: { enabled: true }\n    outlierDetection: { consecutive5xxErrors: 1000, interval: 60s, baseEjectionTime: 30s }`;
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      se('geo', [
        { port: local.port, locality: 'us-east/zone-a/rack1' },
        { port: remote.port, locality: 'eu-west/zone-b/rack1' },
      ]),
      dr('geo', policy),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /remote } }]
    route: [{ destination: { host: geo } }]
    retries: { attempts: 1, retryOn: 5xx, retryRemoteLocalities: true }
  - route: [{ destination: { host: geo } }]
    retries: { attempts: 1, retryOn: 5xx }
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--locality', 'us-east/zone-a/rack1']);
  t.teardown(async () => {
    await remora.stop();
    for (const x of [local, remote]) await x.close();
    mesh.cleanup();
  });
  for (let i = 0; i < 5; i++) {
    const r = await request(port, '/remote', { headers: { host: 'x' } });
    t.equal(r.status, 200, 'the retry went to the other region');
    t.equal(r.json<{ name: string }>().name, 'remote');
  }
  const before = remote.seen.length;
  for (let i = 0; i < 5; i++) t.equal((await request(port, '/local', { headers: { host: 'x' } })).status, 503, 'retried in the local zone, which fails again');
  t.equal(remote.seen.length, before, 'without retryRemoteLocalities nothing reached the other region');
});
