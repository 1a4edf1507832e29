/**
 * The HTTP filter contract, shaped like Envoy's decoder filters. A filter has three parts:
 * a factory registered once by name, a config compiled once per snapshot (all parsing,
 * key loading and regex compilation happen there), and a small per-request instance that is
 * cheap to create and never throws (a stateless filter hands out one shared instance).
 * Filters know nothing of listeners, sockets or sources.
 */
import type { FilterStats } from './filter-stats.ts';

/** What a filter's `onRequest` returns: go on to the next filter, or stop here. */
export const FilterStatus = {
  /** Hand the request to the next filter (or the router). */
  Continue: 0,
  /**
   * Stop iterating: the filter has answered with a local reply, or will resume the chain
   * later through `FilterCallbacks.continueRequest()` (a JWKS fetch, a fault delay).
   */
  StopIteration: 1,
} as const;
/** `FilterStatus.Continue` or `FilterStatus.StopIteration`. */
export type FilterStatus = (typeof FilterStatus)[keyof typeof FilterStatus];

/** Envoy response flags a filter may set on its local reply (or on the request, for DI). */
export type FilterResponseFlag = 'RL' | 'RLSE' | 'FI' | 'DI' | 'UAEX' | 'NR';

/** The workload identity of the peer, from its mTLS certificate (SPIFFE). */
export interface PeerIdentity {
  /** Istio's principal form: `cluster.local/ns/<ns>/sa/<sa>` (the SPIFFE URI without `spiffe://`). */
  readonly principal: string;
  readonly namespace: string;
}

/** The result of JWT authentication, for authorization (`request.auth.*`). */
export interface RequestAuth {
  /** `<iss>/<sub>`, Istio's request principal. */
  readonly principal: string;
  readonly issuer: string;
  readonly subject: string;
  readonly audiences: readonly string[];
  /** The `azp` claim, '' when absent. */
  readonly presenter: string;
  readonly claims: Readonly<Record<string, unknown>>;
}

/** The request as filters see and change it. */
export interface FilterRequest {
  readonly method: string;
  /** `:path` with the query string. */
  readonly path: string;
  readonly authority: string;
  readonly scheme: string;
  /** `HTTP/1.1`, `HTTP/2`, … (Envoy's request.protocol). */
  readonly protocol: string;
  /** The immediate peer's address (Envoy `source.ip`). */
  readonly sourceIp: string;
  /** The original client's address (Envoy `remote.ip`): from X-Forwarded-For per the trusted hops, else the peer. */
  readonly remoteIp: string;
  /** The address and port the connection was accepted on (`destination.ip`, `destination.port`). */
  readonly destinationIp: string;
  readonly destinationPort: number;
  /** TLS SNI of the downstream connection; '' for plaintext. */
  readonly sni: string;
  /** The peer's verified identity (mTLS); null for plaintext. */
  readonly peer: PeerIdentity | null;
  readonly isGrpc: boolean;
  /** Name of the matched route; null when none matched (filters run before the router answers 404). */
  readonly routeName: string | null;
  /** JWT authentication result, set by the JWT filter for the filters after it. */
  auth: RequestAuth | null;
  /** Lower-case name; repeated headers joined with `,`; null when absent. Sees earlier filters' edits. */
  requestHeader(name: string): string | null;
  /**
   * Every request header as earlier filters left it, without pseudo-headers: a flat list of
   * name, value, name, value (names as the client wrote them). Read only; for filters that
   * forward headers by pattern (ext_authz).
   */
  requestHeaderList(): readonly string[];
  /**
   * Envoy's dynamic metadata of the request, `filter` the namespace (a filter's name) and
   * `key` a field of its Struct: what an earlier filter recorded for the later ones (RBAC's
   * shadow result, which ext_authz's `filter_enabled_metadata` reads); null when unset.
   */
  dynamicMetadata(filter: string, key: string): string | null;
  setDynamicMetadata(filter: string, key: string, value: string): void;
  setRequestHeader(name: string, value: string): void;
  removeRequestHeader(name: string): void;
  queryParam(name: string): string | null;
  cookie(name: string): string | null;
  /** The matched route's compiled config for filter `name` (Envoy's typed_per_filter_config); null when none. */
  routeFilterConfig(name: string): unknown;
}

