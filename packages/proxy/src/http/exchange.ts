import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { CompiledRoute, ForwardTarget, RouteRequest, WeightedTarget } from '../router/compiled-route.ts';
import type { ListenerSnapshot } from '../runtime/snapshot.ts';
import type { AccessLogRecord } from '../telemetry/access-log.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { Connection, ListenerContext } from './connection.ts';
import { redirectLocation } from './redirect.ts';
import {
  classifyHeader,
  cookieValue,
  H_CONNECTION,
  H_CONTENT_LENGTH,
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

const DONE = 3;
const RESPONDING = 2;
const UPSTREAM = 1;
const ROUTING = 0;

/** Raised into undici to cancel an upstream request whose client went away. */
class DownstreamGoneError extends Error {
  override readonly name = 'DownstreamGoneError';
}

/**
 * One HTTP request through the proxy, from the downstream request to the end of the
 * response: it routes, picks a host, forwards (it is itself the undici dispatch handler, so
 * a request allocates one object, not a handler plus closures), writes the response back,
 * and at the end writes the access log line and bumps the metrics.
 */
export class Exchange implements AccessLogRecord, RouteRequest, HashSource, Dispatcher.DispatchHandler {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly conn: Connection;
  readonly ctx: ListenerContext;
  readonly snapshot: ListenerSnapshot;

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
  #upstreamHeaders: string[] = [];

  // Routing and upstream.
  route: CompiledRoute | null = null;
  #target: WeightedTarget | null = null;
  cluster: UpstreamCluster | null = null;
  clusterHost: ClusterHost | null = null;
  #controller: Dispatcher.DispatchController | null = null;
  #upstreamStart = 0;
  #setCookie: string | null = null;
  #state = ROUTING;

  // Outcome, for logs and metrics.
  responseCode = 0;
  responseFlags = 0;
  responseCodeDetails = '';
  upstreamTransportFailureReason = '';
  bytesReceived = 0;
  bytesSent = 0;
  durationMs = 0;
  upstreamServiceTimeMs = -1;

  constructor(ctx: ListenerContext, conn: Connection, snapshot: ListenerSnapshot, req: IncomingMessage, res: ServerResponse) {
    this.ctx = ctx;
    this.conn = conn;
    this.snapshot = snapshot;
    this.req = req;
    this.res = res;
    this.startTime = Date.now();
    this.#startHr = performance.now();
    this.method = req.method ?? 'GET';
    this.protocol = req.httpVersion === '1.1' ? 'HTTP/1.1' : `HTTP/${req.httpVersion}`;
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
      this.localReply(400, ResponseFlag.DPE, 'invalid_request_target', 'Bad Request\n');
      return;
    }
    this.#readHeaders();
    const routes = this.snapshot.routes;
    const vhost = routes === null ? null : routes.find(this.authority.toLowerCase());
    const route = vhost === null ? null : vhost.match(this);
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
    this.#forward(target);
  }

  /** Origin-form `/path?q`, absolute-form `http://host/path` (proxy requests), or `*`. */
  #readRequestTarget(): boolean {
    const url = this.path;
    if (url.charCodeAt(0) === 47 /* / */) {
      const q = url.indexOf('?');
      if (q >= 0) this.pathOnly = url.slice(0, q);
      return true;
    }
    if (url === '*') return true;
    const m = /^https?:\/\/([^/?#]+)([^#]*)/i.exec(url);
    if (m === null) return false;
    this.authority = m[1]!;
    const rest = m[2]!;
    this.path = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
    this.originalPath = this.path;
    const q = this.path.indexOf('?');
    this.pathOnly = q >= 0 ? this.path.slice(0, q) : this.path;
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
    if (connectionTokens !== null) this.#dropConnectionTokens(connectionTokens);
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
    this.#target = weighted;
    const cluster = weighted.cluster;
    if (cluster === null) {
      this.localReply(503, ResponseFlag.NC, 'cluster_not_found', null);
      return;
    }
    this.cluster = cluster;
    const chosen = cluster.pick(this);
    if (chosen === null) {
      cluster.noHealthyUpstream++;
      this.localReply(503, ResponseFlag.UH, 'no_healthy_upstream', 'no healthy upstream');
      return;
    }
    this.clusterHost = chosen;
    const route = this.route!;
    const headers = this.#upstreamHeaders;
    if (target.prefixRewrite !== null || target.regexRewrite !== null) this.#rewritePath(target, route);
    if (target.authorityRewrite !== null) setHeader(headers, 'host', target.authorityRewrite);
    if (route.requestEdits !== null) route.requestEdits.apply(headers);
    if (weighted.requestEdits !== null) weighted.requestEdits.apply(headers);

    const host = chosen.host;
    host.active++;
    host.requestsTotal++;
    this.#state = UPSTREAM;
    this.#upstreamStart = performance.now();
    host.pool.dispatch(
      {
        path: this.path,
        method: this.method as Dispatcher.HttpMethod,
        headers,
        body: this.#hasBody ? this.req : null,
        // Never let undici hold back a request for pipelining order.
        blocking: false,
      },
      this,
    );
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

  // --- undici dispatch handler -------------------------------------------------------

  onRequestStart(controller: Dispatcher.DispatchController, _context: unknown): void {
    this.#controller = controller;
    if (this.#state === DONE) controller.abort(new DownstreamGoneError('downstream closed'));
  }

  onBodySent(chunk: Buffer): void {
    this.bytesReceived += chunk.length;
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, _statusMessage?: string): void {
    if (this.#state === DONE) return;
    this.#state = RESPONDING;
    this.upstreamServiceTimeMs = performance.now() - this.#upstreamStart;
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
    const res = this.res;
    try {
      res.writeHead(statusCode, out);
    } catch (err) {
      // An upstream header Node refuses to send (bad characters): answer locally instead.
      this.#state = UPSTREAM;
      controller.abort(err as Error);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state === DONE) return;
    this.bytesSent += chunk.length;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, _trailers: Record<string, string | string[] | undefined>): void {
    if (this.#state === DONE) return;
    this.res.end();
    this.#finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.#state === DONE) return;
    const code = (err as { code?: string }).code ?? '';
    if (err instanceof DownstreamGoneError) {
      this.#finish();
      return;
    }
    if (this.#state === RESPONDING) {
      // Headers are out: all that can be done is to cut the client off, as Envoy resets the stream.
      this.responseFlags |= ResponseFlag.UC;
      this.upstreamTransportFailureReason = code || err.message;
      this.res.destroy();
      this.#finish();
      return;
    }
    if (isConnectFailure(code)) {
      this.clusterHost!.host.connectFailures++;
      this.upstreamTransportFailureReason = code;
      this.localReply(
        503,
        ResponseFlag.UF,
        'upstream_reset_before_response_started{connection_failure}',
        `upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ${code}`,
      );
      return;
    }
    this.upstreamTransportFailureReason = code || err.message;
    this.localReply(
      503,
      ResponseFlag.UC,
      'upstream_reset_before_response_started{connection_termination}',
      'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
    );
  }

  // --- downstream side ---------------------------------------------------------------

  /** The client's connection closed before the exchange finished: cancel upstream work. */
  onDownstreamClose(): void {
    if (this.#state === DONE) return;
    this.responseFlags |= ResponseFlag.DC;
    const controller = this.#controller;
    if (controller !== null && !controller.aborted) {
      this.#finish();
      controller.abort(new DownstreamGoneError('downstream closed'));
      return;
    }
    this.#finish();
  }

  /** A response generated by the proxy (Envoy's local reply), with its flag and details. */
  localReply(status: number, flag: number, details: string, body: string | null): void {
    if (this.#state === DONE) return;
    this.responseCode = status;
    this.responseFlags |= flag;
    this.responseCodeDetails = details;
    const res = this.res;
    if (res.headersSent) {
      res.destroy();
      this.#finish();
      return;
    }
    const payload = body === null ? null : Buffer.from(body);
    const headers: string[] = ['content-length', String(payload === null ? 0 : payload.length), 'server', 'remora'];
    if (payload !== null) headers.push('content-type', 'text/plain');
    if (this.requestId !== null) headers.push('x-request-id', this.requestId);
    if (this.ctx.draining) headers.push('connection', 'close');
    res.writeHead(status, headers);
    this.bytesSent = payload === null ? 0 : payload.length;
    res.end(payload);
    this.#finish();
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
    if (this.ctx.draining) out.push('connection', 'close');
  }

  #finish(): void {
    if (this.#state === DONE) return;
    this.#state = DONE;
    this.durationMs = performance.now() - this.#startHr;
    const ch = this.clusterHost;
    if (ch !== null) ch.host.active--;
    this.conn.onExchangeDone(this);
    this.ctx.accessLog.log(this);
    const stats: RequestStats = ch !== null ? ch.stats : this.cluster !== null ? this.cluster.noHostStats : this.snapshot.unroutedStats;
    stats.record(this.responseCode, formatResponseFlags(this.responseFlags), '', this.durationMs, this.bytesReceived, this.bytesSent);
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

function isConnectFailure(code: string): boolean {
  return (
    code === 'ECONNREFUSED' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'EADDRNOTAVAIL' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN'
  );
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
