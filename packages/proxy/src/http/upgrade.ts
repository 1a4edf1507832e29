import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { CompiledRoute, ForwardTarget, WeightedTarget } from '../router/compiled-route.ts';
import { AttemptFailure, classifyUpstreamError } from '../upstream/connect-errors.ts';
import { findRoute } from '../router/route-table.ts';
import { ROUTE_TUNNEL, Router, type RouterStream } from '../router/router.ts';
import type { ListenerSettings } from './listener-settings.ts';
import type { Connection, ListenerContext } from './connection.ts';
import { ActiveStream, type RequestHead, type StreamOwner } from './active-stream.ts';
import { LocalReplies, type LocalReply } from './local-reply.ts';
import { redirectLocation } from './redirect.ts';
import { rawHeaderValue, UPSTREAM_SERVICE_TIME } from './request-headers.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import type { CircuitBreaker } from '../upstream/circuit-breaker.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import { DELAYED_CLOSE_MS, SocketSplice, type SpliceOwner, type SpliceSettings } from '../upstream/socket-splice.ts';
import { HEADERS_TOO_LARGE_REASON, TunnelUpstreamRequest, type Http1ResponseHead, type TunnelUpstreamOwner } from '../upstream/tunnel-upstream-request.ts';

/**
 * HTTP/1.1 Upgrade (WebSocket and any other protocol but h2c) through the proxy, as Envoy
 * does with Istio's `upgrade_configs: [websocket]` on every route: the upgrade request is
 * routed like any request (same route, weighted cluster, load balancer, retries, header
 * rules), each try a `TunnelUpstreamRequest` on a fresh connection of its own with
 * `Connection` and `Upgrade` kept, and once the upstream answers 101 the two sockets are
 * spliced until either side closes. The same `Router` as a request's picks hosts, holds the
 * breaker slot, runs the tries and decides retries and timeouts (in its tunnel mode); this
 * file is the downstream side: the client's socket and the replies written on it.
 *
 * An HTTP/1.1 CONNECT takes the same path (Envoy's CONNECT support): routed to a
 * `connect_matcher` route, refused 403 unless the connection manager or the route enables
 * CONNECT, then either terminated here when the route says so (`connect_config`: each try a
 * plain TCP connection to a host, `TunnelUpstreamRequest.terminateConnect`, the client
 * answered 200 once one is up) or forwarded to the host as a CONNECT request whose 2xx
 * answer opens the tunnel as a 101 does; either way the two sockets are then spliced.
 */

/** Envoy's delayed_close_timeout: after one side is gone and the other is ended, how long to wait for its FIN. */
const LINGER_MS = DELAYED_CLOSE_MS;
/** An open tunnel has no idle limit here (Envoy's stream_idle_timeout is not in the model). */
const TUNNEL_SPLICE: SpliceSettings = { idleTimeoutMs: 0, delayedCloseMs: DELAYED_CLOSE_MS };

/** Response headers that end at the proxy; `connection` and `upgrade` are added back for a 101. */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'transfer-encoding']);

const ROUTING = 0;
/** Picking a host, connecting, or backing off before a retry. */
const CONNECTING = 1;
/** Request head sent; waiting for the upstream's response head. */
const AWAITING_HEAD = 2;
/** 101 relayed: bytes flow both ways, through a SocketSplice. */
const TUNNEL = 3;
/** A non-101 response is being relayed; the connection closes after it. */
const RELAYING = 4;
const DONE = 5;

/**
 * Node's `shouldUpgradeCallback`: every `Upgrade` takes the tunnel path except `h2c`, which
 * Envoy's HTTP/1 codec strips (with `HTTP2-Settings`) to serve the request as a plain one.
 * Node then hands it to the request handler, which drops the hop-by-hop headers.
 */
export function shouldUpgrade(req: RequestHead): boolean {
  const proto = rawHeaderValue(req.rawHeaders, 'upgrade');
  return proto !== null && proto.trim().toLowerCase() !== 'h2c';
}

/**
 * The upgraded connections of one listener. Node's HTTP server lets go of a socket once it
 * is upgraded (`closeAllConnections` no longer sees it), so the listener closes these itself.
 */
export class UpgradeTunnels {
  readonly #ctx: ListenerContext;
  readonly #open = new Set<UpgradeExchange>();

  constructor(ctx: ListenerContext) {
    this.#ctx = ctx;
  }

