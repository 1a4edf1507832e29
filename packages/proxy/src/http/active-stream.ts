import { randomUUID } from 'node:crypto';
import type { CompiledRoute, ForwardTarget, RouteRequest, WeightedTarget } from '../router/compiled-route.ts';
import type { ListenerSettings } from './listener-settings.ts';
import type { AccessLogRecord } from '../telemetry/access-log-record.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { PEER_METADATA, PEER_METADATA_ID, type PeerWorkload } from '../telemetry/peer-metadata.ts';
import type { RequestTrace, TracedRequest } from '../telemetry/tracing.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { OriginalDestination } from '../listener/original-dst.ts';
import type { Connection, ListenerContext } from './connection.ts';
import type { FilterCallbacks, FilterRequest, FilterResponseFlag, PeerIdentity, RequestAuth } from '@remora/filters';
import { finalizeRequestHeaders, finalizeResponseHeaders, RouteHeaderMutation } from '@remora/filters/internal';
import { isGrpcRequest } from './grpc.ts';
import { normalizePath } from './path-normalize.ts';
import {
  classifyHeader,
  cookieValue,
  H_ATTEMPT_COUNT,
  H_CONNECTION,
  H_CONTENT_LENGTH,
  H_CONTENT_TYPE,
  H_EXPECT,
  H_HOP,
  H_HOST,
  H_OTHER,
  H_PEER_METADATA,
  H_PEER_METADATA_ID,
  H_REQUEST_ID,
  H_TE,
  H_TRANSFER_ENCODING,
  H_UPGRADE,
  H_USER_AGENT,
  H_XFCC, H_XFF,
  H_XFP,
  queryOf,
  rawHeaderValue,
  removeHeader,
  removeHeaders,
} from './request-headers.ts';
import { formatResponseFlags, ResponseFlag } from '../telemetry/response-flags.ts';
import { findRoute } from '../router/route-table.ts';
import type { Readable } from 'node:stream';
import { FilterManager, RESPONSE_CONTINUE } from './filter-manager.ts';
import { filterLocalReply, type LocalReply } from './local-reply.ts';
import { requestBodyOf, type DownstreamRequest } from './response-writer.ts';


export type { DownstreamRequest } from './response-writer.ts';

/**
 * What the request path reads of a request head, whichever codec parsed it: an upgrade or
 * CONNECT takes this much of Node's request and no more, so another HTTP/1 codec can hand one over.
 */
export interface RequestHead {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly httpVersion: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  /** Flat `[name, value, …]`, as received. */
  readonly rawHeaders: readonly string[];
}

