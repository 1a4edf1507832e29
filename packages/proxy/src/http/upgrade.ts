import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { connect, Socket } from 'node:net';
import type { ForwardTarget } from '../router/compiled-route.ts';
import { AttemptFailure, chargedStatus, classifyUpstreamError, CONNECT_TIMEOUT_REASON, PER_TRY_TIMEOUT_REASON } from '../upstream/connect-errors.ts';
import { findRoute } from '../router/route-table.ts';
import type { ListenerSettings } from './listener-settings.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { Connection, ListenerContext } from './connection.ts';
import { ProxiedRequest } from './proxied-request.ts';
import { failureLocalReply, LocalReplies, type LocalReply } from './local-reply.ts';
import { redirectLocation } from './redirect.ts';
import { rawHeaderValue, UPSTREAM_SERVICE_TIME } from './request-headers.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import { OVERFLOW, QUEUED } from '../upstream/circuit-breaker.ts';
import { DELAYED_CLOSE_MS, SocketSplice, type SpliceOwner, type SpliceSettings } from '../upstream/socket-splice.ts';

/**
 * HTTP/1.1 Upgrade (WebSocket and any other protocol but h2c) through the proxy, as Envoy
 * does with Istio's `upgrade_configs: [websocket]` on every route: the upgrade request is
 * routed like any request (same route, weighted cluster, load balancer, retries, header
 * rules), sent on a fresh TCP connection of its own with `Connection` and `Upgrade` kept, and
 * once the upstream answers 101 the two sockets are spliced until either side closes.
 *
 * The upstream side is a raw `net` socket, not undici: undici's upgrade API writes its own
 * `Connection: upgrade` / `Upgrade` and refuses them as request headers, so the client's
 * headers (case, order, repeats, `Connection: keep-alive, Upgrade`) could not travel as sent;
 * here the request head is written byte for byte from the header list and the bytes the
 * client already sent (`head`) follow it unchanged.
 */

