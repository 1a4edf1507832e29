// The captured pod's data plane: Remora's runtime in a pod network namespace as UID 1337, the
// pod's traffic sent to it by docker/iptables.sh (REDIRECT), and each connection served by
// the listener for its original destination, read from conntrack (as Envoy under istiod:
// virtualOutbound / virtualInbound hand connections to `0.0.0.0_9080`, `10.96.0.11_6379`, the
// inbound per-port chains, else to their passthrough chains). The config is written by hand
// (helpers/pod.ts), so this tests the runtime alone. Upstreams run in the root namespace on
// the veth's far end; the app's processes run in the pod as UID 1000.
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import t from 'tap';
import type { ProxyConfig } from '@remora/config';
import { AccessLog, detectProtocol, IstioMetrics, Loggers, Runtime } from '@remora/proxy';
import { freePorts, sleep, waitFor } from './helpers/net.ts';
import { APP_USER, BLACKHOLE, POD_NODE, CapturePod, cluster, endpoint, INBOUND_PASSTHROUGH, listener, PASSTHROUGH, preparePod, routeTo, tcpTo } from './helpers/pod.ts';

// --- no privileges needed -------------------------------------------------------------------

t.test('protocol detection tells HTTP/1, HTTP/2, TLS and other bytes apart from the first bytes', async (t) => {
  const b = (s: string): Buffer => Buffer.from(s, 'latin1');
  t.equal(detectProtocol(b('GET /x HTTP/1.1\r\nhost: a\r\n\r\n')), 'http', 'an HTTP/1.1 request line');
  t.equal(detectProtocol(b('M-SEARCH * HTTP/1.0\r\n')), 'http');
  t.equal(detectProtocol(b('GET /x HT')), null, 'a request line cut short: more bytes needed');
  t.equal(detectProtocol(b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), 'http', 'the HTTP/2 preface');
  t.equal(detectProtocol(b('PRI * HT')), null);
  t.equal(detectProtocol(b('SET k v\r\n')), 'tcp', 'Redis inline command with spaces is not HTTP');
  t.equal(detectProtocol(b('*1\r\n$4\r\nPING\r\n')), 'tcp', 'RESP');
  t.equal(detectProtocol(b('GET /x SMTP/1.1\r\n')), 'tcp');
  t.equal(detectProtocol(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01])), null, 'a partial ClientHello: more bytes needed');
  t.equal(detectProtocol(Buffer.from([0x16, 0x00, 0x00, 0x00, 0x00, 0x00])), 'tcp', 'a 0x16 byte that starts no TLS record');
});

t.test('an HTTP request routed to an ORIGINAL_DST cluster on a connection that was not redirected: 503 UH', async (t) => {
  const [port] = await freePorts(1);
  const log: string[] = [];
  const rt = new Runtime({
    node: POD_NODE,
    loggers: new Loggers('error'),
    accessLog: new AccessLog('json', (c) => void log.push(...c.trim().split('\n'))),
    metrics: new IstioMetrics(),
  });
  t.teardown(() => rt.close());
  await rt.apply({
    version: 'v1',
    node: POD_NODE,
    listeners: [listener('127.0.0.1_x', '127.0.0.1', port!, 'outbound', 'r')],
    routeConfigs: [routeTo('r', 'PassthroughCluster')],
    clusters: [PASSTHROUGH],
  });
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/p', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 503);
  await waitFor('access log', () => log.length > 0, 2_000);
  const line = JSON.parse(log[0]!) as { response_flags: string; upstream_cluster: string };
  t.equal(line.response_flags, 'UH', 'no healthy upstream: there is no original destination to go to');
  t.equal(line.upstream_cluster, 'PassthroughCluster');
});

// --- in a pod -------------------------------------------------------------------------------

const { skip, pod: maybePod } = await preparePod();

const VIP_HTTP = '10.96.0.10';
const VIP_REDIS = '10.96.0.11';
const VIP_DETECT = '10.96.0.12';
const APP_PORTS = [8080, 8081, 8082];

