// HTTP/2 and gRPC through the proxy: h2c with prior knowledge and HTTP/1.1 on one port,
// HTTP/2 to upstreams declared grpc/http2, and gRPC with @grpc/grpc-js — unary, server
// streaming, bidi, status and trailers intact, gRPC local replies, grpc-timeout.
import { execFile } from 'node:child_process';
import { connect as h2connect, createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const run = promisify(execFile);

// A service without .proto files: messages are JSON in the gRPC frames.
const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>,
};
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const service = {
  echo: method('/demo.Echo/Echo', false, false),
  count: method('/demo.Echo/Count', false, true),
  chat: method('/demo.Echo/Chat', true, true),
  fail: method('/demo.Echo/Fail', false, false),
  slow: method('/demo.Echo/Slow', false, false),
};
const Client = grpc.makeGenericClientConstructor(service, 'Echo');
type AnyClient = InstanceType<typeof Client> & Record<string, (...a: unknown[]) => unknown>;

let grpcServer: grpc.Server;
let grpcPort: number;
let h1: Backend;
/** Speaks only HTTP/2 with prior knowledge: an HTTP/1.1 request to it fails. */
let h2only: Http2Server;
let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let client: AnyClient;

t.before(async () => {
  grpcServer = new grpc.Server();
  grpcServer.addService(service, {
    echo: (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const meta = call.metadata.get('x-request-id');
      cb(null, { echo: call.request.text, requestId: meta[0] ?? null, authority: call.getPath() });
    },
    count: (call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) => {
      const n = Number(call.request.n);
      for (let i = 1; i <= n; i++) call.write({ i });
      call.end();
    },
    chat: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
      call.on('data', (m: Record<string, unknown>) => call.write({ reply: `re: ${String(m.text)}` }));
      call.on('end', () => call.end());
    },
    fail: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
      const md = new grpc.Metadata();
      md.set('x-detail', 'no such order');
      cb({ code: grpc.status.NOT_FOUND, details: 'order 42 not found', metadata: md });
    },
    slow: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
      setTimeout(() => cb(null, { late: true }), 1500);
    },
  });
  grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  h1 = await startBackend('h1-backend');
  h2only = createH2Server((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: 'h2-only', version: req.httpVersion, url: req.url }));
  });
  await new Promise<void>((r) => h2only.listen(0, '127.0.0.1', r));
  const deadPort = await freePort();
  port = await freePort();
  const se = (name: string, p: number, protocol: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name} }
spec:
  hosts: [${name}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: ${protocol.toLowerCase()}, protocol: ${protocol} }]
  endpoints: [{ address: 127.0.0.1, ports: { ${protocol.toLowerCase()}: ${p} } }]
