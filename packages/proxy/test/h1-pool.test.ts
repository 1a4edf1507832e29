// The HTTP/1.1 upstream pool against real node:http servers and raw `net` servers that
// misbehave on purpose: keep-alive reuse, request framing, bodiless responses, 1xx, Connection:
// close either way, early responses, idle closes and resets, trailers, header limits,
// malformed responses, abort, back-pressure, the connection limit's FIFO queue, close/destroy.
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import t, { type Test } from 'tap';
import type { Dispatcher } from 'undici';
import { H1Pool, type H1PoolOptions } from '../src/upstream/h1-pool.ts';

interface Result {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  trailers: Record<string, string | string[] | undefined>;
}

/** A handler that collects the response; `done` settles with it or the error. */
class Collect implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | null = null;
  status = 0;
  headers: Record<string, string | string[] | undefined> = {};
  chunks: Buffer[] = [];
  sent = false;
  readonly done: Promise<Result>;
  resolve!: (r: Result) => void;
  reject!: (e: Error) => void;
  onData: ((c: Dispatcher.DispatchController, chunk: Buffer) => void) | null = null;
  constructor() {
    this.done = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }
  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c;
  }
  onRequestSent(): void {
    this.sent = true;
  }
  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    this.status = status;
    this.headers = headers;
  }
  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
    this.onData?.(c, chunk);
  }
  onResponseEnd(_c: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.resolve({ status: this.status, headers: this.headers, body: Buffer.concat(this.chunks), trailers });
  }
  onResponseError(_c: Dispatcher.DispatchController | null, err: Error): void {
    this.reject(err);
  }
}

type Opts = { path?: string; method?: string; headers?: string[]; body?: Buffer | Readable | AsyncIterable<Uint8Array> | null };

function send(pool: H1Pool, o: Opts = {}, h = new Collect()): Collect {
  pool.dispatch({ path: o.path ?? '/', method: o.method ?? 'GET', headers: o.headers ?? ['host', 'svc.local'], body: o.body ?? null } as Dispatcher.DispatchOptions, h);
  return h;
}

function pool(t: Test, port: number, opts: Partial<H1PoolOptions> = {}): H1Pool {
  const p = new H1Pool(`http://127.0.0.1:${port}`, { connections: null, connectTimeout: 2_000, keepAliveTimeout: 4_000, ...opts });
  let n = 0;
  p.on('connect', () => n++);
  (p as unknown as { connects: () => number }).connects = () => n;
  t.teardown(() => p.destroy());
  return p;
}
const connects = (p: H1Pool): number => (p as unknown as { connects: () => number }).connects();

async function httpServer(t: Test, fn: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => fn(req, res, Buffer.concat(chunks)));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { server, port: (server.address() as AddressInfo).port, sockets };
}

/** A raw server: `onRequest` is called with the socket and the request head each time one is complete. */
async function rawServer(t: Test, onRequest: (s: Socket, head: string, n: number) => void): Promise<{ port: number; heads: string[] }> {
  const heads: string[] = [];
  const conns = new Set<Socket>();
  const server = createNetServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        heads.push(head);
        onRequest(s, head, heads.length);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of conns) s.destroy();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, heads };
}

t.test('keep-alive: sequential requests share one connection; headers arrive lower-cased, repeated ones as arrays', async (t) => {
  const { port } = await httpServer(t, (req, res) => {
    res.setHeader('Set-Cookie', ['a=1', 'b=2']);
    res.setHeader('X-Path', req.url!);
    res.end('ok');
  });
  const p = pool(t, port);
  for (const path of ['/one', '/two', '/three']) {
    const r = await send(p, { path }).done;
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'ok');
    t.equal(r.headers['x-path'], path);
    t.same(r.headers['set-cookie'], ['a=1', 'b=2']);
    await new Promise((r) => setImmediate(r));
  }
  t.equal(connects(p), 1, 'one connection for three requests');
  t.equal(p.stats.connected, 1);
});

