// One upgrade try (TunnelUpstreamRequest) against a raw server on 127.0.0.1, reporting to a
// recording owner: the request head goes out as the client's header list says, 100 Continue
// is passed on and other 1xx dropped, a 101 hands the connection over with the bytes that
// came with it, a refusal's body is passed on as framed and ends the try, and malformed or
// oversized heads and early closes are failures as Envoy's codec reads them; a terminated
// CONNECT writes no head and is answered 200 once connected. Also the head
// parser and the chunked-body-end scanner on their own.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { AttemptFailure } from '../src/upstream/connect-errors.ts';
import { ChunkedBodyEnd, parseResponseHead, TunnelUpstreamRequest, type Http1ResponseHead, type TunnelUpstreamOwner } from '../src/upstream/tunnel-upstream-request.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';
import { TestHosts } from './helpers/upstream-fixtures.ts';

t.test('parseResponseHead: status, reason and the header lines as received; malformed heads refused', async (t) => {
  const h = parseResponseHead('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nconnection: keep-alive\r\nX-A:  b ');
  t.same(h, {
    status: 101,
    reason: 'Switching Protocols',
    headers: ['Upgrade', 'websocket', 'Connection', 'Upgrade', 'connection', 'keep-alive', 'X-A', 'b'],
    connection: 'Upgrade, keep-alive',
    upgrade: 'websocket',
    contentLength: null,
    transferEncoding: null,
  });
  t.equal(parseResponseHead('HTTP/1.0 403')?.reason, null, 'no reason phrase');
  t.equal(parseResponseHead('HTTP/2 200 OK'), null, 'not HTTP/1.x');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2'), null, 'conflicting content-length');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3')?.contentLength, '3', 'repeated equal content-length');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\nX-A : b'), null, 'space before the colon');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\nX-A: b\r\n c'), null, 'obs-fold');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\n: b'), null, 'no name');
  t.equal(parseResponseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked')?.transferEncoding, 'gzip, chunked');
});

t.test('ChunkedBodyEnd finds the end of a chunked body across reads, trailers included', async (t) => {
  const body = Buffer.from('5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT');
  const end = body.indexOf('NEXT');
  for (const split of [1, 3, 9, 17, 30, end - 3, end - 1]) {
    const s = new ChunkedBodyEnd();
    t.equal(s.scan(body.subarray(0, split)), -1, `not ended in the first ${split} bytes`);
    t.equal(s.scan(body.subarray(split)), end - split, `ends at byte ${end} (split at ${split})`);
  }
  t.equal(new ChunkedBodyEnd().scan(Buffer.from('0\r\n\r\n')), 5, 'an empty body');
  t.equal(new ChunkedBodyEnd().scan(Buffer.from('3\r\nabc\r\n')), -1, 'no last chunk yet');
});

const made = new TestHosts();
const clusterHost = (port: number): ClusterHost => made.host('127.0.0.1', port);