`;
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      se('grpc-svc', grpcPort, 'GRPC'),
      se('grpc-dead', deadPort, 'GRPC'),
      se('web', h1.port, 'HTTP'),
      se('modern', (h2only.address() as AddressInfo).port, 'HTTP'),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: modern }
spec:
  host: modern
  trafficPolicy:
    connectionPool:
      http: { h2UpgradePolicy: UPGRADE }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /demo.Echo/Slow }, headers: { x-route-timeout: {} } }]
    route: [{ destination: { host: grpc-svc } }]
    timeout: 300ms
  - match: [{ uri: { prefix: /demo.Echo/ }, headers: { x-target: { exact: dead } } }]
    route: [{ destination: { host: grpc-dead } }]
  - match: [{ uri: { prefix: /demo.Echo/ } }]
    route: [{ destination: { host: grpc-svc } }]
  - match: [{ uri: { prefix: /modern } }]
    route: [{ destination: { host: modern } }]
  - route: [{ destination: { host: web } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as AnyClient;
});

t.teardown(async () => {
  client.close();
  await remora.stop();
  grpcServer.forceShutdown();
  await h1.close();
  await new Promise<void>((r) => h2only.close(() => r()));
  mesh.cleanup();
});

function unary(name: string, req: unknown, md = new grpc.Metadata(), opts: grpc.CallOptions = {}): Promise<{ err: grpc.ServiceError | null; res: Record<string, unknown> | null; trailers: grpc.Metadata | null }> {
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | null = null;
    const call = (client[name] as (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Record<string, unknown>) => void) => grpc.ClientUnaryCall)(req, md, opts, (err, res) =>
      setImmediate(() => resolve({ err, res: res ?? null, trailers })),
    );
    call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
  });
}

t.test('gRPC unary through the proxy', async (t) => {
  const md = new grpc.Metadata();
  md.set('x-request-id', 'grpc-1');
  const { err, res } = await unary('echo', { text: 'hello' }, md);
  t.equal(err, null);
  t.same(res, { echo: 'hello', requestId: 'grpc-1', authority: '/demo.Echo/Echo' });
  await sleep(20);
  const line = remora.accessLog.find((l) => l.includes('"grpc-1"'))!;
  t.match(line, /"POST \/demo\.Echo\/Echo HTTP\/2" 200 - via_upstream /, 'logged as an HTTP/2 request');
  const metrics = (await get(remora.ports.admin, '/stats/prometheus', 'admin')).body;
  t.match(metrics, /istio_requests_total\{[^}]*destination_service="grpc-svc\.default\.svc\.cluster\.local"[^}]*response_code="200",grpc_response_status="0"/);
});

t.test('gRPC server streaming', async (t) => {
  const got: number[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = (client.count as (r: unknown) => grpc.ClientReadableStream<Record<string, unknown>>)({ n: 50 });
    call.on('data', (m: Record<string, unknown>) => got.push(Number(m.i)));
    call.on('end', resolve);
    call.on('error', reject);
  });
  t.same(got, Array.from({ length: 50 }, (_, i) => i + 1), 'every message, in order');
});

t.test('gRPC bidi streaming', async (t) => {
  const replies: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = (client.chat as () => grpc.ClientDuplexStream<unknown, Record<string, unknown>>)();
    call.on('data', (m: Record<string, unknown>) => {
      replies.push(String(m.reply));
      if (replies.length < 5) call.write({ text: `m${replies.length + 1}` });
      else call.end();
    });
    call.on('end', resolve);
    call.on('error', reject);
    call.write({ text: 'm1' });
  });
  t.same(replies, ['re: m1', 're: m2', 're: m3', 're: m4', 're: m5'], 'ping-pong over one stream');
});

t.test('gRPC status, message and trailing metadata arrive intact', async (t) => {
  const { err, trailers } = await unary('fail', {});
  t.equal(err?.code, grpc.status.NOT_FOUND);
  t.equal(err?.details, 'order 42 not found');
  t.same(trailers?.get('x-detail'), ['no such order']);
  await sleep(20);
  const metrics = (await get(remora.ports.admin, '/stats/prometheus', 'admin')).body;
  t.match(metrics, /istio_requests_total\{[^}]*response_code="200",grpc_response_status="5"/, 'grpc_response_status from the trailers');
});

t.test('an unreachable upstream gives UNAVAILABLE (a gRPC local reply)', async (t) => {
  const md = new grpc.Metadata();
  md.set('x-target', 'dead');
  md.set('x-request-id', 'grpc-dead');
  const { err } = await unary('echo', { text: 'x' }, md);
  t.equal(err?.code, grpc.status.UNAVAILABLE);
  t.match(err?.details ?? '', /upstream connect error/);
  await sleep(20);
  t.match(remora.accessLog.find((l) => l.includes('"grpc-dead"')) ?? '', /" 200 UF,URX upstream_reset_before_response_started\{connection_failure\} /);
});

t.test('a route timeout gives DEADLINE_EXCEEDED from the proxy', async (t) => {
  const md = new grpc.Metadata();
  md.set('x-route-timeout', '1');
  md.set('x-request-id', 'grpc-timeout-route');
  const t0 = Date.now();
  const { err } = await unary('slow', {}, md);
  t.equal(err?.code, grpc.status.DEADLINE_EXCEEDED);
  t.ok(Date.now() - t0 < 1000, 'answered at the route timeout, not when the upstream finished');
  await sleep(20);
  t.match(remora.accessLog.find((l) => l.includes('"grpc-timeout-route"')) ?? '', /" 200 UT upstream_response_timeout /);
});

t.test('grpc-timeout from the client bounds the request at the proxy', async (t) => {
  // Raw HTTP/2, so the client itself does not time out: only the proxy can answer early.
  const session = h2connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 2]), Buffer.from('{}')]);
  const t0 = Date.now();
  const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/demo.Echo/Slow', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '300m', 'x-request-id': 'grpc-timeout-header' });
    req.on('response', (h) => resolve(h as Record<string, unknown>));
    req.on('error', reject);
    req.end(frame);
  });
  t.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);
  t.equal(headers[':status'], 200);
  t.equal(headers['grpc-status'], '4', 'DEADLINE_EXCEEDED');
});

t.test('h2c with prior knowledge and HTTP/1.1 on the same port, to an HTTP/1.1 upstream', async (t) => {
  const { stdout } = await run('curl', ['-s', '--http2-prior-knowledge', '-H', 'host: web.example', '-w', '\\n%{http_version}', `http://127.0.0.1:${port}/page?q=1`]);
  const [body, version] = stdout.split('\n');
  t.equal(version, '2', 'curl spoke HTTP/2');
  const echo = JSON.parse(body!) as { name: string; url: string; headers: Record<string, string> };
  t.equal(echo.name, 'h1-backend');
  t.equal(echo.url, '/page?q=1');
  t.equal(echo.headers.host, 'web.example', ':authority became Host upstream');
  const h1reply = await get(port, '/page', 'web.example');
  t.equal(h1reply.json<{ name: string }>().name, 'h1-backend', 'HTTP/1.1 on the same port');
});

t.test('many concurrent streams on one HTTP/2 connection', async (t) => {
  const session = h2connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const one = (i: number) =>
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': `/s/${i}`, host: 'web.example' });
      let data = '';
      req.on('data', (c: Buffer) => (data += c.toString()));
      req.on('end', () => resolve((JSON.parse(data) as { url: string }).url));
      req.on('error', reject);
      req.end();
    });
  const urls = await Promise.all(Array.from({ length: 100 }, (_, i) => one(i)));
  t.same(urls, Array.from({ length: 100 }, (_, i) => `/s/${i}`));
});

t.test('h2UpgradePolicy UPGRADE: an HTTP/1.1 client reaches an HTTP/2-only upstream', async (t) => {
  const r = await get(port, '/modern/x', 'modern.example');
  t.equal(r.status, 200);
  t.same(r.json(), { name: 'h2-only', version: '2.0', url: '/modern/x' });
});
