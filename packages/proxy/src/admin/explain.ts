/**
 * `POST /explain`: what the live snapshot would do with a request, without sending it — the
 * listener, the virtual host, the route (and why each earlier route of that host did not
 * match), every filter's verdict (RBAC policy, JWT provider, rate-limit tokens, fault odds),
 * the weighted clusters, the endpoints, retries and timeouts. Everything is read from the
 * compiled snapshot the listeners serve with, through the matchers' own read-only `explain`
 * methods: nothing is counted, no token is taken, no fault is drawn.
 */
import {
  FilterName,
  type FilterRequest,
  type HttpFilterConfig,
  type PeerIdentity,
  type RequestAuth,
} from '@remora/filters';
import {
  FaultFilterConfig,
  JwtAuthnFilterConfig,
  RbacFilter,
  SharedFilterConfig,
  LocalRateLimitFilter,
  type CompiledFault,
  type JwtExplanation,
  type RbacVerdict,
  type RouteLimit,
} from '@remora/filters/internal';
import type { RetryPolicy } from '@remora/config';
import type { CompiledRoute, RouteRequest } from '../router/compiled-route.ts';
import type { CompiledVirtualHost } from '../router/route-table.ts';
import type { ListenerSnapshot, Snapshot } from '../runtime/snapshot.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { BreakerCounts } from './admin-views.ts';

/** The request to explain, as `POST /explain` takes it (JSON). */
export interface ExplainInput {
  readonly method?: string;
  /** `http://reviews:9080/x?y=1`; the authority and scheme come from it. */
  readonly url: string;
  /** Header name → value (a repeated header joined with `,`). */
  readonly headers?: Readonly<Record<string, string>>;
  /** The listener by name; absent: picked by direction and port. */
  readonly listener?: string;
  /** The destination port to pick the listener by (an inbound app port); absent: the URL's. */
  readonly port?: number;
  /** `inbound` / `outbound` / `gateway`; absent: inbound when a principal is given, else outbound (or the gateway's). */
  readonly direction?: string;
  /** The peer's address (`source.ip`); absent: 127.0.0.1. */
  readonly sourceIp?: string;
  /** The peer's mTLS identity (`cluster.local/ns/<ns>/sa/<sa>`); absent: plaintext. */
  readonly principal?: string;
}

export class ExplainError extends Error {}

export interface FilterVerdict {
  readonly name: string;
  /** `pass`, `deny` or `abort` (the filter answers), `not-reached` (an earlier filter answered), `not-evaluated`. */
  readonly verdict: 'pass' | 'deny' | 'abort' | 'not-reached' | 'not-evaluated';
  /** The local reply status when the filter would answer. */
  readonly status?: number;
  readonly detail: string;
  readonly rbac?: { readonly enforced: RbacVerdict | null; readonly shadow: RbacVerdict | null };
  readonly jwt?: JwtExplanation;
}

export interface Explanation {
  readonly request: { readonly method: string; readonly authority: string; readonly path: string; readonly scheme: string; readonly headers: Readonly<Record<string, string>> };
  readonly configVersion: string;
  readonly listener: { readonly name: string; readonly direction: string; readonly address: string; readonly port: number; readonly why: string };
  readonly virtualHost: { readonly name: string; readonly routeConfig: string; readonly domains: readonly string[] } | null;
  /** Why no virtual host took the authority; null when one did. */
  readonly noVirtualHost: string | null;
  /** The routes of the host tried before the chosen one (all of them when none matched), each with why it did not match. */
  readonly skippedRoutes: readonly { readonly index: number; readonly name: string; readonly origin: string; readonly why: string }[];
  readonly route: { readonly index: number; readonly name: string; readonly origin: string; readonly action: string } | null;
  readonly filters: readonly FilterVerdict[];
  /** The reply the proxy would give itself (404 NR, 403 from RBAC, a fault abort, …); null: it forwards. */
  readonly localReply: { readonly status: number; readonly flag: string; readonly details: string } | null;
  readonly forward: {
    readonly clusters: readonly { readonly cluster: string; readonly weight: number; readonly percent: number; readonly exists: boolean }[];
    readonly timeoutMs: number;
    readonly retry: RetryPolicy | null;
    readonly mirrors: readonly { readonly cluster: string; readonly percent: number }[];
    readonly prefixRewrite: string | null;
    readonly authorityRewrite: string | null;
  } | null;
  readonly clusters: readonly ClusterView[];
}