  /** Node's `'upgrade'` event: route and forward the request; never throws. */
  start(snapshot: ListenerSettings, conn: Connection, req: RequestHead, socket: Socket, head: Buffer): void {
    new UpgradeExchange(this.#open, this.#ctx, conn, snapshot, req, socket, head, false).start();
  }

  /**
   * Node's `'connect'` event (an HTTP/1.1 CONNECT): routed to a connect_matcher route and
   * tunnelled to a host of its cluster when the route terminates CONNECT; never throws.
   * The tunnel counts among this listener's open ones (drain, shutdown) like an upgrade's.
   */
  connect(snapshot: ListenerSettings, conn: Connection, req: RequestHead, socket: Socket, head: Buffer): void {
    new UpgradeExchange(this.#open, this.#ctx, conn, snapshot, req, socket, head, true).start();
  }

  /** Upgrade requests and tunnels not finished yet. */
  get size(): number {
    return this.#open.size;
  }

  /** Cuts every tunnel (listener shutdown); each writes its access log line as it closes. */
  closeAll(): void {
    for (const ex of [...this.#open]) ex.abort();
  }
}

/**
 * The router filter of one upgrade or CONNECT request and its tunnel, as `Exchange` is of a
 * request and response: what its `ActiveStream` (headers in, filters, local reply, telemetry)
 * hands over once the filters let it through. It answers a route's direct response or
 * redirect, routes through its `Router`, writes the answer and local replies on the client's
 * raw socket, and splices the two sockets once the tunnel opens; the stream's access log line
 * and metrics are written when both sockets are closed, with Envoy's code 101 and the bytes
 * carried each way.
 */
export class UpgradeExchange implements StreamOwner, SpliceOwner, TunnelUpstreamOwner, RouterStream<TunnelUpstreamRequest> {
  /** The request's state, what filters, the access log, routing and the load balancer see. */
  readonly stream: ActiveStream<RequestHead>;
  readonly #registry: Set<UpgradeExchange>;
  readonly downstream: Socket;
  readonly #head: Buffer;
  /** An HTTP/1.1 CONNECT rather than an Upgrade. */
  readonly #connect: boolean;

  /** The router of a forwarded upgrade (made when the route forwards). */
  #router: Router<TunnelUpstreamRequest> | null = null;
  #splice: SocketSplice | null = null;
  #lingerTimer: NodeJS.Timeout | null = null;
  #state = ROUTING;

  // Downstream socket.
  #reading = false;
  /** Client bytes beyond the request head went upstream: the request can no longer be replayed. */
  #sentBeyondHead = false;
  #pending: Buffer[] | null = null;
  #downstreamEnded = false;
  #downstreamClosed = false;

  constructor(registry: Set<UpgradeExchange>, ctx: ListenerContext, conn: Connection, snapshot: ListenerSettings, req: RequestHead, socket: Socket, head: Buffer, connect: boolean) {
    this.stream = new ActiveStream<RequestHead>(this, ctx, conn, snapshot, req);
    this.#registry = registry;
    this.downstream = socket;
    this.#head = head;
    this.#connect = connect;
    // Bytes that came with the request head are the first of the tunnel's (or the body's).
    this.stream.bytesReceived = head.length;
  }

  start(): void {
    this.#registry.add(this);
    this.stream.snapshot.http.requestStarted(false);
    const s = this.downstream;
    // Node took its own listeners off the socket when it handed it over, its timeouts too.
    s.setTimeout(0);
    // Each direction ends on its own (a client's FIN must not close the way back).
    s.allowHalfOpen = true;
    s.on('error', this.#onDownstreamError);
    s.on('end', this.#onDownstreamEnd);
    s.on('close', this.#onDownstreamClose);
    s.on('drain', this.#onDownstreamDrain);
    const st = this.stream;
    try {
      this.#start(st);
    } catch (err) {
      st.ctx.log.error(`unexpected error handling upgrade ${st.method} ${st.path}: ${(err as Error).stack ?? String(err)}`);
      this.localReply(LocalReplies.internalError);
    }
  }

  #start(s: ActiveStream<RequestHead>): void {
    if (this.#connect ? !this.#readConnectTarget(s) : !s.readRequestTarget()) {
      this.localReply(LocalReplies.badPath);
      return;
    }
    s.readHeaders(true);
    // Shed after reading the head, so the access log line still names the request.
    if (s.ctx.overloaded && !s.snapshot.bypassOverloadManager) {
      s.ctx.noteShed();
      this.localReply(LocalReplies.overloaded);
      return;
    }
    // Upgrades meet the same filters as requests (authn, authz, rate limit, faults).
    s.route = findRoute(s.snapshot.routesFor(s.conn.tlsServer), s);
    // Envoy decides whether the route takes the CONNECT before any filter runs (no route: the router's 404).
    if (this.#connect && s.route !== null && !this.#connectAllowed(s.route)) {
      s.snapshot.http.upgradeRefused.value++;
      this.localReply(LocalReplies.upgradeFailed);
      return;
    }
    s.runFilters();
  }

  /** CONNECT's authority-form target (`host:port`) is the request's authority, whatever Host says; it has no path. */
  #readConnectTarget(s: ActiveStream<RequestHead>): boolean {
    const target = s.path;
    if (target === '' || target.indexOf('/') >= 0) return false;
    s.authority = target;
    s.path = '';
    s.pathOnly = '';
    s.originalPath = '';
    return true;
  }

  /**
   * Envoy's upgrade check for CONNECT: the route's own CONNECT upgrade config decides when it
   * has one, else the connection manager's `upgrade_configs`.
   */
  #connectAllowed(route: CompiledRoute): boolean {
    const t = route.target;
    const own = t.kind === 'forward' ? t.model.connect : undefined;
    if (own !== undefined) return own !== 'disabled';
    return this.stream.snapshot.connectionManager.upgradeConnect;
  }

  get aborted(): boolean {
    return this.#state === DONE;
  }

  /** The router's current try (kept while its refusal is relayed or its tunnel is open). */
  get #attempt(): TunnelUpstreamRequest | null {
    return this.#router === null ? null : this.#router.current;
  }

  replyLocally(reply: LocalReply): void {
    this.localReply(reply);
  }

  afterFilters(): void {
    const s = this.stream;
    const route = s.route;
    const http = s.snapshot.http;
    if (route === null) {
      http.noRoute.value++;
      this.localReply(LocalReplies.noRoute);
      return;
    }
    const target = route.target;
    if (target.kind === 'direct-response') {
      http.directResponse.value++;
      this.#directResponse(target.status, target.body, null);
      return;
    }
    if (target.kind === 'redirect') {
      http.redirect.value++;
      this.#directResponse(target.model.status, null, redirectLocation(target.model, s));
      return;
    }
    this.#forward(target);
  }

  #forward(target: ForwardTarget): void {
    // An upgraded connection holds one of the cluster's connections (and requests) for its
    // whole life, so it goes through the circuit breaker like any request (503 UO on
    // overflow), and holds its slot until it ends. The route timeout bounds the handshake
    // only; a CONNECT has none (Envoy starts it when the request ends, which a CONNECT does
    // not before its tunnel closes): the cluster's connect timeout bounds each try.
    this.#router = new Router<TunnelUpstreamRequest>(this, ROUTE_TUNNEL);
    this.#router.forward(target, this.#connect ? 0 : target.timeoutMs, true);
  }

  /** The router picked the destination: the request is prepared for it (or answered 503 NC). */
  onRouted(target: ForwardTarget, weighted: WeightedTarget, cluster: UpstreamCluster | null): void {
    const s = this.stream;
    if (cluster === null) {
      s.snapshot.http.noCluster.value++;
      s.target = weighted;
      return;
    }
    s.snapshot.http.routed.value++;
    s.prepareUpstream(target, weighted, cluster);
    // Mirrors are left out: a shadow copy of a handshake would open a tunnel nobody reads.
    this.#state = CONNECTING;
  }

  /** A try on a connection of its own (it connects as it is made); the stream holds the breaker slot, so `slot` is null. */
  makeTry(host: ClusterHost, attempt: number, perTryTimeoutMs: number, _slot: CircuitBreaker | null): TunnelUpstreamRequest {
    const s = this.stream;
    s.noteTry(host, attempt);
    const pool = s.cluster!.model.connectionPool;
    if (!this.#connect) return new TunnelUpstreamRequest(this, host, s.method, s.path, s.upstreamHeaders, this.#head, pool.connectTimeoutMs, perTryTimeoutMs);
    const routeTarget = s.route!.target;
    if (routeTarget.kind === 'forward' && routeTarget.model.connect === 'terminate') {
      return TunnelUpstreamRequest.terminateConnect(this, host, this.#head, pool.connectTimeoutMs);
    }
    // Forwarded: the request line names the authority the host is sent (after any rewrite).
    // No per-try timeout: Envoy starts it when the request ends, which a CONNECT does not.
    const authority = rawHeaderValue(s.upstreamHeaders, 'host') ?? s.authority;
    return new TunnelUpstreamRequest(this, host, 'CONNECT', authority, s.upstreamHeaders, this.#head, pool.connectTimeoutMs, 0);
  }

  /** Nothing to start: the try's callbacks come once it is connected. */
  startTry(_a: TunnelUpstreamRequest): void {}

  /** A try the router dropped (a retry, the route timeout, a cancel): the client's bytes wait for the next. */
  tryDropped(_a: TunnelUpstreamRequest): void {
    if (this.#state === AWAITING_HEAD) this.#state = CONNECTING;
    if (this.#reading) this.downstream.pause();
  }

  /** The request can be sent again until client bytes beyond its head went upstream. */
  get replayable(): boolean {
    return !this.#sentBeyondHead;
  }

  /** Not reached (the route timeout stops at the response head): the client is cut off. */
  resetStream(): void {
    this.downstream.destroy();
  }

  // --- upstream callbacks (from the current try only) -----------------------------------

  isCurrent(a: TunnelUpstreamRequest): boolean {
    return this.#state !== DONE && this.#router !== null && this.#router.isCurrent(a);
  }

  /** Connected, the request head on its way: the client's further bytes may follow it. */
  onUpstreamRequestSent(a: TunnelUpstreamRequest): void {
    this.#state = AWAITING_HEAD;
    const pending = this.#pending;
    if (pending !== null) {
      this.#pending = null;
      for (const chunk of pending) a.socket.write(chunk);
    }
    if (this.#downstreamEnded) a.socket.end();
    if (!this.#reading) {
      this.#reading = true;
      this.downstream.on('data', this.#onDownstreamData);
    } else if (!this.#downstreamEnded) this.downstream.resume();
  }

  /** `100 Continue` is passed on (the client may wait for it before sending a body). */
  onUpstreamContinue(_a: TunnelUpstreamRequest, head: Buffer): void {
    this.downstream.write(head);
  }

  onUpstreamResponseHead(a: TunnelUpstreamRequest, status: number, head: Http1ResponseHead): boolean {
    const router = this.#router!;
    const policy = router.retry!.policy;
    // A CONNECT's 2xx opens its tunnel (a terminated one's 200 is made when its connection is up).
    const tunnel = status === 101 || (this.#connect && status >= 200 && status < 300);
    const retriable = !tunnel && policy !== null && policy.retriableResponse(status, -1);
    // The host answered: outlier detection and the cluster's status counters hear of it, as for
    // any request; a retry's budget place goes back, and the route timeout stops.
    if (!router.onResponseHead(a, status, retriable)) return false;
    const s = this.stream;
    s.upstreamServiceTimeMs = performance.now() - a.startedAt;
    s.responseCode = status;
    s.responseCodeDetails = 'via_upstream';
    const out: string[] = [];
    const h = head.headers;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      const lower = name.toLowerCase();
      // A refusal's body is relayed as framed, so its Transfer-Encoding stays.
      if (lower === UPSTREAM_SERVICE_TIME) continue; // this hop sets its own
      // A 2xx to CONNECT has no body, whatever framing the host announced (as Envoy strips it).
      if (tunnel && this.#connect && lower === 'content-length') continue;
      if (!RESPONSE_DROP.has(lower) || (!tunnel && lower === 'transfer-encoding')) out.push(name, h[i + 1]!);
    }
    out.push(UPSTREAM_SERVICE_TIME, String(Math.round(s.upstreamServiceTimeMs)));
    s.finishResponseHeaders(out);
    if (tunnel) {
      // Envoy keeps the upgrade headers on a 101; the upstream's spelling of them travels.
      if (status === 101) {
        out.push('connection', head.connection ?? 'Upgrade');
        if (head.upgrade !== null) out.push('upgrade', head.upgrade);
      }
      this.#state = TUNNEL;
    } else {
      out.push('connection', 'close');
      this.#state = RELAYING;
    }
    this.downstream.write(formatHead(status, head.reason, out), 'latin1');
    if (tunnel) this.#startTunnel(a);
    // A refusal: its body follows as framed (onUpstreamData, then onUpstreamEnd).
    return true;
  }

  /**
   * The 101 is out: both sockets go to a splice (half-close passed through, delayed close),
   * starting with the tunnel bytes that came in the same read as the 101.
   */
  #startTunnel(a: TunnelUpstreamRequest): void {
    const down = this.downstream;
    down.off('data', this.#onDownstreamData);
    down.off('end', this.#onDownstreamEnd);
    down.off('close', this.#onDownstreamClose);
    down.off('drain', this.#onDownstreamDrain);
    const rest = a.detach();
    this.#splice = new SocketSplice(down, a.socket, TUNNEL_SPLICE, this);
    this.#splice.start(rest);
  }

  /** Both sockets of the tunnel are closed: what the splice saw becomes the log line's flags and bytes. */
  onSpliceClosed(splice: SocketSplice): void {
    const s = this.stream;
    s.bytesReceived += splice.bytesFromDownstream;
    s.bytesSent += splice.bytesFromUpstream;
    const err = splice.upstreamError;
    if (err !== null) {
      // All that can be done is to cut the client off, as Envoy resets the stream.
      s.upstreamTransportFailureReason = classifyUpstreamError(err, true, null).reason;
      s.responseFlags |= ResponseFlag.UC;
    } else if (splice.downstreamEndedFirst || (splice.downstreamReset && !splice.closedLocally)) {
      // Envoy's HTTP/1 downstream has no half-close: a client FIN before the upstream's ends the
      // stream as a downstream disconnect, though here the bytes still in flight still went.
      s.responseFlags |= ResponseFlag.DC;
    }
    this.#attempt?.release();
    this.#finish();
  }

  /** A chunk of a refusal's body (RELAYING), passed on as framed. */
  onUpstreamData(_a: TunnelUpstreamRequest, chunk: Buffer): boolean {
    this.stream.bytesSent += chunk.length;
    return this.downstream.write(chunk);
  }

  /** The refusal is complete: the client connection closes after it (the upgrade did not happen). */
  onUpstreamEnd(_a: TunnelUpstreamRequest): void {
    this.#endDownstream();
  }

  onUpstreamFailed(a: TunnelUpstreamRequest, failure: AttemptFailure, reason: string): void {
    if (this.#state === RELAYING) {
      // After the response started all that can be done is to cut the client off, as Envoy resets the stream.
      const s = this.stream;
      if (reason !== '') s.upstreamTransportFailureReason = reason;
      s.responseFlags |= ResponseFlag.UC;
      this.downstream.destroy();
      return;
    }
    const router = this.#router!;
    // A bad response head: never retried (Envoy does not retry protocol errors), but a failure of the host all the same.
    if (failure === AttemptFailure.ProtocolError) {
      router.onTryUnusable(a, reason === HEADERS_TOO_LARGE_REASON ? LocalReplies.upstreamHeadersTooLarge : LocalReplies.upstreamInvalid, reason);
      return;
    }
    // Retried when the policy allows, else the failure's local reply.
    router.onTryFailed(a, failure, reason);
  }

  onUpstreamClosed(a: TunnelUpstreamRequest): void {
    if (this.#state === RELAYING) {
      if (!this.#downstreamClosed) this.#endDownstream();
      this.#maybeFinish(a);
    }
  }

  onUpstreamWritable(_a: TunnelUpstreamRequest): void {
    if (!this.#downstreamEnded) this.downstream.resume();
  }

  // --- downstream socket ------------------------------------------------------------------

  readonly #onDownstreamData = (chunk: Buffer): void => {
    this.stream.bytesReceived += chunk.length;
    this.#sentBeyondHead = true;
    const a = this.#attempt;
    if (a === null || !a.connected) {
      // Between attempts (a retry is no longer possible now, but the current one may still come).
      (this.#pending ??= []).push(chunk);
      this.downstream.pause();
      return;
    }
    if (a.socket.writable && !a.socket.write(chunk)) this.downstream.pause();
  };

  readonly #onDownstreamDrain = (): void => {
    this.#attempt?.resume();
  };

  readonly #onDownstreamEnd = (): void => {
    this.#downstreamEnded = true;
    if (this.#state === CONNECTING || this.#state === AWAITING_HEAD) {
      // Before the response there is nothing to half-close: Envoy's HTTP/1 downstream has no
      // half-close, so the client's FIN is the client leaving (DC, upstream work cancelled,
      // its retry budget and breaker slot given back), handled where the socket closes.
      this.downstream.destroy();
      return;
    }
    const a = this.#attempt;
    // Relaying a refusal: the client is done sending; the upstream may still finish its answer.
    if (a !== null && a.connected) a.socket.end();
  };

  readonly #onDownstreamError = (err: NodeJS.ErrnoException): void => {
    this.stream.ctx.log.debug(`upgrade ${this.stream.path}: downstream ${err.code ?? err.message}`);
  };

  readonly #onDownstreamClose = (hadError: boolean): void => {
    this.#downstreamClosed = true;
    if (this.#lingerTimer !== null) {
      clearTimeout(this.#lingerTimer);
      this.#lingerTimer = null;
    }
    const a = this.#attempt;
    switch (this.#state) {
      case CONNECTING:
      case AWAITING_HEAD:
        // The client left during the handshake: cancel upstream work, as Exchange.onDownstreamClose.
        this.stream.responseFlags |= ResponseFlag.DC;
        this.#router?.cancelTry();
        this.#finish();
        return;
      case RELAYING:
        if (a !== null && !a.closed) {
          if (hadError || !this.#downstreamEnded) {
            // A reset, or a close we did not see coming: tear the upstream down now.
            a.socket.destroy();
          } else {
            // Orderly: the client's FIN has gone upstream; give the upstream the linger time to finish.
            a.socket.end();
            this.#lingerTimer = setTimeout(() => a.socket.destroy(), LINGER_MS).unref();
          }
        }
        this.#maybeFinish(a);
    }
  };

  /** Ends the client connection after flushing; destroys it if the client has not closed within the linger time. */
  #endDownstream(): void {
    const s = this.downstream;
    if (this.#downstreamClosed) return;
    s.end();
    if (this.#lingerTimer === null) this.#lingerTimer = setTimeout(() => s.destroy(), LINGER_MS).unref();
  }

  /** Listener shutdown: both sockets are reset now (LR); a tunnel logs when their close events come. */
  abort(): void {
    if (this.#state === DONE) return;
    this.stream.responseFlags |= ResponseFlag.LR;
    const a = this.#attempt;
    if (this.#state === TUNNEL) {
      this.#splice!.close();
      return;
    }
    if (this.#state === RELAYING) {
      if (a !== null) a.socket.destroy();
      this.downstream.destroy();
      return;
    }
    this.#router?.cancelTry();
    this.downstream.destroy();
    this.#finish();
  }

  // --- replies and the end --------------------------------------------------------------

  /** A response made by the proxy (Envoy's local reply, from the catalogue), written on the raw socket; the connection closes after it. */
  localReply(reply: LocalReply): void {
    if (this.#state === DONE || this.#state === TUNNEL || this.#state === RELAYING) return;
    const s = this.stream;
    s.noteLocalReply(reply);
    const headers = reply.head.slice();
    s.finishLocalReplyHeaders(headers);
    headers.push('connection', 'close');
    this.#writeAndClose(reply.status, headers, reply.body);
    this.#finish();
  }

  #directResponse(status: number, body: Buffer | null, location: string | null): void {
    const s = this.stream;
    s.responseCode = status;
    s.responseCodeDetails = 'direct_response';
    const headers: string[] = ['content-length', String(body === null ? 0 : body.length)];
    if (body !== null) headers.push('content-type', 'text/plain');
    if (location !== null) headers.push('location', location);
    s.finishResponseHeaders(headers);
    headers.push('connection', 'close');
    this.#writeAndClose(status, headers, body);
    this.#finish();
  }

  #writeAndClose(status: number, headers: string[], body: Buffer | null): void {
    const s = this.downstream;
    if (!s.writable) {
      s.destroy();
      return;
    }
    s.write(formatHead(status, null, headers), 'latin1');
    this.stream.bytesSent = body === null ? 0 : body.length;
    if (body !== null) s.write(body);
    this.#endDownstream();
  }

  /** A tunnel (or relayed refusal) ends when both sockets are closed. */
  #maybeFinish(a: TunnelUpstreamRequest | null): void {
    if (!this.#downstreamClosed || (a !== null && !a.closed)) return;
    if (a !== null) a.release();
    this.#finish();
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    const s = this.stream;
    this.#router?.finish();
    s.destroyFilters();
    this.#registry.delete(this);
    s.snapshot.http.requestDone(s.responseCode);
    s.logAndRecord('');
  }
}

/** A response head for the client. */
function formatHead(status: number, reason: string | null, headers: readonly string[]): string {
  let s = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? reason ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]!}: ${headers[i + 1]!}\r\n`;
  return s + '\r\n';
}
