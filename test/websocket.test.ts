// HTTP/1.1 Upgrade through the gateway, with a real `ws` server and client: routed like any
// request, tunnelled byte for byte after the upstream's 101, counted and logged at the end.
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const APP_CLUSTER = 'outbound|80||app.default.svc.cluster.local';

interface WsBackend {
  readonly port: number;
  /** Headers of every upgrade request seen, newest last. */
  readonly upgrades: IncomingHttpHeaders[];
  /** Close code and reason of each server-side WebSocket, as they close. */
  readonly closes: { code: number; reason: string }[];
  /** Raw sockets of refused upgrades, kept open by the server. */
  readonly refused: Socket[];
  /** How many of those the proxy closed (FIN seen). */
  readonly refusedClosedByProxy: () => number;
  readonly server: Server;
  close(): Promise<void>;
}

/**
 * A WebSocket echo server (text and binary; `close-me` makes it close with 4001 "bye";
 * subprotocol `chat.v1` is accepted), plus: `/refuse-chunked` and `/refuse-cl` answer 403
 * and keep the connection open, `Upgrade: echo-proto` is a raw echo protocol that ends when
 * the client ends, and plain requests get their headers back as JSON.
 */
async function startWsBackend(): Promise<WsBackend> {
  const upgrades: IncomingHttpHeaders[] = [];
  const closes: { code: number; reason: string }[] = [];
  const refused: Socket[] = [];
  let refusedEnded = 0;
  const keepOpen = (socket: Socket): void => {
    refused.push(socket);
    socket.on('end', () => {
      refusedEnded++;
      socket.end();
    });
    socket.resume();
  };
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: req.url, headers: req.headers }));
  });
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => (protocols.has('chat.v1') ? 'chat.v1' : false),
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    upgrades.push(req.headers);
    if (req.url === '/refuse-chunked') {
      keepOpen(socket);
      socket.write('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n');
      return;
    }
    if (req.url === '/slow') {
      keepOpen(socket); // never answers
      return;
    }
    if (req.url === '/refuse-cl') {
      keepOpen(socket);
      socket.write('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nnope!\n');
      return;
    }
    if (req.headers.upgrade === 'echo-proto') {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.on('data', (c: Buffer) => socket.write(c));
      // The client half-closed: say goodbye, then end our side too.
      socket.on('end', () => socket.end('bye\n'));
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  wss.on('connection', (ws: WebSocket) => {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary && data.toString() === 'close-me') ws.close(4001, 'bye');
      else ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code: number, reason: Buffer) => closes.push({ code, reason: reason.toString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    upgrades,
    closes,
    refused,
    refusedClosedByProxy: () => refusedEnded,
    server,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      for (const s of refused) s.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

interface Setup {
  readonly port: number;
  readonly remora: InProcessRemora;
  readonly backend: WsBackend;
  readonly deadPort: number;
}

async function setup(t: Test): Promise<Setup> {
  const backend = await startWsBackend();
  const deadPort = await freePort();
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: backend.port }]),
      serviceEntry('dead', 'dead', [{ port: deadPort }]),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: empty, namespace: default }
spec:
  hosts: ["empty"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints: []
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["app.example"]
  gateways: [gw]
  http:
  - name: dead
    match: [{ uri: { prefix: /dead } }]
    route: [{ destination: { host: dead } }]
  - name: empty
    match: [{ uri: { prefix: /empty } }]
    route: [{ destination: { host: empty } }]
  - name: slow
    match: [{ uri: { exact: /slow } }]
    timeout: 0.2s
    route: [{ destination: { host: app } }]
  - name: rewritten
    match: [{ uri: { prefix: /old } }]
    rewrite: { uri: /new }
    route: [{ destination: { host: app } }]
  - name: ws
    headers:
      request: { set: { x-route: ws }, remove: [x-secret] }
      response: { set: { x-route-resp: ws } }
    route:
    - destination: { host: app }
      headers: { request: { add: { x-dest: app } } }
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--access-log-format', 'json']);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  return { port, remora, backend, deadPort };
}

