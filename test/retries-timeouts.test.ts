// Retries and timeouts with Envoy's semantics: retryOn conditions, previous-hosts, replayed
// bodies, x-envoy-attempt-count, per-try and route timeouts, URX when retries run out.
import type { IncomingMessage, ServerResponse } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
const backends: Backend[] = [];

/** 503 on the first attempt (per x-envoy-attempt-count), then an echo of what arrived. */
function firstTryFails(name: string) {
  return (req: IncomingMessage, res: ServerResponse, body: string) => {
    const attempt = req.headers['x-envoy-attempt-count'];
    if (attempt === '1') {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('try again');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name, attempt, body }));
  };
}

t.before(async () => {
  // 0,1: fail the first try; 2: always 503; 3: hangs; 4: answers after 400 ms
  backends.push(await startBackend('flaky-a', firstTryFails('flaky-a')));
  backends.push(await startBackend('flaky-b', firstTryFails('flaky-b')));
  backends.push(
    await startBackend('always-503', (_q, res) => {
      res.writeHead(503);
      res.end('down');
    }),
  );
  backends.push(await startBackend('hang', () => {}));
  backends.push(
    await startBackend('slow', (_q, res) => {
      setTimeout(() => {
        res.writeHead(200);
        res.end('slow');
      }, 400);
    }),
  );
  // 5: the first try answers 200 with x-try-again; later tries without it.
  backends.push(
    await startBackend('tagged', (req, res) => {
      const first = req.headers['x-envoy-attempt-count'] === '1';
      res.writeHead(200, first ? { 'x-try-again': 'now' } : {});
      res.end(`attempt ${String(req.headers['x-envoy-attempt-count'])}`);
    }),
  );
  const deadPort = await freePort();
  port = await freePort();
  const se = (name: string, ports: number[]) => `apiVersion: networking.istio.io/v1
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
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      se('flaky', [backends[0]!.port, backends[1]!.port]),
      se('always503', [backends[2]!.port]),
      se('hang', [backends[3]!.port]),
      se('slow', [backends[4]!.port]),
      se('halfdead', [deadPort, backends[4]!.port]),
      se('tagged', [backends[5]!.port]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /flaky } }]
    route: [{ destination: { host: flaky } }]
    retries: { attempts: 2, retryOn: 5xx }
  - match: [{ uri: { prefix: /exhaust } }]
    route: [{ destination: { host: always503 } }]
    retries: { attempts: 2, retryOn: gateway-error }
  - match: [{ uri: { prefix: /not-retried } }]
    route: [{ destination: { host: always503 } }]
    retries: { attempts: 3, retryOn: connect-failure }
  - match: [{ uri: { prefix: /no-retries } }]
    route: [{ destination: { host: flaky } }]
    retries: { attempts: 0 }
  - match: [{ uri: { prefix: /per-try } }]
    route: [{ destination: { host: hang } }]
    timeout: 1s
    retries: { attempts: 5, perTryTimeout: 300ms, retryOn: 5xx }
  - match: [{ uri: { prefix: /timeout } }]
    route: [{ destination: { host: hang } }]
    timeout: 500ms
  - match: [{ uri: { prefix: /in-time } }]
    route: [{ destination: { host: slow } }]
    timeout: 2s
  - match: [{ uri: { prefix: /connect } }]
    route: [{ destination: { host: halfdead } }]
  - match: [{ uri: { prefix: /retriable-headers } }]
    route: [{ destination: { host: tagged } }]
    retries: { attempts: 2, retryOn: retriable-headers }
  - match: [{ uri: { prefix: /default-503 } }]
    route: [{ destination: { host: always503 } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora.stop();
  for (const b of backends) await b.close();
  mesh.cleanup();
});

const log = async (id: string): Promise<string> => {
  await sleep(30);
  return remora.accessLog.find((l) => l.includes(`"${id}"`)) ?? '';
};

t.test('a 503 then success: 200, two attempts on two different endpoints', async (t) => {
  for (const b of backends) b.seen.length = 0;
  const r = await request(port, '/flaky', { headers: { host: 'x', 'x-request-id': 'retry-1' } });
  t.equal(r.status, 200);
  const echo = r.json<{ name: string; attempt: string }>();
  t.equal(echo.attempt, '2', 'the successful try carries x-envoy-attempt-count: 2');
  const a = backends[0]!.seen.length;
  const b = backends[1]!.seen.length;
  t.same([a, b].sort(), [1, 1], 'each endpoint saw exactly one attempt (the retry avoided the first host)');
  t.match(await log('retry-1'), /" 200 - via_upstream /);
});

t.test('a downstream x-envoy-attempt-count is replaced by the router\'s own count, not appended to', async (t) => {
  for (const b of backends) b.seen.length = 0;
  const r = await request(port, '/flaky', { headers: { host: 'x', 'x-envoy-attempt-count': '1' } });
  t.equal(r.status, 200);
  const tries = [...backends[0]!.seen, ...backends[1]!.seen].map((s) => s.headers['x-envoy-attempt-count']).sort();
  t.same(tries, ['1', '2'], 'each try carries only the router\'s count (a proxy in front had set its own)');
});

t.test('a POST body is replayed intact on retry', async (t) => {
  for (const b of backends) b.seen.length = 0;
  const body = JSON.stringify({ order: 42, items: 'x'.repeat(50_000) });
  const r = await request(port, '/flaky', { method: 'POST', body, headers: { host: 'x', 'content-type': 'application/json' } });
  t.equal(r.status, 200);
  t.equal(r.json<{ body: string }>().body, body, 'the second attempt got the whole body');
  const first = [...backends[0]!.seen, ...backends[1]!.seen].find((s) => s.headers['x-envoy-attempt-count'] === '1');
  t.equal(first?.body, body, 'the first attempt got it too');
});

t.test('retries exhausted: the last upstream response, with URX', async (t) => {
  backends[2]!.seen.length = 0;
  const r = await request(port, '/exhaust', { headers: { host: 'x', 'x-request-id': 'exhaust-1' } });
  t.equal(r.status, 503);
  t.equal(r.body, 'down', 'the upstream\'s own 503 body');
  t.equal(backends[2]!.seen.length, 3, 'one try and two retries');
  t.same(backends[2]!.seen.map((s) => s.headers['x-envoy-attempt-count']), ['1', '2', '3']);
  t.match(await log('exhaust-1'), /" 503 URX via_upstream /);
});

t.test('a status not in retryOn is not retried', async (t) => {
  backends[2]!.seen.length = 0;
  const r = await request(port, '/not-retried', { headers: { host: 'x', 'x-request-id': 'nr-1' } });
  t.equal(r.status, 503);
  t.equal(backends[2]!.seen.length, 1);
  t.match(await log('nr-1'), /" 503 - via_upstream /);
});

t.test('retriable-headers: a response carrying a header the request names in x-envoy-retriable-header-names is retried', async (t) => {
  const named = await request(port, '/retriable-headers', { headers: { host: 'x', 'x-envoy-retriable-header-names': 'x-other,X-Try-Again' } });
  t.equal(named.status, 200);
  t.equal(named.body, 'attempt 2', 'the first answer carried x-try-again: retried');
  t.equal(named.headers['x-try-again'], undefined);
  const unnamed = await request(port, '/retriable-headers', { headers: { host: 'x' } });
  t.equal(unnamed.body, 'attempt 1', 'no header named: the first answer stands');
  t.equal(unnamed.headers['x-try-again'], 'now');
});

t.test('attempts: 0 turns retries off', async (t) => {
  const r = await request(port, '/no-retries', { headers: { host: 'x' } });
  t.equal(r.status, 503);
});

t.test('Istio\'s default policy (no retries field) retries a 503 twice', async (t) => {
  backends[2]!.seen.length = 0;
  const r = await request(port, '/default-503', { headers: { host: 'x', 'x-request-id': 'def-1' } });
  t.equal(r.status, 503);
  t.equal(backends[2]!.seen.length, 3);
  t.match(await log('def-1'), /" 503 URX /);
});

t.test('a connect failure is retried on the other endpoint (default policy)', async (t) => {
  for (let i = 0; i < 8; i++) {
    const r = await request(port, '/connect', { headers: { host: 'x' } });
    t.equal(r.status, 200, `request ${i} succeeds despite the dead endpoint`);
  }
});

t.test('perTryTimeout then the route timeout: 504 UT when the route timeout ends', async (t) => {
  backends[3]!.seen.length = 0;
  const t0 = Date.now();
  const r = await request(port, '/per-try', { headers: { host: 'x', 'x-request-id': 'pt-1' } });
  const elapsed = Date.now() - t0;
  t.equal(r.status, 504);
  t.equal(r.body, 'upstream request timeout');
  t.ok(Math.abs(elapsed - 1000) <= 100, `answered at ${elapsed} ms (1000 ± 100)`);
  const tries = backends[3]!.seen.map((s) => s.headers['x-envoy-attempt-count']);
  t.ok(tries.length >= 3, `each per-try timeout led to a new try (${tries.length} tries)`);
  t.same(tries.slice(0, 3), ['1', '2', '3']);
  t.match(await log('pt-1'), /" 504 UT upstream_response_timeout /);
});

t.test('the route timeout alone: 504 UT at the timeout, upstream request cancelled', async (t) => {
  const t0 = Date.now();
  const r = await request(port, '/timeout', { headers: { host: 'x', 'x-request-id': 'to-1' } });
  const elapsed = Date.now() - t0;
  t.equal(r.status, 504);
  t.ok(Math.abs(elapsed - 500) <= 100, `answered at ${elapsed} ms (500 ± 100)`);
  await sleep(50);
  const host = (await request(remora.ports.admin, '/clusters?format=json'))
    .json<{ clusters: { name: string; endpoints: { rq_active: number }[] }[] }>()
    .clusters.find((c) => c.name === 'outbound|80||hang.default.svc.cluster.local')!;
  t.equal(host.endpoints[0]!.rq_active, 0, 'no request left active upstream');
});

t.test('a response within the timeout is not cut', async (t) => {
  const r = await request(port, '/in-time', { headers: { host: 'x' } });
  t.equal(r.status, 200);
  t.equal(r.body, 'slow');
});