/** The router's side, recording what it hears. */
class Owner implements TunnelUpstreamOwner {
  current: TunnelUpstreamRequest | null = null;
  readonly events: string[] = [];
  body = '';
  head: Http1ResponseHead | null = null;
  /** After a 101: the tunnel bytes, from `detach` and then from the socket. */
  tunnel = '';
  closes = 0;
  #settled: () => void = () => {};
  readonly settled = new Promise<void>((resolve) => (this.#settled = resolve));

  isCurrent(r: TunnelUpstreamRequest): boolean {
    return this.current === r;
  }
  onUpstreamRequestSent(_r: TunnelUpstreamRequest): void {
    this.events.push('connected');
  }
  onUpstreamContinue(_r: TunnelUpstreamRequest, head: Buffer): void {
    this.events.push(`continue ${JSON.stringify(head.toString('latin1'))}`);
  }
  onUpstreamResponseHead(r: TunnelUpstreamRequest, status: number, head: Http1ResponseHead): boolean {
    this.events.push(`head ${status}`);
    this.head = head;
    if (status === 101) {
      this.tunnel = r.detach().toString();
      r.socket.on('data', (chunk: Buffer) => {
        this.tunnel += chunk.toString();
        if (this.tunnel.endsWith('END')) this.#settled();
      });
      if (this.tunnel.endsWith('END')) this.#settled();
    }
    return true;
  }
  onUpstreamData(_r: TunnelUpstreamRequest, chunk: Buffer): boolean {
    this.body += chunk.toString();
    return true;
  }
  onUpstreamEnd(): void {
    this.events.push('end');
    this.#settled();
  }
  onUpstreamFailed(_r: TunnelUpstreamRequest, failure: AttemptFailure, reason: string): void {
    this.events.push(`failed ${failure} ${reason}`);
    this.#settled();
  }
  onUpstreamWritable(): void {}
  onUpstreamClosed(): void {
    this.closes++;
  }
}

/** A raw server that reads the request head, then writes `reply` (each string one write) and leaves the socket to `after`. */
async function rawServer(t: Test, reply: string[], after: (s: Socket) => void = () => {}): Promise<{ port: number; request: Promise<string> }> {
  let gotRequest: (head: string) => void = () => {};
  const request = new Promise<string>((resolve) => (gotRequest = resolve));
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    let buf = '';
    s.on('error', () => {});
    s.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      if (!buf.includes('\r\n\r\n') || reply.length === 0) return;
      gotRequest(buf);
      for (const part of reply.splice(0)) s.write(part, 'latin1');
      after(s);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, request };
}

t.teardown(async () => {
  await made.destroyAll();
});

function start(port: number, method = 'GET', body = Buffer.alloc(0)): { owner: Owner; r: TunnelUpstreamRequest; h: ClusterHost } {
  const h = clusterHost(port);
  const owner = new Owner();
  const r = new TunnelUpstreamRequest(owner, h, method, '/chat', ['Host', 'svc', 'Connection', 'keep-alive, Upgrade', 'Upgrade', 'websocket'], body, 1_000, 0);
  owner.current = r;
  return { owner, r, h };
}

t.test('a 101 after a 100 Continue: the head goes out as sent, the connection is handed over with its bytes', async (t) => {
  const { port, request } = await rawServer(t, ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nFIRST'], (s) =>
    setTimeout(() => s.write('-END'), 20),
  );
  const { owner, r, h } = start(port, 'GET', Buffer.from('early'));
  t.equal(h.host.active, 1);
  t.equal(await request, 'GET /chat HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\nearly', 'the request head byte for byte, the early bytes after it');
  await owner.settled;
  t.same(owner.events, ['connected', `continue ${JSON.stringify('HTTP/1.1 100 Continue\r\n\r\n')}`, 'head 101'], '102 dropped, 100 passed on');
  t.equal(owner.head?.upgrade, 'websocket');
  t.equal(owner.tunnel, 'FIRST-END', 'the tunnel bytes, those read with the 101 first');
  t.equal(h.host.active, 1, 'a tunnel holds its host until released');
  r.release();
  r.release();
  t.equal(h.host.active, 0, 'once');
  r.socket.destroy();
});

t.test('a refusal with a content-length body: passed on as framed, then the try ends', async (t) => {
  const { port } = await rawServer(t, ['HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot ', 'here!EXTRA']);
  const { owner, r, h } = start(port);
  await owner.settled;
  t.same(owner.events.slice(0, 3), ['connected', 'head 403', 'end']);
  t.equal(owner.body, 'not here!', 'nothing past the announced length');
  t.equal(r.socket.destroyed, true, 'the connection is done with');
  r.release();
  t.equal(h.host.active, 0);
});

t.test('a HEAD refusal has no body whatever its content-length says', async (t) => {
  const { port } = await rawServer(t, ['HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\n']);
  const { owner, r } = start(port, 'HEAD');
  await owner.settled;
  t.same(owner.events.slice(0, 3), ['connected', 'head 404', 'end']);
  t.equal(owner.body, '');
  r.release();
});

t.test('a chunked body cut short by the upstream is a reset of the response', async (t) => {
  const { port } = await rawServer(t, ['HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel'], (s) => s.end());
  const { owner, r } = start(port);
  await owner.settled;
  t.same(owner.events.slice(0, 3), ['connected', 'head 503', `failed ${AttemptFailure.Reset} `]);
  t.equal(owner.body, '5\r\nhel', 'the chunked framing is passed on as it is');
  r.cancel();
});

t.test('a close before the response head is a reset; a malformed or oversized head a protocol error', async (t) => {
  const early = await rawServer(t, [''], (s) => s.end());
  const a = start(early.port);
  await a.owner.settled;
  t.same(a.owner.events, ['connected', `failed ${AttemptFailure.Reset} `]);
  a.r.cancel();

  const bad = await rawServer(t, ['HTTP/1.1 200 OK\r\nBad-Header : x\r\n\r\n']);
  const b = start(bad.port);
  await b.owner.settled;
  t.same(b.owner.events, ['connected', `failed ${AttemptFailure.ProtocolError} invalid_response`]);
  b.r.cancel();

  const big = await rawServer(t, [`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(61 * 1024)}`]);
  const c = start(big.port);
  await c.owner.settled;
  t.same(c.owner.events, ['connected', `failed ${AttemptFailure.ProtocolError} headers_too_large`]);
  c.r.cancel();
  t.equal(c.h.host.active, 0);
});

t.test('a refused connection is a connect failure with its errno reason', async (t) => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const { owner, r, h } = start(port);
  await owner.settled;
  t.same(owner.events, [`failed ${AttemptFailure.ConnectFailure} ECONNREFUSED`]);
  r.cancel();
  t.equal(h.host.active, 0);
});

