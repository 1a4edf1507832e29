// The downstream HTTP/1.1 codec (http/h1-server.ts) on real sockets: a TCP server on
// 127.0.0.1 hands its connections to the codec, a test handler answers, and raw clients check
// the bytes on the wire — framing, keep-alive, pipelining order, Expect, timeouts, limits,
// back-pressure and hand-over of upgrades.
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { H1Server, type H1Request, type H1Response, type H1ServerHandler, type H1ServerOptions } from '../src/http/h1-server.ts';

const OPTIONS: H1ServerOptions = { maxHeaderSize: 8192, headersTimeoutMs: 0, requestTimeoutMs: 0, idleTimeoutMs: 60_000 };

interface Served {
  readonly port: number;
  readonly codec: H1Server;
  readonly errors: string[];
  readonly upgrades: { req: H1Request; head: Buffer; socket: Socket }[];
}

/** A codec behind a real listening socket; `onRequest` answers each request. */
async function serve(t: Test, onRequest: (req: H1Request, res: H1Response) => void, options: Partial<H1ServerOptions> = {}): Promise<Served> {
  const errors: string[] = [];
  const upgrades: Served['upgrades'] = [];
  const handler: H1ServerHandler = {
    onRequest,
    shouldUpgrade: (req) => !/h2c/i.test(header(req, 'upgrade') ?? ''),
    onUpgrade: (req, socket, head) => {
      upgrades.push({ req, head, socket });
      socket.end(req.method === 'CONNECT' ? 'connected\n' : 'tunnel\n');
    },
    onClientError: (err, socket) => {
      errors.push(err.code ?? err.message);
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\nx-error: ${err.code}\r\n\r\n`);
    },
  };
  const codec = new H1Server({ ...OPTIONS, ...options }, handler);
  const tcp: Server = createServer((s) => codec.serve(s, null));
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    codec.closeAll();
    codec.close();
    tcp.close();
  });
  return { port: (tcp.address() as AddressInfo).port, codec, errors, upgrades };
}

function header(req: H1Request, name: string): string | null {
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === name) return req.rawHeaders[i + 1]!;
  return null;
}

/** Sends `bytes` (a string or steps), collects everything until the server closes or `until` matches. */
function exchange(port: number, bytes: string | string[], until?: RegExp, timeoutMs = 3000): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    let finished = false;
    const done = (closed: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ data, closed });
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => {
      for (const b of typeof bytes === 'string' ? [bytes] : bytes) s.write(b);
    });
    s.on('data', (c) => {
      data += c.toString('latin1');
      if (until !== undefined && until.test(data)) done(false);
    });
    s.on('close', () => done(true));
    s.on('error', reject);
  });
}

const ok = (res: H1Response, body = 'ok'): void => res.whole(200, ['content-length', String(body.length)], Buffer.from(body), null);

t.test('a keep-alive connection serves requests one after another, each with Date and no Connection header', async (t) => {
  const seen: string[] = [];
  const { port } = await serve(t, (req, res) => {
    seen.push(`${req.method} ${req.url} ${req.httpVersion} ${header(req, 'host')}`);
    ok(res, req.url);
  });
  const { data, closed } = await exchange(port, 'GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q=1 HTTP/1.1\r\nHost: y\r\n\r\n', /\/b\?q=1$/);
  t.same(seen, ['GET /a 1.1 x', 'GET /b?q=1 1.1 y']);
  const responses = data.split(/(?=HTTP\/1\.1 )/);
  t.equal(responses.length, 2);
  for (const r of responses) {
    t.match(r, /^HTTP\/1\.1 200 OK\r\n/);
    t.match(r, /\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n/);
    t.notMatch(r, /connection:/i);
  }
  t.notOk(closed, 'the connection stays open');
});

t.test('pipelined requests are answered in order even when a later one finishes first', async (t) => {
  const pending: H1Response[] = [];
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/slow') {
      pending.push(res);
      setTimeout(() => ok(res, 'slow'), 100);
    } else ok(res, 'fast');
  });
  const { data } = await exchange(port, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n', /fast$/);
  t.match(data, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nslowHTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nfast$/);
});

t.test('Connection: close and HTTP/1.0 close after the response; HTTP/1.0 keep-alive is answered as such', async (t) => {
  const { port } = await serve(t, (_req, res) => ok(res));
  const close = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n');
  t.ok(close.closed);
  t.match(close.data, /\r\nconnection: close\r\n/);
  t.equal(close.data.match(/HTTP\/1\.1 200/g)?.length, 1, 'nothing after the last request is served');
  const h10 = await exchange(port, 'GET / HTTP/1.0\r\n\r\n');
  t.ok(h10.closed);
  t.match(h10.data, /\r\nconnection: close\r\n/);
  const ka = await exchange(port, 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', /ok$/);
  t.notOk(ka.closed);
  t.match(ka.data, /\r\nconnection: keep-alive\r\n/);
});

t.test('a response without a length is chunked on HTTP/1.1 (with trailers) and read to the close on HTTP/1.0', async (t) => {
  const { port } = await serve(t, (_req, res) => {
    res.writeHead(200, ['content-type', 'text/plain']);
    res.write(Buffer.from('hello'));
    res.write(Buffer.from(' world'));
    res.end({ 'grpc-status': '0' });
  });
  const chunked = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n', /\r\n\r\n[^]*0\r\ngrpc-status: 0\r\n\r\n$/);
  t.match(chunked.data, /\r\ntransfer-encoding: chunked\r\n/);
  t.match(chunked.data, /\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n$/);
  const h10 = await exchange(port, 'GET / HTTP/1.0\r\n\r\n');
  t.notMatch(h10.data, /transfer-encoding/);
  t.match(h10.data, /\r\n\r\nhello world$/, 'the body as is, ended by the close');
  t.ok(h10.closed);
});

t.test('a head and its first body chunk go out in one write; a head with no body yet goes out at the end of the tick', async (t) => {
  const writes: string[][] = [];
  const { port } = await serve(t, (req, res) => {
    const socket = req.socket;
    const seen: string[] = [];
    writes.push(seen);
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      seen.push(Buffer.isBuffer(chunk) ? chunk.toString('latin1') : String(chunk));
      return write(chunk, ...rest);
    }) as typeof socket.write;
    res.writeHead(200, ['content-length', '5']);
    if (req.url === '/now') {
      res.write(Buffer.from('hello'));
      res.end(null);
      return;
    }
    // The body comes later: the head must not wait for it.
    setTimeout(() => {
      res.write(Buffer.from('later'));
      res.end(null);
    }, 300);
  });
  const now = await exchange(port, 'GET /now HTTP/1.1\r\nHost: x\r\n\r\n', /hello$/);
  t.match(now.data, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
  t.equal(writes[0]!.length, 1, 'one write to the socket');
  t.match(writes[0]![0], /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/, 'head and body in it');
  const started = Date.now();
  const head = await exchange(port, 'GET /later HTTP/1.1\r\nHost: x\r\n\r\n', /\r\n\r\n/);
  t.ok(Date.now() - started < 250, `the head arrived before the body was written (${Date.now() - started} ms)`);
  t.notMatch(head.data, /later/);
});

t.test('HEAD, 204 and 304 responses carry no body and no chunked framing', async (t) => {
  const { port } = await serve(t, (req, res) => {
    const status = req.url === '/204' ? 204 : req.url === '/304' ? 304 : 200;
    res.writeHead(status, status === 200 ? ['content-length', '5'] : []);
    res.write(Buffer.from('hello'));
    res.end(null);
  });
  const head = await exchange(port, 'HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.equal(head.data.match(/HTTP\/1\.1 /g)?.length, 3);
  t.notMatch(head.data, /hello|transfer-encoding/);
  t.match(head.data, /^HTTP\/1\.1 200 OK\r\ncontent-length: 5\r\n/, 'HEAD keeps the length it was given');
});

t.test('a header that cannot be sent throws before anything is written', async (t) => {
  const thrown: string[] = [];
  const { port } = await serve(t, (_req, res) => {
    for (const bad of [['x-bad', 'a\r\nx-injected: 1'], ['bad name', 'v'], ['x-nul', 'a\0b']]) {
      try {
        res.writeHead(200, bad);
      } catch (err) {
        thrown.push((err as { code: string }).code);
      }
    }
    t.notOk(res.headersSent);
    ok(res, 'clean');
  });
  const { data } = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', /clean$/);
  t.same(thrown, ['ERR_INVALID_CHAR', 'ERR_INVALID_HTTP_TOKEN', 'ERR_INVALID_CHAR']);
  t.match(data, /^HTTP\/1\.1 200 OK\r\ncontent-length: 5\r\ndate: [^\r]+\r\n\r\nclean$/);
});

t.test('Expect: 100-continue is answered before the body is sent; another expectation is a 417', async (t) => {
  let body = '';
  const { port } = await serve(t, (req, res) => {
    const s = req.bodyStream();
    s.on('data', (c: Buffer) => (body += c.toString()));
    s.on('end', () => ok(res, `got ${body}`));
  });
  const reply = await new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n'));
    let data = '';
    s.on('data', (c) => {
      data += c.toString();
      if (data === 'HTTP/1.1 100 Continue\r\n\r\n') s.write('hello');
      if (data.endsWith('got hello')) {
        s.destroy();
        resolve(data);
      }
    });
  });
  t.match(reply, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  // The body the client sends anyway is not taken for a request.
  const other = await exchange(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello');
  t.match(other.data, /^HTTP\/1\.1 417 Expectation Failed\r\n/);
  t.ok(other.closed);
});

t.test('request bodies, content-length and chunked, arrive whole; a slow reader holds the client back', async (t) => {
  const bodies: string[] = [];
  let slow: H1Request | null = null;
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/slow') {
      slow = req;
      return;
    }
    const chunks: Buffer[] = [];
    const s = req.bodyStream();
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      bodies.push(Buffer.concat(chunks).toString());
      ok(res);
    });
  });
  await exchange(port, 'POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n', /ok[^]*ok$/);
  t.same(bodies, ['abc', 'def']);
  // 8 MiB offered; nobody reads: the codec stops reading, the client's writes back up.
  const s = connect(port, '127.0.0.1');
  t.teardown(() => s.destroy());
  await new Promise<void>((resolve) => s.on('connect', resolve));
  s.write(`POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 << 20}\r\n\r\n`);
  const chunk = Buffer.alloc(64 << 10, 0x61);
  let offered = 0;
  for (let i = 0; i < 128 && s.write(chunk); i++) offered += chunk.length;
  await new Promise((r) => setTimeout(r, 300));
  t.ok(s.writableLength > 0 || offered < 8 << 20, 'the client could not hand over the whole body');
  const body = (slow as H1Request | null)!.bodyStream();
  t.ok(body.readableLength <= 2 << 20, `the codec buffered ${body.readableLength} bytes, not the whole body`);
  // Reading now lets the rest through (what was buffered comes first).
  let got = 0;
  body.on('data', (c: Buffer) => (got += c.length));
  while (offered < 8 << 20) {
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
    offered += chunk.length;
  }
  await new Promise((r) => body.once('end', r));
  t.equal(got, 8 << 20, 'the whole body arrived once read');
});

t.test('headers too large, a malformed request and a slow header each reach the client-error handler', async (t) => {
  const { port, errors } = await serve(t, (_req, res) => ok(res), { headersTimeoutMs: 300 });
  const big = await exchange(port, `GET / HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`);
  t.match(big.data, /x-error: HPE_HEADER_OVERFLOW/);
  const bad = await exchange(port, 'GET / HTTP/1.1\r\nBad Header: x\r\n\r\n');
  t.match(bad.data, /x-error: HPE_INVALID_HEADER_TOKEN/);
  const started = Date.now();
  const slow = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nx-slow: a', undefined, 3000);
  const took = Date.now() - started;
  t.match(slow.data, /x-error: ERR_HTTP_REQUEST_TIMEOUT/);
  t.ok(took >= 280 && took < 1500, `cut off after ${took} ms`);
  t.same(errors, ['HPE_HEADER_OVERFLOW', 'HPE_INVALID_HEADER_TOKEN', 'ERR_HTTP_REQUEST_TIMEOUT']);
});

t.test('an Upgrade and a CONNECT leave the codec with the bytes past their head; h2c is served as a plain request', async (t) => {
  const { port, upgrades } = await serve(t, (req, res) => ok(res, `plain ${req.url}`));
  const ws = await exchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst-frame');
  t.equal(ws.data, 'tunnel\n');
  t.equal(upgrades[0]!.req.url, '/ws');
  t.equal(upgrades[0]!.head.toString(), 'first-frame');
  const c = await exchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nhello');
  t.equal(c.data, 'connected\n');
  t.equal(upgrades[1]!.req.method, 'CONNECT');
  t.equal(upgrades[1]!.req.url, 'example.com:443');
  t.equal(upgrades[1]!.head.toString(), 'hello');
  const h2c = await exchange(port, 'GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n', /plain \/next$/);
  t.match(h2c.data, /plain \/h2c[^]*plain \/next$/, 'h2c and the request after it are served over HTTP/1.1');
  t.equal(upgrades.length, 2);
});

t.test('closing: idle connections close now, busy ones answer with Connection: close; an idle one times out', async (t) => {
  let held: H1Response | null = null;
  const { port, codec } = await serve(t, (req, res) => (req.url === '/held' ? (held = res) : ok(res)), { idleTimeoutMs: 200 });
  const idle = connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => idle.on('connect', resolve));
  const idleClosed = new Promise<number>((resolve) => {
    const at = Date.now();
    idle.on('close', () => resolve(Date.now() - at));
  });
  const idleAfter = await idleClosed;
  t.ok(idleAfter >= 150 && idleAfter < 2000, `an idle connection closed after ${idleAfter} ms`);
  const busy = exchange(port, 'GET /held HTTP/1.1\r\nHost: x\r\n\r\n');
  while (held === null) await new Promise((r) => setTimeout(r, 10));
  codec.closeIdle();
  ok(held as H1Response);
  const r = await busy;
  t.match(r.data, /\r\nconnection: close\r\n/);
  t.ok(r.closed);
});

t.test('a connection with bytes already buffered in its stream is served from the first byte; a consumed one reads the kernel directly', async (t) => {
  const codec = new H1Server(OPTIONS, {
    onRequest: (req, res) => ok(res, `seen ${req.url}`),
    shouldUpgrade: () => true,
    onUpgrade: (_req, socket) => socket.destroy(),
    onClientError: (_err, socket) => socket.destroy(),
  });
  const handed: { buffered: number; dataListeners: number }[] = [];
  const tcp: Server = createServer((s) => {
    // A listener filter that read ahead and left the bytes in the stream (paused, not yet emitted).
    s.pause();
    const handOver = (): void => {
      codec.serve(s, null);
      handed.push({ buffered: s.readableLength, dataListeners: s.listenerCount('data') });
    };
    if (handed.length === 0) s.once('readable', handOver);
    else handOver();
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    codec.closeAll();
    codec.close();
    tcp.close();
  });
  const port = (tcp.address() as AddressInfo).port;
  const first = await exchange(port, 'GET /buffered HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n', /seen \/second$/);
  t.match(first.data, /seen \/buffered[^]*seen \/second$/, 'both requests of the buffered read are answered');
  t.ok(handed[0]!.dataListeners > 0, 'bytes were buffered: the codec reads the stream');
  const second = await exchange(port, 'GET /direct HTTP/1.1\r\nHost: x\r\n\r\n', /seen \/direct$/);
  t.match(second.data, /seen \/direct$/);
  t.equal(handed[1]!.dataListeners, 0, 'nothing buffered: the parser reads the socket handle itself');
});
