import type { Dispatcher } from 'undici';
import type { ForwardTarget, MirrorTarget, WeightedTarget } from '../router/compiled-route.ts';
import { AttemptFailure, hasRetriableHeader } from '../router/retry-policy.ts';
import { findRoute } from '../router/route-table.ts';
import { ROUTE_REQUEST, Router, type RouterStream } from '../router/router.ts';
import type { ListenerSettings } from './listener-settings.ts';
import type { Connection, ListenerContext } from './connection.ts';
import { GrpcMessageCounter, grpcRequestTimeoutMs, isGrpcRequest } from './grpc.ts';
import { MirrorRequest } from './mirror-request.ts';
import { RESPONSE_HOLD, RESPONSE_REPLIED } from './filter-manager.ts';
import { ActiveStream, setHeader, type StreamOwner } from './active-stream.ts';
import { LocalReplies, type LocalReply } from './local-reply.ts';
import type { DownstreamRequest, DownstreamResponse, ResponseTarget, ResponseWriter, Trailers } from './response-writer.ts';
import { redirectLocation } from './redirect.ts';
import { ReplayableBody, REQUEST_BUFFER_LIMIT } from './request-body.ts';
import { rawHeaderValue, RESPONSE_HOP_BY_HOP, UPSTREAM_SERVICE_TIME } from './request-headers.ts';
import { PEER_METADATA, PEER_METADATA_ID } from '../telemetry/peer-metadata.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import type { CircuitBreaker } from '../upstream/circuit-breaker.ts';
import { midResponseFlag } from '../upstream/connect-errors.ts';
import { HttpUpstreamRequest, type HttpUpstreamOwner } from '../upstream/http-upstream-request.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { UpstreamHeaders } from '../upstream/upstream-request.ts';

/** The body a filter reads of a request without one. */
const EMPTY_BODY = Buffer.alloc(0);

export type { DownstreamRequest, DownstreamResponse } from './response-writer.ts';

const ROUTING = 0;
const UPSTREAM = 1;
const RESPONDING = 2;
const DONE = 3;

/**
 * The router filter of one HTTP request and its response writer: what its `ActiveStream`
 * (headers in, filters, local reply, telemetry) hands over once the filters let the request
 * through. It answers a route's direct response or redirect, hands a forwarded request to its
 * `Router` (hosts, tries, retries, timeouts), streams the request body to each try, and writes
 * the response back through the protocol's `ResponseWriter` (local replies too); at the end
 * the stream writes the access log line and bumps the metrics. A request with one try
 * allocates this object, its stream, its router and one small try.
 */
export class Exchange implements StreamOwner, HttpUpstreamOwner, RouterStream<HttpUpstreamRequest>, ResponseTarget {
  /** The request's state, what filters, the access log, routing and the load balancer see. */
  readonly stream: ActiveStream<DownstreamRequest>;
  readonly res: DownstreamResponse;
  /** How the response goes out on the request's protocol. */
  readonly #writer: ResponseWriter;
  /** A gRPC request: local replies are gRPC replies, `grpc-timeout` bounds it. */
  #grpc = false;
  /** The last grpc-status seen from upstream (headers or trailers), for metrics; '' if none. */
  #grpcStatus = '';
  /** gRPC messages each way (made for gRPC requests only). */
  #requestMessages: GrpcMessageCounter | null = null;
  #responseMessages: GrpcMessageCounter | null = null;

  #forwardTarget: ForwardTarget | null = null;
  /** The router of a forwarded request (made when the route forwards). */
  #router: Router<HttpUpstreamRequest> | null = null;
  #body: ReplayableBody | null = null;
  #state = ROUTING;
  /** A response head the writer holds until the first body byte (HTTP/2). */
  pendingHead: string[] | null = null;
  /** A response filter holds the head until the body has passed the filters (`onResponse` returned StopIteration): the head and the body so far. */
  #heldHead: string[] | null = null;
  #heldBody: Buffer[] | null = null;

  constructor(ctx: ListenerContext, conn: Connection, snapshot: ListenerSettings, req: DownstreamRequest, res: DownstreamResponse, writer: ResponseWriter) {
    this.stream = new ActiveStream<DownstreamRequest>(this, ctx, conn, snapshot, req);
    this.res = res;
    this.#writer = writer;
  }

