import type {
  ClaimMatch,
  HeaderMatch,
  HeaderMutation,
  Mirror,
  QueryParamMatch,
  RetryPolicy,
  Route,
  RouteAction,
  RouteMatch,
  StringMatch,
  WeightedCluster,
} from '../model/route.ts';
import type { Resource } from '../resources/resource.ts';
import type {
  IstioDestination,
  IstioHeaderOperations,
  IstioHTTPMatchRequest,
  IstioHTTPRetry,
  IstioHTTPRoute,
  IstioStringMatch,
  IstioVirtualService,
} from '../resources/istio-networking.ts';
import { routingClaimPath } from '../schema/names.ts';
import { foldHeaderMutations } from '../model/header-mutation.ts';
import type { TranslateContext } from './context.ts';
import { resolveHost } from './host.ts';
import { DestinationRuleIndex } from './destination-rule.ts';
import { CORS_FILTER, corsConfig } from './cors.ts';
import { FAULT_FILTER, faultConfig, type IstioFault } from './fault.ts';
import { labelsMatch, type ServiceRegistry } from './registry.ts';
import { expandDelegate, fieldSite, ownRouteSource, type HttpRouteSource } from './virtual-service-delegate.ts';

/** What route translation looks destinations up in. */
export interface MeshIndex {
  readonly registry: ServiceRegistry;
  readonly rules: DestinationRuleIndex;
}

/** Istio's retry policy for routes that set no `retries` (pilot's DefaultRetryPolicy). */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  numRetries: 2,
  perTryTimeoutMs: 0,
  retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
  retriableStatusCodes: [503],
  retryRemoteLocalities: false,
};

/** The retries of a route without `retries`: the MeshConfig's defaultHttpRetryPolicy, else Istio's default. */
export function defaultRetryPolicy(ctx: TranslateContext): RetryPolicy | null {
  return retryPolicy(ctx, undefined);
}

/** Where a VirtualService's routes are being placed: which gateway (or `mesh`) and which port. */
export interface RouteScope {
  /** `mesh`, or the `namespace/name` of the Gateway whose listener is being built. */
  readonly gateway: string;
  /** The port of the virtual host (service port for sidecars, server port for gateways); destinations without a port keep it. */
  readonly port: number;
  /** The service a sidecar virtual host belongs to; null for gateways and hosts that are no service. */
  readonly servicePortHost: string | null;
}

/** Istio's cluster name: `outbound|<port>|<subset>|<host>`. */
export function outboundClusterName(port: number, subset: string, host: string): string {
  return `outbound|${port}|${subset}|${host}`;
}

/**
 * Is this VirtualService bound to `gateway`? A VS without `gateways` binds to the mesh only;
 * names resolve in the VS's namespace (`bookinfo-gateway` → `default/bookinfo-gateway`).
 */
export function gatewayRefs(vs: Resource, list: readonly string[] | undefined): Set<string> {
  const out = new Set<string>();
  if (!list || list.length === 0) {
    out.add('mesh');
    return out;
  }
  for (const g of list) out.add(resolveGatewayRef(g, vs.metadata.namespace));
  return out;
}

export function resolveGatewayRef(ref: string, namespace: string): string {
  if (ref === 'mesh') return 'mesh';
  if (ref.includes('/')) return ref;
  // `name.namespace.svc.cluster.local` style refs are accepted by Istio too.
  const dot = ref.indexOf('.');
  if (dot > 0) {
    const parts = ref.split('.');
    return `${parts[1]}/${parts[0]}`;
  }
  return `${namespace}/${ref}`;
}

/**
 * Translates the HTTP routes of one VirtualService for one scope. Each ORed match block
 * becomes its own route, in order, as Istio emits them; blocks that cannot apply to this
 * proxy (other gateway, other port, other source labels or namespace) are dropped here, at
 * compile time, exactly as istiod drops them. A route with `delegate` stands for the
 * delegate VirtualService's routes merged with it (virtual-service-delegate.ts).
 */
export function translateHttpRoutes(
  ctx: TranslateContext,
  mesh: MeshIndex,
  vs: Resource,
  scope: RouteScope,
): Route[] {
  const spec = vs.spec as IstioVirtualService;
  const vsGateways = gatewayRefs(vs, spec.gateways);
  const out: Route[] = [];
  (spec.http ?? []).forEach((http, i) => {
    const sources = http.delegate ? expandDelegate(ctx, vs, http, i, resolveGatewayRef) : [ownRouteSource(vs, http, i)];
    for (const src of sources) pushRoutes(ctx, mesh, vs, vsGateways, src, scope, out);
  });
  return out;
}

