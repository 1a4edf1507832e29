import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Dispatcher } from 'undici';
import type { CompiledRoute, ForwardTarget, MirrorTarget, RouteRequest, WeightedTarget } from '../router/compiled-route.ts';
import { AttemptFailure, retryBackoffMs, type CompiledRetryPolicy } from '../router/retry-policy.ts';
import { findRoute } from '../router/route-table.ts';
import type { ListenerSnapshot } from '../runtime/snapshot.ts';
import type { AccessLogRecord } from '../telemetry/access-log.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { Connection, ListenerContext } from './connection.ts';
import { CORS_ACTUAL, CORS_NONE, CORS_RESPONSE_DETAILS, type CompiledCors } from './cors.ts';
import { GrpcStatus, grpcLocalReplyHeaders, grpcRequestTimeoutMs, isGrpcRequest, localReplyGrpcStatus } from './grpc.ts';
import { MirrorRequest } from './mirror-request.ts';
import { normalizePath } from './path-normalize.ts';
import { redirectLocation } from './redirect.ts';
import { ReplayableBody } from './request-body.ts';
import {
  classifyHeader,
  cookieValue,
  H_CONNECTION,
  H_CONTENT_LENGTH,
  H_CONTENT_TYPE,
  H_EXPECT,
  H_HOP,
  H_HOST,
  H_OTHER,
  H_REQUEST_ID,
  H_TE,
  H_TRANSFER_ENCODING,
  H_UPGRADE,
  H_USER_AGENT,
  H_XFF,
  H_XFP,
  queryValue,
  rawHeaderValue,
  RESPONSE_HOP_BY_HOP,
} from './request-headers.ts';
import { formatResponseFlags, ResponseFlag } from './response-flags.ts';
import { UpstreamAttempt } from './upstream-attempt.ts';

export type DownstreamRequest = IncomingMessage | Http2ServerRequest;
export type DownstreamResponse = ServerResponse | Http2ServerResponse;

/** What the exchange uses of a response, common to HTTP/1 and HTTP/2 (compat API) responses. */
interface ResponseWriter {
  readonly headersSent: boolean;
  writeHead(status: number, headers: readonly string[]): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: Buffer | null): unknown;
  once(event: 'drain', listener: () => void): unknown;
  addTrailers(trailers: Record<string, string>): void;
}

const ROUTING = 0;
const UPSTREAM = 1;
const RESPONDING = 2;
const DONE = 3;

/** Envoy retries up to this many host picks to avoid hosts already tried (Istio's setting). */
const HOST_SELECTION_ATTEMPTS = 5;

/**
 * One HTTP request through the proxy, from the downstream request to the end of the
 * response: it routes, picks hosts, runs upstream attempts (retries, per-try and route
 * timeouts), writes the response back, and at the end writes the access log line and bumps
 * the metrics. A request with one attempt allocates this object and one small attempt.
 */
export class Exchange implements AccessLogRecord, RouteRequest, HashSource {
  readonly req: DownstreamRequest;
  readonly res: ResponseWriter;
  readonly #rawRes: DownstreamResponse;
  readonly conn: Connection;
  readonly ctx: ListenerContext;
  readonly snapshot: ListenerSnapshot;
  readonly #h2: boolean;

  // Request, as the client sent it.
  readonly startTime: number;
  readonly #startHr: number;
  readonly method: string;
  readonly protocol: string;
  readonly scheme: string;
  originalPath: string;
  path: string;
  pathOnly: string;
  authority: string;
  requestId: string | null = null;
  xForwardedFor: string | null = null;
  userAgent: string | null = null;
  #hasBody = false;
  #contentType: string | null = null;
  /** A gRPC request: local replies are gRPC replies, `grpc-timeout` bounds it. */
  #grpc = false;
  /** The last grpc-status seen from upstream (headers or trailers), for metrics; '' if none. */
  #grpcStatus = '';
  /** Origin of an allowed CORS request: its response gets the CORS headers. */
  #cors: CompiledCors | null = null;
  #corsOrigin = '';
  #upstreamHeaders: string[] = [];
  /** Index of the `x-envoy-attempt-count` value in the upstream headers. */
  #attemptCountIndex = -1;