  /** Entry point, called by the listener for each request. Never throws. */
  start(): void {
    const s = this.stream;
    s.snapshot.http.requestStarted(this.#writer.http2);
    try {
      this.#start(s);
    } catch (err) {
      s.ctx.log.error(`unexpected error handling ${s.method} ${s.path}: ${(err as Error).stack ?? String(err)}`);
      this.localReply(LocalReplies.internalError);
    }
  }

  #start(s: ActiveStream<DownstreamRequest>): void {
    if (!s.readRequestTarget()) {
      this.localReply(LocalReplies.badPath);
      return;
    }
    s.readHeaders(false);
    if (s.authority === '' && s.protocol === 'HTTP/1.1') {
      this.localReply(LocalReplies.missingHost);
      return;
    }
    // Shed after reading the head, so the access log line still names the request.
    if (s.ctx.overloaded && !s.snapshot.bypassOverloadManager) {
      s.ctx.noteShed();
      this.localReply(LocalReplies.overloaded);
      return;
    }
    s.hasBody = this.#writer.requestHasBody(this, s.hasBody);
    this.#grpc = isGrpcRequest(s.contentType);
    if (this.#grpc) {
      this.#requestMessages = new GrpcMessageCounter();
      this.#responseMessages = new GrpcMessageCounter();
    }
    // The route is chosen before the filters run (they may read its per-route configs); a
    // request with no route still meets the filters, which may answer before the 404.
    s.route = findRoute(s.snapshot.routesFor(s.conn.tlsServer), s);
    s.runFilters();
  }