export interface ClusterView {
  readonly name: string;
  readonly service: string | null;
  readonly subset: string | null;
  readonly lb: string;
  /** `overflows`: requests refused for want of a pending slot (Envoy's rq_pending_overflow); `retryOverflows`: retries refused by max_retries (rq_retry_overflow). */
  readonly circuitBreaker: { readonly rqActive: number; readonly rqPending: number; readonly overflows: number; readonly retryOverflows: number };
  readonly panic: boolean;
  readonly endpoints: readonly { readonly address: string; readonly locality: string; readonly weight: number; readonly health: 'healthy' | 'ejected'; readonly labels: Readonly<Record<string, string>> }[];
}

/** A request built from the input, seen by route matching and the filters as a real one would be. */
class ExplainedRequest implements FilterRequest, RouteRequest {
  readonly method: string;
  path: string;
  pathOnly: string;
  readonly authority: string;
  readonly scheme: string;
  readonly protocol = 'HTTP/1.1';
  readonly sourceIp: string;
  readonly remoteIp: string;
  readonly destinationIp: string;
  readonly destinationPort: number;
  readonly sni = '';
  readonly peer: PeerIdentity | null;
  readonly isGrpc: boolean;
  auth: RequestAuth | null = null;
  route: CompiledRoute | null = null;
  readonly headers = new Map<string, string>();
  readonly #metadata = new Map<string, string>();
  readonly #query: URLSearchParams;

  constructor(input: ExplainInput, url: URL, l: ListenerSnapshot) {
    this.method = (input.method ?? 'GET').toUpperCase();
    this.scheme = url.protocol.replace(/:$/, '');
    this.authority = url.host;
    this.path = `${url.pathname}${url.search}`;
    this.pathOnly = url.pathname;
    this.#query = url.searchParams;
    for (const [k, v] of Object.entries(input.headers ?? {})) this.headers.set(k.toLowerCase(), v);
    this.sourceIp = input.sourceIp ?? '127.0.0.1';
    this.remoteIp = this.sourceIp;
    this.destinationIp = l.listener.address;
    this.destinationPort = l.listener.destinationPort ?? (input.port ?? l.listener.port);
    const principal = input.principal ?? null;
    this.peer = principal === null ? null : { principal, namespace: /\/ns\/([^/]+)\//.exec(principal)?.[1] ?? '' };
    this.isGrpc = (this.headers.get('content-type') ?? '').startsWith('application/grpc');
  }

  get routeName(): string | null {
    return this.route?.name ?? null;
  }

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
      default:
        return this.headers.get(name) ?? null;
    }
  }

  requestHeaderList(): readonly string[] {
    return [...this.headers].flat();
  }

  dynamicMetadata(filter: string, key: string): string | null {
    return this.#metadata.get(`${filter}\0${key}`) ?? null;
  }

  setDynamicMetadata(filter: string, key: string, value: string): void {
    this.#metadata.set(`${filter}\0${key}`, value);
  }

  setRequestHeader(name: string, value: string): void {
    this.headers.set(name.toLowerCase(), value);
  }

  removeRequestHeader(name: string): void {
    this.headers.delete(name.toLowerCase());
  }

  queryParam(name: string): string | null {
    return this.#query.get(name);
  }

  cookie(name: string): string | null {
    const raw = this.headers.get('cookie');
    if (raw === undefined) return null;
    for (const part of raw.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
    return null;
  }

  routeFilterConfig(name: string): unknown {
    return this.route?.filterConfigs?.get(name) ?? null;
  }
}