t.test('request framing: a Buffer gets content-length, a stream without one is chunked, a stream with one is sent as is', async (t) => {
  const seen: { te: string | undefined; cl: string | undefined; body: string }[] = [];
  const { port } = await httpServer(t, (req, res, body) => {
    seen.push({ te: req.headers['transfer-encoding'], cl: req.headers['content-length'], body: body.toString() });
    res.end();
  });
  const p = pool(t, port);
  const a = send(p, { method: 'POST', body: Buffer.from('hello') });
  await a.done;
  t.ok(a.sent, 'onRequestSent after the body');
  await send(p, { method: 'POST', body: Readable.from([Buffer.from('ab'), Buffer.alloc(0), Buffer.from('cd')]) }).done;
  await send(p, { method: 'PUT', headers: ['host', 'svc.local', 'content-length', '4'], body: Readable.from([Buffer.from('wx'), Buffer.from('yz')]) }).done;
  async function* gen(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('it');
    yield Buffer.from('er');
  }
  await send(p, { method: 'POST', body: gen() }).done;
  await send(p, { method: 'POST' }).done;
  t.same(seen, [
    { te: undefined, cl: '5', body: 'hello' },
    { te: 'chunked', cl: undefined, body: 'abcd' },
    { te: undefined, cl: '4', body: 'wxyz' },
    { te: 'chunked', cl: undefined, body: 'iter' },
    { te: undefined, cl: '0', body: '' },
  ]);
});

t.test('HEAD, 204 and 304 carry no body and keep the connection', async (t) => {
  const { port } = await httpServer(t, (req, res) => {
    if (req.url === '/204') res.writeHead(204).end();
    else if (req.url === '/304') res.writeHead(304, { etag: '"x"' }).end();
    else res.writeHead(200, { 'content-length': '11' }).end(req.method === 'HEAD' ? undefined : 'hello world');
  });
  const p = pool(t, port);
  const head = await send(p, { method: 'HEAD' }).done;
  t.equal(head.headers['content-length'], '11');
  t.equal(head.body.length, 0);
  t.equal((await send(p, { path: '/204' }).done).status, 204);
  t.equal((await send(p, { path: '/304' }).done).status, 304);
  t.equal((await send(p).done).body.toString(), 'hello world');
  t.equal(connects(p), 1);
});

t.test('1xx responses are dropped; the final response follows', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n');
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const r = await send(pool(t, port)).done;
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'ok');
  t.equal(r.headers['link'], undefined, 'no header of the 1xx leaks in');
});

t.test('Connection: close from the server or the caller: the connection is not reused', async (t) => {
  const { port, heads } = await rawServer(t, (s, head) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n' + (head.includes('/server-close') ? 'Connection: close\r\n' : '') + '\r\nok');
    if (head.includes('/server-close') || /connection: close/i.test(head)) s.end();
  });
  const p = pool(t, port);
  await send(p, { path: '/server-close' }).done;
  await send(p, { path: '/a' }).done;
  t.equal(connects(p), 2, 'a new connection after the server said close');
  await send(p, { path: '/client-close', headers: ['host', 'svc.local', 'connection', 'close'] }).done;
  t.match(heads[2]!, /connection: close\r\n/);
  await send(p, { path: '/b' }).done;
  t.equal(connects(p), 3, 'a new connection after the caller said close');
});

t.test('a body delimited by the close of the connection is read to its end', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end');
  });
  const r = await send(pool(t, port)).done;
  t.equal(r.body.toString(), 'until the end');
});

t.test('a response before the request body is finished is delivered; the connection is not reused', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig');
  });
  const p = pool(t, port);
  const body = new PassThrough();
  body.write('the start of a long body');
  const r = await send(p, { method: 'POST', body }).done;
  t.equal(r.status, 413);
  t.equal(r.body.toString(), 'big');
  body.end('more');
  await send(p).done;
  t.equal(connects(p), 2);
});

t.test('an idle connection the upstream closes is not used again', async (t) => {
  const { port, sockets } = await httpServer(t, (_req, res) => res.end('ok'));
  const p = pool(t, port);
  await send(p).done;
  for (const s of sockets) s.end();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(p.stats.connected, 0, 'the closed connection left the pool');
  t.equal((await send(p).done).status, 200, 'the next request goes on a new connection, without error');
  t.equal(connects(p), 2);
});