/** A client through the gateway with `Host: app.example`; resolves once open. */
async function openWs(port: number, path: string, opts: { protocols?: string[]; headers?: Record<string, string> } = {}): Promise<{ ws: WebSocket; res: IncomingMessage; inbox: Inbox }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, opts.protocols ?? [], {
    headers: { host: 'app.example', ...opts.headers },
    handshakeTimeout: 5_000,
  });
  const inbox = new Inbox(ws);
  let res: IncomingMessage | null = null;
  ws.once('upgrade', (r: IncomingMessage) => (res = r));
  // 'open' follows 'upgrade' synchronously; `once` rejects on 'error'.
  await once(ws, 'open');
  return { ws, res: res!, inbox };
}

/** Messages of a client in arrival order, awaited one by one. */
class Inbox {
  readonly #queue: { data: Buffer; isBinary: boolean }[] = [];
  readonly #waiters: ((m: { data: Buffer; isBinary: boolean }) => void)[] = [];
  constructor(ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const m = { data, isBinary };
      const w = this.#waiters.shift();
      if (w) w(m);
      else this.#queue.push(m);
    });
  }
  next(timeoutMs = 5_000): Promise<{ data: Buffer; isBinary: boolean }> {
    const m = this.#queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within timeout')), timeoutMs);
      this.#waiters.push((x) => {
        clearTimeout(timer);
        resolve(x);
      });
    });
  }
}

/** A handshake the proxy or upstream refuses: status, headers and body of the response. */
function refusedUpgrade(port: number, path: string, host = 'app.example'): Promise<{ status: number; headers: IncomingHttpHeaders; body: string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers: { host }, handshakeTimeout: 5_000 });
    ws.on('error', reject);
    ws.on('open', () => reject(new Error(`upgrade of ${path} unexpectedly succeeded`)));
    ws.on('unexpected-response', (req, res: IncomingMessage) => {
      const socket = req.socket;
      const closed = socket === null || socket.destroyed ? Promise.resolve() : once(socket, 'close').then(() => undefined);
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), closed }));
      res.on('error', reject);
    });
  });
}

type LogEntry = Record<string, unknown>;

async function logEntry(remora: InProcessRemora, match: (e: LogEntry) => boolean): Promise<LogEntry> {
  let found: LogEntry | undefined;
  await waitFor('access log line', () => {
    found = remora.accessLog.map((l) => JSON.parse(l) as LogEntry).find(match);
    return found !== undefined;
  });
  return found!;
}

async function rqActive(remora: InProcessRemora, backendPort: number): Promise<number> {
  const json = (await request(remora.ports.admin, '/clusters?format=json')).json<{ clusters: { name: string; endpoints: { address: string; rq_active: number }[] }[] }>();
  const ep = json.clusters.find((c) => c.name === APP_CLUSTER)?.endpoints.find((e) => e.address === `127.0.0.1:${backendPort}`);
  if (ep === undefined) throw new Error('app endpoint missing from /clusters');
  return ep.rq_active;
}

t.test('text and binary frames are echoed both ways, in order, large ones whole', async (t) => {
  const { port } = await setup(t);
  const { ws, inbox } = await openWs(port, '/echo');
  t.teardown(() => ws.terminate());

  ws.send('hello');
  t.same(await inbox.next(), { data: Buffer.from('hello'), isBinary: false }, 'text frame echoed as text');
  const bin = Buffer.from([0, 1, 2, 253, 254, 255]);
  ws.send(bin);
  t.same(await inbox.next(), { data: bin, isBinary: true }, 'binary frame echoed as binary');

  for (let i = 0; i < 100; i++) ws.send(`m${i}`);
  const got: string[] = [];
  for (let i = 0; i < 100; i++) got.push((await inbox.next()).data.toString());
  t.same(got, Array.from({ length: 100 }, (_, i) => `m${i}`), '100 messages arrive in order');

  const big = randomBytes(1024 * 1024);
  ws.send(big);
  const echoed = await inbox.next(10_000);
  t.equal(echoed.data.length, big.length, '1 MiB message arrives whole');
  t.ok(echoed.data.equals(big), '1 MiB message arrives unchanged');
});