/** The routes of one HTTP route of `vs` (written in place or delegated), one per match block that applies. */
function pushRoutes(
  ctx: TranslateContext,
  mesh: MeshIndex,
  vs: Resource,
  vsGateways: Set<string>,
  src: HttpRouteSource,
  scope: RouteScope,
  out: Route[],
): void {
  const { http } = src;
  const matches: (IstioHTTPMatchRequest | null)[] = http.match && http.match.length > 0 ? http.match : [null];
  const applies = matches.map((m) => (m === null ? vsGateways.has(scope.gateway) : matchApplies(ctx, m, vs, vsGateways, scope)));
  // Like istiod, build the action only for a proxy some block applies to: the other side of a
  // VirtualService (the mesh leg, seen from a gateway) must not warn about its destinations.
  if (!applies.includes(true)) return;
  let action = translateAction(ctx, mesh, src, scope);
  if (action === null) return;
  let requestHeaders = headerMutation(http.headers?.request);
  let responseHeaders = headerMutation(http.headers?.response);
  // istiod (route.go applyHTTPRouteDestination): a single destination is the route's `cluster`,
  // its header edits appended after the route's own (so its `set` wins); only a split keeps
  // them on each weighted cluster, where Envoy applies them before the route's.
  const only = action.kind === 'forward' && action.clusters.length === 1 ? action.clusters[0]! : null;
  if (action.kind === 'forward' && only !== null && (only.requestHeaders !== null || only.responseHeaders !== null)) {
    requestHeaders = foldHeaderMutations([requestHeaders, only.requestHeaders]);
    responseHeaders = foldHeaderMutations([responseHeaders, only.responseHeaders]);
    action = { ...action, clusters: [{ ...only, requestHeaders: null, responseHeaders: null }] };
  }
  // A delegated route points into the delegate's file, where it was written.
  const vsRef = `${src.site.vs.metadata.namespace}/${src.site.vs.metadata.name}`;
  const filterConfigs = routeFilterConfigs(ctx, http);
  matches.forEach((m, j) => {
    if (!applies[j]) return;
    // istiod's name (route.go translateRoute): the route's name, then `.<match name>` when the
    // block has one (so `.m` for an unnamed route); an unnamed route stays unnamed.
    const name = m?.name ? `${http.name ?? ''}.${m.name}` : (http.name ?? '');
    const origin = `${vsRef}#${src.index}${matches.length > 1 ? `.${j}` : ''}`;
    out.push({
      name,
      match: m === null ? MATCH_ALL : translateMatch(m),
      action,
      requestHeaders,
      responseHeaders,
      filterConfigs,
      origin,
    });
  });
}

/**
 * The route's typed_per_filter_config, as istiod fills it for every kind of route (forward,
 * redirect, direct response): the fault filter's HTTPFault, where `fault` leaves one, and the
 * CORS filter's CorsPolicy for a `corsPolicy`.
 */
function routeFilterConfigs(ctx: TranslateContext, http: IstioHTTPRoute): Record<string, unknown> {
  const durationMs = (v: string | undefined, f: number): number => ctx.durationMs(v, f);
  const fault = http.fault ? faultConfig(http.fault as IstioFault, durationMs) : null;
  const out: Record<string, unknown> = fault === null ? {} : { [FAULT_FILTER]: fault };
  if (http.corsPolicy) out[CORS_FILTER] = corsConfig(http.corsPolicy, durationMs);
  return out;
}

export const MATCH_ALL: RouteMatch = { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] };

/** Conditions Istio resolves per proxy rather than per request. */
function matchApplies(ctx: TranslateContext, m: IstioHTTPMatchRequest, vs: Resource, vsGateways: Set<string>, scope: RouteScope): boolean {
  // Match-level `gateways` replace the VirtualService's own list for this block.
  const gateways = m.gateways && m.gateways.length > 0 ? gatewayRefs(vs, m.gateways) : vsGateways;
  if (!gateways.has(scope.gateway)) return false;
  if (m.port !== undefined && m.port !== 0 && m.port !== scope.port) return false;
  if (m.sourceLabels && !labelsMatch(m.sourceLabels, ctx.node.labels)) return false;
  if (m.sourceNamespace && m.sourceNamespace !== ctx.node.namespace) return false;
  return true;
}

