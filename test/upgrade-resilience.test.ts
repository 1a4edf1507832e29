// WebSocket upgrades meet the cluster's resilience settings as plain requests do, with a real
// `ws` server and client through the gateway: failed upgrades (a 5xx answer, a reset, a
// refused connection) feed outlier detection until the host is ejected; upgrade retries spend
// the cluster's `maxRetries` budget (Envoy's circuit_breakers rq_retry_open and
// upstream_rq_retry_overflow); and an answer the proxy makes itself (direct response,
// redirect) keeps the response headers the filters added.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

/** How a backend answers an upgrade request. */
type Mode = 'accept' | '503' | 'reset' | ((req: IncomingMessage) => 'accept' | '503' | 'hang');

interface UpgradeBackend {
  readonly port: number;
  /** Paths of the upgrade requests seen, in order. */
  readonly seen: string[];
  close(): Promise<void>;
}

async function upgradeBackend(mode: Mode): Promise<UpgradeBackend> {
  const seen: string[] = [];
  const held: Socket[] = [];
  const server: Server = createServer((_req, res) => res.end('plain\n'));
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws: WebSocket) => ws.on('message', (data: Buffer, isBinary: boolean) => ws.send(data, { binary: isBinary })));
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push(req.url ?? '');
    const what = typeof mode === 'function' ? mode(req) : mode;
    switch (what) {
      case 'accept':
        wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
        return;
      case '503':
        socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      case 'reset':
        socket.resetAndDestroy();
        return;
      case 'hang':
        held.push(socket);
        socket.on('error', () => {});
        return;
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      for (const s of held) s.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
}

/** One WebSocket handshake through the gateway: 101 (the socket is then closed) or the refusal's status and headers. */
function handshake(port: number, path: string, host = 'app.example'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers: { host }, handshakeTimeout: 5_000 });
    ws.on('error', reject);
    ws.once('upgrade', (res: IncomingMessage) => {
      ws.once('open', () => {
        ws.close(1000);
        resolve({ status: 101, headers: res.headers });
      });
    });
    ws.on('unexpected-response', (req, res: IncomingMessage) => {
      res.resume();
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers });
      });
    });
  });
}

async function waitForLine(remora: InProcessRemora, path: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await waitFor(`access log line of ${path}`, () => {
    found = remora.accessLog.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.path === path);
    return found !== undefined;
  });
  return found!;
}

async function stats(remora: InProcessRemora): Promise<Map<string, number>> {
  const body = (await request(remora.ports.admin, '/stats')).body;
  const out = new Map<string, number>();
  for (const line of body.split('\n')) {
    const i = line.lastIndexOf(': ');
    if (i > 0) out.set(line.slice(0, i), Number(line.slice(i + 2)));
  }
  return out;
}

async function health(remora: InProcessRemora, cluster: string): Promise<Map<number, string>> {
  const json = (await request(remora.ports.admin, '/clusters?format=json')).json<{ clusters: { name: string; endpoints: { address: string; health: string }[] }[] }>();
  const c = json.clusters.find((x) => x.name === cluster);
  if (c === undefined) throw new Error(`${cluster} missing from /clusters`);
  return new Map(c.endpoints.map((e) => [Number(e.address.slice(e.address.lastIndexOf(':') + 1)), e.health]));
}

const serviceEntry = (name: string, ports: readonly number[]) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name} }
spec:
  hosts: [${name}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
${ports.map((p) => `  - { address: 127.0.0.1, ports: { http: ${p} } }`).join('\n')}
`;

async function gatewayWith(t: Test, files: Record<string, string>): Promise<{ port: number; remora: InProcessRemora }> {
  const port = await freePort();
  const mesh = new MeshDir({ 'gw.yaml': gateway('gw', port), ...files });
  const remora = await startRemora('gateway', [mesh.dir], ['--access-log-format', 'json']);
  t.teardown(async () => {
    await remora.stop();
    mesh.cleanup();
  });
  return { port, remora };
}

t.test('failed upgrades feed outlier detection: a 5xx answer, a reset and a refused connection each eject their host', async (t) => {
  const good = await upgradeBackend('accept');
  const fails = await upgradeBackend('503');
  const resets = await upgradeBackend('reset');
  const deadPort = await freePort();
  t.teardown(async () => {
    for (const b of [good, fails, resets]) await b.close();
  });
  const { port, remora } = await gatewayWith(t, {
    'app.yaml': doc(
      serviceEntry('app', [good.port, fails.port, resets.port, deadPort]),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: app }
spec:
  host: app
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: app } }]
    retries: { attempts: 0 }
`,
    ),
  });
  const cluster = 'outbound|80||app.default.svc.cluster.local';
  const statuses: number[] = [];
  // Round robin: every host gets its turns; two failures in a row eject a failing one.
  for (let i = 0; i < 16; i++) statuses.push((await handshake(port, `/ws/${i}`)).status);
  t.ok(statuses.includes(101) && statuses.includes(503), `both outcomes seen (${statuses.join(' ')})`);
  const h = await health(remora, cluster);
  t.equal(h.get(good.port), 'healthy', 'the accepting host stays in');
  t.equal(h.get(fails.port), 'failed_outlier_check', 'the host answering 503 to upgrades is ejected');
  t.equal(h.get(resets.port), 'failed_outlier_check', 'the host resetting upgrades is ejected');
  t.equal(h.get(deadPort), 'failed_outlier_check', 'the host refusing connections is ejected');
  const s = await stats(remora);
  t.equal(s.get(`cluster.${cluster}.outlier_detection.ejections_enforced_consecutive_5xx`), 3, 'three consecutive-5xx ejections');

  const after: number[] = [];
  for (let i = 0; i < 6; i++) after.push((await handshake(port, `/after/${i}`)).status);
  t.same(after, [101, 101, 101, 101, 101, 101], 'with the failing hosts out, every upgrade succeeds');
  t.equal(fails.seen.filter((p) => p.startsWith('/after/')).length + resets.seen.filter((p) => p.startsWith('/after/')).length, 0, 'no upgrade reached an ejected host');
});