/** Picks the listener a request would reach, and says why. */
function pickListener(snap: Snapshot, input: ExplainInput, url: URL): { l: ListenerSnapshot; why: string } {
  const http = [...snap.listeners.values()].filter((l) => l.listener.tcpProxy === undefined);
  if (input.listener !== undefined) {
    const l = snap.listeners.get(input.listener);
    if (l === undefined) throw new ExplainError(`no listener named ${input.listener}; listeners: ${[...snap.listeners.keys()].join(', ')}`);
    return { l, why: 'named' };
  }
  const gateway = snap.config.node.kind === 'gateway';
  const direction = input.direction ?? (gateway ? 'gateway' : input.principal !== undefined ? 'inbound' : 'outbound');
  if (direction !== 'inbound' && direction !== 'outbound' && direction !== 'gateway') throw new ExplainError(`direction must be inbound, outbound or gateway, not ${direction}`);
  const port = input.port ?? (url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80);
  const same = http.filter((l) => l.direction === direction);
  if (same.length === 0) throw new ExplainError(`this proxy has no ${direction} HTTP listener; listeners: ${[...snap.listeners.keys()].join(', ')}`);
  const onPort = same.find((l) => (l.listener.destinationPort ?? l.listener.port) === port && l.listener.bindToPort !== false) ?? same.find((l) => (l.listener.destinationPort ?? l.listener.port) === port);
  if (onPort !== undefined) return { l: onPort, why: `${direction} listener for port ${port}` };
  const byPort = same.find((l) => l.listener.routeConfigsByPort !== undefined) ?? same.find((l) => l.listener.useOriginalDst === true) ?? same[0]!;
  return { l: byPort, why: `${direction} listener that serves port ${port} (no listener of its own)` };
}

function describeAction(r: CompiledRoute): string {
  const t = r.target;
  if (t.kind === 'forward') return `forward to ${t.targets.map((x) => (t.targets.length > 1 ? `${x.name} (weight ${x.weight})` : x.name)).join(', ')}`;
  if (t.kind === 'redirect') return `redirect ${t.model.status}`;
  return `direct response ${t.status}`;
}

function describeFault(f: CompiledFault): string {
  const parts: string[] = [];
  if (f.delayMs > 0) parts.push(`would delay ${f.delayMs} ms with probability ${f.delayPercent}%`);
  if (f.abort) parts.push(`would abort with ${f.abortGrpcStatus !== null ? `gRPC status ${f.abortGrpcStatus}` : `HTTP ${f.abortStatus}`} with probability ${f.abortPercent}%`);
  return parts.length === 0 ? 'no fault for this route' : parts.join('; then ');
}