t.test('the subprotocol offer reaches the upstream and its choice reaches the client', async (t) => {
  const { port, backend } = await setup(t);
  const { ws, res } = await openWs(port, '/chat', { protocols: ['chat.v2', 'chat.v1'] });
  t.teardown(() => ws.terminate());
  t.equal(ws.protocol, 'chat.v1');
  t.equal(res.headers['sec-websocket-protocol'], 'chat.v1');
  t.equal(backend.upgrades.at(-1)?.['sec-websocket-protocol'], 'chat.v2,chat.v1', 'the offer travels as the client wrote it');
});

t.test('route and destination header edits and x-request-id reach the upstream upgrade request', async (t) => {
  const { port, backend } = await setup(t);
  const { ws, res } = await openWs(port, '/edits', { headers: { 'x-request-id': 'ws-req-1', 'x-secret': 's3cr3t', 'x-forwarded-for': '10.9.8.7' } });
  t.teardown(() => ws.terminate());
  const h = backend.upgrades.at(-1)!;
  t.equal(h['x-request-id'], 'ws-req-1');
  t.equal(h['x-route'], 'ws', 'route-level set');
  t.equal(h['x-dest'], 'app', 'destination-level add');
  t.equal(h['x-secret'], undefined, 'route-level remove');
  t.equal(h['x-forwarded-for'], '10.9.8.7, 127.0.0.1', 'the gateway appends the peer');
  t.equal(h['x-forwarded-proto'], 'http');
  t.equal(h['x-envoy-attempt-count'], '1');
  t.equal(h.host, 'app.example');
  t.match(String(h.connection), /upgrade/i, 'Connection: Upgrade travels');
  t.equal(h.upgrade, 'websocket', 'Upgrade travels');
  t.type(h['sec-websocket-key'], 'string');
  t.equal(res.statusCode, 101);
  t.equal(res.headers['x-route-resp'], 'ws', 'route response edits apply to the 101');
  t.match(res.headers['x-envoy-upstream-service-time'], /^\d+$/);
  t.equal(res.headers.upgrade, 'websocket');
});

t.test('a prefix rewrite applies to the upgrade request', async (t) => {
  const { port, backend, remora } = await setup(t);
  const { ws } = await openWs(port, '/old/socket?x=1');
  ws.close(1000);
  await once(ws, 'close');
  const h = backend.upgrades.at(-1)!;
  t.equal(h['x-envoy-original-path'], '/old/socket?x=1');
  const e = await logEntry(remora, (x) => x.path === '/old/socket?x=1');
  t.equal(e.route_name, 'rewritten');
});

t.test('the upstream closing closes the client with the same close code', async (t) => {
  const { port, backend } = await setup(t);
  const { ws } = await openWs(port, '/echo');
  ws.send('close-me');
  const [code, reason] = (await once(ws, 'close')) as [number, Buffer];
  t.equal(code, 4001);
  t.equal(reason.toString(), 'bye');
  await waitFor('server side closed', () => backend.closes.length === 1);
  t.same(backend.closes, [{ code: 4001, reason: 'bye' }]);
});

t.test('the client closing closes the upstream; the access log has 101 and the bytes; the gauge goes back to 0', async (t) => {
  const { port, backend, remora } = await setup(t);
  const { ws, inbox } = await openWs(port, '/log', { headers: { 'x-request-id': 'ws-log-1' } });
  t.equal(await rqActive(remora, backend.port), 1, 'the open tunnel counts as an active request');
  ws.send('abc');
  t.equal((await inbox.next()).data.toString(), 'abc');
  ws.close(4002, 'client-bye');
  const [code] = (await once(ws, 'close')) as [number];
  t.equal(code, 4002, 'the client sees its close echoed');
  await waitFor('server side closed', () => backend.closes.length === 1);
  t.same(backend.closes, [{ code: 4002, reason: 'client-bye' }], 'the upstream saw the client close');

  const e = await logEntry(remora, (x) => x.request_id === 'ws-log-1');
  // Masked client frames: 'abc' is 2+4+3 bytes, the close frame (code + 10-byte reason) 2+4+12.
  // Server frames: 'abc' 2+3, the echoed close 2+12.
  t.match(e, {
    method: 'GET',
    path: '/log',
    protocol: 'HTTP/1.1',
    response_code: 101,
    response_flags: '-',
    response_code_details: 'via_upstream',
    bytes_received: 9 + 18,
    bytes_sent: 5 + 14,
    upstream_cluster: APP_CLUSTER,
    upstream_host: `127.0.0.1:${backend.port}`,
    route_name: 'ws',
  });
  await waitFor('rq_active back to 0', async () => (await rqActive(remora, backend.port)) === 0);
  t.equal(await rqActive(remora, backend.port), 0);
  const prom = (await request(remora.ports.admin, '/stats/prometheus')).body;
  t.match(prom, /istio_requests_total\{[^}]*response_code="101"[^}]*\} 1\n/, 'the tunnel is counted with code 101');
});

