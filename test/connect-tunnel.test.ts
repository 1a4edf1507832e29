// HTTP/1.1 CONNECT through `remora envoy` as Envoy terminates it (a connect_matcher route with
// `upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]`): the proxy answers 200 once
// a TCP connection to a host of the route's cluster is up, then carries bytes both ways; or
// forwards it (no connect_config) to a host that answers it, here a second listener. The
// tunnel goes through the router as every request does: no CONNECT route is a 404, a route
// that does not enable CONNECT a 403, a refused connection a 503 UF that outlier detection
// counts (and that a connect-failure retry gets past), a full circuit breaker a 503 UO; the
// access log line says so with Envoy's flags. Real sockets: a TCP echo server, curl.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { spawnEnvoy } from './helpers/bootstrap.ts';
import { request } from './helpers/http.ts';
import { freePorts, waitFor } from './helpers/net.ts';

/** A TCP server that sends back every byte it gets, and ends when the client does. */
async function echoServer(): Promise<{ port: number; server: Server; accepted: () => number }> {
  let accepted = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, accepted: () => accepted };
}

const ACCESS_FORMAT = '%REQ(:METHOD)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT%\n';

const cluster = (name: string, ports: readonly number[], extra = ''): string => `  - name: ${name}
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN${extra}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
${ports.map((p) => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${p} } } }`).join('\n')}
`;

const TERMINATE = 'upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }]';
const connectRoute = (authority: string, action: string): string =>
  `              - match: { connect_matcher: {}, headers: [{ name: ":authority", string_match: { exact: "${authority}" } }] }
                ${action}`;

function hcm(statPrefix: string, logFile: string, upgrades: string, routes: string): string {
  return `      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${statPrefix}
          upgrade_configs: ${upgrades}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${logFile}
              log_format: { text_format_source: { inline_string: ${JSON.stringify(ACCESS_FORMAT)} } }
          route_config:
            name: ${statPrefix}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
${routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
`;
}

interface Setup {
  readonly port: number;
  /** A listener whose connection manager does not enable CONNECT. */
  readonly plainPort: number;
  readonly adminPort: number;
  readonly echo: Awaited<ReturnType<typeof echoServer>>;
  readonly web: number;
  readonly deadPort: number;
  readonly logFile: string;
}

async function start(t: Test): Promise<Setup> {
  const echo = await echoServer();
  const web = createHttpServer((req, res) => res.end(`hello from ${req.url ?? ''}\n`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const [port, plainPort, adminPort, deadPort] = await freePorts(4);
  const dir = mkdtempSync(join(tmpdir(), 'remora-connect-'));
  const logFile = join(dir, 'access.log');
  writeFileSync(logFile, '');
  const routes = [
    connectRoute('echo.test:7', `route: { cluster: echo, ${TERMINATE} }`),
    connectRoute('web.test:80', `route: { cluster: web, ${TERMINATE} }`),
    connectRoute('mixed.test:7', `route: { cluster: mixed, ${TERMINATE} }`),
    connectRoute('retry.test:7', `route: { cluster: retry, ${TERMINATE}, retry_policy: { retry_on: connect-failure, num_retries: 2 } }`),
    connectRoute('limited.test:7', `route: { cluster: limited, ${TERMINATE} }`),
    connectRoute('off.test:7', `route: { cluster: echo, upgrade_configs: [{ upgrade_type: CONNECT, enabled: false }] }`),
    // No CONNECT config of its own: the connection manager enables CONNECT, and it is forwarded.
    connectRoute('twohop.test:7', 'route: { cluster: inner }'),
    connectRoute('nohop.test:7', 'route: { cluster: inner }'),
    '              - match: { prefix: "/" }\n                route: { cluster: web }',
  ].join('\n');
  const plainRoutes = [
    connectRoute('direct.test:7', 'direct_response: { status: 200, body: { inline_string: "never" } }'),
    connectRoute('echo.test:7', `route: { cluster: echo, ${TERMINATE} }`),
    connectRoute('twohop.test:7', `route: { cluster: echo, ${TERMINATE} }`),
  ].join('\n');
  const bootstrap = `node: { id: "router~127.0.0.1~gw-1.default~default.svc.cluster.local", cluster: test }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${adminPort} } }
static_resources:
  listeners:
  - name: connect
    address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
    filter_chains:
    - filters:
${hcm('connect', logFile, '[{ upgrade_type: websocket }, { upgrade_type: CONNECT }]', routes)}
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: ${plainPort} } }
    filter_chains:
    - filters:
${hcm('plain', logFile, '[{ upgrade_type: websocket }]', plainRoutes)}
  clusters:
${cluster('echo', [echo.port])}${cluster('inner', [plainPort!])}${cluster('web', [(web.address() as AddressInfo).port])}${cluster(
    'mixed',
    [echo.port, deadPort!],
    '\n    outlier_detection: { consecutive_5xx: 2, interval: 1s, base_ejection_time: 60s, max_ejection_percent: 100 }',
  )}${cluster('retry', [deadPort!, echo.port])}${cluster('limited', [echo.port], '\n    circuit_breakers: { thresholds: [{ max_requests: 1 }] }')}`;
  const file = join(dir, 'bootstrap.yaml');
  writeFileSync(file, bootstrap);
  const envoy = spawnEnvoy(['-c', file, '-l', 'warning']);
  t.teardown(async () => {
    envoy.child.kill('SIGKILL');
    await envoy.exited;
    web.closeAllConnections();
    web.close();
    echo.server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor('remora envoy serves', async () => (await request(adminPort!, '/ready')).status === 200, 20_000, { output: envoy.err });
  return { port: port!, plainPort: plainPort!, adminPort: adminPort!, echo, web: (web.address() as AddressInfo).port, deadPort: deadPort!, logFile };
}

interface Tunnel {
  /** The status line and headers, as received. */
  readonly head: string;
  readonly status: number;
  readonly socket: Socket;
  /** What came after the head (a refusal's body, or the tunnel's first bytes). */
  rest: Buffer;
}

/** Sends `CONNECT target HTTP/1.1` on a raw socket and reads the response head. */
function connectThrough(port: number, target: string, first = ''): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response head to CONNECT ${target}: ${JSON.stringify(buf.toString('latin1'))}`));
    }, 10_000);
    socket.on('error', reject);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const head = buf.toString('latin1', 0, end);
      resolve({ head, status: Number(head.split(' ')[1]), socket, rest: buf.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\nuser-agent: connect-test\r\n\r\n${first}`);
  });
}

/** Reads from a tunnel until `n` bytes (beyond `rest`) have come. */
function readBytes(tunnel: Tunnel, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = tunnel.rest;
    tunnel.rest = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(got.toString())} came back`)), 5_000);
    const check = (): void => {
      if (got.length < n) return;
      clearTimeout(timer);
      tunnel.socket.off('data', onData);
      tunnel.socket.pause();
      resolve(got.toString());
    };
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      check();
    };
    tunnel.socket.on('data', onData);
    tunnel.socket.resume();
    check();
  });
}

/** Reads a refusal's body until the proxy ends the connection (then closes it). */
function readToEnd(tunnel: Tunnel): Promise<string> {
  return new Promise((resolve) => {
    let got = tunnel.rest;
    tunnel.socket.on('data', (c: Buffer) => (got = Buffer.concat([got, c])));
    tunnel.socket.on('end', () => {
      tunnel.socket.end();
      resolve(got.toString());
    });
    tunnel.socket.resume();
  });
}

function closeTunnel(tunnel: Tunnel): Promise<void> {
  return new Promise((resolve) => {
    tunnel.socket.on('close', () => resolve());
    tunnel.socket.resume();
    tunnel.socket.end();
  });
}

function logLines(s: Setup): string[] {
  return readFileSync(s.logFile, 'utf8').split('\n').filter((l) => l !== '');
}

async function logLine(s: Setup, pattern: RegExp): Promise<string> {
  let found: string | undefined;
  await waitFor(`access log line ${pattern}`, () => (found = logLines(s).find((l) => pattern.test(l))) !== undefined, 5_000);
  return found!;
}

async function health(s: Setup, name: string): Promise<Map<number, string>> {
  const json = (await request(s.adminPort, '/clusters?format=json')).json<{ clusters: { name: string; endpoints: { address: string; health: string }[] }[] }>();
  const c = json.clusters.find((x) => x.name === name);
  if (c === undefined) throw new Error(`${name} missing from /clusters`);
  return new Map(c.endpoints.map((e) => [Number(e.address.slice(e.address.lastIndexOf(':') + 1)), e.health]));
}