async function explainFilter(f: HttpFilterConfig, req: ExplainedRequest): Promise<FilterVerdict> {
  if (f instanceof JwtAuthnFilterConfig) {
    const jwt = await f.explain(req);
    const toks = jwt.tokens.length === 0 ? 'no token' : jwt.tokens.map((t) => `${t.location}: ${t.problem ?? `iss ${t.issuer ?? ''}; ${t.providers.map((p) => `${p.name}: ${p.outcome}`).join(', ')}`}`).join('; ');
    const req0 = jwt.requirement === 'none' ? 'no requirement for this path' : `requirement from ${jwt.requirement}`;
    const detail = `${req0}; ${toks}; ${jwt.allowed ? (jwt.auth !== null ? `verified: request.auth.principal ${jwt.auth.principal}` : 'passes unauthenticated') : `fails: ${jwt.message}`}`;
    return { name: f.name, verdict: jwt.allowed ? 'pass' : 'deny', ...(jwt.httpStatus !== null ? { status: jwt.httpStatus } : {}), detail, jwt };
  }
  if (f instanceof SharedFilterConfig && f.filter instanceof RbacFilter) {
    const rbac = f.filter.explain(req);
    const e = rbac.enforced;
    const shadow = rbac.shadow === null ? '' : `; shadow (dry run) ${rbac.shadow.action}: ${rbac.shadow.allowed ? 'allowed' : 'denied'}, matched ${rbac.shadow.matchedPolicy ?? 'none'}`;
    if (e === null) return { name: f.name, verdict: 'pass', detail: `no enforced rules${shadow}`, rbac };
    const detail = `${e.action} engine (${e.policies.length} polic${e.policies.length === 1 ? 'y' : 'ies'}): ${e.allowed ? 'allowed' : 'denied'}, matched policy ${e.matchedPolicy ?? 'none'}${shadow}`;
    return { name: f.name, verdict: e.allowed ? 'pass' : 'deny', ...(e.allowed ? {} : { status: 403 }), detail, rbac };
  }
  if (f instanceof SharedFilterConfig && f.filter instanceof LocalRateLimitFilter) {
    const route = req.routeFilterConfig(FilterName.LocalRateLimit) as RouteLimit | null;
    const limiter = route?.limiter ?? f.filter.limiter;
    const bucket = limiter.bucket;
    if (bucket === null) return { name: f.name, verdict: 'pass', detail: `${route?.limiter ? "route's" : "listener's"} limiter has no token bucket` };
    const left = bucket.remaining;
    const detail = `${route?.limiter ? "route's" : "listener's"} bucket: ${left} of ${bucket.maxTokens} tokens left (+${bucket.tokensPerFill} every ${bucket.fillIntervalMs} ms); enabled ${limiter.enabledPercent}%, enforced ${limiter.enforcedPercent}%`;
    const refused = left < 1 && limiter.enabledPercent >= 100 && limiter.enforcedPercent >= 100;
    return { name: f.name, verdict: refused ? 'deny' : 'pass', ...(refused ? { status: limiter.status } : {}), detail };
  }
  if (f instanceof FaultFilterConfig) {
    const fault = (req.routeFilterConfig(FilterName.Fault) as CompiledFault | null) ?? f.fault;
    if (fault === null) return { name: f.name, verdict: 'pass', detail: 'no fault for this route' };
    const certain = fault.abort && fault.abortPercent >= 100;
    return { name: f.name, verdict: certain ? 'abort' : 'pass', ...(certain ? { status: fault.abortStatus } : {}), detail: describeFault(fault) };
  }
  if (f.name === FilterName.Cors && req.requestHeader('origin') === null) return { name: f.name, verdict: 'pass', detail: 'no Origin header: CORS does not apply' };
  return { name: f.name, verdict: 'not-evaluated', detail: 'not evaluated by explain (it would run for the request)' };
}

/** `breakers`: the proxy's breaker counts by cluster (with workers, theirs added up); absent, this thread's. */
function clusterView(c: UpstreamCluster, breakers: BreakerCounts | undefined): ClusterView {
  const b = breakers?.get(c.name);
  return {
    name: c.name,
    service: c.model.service?.host ?? null,
    subset: c.model.subset,
    lb: c.model.lb.kind,
    circuitBreaker:
      b === undefined
        ? { rqActive: c.breaker.active, rqPending: c.breaker.pending, overflows: c.breaker.overflows, retryOverflows: c.breaker.retryOverflows }
        : { rqActive: b[0] ?? 0, rqPending: b[1] ?? 0, overflows: b[2] ?? 0, retryOverflows: b[4] ?? 0 }, // BREAKER_COUNTERS' order
    panic: c.panic,
    endpoints: c.hosts.map((h) => ({
      address: h.host.hostPort,
      locality: h.endpoint.locality,
      weight: h.endpoint.weight,
      health: c.isEjected(h) ? 'ejected' : 'healthy',
      labels: h.endpoint.labels,
    })),
  };
}

/** Finds the virtual host and route as a request's stream is routed, recording why each earlier route was passed over. */
function routeOf(l: ListenerSnapshot, req: ExplainedRequest): { vhost: CompiledVirtualHost | null; noVhost: string | null; route: CompiledRoute | null; skipped: Explanation['skippedRoutes'] } {
  const finder = l.routesFor(null);
  if (finder === null) return { vhost: null, noVhost: `listener ${l.listener.name} has no route configuration (${l.listener.routeConfig} is missing)`, route: null, skipped: [] };
  const vhost = finder.find(req.authority.toLowerCase());
  if (vhost === null) return { vhost: null, noVhost: `no virtual host of the listener's route configuration answers ${req.authority} (and none has domain "*")`, route: null, skipped: [] };
  if (vhost.tlsRedirect !== null && req.scheme !== 'https') return { vhost, noVhost: null, route: vhost.tlsRedirect, skipped: [] };
  // The route the listener would pick (through the host's index when it has one).
  const route = vhost.match(req);
  const skipped: { index: number; name: string; origin: string; why: string }[] = [];
  for (let i = 0; i < vhost.routes.length; i++) {
    const r = vhost.routes[i]!;
    if (r === route) break;
    skipped.push({ index: i, name: r.name, origin: r.model.origin, why: r.matcher.explain(req) ?? 'matches, yet was not chosen' });
  }
  return { vhost, noVhost: null, route, skipped };
}