t.test("upgrade retries spend the cluster's max_retries budget: a second retry overflows while one is in flight", async (t) => {
  // Each upgrade's first try gets a 503; its retry is accepted, except under /hang, where it waits forever.
  const backend = await upgradeBackend((req) => (req.headers['x-envoy-attempt-count'] === '1' ? '503' : req.url?.startsWith('/hang') ? 'hang' : 'accept'));
  t.teardown(() => backend.close());
  const { port, remora } = await gatewayWith(t, {
    'app.yaml': doc(
      serviceEntry('app', [backend.port]),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: app }
spec:
  host: app
  trafficPolicy:
    connectionPool:
      http: { maxRetries: 1 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: app } }]
    timeout: 30s
    retries: { attempts: 2, retryOn: 5xx }
`,
    ),
  });
  const p = `cluster.outbound|80||app.default.svc.cluster.local.`;

  // An upgrade whose retry is in flight holds the only retry slot.
  const hanging = new WebSocket(`ws://127.0.0.1:${port}/hang`, { headers: { host: 'app.example' }, handshakeTimeout: 20_000 });
  hanging.on('error', () => {});
  await waitFor('the retry of /hang reaches the backend', () => backend.seen.filter((x) => x === '/hang').length === 2);
  let s = await stats(remora);
  t.equal(s.get(`${p}circuit_breakers.default.rq_retry_open`), 1, 'rq_retry_open while the retry is in flight');

  const refused = await handshake(port, '/second');
  t.equal(refused.status, 503, "no room for a second retry: the upstream's 503 reaches the client");
  t.equal(backend.seen.filter((x) => x === '/second').length, 1, 'the second upgrade was not retried');
  s = await stats(remora);
  t.equal(s.get(`${p}upstream_rq_retry_overflow`), 1, 'upstream_rq_retry_overflow counts it');
  t.match(await waitForLine(remora, '/second'), { response_code: 503, response_flags: '-', response_code_details: 'via_upstream' }, 'logged as the upstream answer, not retried');

  // The client gives up: the slot comes back.
  hanging.terminate();
  await waitFor('rq_retry_open back to 0', async () => (await stats(remora)).get(`${p}circuit_breakers.default.rq_retry_open`) === 0);
  const gone = await waitForLine(remora, '/hang');
  t.match(gone, { response_code: 0, response_flags: 'DC' }, 'the client leaving during the handshake is logged DC');
  const third = await handshake(port, '/third');
  t.equal(third.status, 101, 'with the slot free, the retry happens and the upgrade succeeds');
  t.same(backend.seen.filter((x) => x === '/third').length, 2, 'two tries');
  s = await stats(remora);
  t.equal(s.get(`${p}upstream_rq_retry`), 2, 'upstream_rq_retry counts the two retries made');
  await waitFor('retry slot released after the successful retry', async () => (await stats(remora)).get(`${p}circuit_breakers.default.rq_retry_open`) === 0);
});

t.test('a direct response or redirect to an upgrade request keeps the headers filters added', async (t) => {
  const { port } = await gatewayWith(t, {
    'routes.yaml': `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /moved } }]
    redirect: { uri: /elsewhere }
    headers: { response: { set: { x-route-resp: moved } } }
  - directResponse: { status: 418, body: { string: "short and stout" } }
    headers: { response: { set: { x-route-resp: teapot } } }
`,
    'limit.yaml': `apiVersion: ratelimit.remora.dev/v1alpha1
kind: LocalRateLimit
metadata: { name: edge, namespace: istio-system }
spec:
  tokenBucket: { maxTokens: 100, tokensPerFill: 100, fillInterval: 60s }
  responseHeaders: true
`,
  });
  // The same answers to plain requests carry them: the upgrade's must too.
  const plain = await request(port, '/teapot', { headers: { host: 'app.example' } });
  t.equal(plain.status, 418);
  t.equal(plain.headers['x-ratelimit-limit'], '100', 'plain request: the filter header is there');

  const direct = await handshake(port, '/teapot');
  t.equal(direct.status, 418);
  t.equal(direct.headers['x-route-resp'], 'teapot', 'route response edits apply');
  t.equal(direct.headers['x-ratelimit-limit'], '100', "the local rate limit's x-ratelimit-limit is kept");
  t.match(direct.headers['x-ratelimit-remaining'], /^\d+$/, 'and x-ratelimit-remaining');

  const redirect = await handshake(port, '/moved');
  t.equal(redirect.status, 301);
  t.equal(redirect.headers.location, 'http://app.example/elsewhere');
  t.equal(redirect.headers['x-ratelimit-limit'], '100', 'a redirect keeps it too');
  t.equal(redirect.headers['x-route-resp'], 'moved');
});