  // Routing and upstream.
  route: CompiledRoute | null = null;
  #forwardTarget: ForwardTarget | null = null;
  #target: WeightedTarget | null = null;
  cluster: UpstreamCluster | null = null;
  clusterHost: ClusterHost | null = null;
  #attempt: UpstreamAttempt | null = null;
  #attempts = 0;
  #retry: CompiledRetryPolicy | null = null;
  #retriesLeft = 0;
  /** Hosts already tried, for Envoy's previous-hosts retry predicate; null until a retry. */
  #triedHosts: ClusterHost[] | null = null;
  #body: ReplayableBody | null = null;
  #timeoutMs = 0;
  #timer: NodeJS.Timeout | null = null;
  #backoffTimer: NodeJS.Timeout | null = null;
  #setCookie: string | null = null;
  #state = ROUTING;
  /**
   * HTTP/2 response headers held until the first body byte: a response that ends without a
   * body (gRPC's trailers-only form) must go out as one HEADERS frame that ends the stream.
   */
  #pendingHead: string[] | null = null;

  // Outcome, for logs and metrics.
  responseCode = 0;
  responseFlags = 0;
  responseCodeDetails = '';
  upstreamTransportFailureReason = '';
  bytesReceived = 0;
  bytesSent = 0;
  durationMs = 0;
  upstreamServiceTimeMs = -1;

  constructor(ctx: ListenerContext, conn: Connection, snapshot: ListenerSnapshot, req: DownstreamRequest, res: DownstreamResponse) {
    this.ctx = ctx;
    this.conn = conn;
    this.snapshot = snapshot;
    this.req = req;
    this.res = res as unknown as ResponseWriter;
    this.#rawRes = res;
    this.startTime = Date.now();
    this.#startHr = performance.now();
    this.method = req.method ?? 'GET';
    this.#h2 = req.httpVersionMajor === 2;
    this.protocol = this.#h2 ? 'HTTP/2' : req.httpVersion === '1.1' ? 'HTTP/1.1' : `HTTP/${req.httpVersion}`;
    this.scheme = 'http';
    const url = req.url ?? '/';
    this.originalPath = url;
    this.path = url;
    this.pathOnly = url;
    this.authority = '';
  }

  get upstreamHost(): string | null {
    return this.clusterHost?.host.hostPort ?? null;
  }
  get upstreamCluster(): string | null {
    return this.cluster?.name ?? null;
  }
  get downstreamLocalAddress(): string {
    return this.conn.localAddress;
  }
  get downstreamRemoteAddress(): string {
    return this.conn.remoteAddress;
  }
  get sourceIp(): string {
    return this.conn.remoteIp;
  }
  get requestedServerName(): string | null {
    return null;
  }
  get routeName(): string | null {
    return this.route?.name ?? null;
  }

  /** Entry point, called by the listener for each request. Never throws. */
  start(): void {
    try {
      this.#start();
    } catch (err) {
      this.ctx.log.error(`unexpected error handling ${this.method} ${this.path}: ${(err as Error).stack ?? String(err)}`);
      this.localReply(500, 0, 'internal_error', 'internal error\n');
    }
  }

  #start(): void {
    if (!this.#readRequestTarget()) {
      this.localReply(400, ResponseFlag.DPE, 'path_normalization_failed', 'Bad Request');
      return;
    }
    this.#readHeaders();
    const route = findRoute(this.snapshot.routes, this);
    if (route === null) {
      this.localReply(404, ResponseFlag.NR, 'route_not_found', null);
      return;
    }
    this.route = route;
    const target = route.target;
    if (target.kind === 'direct-response') {
      this.#directResponse(target.status, target.body);
      return;
    }
    if (target.kind === 'redirect') {
      const location = redirectLocation(target.model, this);
      this.#directResponse(target.model.status, null, location);
      return;
    }
    if (target.cors !== null && this.#handleCors(target.cors)) return;
    this.#forward(target);
  }