t.test('a client that drops the connection tears the upstream down; Envoy logs it DC', async (t) => {
  const { port, backend, remora } = await setup(t);
  const { ws } = await openWs(port, '/drop', { headers: { 'x-request-id': 'ws-drop-1' } });
  ws.terminate();
  await waitFor('server side closed', () => backend.closes.length === 1);
  t.equal(backend.closes[0]!.code, 1006, 'the upstream saw the connection go without a close frame');
  const e = await logEntry(remora, (x) => x.request_id === 'ws-drop-1');
  t.match(e, { response_code: 101, response_flags: 'DC' });
  await waitFor('rq_active back to 0', async () => (await rqActive(remora, backend.port)) === 0);
});

t.test('an upstream that refuses the upgrade: its response reaches the client, then the connection closes', async (t) => {
  const { port, backend, remora } = await setup(t);
  const chunked = await refusedUpgrade(port, '/refuse-chunked');
  t.equal(chunked.status, 403);
  t.equal(chunked.body, 'nope');
  t.equal(chunked.headers.connection, 'close');
  t.equal(chunked.headers.upgrade, undefined);
  await chunked.closed;
  const cl = await refusedUpgrade(port, '/refuse-cl');
  t.equal(cl.status, 403);
  t.equal(cl.body, 'nope!\n');
  await cl.closed;
  // The upstream kept its connections open; the proxy closed them once the responses were through.
  await waitFor('upstream connections closed by the proxy', () => backend.refusedClosedByProxy() === 2);
  const e = await logEntry(remora, (x) => x.path === '/refuse-cl');
  t.match(e, { response_code: 403, response_flags: '-', response_code_details: 'via_upstream', bytes_sent: 6 });
  await waitFor('rq_active back to 0', async () => (await rqActive(remora, backend.port)) === 0);
});

t.test('no route: 404 NR', async (t) => {
  const { port, remora } = await setup(t);
  const r = await refusedUpgrade(port, '/anything', 'nobody.example');
  t.equal(r.status, 404);
  await r.closed;
  const e = await logEntry(remora, (x) => x.authority === 'nobody.example');
  t.match(e, { response_code: 404, response_flags: 'NR', response_code_details: 'route_not_found' });
});

t.test('a dead endpoint: 503 UF (after Istio\'s default retries)', async (t) => {
  const { port, remora, deadPort } = await setup(t);
  const r = await refusedUpgrade(port, '/dead');
  t.equal(r.status, 503);
  t.match(r.body, /connection failure/);
  const e = await logEntry(remora, (x) => x.path === '/dead');
  t.match(e, {
    response_code: 503,
    response_flags: 'UF,URX',
    response_code_details: 'upstream_reset_before_response_started{connection_failure}',
    upstream_transport_failure_reason: 'ECONNREFUSED',
    upstream_host: `127.0.0.1:${deadPort}`,
  });
});

t.test('a cluster without endpoints: 503 UH', async (t) => {
  const { port, remora } = await setup(t);
  const r = await refusedUpgrade(port, '/empty');
  t.equal(r.status, 503);
  t.equal(r.body, 'no healthy upstream');
  const e = await logEntry(remora, (x) => x.path === '/empty');
  t.match(e, { response_code: 503, response_flags: 'UH', response_code_details: 'no_healthy_upstream' });
});

t.test('the route timeout bounds the handshake: 504 UT, and the upstream connection is closed', async (t) => {
  const { port, remora, backend } = await setup(t);
  const started = Date.now();
  const r = await refusedUpgrade(port, '/slow');
  t.equal(r.status, 504);
  t.ok(Date.now() - started >= 150, 'not before the 200 ms timeout');
  const e = await logEntry(remora, (x) => x.path === '/slow');
  t.match(e, { response_code: 504, response_flags: 'UT', response_code_details: 'upstream_response_timeout' });
  await waitFor('upstream connection closed by the proxy', () => backend.refusedClosedByProxy() === 1);
  await waitFor('rq_active back to 0', async () => (await rqActive(remora, backend.port)) === 0);
});