/** Envoy's delayed_close_timeout: after one side is gone and the other is ended, how long to wait for its FIN. */
const LINGER_MS = DELAYED_CLOSE_MS;
/** An open tunnel has no idle limit here (Envoy's stream_idle_timeout is not in the model). */
const TUNNEL_SPLICE: SpliceSettings = { idleTimeoutMs: 0, delayedCloseMs: DELAYED_CLOSE_MS };
/** Envoy's default limit on response headers (max_response_headers_kb: 60). */
const MAX_RESPONSE_HEAD_BYTES = 60 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/;
const CHUNKED_LAST = /(^|,)\s*chunked\s*$/i;

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
export function shouldUpgrade(req: IncomingMessage): boolean {
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
  start(snapshot: ListenerSettings, conn: Connection, req: IncomingMessage, socket: Socket, head: Buffer): void {
    new UpgradeExchange(this.#open, this.#ctx, conn, snapshot, req, socket, head).start();
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
 * One upgrade request, from routing to the end of its tunnel. Mirrors `Exchange` for routing
 * and header rules; the access log line and metrics are written when both sockets are closed,
 * with Envoy's code 101 and the bytes carried each way.
 */
export class UpgradeExchange extends ProxiedRequest implements SpliceOwner {
  readonly #registry: Set<UpgradeExchange>;
  readonly downstream: Socket;
  readonly #head: Buffer;

  #attempt: UpgradeAttempt | null = null;
  #splice: SocketSplice | null = null;
  /** This upgrade holds a slot of the cluster's circuit breaker (released once, at the end). */
  #holdsBreaker = false;
  #timer: NodeJS.Timeout | null = null;
  #backoffTimer: NodeJS.Timeout | null = null;
  #lingerTimer: NodeJS.Timeout | null = null;
  #state = ROUTING;

  // Downstream socket.
  #reading = false;
  /** Client bytes beyond the request head went upstream: the request can no longer be replayed. */
  #sentBeyondHead = false;
  #pending: Buffer[] | null = null;
  #downstreamEnded = false;
  #downstreamClosed = false;

  // Non-101 response body framing (RELAYING).
  #bodyLeft = -1;
  #chunked: ChunkedBodyEnd | null = null;

  constructor(registry: Set<UpgradeExchange>, ctx: ListenerContext, conn: Connection, snapshot: ListenerSettings, req: IncomingMessage, socket: Socket, head: Buffer) {
    super(ctx, conn, snapshot, req);
    this.#registry = registry;
    this.downstream = socket;
    this.#head = head;
    // Bytes that came with the request head are the first of the tunnel's (or the body's).
    this.bytesReceived = head.length;
  }

  start(): void {
    this.#registry.add(this);
    this.snapshot.http.requestStarted(false);
    const s = this.downstream;
    // Node took its own listeners off the socket when it handed it over, its timeouts too.
    s.setTimeout(0);
    // Each direction ends on its own (a client's FIN must not close the way back).
    s.allowHalfOpen = true;
    s.on('error', this.#onDownstreamError);
    s.on('end', this.#onDownstreamEnd);
    s.on('close', this.#onDownstreamClose);
    s.on('drain', this.#onDownstreamDrain);
    try {
      this.#start();
    } catch (err) {
      this.ctx.log.error(`unexpected error handling upgrade ${this.method} ${this.path}: ${(err as Error).stack ?? String(err)}`);
      this.#localReply(LocalReplies.internalError);
    }
  }

  #start(): void {
    if (!this.readRequestTarget()) {
      this.#localReply(LocalReplies.badPath);
      return;
    }
    this.readHeaders(true);
    // Shed after reading the head, so the access log line still names the request.
    if (this.ctx.overloaded && !this.snapshot.bypassOverloadManager) {
      this.ctx.noteShed();
      this.#localReply(LocalReplies.overloaded);
      return;
    }
    // Upgrades meet the same filters as requests (authn, authz, rate limit, faults).
    this.route = findRoute(this.snapshot.routesFor(this.conn.tlsServer), this);
    this.runFilters();
  }

  get aborted(): boolean {
    return this.#state === DONE;
  }

  protected replyLocally(reply: LocalReply): void {
    this.#localReply(reply);
  }

  protected afterFilters(): void {
    const route = this.route;
    const http = this.snapshot.http;
    if (route === null) {
      http.noRoute.value++;
      this.#localReply(LocalReplies.noRoute);
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
      this.#directResponse(target.model.status, null, redirectLocation(target.model, this));
      return;
    }
    this.#forward(target);
  }

  #forward(target: ForwardTarget): void {
    const weighted = target.pick(Math.random());
    const cluster = weighted.cluster;
    if (cluster === null) {
      this.snapshot.http.noCluster.value++;
      this.target = weighted;
      this.#localReply(LocalReplies.noCluster);
      return;
    }
    this.snapshot.http.routed.value++;
    this.prepareUpstream(target, weighted, cluster);
    // Mirrors are left out: a shadow copy of a handshake would open a tunnel nobody reads.
    this.#state = CONNECTING;
    // The route timeout bounds the handshake only; an open tunnel has no deadline.
    if (target.timeoutMs > 0) this.#timer = setTimeout(() => this.#onRouteTimeout(), target.timeoutMs);
    // An upgraded connection holds one of the cluster's connections (and requests) for its
    // whole life, so it goes through the circuit breaker like any request: 503 UO on overflow.
    const breaker = cluster.breaker;
    if (breaker.limited) {
      const admission = breaker.admit(this);
      if (admission === OVERFLOW) {
        this.#localReply(LocalReplies.overflow);
        return;
      }
      if (admission === QUEUED) return;
      this.#holdsBreaker = true;
    }
    this.#nextAttempt();
  }

  /** The circuit breaker made room for this queued upgrade. */
  onAdmitted(): void {
    this.#holdsBreaker = true;
    if (this.#state === DONE) {
      this.#releaseBreaker();
      return;
    }
    this.#nextAttempt();
  }

  #releaseBreaker(): void {
    if (!this.#holdsBreaker) return;
    this.#holdsBreaker = false;
    this.cluster!.breaker.release();
  }

  #nextAttempt(): void {
    this.#backoffTimer = null;
    if (this.#state !== CONNECTING) return;
    const chosen = this.pickHost();
    if (chosen === null) {
      this.retry!.endRetry();
      this.#localReply(LocalReplies.noHealthyUpstream);
      return;
    }
    this.cluster!.stats.rqTotal++;
    this.#attempt = new UpgradeAttempt(this, chosen, this.#requestHead(), this.#head, this.cluster!.model.connectionPool.connectTimeoutMs, this.retry!.perTryTimeoutMs);
  }

  #requestHead(): string {
    const h = this.upstreamHeaders;
    let s = `${this.method} ${this.path} HTTP/1.1\r\n`;
    for (let i = 0; i < h.length; i += 2) s += `${h[i]!}: ${h[i + 1]!}\r\n`;
    return s + '\r\n';
  }

  // --- attempt callbacks (only for the current attempt) ----------------------------------

  isCurrent(a: UpgradeAttempt): boolean {
    return this.#attempt === a && this.#state !== DONE;
  }

  onAttemptConnected(a: UpgradeAttempt): void {
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

  onAttemptData(a: UpgradeAttempt, chunk: Buffer): void {
    switch (this.#state) {
      case RELAYING:
        this.#relayBody(a, chunk);
        return;
      case AWAITING_HEAD:
        this.#onHeadBytes(a, chunk);
    }
  }

  /** Bytes before the response head is complete: 100-continue is passed on, other 1xx dropped. */
  #onHeadBytes(a: UpgradeAttempt, chunk: Buffer): void {
    let buf = a.takeHeadBuffer(chunk);
    for (;;) {
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD_BYTES) {
          this.#attemptFailedHard(a, LocalReplies.upstreamHeadersTooLarge, 'headers_too_large');
          return;
        }
        a.keepHeadBuffer(buf);
        return;
      }
      const parsed = parseResponseHead(buf.toString('latin1', 0, end));
      if (parsed === null) {
        this.#attemptFailedHard(a, LocalReplies.upstreamInvalid, 'invalid_response');
        return;
      }
      const rest = buf.subarray(end + HEAD_END.length);
      if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
        if (parsed.status === 100) this.downstream.write(buf.subarray(0, end + HEAD_END.length));
        if (rest.length === 0) return;
        buf = rest;
        continue;
      }
      this.#onResponseHead(a, parsed, rest);
      return;
    }
  }

  #onResponseHead(a: UpgradeAttempt, head: ResponseHead, rest: Buffer): void {
    const status = head.status;
    const cluster = this.cluster!;
    // The host answered: outlier detection and the cluster's status counters hear of it, as for any request.
    cluster.reportStatus(a.host, status);
    cluster.stats.charge(status);
    const retry = this.retry!;
    retry.endRetry();
    let exhausted = false;
    if (status >= 500) a.host.host.rqError++;
    else a.host.host.rqSuccess++;
    if (status !== 101) {
      const policy = retry.policy;
      if (policy !== null && policy.retriableResponse(status, -1)) {
        if (retry.canRetry(!this.#sentBeyondHead)) {
          this.#scheduleRetry(a);
          return;
        }
        exhausted = true;
        if (retry.exhausted(this.attempts, cluster.stats)) this.responseFlags |= ResponseFlag.URX;
      }
    }
    if (this.attempts > 1 && !exhausted) cluster.stats.rqRetrySuccess++;
    this.#clearTimers();
    a.onResponseStarted();
    this.upstreamServiceTimeMs = performance.now() - a.startedAt;
    this.responseCode = status;
    this.responseCodeDetails = 'via_upstream';
    const out: string[] = [];
    const h = head.headers;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      const lower = name.toLowerCase();
      // A refusal's body is relayed as framed, so its Transfer-Encoding stays.
      if (lower === UPSTREAM_SERVICE_TIME) continue; // this hop sets its own
      if (!RESPONSE_DROP.has(lower) || (status !== 101 && lower === 'transfer-encoding')) out.push(name, h[i + 1]!);
    }
    out.push(UPSTREAM_SERVICE_TIME, String(Math.round(this.upstreamServiceTimeMs)));
    this.#finishResponseHeaders(out);
    if (status === 101) {
      // Envoy keeps the upgrade headers on a 101; the upstream's spelling of them travels.
      out.push('connection', head.connection ?? 'Upgrade');
      if (head.upgrade !== null) out.push('upgrade', head.upgrade);
      this.#state = TUNNEL;
    } else {
      out.push('connection', 'close');
      this.#state = RELAYING;
      this.#startBody(head);
    }
    this.downstream.write(formatHead(status, head.reason, out), 'latin1');
    if (status === 101) {
      this.#startTunnel(a, rest);
      return;
    }
    if (this.#bodyLeft === 0) this.#endRelay(a);
    else if (rest.length > 0) this.#relayBody(a, rest);
  }

  /**
   * The 101 is out: both sockets go to a splice (half-close passed through, delayed close),
   * starting with the tunnel bytes that came in the same read as the 101.
   */
  #startTunnel(a: UpgradeAttempt, rest: Buffer): void {
    const down = this.downstream;
    down.off('data', this.#onDownstreamData);
    down.off('end', this.#onDownstreamEnd);
    down.off('close', this.#onDownstreamClose);
    down.off('drain', this.#onDownstreamDrain);
    a.detach();
    this.#splice = new SocketSplice(down, a.socket, TUNNEL_SPLICE, this);
    this.#splice.start(rest);
  }

  /** Both sockets of the tunnel are closed: what the splice saw becomes the log line's flags and bytes. */
  onSpliceClosed(splice: SocketSplice): void {
    this.bytesReceived += splice.bytesFromDownstream;
    this.bytesSent += splice.bytesFromUpstream;
    const err = splice.upstreamError;
    if (err !== null) {
      // All that can be done is to cut the client off, as Envoy resets the stream.
      this.upstreamTransportFailureReason = classifyUpstreamError(err, true, null).reason;
      this.responseFlags |= ResponseFlag.UC;
    } else if (splice.downstreamEndedFirst || (splice.downstreamReset && !splice.closedLocally)) {
      // Envoy's HTTP/1 downstream has no half-close: a client FIN before the upstream's ends the
      // stream as a downstream disconnect, though here the bytes still in flight still went.
      this.responseFlags |= ResponseFlag.DC;
    }
    this.#attempt?.release();
    this.#finish();
  }

  /** How the body of a non-101 response ends; the body is relayed as framed. */
  #startBody(head: ResponseHead): void {
    const s = head.status;
    if (this.method === 'HEAD' || s === 204 || s === 304) {
      this.#bodyLeft = 0;
      return;
    }
    if (head.transferEncoding !== null) {
      if (CHUNKED_LAST.test(head.transferEncoding)) this.#chunked = new ChunkedBodyEnd();
      return; // any other coding: delimited by close
    }
    if (head.contentLength !== null) {
      const n = Number(head.contentLength);
      if (Number.isSafeInteger(n) && n >= 0) this.#bodyLeft = n;
    }
  }

  #relayBody(a: UpgradeAttempt, chunk: Buffer): void {
    let part = chunk;
    let complete = false;
    if (this.#chunked !== null) {
      const end = this.#chunked.scan(chunk);
      if (end >= 0) {
        part = chunk.subarray(0, end);
        complete = true;
      }
    } else if (this.#bodyLeft >= 0) {
      if (chunk.length >= this.#bodyLeft) {
        part = chunk.subarray(0, this.#bodyLeft);
        complete = true;
      }
      this.#bodyLeft -= part.length;
    }
    this.bytesSent += part.length;
    const ok = this.downstream.write(part);
    if (complete) this.#endRelay(a);
    else if (!ok) a.socket.pause();
  }

  /** The non-101 response is complete: the client connection closes after it (the upgrade did not happen). */
  #endRelay(a: UpgradeAttempt): void {
    a.socket.destroy();
    this.#endDownstream();
  }

  onAttemptEnd(a: UpgradeAttempt): void {
    switch (this.#state) {
      case AWAITING_HEAD:
        this.#attemptFailed(a, AttemptFailure.Reset, '');
        return;
      case RELAYING:
        if (this.#chunked !== null || this.#bodyLeft > 0) {
          this.responseFlags |= ResponseFlag.UC;
          this.downstream.destroy();
        } else this.#endDownstream();
    }
  }

  onAttemptError(a: UpgradeAttempt, err: Error): void {
    // TLS failures carry Envoy's TLS_error reason.
    const f = classifyUpstreamError(err, a.connected, a.host.host.tls);
    switch (this.#state) {
      case CONNECTING:
      case AWAITING_HEAD:
        this.#attemptFailed(a, f.failure, f.reason);
        return;
      case RELAYING:
        // After the response started all that can be done is to cut the client off, as Envoy resets the stream.
        this.upstreamTransportFailureReason = f.reason;
        this.responseFlags |= ResponseFlag.UC;
        this.downstream.destroy();
    }
  }

  onAttemptTimeout(a: UpgradeAttempt, connecting: boolean): void {
    if (connecting) this.#attemptFailed(a, AttemptFailure.ConnectFailure, CONNECT_TIMEOUT_REASON);
    else this.#attemptFailed(a, AttemptFailure.PerTryTimeout, PER_TRY_TIMEOUT_REASON);
  }

  onAttemptClose(a: UpgradeAttempt): void {
    if (this.#state === RELAYING) {
      if (!this.#downstreamClosed) this.#endDownstream();
      this.#maybeFinish(a);
    }
  }

  onAttemptDrain(): void {
    if (!this.#downstreamEnded) this.downstream.resume();
  }

  /** The current attempt failed before its response head: retry when the policy allows, else a local reply. */
  #attemptFailed(a: UpgradeAttempt, failure: AttemptFailure, code: string): void {
    this.upstreamTransportFailureReason = code;
    const cluster = this.cluster!;
    // A locally-originated failure of the host (Envoy's outlier detection), charged as Envoy's router does.
    cluster.reportLocalFailure(a.host);
    if (failure === AttemptFailure.ConnectFailure) {
      a.host.host.connectFailures++;
      cluster.stats.cxConnectFail++;
    }
    if (failure === AttemptFailure.PerTryTimeout) cluster.stats.rqPerTryTimeout++;
    cluster.stats.charge(chargedStatus(failure));
    const retry = this.retry!;
    retry.endRetry();
    a.host.host.rqError++;
    if (retry.policy !== null && retry.policy.retriableFailure(failure)) {
      if (retry.canRetry(!this.#sentBeyondHead)) {
        this.#scheduleRetry(a);
        return;
      }
      if (retry.exhausted(this.attempts, cluster.stats)) this.responseFlags |= ResponseFlag.URX;
    }
    this.#abandon(a);
    this.#localReply(failureLocalReply(failure, code));
  }

  /** A bad response head: never retried (Envoy does not retry protocol errors), but a failure of the host all the same. */
  #attemptFailedHard(a: UpgradeAttempt, reply: LocalReply, reason: string): void {
    this.upstreamTransportFailureReason = reason;
    this.cluster!.reportLocalFailure(a.host);
    this.cluster!.stats.charge(reply.status);
    this.retry!.endRetry();
    this.#abandon(a);
    this.#localReply(reply);
  }

  #scheduleRetry(a: UpgradeAttempt): void {
    this.cluster!.stats.rqRetry++;
    // The retry holds its place in the cluster's retry budget until its try has an outcome (a
    // response head or a failure), as Envoy's retry state holds it until the next retry decision.
    const delay = this.retry!.noteRetry(a.host, this.attempts);
    this.#abandon(a);
    this.#state = CONNECTING;
    if (delay <= 0) this.#nextAttempt();
    else this.#backoffTimer = setTimeout(() => this.#nextAttempt(), delay);
  }

  /** Drops the current attempt: its socket is destroyed and the host's gauge released. */
  #abandon(a: UpgradeAttempt): void {
    if (this.#attempt === a) this.#attempt = null;
    a.abandon();
    if (this.#reading) this.downstream.pause();
  }

  #onRouteTimeout(): void {
    this.#timer = null;
    if (this.#state !== CONNECTING && this.#state !== AWAITING_HEAD) return;
    const a = this.#attempt;
    const cluster = this.cluster!;
    cluster.stats.rqTimeout++;
    if (a !== null) {
      // A timeout is a locally-originated failure of the host (Envoy's outlier detection).
      cluster.reportLocalFailure(a.host);
      cluster.stats.charge(504);
      this.#abandon(a);
    }
    this.retry!.endRetry();
    this.responseFlags |= ResponseFlag.UT;
    this.#localReply(LocalReplies.routeTimeout);
  }

  // --- downstream socket ------------------------------------------------------------------

  readonly #onDownstreamData = (chunk: Buffer): void => {
    this.bytesReceived += chunk.length;
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
    this.#attempt?.socket.resume();
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
    this.ctx.log.debug(`upgrade ${this.path}: downstream ${err.code ?? err.message}`);
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
        this.responseFlags |= ResponseFlag.DC;
        if (a !== null) this.#abandon(a);
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
    this.responseFlags |= ResponseFlag.LR;
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
    if (a !== null) this.#abandon(a);
    this.downstream.destroy();
    this.#finish();
  }

  // --- replies and the end --------------------------------------------------------------

  /** A response made by the proxy (Envoy's local reply, from the catalogue), written on the raw socket; the connection closes after it. */
  #localReply(reply: LocalReply): void {
    if (this.#state === DONE || this.#state === TUNNEL || this.#state === RELAYING) return;
    const status = reply.status;
    this.responseCode = status;
    this.responseFlags |= reply.flag;
    this.responseCodeDetails = reply.details;
    const payload = reply.body;
    const headers = reply.head.slice();
    if (this.requestId !== null) headers.push('x-request-id', this.requestId);
    const extra = this.extraResponseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
    this.applyResponseHeaderSets(headers);
    if (this.snapshot.direction === 'inbound') this.addPeerMetadataResponse(headers);
    this.snapshot.connectionManager.applyServer(headers);
    headers.push('connection', 'close');
    this.#writeAndClose(status, headers, payload);
    this.#finish();
  }

  #directResponse(status: number, body: Buffer | null, location: string | null): void {
    this.responseCode = status;
    this.responseCodeDetails = 'direct_response';
    const headers: string[] = ['content-length', String(body === null ? 0 : body.length)];
    if (body !== null) headers.push('content-type', 'text/plain');
    if (location !== null) headers.push('location', location);
    this.#finishResponseHeaders(headers);
    headers.push('connection', 'close');
    this.#writeAndClose(status, headers, body);
    this.#finish();
  }

  /** As Exchange's: response edits (filters' headers among them), inbound peer metadata, the `server` header. */
  #finishResponseHeaders(out: string[]): void {
    this.applyResponseEdits(out);
    if (this.snapshot.direction === 'inbound') this.addPeerMetadataResponse(out);
    this.snapshot.connectionManager.applyServer(out);
  }

  #writeAndClose(status: number, headers: string[], body: Buffer | null): void {
    const s = this.downstream;
    if (!s.writable) {
      s.destroy();
      return;
    }
    s.write(formatHead(status, null, headers), 'latin1');
    this.bytesSent = body === null ? 0 : body.length;
    if (body !== null) s.write(body);
    this.#endDownstream();
  }

  #clearTimers(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#backoffTimer !== null) clearTimeout(this.#backoffTimer);
    this.#timer = null;
    this.#backoffTimer = null;
  }

  /** A tunnel (or relayed refusal) ends when both sockets are closed. */
  #maybeFinish(a: UpgradeAttempt | null): void {
    if (!this.#downstreamClosed || (a !== null && !a.closed)) return;
    if (a !== null) a.release();
    this.#finish();
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    this.retry?.endRetry();
    this.#releaseBreaker();
    this.#clearTimers();
    this.destroyFilters();
    this.#registry.delete(this);
    this.snapshot.http.requestDone(this.responseCode);
    this.logAndRecord('');
  }
}