  /** Envoy's CORS filter: answers preflights, marks allowed requests. True when it answered. */
  #handleCors(cors: CompiledCors): boolean {
    const origin = rawHeaderValue(this.req.rawHeaders, 'origin');
    if (origin === null) return false;
    const acrm = this.method === 'OPTIONS' ? rawHeaderValue(this.req.rawHeaders, 'access-control-request-method') : null;
    const decision = cors.decide(this.method, origin, acrm);
    if (decision === CORS_NONE) return false;
    if (decision === CORS_ACTUAL) {
      this.#cors = cors;
      this.#corsOrigin = origin;
      return false;
    }
    const headers: string[] = ['content-length', '0'];
    cors.pushPreflightHeaders(headers, decision, origin, acrm!, rawHeaderValue(this.req.rawHeaders, 'access-control-request-headers'));
    this.responseCode = 200;
    this.responseCodeDetails = CORS_RESPONSE_DETAILS;
    this.res.writeHead(200, headers);
    this.res.end();
    this.#finish();
    return true;
  }

  /** Origin-form `/path?q`, absolute-form `http://host/path` (proxy requests), or `*`. */
  #readRequestTarget(): boolean {
    let url = this.path;
    if (url === '*') return true;
    if (url.charCodeAt(0) !== 47 /* / */) {
      const m = /^https?:\/\/([^/?#]+)(.*)$/is.exec(url);
      if (m === null) return false;
      this.authority = m[1]!;
      const rest = m[2]!;
      url = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
    }
    // Envoy refuses fragments in the request target, and normalizes the path (Istio's
    // default pathNormalization BASE: dot segments resolved, slashes not merged).
    if (url.indexOf('#') >= 0) return false;
    const normalized = normalizePath(url, false);
    if (normalized === null) return false;
    this.path = normalized;
    this.originalPath = normalized;
    const q = normalized.indexOf('?');
    this.pathOnly = q >= 0 ? normalized.slice(0, q) : normalized;
    return true;
  }

  /** One pass over rawHeaders: note what the proxy needs, drop hop-by-hop, build the upstream list. */
  #readHeaders(): void {
    const raw = this.req.rawHeaders;
    const out = this.#upstreamHeaders;
    let xfp = false;
    let connectionTokens: string | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      if (name.charCodeAt(0) === 58 /* : */) {
        // HTTP/2 pseudo-headers: only :authority is news (method, path, scheme are read already).
        if (name === ':authority' && this.authority === '') this.authority = value;
        continue;
      }
      const kind = classifyHeader(name);
      switch (kind) {
        case H_OTHER:
          out.push(name, value);
          break;
        case H_HOST:
          // An absolute-form request target wins over Host, as RFC 9112 says.
          if (this.authority === '') this.authority = value;
          break;
        case H_REQUEST_ID:
          this.requestId = value;
          break;
        case H_XFF:
          this.xForwardedFor = this.xForwardedFor === null ? value : `${this.xForwardedFor}, ${value}`;
          break;
        case H_XFP:
          xfp = true;
          out.push(name, value);
          break;
        case H_USER_AGENT:
          this.userAgent = value;
          out.push(name, value);
          break;
        case H_TE:
          // Only `TE: trailers` travels on (gRPC needs it); other transfer codings are hop-by-hop.
          if (value.trim().toLowerCase() === 'trailers') out.push(name, value);
          break;
        case H_CONTENT_LENGTH:
          if (value !== '0') this.#hasBody = true;
          out.push(name, value);
          break;
        case H_CONTENT_TYPE:
          this.#contentType = value;
          out.push(name, value);
          break;
        case H_TRANSFER_ENCODING:
          this.#hasBody = true;
          break;
        case H_CONNECTION:
          if (value.indexOf(',') >= 0 || !/^\s*(close|keep-alive|upgrade)\s*$/i.test(value)) connectionTokens = value;
          break;
        case H_HOP:
        case H_EXPECT:
        case H_UPGRADE:
          break;
      }
    }
    // HTTP/2 has no Content-Length requirement: a stream that is not ended carries a body.
    if (this.#h2 && !this.#hasBody && !(this.req as Http2ServerRequest).stream.readableEnded) {
      this.#hasBody = !(this.req as Http2ServerRequest).stream.endAfterHeaders;
    }
    if (connectionTokens !== null) this.#dropConnectionTokens(connectionTokens);
    this.#grpc = isGrpcRequest(this.#contentType);
    if (this.authority !== '') out.push('host', this.authority);
    if (this.requestId === null) this.requestId = randomUUID();
    out.push('x-request-id', this.requestId);
    if (!xfp) out.push('x-forwarded-proto', this.scheme);
    if (this.snapshot.direction === 'gateway') {
      // The gateway is the edge (Envoy use_remote_address): it appends the peer it saw.
      this.xForwardedFor = this.xForwardedFor === null ? this.conn.remoteIp : `${this.xForwardedFor}, ${this.conn.remoteIp}`;
    }
    if (this.xForwardedFor !== null) out.push('x-forwarded-for', this.xForwardedFor);
  }

  /** Headers a client names in `Connection` are hop-by-hop too (RFC 9110 §7.6.1). */
  #dropConnectionTokens(value: string): void {
    const drop = new Set(value.split(',').map((t) => t.trim().toLowerCase()));
    const out = this.#upstreamHeaders;
    let w = 0;
    for (let r = 0; r < out.length; r += 2) {
      if (drop.has(out[r]!.toLowerCase())) continue;
      out[w++] = out[r]!;
      out[w++] = out[r + 1]!;
    }
    out.length = w;
  }

  #forward(target: ForwardTarget): void {
    const weighted = target.pick(Math.random());
    this.#forwardTarget = target;
    this.#target = weighted;
    const cluster = weighted.cluster;
    if (cluster === null) {
      this.localReply(503, ResponseFlag.NC, 'cluster_not_found', null);
      return;
    }
    this.cluster = cluster;
    const route = this.route!;
    const headers = this.#upstreamHeaders;
    if (target.prefixRewrite !== null || target.regexRewrite !== null) this.#rewritePath(target, route);
    if (target.authorityRewrite !== null) setHeader(headers, 'host', target.authorityRewrite);
    if (route.requestEdits !== null) route.requestEdits.apply(headers);
    if (weighted.requestEdits !== null) weighted.requestEdits.apply(headers);
    // Istio turns on Envoy's include_request_attempt_count: upstreams see which try this is.
    headers.push('x-envoy-attempt-count', '1');
    this.#attemptCountIndex = headers.length - 1;

    this.#timeoutMs = this.#grpc ? grpcRequestTimeoutMs(target.timeoutMs, rawHeaderValue(this.req.rawHeaders, 'grpc-timeout')) : target.timeoutMs;
    this.#retry = target.retry;
    this.#retriesLeft = target.retry?.numRetries ?? 0;
    if (this.#hasBody && (this.#retriesLeft > 0 || target.mirrors.length > 0)) this.#body = new ReplayableBody(this.req);
    if (target.mirrors.length > 0) this.#mirror(target.mirrors);
    this.#state = UPSTREAM;
    // Without a body the request is complete now: the route timeout starts. With one, it starts
    // when the body has been sent (Envoy times from the end of the downstream request).
    if (!this.#hasBody) this.#startRouteTimer();
    this.#nextAttempt();
  }

  #rewritePath(target: ForwardTarget, route: CompiledRoute): void {
    const before = this.path;
    if (target.regexRewrite !== null) {
      const q = before.indexOf('?');
      const p = q < 0 ? before : before.slice(0, q);
      this.path = p.replace(target.regexRewrite.regex, target.regexRewrite.substitution) + (q < 0 ? '' : before.slice(q));
    } else if (route.matchedPrefix !== null && before.startsWith(route.matchedPrefix)) {
      this.path = target.prefixRewrite! + before.slice(route.matchedPrefix.length);
    } else {
      this.path = target.prefixRewrite!;
    }
    if (this.path !== before) this.#upstreamHeaders.push('x-envoy-original-path', before);
  }

  /** Picks a host (avoiding hosts already tried, when others exist) and dispatches an attempt. */
  #nextAttempt(): void {
    this.#backoffTimer = null;
    if (this.#state === DONE) return;
    const cluster = this.cluster!;
    let chosen = cluster.pick(this);
    const tried = this.#triedHosts;
    if (tried !== null && chosen !== null) {
      for (let i = 1; i < HOST_SELECTION_ATTEMPTS && tried.includes(chosen); i++) chosen = cluster.pick(this) ?? chosen;
    }
    if (chosen === null) {
      cluster.noHealthyUpstream++;
      this.localReply(503, ResponseFlag.UH, 'no_healthy_upstream', 'no healthy upstream');
      return;
    }
    this.clusterHost = chosen;
    this.#attempts++;
    this.#upstreamHeaders[this.#attemptCountIndex] = String(this.#attempts);
    const host = chosen.host;
    host.active++;
    host.requestsTotal++;
    const perTry = this.#retry?.perTryTimeoutMs ?? 0;
    const attempt = new UpstreamAttempt(this, chosen, perTry);
    this.#attempt = attempt;
    host.pool.dispatch(
      {
        path: this.path,
        method: this.method as Dispatcher.HttpMethod,
        headers: this.#upstreamHeaders,
        body: this.#body !== null ? this.#body.open() : this.#hasBody ? (this.req as IncomingMessage) : null,
        // Never let undici hold back a request for pipelining order.
        blocking: false,
      },
      attempt,
    );
  }

  #startRouteTimer(): void {
    if (this.#timeoutMs > 0 && this.#timer === null) {
      this.#timer = setTimeout(() => this.#onRouteTimeout(), this.#timeoutMs);
    }
  }

  #onRouteTimeout(): void {
    this.#timer = null;
    if (this.#state === DONE) return;
    this.responseFlags |= ResponseFlag.UT;
    const attempt = this.#attempt;
    this.#attempt = null;
    if (attempt !== null) attempt.cancel();
    if (this.#state === RESPONDING) {
      this.#resetDownstream();
      this.#finish();
      return;
    }
    this.localReply(504, 0, 'upstream_response_timeout', 'upstream request timeout', GrpcStatus.DEADLINE_EXCEEDED);
  }

  // --- attempt callbacks (from UpstreamAttempt, only for the current attempt) ------------

  isCurrent(a: UpstreamAttempt): boolean {
    return this.#attempt === a && this.#state !== DONE;
  }

  /** The body of the first attempt has been sent in full. */
  onAttemptRequestSent(): void {
    this.#startRouteTimer();
  }

  onAttemptBodySent(bytes: number): void {
    // Retries replay the buffer; count what the client sent, once.
    if (this.#attempts === 1) this.bytesReceived += bytes;
  }

  /**
   * Response headers of the current attempt. Returns false when the response is retried
   * instead (the caller then abandons the attempt).
   */
  onAttemptResponseStart(a: UpstreamAttempt, statusCode: number, headers: Record<string, string | string[] | undefined>): boolean {
    const retry = this.#retry;
    if (retry !== null) {
      const grpc = headers['grpc-status'];
      const grpcStatus = typeof grpc === 'string' ? Number(grpc) : -1;
      if (retry.retriableResponse(statusCode, grpcStatus)) {
        if (this.#canRetry()) {
          this.#scheduleRetry(a);
          return false;
        }
        // Out of retries: the last upstream response goes to the client, flagged.
        if (this.#attempts > 1) this.responseFlags |= ResponseFlag.URX;
      }
    }
    this.#state = RESPONDING;
    const gs = headers['grpc-status'];
    if (typeof gs === 'string') this.#grpcStatus = gs;
    this.upstreamServiceTimeMs = performance.now() - a.startedAt;
    this.responseCode = statusCode;
    this.responseCodeDetails = 'via_upstream';
    const out: string[] = [];
    for (const name in headers) {
      if (RESPONSE_HOP_BY_HOP.has(name)) continue;
      const v = headers[name];
      if (typeof v === 'string') out.push(name, v);
      else if (v !== undefined) for (const item of v) out.push(name, item);
    }
    out.push('x-envoy-upstream-service-time', String(Math.round(this.upstreamServiceTimeMs)));
    this.#finishResponseHeaders(out);
    if (this.#h2) {
      this.#pendingHead = out;
      return true;
    }
    try {
      this.res.writeHead(statusCode, out);
    } catch (err) {
      // An upstream header Node refuses to send (bad characters): answer locally instead.
      this.#state = UPSTREAM;
      this.upstreamTransportFailureReason = (err as Error).message;
      this.#attempt = null;
      a.cancel();
      this.localReply(502, ResponseFlag.UPE, 'upstream_response_invalid', 'upstream sent an invalid response');
      return false;
    }
    return true;
  }

  onAttemptResponseData(a: UpstreamAttempt, chunk: Buffer): boolean {
    if (this.#pendingHead !== null) {
      const head = this.#pendingHead;
      this.#pendingHead = null;
      this.res.writeHead(this.responseCode, head);
    }
    this.bytesSent += chunk.length;
    if (this.res.write(chunk)) return true;
    this.res.once('drain', () => a.resume());
    return false;
  }

  onAttemptResponseEnd(trailers: Record<string, string | string[] | undefined>): void {
    if (this.#pendingHead !== null) {
      // No body: trailers (if any) join the headers in the one frame that ends the stream.
      const head = this.#pendingHead;
      this.#pendingHead = null;
      for (const name in trailers) {
        const v = trailers[name];
        if (typeof v === 'string') head.push(name, v);
        else if (v !== undefined) for (const item of v) head.push(name, item);
      }
      const gs = trailers['grpc-status'];
      if (typeof gs === 'string') this.#grpcStatus = gs;
      this.#respondH2EndStream(this.responseCode, head);
      this.#finish();
      return;
    }
    let any = false;
    for (const _ in trailers) {
      any = true;
      break;
    }
    if (any) {
      const gs = trailers['grpc-status'];
      if (typeof gs === 'string') this.#grpcStatus = gs;
      this.res.addTrailers(trailers as Record<string, string>);
    }
    this.res.end();
    this.#finish();
  }

  /** The current attempt failed before or after its response started. */
  onAttemptFailed(a: UpstreamAttempt, failure: AttemptFailure, code: string): void {
    this.upstreamTransportFailureReason = code;
    if (this.#state === RESPONDING) {
      // Headers are out: all that can be done is to cut the client off, as Envoy resets the stream.
      this.responseFlags |= failure === AttemptFailure.PerTryTimeout ? ResponseFlag.UT : ResponseFlag.UC;
      this.#attempt = null;
      this.#resetDownstream();
      this.#finish();
      return;
    }
    const retry = this.#retry;
    if (retry !== null && retry.retriableFailure(failure)) {
      if (this.#canRetry()) {
        this.#scheduleRetry(a);
        return;
      }
      if (this.#attempts > 1) this.responseFlags |= ResponseFlag.URX;
    }
    this.#attempt = null;
    switch (failure) {
      case AttemptFailure.ConnectFailure:
        a.host.host.connectFailures++;
        this.localReply(
          503,
          ResponseFlag.UF,
          'upstream_reset_before_response_started{connection_failure}',
          `upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ${code}`,
        );
        return;
      case AttemptFailure.PerTryTimeout:
        this.localReply(504, ResponseFlag.UT, 'upstream_per_try_timeout', 'upstream request timeout', GrpcStatus.DEADLINE_EXCEEDED);
        return;
      case AttemptFailure.RefusedStream:
        this.localReply(503, ResponseFlag.UR, 'upstream_reset_before_response_started{remote_refused_stream_reset}', 'upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset');
        return;
      default:
        this.localReply(
          503,
          ResponseFlag.UC,
          'upstream_reset_before_response_started{connection_termination}',
          'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
        );
    }
  }

  #canRetry(): boolean {
    if (this.#retriesLeft <= 0) return false;
    // A body is replayed from the buffer; one that outgrew it cannot be sent again.
    return !this.#hasBody || (this.#body !== null && this.#body.replayable);
  }

  #scheduleRetry(a: UpstreamAttempt): void {
    this.#retriesLeft--;
    (this.#triedHosts ??= []).push(a.host);
    this.#attempt = null;
    a.cancel();
    const delay = retryBackoffMs(this.#attempts);
    if (delay <= 0) this.#nextAttempt();
    else this.#backoffTimer = setTimeout(() => this.#nextAttempt(), delay);
  }

  /** Copies of the request to shadow clusters: fire and forget, never affecting this exchange. */
  #mirror(mirrors: readonly MirrorTarget[]): void {
    for (const m of mirrors) {
      if (m.cluster === null || (m.percent < 100 && Math.random() * 100 >= m.percent)) continue;
      const host = m.cluster.pick(this);
      if (host === null) continue;
      const timeoutMs = this.#forwardTarget!.timeoutMs > 0 ? this.#forwardTarget!.timeoutMs : MirrorRequest.DEFAULT_TIMEOUT_MS;
      const send = (body: Buffer | null): void => MirrorRequest.send(host, this.method, this.path, shadowHeaders(this.#upstreamHeaders), body, timeoutMs);
      const body = this.#body;
      if (body === null) send(null);
      // Envoy shadows the body too; here only bodies that fit the buffer are mirrored.
      else body.whenComplete(() => {
        const buf = body.buffered();
        if (buf !== null) send(buf);
      });
    }
  }

  // --- downstream side ---------------------------------------------------------------

  /** The client's connection closed before the exchange finished: cancel upstream work. */
  onDownstreamClose(): void {
    if (this.#state === DONE) return;
    this.responseFlags |= ResponseFlag.DC;
    const attempt = this.#attempt;
    this.#attempt = null;
    this.#finish();
    if (attempt !== null) attempt.cancel();
  }

  /** A response generated by the proxy (Envoy's local reply), with its flag and details. */
  localReply(status: number, flag: number, details: string, body: string | null, grpcStatus: number | null = null): void {
    if (this.#state === DONE) return;
    this.responseCode = status;
    this.responseFlags |= flag;
    this.responseCodeDetails = details;
    const res = this.res;
    if (res.headersSent) {
      this.#resetDownstream();
      this.#finish();
      return;
    }
    let headers: string[];
    let payload: Buffer | null = null;
    if (this.#grpc) {
      // A gRPC client reads the outcome from grpc-status: a trailers-only reply, HTTP 200.
      const code = localReplyGrpcStatus(status, grpcStatus);
      this.#grpcStatus = String(code);
      this.responseCode = 200;
      headers = grpcLocalReplyHeaders(code, (body ?? '').trimEnd());
      if (!this.#h2) headers.push('content-length', '0');
    } else {
      payload = body === null ? null : Buffer.from(body);
      headers = ['content-length', String(payload === null ? 0 : payload.length)];
      if (payload !== null) headers.push('content-type', 'text/plain');
    }
    headers.push('server', 'remora');
    if (this.requestId !== null) headers.push('x-request-id', this.requestId);
    if (this.#cors !== null) this.#cors.applyResponseHeaders(headers, this.#corsOrigin);
    if (this.ctx.draining && !this.#h2) headers.push('connection', 'close');
    this.bytesSent = payload === null ? 0 : payload.length;
    if (this.#h2 && payload === null) this.#respondH2EndStream(this.responseCode, headers);
    else {
      res.writeHead(this.responseCode, headers);
      res.end(payload);
    }
    this.#finish();
  }

  /** One HEADERS frame with END_STREAM (HTTP/2 only): the form gRPC needs for trailers-only replies. */
  #respondH2EndStream(status: number, flat: readonly string[]): void {
    const headers: Record<string, string | string[] | number> = { ':status': status };
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i]!;
      const value = flat[i + 1]!;
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else headers[name] = Array.isArray(prev) ? [...prev, value] : [String(prev), value];
    }
    const stream = (this.#rawRes as Http2ServerResponse).stream;
    if (!stream.destroyed && !stream.headersSent) stream.respond(headers, { endStream: true });
  }

  #directResponse(status: number, body: Buffer | null, location: string | null = null): void {
    this.responseCode = status;
    this.responseCodeDetails = 'direct_response';
    const headers: string[] = ['content-length', String(body === null ? 0 : body.length)];
    if (body !== null) headers.push('content-type', 'text/plain');
    if (location !== null) headers.push('location', location);
    this.#finishResponseHeaders(headers);
    this.res.writeHead(status, headers);
    this.bytesSent = body === null ? 0 : body.length;
    this.res.end(body);
    this.#finish();
  }

  /** Route-level and destination-level response edits, cookies, and `Connection: close` while draining. */
  #finishResponseHeaders(out: string[]): void {
    const target = this.#target;
    if (target !== null && target.responseEdits !== null) target.responseEdits.apply(out);
    const route = this.route;
    if (route !== null && route.responseEdits !== null) route.responseEdits.apply(out);
    if (this.#setCookie !== null) out.push('set-cookie', this.#setCookie);
    if (this.#cors !== null) this.#cors.applyResponseHeaders(out, this.#corsOrigin);
    if (this.ctx.draining && !this.#h2) out.push('connection', 'close');
  }

  /** Cuts the client off mid-response: the connection for HTTP/1, the stream for HTTP/2. */
  #resetDownstream(): void {
    if (this.#h2) (this.#rawRes as Http2ServerResponse).stream.close(2 /* INTERNAL_ERROR */);
    else (this.#rawRes as ServerResponse).destroy();
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#backoffTimer !== null) clearTimeout(this.#backoffTimer);
    this.durationMs = performance.now() - this.#startHr;
    this.conn.onExchangeDone(this);
    this.ctx.accessLog.log(this);
    const ch = this.clusterHost;
    const stats: RequestStats = ch !== null ? ch.stats : this.cluster !== null ? this.cluster.noHostStats : this.snapshot.unroutedStats;
    stats.record(this.responseCode, formatResponseFlags(this.responseFlags), this.#grpcStatus, this.durationMs, this.bytesReceived, this.bytesSent);
  }

  // --- RouteRequest / HashSource -------------------------------------------------------

  requestHeader(name: string): string | null {
    switch (name) {
      case ':method':
        return this.method;
      case ':authority':
      case 'host':
        return this.authority;
      case ':path':
        return this.path;
      case ':scheme':
        return this.scheme;
      case 'x-request-id':
        return this.requestId;
      default:
        return rawHeaderValue(this.req.rawHeaders, name);
    }
  }

  queryParam(name: string): string | null {
    return queryValue(this.path, name);
  }

  cookie(name: string): string | null {
    return cookieValue(rawHeaderValue(this.req.rawHeaders, 'cookie'), name);
  }

  setResponseCookie(name: string, value: string, path: string, ttlSeconds: number): void {
    this.#setCookie = `${name}=${value}; Max-Age=${ttlSeconds}${path ? `; Path=${path}` : ''}; HttpOnly`;
  }
}

function setHeader(headers: string[], lowerName: string, value: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === lowerName) {
      headers[i + 1] = value;
      return;
    }
  }
  headers.push(lowerName, value);
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