t.test('a reset of a reused connection before any response byte fails the request with undici’s socket error', async (t) => {
  const { port } = await rawServer(t, (s, _head, n) => {
    if (n === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    else s.resetAndDestroy();
  });
  const p = pool(t, port);
  await send(p).done;
  const err = (await send(p).done.then(() => null, (e: Error) => e)) as Error & { code?: string };
  t.ok(err, 'the request fails');
  t.ok(err.code === 'ECONNRESET' || err.code === 'UND_ERR_SOCKET', `code ${err.code}: a reset, as the retry policy reads it`);
});

t.test('a close mid-response is UND_ERR_SOCKET', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort');
  });
  const h = send(pool(t, port));
  const err = (await h.done.then(() => null, (e: Error) => e)) as Error & { code?: string };
  t.equal(h.status, 200, 'the head had been delivered');
  t.ok(err.code === 'UND_ERR_SOCKET' || /^HPE_/.test(err.code ?? ''), `code ${err.code}`);
});

t.test('trailers of a chunked response reach onResponseEnd', async (t) => {
  const { port } = await httpServer(t, (_req, res) => {
    res.writeHead(200, { trailer: 'grpc-status' });
    res.write('data');
    res.addTrailers({ 'grpc-status': '0', 'X-Other': 'y' });
    res.end();
  });
  const r = await send(pool(t, port)).done;
  t.equal(r.body.toString(), 'data');
  t.same(r.trailers, { 'grpc-status': '0', 'x-other': 'y' });
});

t.test("response heads over Envoy's 60 KiB fail with UND_ERR_HEADERS_OVERFLOW; below it they pass", async (t) => {
  const { port } = await rawServer(t, (s, head) => {
    const size = head.includes('/big') ? 70 * 1024 : 50 * 1024;
    s.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(size)}\r\nContent-Length: 0\r\n\r\n`);
  });
  const p = pool(t, port);
  t.equal((await send(p).done).headers['x-big']!.length, 50 * 1024);
  const err = (await send(p, { path: '/big' }).done.then(() => null, (e: Error) => e)) as Error & { code?: string };
  t.equal(err.code, 'UND_ERR_HEADERS_OVERFLOW');
});

t.test('a malformed response is an HTTPParserError with llhttp’s code', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.write('HTTP/1.1 2x0 What\r\n\r\n');
  });
  const err = (await send(pool(t, port)).done.then(() => null, (e: Error) => e)) as Error & { code?: string };
  t.equal(err.name, 'HTTPParserError');
  t.match(err.code, /^HPE_/);
});

t.test('a refused connection fails with ECONNREFUSED; the requests waiting for it too', async (t) => {
  const probe = createNetServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  probe.close();
  await once(probe, 'close');
  const p = pool(t, port, { connections: 1 });
  const errs = await Promise.all([send(p), send(p), send(p)].map((h) => h.done.then(() => null, (e: Error & { code?: string }) => e.code)));
  t.same(errs, ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
});

t.test('abort: the handler gets its reason, the connection is dropped, the pool goes on', async (t) => {
  const { port } = await httpServer(t, (req, res) => {
    if (req.url === '/slow') res.write('partial');
    else res.end('ok');
  });
  const p = pool(t, port);
  const h = send(p, { path: '/slow' });
  h.onData = (c) => c.abort(new Error('enough'));
  const err = await h.done.then(() => null, (e: Error) => e);
  t.equal(err?.message, 'enough');
  t.equal(h.controller?.aborted, true);
  t.equal((await send(p).done).body.toString(), 'ok');
  // Aborted while queued: it leaves the queue and is never sent.
  const q = new H1Pool(`http://127.0.0.1:${port}`, { connections: 1, connectTimeout: 2_000, keepAliveTimeout: 4_000 });
  t.teardown(() => q.destroy());
  const first = send(q, { path: '/slow' });
  const queued = send(q);
  queued.controller!.abort(new Error('not wanted'));
  t.equal((await queued.done.then(() => null, (e: Error) => e))?.message, 'not wanted');
  first.controller!.abort(new Error('stop'));
  await first.done.catch(() => undefined);
});

t.test('back-pressure: a paused response resumes and arrives whole', async (t) => {
  const big = Buffer.alloc(4 * 1024 * 1024, 'x');
  const { port } = await httpServer(t, (req, res) => res.end(req.url === '/small' ? 'small' : big));
  const p = pool(t, port);
  const h = new Collect();
  let pauses = 0;
  h.onData = (c) => {
    if (pauses < 5) {
      pauses++;
      c.pause();
      setTimeout(() => c.resume(), 10);
    }
  };
  const r = await send(p, {}, h).done;
  t.equal(pauses, 5);
  t.equal(r.body.length, big.length);
  // Paused on its last chunk and never resumed: the connection still serves the next request.
  const last = new Collect();
  last.onData = (c) => c.pause();
  await send(p, { path: '/small' }, last).done;
  const next = await send(p).done;
  t.equal(next.body.length, big.length, 'the reused connection reads again');
  t.equal(connects(p), 1);
});

t.test('the connection limit queues requests in FIFO order', async (t) => {
  const order: string[] = [];
  const { port } = await httpServer(t, (req, res) => {
    order.push(req.url!);
    setTimeout(() => res.end(req.url), 5);
  });
  const p = pool(t, port, { connections: 1 });
  const rs = await Promise.all(['/1', '/2', '/3', '/4'].map((path) => send(p, { path }).done));
  t.same(
    rs.map((r) => r.body.toString()),
    ['/1', '/2', '/3', '/4'],
  );
  t.same(order, ['/1', '/2', '/3', '/4']);
  t.equal(connects(p), 1);
});

t.test('maxRequestsPerClient closes a connection after that many requests', async (t) => {
  const { port } = await httpServer(t, (_req, res) => res.end('ok'));
  const p = pool(t, port, { maxRequestsPerClient: 2 });
  for (let i = 0; i < 5; i++) await send(p).done;
  t.equal(connects(p), 3);
});

t.test('200 concurrent requests all complete', async (t) => {
  const { port } = await httpServer(t, (req, res, body) => res.end(`${req.url}:${body.length}`));
  const p = pool(t, port, { connections: 64 });
  const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => send(p, { path: `/${i}`, method: 'POST', body: Buffer.alloc(i) }).done));
  t.ok(rs.every((r, i) => r.status === 200 && r.body.toString() === `/${i}:${i}`));
  t.ok(connects(p) <= 64);
});