/** The app: one HTTP server per port, answering with the port and the peer it saw. */
const APP_JS = `
const { createServer } = require('node:http');
let up = 0;
for (const port of ${JSON.stringify(APP_PORTS)}) {
  createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ app: port, url: req.url, remote: req.socket.remoteAddress }));
  }).listen(port, '0.0.0.0', () => { if (++up === ${APP_PORTS.length}) console.log('app listening'); });
}
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/**
 * A client in the pod, as the app would connect. `http URL`: prints {status, body} or {error}.
 * `tcp HOST PORT SEND MS`: connects, sends SEND (when not '-'), prints what came back within
 * MS and whether the proxy closed the connection.
 */
const CLIENT_JS = `
const [mode, ...args] = process.argv.slice(2);
if (mode === 'http') {
  const u = new URL(args[0]);
  const req = require('node:http').request({ host: u.hostname, port: u.port, path: u.pathname, agent: false, timeout: 5000 }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c) => (body += c));
    res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => console.log(JSON.stringify({ error: e.code || e.message })));
  req.end();
} else {
  const [host, port, send, ms] = args;
  const s = require('node:net').connect(Number(port), host);
  let data = '';
  let closed = false;
  s.setEncoding('utf8');
  s.on('data', (c) => (data += c));
  s.on('error', (e) => { closed = true; });
  s.on('close', () => { closed = true; });
  s.on('connect', () => { if (send !== '-') s.write(send.replace(/\\\\r\\\\n/g, '\\r\\n')); });
  setTimeout(() => { console.log(JSON.stringify({ data, closed })); process.exit(0); }, Number(ms));
}
`;

interface Echo {
  readonly name?: string;
  readonly app?: number;
  readonly url: string;
  readonly remote: string;
}

t.test('a captured pod: connections served by the listener of their original destination', { skip }, async (t) => {
  const pod = maybePod!;
  const servers: Array<Server | TcpServer> = [];
  let capture: CapturePod | null = null;
  let redis: ChildProcess | null = null;
  t.teardown(async () => {
    await capture?.stop();
    await pod.destroy();
    redis?.kill('SIGKILL');
    for (const s of servers) {
      if ('closeAllConnections' in s) s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  });
  // Wires the veth first: the upstreams listen on the root side of it.
  await pod.wire(['10.96.0.0/16']);
  const listen = async <S extends Server | TcpServer>(s: S): Promise<number> => {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, pod.hostIp, r));
    return (s.address() as AddressInfo).port;
  };

  // reviews: an HTTP service with a VIP.
  const reviewsPort = await listen(
    createHttpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: 'reviews', url: req.url, remote: req.socket.remoteAddress }));
    }),
  );
  // An address no service declares: reached through PassthroughCluster. Counts connections.
  let outsideConnections = 0;
  const outside = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: 'outside', url: req.url, remote: req.socket.remoteAddress }));
  });
  outside.on('connection', () => outsideConnections++);
  const outsidePort = await listen(outside);
  // A server-first protocol: it greets before the client says anything.
  const greeterPort = await listen(
    createTcpServer((s) => {
      s.write('220 greeter ready\r\n');
      s.on('data', (d) => s.write(`echo ${d.toString()}`));
      s.on('error', () => {});
    }),
  );
  // A real Redis.
  const [redisPort] = await freePorts(1);
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', pod.hostIp, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
  await waitFor('redis-server up', () =>
    new Promise<boolean>((resolve) => {
      const c = connect(redisPort!, pod.hostIp);
      c.on('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    }),
  10_000);

  const config = (catchAll: 'PassthroughCluster' | 'BlackHoleCluster'): ProxyConfig => ({
    version: `capture-${catchAll}`,
    node: POD_NODE,
    listeners: [
      listener('virtualOutbound', '0.0.0.0', 15001, 'outbound', 'outbound-9080', { useOriginalDst: true, catchAll: [tcpTo(catchAll)] }),
      listener('virtualInbound', '0.0.0.0', 15006, 'inbound', 'inbound-8080', { useOriginalDst: true, catchAll: [tcpTo('InboundPassthroughCluster')] }),
      listener('0.0.0.0_9080', '0.0.0.0', 9080, 'outbound', 'outbound-9080', { bindToPort: false }),
      listener(`${VIP_REDIS}_6379`, VIP_REDIS, 6379, 'outbound', '', { bindToPort: false, tcpProxy: [tcpTo('outbound|6379||redis.default.svc.cluster.local')] }),
      listener('0.0.0.0_3306', '0.0.0.0', 3306, 'outbound', 'outbound-3306', {
        bindToPort: false,
        detectProtocol: { tcp: [tcpTo('outbound|3306||greeter.default.svc.cluster.local')], timeoutMs: 200 },
      }),
      listener('inbound|8080', '0.0.0.0', 15006, 'inbound', 'inbound-8080', { bindToPort: false, destinationPort: 8080 }),
      listener('inbound|8081', '0.0.0.0', 15006, 'inbound', 'inbound-8081', { bindToPort: false, destinationPort: 8081 }),
    ],
    routeConfigs: [routeTo('outbound-9080', 'outbound|9080||reviews.default.svc.cluster.local'), routeTo('outbound-3306', 'outbound|9080||reviews.default.svc.cluster.local'), routeTo('inbound-8080', 'inbound|8080||'), routeTo('inbound-8081', 'inbound|8081||')],
    clusters: [
      cluster('outbound|9080||reviews.default.svc.cluster.local', [endpoint(pod.hostIp, reviewsPort)]),
      cluster('outbound|6379||redis.default.svc.cluster.local', [endpoint(pod.hostIp, redisPort!)], { protocol: 'tcp' }),
      cluster('outbound|3306||greeter.default.svc.cluster.local', [endpoint(pod.hostIp, greeterPort)], { protocol: 'tcp' }),
      cluster('inbound|8080||', [endpoint('127.0.0.1', 8080)]),
      cluster('inbound|8081||', [endpoint('127.0.0.1', 8081)]),
      PASSTHROUGH,
      INBOUND_PASSTHROUGH,
      BLACKHOLE,
    ],
  });

  capture = await CapturePod.start(pod, config('PassthroughCluster'), { wired: true });
  const cp = capture;
  const appJs = cp.write('app.cjs', APP_JS);
  const clientJs = cp.write('client.cjs', CLIENT_JS);
  const app = pod.spawn([process.execPath, appJs], { user: APP_USER });
  t.teardown(() => app.stop());
  await waitFor('app listening', () => app.stdout.some((l) => l.includes('app listening')), 10_000, { output: app.stderr });

  const podHttp = async (url: string): Promise<{ status?: number; body?: string; error?: string }> =>
    JSON.parse((await pod.execOk([process.execPath, clientJs, 'http', url], { user: APP_USER, timeoutMs: 15_000 })).trim()) as { status?: number; body?: string; error?: string };
  const podTcp = async (host: string, port: number, send: string, ms: number): Promise<{ data: string; closed: boolean }> =>
    JSON.parse((await pod.execOk([process.execPath, clientJs, 'tcp', host, String(port), send, String(ms)], { user: APP_USER, timeoutMs: 15_000 })).trim()) as { data: string; closed: boolean };
  const rootHttp = (host: string, port: number, path: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = httpRequest({ host, port, path, agent: false, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end();
    });

  t.test('outbound HTTP to a VIP:9080 is handed to 0.0.0.0_9080 and routed', async (t) => {
    const before = await cp.stats();
    const r = await podHttp(`http://${VIP_HTTP}:9080/hello`);
    t.equal(r.status, 200, r.error ?? '');
    const echo = JSON.parse(r.body!) as Echo;
    t.equal(echo.name, 'reviews');
    t.equal(echo.remote, pod.podIp, 'the upstream’s peer is the pod');
    const line = await cp.logged('/hello', (l) => l.path === '/hello');
    t.equal(line.upstream_cluster, 'outbound|9080||reviews.default.svc.cluster.local');
    t.equal(line.downstream_local_address, `${VIP_HTTP}:9080`, 'the downstream local address is the original destination');
    const after = await cp.stats();
    t.equal(after.listeners['0.0.0.0_9080']! - before.listeners['0.0.0.0_9080']!, 1, 'counted on the listener it was handed to');
    t.equal(after.listeners.virtualOutbound, before.listeners.virtualOutbound, 'not on the capture listener');
  });

  t.test('TCP to a VIP:6379 is handed to its tcpProxy listener and reaches a real Redis', async (t) => {
    const r = await pod.exec(['redis-cli', '-h', VIP_REDIS, '-p', '6379', 'PING'], { user: APP_USER, timeoutMs: 10_000 });
    t.equal(r.stdout.trim(), 'PONG', `${r.stdout} ${r.stderr}`);
    const line = await cp.logged('redis tunnel', (l) => l.upstream_cluster === 'outbound|6379||redis.default.svc.cluster.local');
    t.equal(line.downstream_local_address, `${VIP_REDIS}:6379`);
    t.equal(line.upstream_host, `${pod.hostIp}:${redisPort}`);
    t.equal(line.response_flags, '-');
  });

  t.test('an unregistered destination goes through PassthroughCluster to where the app sent it, once', async (t) => {
    const before = outsideConnections;
    const r = await podHttp(`http://${pod.hostIp}:${outsidePort}/outside`);
    t.equal(r.status, 200, r.error ?? '');
    t.equal((JSON.parse(r.body!) as Echo).name, 'outside');
    const line = await cp.logged('passthrough', (l) => l.upstream_cluster === 'PassthroughCluster');
    t.equal(line.upstream_host, `${pod.hostIp}:${outsidePort}`, 'ORIGINAL_DST: the original destination is the host');
    t.equal(line.downstream_local_address, `${pod.hostIp}:${outsidePort}`);
    await sleep(300);
    t.equal(outsideConnections - before, 1, 'one connection reached it: the proxy’s own (UID 1337) was not captured again');
    t.equal(cp.accessLog().filter((l) => l.upstream_cluster === 'PassthroughCluster').length, 1, 'one access log line');
    const stats = await cp.stats();
    t.ok(stats.clusters.PassthroughCluster!.upstream_cx_total >= 1, 'PassthroughCluster counts its upstream connections');
  });

  t.test('a server-first protocol on a protocol-detection port: the server’s greeting comes through', async (t) => {
    const r = await podTcp(VIP_DETECT, 3306, '-', 1_500);
    t.match(r.data, /^220 greeter ready\r\n/, 'greeting relayed though the client sent nothing');
    const talk = await podTcp(VIP_DETECT, 3306, 'HELO x\\r\\n', 1_000);
    t.match(talk.data, /echo HELO x/, 'non-HTTP bytes go to the TCP route');
    const http = await podHttp(`http://${VIP_DETECT}:3306/detected`);
    t.equal(http.status, 200, http.error ?? '');
    t.equal((JSON.parse(http.body!) as Echo).name, 'reviews', 'an HTTP request line goes to the connection manager');
    const line = await cp.logged('/detected', (l) => l.path === '/detected');
    t.equal(line.downstream_local_address, `${VIP_DETECT}:3306`);
  });

  t.test('inbound: two app ports by destination port, an undeclared one through InboundPassthroughCluster from 127.0.0.6', async (t) => {
    for (const port of [8080, 8081]) {
      const r = await rootHttp(pod.podIp, port, `/in-${port}`);
      t.equal(r.status, 200, `${r.body} ${JSON.stringify(cp.accessLog().slice(-2))} ${cp.proxy.stderr.slice(-5).join(' ')}`);
      const echo = JSON.parse(r.body) as Echo;
      t.equal(echo.app, port, `port ${port} reached the app’s ${port}`);
      t.equal(echo.remote, '127.0.0.1', 'through the proxy');
      const line = await cp.logged(`/in-${port}`, (l) => l.path === `/in-${port}`);
      t.equal(line.upstream_cluster, `inbound|${port}||`);
      t.equal(line.downstream_local_address, `${pod.podIp}:${port}`);
    }
    const r = await rootHttp(pod.podIp, 8082, '/in-8082');
    t.equal(r.status, 200);
    const echo = JSON.parse(r.body) as Echo;
    t.equal(echo.app, 8082);
    t.equal(echo.remote, '127.0.0.6', 'InboundPassthroughCluster binds 127.0.0.6 (let through by the pod’s rules)');
    const line = await cp.logged('inbound passthrough', (l) => l.upstream_cluster === 'InboundPassthroughCluster');
    t.equal(line.upstream_host, `${pod.podIp}:8082`);
  });

  t.test('a connection to the capture port itself is closed, not looped', async (t) => {
    const r = await podTcp('10.96.0.99', 15001, 'GET / HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n', 1_000);
    t.equal(r.data, '', 'nothing served');
    t.ok(r.closed, 'closed by the proxy');
    const line = await cp.logged('blackholed loop', (l) => l.downstream_local_address === '10.96.0.99:15001');
    t.equal(line.response_flags, 'UH');
  });

  t.test('under a BlackHoleCluster catch-all (REGISTRY_ONLY) an unregistered destination is closed', async (t) => {
    await cp.apply(config('BlackHoleCluster'));
    const before = outsideConnections;
    const r = await podTcp(pod.hostIp, outsidePort, 'GET /bh HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n', 1_000);
    t.equal(r.data, '');
    t.ok(r.closed, 'closed');
    t.equal(outsideConnections, before, 'nothing reached the destination');
    const line = await cp.logged('blackhole', (l) => l.upstream_cluster === 'BlackHoleCluster');
    t.equal(line.response_flags, 'UH');
    const ok = await podHttp(`http://${VIP_HTTP}:9080/after`);
    t.equal(ok.status, 200, 'registered services still served');
  });
});