function translateMatch(m: IstioHTTPMatchRequest): RouteMatch {
  const headers: HeaderMatch[] = [];
  if (m.method) headers.push({ name: ':method', match: stringMatch(m.method), invert: false });
  if (m.authority) headers.push({ name: ':authority', match: stringMatch(m.authority), invert: false });
  if (m.scheme) headers.push({ name: ':scheme', match: stringMatch(m.scheme), invert: false });
  const claims: ClaimMatch[] = [];
  for (const [invert, map] of [[false, m.headers], [true, m.withoutHeaders]] as const) {
    for (const [name, sm] of Object.entries(map ?? {})) {
      // istiod: a `@request.auth.claims` name is a condition on the verified JWT, never a header.
      const path = routingClaimPath(name);
      if (path !== null) claims.push({ path, match: isEmptyMatch(sm) ? { kind: 'present' } : stringMatch(sm), invert });
      else headers.push(headerMatch(name, sm, invert));
    }
  }
  const queryParams: QueryParamMatch[] = [];
  for (const [name, sm] of Object.entries(m.queryParams ?? {})) {
    // Istio: an empty matcher means "present"; `exact: ""` stays an exact match on the empty
    // value (`?key`, `?key=`), as route.go translateQueryParamMatch passes it to Envoy.
    queryParams.push({ name, match: isEmptyMatch(sm) ? { kind: 'present' } : stringMatch(sm) });
  }
  return {
    path: { match: m.uri && !isEmptyMatch(m.uri) ? stringMatch(m.uri) : { kind: 'any' }, ignoreCase: m.ignoreUriCase ?? false },
    headers,
    queryParams,
    ...(claims.length > 0 ? { claims } : {}),
  };
}

function headerMatch(name: string, sm: IstioStringMatch, invert: boolean): HeaderMatch {
  // Istio treats `{}` and `prefix: ""` as "header present".
  const present = isEmptyMatch(sm) || sm.prefix === '';
  return { name: name.toLowerCase(), match: present ? { kind: 'present' } : stringMatch(sm), invert };
}

function isEmptyMatch(sm: IstioStringMatch): boolean {
  return sm.exact === undefined && sm.prefix === undefined && sm.regex === undefined;
}

function stringMatch(sm: IstioStringMatch): StringMatch {
  if (sm.exact !== undefined) return { kind: 'exact', value: sm.exact };
  if (sm.prefix !== undefined) return { kind: 'prefix', value: sm.prefix };
  return { kind: 'regex', value: sm.regex ?? '' };
}

export function headerMutation(ops: IstioHeaderOperations | undefined): HeaderMutation | null {
  if (!ops) return null;
  const set = Object.entries(ops.set ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const);
  const add = Object.entries(ops.add ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const);
  const remove = (ops.remove ?? []).map((k) => k.toLowerCase());
  if (set.length === 0 && add.length === 0 && remove.length === 0) return null;
  return { set, add, remove };
}

function translateAction(ctx: TranslateContext, mesh: MeshIndex, src: HttpRouteSource, scope: RouteScope): RouteAction | null {
  const { http } = src;
  const { vs, path } = src.site;
  if (http.redirect) {
    const r = http.redirect;
    return {
      kind: 'redirect',
      status: r.redirectCode ?? 301,
      scheme: r.scheme ?? null,
      authority: r.authority ?? null,
      port: r.port ?? null,
      derivePortFromScheme: r.derivePort === 'FROM_PROTOCOL_DEFAULT',
      path: r.uri ?? null,
    };
  }
  if (http.directResponse) {
    const b = http.directResponse.body;
    const body = b?.string ?? (b?.bytes !== undefined ? Buffer.from(b.bytes, 'base64').toString('latin1') : null);
    return { kind: 'direct-response', status: http.directResponse.status ?? 200, body };
  }
  const dests = http.route ?? [];
  if (dests.length === 0) {
    ctx.error(vs, path, 'an HTTP route needs one of route, redirect, directResponse or delegate');
    return null;
  }
  const clusters: WeightedCluster[] = [];
  dests.forEach((d, k) => {
    // One destination takes all the traffic whatever its weight; with several, weight 0 takes none.
    const weight = dests.length === 1 ? 100 : (d.weight ?? 0);
    if (weight <= 0) return;
    const cluster = destinationCluster(ctx, mesh, vs, d.destination, [...path, 'route', k, 'destination'], scope);
    if (cluster === null) return;
    clusters.push({
      cluster,
      weight,
      requestHeaders: headerMutation(d.headers?.request),
      responseHeaders: headerMutation(d.headers?.response),
    });
  });
  if (clusters.length === 0) {
    ctx.error(vs, [...path, 'route'], 'no destination with a weight above 0');
    return null;
  }
  const mirrors: Mirror[] = [];
  if (http.mirror) {
    // Mirrors a delegated route takes from its root resolve (and report) in the root.
    const at = fieldSite(src, 'mirror');
    const c = destinationCluster(ctx, mesh, at.vs, http.mirror, [...at.path, 'mirror'], scope);
    if (c !== null) mirrors.push({ cluster: c, percent: http.mirrorPercentage?.value ?? 100 });
  }
  const mirrorsAt = fieldSite(src, 'mirrors');
  (http.mirrors ?? []).forEach((m, k) => {
    const c = destinationCluster(ctx, mesh, mirrorsAt.vs, m.destination, [...mirrorsAt.path, 'mirrors', k, 'destination'], scope);
    if (c !== null) mirrors.push({ cluster: c, percent: m.percentage?.value ?? 100 });
  });
  const rw = http.rewrite;
  return {
    kind: 'forward',
    clusters,
    timeoutMs: ctx.durationMs(http.timeout, 0),
    retry: retryPolicy(ctx, http.retries),
    rewrite:
      rw && (rw.uri !== undefined || rw.uriRegexRewrite)
        ? {
            prefix: rw.uri ?? null,
            regex: rw.uriRegexRewrite ? { pattern: rw.uriRegexRewrite.match ?? '', substitution: rw.uriRegexRewrite.rewrite ?? '' } : null,
          }
        : null,
    authorityRewrite: rw?.authority ?? null,
    mirrors,
  };
}