t.test('close waits for what is in flight; destroy fails it', async (t) => {
  const { port } = await httpServer(t, (req, res) => {
    if (req.url === '/hang') res.write('x');
    else setTimeout(() => res.end('late'), 30);
  });
  const p = pool(t, port);
  const h = send(p);
  const closed = p.close();
  t.equal((await h.done).body.toString(), 'late');
  await closed;
  t.equal(p.stats.connected, 0);
  const after = await send(p).done.then(() => null, (e: Error & { code?: string }) => e.code);
  t.equal(after, 'UND_ERR_CLOSED');

  const q = pool(t, port);
  const hang = send(q, { path: '/hang' });
  await new Promise((r) => setTimeout(r, 30));
  await q.destroy();
  const code = await hang.done.then(() => null, (e: Error & { code?: string }) => e.code);
  t.equal(code, 'UND_ERR_DESTROYED');
});

t.test('the idle keep-alive timeout closes a connection; the server’s Keep-Alive: timeout= shortens it', async (t) => {
  const { port } = await rawServer(t, (s) => {
    s.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 0\r\n\r\n');
  });
  const p = pool(t, port, { keepAliveTimeout: 100 });
  await send(p).done;
  t.equal(p.stats.connected, 1);
  await new Promise((r) => setTimeout(r, 250));
  t.equal(p.stats.connected, 0, 'closed after keepAliveTimeout');
  // timeout=2 less the 2 s margin: not reused at all.
  const q = pool(t, port, { keepAliveTimeout: 4_000 });
  await send(q).done;
  await new Promise((r) => setTimeout(r, 30));
  t.equal(q.stats.connected, 0, 'timeout=2 less the margin leaves nothing: closed after the response');
});

t.test('invalid header values are refused before anything is written', async (t) => {
  const { port, heads } = await rawServer(t, () => undefined);
  const p = pool(t, port);
  const err = (await send(p, { headers: ['host', 'a', 'x-bad', 'v\r\nx-injected: 1'] }).done.then(() => null, (e: Error) => e)) as Error & { code?: string };
  t.equal(err.code, 'UND_ERR_INVALID_ARG');
  t.equal(heads.length, 0);
});
