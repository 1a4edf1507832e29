// The socket splicer shared by the TCP proxy and upgrade tunnels, on real sockets: bytes both
// ways with counters, half-close passed through (as Envoy's tcp_proxy does), a reset taking
// the other side down at once, and the idle timeout.
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { SocketSplice, type SpliceSettings } from '../src/upstream/socket-splice.ts';

interface Rig {
  /** The client's socket (downstream side). */
  readonly client: Socket;
  /** The backend's socket (upstream side). */
  readonly backend: Socket;
  readonly splice: SocketSplice;
  /** Resolves when the splice reports both sides closed. */
  readonly closed: Promise<SocketSplice>;
}

async function listen(onConn: (s: Socket) => void): Promise<Server> {
  const server: Server = createServer({ allowHalfOpen: true }, onConn);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

const portOf = (s: Server): number => (s.address() as AddressInfo).port;

/** client → proxy (splicing) → backend, all on 127.0.0.1. */
async function rig(t: Test, settings: SpliceSettings = { idleTimeoutMs: 0, delayedCloseMs: 1_000 }): Promise<Rig> {
  const backendSocket = Promise.withResolvers<Socket>();
  const backendServer = await listen((s) => {
    s.on('error', () => {});
    backendSocket.resolve(s);
  });
  const spliced = Promise.withResolvers<SocketSplice>();
  const closed = Promise.withResolvers<SocketSplice>();
  const proxyServer = await listen((down) => {
    const up = connect({ host: '127.0.0.1', port: portOf(backendServer), allowHalfOpen: true });
    const splice = new SocketSplice(down, up, settings, { onSpliceClosed: (x) => closed.resolve(x) });
    splice.start();
    spliced.resolve(splice);
  });
  const client = connect({ host: '127.0.0.1', port: portOf(proxyServer), allowHalfOpen: true });
  client.on('error', () => {});
  const splice = await spliced.promise;
  const backend = await backendSocket.promise;
  t.teardown(async () => {
    client.destroy();
    backend.destroy();
    splice.close();
    await closed.promise;
    proxyServer.close();
    backendServer.close();
  });
  return { client, backend, splice, closed: closed.promise };
}

/** The peer saw the proxy's side go: a FIN (the peer half-opens) or a reset. */
function gone(s: Socket): Promise<void> {
  if (s.readableEnded || s.closed) return Promise.resolve();
  return new Promise((r) => {
    s.resume();
    s.once('end', () => r());
    s.once('close', () => r());
  });
}

function collect(s: Socket): () => string {
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  return () => got;
}

t.test('bytes go both ways and are counted; half-close passes through and the other side may still answer', async (t) => {
  const { client, backend, closed } = await rig(t);
  const fromBackend = collect(client);
  const fromClient = collect(backend);
  client.write('hello');
  await new Promise<void>((r) => backend.once('data', () => r()));
  client.end();
  await once(backend, 'end');
  t.equal(fromClient(), 'hello', 'the backend got the bytes, then the FIN');
  backend.write('still here');
  backend.end();
  await once(client, 'end');
  t.equal(fromBackend(), 'still here', 'the backend answered after the client half-closed');
  const s = await closed;
  t.equal(s.bytesFromDownstream, 5);
  t.equal(s.bytesFromUpstream, 10);
  t.equal(s.downstreamEndedFirst, true);
  t.equal(s.downstreamReset, false);
  t.equal(s.upstreamError, null);
});

t.test('a backend reset takes the client down at once', async (t) => {
  const { client, backend, closed } = await rig(t);
  const started = Date.now();
  backend.resetAndDestroy();
  await gone(client);
  t.ok(Date.now() - started < 500, 'no delayed close for a reset');
  const s = await closed;
  t.not(s.upstreamError, null, 'the upstream error is kept');
});

t.test('the backend ends first: the client gets its bytes and the FIN, may still send, and both close once it ends', async (t) => {
  const { client, backend, closed } = await rig(t);
  const fromBackend = collect(client);
  const fromClient = collect(backend);
  backend.end('bye');
  await once(client, 'end');
  t.equal(fromBackend(), 'bye');
  client.end('late');
  await once(backend, 'end');
  t.equal(fromClient(), 'late', 'the client could still send after the backend was done');
  const s = await closed;
  t.equal(s.downstreamEndedFirst, false);
  t.equal(s.bytesFromUpstream, 3);
  t.equal(s.bytesFromDownstream, 4);
});

t.test('no byte either way for the idle time closes both; traffic postpones it', async (t) => {
  const { client, backend, closed } = await rig(t, { idleTimeoutMs: 300, delayedCloseMs: 1_000 });
  const started = Date.now();
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 100));
    client.write('x');
  }
  const s = await closed;
  const took = Date.now() - started;
  t.ok(took >= 650, `traffic kept it open (${took} ms)`);
  t.equal(s.idleTimedOut, true);
  await Promise.all([gone(client), gone(backend)]);
  t.pass('both peers saw their connection close');
});

t.test('close() cuts both sides and the owner still hears once', async (t) => {
  const { client, splice, closed } = await rig(t);
  splice.close();
  const s = await closed;
  t.equal(s.closedLocally, true);
  await gone(client);
});