/**
 * The cluster a destination names. The port may be left out when the service has one port;
 * otherwise the port of the virtual host being built is kept (the service port for a
 * sidecar, the server port for a gateway), as Istio's GetDestinationCluster does.
 */
function destinationCluster(
  ctx: TranslateContext,
  mesh: MeshIndex,
  vs: Resource,
  dest: IstioDestination | undefined,
  path: readonly (string | number)[],
  scope: RouteScope,
): string | null {
  const host = resolveHost(dest?.host ?? '', vs.metadata.namespace, ctx.node.clusterDomain);
  const svc = mesh.registry.get(host);
  let port = dest?.port?.number ?? 0;
  if (port === 0) {
    if (svc && svc.ports.length === 1) port = svc.ports[0]!.number;
    else if (!svc || svc.ports.length === 0 || svc.ports.some((p) => p.number === scope.port)) port = scope.port;
    else {
      ctx.error(vs, [...path, 'port'], `service ${host} has several ports (${svc.ports.map((p) => p.number).join(', ')}); the destination must name one`);
      return null;
    }
  }
  if (!svc) {
    ctx.warn(vs, [...path, 'host'], `host ${host} is not in the registry (no ServiceEntry); requests routed here get 503 NC`);
  } else if (!svc.ports.some((p) => p.number === port)) {
    ctx.warn(vs, [...path, 'port'], `service ${host} has no port ${port}; requests routed here get 503 NC`);
  } else if (dest?.subset) {
    // istioctl analyze's IST0101: a subset no DestinationRule defines has no cluster.
    const rule = mesh.rules.lookup(host, svc.namespace);
    if (rule === null || DestinationRuleIndex.subset(rule, dest.subset) === null) {
      ctx.warn(vs, [...path, 'subset'], `subset ${dest.subset} of ${host} is not defined by any DestinationRule; requests routed here get 503 NC`);
    }
  }
  return outboundClusterName(port, dest?.subset ?? '', host);
}

/**
 * Istio's retry.ConvertPolicy: no `retries` is the default policy, `attempts: 0` disables
 * retries, and otherwise the default is overridden field by field; without `retryOn` the
 * default conditions (and retriable status 503) stay.
 */
function retryPolicy(ctx: TranslateContext, r: IstioHTTPRetry | undefined): RetryPolicy | null {
  if (r === undefined) {
    // istiod: a route without `retries` takes the MeshConfig's defaultHttpRetryPolicy, if set.
    const mesh = ctx.mesh.defaultHttpRetryPolicy;
    if (mesh === undefined) return DEFAULT_RETRY_POLICY;
    r = mesh;
  }
  if (!r.attempts || r.attempts <= 0) return null;
  if (r.retryOn === undefined || r.retryOn.trim() === '') {
    return {
      ...DEFAULT_RETRY_POLICY,
      numRetries: r.attempts,
      perTryTimeoutMs: ctx.durationMs(r.perTryTimeout, 0),
      retryRemoteLocalities: r.retryRemoteLocalities ?? false,
    };
  }
  const retryOn: string[] = [];
  const codes: number[] = [];
  for (const part of r.retryOn.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    // Istio accepts bare status codes in retryOn as retriable status codes.
    if (/^\d{3}$/.test(p)) codes.push(Number(p));
    else retryOn.push(p);
  }
  if (codes.length > 0 && !retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
  return {
    numRetries: r.attempts,
    perTryTimeoutMs: ctx.durationMs(r.perTryTimeout, 0),
    retryOn,
    retriableStatusCodes: codes,
    retryRemoteLocalities: r.retryRemoteLocalities ?? false,
  };
}