t.test('a terminated CONNECT: no request head, a 200 as soon as the connection is up, then the connection is the tunnel', async (t) => {
  let received = '';
  const server = createServer((s) => {
    s.on('error', () => {});
    s.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.endsWith('!')) s.write('BACK');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  class ConnectOwner extends Owner {
    #back: (s: string) => void = () => {};
    readonly back = new Promise<string>((resolve) => (this.#back = resolve));
    override onUpstreamResponseHead(r: TunnelUpstreamRequest, status: number, head: Http1ResponseHead): boolean {
      this.events.push(`head ${status}`);
      this.head = head;
      t.equal(r.detach().length, 0, 'nothing read before the 200');
      r.socket.on('data', (chunk: Buffer) => this.#back(chunk.toString()));
      r.socket.write('!');
      return true;
    }
  }
  const h = clusterHost((server.address() as AddressInfo).port);
  const owner = new ConnectOwner();
  const r = TunnelUpstreamRequest.terminateConnect(owner, h, Buffer.from('early'), 1_000);
  owner.current = r;
  t.equal(await owner.back, 'BACK', 'bytes flow both ways on the handed-over connection');
  t.same(owner.events, ['connected', 'head 200'], 'connected, then the synthesized 200');
  t.same(owner.head?.headers, [], 'the 200 carries no upstream headers');
  t.equal(received, 'early!', 'no request head went up: the client bytes that came with the CONNECT are the first');
  r.release();
  t.equal(h.host.active, 0);
  r.socket.destroy();

  const refused = new Owner();
  const dead = clusterHost(await new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  }));
  const f = TunnelUpstreamRequest.terminateConnect(refused, dead, Buffer.alloc(0), 1_000);
  refused.current = f;
  await refused.settled;
  t.same(refused.events, [`failed ${AttemptFailure.ConnectFailure} ECONNREFUSED`], 'a refused connection is a connect failure, before any 200');
  f.cancel();
});