/** Explains `input` against the live snapshot. Throws ExplainError for input it cannot use. */
export async function explainRequest(snap: Snapshot, clusters: ReadonlyMap<string, UpstreamCluster>, input: ExplainInput, breakers?: BreakerCounts): Promise<Explanation> {
  if (typeof input !== 'object' || input === null || typeof input.url !== 'string') throw new ExplainError('the body must be JSON with at least "url" (http://host[:port]/path)');
  let url: URL;
  try {
    url = new URL(input.url);
  } catch {
    throw new ExplainError(`url: not an absolute URL: ${JSON.stringify(input.url)}`);
  }
  if (input.headers !== undefined && (typeof input.headers !== 'object' || Object.values(input.headers).some((v) => typeof v !== 'string'))) {
    throw new ExplainError('headers: must be an object of header name to string value');
  }
  const { l, why } = pickListener(snap, input, url);
  const req = new ExplainedRequest(input, url, l);
  let found = routeOf(l, req);
  req.route = found.route;

  const filters: FilterVerdict[] = [];
  let localReply: Explanation['localReply'] = null;
  for (const f of l.filters ?? []) {
    if (localReply !== null) {
      filters.push({ name: f.name, verdict: 'not-reached', detail: 'an earlier filter answers the request' });
      continue;
    }
    const v = await explainFilter(f, req);
    filters.push(v);
    if (v.jwt !== undefined && v.jwt.auth !== null) {
      req.auth = v.jwt.auth;
      // Envoy's clearRouteCache: a verified token's claims may choose another route.
      if (v.jwt.clearRouteCache) {
        found = routeOf(l, req);
        req.route = found.route;
      }
    }
    if (v.verdict === 'deny' || v.verdict === 'abort') {
      const details =
        v.rbac !== undefined ? `rbac_access_denied_matched_policy[${v.rbac.enforced?.matchedPolicy ?? 'none'}]` : v.jwt !== undefined ? `jwt_authn_access_denied{${v.jwt.message.replace(/\s/g, '_')}}` : f.name === FilterName.Fault ? 'fault_filter_abort' : 'local_rate_limited';
      const flag = f.name === FilterName.Fault ? 'FI' : f.name === FilterName.LocalRateLimit ? 'RL' : '-';
      localReply = { status: v.status ?? 403, flag, details };
    }
  }
  const route = found.route;
  if (localReply === null && route === null) localReply = { status: 404, flag: 'NR', details: 'route_not_found' };
  let forward: Explanation['forward'] = null;
  const used: ClusterView[] = [];
  if (route !== null && route.target.kind === 'forward') {
    const t = route.target;
    const total = t.targets.reduce((s, x) => s + x.weight, 0);
    forward = {
      clusters: t.targets.map((x) => ({ cluster: x.name, weight: x.weight, percent: total === 0 ? 0 : Math.round((x.weight * 10000) / total) / 100, exists: x.cluster !== null })),
      timeoutMs: t.timeoutMs,
      retry: t.retry?.model ?? null,
      mirrors: t.mirrors.map((m) => ({ cluster: m.name, percent: m.percent })),
      prefixRewrite: t.prefixRewrite,
      authorityRewrite: t.authorityRewrite,
    };
    for (const x of t.targets) {
      const c = clusters.get(x.name) ?? x.cluster;
      if (c !== null && c !== undefined) used.push(clusterView(c, breakers));
    }
    if (localReply === null && t.targets.every((x) => x.cluster === null)) localReply = { status: 503, flag: 'NC', details: 'cluster_not_found' };
  } else if (localReply === null && route !== null) {
    const t = route.target;
    if (t.kind === 'redirect') localReply = { status: t.model.status, flag: '-', details: 'redirect' };
    else if (t.kind === 'direct-response') localReply = { status: t.status, flag: '-', details: 'direct_response' };
  }
  const vh = found.vhost;
  return {
    request: { method: req.method, authority: req.authority, path: req.path, scheme: req.scheme, headers: Object.fromEntries(req.headers) },
    configVersion: snap.config.version,
    listener: { name: l.listener.name, direction: l.direction, address: l.listener.address, port: l.listener.port, why },
    virtualHost: vh === null ? null : { name: vh.name, routeConfig: vh.routeConfig, domains: vh.model.domains },
    noVirtualHost: found.noVhost,
    skippedRoutes: found.skipped,
    route: route === null ? null : { index: vh?.routes.indexOf(route) ?? -1, name: route.name, origin: route.model.origin, action: describeAction(route) },
    filters,
    localReply,
    forward,
    clusters: used,
  };
}