/** How a filter acts on the request beyond its return value. */
export interface FilterCallbacks {
  /** Ends the request with a response from the proxy (Envoy's local reply); gRPC requests get a gRPC reply. */
  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string, grpcStatus?: number | null): void;
  /** Resumes the chain after `StopIteration` (from a timer or a promise callback). Ignored once the request ended. */
  continueRequest(): void;
  /** Adds a header to whatever response the client gets (upstream's or local). */
  addResponseHeader(name: string, value: string): void;
  /**
   * Sets a header on whatever response the client gets (upstream's or a later local reply),
   * replacing any of that name it has (Envoy's `setInline` in a filter's encodeHeaders).
   * `name` is lower-case. Applied after the route's response header edits.
   */
  setResponseHeader(name: string, value: string): void;
  /** Sets a response flag without ending the request (fault delay: DI). */
  setResponseFlag(flag: FilterResponseFlag): void;
  /**
   * Chooses the request's route again, as it now is (Envoy's clearRouteCache): after the JWT
   * filter verified a token, routes may match its claims and the headers it set.
   */
  clearRouteCache(): void;
  /** True once the client has gone; a waiting filter should stop its work. */
  readonly aborted: boolean;
  /**
   * Reads the request body ahead for the filter (Envoy's buffering in decodeData): `done`
   * gets the body once the client has sent all of it (`complete` true), or the first
   * `maxBytes` once that many came (`complete` false; the rest is not read yet). The request
   * still goes upstream afterwards with the same bytes. A request without a body gets an
   * empty buffer, complete, at once. Absent: the request has no body to read (an upgrade).
   */
  bufferRequestBody?(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void;
}

/**
 * The response as filters see and change it, before its head goes to the client: the
 * upstream's response, a route's direct response or redirect, or a local reply made in the
 * request phase. Header names are lower-case.
 */
export interface FilterResponse {
  /** The HTTP status the client will get. */
  readonly status: number;
  /** True when the proxy made the response (a local reply or a route's direct response). */
  readonly local: boolean;
  setStatus(status: number): void;
  /** Repeated headers joined with `,`; null when absent. Sees earlier filters' edits. */
  header(name: string): string | null;
  /** Every response header: a flat list of name, value, name, value. Read only. */
  headerList(): readonly string[];
  /** Replaces every header of that name with one. */
  setHeader(name: string, value: string): void;
  /** Adds a header, keeping any of that name. */
  addHeader(name: string, value: string): void;
  removeHeader(name: string): void;
}

/**
 * The per-request part. Must not throw (a throw is answered with a 500 and logged). Envoy's
 * stream filter in both directions: `onRequest` runs in chain order, `onResponse` in reverse
 * order (as Envoy's encoder filters), each only on filters whose `onRequest` ran.
 */
export interface HttpFilter {
  onRequest(request: FilterRequest, callbacks: FilterCallbacks): FilterStatus;
  /**
   * A chunk of the request body on its way upstream, in order; `end` is true on the last call
   * (its chunk may be empty). Returns what goes on in its place: the same chunk to observe,
   * another buffer to transform (an empty one holds nothing back; a filter that changes the
   * body's length removes `content-length` in `onRequest`). Back-pressure is the stream's:
   * the client is read only as fast as upstream takes the bytes. A retry resends the bytes
   * as transformed, without calling the filter again.
   */
  onRequestData?(chunk: Buffer, end: boolean, callbacks: FilterCallbacks): Buffer;
  /**
   * The response head, before the client gets it: edit `response`, or answer instead with
   * `callbacks.sendLocalReply` (the upstream response is dropped). `StopIteration` without a
   * reply holds the head back until the body has passed `onResponseData` to its end, so a
   * filter that buffers the body can still replace the response (the proxy then sets
   * `content-length` from the body as sent).
   */
  onResponse?(response: FilterResponse, callbacks: FilterCallbacks): FilterStatus;
  /**
   * A chunk of the upstream response body on its way to the client, in order (reverse chain
   * order across filters); `end` is true on the last call. Returns what goes on in its place,
   * as `onRequestData`. Back-pressure is the stream's: upstream is paused while the client is
   * slow. Local replies' bodies are not passed through.
   */
  onResponseData?(chunk: Buffer, end: boolean, callbacks: FilterCallbacks): Buffer;
  /** The request ended (completed, replied locally, or aborted): release timers, cancel waits. */
  onDestroy?(): void;
}

/** The compiled config of one filter in one snapshot; immutable. */
export interface HttpFilterConfig {
  readonly name: string;
  /** The instance for one request: a fresh one for filters with per-request state, else a shared one. */
  create(): HttpFilter;
}

/** The config of a filter that keeps no per-request state: every request runs the one compiled instance. */
export class SharedFilterConfig<F extends HttpFilter> implements HttpFilterConfig {
  readonly name: string;
  readonly filter: F;

  constructor(name: string, filter: F) {
    this.name = name;
    this.filter = filter;
  }

  create(): F {
    return this.filter;
  }
}