  /** `retriable-headers`: a response header the request named in `x-envoy-retriable-header-names`. */
  #retriableHeaders(headers: Readonly<Record<string, unknown>>): boolean {
    const names = this.stream.requestHeader('x-envoy-retriable-header-names');
    return names !== null && hasRetriableHeader(names, headers);
  }

  get aborted(): boolean {
    return this.#state === DONE;
  }

  /** A filter's local reply: an upstream attempt under way (a reply from the response phase) is dropped. */
  replyLocally(reply: LocalReply): void {
    this.#router?.cancelTry();
    this.localReply(reply);
  }

  afterFilters(): void {
    const s = this.stream;
    const route = s.route;
    if (route === null) {
      s.snapshot.http.noRoute.value++;
      this.localReply(LocalReplies.noRoute);
      return;
    }
    const target = route.target;
    if (target.kind === 'direct-response') {
      s.snapshot.http.directResponse.value++;
      this.#directResponse(target.status, target.body);
      return;
    }
    if (target.kind === 'redirect') {
      s.snapshot.http.redirect.value++;
      this.#directResponse(target.model.status, null, redirectLocation(target.model, s));
      return;
    }
    const router = (this.#router = new Router<HttpUpstreamRequest>(this, ROUTE_REQUEST));
    const timeoutMs = this.#grpc ? grpcRequestTimeoutMs(target.timeoutMs, rawHeaderValue(s.req.rawHeaders, 'grpc-timeout')) : target.timeoutMs;
    // Without a body the request is complete now: the route timeout starts. With one, it starts
    // when the body has been sent (Envoy times from the end of the downstream request).
    router.forward(target, timeoutMs, !s.hasBody);
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
    this.#forwardTarget = target;
    s.prepareUpstream(target, weighted, cluster);
    if (s.hasBody && (this.#router!.retry!.retriesLeft > 0 || target.mirrors.length > 0)) this.#body ??= new ReplayableBody(s.requestBodySource());
    if (target.mirrors.length > 0) this.#mirror(target.mirrors);
    this.#state = UPSTREAM;
  }

  /** A filter reads the body ahead (ext_authz): it is kept, and the attempts send it from its first byte. */
  bufferRequestBody(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void {
    const s = this.stream;
    if (!s.hasBody) {
      done(EMPTY_BODY, true);
      return;
    }
    this.#body ??= new ReplayableBody(s.requestBodySource(), Math.max(REQUEST_BUFFER_LIMIT, maxBytes));
    this.#body.readAhead(maxBytes, done);
  }

  /** A try to `host` through its pool (HTTP/1.1 or HTTP/2). */
  makeTry(host: ClusterHost, attempt: number, perTryTimeoutMs: number, slot: CircuitBreaker | null): HttpUpstreamRequest {
    this.stream.noteTry(host, attempt);
    host.host.active++;
    host.host.requestsTotal++;
    return new HttpUpstreamRequest(this, host, perTryTimeoutMs, slot);
  }

  startTry(attempt: HttpUpstreamRequest): void {
    const host = attempt.host.host;
    const s = this.stream;
    host.pool.dispatch(
      {
        path: s.path,
        method: s.method as Dispatcher.HttpMethod,
        headers: s.upstreamHeaders,
        body: this.#requestBody(),
        // Never let undici hold back a request for pipelining order.
        blocking: false,
        // A TLS pool's SNI is the cluster's, not the Host header's: undici would otherwise
        // reconnect whenever two requests name the host differently.
        servername: host.servername,
      } as Dispatcher.DispatchOptions,
      attempt,
    );
  }

  /** An HTTP try holds nothing of the stream's: cancelling it is all. */
  tryDropped(_a: HttpUpstreamRequest): void {}

  /** The body for an attempt; a gRPC request's first one counts its messages on the way (retries replay the same ones). */
  #requestBody(): AsyncIterable<Uint8Array> | NodeJS.ReadableStream | null {
    const s = this.stream;
    const body = this.#body !== null ? this.#body.open() : s.hasBody ? s.requestBodySource() : null;
    const counter = this.#requestMessages;
    if (body === null || counter === null || this.#router!.attempts !== 1) return body;
    return countMessages(body as AsyncIterable<Uint8Array>, counter);
  }

  /** The route timeout fired after the response head: the client is cut off, as Envoy resets the stream. */
  resetStream(): void {
    this.#writer.reset(this);
    this.#finish();
  }

  // --- upstream callbacks (from the current try only) -----------------------------------

  isCurrent(a: HttpUpstreamRequest): boolean {
    return this.#state !== DONE && this.#router !== null && this.#router.isCurrent(a);
  }

  /** The body of the first attempt has been sent in full. */
  onUpstreamRequestSent(_a: HttpUpstreamRequest): void {
    this.#router!.startRouteTimer();
  }

  onUpstreamBodySent(chunk: Buffer): void {
    // Retries replay the buffer; count what the client sent, once.
    if (this.#router!.attempts === 1) {
      this.stream.bytesReceived += chunk.length;
    }
  }

  /**
   * Response headers of the current attempt. Returns false when the response is retried
   * instead (the caller then abandons the attempt).
   */
  onUpstreamResponseHead(a: HttpUpstreamRequest, statusCode: number, headers: UpstreamHeaders): boolean {
    const router = this.#router!;
    const policy = router.retry!.policy;
    const gs = headers['grpc-status'];
    const retriable = policy !== null && (policy.retriableResponse(statusCode, typeof gs === 'string' ? Number(gs) : -1) || (policy.onRetriableHeaders && this.#retriableHeaders(headers)));
    // Retried instead: the router cancelled this try and makes the next after the back-off.
    if (!router.onResponseHead(a, statusCode, retriable)) return false;
    const s = this.stream;
    this.#state = RESPONDING;
    if (typeof gs === 'string') this.#grpcStatus = gs;
    s.upstreamServiceTimeMs = performance.now() - a.startedAt;
    s.responseCode = statusCode;
    s.responseCodeDetails = 'via_upstream';
    const out: string[] = [];
    const outbound = s.snapshot.direction !== 'inbound';
    for (const name in headers) {
      // The upstream's own service time (a sidecar before it set one) gives way to this hop's.
      if (RESPONSE_HOP_BY_HOP.has(name) || name === UPSTREAM_SERVICE_TIME) continue;
      const v = headers[name];
      // Outbound, Istio's peer metadata filter: the upstream's metadata labels the metrics and stops here.
      if (outbound && (name === PEER_METADATA || name === PEER_METADATA_ID)) {
        if (name === PEER_METADATA && typeof v === 'string') s.upstreamPeer = s.ctx.peerCache.lookup(v);
        continue;
      }
      if (typeof v === 'string') out.push(name, v);
      else if (v !== undefined) for (const item of v) out.push(name, item);
    }
    out.push(UPSTREAM_SERVICE_TIME, String(Math.round(s.upstreamServiceTimeMs)));
    this.#finishResponseHeaders(out);
    const phase = s.runResponseFilters(out, false);
    // A filter answered instead: its local reply is out and this attempt was cancelled.
    if (phase === RESPONSE_REPLIED) return false;
    if (phase === RESPONSE_HOLD) {
      this.#heldHead = out;
      this.#heldBody = [];
      return true;
    }
    try {
      this.#writer.head(this, out);
    } catch (err) {
      // An upstream header Node refuses to send (bad characters): answer locally instead.
      this.#state = UPSTREAM;
      s.upstreamTransportFailureReason = (err as Error).message;
      router.cancelTry();
      this.localReply(LocalReplies.upstreamInvalid);
      return false;
    }
    return true;
  }

  onUpstreamData(a: HttpUpstreamRequest, chunk: Buffer): boolean {
    const s = this.stream;
    if (s.hasResponseDataFilters) {
      chunk = s.filterResponseData(chunk, false);
      if (this.#state === DONE) return true;
      if (chunk.length === 0) return true;
    }
    if (this.#heldBody !== null) {
      this.#heldBody.push(chunk);
      return true;
    }
    return this.#writeResponseData(a, chunk);
  }

  #writeResponseData(a: HttpUpstreamRequest, chunk: Buffer): boolean {
    this.stream.bytesSent += chunk.length;
    this.#responseMessages?.feed(chunk);
    if (this.#writer.data(this, chunk)) return true;
    this.#writer.onDrain(this, () => a.resume());
    return false;
  }

  onUpstreamEnd(a: HttpUpstreamRequest, trailers: Trailers): void {
    const gs = trailers['grpc-status'];
    if (typeof gs === 'string') this.#grpcStatus = gs;
    const s = this.stream;
    if (s.hasResponseDataFilters) {
      const last = s.filterResponseData(EMPTY_BODY, true);
      if (this.#state === DONE) return;
      if (this.#heldBody !== null) this.#heldBody.push(last);
      else if (last.length > 0) this.#writeResponseData(a, last);
    }
    if (this.#heldBody !== null) {
      this.#endHeldResponse(trailers);
      return;
    }
    this.#writer.end(this, trailers);
    this.#finish();
  }

  /**
   * The end of a response whose head a filter held: head and body go out now, with
   * `content-length` from the body as the filters left it (a HEAD response keeps upstream's).
   */
  #endHeldResponse(trailers: Trailers): void {
    const head = this.#heldHead!;
    const body = Buffer.concat(this.#heldBody!);
    this.#heldHead = null;
    this.#heldBody = null;
    const s = this.stream;
    if (s.method !== 'HEAD') setHeader(head, 'content-length', String(body.length));
    s.bytesSent += body.length;
    this.#responseMessages?.feed(body);
    try {
      this.#writer.whole(this, head, body, trailers);
    } catch (err) {
      s.upstreamTransportFailureReason = (err as Error).message;
      this.localReply(LocalReplies.upstreamInvalid);
      return;
    }
    this.#finish();
  }

  /** The current attempt failed before or after its response started. */
  onUpstreamFailed(a: HttpUpstreamRequest, failure: AttemptFailure, code: string): void {
    const router = this.#router!;
    if (this.#state === RESPONDING) {
      // Headers are out: all that can be done is to cut the client off, as Envoy resets the stream.
      const s = this.stream;
      s.upstreamTransportFailureReason = code;
      router.onTryFailedAfterHead(a, failure);
      s.responseFlags |= ResponseFlag[midResponseFlag(failure)];
      this.#writer.reset(this);
      this.#finish();
      return;
    }
    // Retried, or the failure's local reply (the router's).
    router.onTryFailed(a, failure, code);
  }

  /** A body is replayed from the buffer; one that outgrew it cannot be sent again. */
  get replayable(): boolean {
    return !this.stream.hasBody || (this.#body !== null && this.#body.replayable);
  }

  /** Copies of the request to shadow clusters: fire and forget, never affecting this exchange. */
  #mirror(mirrors: readonly MirrorTarget[]): void {
    const s = this.stream;
    for (const m of mirrors) {
      if (m.cluster === null || (m.percent < 100 && Math.random() * 100 >= m.percent)) continue;
      const host = m.cluster.pick(s);
      if (host === null) continue;
      const timeoutMs = this.#forwardTarget!.timeoutMs > 0 ? this.#forwardTarget!.timeoutMs : MirrorRequest.DEFAULT_TIMEOUT_MS;
      const send = (body: Buffer | null): void => MirrorRequest.send(host, s.method, s.path, shadowHeaders(s.upstreamHeaders), body, timeoutMs);
      const body = this.#body;
      if (body === null) send(null);
      // Envoy shadows the body too; here only bodies that fit the buffer are mirrored.
      else
        body.whenComplete(() => {
          const buf = body.buffered();
          if (buf !== null) send(buf);
        });
    }
  }

  // --- downstream side ---------------------------------------------------------------

  /** The client's connection (or HTTP/2 stream) closed before the exchange finished: cancel upstream work. */
  onDownstreamClose(): void {
    if (this.#state === DONE) return;
    this.stream.responseFlags |= ResponseFlag.DC;
    this.#finish();
    this.#router?.cancelTry();
  }

  /**
   * A response generated by the proxy (Envoy's local reply, encoded once in the catalogue).
   * A gRPC request gets its gRPC form: HTTP 200, trailers-only, with `grpc-status`.
   */
  localReply(reply: LocalReply): void {
    if (this.#state === DONE) return;
    const s = this.stream;
    s.noteLocalReply(reply);
    if (this.res.headersSent) {
      this.#writer.reset(this);
      this.#finish();
      return;
    }
    let headers: string[];
    let payload: Buffer | null = null;
    if (this.#grpc) {
      this.#grpcStatus = reply.grpcStatusText;
      s.responseCode = 200;
      headers = reply.grpcHead.slice();
    } else {
      payload = reply.body;
      headers = reply.head.slice();
    }
    s.finishLocalReplyHeaders(headers);
    this.#writer.localHead(headers, s.ctx.draining, this.#grpc);
    this.#heldHead = null;
    this.#heldBody = null;
    // The filters see the local reply's head too (not one they make in the response phase).
    if (s.runResponseFilters(headers, true) === RESPONSE_REPLIED) return;
    s.bytesSent = payload === null ? 0 : payload.length;
    this.#writer.whole(this, headers, payload, null);
    this.#finish();
  }

  #directResponse(status: number, body: Buffer | null, location: string | null = null): void {
    const s = this.stream;
    s.responseCode = status;
    s.responseCodeDetails = 'direct_response';
    const headers: string[] = ['content-length', String(body === null ? 0 : body.length)];
    if (body !== null) headers.push('content-type', 'text/plain');
    if (location !== null) headers.push('location', location);
    this.#finishResponseHeaders(headers);
    if (s.runResponseFilters(headers, true) === RESPONSE_REPLIED) return;
    s.bytesSent = body === null ? 0 : body.length;
    this.#writer.whole(this, headers, body, null);
    this.#finish();
  }

  /** The stream's response head edits, then the protocol's own (`Connection: close` while draining, HTTP/1). */
  #finishResponseHeaders(out: string[]): void {
    const s = this.stream;
    s.finishResponseHeaders(out);
    this.#writer.responseHead(out, s.ctx.draining);
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    const s = this.stream;
    s.snapshot.http.requestDone(s.responseCode);
    this.#router?.finish();
    s.destroyFilters();
    s.conn.onExchangeDone(this);
    s.logAndRecord(this.#grpcStatus, this.#requestMessages?.count ?? 0, this.#responseMessages?.count ?? 0);
  }
}

/** A copy of the upstream headers for a shadow request: Envoy appends `-shadow` to the host (before the port). */
function shadowHeaders(headers: readonly string[]): string[] {
  const out = headers.slice();
  for (let i = 0; i < out.length; i += 2) {
    if (out[i] === 'host') {
      const h = out[i + 1]!;
      const colon = h.lastIndexOf(':');
      out[i + 1] = colon > 0 && !h.endsWith(']') ? `${h.slice(0, colon)}-shadow${h.slice(colon)}` : `${h}-shadow`;
    }
  }
  return out;
}

async function* countMessages(body: AsyncIterable<Uint8Array>, counter: GrpcMessageCounter): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    counter.feed(chunk);
    yield chunk;
  }
}