t.test('CONNECT through remora envoy', async (t) => {
  const s = await start(t);

  t.test('a terminated CONNECT: 200 once the upstream is up, then bytes both ways, logged 200 with the bytes', async (t) => {
    const before = s.echo.accepted();
    const tunnel = await connectThrough(s.port, 'echo.test:7', 'early ');
    t.equal(tunnel.status, 200, tunnel.head);
    t.match(tunnel.head, /^HTTP\/1\.1 200 OK\r\n/);
    t.notMatch(tunnel.head, /content-length|transfer-encoding/i, 'a 2xx to CONNECT has no body framing');
    t.equal(s.echo.accepted(), before + 1, 'one TCP connection to the cluster host');
    t.equal(await readBytes(tunnel, 6), 'early ', 'bytes sent with the CONNECT head are the tunnel\'s first');
    tunnel.socket.write('ping through the tunnel');
    t.equal(await readBytes(tunnel, 23), 'ping through the tunnel', 'the client\'s bytes reach the host and its answer comes back');
    const big = Buffer.alloc(256 * 1024, 'x');
    tunnel.socket.write(big);
    t.equal((await readBytes(tunnel, big.length)).length, big.length, '256 KiB each way, with back-pressure');
    await closeTunnel(tunnel);
    const line = await logLine(s, /^CONNECT echo\.test:7 200 /);
    const [, , , flags, details, host, rx, tx] = line.split(' ');
    t.equal(details, 'via_upstream');
    t.equal(host, `127.0.0.1:${s.echo.port}`, 'the upstream host is logged');
    t.equal(Number(rx), 6 + 23 + big.length, 'bytes received: everything the client sent through the tunnel');
    t.equal(Number(tx), 6 + 23 + big.length, 'bytes sent: everything the host sent back');
    t.notMatch(flags, /U[FOHC]/, `no upstream failure flag (${flags})`);
  });

  t.test('curl -p through the proxy: an HTTP request inside the tunnel', async (t) => {
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile('curl', ['-sS', '-p', '-x', `http://127.0.0.1:${s.port}`, '--max-time', '10', 'http://web.test:80/inside'], (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr }),
      ),
    );
    t.equal(out.code, 0, out.stderr);
    t.equal(out.stdout, 'hello from /inside\n', 'the web server behind the tunnel answered curl');
    await logLine(s, /^CONNECT web\.test:80 200 /);
  });

  t.test('a forwarded CONNECT: the host answers it (here a second listener that terminates it), its 200 opens the tunnel', async (t) => {
    const tunnel = await connectThrough(s.port, 'twohop.test:7');
    t.equal(tunnel.status, 200, tunnel.head);
    t.notMatch(tunnel.head, /content-length|transfer-encoding/i);
    tunnel.socket.write('two hops');
    t.equal(await readBytes(tunnel, 8), 'two hops', 'through both proxies to the echo host and back');
    await closeTunnel(tunnel);
    t.match(await logLine(s, new RegExp(`^CONNECT twohop\\.test:7 200 [^ ]+ via_upstream 127\\.0\\.0\\.1:${s.plainPort} `)), / 8 8$/, 'the outer hop: to the inner listener, 8 bytes each way');
    t.match(await logLine(s, new RegExp(`^CONNECT twohop\\.test:7 200 [^ ]+ via_upstream 127\\.0\\.0\\.1:${s.echo.port} `)), / 8 8$/, 'the inner hop: terminated, to the echo host');
    const refused = await connectThrough(s.port, 'nohop.test:7');
    t.equal(refused.status, 404, "the host's refusal is relayed");
    await readToEnd(refused);
    t.match(await logLine(s, new RegExp(`^CONNECT nohop\\.test:7 404 - via_upstream 127\\.0\\.0\\.1:${s.plainPort} `)), /./);
  });

  t.test('no CONNECT route: 404 NR, as before; a plain request is still routed', async (t) => {
    const r = await connectThrough(s.port, 'other.test:7');
    t.equal(r.status, 404);
    t.match(r.head, /\r\nconnection: close/i);
    await readToEnd(r);
    t.match(await logLine(s, /^CONNECT other\.test:7 /), /^CONNECT other\.test:7 404 NR route_not_found - /);
    const plain = await request(s.port, '/plain');
    t.equal(plain.body, 'hello from /plain\n', 'GET on the same listener goes to its prefix route');
  });

  t.test('a route that disables CONNECT, and a listener that does not enable it: 403 upgrade_failed', async (t) => {
    const off = await connectThrough(s.port, 'off.test:7');
    t.equal(off.status, 403, 'the route says enabled: false');
    await readToEnd(off);
    t.match(await logLine(s, /^CONNECT off\.test:7 /), /^CONNECT off\.test:7 403 - upgrade_failed - /);
    const direct = await connectThrough(s.plainPort, 'direct.test:7');
    t.equal(direct.status, 403, 'a connect_matcher route on a listener without CONNECT: refused before routing on');
    await readToEnd(direct);
    const routeEnabled = await connectThrough(s.plainPort, 'echo.test:7');
    t.equal(routeEnabled.status, 200, "the route's own CONNECT config enables it where the listener does not");
    routeEnabled.socket.write('x');
    t.equal(await readBytes(routeEnabled, 1), 'x');
    await closeTunnel(routeEnabled);
    const stats = (await request(s.adminPort, '/stats')).body;
    // Remora names a listener's HTTP stats after its address (Istio's stat prefix), whatever the bootstrap says.
    t.match(stats, new RegExp(`http\\.outbound_127\\.0\\.0\\.1_${s.port}\\.downstream_rq_ws_on_non_ws_route: 1\\n`), "Envoy's counter of refused upgrades");
    t.match(stats, new RegExp(`http\\.outbound_127\\.0\\.0\\.1_${s.plainPort}\\.downstream_rq_ws_on_non_ws_route: 1\\n`));
  });

  t.test('upstream down: 503 UF, counted by outlier detection until the host is ejected', async (t) => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await connectThrough(s.port, 'mixed.test:7');
      statuses.push(r.status);
      if (r.status === 200) await closeTunnel(r);
      else {
        t.match(r.head, /^HTTP\/1\.1 503 /);
        t.match(await readToEnd(r), /upstream connect error or disconnect\/reset before headers\. reset reason: connection failure, transport failure reason: ECONNREFUSED/);
      }
    }
    t.ok(statuses.includes(503) && statuses.includes(200), `round robin reached both hosts (${statuses.join(' ')})`);
    const line = await logLine(s, /^CONNECT mixed\.test:7 503 /);
    t.match(line, new RegExp(`^CONNECT mixed\\.test:7 503 UF upstream_reset_before_response_started\\{connection_failure\\} 127\\.0\\.0\\.1:${s.deadPort} `));
    await waitFor('the refusing host ejected', async () => (await health(s, 'mixed')).get(s.deadPort) === 'failed_outlier_check', 5_000);
    t.equal((await health(s, 'mixed')).get(s.echo.port), 'healthy', 'the echo host stays in');
    const after: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await connectThrough(s.port, 'mixed.test:7');
      after.push(r.status);
      if (r.status === 200) await closeTunnel(r);
    }
    t.same(after, [200, 200, 200, 200], 'with the refusing host out, every CONNECT is tunnelled');
  });

  t.test('a connect-failure retry goes to another host', async (t) => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await connectThrough(s.port, 'retry.test:7');
      statuses.push(r.status);
      if (r.status === 200) {
        r.socket.write('r');
        t.equal(await readBytes(r, 1), 'r');
        await closeTunnel(r);
      }
    }
    t.same(statuses, [200, 200, 200, 200], 'a refused try is retried on the echo host');
    const stats = (await request(s.adminPort, '/stats')).body;
    t.match(stats, /cluster\.retry\.upstream_rq_retry: [1-9]/, 'the retries are counted');
  });

  t.test('circuit breaker full: 503 UO while a tunnel holds the one request slot, 200 again once it closes', async (t) => {
    const held = await connectThrough(s.port, 'limited.test:7');
    t.equal(held.status, 200);
    const over = await connectThrough(s.port, 'limited.test:7');
    t.equal(over.status, 503);
    t.match(over.head, /\r\nx-envoy-overloaded: true/i);
    t.match(await readToEnd(over), /overflow/);
    t.match(await logLine(s, /^CONNECT limited\.test:7 503 /), /^CONNECT limited\.test:7 503 UO upstream_reset_before_response_started\{overflow\} - /);
    await closeTunnel(held);
    await logLine(s, /^CONNECT limited\.test:7 200 /);
    const again = await connectThrough(s.port, 'limited.test:7');
    t.equal(again.status, 200, 'the slot came back when the tunnel closed');
    await closeTunnel(again);
  });
});