/** Registered once by name; turns the translator's plain config into a compiled one. */
export interface HttpFilterFactory {
  readonly name: string;
  /** Envoy's terminal filter (the router): must end the chain, and is not a step requests run. */
  readonly terminal?: boolean;
  /** Throws a descriptive Error when the config cannot be used (compile time only). */
  compile(config: unknown, context: FilterCompileContext): HttpFilterConfig;
  /**
   * Compiles a route's override (typed_per_filter_config; `undefined` when the route has none
   * and the filter `readsRouteRateLimits`); absent when the filter has none.
   */
  compileRouteConfig?(config: unknown, context: FilterCompileContext, route: RouteFilterInput): unknown;
  /** The filter reads the route's `rate_limits` (the local rate limit): compiled for every route that has some. */
  readonly readsRouteRateLimits?: boolean;
}

/** What a route offers its filters' route configs beyond typed_per_filter_config. */
export interface RouteFilterInput {
  /**
   * The route's `rate_limits` (config.route.v3.RateLimit JSON) as Envoy's rate limit filters
   * apply them: its own, else its virtual host's (or both, with `include_vh_rate_limits`).
   */
  readonly rateLimits: readonly unknown[];
  /** The route forwards (Envoy's route entry); redirects and direct responses do not. */
  readonly forwards: boolean;
  /** The cluster the route forwards to when it has exactly one; null otherwise. */
  readonly cluster: string | null;
  /** The route's `metadata.filter_metadata` by namespace (the rate limit `metadata` action's ROUTE_ENTRY); absent: none. */
  readonly metadata?: Readonly<Record<string, unknown>> | null;
}

/**
 * What compile time offers a filter: state that must outlive a snapshot (rate-limit buckets,
 * JWKS caches), kept by key and handed back to the next snapshot's compile, and a logger.
 */
export interface FilterCompileContext {
  /** The value stored under `key` by an earlier snapshot, or the result of `create` (then stored). */
  persistent<T>(key: string, create: () => T): T;
  warn(message: string): void;
  /** The proxy's local service cluster (Envoy's node `cluster`, `--service-cluster`): the rate limit action `source_cluster`. */
  readonly serviceCluster?: string;
  /**
   * Where the config sits: the listener's name for its chain, `<route config>/<virtual
   * host>/<route>` for a route's. State kept per place (rate-limit buckets) is keyed by it.
   */
  readonly scope?: string;
  /** Envoy's stats for the filter to resolve its counters from; absent: none are kept (DETACHED_STATS). */
  readonly stats?: FilterStats;
  /** The snapshot's clusters, for filters that call a service (ext_authz); absent: no cluster can be reached. */
  readonly upstream?: FilterUpstream;
  /**
   * The proxy's logger of an Envoy log component (`rbac`, …), whose level `/logging` changes
   * at run time; absent or null: the filter logs nothing.
   */
  logger?(component: string): FilterLog | null;
}

/** A log component as a filter sees it: check `enabled` before building a line. */
export interface FilterLog {
  enabled(level: 'debug' | 'trace'): boolean;
  debug(message: string): void;
}

/** A request a filter sends to a cluster (an authorization check). */
export interface FilterUpstreamRequest {
  readonly method: string;
  readonly path: string;
  /** Flat name, value, … list; `host` sets the authority. */
  readonly headers: readonly string[];
  readonly body: Uint8Array | null;
  /** The whole exchange must end within this; then it fails with a timeout. */
  readonly timeoutMs: number;
}

/** The complete response to a FilterUpstreamRequest. */
export interface FilterUpstreamResponse {
  readonly status: number;
  /** Flat name, value, … list, names lower-case. */
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** HTTP/2 trailers (gRPC status), flat and lower-case; empty when none. */
  readonly trailers: readonly string[];
}

/** Why a FilterUpstreamRequest failed: no such cluster, no healthy host, connection or protocol failure, timeout. */
export type FilterUpstreamFailure = 'no_cluster' | 'no_healthy_upstream' | 'connect_failure' | 'timeout';

/**
 * Sends requests to the snapshot's clusters through their pools (load balancing, TLS and the
 * HTTP version the cluster says), as Envoy's async HTTP client does for a filter.
 */
export interface FilterUpstream {
  /** `done` is called once; the returned function cancels (then `done` is not called). */
  send(cluster: string, request: FilterUpstreamRequest, done: (failure: FilterUpstreamFailure | null, response: FilterUpstreamResponse | null, detail: string) => void): () => void;
}

/**
 * Envoy's names of the built-in filters, which Istio's EnvoyFilter patches and config dumps
 * use, and under which they record dynamic metadata (RBAC's shadow result).
 */
export const FilterName = {
  JwtAuthn: 'envoy.filters.http.jwt_authn',
  Rbac: 'envoy.filters.http.rbac',
  ExtAuthz: 'envoy.filters.http.ext_authz',
  RateLimit: 'envoy.filters.http.ratelimit',
  LocalRateLimit: 'envoy.filters.http.local_ratelimit',
  Fault: 'envoy.filters.http.fault',
  Cors: 'envoy.filters.http.cors',
  Router: 'envoy.filters.http.router',
} as const;