/**
 * One try of an upgrade against one host: its own TCP connection (an upgraded connection is
 * never returned to a pool). Keeps the host's active gauge honest: up when made, down once,
 * when the attempt is abandoned or its tunnel is over.
 */
class UpgradeAttempt {
  readonly exchange: UpgradeExchange;
  readonly host: ClusterHost;
  readonly socket: Socket;
  readonly startedAt = performance.now();
  connected = false;
  /** The upstream's FIN has been read. */
  ended = false;
  closed = false;
  #headBuf: Buffer | null = null;
  #perTryTimer: NodeJS.Timeout | null = null;
  #released = false;

  constructor(exchange: UpgradeExchange, host: ClusterHost, requestHead: string, body: Buffer, connectTimeoutMs: number, perTryTimeoutMs: number) {
    this.exchange = exchange;
    this.host = host;
    const h = host.host;
    h.active++;
    h.requestsTotal++;
    // A TLS cluster (or auto mTLS endpoint) is reached over TLS here too; `connected` then means verified.
    const tls = h.tls;
    let failed: Error | null = null;
    let s: Socket;
    if (tls === null) s = connect({ host: h.address, port: h.port, allowHalfOpen: true, noDelay: true });
    else {
      const raw = tls.connectRaw(h.address, h.port);
      if (raw instanceof Error) {
        failed = raw;
        s = new Socket();
      } else s = raw;
    }
    this.socket = s;
    if (connectTimeoutMs > 0) s.setTimeout(connectTimeoutMs);
    if (perTryTimeoutMs > 0) this.#perTryTimer = setTimeout(() => this.#onPerTryTimeout(), perTryTimeoutMs);
    s.on(tls === null ? 'connect' : 'secureConnect', this.#onConnect);
    s.on('data', this.#onData);
    s.on('end', this.#onEnd);
    s.on('error', this.#onError);
    s.on('close', this.#onClose);
    s.on('drain', this.#onDrain);
    s.on('timeout', this.#onTimeout);
    if (failed !== null) {
      const err = failed;
      process.nextTick(() => s.destroy(err));
      return;
    }
    // Queued until connected, then sent together.
    s.write(requestHead, 'latin1');
    if (body.length > 0) s.write(body);
  }

  readonly #onConnect = (): void => {
    this.connected = true;
    this.socket.setTimeout(0);
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptConnected(this);
  };
  readonly #onData = (chunk: Buffer): void => {
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptData(this, chunk);
  };
  readonly #onEnd = (): void => {
    this.ended = true;
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptEnd(this);
  };
  readonly #onError = (err: Error): void => {
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptError(this, err);
  };
  readonly #onClose = (): void => {
    this.closed = true;
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptClose(this);
  };
  readonly #onDrain = (): void => {
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptDrain();
  };
  readonly #onTimeout = (): void => {
    if (!this.connected && this.exchange.isCurrent(this)) this.exchange.onAttemptTimeout(this, true);
  };
  #onPerTryTimeout(): void {
    this.#perTryTimer = null;
    if (this.exchange.isCurrent(this)) this.exchange.onAttemptTimeout(this, false);
  }

  /** The response head arrived: the per-try timeout no longer applies. */
  onResponseStarted(): void {
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
    this.#perTryTimer = null;
  }

  /** The socket goes to a splice: this attempt's listeners come off it (it stays counted until `release`). */
  detach(): void {
    const s = this.socket;
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    s.off('drain', this.#onDrain);
    s.off('timeout', this.#onTimeout);
    s.setTimeout(0);
  }

  takeHeadBuffer(chunk: Buffer): Buffer {
    const prev = this.#headBuf;
    this.#headBuf = null;
    return prev === null ? chunk : Buffer.concat([prev, chunk]);
  }

  keepHeadBuffer(buf: Buffer): void {
    this.#headBuf = buf;
  }

  abandon(): void {
    this.socket.destroy();
    this.release();
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.host.host.active--;
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
  }
}

interface ResponseHead {
  readonly status: number;
  readonly reason: string | null;
  /** Flat `[name, value, …]`, as received. */
  readonly headers: string[];
  readonly connection: string | null;
  readonly upgrade: string | null;
  readonly contentLength: string | null;
  readonly transferEncoding: string | null;
}

/** An HTTP/1.x response head (without its final CRLFCRLF); null when malformed. */
function parseResponseHead(text: string): ResponseHead | null {
  const lines = text.split('\r\n');
  const m = STATUS_LINE.exec(lines[0]!);
  if (m === null) return null;
  const headers: string[] = [];
  let connection: string | null = null;
  let upgrade: string | null = null;
  let contentLength: string | null = null;
  let transferEncoding: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // No name, a space before the colon, or obs-fold continuation lines: rejected, as Envoy's codec does.
    if (colon <= 0 || line.charCodeAt(colon - 1) === 32 || line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) return null;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    headers.push(name, value);
    switch (name.toLowerCase()) {
      case 'connection':
        connection = connection === null ? value : `${connection}, ${value}`;
        break;
      case 'upgrade':
        upgrade = value;
        break;
      case 'content-length':
        if (contentLength !== null && contentLength !== value) return null;
        contentLength = value;
        break;
      case 'transfer-encoding':
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
    }
  }
  return { status: Number(m[1]), reason: m[2] ?? null, headers, connection, upgrade, contentLength, transferEncoding };
}

