// Remora's downstream HTTP/1.1 codec end to end: raw clients through a gateway to a real
// node:http upstream. Pipelined requests come back in order whatever order the upstream
// answers them in; a response without a length is re-framed chunked (trailers kept); HEAD
// keeps the length and sends no body; `Connection: close` closes after the response; a
// request body streams through in pieces; a header the proxy may not send is refused, not
// injected.
import { connect } from 'node:net';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let remora: InProcessRemora;
let upstream: Backend;
let port: number;
let mesh: MeshDir;

t.before(async () => {
  upstream = await startBackend('up', (req, res, body) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const delay = Number(url.searchParams.get('delay') ?? '0');
    setTimeout(() => {
      if (url.pathname === '/chunked') {
        // No content-length: node:http sends it chunked, with a trailer.
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
        res.write('part one, ');
        setTimeout(() => {
          res.addTrailers({ 'x-checksum': 'abc123' });
          res.end('part two');
        }, 20);
        return;
      }
      if (url.pathname === '/echo') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
        res.end(body);
        return;
      }
      const text = `${req.method} ${url.pathname}${url.search}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(text.length) });
      res.end(req.method === 'HEAD' ? undefined : text);
    }, delay);
  });
  port = await freePort();
  mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', port),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: up }
spec:
  hosts: [up]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints: [{ address: 127.0.0.1, ports: { http: ${upstream.port} } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: up }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: up } }]
    headers:
      response:
        set: { x-route: edge }
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora?.stop();
  await upstream?.close();
  mesh?.cleanup();
});

/** Writes `steps` (with a pause between them), returns what came back until `until` matched or the server closed. */
function raw(steps: string[], until: RegExp | null): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ data, closed });
    };
    const timer = setTimeout(() => finish(false), 5000);
    s.on('connect', async () => {
      for (const [i, step] of steps.entries()) {
        if (i > 0) await sleep(30);
        s.write(step);
      }
    });
    s.on('data', (c) => {
      data += c.toString('latin1');
      if (until !== null && until.test(data)) finish(false);
    });
    s.on('close', () => finish(true));
    s.on('error', reject);
  });
}

t.test('pipelined requests are answered in order although the upstream answers the second first', async (t) => {
  const { data } = await raw(['GET /first?delay=150 HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n'], /GET \/second$/);
  const bodies = [...data.matchAll(/\r\n\r\n(GET \/\w+[^H]*)/g)].map((m) => m[1]);
  t.same(bodies, ['GET /first?delay=150', 'GET /second'], 'the responses in the order of the requests');
  t.equal(data.match(/x-route: edge/g)?.length, 2, 'both went through the route');
});

t.test("a response without a length is re-framed chunked, with the upstream's trailer", async (t) => {
  const { data } = await raw(['GET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n'], /\r\n0\r\n[^]*\r\n\r\n$/);
  t.match(data, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(data, /\r\ntransfer-encoding: chunked\r\n/i);
  const body = data.slice(data.indexOf('\r\n\r\n') + 4);
  const decoded = [...body.matchAll(/([0-9a-f]+)\r\n/g)];
  t.ok(decoded.length >= 2, 'chunk size lines');
  t.match(body, /part one, [^]*part two/);
  t.match(body, /\r\n0\r\nx-checksum: abc123\r\n\r\n$/, 'the trailer after the last chunk');
});

t.test('HEAD keeps the length and sends no body; the connection stays usable', async (t) => {
  const { data } = await raw(['HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n'], /GET \/after$/);
  const [head, next] = data.split(/(?=HTTP\/1\.1 200)/).filter((p) => p !== '');
  t.match(head, /\r\ncontent-length: 7\r\n/i, "HEAD's content-length is the upstream's");
  t.ok(head!.endsWith('\r\n\r\n'), 'no body after the HEAD head');
  t.match(next, /GET \/after$/);
});

t.test('Connection: close is honoured: the response says so and the connection closes', async (t) => {
  const { data, closed } = await raw(['GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], null);
  t.ok(closed);
  t.match(data, /\r\nconnection: close\r\n/i);
  t.match(data, /GET \/bye$/);
});

t.test('a request body sent in pieces, content-length and chunked, reaches the upstream whole', async (t) => {
  const cl = await raw(['POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello', ' world'], /hello world$/);
  t.match(cl.data, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello world$/);
  const chunked = await raw(['POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', '6\r\n world\r\n0\r\n\r\n'], /hello world$/);
  t.match(chunked.data, /\r\n\r\nhello world$/);
});

t.test('a malformed request gets 400 and the proxy serves the next connection', async (t) => {
  const bad = await raw(['GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n'], null);
  t.match(bad.data, /^HTTP\/1\.1 400 /);
  t.ok(bad.closed, 'a codec error closes the connection');
  const ok = await raw(['GET /still HTTP/1.1\r\nHost: x\r\n\r\n'], /GET \/still$/);
  t.match(ok.data, /^HTTP\/1\.1 200 OK/);
});
