import { PEER_EXCHANGE_ALPN, type PeerWorkload } from '../telemetry/peer-metadata.ts';
import { createServer as createH2Server, type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2';
import { chmodSync } from 'node:fs';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ListenerTls, TcpRoute, TlsServer } from '@remora/config';
import { Connection, originalDestinations, type ListenerContext } from '../http/connection.ts';
import { Exchange } from '../http/exchange.ts';
import { H1Server, type H1Request, type H1Response, type H1ServerHandler } from '../http/h1-server.ts';
import { H1_WRITER } from '../http/response-writer-h1.ts';
import { H2_WRITER } from '../http/response-writer-h2.ts';
import { LocalReplies, rawLocalReply } from '../http/local-reply.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import { shouldUpgrade, UpgradeTunnels } from '../http/upgrade.ts';
import type { PeerIdentity } from '@remora/filters';
import type { ListenerSettings } from '../http/listener-settings.ts';
import { PrefaceSocket } from './preface-socket.ts';
import { HANDSHAKE_TIMEOUT_MS, TlsFront } from './tls-front.ts';
import { TcpTunnel } from './tcp-proxy.ts';
import { TlsStats } from './tls-stats.ts';
import { MAX_CLIENT_HELLO, parseClientHello } from './client-hello.ts';
import type { OriginalDestination } from './original-dst.ts';
import type { AccessLogRecord } from '../telemetry/access-log-record.ts';
import { removeStaleSocket, socketPath } from '../unix-socket.ts';

/** Envoy's default limit on request headers (max_request_headers_kb: 60). */
const MAX_HEADER_BYTES = 60 * 1024;
/** Envoy's default downstream idle timeout (1 h). */
const IDLE_TIMEOUT_MS = 3_600_000;

const EMPTY = Buffer.alloc(0);

/** The HTTP/2 connection preface starts with these bytes; no HTTP/1 request line does. */
const H2_PREFACE_START = Buffer.from('PRI ');

const NO_ROUTES: readonly TcpRoute[] = [];

/** A TLS socket made on a redirected connection reports the same original destination. */
function keepOriginalDestination(raw: Socket, tls: Socket): void {
  const od = originalDestinations.get(raw);
  if (od !== undefined) originalDestinations.set(tls, od);
}

type Detected = 'http' | 'tls' | 'tcp';

/** The whole HTTP/2 connection preface. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const HTTP1_VERSION = Buffer.from('HTTP/1.');
/** Envoy's http_inspector gives up on a request line longer than this. */
const MAX_INSPECT = 64 * 1024;

/**
 * What the first bytes of a connection are (Istio's protocol detection); null while more
 * bytes are needed. HTTP/1 is a whole request line, `METHOD SP target SP HTTP/1.x CR`, as
 * Envoy's http_inspector parses it, so a text protocol with spaces (Redis' `SET k v`) is not
 * taken for HTTP.
 */
export function detectProtocol(b: Buffer): Detected | null {
  if (b.length === 0) return null;
  if (b[0] === 0x16) {
    const hello = parseClientHello(b);
    if (hello === null) return b.length < MAX_CLIENT_HELLO ? null : 'tcp';
    return hello === 'not-tls' ? 'tcp' : 'tls';
  }
  const n = Math.min(b.length, H2_PREFACE.length);
  if (b.compare(H2_PREFACE, 0, n, 0, n) === 0) return n === H2_PREFACE.length ? 'http' : null;
  let i = 0;
  // The method: an upper-case token (GET, POST, M-SEARCH, ...).
  while (i < b.length && ((b[i]! >= 0x41 && b[i]! <= 0x5a) || b[i] === 0x2d || b[i] === 0x5f)) i++;
  if (i === b.length) return i <= 32 ? null : 'tcp';
  if (i === 0 || b[i] !== 0x20) return 'tcp';
  const targetStart = ++i;
  while (i < b.length && b[i]! > 0x20 && b[i]! < 0x7f) i++;
  if (i === b.length) return b.length < MAX_INSPECT ? null : 'tcp';
  if (i === targetStart || b[i] !== 0x20) return 'tcp';
  i++;
  for (let k = 0; k < HTTP1_VERSION.length; k++, i++) {
    if (i === b.length) return null;
    if (b[i] !== HTTP1_VERSION[k]) return 'tcp';
  }
  if (i === b.length) return null;
  if (b[i] !== 0x30 && b[i] !== 0x31) return 'tcp';
  i++;
  if (i === b.length) return null;
  return b[i] === 0x0d ? 'http' : 'tcp';
}