function formatHead(status: number, reason: string | null, headers: readonly string[]): string {
  let s = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? reason ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]!}: ${headers[i + 1]!}\r\n`;
  return s + '\r\n';
}

const C_SIZE = 0;
const C_EXT = 1;
const C_DATA = 2;
const C_DATA_END = 3;
const C_TRAILER_START = 4;
const C_TRAILER_CR = 5;
const C_TRAILER_LINE = 6;

/**
 * Finds where a chunked body ends as its bytes pass by (they are relayed unchanged), so a
 * refused upgrade's response can end the client connection right after its last chunk.
 */
class ChunkedBodyEnd {
  #state = C_SIZE;
  #size = 0;
  #left = 0;

  /** Index just past the end of the body within `b`, or -1 when it goes on. */
  scan(b: Buffer): number {
    let i = 0;
    while (i < b.length) {
      switch (this.#state) {
        case C_SIZE:
        case C_EXT: {
          const c = b[i++]!;
          if (c === 10 /* LF */) {
            if (this.#size === 0) this.#state = C_TRAILER_START;
            else {
              this.#left = this.#size;
              this.#size = 0;
              this.#state = C_DATA;
            }
          } else if (this.#state === C_SIZE) {
            const v = hexValue(c);
            if (v >= 0) this.#size = this.#size * 16 + v;
            else this.#state = C_EXT;
          }
          break;
        }
        case C_DATA: {
          const n = Math.min(this.#left, b.length - i);
          i += n;
          this.#left -= n;
          if (this.#left === 0) this.#state = C_DATA_END;
          break;
        }
        case C_DATA_END:
          if (b[i++] === 10) this.#state = C_SIZE;
          break;
        case C_TRAILER_START: {
          const c = b[i++]!;
          if (c === 10) return i;
          this.#state = c === 13 ? C_TRAILER_CR : C_TRAILER_LINE;
          break;
        }
        case C_TRAILER_CR:
          if (b[i++] === 10) return i;
          this.#state = C_TRAILER_LINE;
          break;
        case C_TRAILER_LINE:
          if (b[i++] === 10) this.#state = C_TRAILER_START;
      }
    }
    return -1;
  }
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}