const ABSOLUTE_FORM = /^https?:\/\/([^/?#]+)(.*)$/is;

/** `FilterCallbacks.bufferRequestBody`: whatever drives the stream reads the body. */
type BufferRequestBody = (this: { readonly owner: StreamOwner }, maxBytes: number, done: (body: Buffer, complete: boolean) => void) => void;

/**
 * What an active stream needs of whoever drives it: the router filter of a request and its
 * response writer (`Exchange`), or of a tunnel (`UpgradeExchange`). The stream calls these
 * when a filter (or the filter manager) ends the request or lets it through.
 */
export interface StreamOwner {
  /** True once the request has ended (answered, or the client went away). */
  readonly aborted: boolean;
  /** Answers the request from the proxy, the owner's way (a response, or a raw socket for upgrades). */
  replyLocally(reply: LocalReply): void;
  /** The chain let the request through: route it. */
  afterFilters(): void;
  /** Reads the request body ahead for a filter (`FilterCallbacks.bufferRequestBody`); absent when there is no body to read (an upgrade). */
  bufferRequestBody?(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void;
}

/**
 * One request's active stream (Envoy's `ActiveStream`): headers in, filters, local reply,
 * telemetry. It reads the request target and headers by Envoy's rules, builds the upstream
 * header list with rewrites and edits, runs the filter chain (it is what filters see, and
 * what the access log, route matching and the load balancer read), makes the response
 * header edits and local-reply heads, and writes the access log line and metrics at the end.
 * What happens between the filters and the end — routing to a host and relaying the answer —
 * is its `StreamOwner`'s: `Exchange` for a request and response, `UpgradeExchange` for a
 * tunnel. One object per request, every field set in the constructor, so the hot path
 * reads plain properties of a stable shape.
 */
export class ActiveStream<Req extends RequestHead = DownstreamRequest> implements AccessLogRecord, RouteRequest, HashSource, FilterRequest, FilterCallbacks, TracedRequest {
  /** The router filter that drives this stream (`Exchange` or `UpgradeExchange`). */
  readonly owner: StreamOwner;
  readonly ctx: ListenerContext;
  readonly conn: Connection;
  readonly snapshot: ListenerSettings;
  readonly req: Req;

  // Request, as the client sent it (path normalized).
  readonly startTime: number;
  readonly startHr: number;
  readonly method: string;
  readonly protocol: string;
  readonly scheme: string;
  originalPath: string;
  path: string;
  pathOnly: string;
  authority = '';
  requestId: string | null = null;
  xForwardedFor: string | null = null;
  userAgent: string | null = null;
  /** The request has a body (as its headers declare it; the owner may refine it by protocol). */
  hasBody = false;
  /** The request's `content-type`; null when absent. */
  contentType: string | null = null;
  /** The request's headers as upstream gets them: flat `[name, value, …]`, edited by filters and the route. */
  readonly upstreamHeaders: string[] = [];
  /** Index of the `x-envoy-attempt-count` value in the upstream headers. */
  #attemptCountIndex = -1;

  // Routing and upstream.
  route: CompiledRoute | null = null;
  /** The weighted destination the router picked (set by `prepareUpstream`, or by the owner when it names no known cluster). */
  target: WeightedTarget | null = null;
  cluster: UpstreamCluster | null = null;
  clusterHost: ClusterHost | null = null;
  #setCookie: string | null = null;

  // Filter chain.
  /** JWT authentication result, for the filters after the JWT filter. */
  auth: RequestAuth | null = null;
  /** The request's filters (Envoy's filter manager); null when the listener has none. */
  #filters: FilterManager | null = null;
  /** `FilterCallbacks.bufferRequestBody` when the owner can read the body; absent (undefined) for an upgrade. */
  readonly bufferRequestBody?: BufferRequestBody;
  /** Envoy's dynamic metadata: flat filter, key, value triples; null until a filter sets some. */
  #metadata: string[] | null = null;
  /** The query of `path` parsed once, on the first parameter asked for; `#queryOf` is the path it was parsed from (a rewrite changes it). */
  #query: URLSearchParams | null = null;
  #queryOf: string | null = null;
  /** `remoteIp` worked out once for the X-Forwarded-For it was worked out from. */
  #remoteIp: string | null = null;
  #remoteIpOf: string | null = null;
  /** Headers filters asked to add to whatever response the client gets. */
  #extraResponseHeaders: string[] | null = null;
  /** Headers filters set on the response, replacing the response's own (CORS); null for most requests. */
  #responseHeaderSets: string[] | null = null;

  // Outcome, for logs and metrics.
  responseCode = 0;
  responseFlags = 0;
  responseCodeDetails = '';
  upstreamTransportFailureReason = '';
  bytesReceived = 0;
  bytesSent = 0;
  durationMs = 0;
  upstreamServiceTimeMs = -1;
  /** The request's trace when its listener traces; null otherwise (the untraced path does nothing more). */
  trace: RequestTrace | null = null;

  // Istio's peer metadata exchange.
  /** Inbound: the request's `x-envoy-peer-metadata` and `-id` (removed before the app); null when absent. */
  #peerMetadataIn: string | null = null;
  #peerMetadataIdIn: string | null = null;
  /** Outbound: what the upstream said of itself in its response headers (set by the owner as the head comes in). */
  upstreamPeer: PeerWorkload | null = null;

  constructor(owner: StreamOwner, ctx: ListenerContext, conn: Connection, snapshot: ListenerSettings, req: Req) {
    this.owner = owner;
    // A module function, not a closure: the stream is its `this` (filters call it on the callbacks).
    if (owner.bufferRequestBody !== undefined) this.bufferRequestBody = ownerBufferRequestBody;
    this.ctx = ctx;
    this.conn = conn;
    this.snapshot = snapshot;
    this.req = req;
    this.startTime = Date.now();
    this.startHr = performance.now();
    this.method = req.method ?? 'GET';
    this.protocol = req.httpVersionMajor === 2 ? 'HTTP/2' : req.httpVersion === '1.1' ? 'HTTP/1.1' : `HTTP/${req.httpVersion}`;
    this.scheme = conn.secure ? 'https' : 'http';
    const url = req.url ?? '/';
    this.originalPath = url;
    this.path = url;
    this.pathOnly = url;
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
  get downstreamMtls(): boolean {
    return this.conn.secure && this.conn.peerSpiffeId !== null;
  }
  /** The connection's original destination: where an ORIGINAL_DST cluster sends the request. */
  get originalDestination(): OriginalDestination | null {
    return this.conn.originalDst;
  }
  get sourceIp(): string {
    return this.conn.remoteIp;
  }
  get requestedServerName(): string | null {
    return this.conn.sni;
  }
  get responseFlagsText(): string {
    return formatResponseFlags(this.responseFlags);
  }
  get routeName(): string | null {
    // Envoy's %ROUTE_NAME%: an unnamed route prints as absent.
    const name = this.route?.name;
    return name === undefined || name === '' ? null : name;
  }

  // --- FilterRequest ---------------------------------------------------------------------

  /**
   * The original client (Envoy `remote.ip`). A gateway is the edge: the address it saw,
   * unless X-Forwarded-For hops are trusted (then the entry that many hops back). A sidecar
   * is not the edge: the last X-Forwarded-For entry when there is one, else the peer.
   */
  get remoteIp(): string {
    const xff = this.xForwardedFor;
    if (xff === null) return this.conn.remoteIp;
    if (this.#remoteIpOf !== xff) {
      this.#remoteIp = remoteIpFrom(xff, this.snapshot.direction === 'gateway', this.snapshot.trustedHops, this.conn.remoteIp);
      this.#remoteIpOf = xff;
    }
    return this.#remoteIp!;
  }
  get destinationIp(): string {
    return this.conn.localIp;
  }
  get destinationPort(): number {
    return this.snapshot.listener.destinationPort ?? this.conn.localPort;
  }
  get sni(): string {
    return this.conn.sni ?? '';
  }
  get peer(): PeerIdentity | null {
    return this.conn.peer;
  }
  get isGrpc(): boolean {
    return isGrpcRequest(this.contentType);
  }

  setRequestHeader(name: string, value: string): void {
    setHeader(this.upstreamHeaders, name.toLowerCase(), value);
  }

  removeRequestHeader(name: string): void {
    removeHeader(this.upstreamHeaders, name.toLowerCase());
  }

  requestHeaderList(): readonly string[] {
    return this.upstreamHeaders;
  }

  dynamicMetadata(filter: string, key: string): string | null {
    const m = this.#metadata;
    if (m === null) return null;
    for (let i = 0; i < m.length; i += 3) if (m[i] === filter && m[i + 1] === key) return m[i + 2]!;
    return null;
  }

  dynamicMetadataOf(filter: string): Record<string, string> | null {
    const m = this.#metadata;
    let out: Record<string, string> | null = null;
    if (m !== null) for (let i = 0; i < m.length; i += 3) if (m[i] === filter) (out ??= {})[m[i + 1]!] = m[i + 2]!;
    return out;
  }

  setDynamicMetadata(filter: string, key: string, value: string): void {
    const m = (this.#metadata ??= []);
    for (let i = 0; i < m.length; i += 3) {
      if (m[i] === filter && m[i + 1] === key) {
        m[i + 2] = value;
        return;
      }
    }
    m.push(filter, key, value);
  }

  routeFilterConfig(name: string): unknown {
    return this.route?.filterConfigs?.get(name) ?? null;
  }

  // --- FilterCallbacks ---------------------------------------------------------------------

  /** True once the request has ended (answered, or the client went away). */
  get aborted(): boolean {
    return this.owner.aborted;
  }

  /** Answers the request from the proxy, the owner's way. The filter manager calls it too. */
  replyLocally(reply: LocalReply): void {
    this.owner.replyLocally(reply);
  }

  /** The chain let the request through: the owner routes it. */
  afterFilters(): void {
    this.owner.afterFilters();
  }

  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string, grpcStatus: number | null = null): void {
    this.owner.replyLocally(filterLocalReply(status, flag === null ? 0 : ResponseFlag[flag], details, body, grpcStatus));
  }

  addResponseHeader(name: string, value: string): void {
    (this.#extraResponseHeaders ??= []).push(name.toLowerCase(), value);
  }

  setResponseHeader(name: string, value: string): void {
    (this.#responseHeaderSets ??= []).push(name, value);
  }

  setResponseFlag(flag: FilterResponseFlag): void {
    this.responseFlags |= ResponseFlag[flag];
  }

  clearRouteCache(): void {
    this.route = findRoute(this.snapshot.routesFor(this.conn.tlsServer), this);
  }

  continueRequest(): void {
    this.#filters?.continueRequest();
  }

  /** Runs the listener's filters (jwt-authn → authz → rate limit → fault …), then the owner's `afterFilters`. */
  runFilters(): void {
    const configs = this.snapshot.filters;
    if (configs === null) {
      this.owner.afterFilters();
      return;
    }
    const filters = (this.#filters = new FilterManager(configs, this, this.ctx.log));
    filters.start();
  }

  /** True when a filter transforms or observes the response body. */
  get hasResponseDataFilters(): boolean {
    return this.#filters !== null && this.#filters.hasResponseData;
  }

  /** The response phase over a head about to be written (see `FilterManager.runResponse`). */
  runResponseFilters(headers: string[], local: boolean): number {
    return this.#filters === null ? RESPONSE_CONTINUE : this.#filters.runResponse(headers, local);
  }

  /** A response body chunk through the filters (see `FilterManager.responseData`); only when `hasResponseDataFilters`. */
  filterResponseData(chunk: Buffer, end: boolean): Buffer {
    return this.#filters!.responseData(chunk, end);
  }

  /**
   * The request body as upstream gets it: the client's stream, or, when a filter has
   * `onRequestData`, a stream of what the filters let through (back-pressure flows through it).
   */
  requestBodySource(this: ActiveStream<DownstreamRequest>): Readable {
    const source = requestBodyOf(this.req);
    return this.#filters === null ? source : this.#filters.requestBody(source);
  }

  /** Lets filters release timers and waits; called once when the request ends. */
  destroyFilters(): void {
    this.#filters?.destroy();
  }

  /**
   * Origin-form `/path?q`, absolute-form `http://host/path` (proxy requests), or `*`. Envoy
   * refuses fragments and normalizes the path (Istio's default pathNormalization BASE: dot
   * segments resolved, slashes not merged); false means 400.
   */
  readRequestTarget(): boolean {
    let url = this.path;
    if (url === '*') return true;
    if (url.charCodeAt(0) !== 47 /* / */) {
      const m = ABSOLUTE_FORM.exec(url);
      if (m === null) return false;
      this.authority = m[1]!;
      const rest = m[2]!;
      url = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
    }
    if (url.indexOf('#') >= 0) return false;
    const normalized = normalizePath(url, false);
    if (normalized === null) return false;
    this.path = normalized;
    this.originalPath = normalized;
    const q = normalized.indexOf('?');
    this.pathOnly = q >= 0 ? normalized.slice(0, q) : normalized;
    return true;
  }

  /**
   * One pass over rawHeaders: note what the proxy needs, drop hop-by-hop headers, build the
   * upstream list. An upgrade keeps `Connection`, `Upgrade` and its body framing as sent
   * (Envoy forwards them for upgrades); a plain request loses every hop-by-hop header.
   */
  readHeaders(upgrade: boolean): void {
    const raw = this.req.rawHeaders;
    const out = this.upstreamHeaders;
    let xfp = false;
    let xfcc: string | null = null;
    let connectionTokens: string | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      if (name.charCodeAt(0) === 58 /* : */) {
        // HTTP/2 pseudo-headers: only :authority is news (method, path, scheme are read already).
        if (name === ':authority' && this.authority === '') this.authority = value;
        continue;
      }
      switch (classifyHeader(name)) {
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
          if (value !== '0') this.hasBody = true;
          out.push(name, value);
          break;
        case H_CONTENT_TYPE:
          this.contentType = value;
          out.push(name, value);
          break;
        case H_TRANSFER_ENCODING:
          this.hasBody = true;
          if (upgrade) out.push(name, value);
          break;
        case H_CONNECTION:
          if (upgrade) out.push(name, value);
          else if (value.indexOf(',') >= 0 || !/^\s*(close|keep-alive|upgrade)\s*$/i.test(value)) connectionTokens = value;
          break;
        case H_EXPECT:
        case H_UPGRADE:
          if (upgrade) out.push(name, value);
          break;
        case H_XFCC:
          // Istio: the gateway sanitizes (SANITIZE_SET), sidecars append (APPEND_FORWARD).
          if (this.snapshot.direction !== 'gateway') xfcc = xfcc === null ? value : `${xfcc},${value}`;
          break;
        case H_PEER_METADATA:
          // Inbound: kept for metrics, never passed to the app. Outbound: this proxy's own replace them.
          if (this.snapshot.direction === 'inbound') this.#peerMetadataIn = value;
          break;
        case H_PEER_METADATA_ID:
          if (this.snapshot.direction === 'inbound') this.#peerMetadataIdIn = value;
          break;
        case H_HOP:
        case H_ATTEMPT_COUNT:
          break;
      }
    }
    const own = this.conn.xfcc;
    if (own !== null) xfcc = xfcc === null ? own : `${xfcc},${own}`;
    if (xfcc !== null) out.push('x-forwarded-client-cert', xfcc);
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
    const tracer = this.snapshot.tracer;
    if (tracer !== null) this.trace = tracer.start(out);
  }

  /** Headers a client names in `Connection` are hop-by-hop too (RFC 9110 §7.6.1). */
  #dropConnectionTokens(value: string): void {
    removeHeaders(this.upstreamHeaders, new Set(value.split(',').map((t) => t.trim().toLowerCase())));
  }

  /**
   * The request as the chosen destination gets it: path and authority rewrites, route and
   * destination header edits, and the `x-envoy-attempt-count` slot (Istio turns on Envoy's
   * include_request_attempt_count).
   */
  prepareUpstream(target: ForwardTarget, weighted: WeightedTarget, cluster: UpstreamCluster): void {
    this.target = weighted;
    this.cluster = cluster;
    const route = this.route!;
    const headers = this.upstreamHeaders;
    if (target.prefixRewrite !== null || target.regexRewrite !== null) this.#rewritePath(target, route);
    if (target.authorityRewrite !== null) setHeader(headers, 'host', target.authorityRewrite);
    finalizeRequestHeaders(headers, route.headerMutation, weighted.headerMutation);
    headers.push('x-envoy-attempt-count', '1');
    this.#attemptCountIndex = headers.length - 1;
    // Istio's outbound peer metadata filter: who this proxy is, to every upstream (sidecar outbound and gateways).
    if (this.snapshot.direction !== 'inbound') {
      const md = this.ctx.peerMetadata;
      headers.push(PEER_METADATA_ID, md.id, PEER_METADATA, md.value);
    }
  }

  #rewritePath(target: ForwardTarget, route: CompiledRoute): void {
    const before = this.path;
    if (target.regexRewrite !== null) {
      const q = before.indexOf('?');
      const p = q < 0 ? before : before.slice(0, q);
      this.path = target.regexRewrite.apply(p) + (q < 0 ? '' : before.slice(q));
    } else if (route.matchedPrefix !== null && before.startsWith(route.matchedPrefix)) {
      this.path = target.prefixRewrite! + before.slice(route.matchedPrefix.length);
    } else {
      // An exact (or regex, or no) path match: the whole path is swapped, the query string kept (Envoy's finalizePathHeader).
      const q = before.indexOf('?');
      this.path = q < 0 ? target.prefixRewrite! : target.prefixRewrite! + before.slice(q);
    }
    if (this.path !== before) this.upstreamHeaders.push('x-envoy-original-path', before);
  }

  /** The router made try number `attempt` to `host`: the host the log names, and `x-envoy-attempt-count`. */
  noteTry(host: ClusterHost, attempt: number): void {
    this.clusterHost = host;
    this.upstreamHeaders[this.#attemptCountIndex] = String(attempt);
  }

  // --- response heads --------------------------------------------------------------------

  /**
   * A proxied or direct response's head, as every protocol sends it: response edits (filters'
   * headers among them), inbound peer metadata, the `server` header. The owner adds its
   * protocol's own after.
   */
  finishResponseHeaders(out: string[]): void {
    this.#applyResponseEdits(out);
    if (this.snapshot.direction === 'inbound') this.#addPeerMetadataResponse(out);
    this.snapshot.connectionManager.applyServer(out);
  }

  /** A local reply is the request's outcome: its status, flag and details, for the log and metrics. */
  noteLocalReply(reply: LocalReply): void {
    this.responseCode = reply.status;
    this.responseFlags |= reply.flag;
    this.responseCodeDetails = reply.details;
  }

  /**
   * What a local reply's head carries beyond the catalogue's encoded one: `x-request-id`,
   * filters' added and set headers, inbound peer metadata, the `server` header.
   */
  finishLocalReplyHeaders(headers: string[]): void {
    if (this.requestId !== null) headers.push('x-request-id', this.requestId);
    const extra = this.#extraResponseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
    this.#applyResponseHeaderSets(headers);
    if (this.snapshot.direction === 'inbound') this.#addPeerMetadataResponse(headers);
    this.snapshot.connectionManager.applyServer(headers);
  }

  /**
   * Filters' added headers, the router's header-mutation stage (destination's, then route's:
   * `finalizeResponseHeaders`), a cookie set by the ring-hash balancer, then filters' set headers.
   */
  #applyResponseEdits(out: string[]): void {
    const extra = this.#extraResponseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i++) out.push(extra[i]!);
    const target = this.target;
    const route = this.route;
    finalizeResponseHeaders(out, target === null ? RouteHeaderMutation.NONE : target.headerMutation, route === null ? RouteHeaderMutation.NONE : route.headerMutation);
    if (this.#setCookie !== null) out.push('set-cookie', this.#setCookie);
    this.#applyResponseHeaderSets(out);
  }

  /** The headers filters set (`setResponseHeader`), each replacing any of its name in `out`. */
  #applyResponseHeaderSets(out: string[]): void {
    const sets = this.#responseHeaderSets;
    if (sets === null) return;
    for (let i = 0; i < sets.length; i += 2) replaceHeader(out, sets[i]!, sets[i + 1]!);
  }

  /**
   * Inbound, Istio's peer metadata filter on the response: this proxy's own headers, each
   * only when the request carried its counterpart (replacing any the app set).
   */
  #addPeerMetadataResponse(out: string[]): void {
    if (this.#peerMetadataIdIn !== null) replaceHeader(out, PEER_METADATA_ID, this.ctx.peerMetadata.id);
    if (this.#peerMetadataIn !== null) replaceHeader(out, PEER_METADATA, this.ctx.peerMetadata.value);
  }

  // --- the end -----------------------------------------------------------------------------

  /**
   * The end: the access log line and Istio's metrics, against the host, cluster or listener
   * reached, refined by what this request tells of its peer (metadata headers, certificates)
   * and whether it is gRPC. A request answered before it reached a cluster (a fault abort, a
   * filter's local reply) on a route counts against the route's cluster.
   */
  logAndRecord(grpcStatus: string, requestMessages = 0, responseMessages = 0): void {
    this.durationMs = performance.now() - this.startHr;
    (this.snapshot.accessLog ?? this.ctx.accessLog).log(this);
    if (this.trace !== null) this.trace.tracer.finish(this.trace, this);
    const ch = this.clusterHost;
    let stats: RequestStats;
    if (ch !== null) stats = ch.stats;
    else if (this.cluster !== null) stats = this.cluster.noHostStats;
    else {
      const target = this.route?.target;
      const cluster = target !== undefined && target.kind === 'forward' ? (this.target ?? target.pick(Math.random())).cluster : null;
      stats = cluster !== null ? cluster.noHostStats : this.snapshot.unroutedStats;
    }
    const protocol = this.isGrpc ? 1 : 0;
    if (this.snapshot.direction === 'inbound') {
      const peerMd = this.#peerMetadataIn;
      const peer = peerMd !== null ? this.ctx.peerCache.lookup(peerMd) : null;
      const peerId = this.conn.secure ? this.conn.peerSpiffeId : null;
      stats = stats.refine(this.ctx.metrics, peer, peerId, peerId !== null ? this.ctx.metrics.localPrincipal() : null, protocol);
    } else {
      const host = ch !== null ? ch.host : null;
      const peerId = host !== null ? host.peerPrincipal : null;
      const localId = peerId !== null && host!.meshMtls ? this.ctx.metrics.localPrincipal() : null;
      stats = stats.refine(this.ctx.metrics, this.upstreamPeer, peerId, localId, protocol);
    }
    const overrides = this.snapshot.istioStats;
    if (overrides !== null) stats = stats.tagged(this.ctx.metrics, overrides, this);
    stats.record(this.responseCode, formatResponseFlags(this.responseFlags), grpcStatus, this.durationMs, this.bytesReceived, this.bytesSent, requestMessages, responseMessages);
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
        // The upstream list: what the client sent, as earlier filters left it.
        return rawHeaderValue(this.upstreamHeaders, name);
    }
  }

  queryParam(name: string): string | null {
    const path = this.path;
    if (this.#queryOf !== path) {
      this.#query = queryOf(path);
      this.#queryOf = path;
    }
    return this.#query === null ? null : this.#query.get(name);
  }

  cookie(name: string): string | null {
    return cookieValue(rawHeaderValue(this.req.rawHeaders, 'cookie'), name);
  }

  setResponseCookie(name: string, value: string, path: string, ttlSeconds: number): void {
    this.#setCookie = `${name}=${value}; Max-Age=${ttlSeconds}${path ? `; Path=${path}` : ''}; HttpOnly`;
  }
}

/** `FilterCallbacks.bufferRequestBody` of a stream whose owner reads bodies: called on the stream. */
function ownerBufferRequestBody(this: { readonly owner: StreamOwner }, maxBytes: number, done: (body: Buffer, complete: boolean) => void): void {
  this.owner.bufferRequestBody!(maxBytes, done);
}

/** Replaces the first header named `lowerName` in a flat list, or appends it. */
export function setHeader(headers: string[], lowerName: string, value: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === lowerName) {
      headers[i + 1] = value;
      return;
    }
  }
  headers.push(lowerName, value);
}

/** Replaces every `name` entry of a flat `[name, value, …]` list with one (at the first one's place), else appends (Envoy's setInline). */
function replaceHeader(out: string[], lowerName: string, value: string): void {
  let found = -1;
  let w = 0;
  for (let r = 0; r < out.length; r += 2) {
    const n = out[r]!;
    if (n.length === lowerName.length && (n === lowerName || n.toLowerCase() === lowerName)) {
      if (found >= 0) continue; // a duplicate: drop it
      found = w;
    }
    if (w !== r) {
      out[w] = n;
      out[w + 1] = out[r + 1]!;
    }
    w += 2;
  }
  out.length = w;
  if (found >= 0) {
    out[found] = lowerName;
    out[found + 1] = value;
  } else out.push(lowerName, value);
}

/**
 * The original client from X-Forwarded-For (see `remoteIp`): at a gateway, the entry `hops`
 * back from the peer this gateway appended (the peer itself when no hop is trusted); in a
 * sidecar, the last entry.
 */
function remoteIpFrom(xff: string, gateway: boolean, hops: number, peer: string): string {
  if (gateway) {
    if (hops === 0) return peer;
    const list = xff.split(',');
    return list[Math.max(0, list.length - 1 - hops)]!.trim();
  }
  const last = xff.lastIndexOf(',');
  return (last < 0 ? xff : xff.slice(last + 1)).trim();
}