/** The Gateway TLS server (its origin) each terminated connection's handshake picked. */
const terminatedBy = new WeakMap<Socket, string>();

/**
 * An HTTP listener on one address and port, serving HTTP/1.1 and HTTP/2 with prior
 * knowledge (h2c) on the same port: the first bytes of each connection say which, as Envoy's
 * codec auto-detection does. Its snapshot is swapped by the runtime on every config change;
 * each request captures the snapshot current when it arrived.
 */
export class HttpListener {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  /** False for Envoy's `bind_to_port: false`: no socket, only connections handed over. */
  readonly bound: boolean;
  snapshot: ListenerSettings;
  /** Accepts connections and hands each to the HTTP/1 or the HTTP/2 server. */
  readonly tcp: TcpServer;
  /** The HTTP/1.1 codec's connections (it never listens itself). */
  readonly #h1: H1Server;
  /** The HTTP/2 server for prior-knowledge connections (it never listens itself). */
  readonly h2: Http2Server;
  readonly #ctx: ListenerContext;
  readonly #connections = new Map<Socket, Connection>();
  /** HTTP/1.1 Upgrade (WebSocket) tunnels; Node stops tracking a socket once it is upgraded. */
  readonly #upgrades: UpgradeTunnels;
  readonly #sessions = new Map<ServerHttp2Session, Connection>();
  /** The connection whose socket is being handed to the HTTP/2 server right now. */
  #handingOver: Connection | null = null;
  #open = 0;
  /** TLS termination and SNI routing; made on the first TLS connection. */
  #tls: TlsFront | null = null;
  /** Connections accepted (Envoy's `listener.<address>.downstream_cx_total`). */
  cxTotal = 0;
  /** Envoy's `ssl.*` counters of this listener's TLS connections. */
  readonly tlsStats = new TlsStats();
  /** TLS-passthrough connections in flight. */
  readonly #tunnels = new Set<TcpTunnel>();

