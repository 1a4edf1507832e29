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
import { ProxiedRequest, setHeader } from './proxied-request.ts';
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
 * One HTTP request through the proxy, from the downstream request to the end of the
 * response: it routes, hands a forwarded request to its `Router` (hosts, tries, retries,
 * timeouts), streams the request body to each try, writes the response back, and at the end
 * writes the access log line and bumps the metrics. A request with one try allocates this
 * object, its router and one small try.
 */
export class Exchange extends ProxiedRequest implements HttpUpstreamOwner, RouterStream<HttpUpstreamRequest>, ResponseTarget {
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
    super(ctx, conn, snapshot, req);
    this.res = res;
    this.#writer = writer;
  }

  /** Entry point, called by the listener for each request. Never throws. */
  start(): void {
    this.snapshot.http.requestStarted(this.#writer.http2);
    try {
      this.#start();
    } catch (err) {
      this.ctx.log.error(`unexpected error handling ${this.method} ${this.path}: ${(err as Error).stack ?? String(err)}`);
      this.localReply(LocalReplies.internalError);
    }
  }

  #start(): void {
    if (!this.readRequestTarget()) {
      this.localReply(LocalReplies.badPath);
      return;
    }
    this.readHeaders(false);
    if (this.authority === '' && this.protocol === 'HTTP/1.1') {
      this.localReply(LocalReplies.missingHost);
      return;
    }
    // Shed after reading the head, so the access log line still names the request.
    if (this.ctx.overloaded && !this.snapshot.bypassOverloadManager) {
      this.ctx.noteShed();
      this.localReply(LocalReplies.overloaded);
      return;
    }
    this.hasBody = this.#writer.requestHasBody(this, this.hasBody);
    this.#grpc = isGrpcRequest(this.contentType);
    if (this.#grpc) {
      this.#requestMessages = new GrpcMessageCounter();
      this.#responseMessages = new GrpcMessageCounter();
    }
    // The route is chosen before the filters run (they may read its per-route configs); a
    // request with no route still meets the filters, which may answer before the 404.
    this.route = findRoute(this.snapshot.routesFor(this.conn.tlsServer), this);
    this.runFilters();
  }

  /** `retriable-headers`: a response header the request named in `x-envoy-retriable-header-names`. */
  #retriableHeaders(headers: Readonly<Record<string, unknown>>): boolean {
    const names = this.requestHeader('x-envoy-retriable-header-names');
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
    const route = this.route;
    if (route === null) {
      this.snapshot.http.noRoute.value++;
      this.localReply(LocalReplies.noRoute);
      return;
    }
    const target = route.target;
    if (target.kind === 'direct-response') {
      this.snapshot.http.directResponse.value++;
      this.#directResponse(target.status, target.body);
      return;
    }
    if (target.kind === 'redirect') {
      this.snapshot.http.redirect.value++;
      this.#directResponse(target.model.status, null, redirectLocation(target.model, this));
      return;
    }
    const router = (this.#router = new Router<HttpUpstreamRequest>(this, ROUTE_REQUEST));
    const timeoutMs = this.#grpc ? grpcRequestTimeoutMs(target.timeoutMs, rawHeaderValue(this.req.rawHeaders, 'grpc-timeout')) : target.timeoutMs;
    // Without a body the request is complete now: the route timeout starts. With one, it starts
    // when the body has been sent (Envoy times from the end of the downstream request).
    router.forward(target, timeoutMs, !this.hasBody);
  }

  /** The router picked the destination: the request is prepared for it (or answered 503 NC). */
  onRouted(target: ForwardTarget, weighted: WeightedTarget, cluster: UpstreamCluster | null): void {
    if (cluster === null) {
      this.snapshot.http.noCluster.value++;
      this.target = weighted;
      return;
    }
    this.snapshot.http.routed.value++;
    this.#forwardTarget = target;
    this.prepareUpstream(target, weighted, cluster);
    if (this.hasBody && (this.#router!.retry!.retriesLeft > 0 || target.mirrors.length > 0)) this.#body ??= new ReplayableBody(this.requestBodySource());
    if (target.mirrors.length > 0) this.#mirror(target.mirrors);
    this.#state = UPSTREAM;
  }

  /** A filter reads the body ahead (ext_authz): it is kept, and the attempts send it from its first byte. */
  bufferRequestBody(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void {
    if (!this.hasBody) {
      done(EMPTY_BODY, true);
      return;
    }
    this.#body ??= new ReplayableBody(this.requestBodySource(), Math.max(REQUEST_BUFFER_LIMIT, maxBytes));
    this.#body.readAhead(maxBytes, done);
  }

  /** A try to `host` through its pool (HTTP/1.1 or HTTP/2). */
  makeTry(host: ClusterHost, attempt: number, perTryTimeoutMs: number, slot: CircuitBreaker | null): HttpUpstreamRequest {
    this.noteTry(host, attempt);
    host.host.active++;
    host.host.requestsTotal++;
    return new HttpUpstreamRequest(this, host, perTryTimeoutMs, slot);
  }

  startTry(attempt: HttpUpstreamRequest): void {
    const host = attempt.host.host;
    host.pool.dispatch(
      {
        path: this.path,
        method: this.method as Dispatcher.HttpMethod,
        headers: this.upstreamHeaders,
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
    const body = this.#body !== null ? this.#body.open() : this.hasBody ? this.requestBodySource() : null;
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
      this.bytesReceived += chunk.length;
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
    this.#state = RESPONDING;
    if (typeof gs === 'string') this.#grpcStatus = gs;
    this.upstreamServiceTimeMs = performance.now() - a.startedAt;
    this.responseCode = statusCode;
    this.responseCodeDetails = 'via_upstream';
    const out: string[] = [];
    const outbound = this.snapshot.direction !== 'inbound';
    for (const name in headers) {
      // The upstream's own service time (a sidecar before it set one) gives way to this hop's.
      if (RESPONSE_HOP_BY_HOP.has(name) || name === UPSTREAM_SERVICE_TIME) continue;
      const v = headers[name];
      // Outbound, Istio's peer metadata filter: the upstream's metadata labels the metrics and stops here.
      if (outbound && (name === PEER_METADATA || name === PEER_METADATA_ID)) {
        if (name === PEER_METADATA && typeof v === 'string') this.upstreamPeer = this.ctx.peerCache.lookup(v);
        continue;
      }
      if (typeof v === 'string') out.push(name, v);
      else if (v !== undefined) for (const item of v) out.push(name, item);
    }
    out.push(UPSTREAM_SERVICE_TIME, String(Math.round(this.upstreamServiceTimeMs)));
    this.#finishResponseHeaders(out);
    const phase = this.runResponseFilters(out, false);
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
      this.upstreamTransportFailureReason = (err as Error).message;
      router.cancelTry();
      this.localReply(LocalReplies.upstreamInvalid);
      return false;
    }
    return true;
  }

  onUpstreamData(a: HttpUpstreamRequest, chunk: Buffer): boolean {
    if (this.hasResponseDataFilters) {
      chunk = this.filterResponseData(chunk, false);
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
    this.bytesSent += chunk.length;
    this.#responseMessages?.feed(chunk);
    if (this.#writer.data(this, chunk)) return true;
    this.#writer.onDrain(this, () => a.resume());
    return false;
  }

  onUpstreamEnd(a: HttpUpstreamRequest, trailers: Trailers): void {
    const gs = trailers['grpc-status'];
    if (typeof gs === 'string') this.#grpcStatus = gs;
    if (this.hasResponseDataFilters) {
      const last = this.filterResponseData(EMPTY_BODY, true);
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
    if (this.method !== 'HEAD') setHeader(head, 'content-length', String(body.length));
    this.bytesSent += body.length;
    this.#responseMessages?.feed(body);
    try {
      this.#writer.whole(this, head, body, trailers);
    } catch (err) {
      this.upstreamTransportFailureReason = (err as Error).message;
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
      this.upstreamTransportFailureReason = code;
      router.onTryFailedAfterHead(a, failure);
      this.responseFlags |= ResponseFlag[midResponseFlag(failure)];
      this.#writer.reset(this);
      this.#finish();
      return;
    }
    // Retried, or the failure's local reply (the router's).
    router.onTryFailed(a, failure, code);
  }

  /** A body is replayed from the buffer; one that outgrew it cannot be sent again. */
  get replayable(): boolean {
    return !this.hasBody || (this.#body !== null && this.#body.replayable);
  }

  /** Copies of the request to shadow clusters: fire and forget, never affecting this exchange. */
  #mirror(mirrors: readonly MirrorTarget[]): void {
    for (const m of mirrors) {
      if (m.cluster === null || (m.percent < 100 && Math.random() * 100 >= m.percent)) continue;
      const host = m.cluster.pick(this);
      if (host === null) continue;
      const timeoutMs = this.#forwardTarget!.timeoutMs > 0 ? this.#forwardTarget!.timeoutMs : MirrorRequest.DEFAULT_TIMEOUT_MS;
      const send = (body: Buffer | null): void => MirrorRequest.send(host, this.method, this.path, shadowHeaders(this.upstreamHeaders), body, timeoutMs);
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
    this.responseFlags |= ResponseFlag.DC;
    this.#finish();
    this.#router?.cancelTry();
  }

  /**
   * A response generated by the proxy (Envoy's local reply, encoded once in the catalogue).
   * A gRPC request gets its gRPC form: HTTP 200, trailers-only, with `grpc-status`.
   */
  localReply(reply: LocalReply): void {
    if (this.#state === DONE) return;
    this.responseCode = reply.status;
    this.responseFlags |= reply.flag;
    this.responseCodeDetails = reply.details;
    if (this.res.headersSent) {
      this.#writer.reset(this);
      this.#finish();
      return;
    }
    let headers: string[];
    let payload: Buffer | null = null;
    if (this.#grpc) {
      this.#grpcStatus = reply.grpcStatusText;
      this.responseCode = 200;
      headers = reply.grpcHead.slice();
    } else {
      payload = reply.body;
      headers = reply.head.slice();
    }
    if (this.requestId !== null) headers.push('x-request-id', this.requestId);
    const extra = this.extraResponseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
    this.applyResponseHeaderSets(headers);
    if (this.snapshot.direction === 'inbound') this.addPeerMetadataResponse(headers);
    this.snapshot.connectionManager.applyServer(headers);
    this.#writer.localHead(headers, this.ctx.draining, this.#grpc);
    this.#heldHead = null;
    this.#heldBody = null;
    // The filters see the local reply's head too (not one they make in the response phase).
    if (this.runResponseFilters(headers, true) === RESPONSE_REPLIED) return;
    this.bytesSent = payload === null ? 0 : payload.length;
    this.#writer.whole(this, headers, payload, null);
    this.#finish();
  }

  #directResponse(status: number, body: Buffer | null, location: string | null = null): void {
    this.responseCode = status;
    this.responseCodeDetails = 'direct_response';
    const headers: string[] = ['content-length', String(body === null ? 0 : body.length)];
    if (body !== null) headers.push('content-type', 'text/plain');
    if (location !== null) headers.push('location', location);
    this.#finishResponseHeaders(headers);
    if (this.runResponseFilters(headers, true) === RESPONSE_REPLIED) return;
    this.bytesSent = body === null ? 0 : body.length;
    this.#writer.whole(this, headers, body, null);
    this.#finish();
  }

  /** Response edits (filters' headers among them), the `server` header, and the protocol's own (`Connection: close` while draining, HTTP/1). */
  #finishResponseHeaders(out: string[]): void {
    this.applyResponseEdits(out);
    if (this.snapshot.direction === 'inbound') this.addPeerMetadataResponse(out);
    this.snapshot.connectionManager.applyServer(out);
    this.#writer.responseHead(out, this.ctx.draining);
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    this.snapshot.http.requestDone(this.responseCode);
    this.#router?.finish();
    this.destroyFilters();
    this.conn.onExchangeDone(this);
    this.logAndRecord(this.#grpcStatus, this.#requestMessages?.count ?? 0, this.#responseMessages?.count ?? 0);
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