t.test('any Upgrade protocol tunnels, bytes sent with the head go first, half-close is relayed', async (t) => {
  const { port, remora } = await setup(t);
  const s = connect(port, '127.0.0.1');
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString('latin1')));
  await once(s, 'connect');
  // The first payload bytes ride in the same packet as the request head (Node's `head`).
  s.write('GET /raw HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\nx-request-id: raw-1\r\n\r\nearly;');
  await waitFor('101 and the early bytes echoed', () => got.includes('early;'));
  t.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  t.match(got, /\r\nupgrade: echo-proto\r\n/i);
  s.write('late;');
  await waitFor('late bytes echoed', () => got.includes('late;'));
  // Half-close: the client is done sending, the server still answers, then ends.
  s.end();
  await once(s, 'close');
  t.equal(got.slice(got.indexOf('\r\n\r\n') + 4), 'early;late;bye\n');
  const e = await logEntry(remora, (x) => x.request_id === 'raw-1');
  // The client ended first: Envoy flags that as a downstream disconnect, even though here the rest still flowed.
  t.match(e, { response_code: 101, response_flags: 'DC', bytes_received: 11, bytes_sent: 15 });
});

t.test('Upgrade: h2c is served as a plain request, upgrade headers dropped (as Envoy)', async (t) => {
  const { port } = await setup(t);
  const r = await request(port, '/plain', {
    headers: { host: 'app.example', connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQAAP__' },
  });
  t.equal(r.status, 200);
  const seen = r.json<{ url: string; headers: IncomingHttpHeaders }>();
  t.equal(seen.url, '/plain');
  t.equal(seen.headers.upgrade, undefined);
  t.equal(seen.headers['http2-settings'], undefined);
  t.not(String(seen.headers.connection ?? '').toLowerCase(), 'upgrade');
});

t.test('stopping the proxy closes open tunnels', async (t) => {
  const { port, backend, remora } = await setup(t);
  const { ws } = await openWs(port, '/echo', { headers: { 'x-request-id': 'ws-stop-1' } });
  const closed = once(ws, 'close');
  await remora.stop();
  const [code] = (await Promise.race([closed, sleep(5_000).then(() => [-1])])) as [number];
  t.equal(code, 1006, 'the client connection was cut');
  await waitFor('server side closed', () => backend.closes.length === 1);
  const e = await logEntry(remora, (x) => x.request_id === 'ws-stop-1');
  t.match(e, { response_code: 101, response_flags: 'LR' });
});

t.test('upgrades count against the circuit breaker: one open tunnel, one waiting, the next 503 UO; a close lets the waiting one in', async (t) => {
  const backend = await startWsBackend();
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: backend.port }]),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: app }
spec:
  host: app
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
      http: { http1MaxPendingRequests: 1 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: app } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  const first = await openWs(port, '/one');
  // The second waits in the breaker's queue: its handshake does not complete yet.
  const second = new WebSocket(`ws://127.0.0.1:${port}/two`, { headers: { host: 'app.example' }, handshakeTimeout: 5_000 });
  const secondOpen = once(second, 'open');
  await sleep(100);
  t.equal(second.readyState, WebSocket.CONNECTING, 'the second upgrade waits for room');
  const third = await refusedUpgrade(port, '/three');
  t.equal(third.status, 503, 'the third overflows at once');
  t.match(third.body, /reset reason: overflow/);
  await waitFor('UO in the access log', () => remora.accessLog.some((l) => l.includes('"GET /three HTTP/1.1" 503 UO ')));
  first.ws.close();
  await secondOpen;
  second.send('after');
  const echo = await new Promise<string>((resolve) => second.once('message', (d: Buffer) => resolve(d.toString())));
  t.equal(echo, 'after', 'the waiting upgrade went through once the first tunnel closed');
  second.close();
  t.same(backend.upgrades.length, 2, 'the refused one never reached the upstream');
});