  constructor(snapshot: ListenerSettings, ctx: ListenerContext) {
    this.name = snapshot.listener.name;
    this.address = snapshot.listener.address;
    this.port = snapshot.listener.port;
    this.bound = snapshot.listener.bindToPort !== false;
    this.snapshot = snapshot;
    this.#ctx = ctx;
    this.#h1 = new H1Server(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        idleTimeoutMs: IDLE_TIMEOUT_MS,
        // Slow-loris clients: headers must arrive in time; bodies may stream as long as they
        // need unless a request timeout is set.
        headersTimeoutMs: ctx.timeouts.headersMs,
        requestTimeoutMs: ctx.timeouts.requestMs,
      },
      this.#h1Handler(),
    );
    this.#upgrades = new UpgradeTunnels(ctx);
    this.h2 = createH2Server({ maxSessionMemory: 64 }, (req, res) => this.#onH2Request(req, res));
    this.h2.on('session', (session: ServerHttp2Session) => {
      const c = this.#handingOver;
      if (c === null) return;
      this.#sessions.set(session, c);
      session.once('close', () => this.#sessions.delete(session));
      // A broken session is the client's problem; never the process's.
      session.on('error', () => {});
    });
    this.tcp = createTcpServer((socket) => this.#onSocket(socket));
  }

  /** What the HTTP/1 codec hands the listener: requests, upgrades, CONNECT, and what it refused. */
  #h1Handler(): H1ServerHandler {
    return {
      onRequest: (req, res) => this.#onRequest(req, res),
      // Every Upgrade but h2c is tunnelled; h2c is served as a plain request, as Envoy does.
      shouldUpgrade,
      onUpgrade: (req, socket, head) => {
        if (this.#refusesVersion(req)) {
          this.#upgradeRequired(req, socket, null);
          return;
        }
        const conn = this.#connections.get(socket)!;
        if (req.method === 'CONNECT') this.#upgrades.connect(this.snapshot, conn, req, socket, head);
        else this.#upgrades.start(this.snapshot, conn, req, socket, head);
      },
      onClientError: (err, socket) => this.#onClientError(err, socket),
    };
  }

  /** An HTTP/1 connection: tracked (every request and upgrade the codec hands over finds it), then parsed by the codec (`head`: bytes already read). */
  #serveH1(socket: Socket, head: Buffer | null): void {
    this.#track(socket);
    this.#h1.serve(socket, head);
  }

  /** A connection's state, kept until the socket closes (which ends what is still in flight on it). */
  #track(socket: Socket, h2 = false): Connection {
    const c = this.#connectionOf(socket);
    this.#connections.set(socket, c);
    const http = this.snapshot.http;
    http.cxTotal.value++;
    http.cxActive.value++;
    if (h2) http.cxHttp2Total.value++;
    else http.cxHttp1Total.value++;
    socket.once('close', () => {
      http.cxActive.value--;
      this.#connections.delete(socket);
      c.onClose();
    });
    return c;
  }

  #connectionOf(socket: Socket): Connection {
    return new Connection(socket, this.#peerOf(socket), this.snapshot.direction, terminatedBy.get(socket) ?? null);
  }

  /** The peer's identity: from its verified mesh certificate, else what the test hook says. */
  #peerOf(socket: Socket): PeerIdentity | null {
    const fromTls = Connection.tlsPeer(socket);
    if (fromTls !== null) return fromTls;
    const f = this.#ctx.peerIdentity;
    return f === null ? null : f(socket);
  }

  /**
   * A capture listener (`useOriginalDst`) first finds where the connection was going; every
   * other connection is served here.
   */
  #onSocket(socket: Socket): void {
    if (this.snapshot.listener.useOriginalDst === true && this.#ctx.originalDestination !== null) {
      this.#capture(socket, this.#ctx.originalDestination);
      return;
    }
    this.#serve(socket);
  }

  /**
   * A connection a capture listener handed over (its original destination is this
   * listener's): served, and counted, here, as Envoy does with the listener it hands to.
   */
  accept(socket: Socket): void {
    this.#serve(socket);
  }

  /**
   * Envoy's `use_original_dst`: the original destination is looked up once (nothing is read
   * from the connection meanwhile), then the connection goes to the listener of this
   * direction for that destination, else to the catch-all chain; one that was not redirected
   * is served by this listener's own chain.
   */
  #capture(socket: Socket, lookup: (socket: Socket, listenerPort: number) => Promise<OriginalDestination | null>): void {
    const onEarlyError = (): void => {
      socket.destroy();
    };
    socket.on('error', onEarlyError);
    const route = (dest: OriginalDestination | null): void => {
      socket.off('error', onEarlyError);
      if (socket.destroyed) return;
      if (dest === null) {
        this.#serve(socket);
        return;
      }
      originalDestinations.set(socket, dest);
      if (dest.port === this.boundPort) {
        // To the capture port itself: handing it to this listener again would loop (istiod's
        // `virtualOutbound-blackhole` / `virtualInbound-blackhole` chains): closed.
        this.#count(socket);
        this.#tunnel(socket, EMPTY, NO_ROUTES, null);
        return;
      }
      const target = this.#ctx.handOff(this.snapshot.direction, dest);
      if (target !== null && target !== this) {
        target.accept(socket);
        return;
      }
      this.#count(socket);
      this.#tunnel(socket, EMPTY, this.snapshot.listener.catchAll ?? NO_ROUTES, null);
    };
    lookup(socket, this.boundPort).then(route, (err: Error) => {
      this.#ctx.connectionLog.debug(`listener ${this.name}: original destination lookup failed: ${err.message}; served as not redirected`);
      route(null);
    });
  }

  #count(socket: Socket): void {
    this.#open++;
    this.cxTotal++;
    socket.once('close', () => this.#open--);
  }

  /** TLS listeners go through the TLS front first; plaintext is told apart as HTTP/2 or HTTP/1. */
  #serve(socket: Socket): void {
    this.#count(socket);
    const listener = this.snapshot.listener;
    const tls = listener.tls;
    if (listener.tcpProxy !== undefined) {
      this.#serveTcp(socket, listener.tcpProxy, tls);
      return;
    }
    const detect = listener.detectProtocol;
    if (tls === null) {
      if (detect !== undefined) this.#detect(socket, EMPTY, detect.tcp, detect.timeoutMs);
      else this.#sniffPlain(socket, null);
      return;
    }
    this.#tlsFront().accept(socket, tls, {
      plain: (s, head) => {
        if (detect !== undefined) {
          this.#detect(s, head, detect.tcp, detect.timeoutMs);
          return;
        }
        this.#sniffPlain(s, head);
        s.resume();
      },
      secure: (t, h2, server) => {
        if (server !== null) terminatedBy.set(t, server.origin);
        keepOriginalDestination(socket, t);
        this.#dispatchSecure(t, h2);
      },
      passthrough: (s, head, server, sni) => this.#passthrough(s, head, server, sni),
    });
  }

  #tlsFront(): TlsFront {
    // The hello and handshake within 15 s (Envoy's listener filter timeout), or sooner when
    // request headers must come sooner.
    const headersMs = this.#ctx.timeouts.headersMs;
    return (this.#tls ??= new TlsFront(this.#ctx.identity, this.#ctx.connectionLog, this.tlsStats, headersMs > 0 ? Math.min(HANDSHAKE_TIMEOUT_MS, headersMs) : HANDSHAKE_TIMEOUT_MS));
  }

  /**
   * A TCP listener: bytes both ways, no HTTP. On a sidecar's inbound side with mesh TLS,
   * Istio mTLS is terminated first (STRICT refuses plaintext, PERMISSIVE tunnels it as it
   * comes) and the plaintext tunnelled; routes that name servers get the ClientHello's SNI.
   */
  #serveTcp(socket: Socket, routes: readonly TcpRoute[], tls: ListenerTls | null): void {
    // Istio's metadata exchange runs (first in the chain) where the listener has it: over mTLS
    // that negotiated `istio-peer-exchange`; elsewhere it counts a connection without it.
    const exchange = this.snapshot.listener.metadataExchange === true;
    const mx = this.#ctx.metadataExchange;
    if (tls?.kind === 'mesh') {
      this.#tlsFront().accept(socket, tls, {
        plain: (s, head) => {
          if (exchange) mx.notNegotiated();
          this.#tunnel(s, head, routes, null);
        },
        secure: (t) => {
          keepOriginalDestination(socket, t);
          const peer = Connection.tlsPeer(t);
          if (exchange && t.alpnProtocol === PEER_EXCHANGE_ALPN) {
            mx.run(t, (workload, rest) => this.#tunnel(t, rest, routes, t.servername || null, peer, workload, true));
            return;
          }
          if (exchange) mx.notNegotiated();
          this.#tunnel(t, EMPTY, routes, t.servername || null, peer);
        },
        passthrough: (s, head, _server, sni) => this.#tunnel(s, head, routes, sni),
      }, exchange);
      return;
    }
    if (exchange) mx.notNegotiated();
    if (!routes.some((r) => r.sniHosts.length > 0)) {
      this.#tunnel(socket, EMPTY, routes, null);
      return;
    }
    // Envoy's tls_inspector: the SNI of a ClientHello; other bytes (or none in time) have none.
    this.#peek(
      socket,
      EMPTY,
      HANDSHAKE_TIMEOUT_MS,
      (seen) => {
        const hello = parseClientHello(seen);
        if (hello === null && seen.length < MAX_CLIENT_HELLO) return undefined;
        return hello !== null && hello !== 'not-tls' ? hello.serverName : null;
      },
      null,
      (seen, sni) => this.#tunnel(socket, seen, routes, sni),
    );
  }

  /**
   * Istio's protocol detection (Envoy's http_inspector and tls_inspector): an HTTP/1 request
   * line or the HTTP/2 preface goes to the connection manager; a TLS ClientHello goes to the
   * TCP routes by its SNI; other bytes, or none within `timeoutMs` (a server-first protocol),
   * go to the TCP routes as they are. `head`: bytes already read.
   */
  #detect(socket: Socket, head: Buffer, tcp: readonly TcpRoute[], timeoutMs: number): void {
    // A listener filter timeout of 0 waits for bytes as long as it takes (Envoy's meaning).
    this.#peek(socket, head, timeoutMs, (seen) => detectProtocol(seen) ?? undefined, 'tcp' as Detected, (seen, kind) => {
      if (kind === 'http') {
        this.#sniffPlain(socket, seen);
        socket.resume();
        return;
      }
      let sni: string | null = null;
      if (kind === 'tls') {
        const hello = parseClientHello(seen);
        if (hello !== null && hello !== 'not-tls') sni = hello.serverName;
      }
      this.#tunnel(socket, seen, tcp, sni);
    });
  }

  /**
   * Envoy's listener filters reading ahead: collects a connection's first bytes (`head`: those
   * already read) until `classify` decides, or `timeoutMs` passes (0: no limit) and the verdict
   * is `onTimeout`; then the socket is paused, these listeners removed, and `done` gets the
   * bytes and the verdict (not when the socket is gone). An error before that destroys it.
   */
  #peek<T>(socket: Socket, head: Buffer, timeoutMs: number, classify: (seen: Buffer) => T | undefined, onTimeout: T, done: (seen: Buffer, verdict: T) => void): void {
    let seen = head;
    let settled = false;
    const finish = (verdict: T): void => {
      if (settled) return;
      settled = true;
      if (timer !== null) clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onEarlyError);
      socket.pause();
      if (!socket.destroyed) done(seen, verdict);
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const verdict = classify(seen);
      if (verdict !== undefined) finish(verdict);
    };
    const onEarlyError = (): void => {
      settled = true;
      if (timer !== null) clearTimeout(timer);
      socket.destroy();
    };
    const timer = timeoutMs > 0 ? setTimeout(() => finish(onTimeout), timeoutMs) : null;
    if (timer !== null) socket.once('close', () => clearTimeout(timer));
    socket.on('error', onEarlyError);
    socket.on('data', onData);
    if (seen.length > 0) {
      const verdict = classify(seen);
      if (verdict !== undefined) {
        finish(verdict);
        return;
      }
    }
    socket.resume();
  }

  #dispatchSecure(socket: TLSSocket, h2: boolean): void {
    if (!h2) {
      this.#serveH1(socket, null);
      return;
    }
    this.#toH2(socket, socket);
  }

  /** Hands a connection to the HTTP/2 server; `stream` is what it reads (the socket, or a replay of it). */
  #toH2(socket: Socket, stream: Socket | PrefaceSocket): void {
    this.#handingOver = this.#track(socket, true);
    this.h2.emit('connection', stream);
    this.#handingOver = null;
  }

  /** TLS PASSTHROUGH: the bytes go, untouched, to a host of the cluster the SNI routes to. */
  #passthrough(socket: Socket, head: Buffer, server: TlsServer, sni: string | null): void {
    this.#tunnel(socket, head, server.tcpRoutes, sni);
  }

  /** Proxies a connection as raw TCP (a TCP server's, or a passthrough one's after its hello). */
  #tunnel(socket: Socket, head: Buffer, routes: readonly TcpRoute[], sni: string | null, peer: PeerIdentity | null = null, workload: PeerWorkload | null = null, exchanged = false): void {
    const snap = this.snapshot;
    const ctx = { clusters: snap.clusters, unroutedStats: snap.unroutedStats, log: snap.accessLog ?? this.#ctx.accessLog, metrics: this.#ctx.metrics, inbound: snap.direction === 'inbound', metadataExchange: this.#ctx.metadataExchange, istioStats: snap.istioStats };
    this.#tunnels.add(new TcpTunnel(socket, head, routes, sni, ctx, (t) => this.#tunnels.delete(t), peer, workload, exchanged));
  }

  /** Peeks at the first bytes: the HTTP/2 preface goes to the HTTP/2 server, the rest to HTTP/1. */
  #sniffPlain(socket: Socket, head: Buffer | null): void {
    let seen: Buffer | null = null;
    const onData = (chunk: Buffer): void => {
      seen = seen === null ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE_START.length);
      const h2 = seen.subarray(0, n).equals(H2_PREFACE_START.subarray(0, n));
      if (h2 && seen.length < H2_PREFACE_START.length) return; // not enough bytes to tell yet
      socket.off('data', onData);
      socket.off('error', onEarlyError);
      socket.pause();
      if (h2) {
        this.#toH2(socket, new PrefaceSocket(socket, seen));
      } else {
        this.#serveH1(socket, seen);
      }
      socket.resume();
    };
    const onEarlyError = (): void => {
      socket.destroy();
    };
    socket.on('error', onEarlyError);
    socket.on('data', onData);
    // Bytes the TLS front already read (a PERMISSIVE port's plaintext) count first.
    if (head !== null) onData(head);
  }

  /** Binds the port; rejects with a message naming the listener when it cannot. */
  /**
   * Opens the listening socket. `reusePort`: one of several worker threads each opening the
   * same address (Linux SO_REUSEPORT: the kernel spreads new connections over them).
   */
  listen(reusePort = false): Promise<void> {
    const pipe = this.snapshot.listener.pipe;
    return new Promise((resolve, reject) => {
      const where = pipe !== undefined ? pipe.path : `${this.address}:${this.port}`;
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new Error(`cannot listen on ${where} (listener ${this.name}): ${why}`));
      };
      if (pipe !== undefined) {
        try {
          removeStaleSocket(pipe.path);
        } catch (err) {
          onError(err as NodeJS.ErrnoException);
          return;
        }
      }
      this.tcp.once('error', onError);
      // A unix domain socket: one listener owns the path (SO_REUSEPORT does not apply to it).
      const at = pipe !== undefined ? { path: socketPath(pipe.path) } : { host: this.address, port: this.port, ...(reusePort ? { reusePort: true } : {}) };
      this.tcp.listen({ ...at, backlog: 4096 }, () => {
        this.tcp.off('error', onError);
        if (pipe !== undefined && pipe.mode !== 0 && !pipe.path.startsWith('@')) {
          try {
            chmodSync(pipe.path, pipe.mode);
          } catch (err) {
            this.tcp.close();
            onError(err as NodeJS.ErrnoException);
            return;
          }
        }
        resolve();
      });
    });
  }

  /** Where the socket listens, for logs: `address:port`, or a unix domain socket's path. */
  get boundAt(): string {
    const pipe = this.snapshot.listener.pipe;
    return pipe !== undefined ? pipe.path : `${this.address}:${this.boundPort}`;
  }

  get boundPort(): number {
    const a = this.tcp.address();
    return typeof a === 'object' && a !== null ? a.port : this.port;
  }

  /** Every accepted TCP connection, including ones that have not sent a byte yet. */
  get activeConnections(): number {
    return this.#open;
  }

  /**
   * Stops accepting; idle connections close now, busy ones after their response (HTTP/1:
   * `Connection: close`; HTTP/2: GOAWAY, in-flight streams finish).
   */
  stopAccepting(): void {
    this.tcp.close();
    // As node:http's close(): idle HTTP/1 connections close now, busy ones after their response.
    this.#h1.closeIdle();
    for (const session of this.#sessions.keys()) session.close();
  }

  /** Connections with a request or a tunnel still in flight. */
  busyConnections(): number {
    // Open upgrade tunnels count: a drain gives WebSockets the drain time, as Envoy does.
    let n = this.#upgrades.size;
    for (const c of this.#connections.values()) if (!c.idle) n++;
    return n;
  }

  closeIdle(): void {
    this.#h1.closeIdle();
  }

  closeAll(): void {
    for (const t of [...this.#tunnels]) t.close();
    this.#h1.closeAll();
    this.#h1.close();
    this.#upgrades.closeAll();
    for (const session of this.#sessions.keys()) session.destroy();
  }

  #onRequest(req: H1Request, res: H1Response): void {
    if (this.#refusesVersion(req)) {
      this.#upgradeRequired(req, req.socket, res);
      return;
    }
    const conn = this.#connections.get(req.socket)!;
    const ex = new Exchange(this.#ctx, conn, this.snapshot, req, res, H1_WRITER);
    conn.add(ex);
    ex.start();
  }

  #onH2Request(req: Http2ServerRequest, res: Http2ServerResponse): void {
    const conn = this.#sessions.get(req.stream.session as ServerHttp2Session);
    if (conn === undefined) {
      res.stream.close(2);
      return;
    }
    const ex = new Exchange(this.#ctx, conn, this.snapshot, req, res, H2_WRITER);
    conn.add(ex);
    // A stream the client resets ends only this exchange, not the connection.
    req.stream.once('close', () => ex.onDownstreamClose());
    ex.start();
  }

  /**
   * Envoy's HTTP/1 codec serves only HTTP/1.1 unless `accept_http_10` is on: an HTTP/1.0 or
   * HTTP/0.9 request is answered 426 before it meets any route or filter.
   */
  #refusesVersion(req: H1Request): boolean {
    return (req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) && !this.snapshot.connectionManager.acceptHttp10;
  }

  /** The 426 reply (Envoy's `low_version`): a codec error, so the connection closes after it. */
  #upgradeRequired(req: H1Request, socket: Socket, res: H1Response | null): void {
    const reply = LocalReplies.lowVersion;
    if (res !== null) {
      const headers = [...reply.head];
      this.snapshot.connectionManager.applyServer(headers);
      headers.push('connection', 'close');
      res.whole(reply.status, headers, reply.body, null);
    } else {
      socket.end(rawLocalReply(reply, this.snapshot.connectionManager.serverLine));
    }
    this.#logCodecError(socket, `HTTP/${req.httpVersion}`, reply.status, reply.details, reply.body?.length ?? 0);
  }

  /** Requests Node's parser rejects: 431 for oversized headers, 408 when headers come too slowly, 400 for the rest (Envoy: DPE). */
  #onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const reply = code === 'HPE_HEADER_OVERFLOW' ? LocalReplies.headersTooLarge : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? LocalReplies.requestTimeout : LocalReplies.codecError;
    socket.end(rawLocalReply(reply, this.snapshot.connectionManager.serverLine));
    this.#logCodecError(socket, 'HTTP/1.1', reply.status, `${reply.details}:${code || 'parse_error'}`, reply.body?.length ?? 0);
  }

  /** The access log line and metrics of a request the codec refused: no method, path or route, as Envoy logs it. */
  #logCodecError(socket: Socket, protocol: string, status: number, details: string, bytesSent: number): void {
    const conn = this.#connections.get(socket);
    const record: AccessLogRecord = {
      startTime: Date.now(),
      method: '-',
      originalPath: '-',
      protocol,
      responseCode: status,
      responseFlags: ResponseFlag.DPE,
      responseCodeDetails: details,
      upstreamTransportFailureReason: '',
      bytesReceived: 0,
      bytesSent,
      durationMs: 0,
      upstreamServiceTimeMs: -1,
      xForwardedFor: null,
      userAgent: null,
      requestId: null,
      authority: null,
      upstreamHost: null,
      upstreamCluster: null,
      downstreamLocalAddress: conn?.localAddress ?? '-',
      downstreamRemoteAddress: conn?.remoteAddress ?? '-',
      requestedServerName: null,
      routeName: null,
    };
    (this.snapshot.accessLog ?? this.#ctx.accessLog).log(record);
    this.snapshot.unroutedStats.record(status, 'DPE', '', 0, 0, bytesSent);
    this.snapshot.http.codecRefused(status);
  }
}