function describeRetry(r: RetryPolicy | null): string {
  if (r === null) return 'none';
  const codes = r.retriableStatusCodes.length > 0 ? ` (status ${r.retriableStatusCodes.join(', ')})` : '';
  const perTry = r.perTryTimeoutMs > 0 ? `, ${r.perTryTimeoutMs} ms per try` : '';
  return `${r.numRetries} ${r.numRetries === 1 ? 'retry' : 'retries'} on ${r.retryOn.join(', ')}${codes}${perTry}${r.retryRemoteLocalities ? ', to other localities' : ''}`;
}

/** The explanation as the `remora explain` text. */
export function explanationText(e: Explanation): string {
  const lines: string[] = [];
  const r = e.request;
  lines.push(`${r.method} ${r.scheme}://${r.authority}${r.path}   (config version ${e.configVersion || '-'})`);
  lines.push(`listener     ${e.listener.name} (${e.listener.direction}, ${e.listener.address}:${e.listener.port}): ${e.listener.why}`);
  if (e.virtualHost === null) lines.push(`virtual host none: ${e.noVirtualHost ?? ''}`);
  else lines.push(`virtual host ${e.virtualHost.name} in ${e.virtualHost.routeConfig} (domains ${e.virtualHost.domains.join(', ')})`);
  for (const s of e.skippedRoutes) lines.push(`  route #${s.index} ${s.name || '(unnamed)'}${s.origin ? ` [${s.origin}]` : ''}: no match: ${s.why}`);
  if (e.route !== null) lines.push(`route        #${e.route.index} ${e.route.name || '(unnamed)'}${e.route.origin ? ` [${e.route.origin}]` : ''}: ${e.route.action}`);
  else if (e.virtualHost !== null) lines.push('route        none of the virtual host\'s routes matches');
  if (e.filters.length > 0) {
    lines.push('filters');
    for (const f of e.filters) lines.push(`  ${f.name}: ${f.verdict}${f.status !== undefined ? ` ${f.status}` : ''}: ${f.detail}`);
  }
  if (e.forward !== null) {
    lines.push('clusters');
    for (const c of e.forward.clusters) lines.push(`  ${c.cluster}  weight ${c.weight} (${c.percent}%)${c.exists ? '' : '  MISSING: 503 NC'}`);
    lines.push(`timeout      ${e.forward.timeoutMs === 0 ? 'none' : `${e.forward.timeoutMs} ms`}`);
    lines.push(`retry        ${describeRetry(e.forward.retry)}`);
    for (const m of e.forward.mirrors) lines.push(`mirror       ${m.cluster} ${m.percent}%`);
    for (const c of e.clusters) {
      lines.push(`endpoints of ${c.name}${c.subset ? ` (subset ${c.subset})` : ''}, ${c.lb}${c.panic ? ', PANIC (too few healthy: all hosts used)' : ''}`);
      if (c.endpoints.length === 0) lines.push('  none: 503 UH');
      for (const h of c.endpoints) lines.push(`  ${h.address}  ${h.health}  locality ${h.locality || '-'}  weight ${h.weight}`);
    }
  }
  lines.push(e.localReply === null ? 'result       forwarded upstream' : `result       ${e.localReply.status} ${e.localReply.flag} ${e.localReply.details} (answered by the proxy)`);
  return `${lines.join('\n')}\n`;
}
