/**
 * Istio's VirtualService delegation: a root VirtualService's HTTP route with
 * `delegate: {name, namespace}` is replaced, at compile time, by the HTTP routes of the
 * delegate (a VirtualService without hosts), each merged with the root route.
 *
 * Reference: istio.io VirtualService API page ("Delegate"); pilot/pkg/model/virtualservice.go
 * (mergeVirtualServicesIfNeeded, mergeHTTPRoutes, mergeHTTPRoute, mergeHTTPMatchRequests,
 * mergeHTTPMatchRequest, hasConflict, stringMatchConflict). The rules kept:
 * - the delegate is looked up by name in `delegate.namespace`, else the root's namespace,
 *   among VirtualServices without hosts; not found → the root route is ignored (a warning);
 * - the delegate's `exportTo` (default `*`, `.` its own namespace) must include the root's
 *   namespace, or the root route is ignored;
 * - one level only: a delegate's route that delegates again is not followed;
 * - matches: every delegate match must fit at least one root match (uri/scheme/method/
 *   authority within the root's exact or prefix, no regex on either side, equal
 *   ignoreUriCase, compatible headers, withoutHeaders, queryParams, port, sourceLabels,
 *   sourceNamespace, gateways) and is merged with each root match it fits, the delegate's
 *   conditions taking precedence; a delegate match that fits none drops the whole delegate
 *   route. No match on one side takes the other side's matches;
 * - route fields: `rewrite`, `directResponse`, `timeout`, `retries`, `fault`, `mirror`,
 *   `mirrorPercentage`, `mirrors`, `corsPolicy` and `headers` come from the root route only
 *   when the delegate's route leaves them unset; names join as `root-delegate`.
 */
import type { IstioHTTPMatchRequest, IstioHTTPRoute, IstioStringMatch, IstioVirtualService } from '../resources/istio-networking.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';

type FieldPath = readonly (string | number)[];

/** Where part of a route was written: its VirtualService and the path of the HTTP route in it. */
export interface RouteSite {
  readonly vs: Resource;
  /** `['spec', 'http', index]`. */
  readonly path: FieldPath;
}

/** Route-level fields a delegated route takes from its root route when it leaves them unset. */
const INHERITED_FIELDS = [
  'rewrite',
  'directResponse',
  'timeout',
  'retries',
  'fault',
  'mirror',
  'mirrorPercentage',
  'mirrors',
  'corsPolicy',
  'headers',
] as const satisfies readonly (keyof IstioHTTPRoute)[];
export type InheritedField = (typeof INHERITED_FIELDS)[number];

/**
 * One Istio HTTP route ready for translation: a route written in place, or a delegate's
 * route merged with its root route. Problems are reported where the field was written.
 */
export interface HttpRouteSource {
  readonly http: IstioHTTPRoute;
  /** Where the route was written: the delegate's file for a delegated route. */
  readonly site: RouteSite;
  /** Index of the route in `site`'s `spec.http`, for generated route names. */
  readonly index: number;
  /** The root route a delegated route was merged with; null for a route written in place. */
  readonly root: RouteSite | null;
  /** Fields of `http` that came from the root route. */
  readonly inherited: ReadonlySet<InheritedField>;
}

const NONE: ReadonlySet<InheritedField> = new Set();

/** A route written in place in `vs`. */
export function ownRouteSource(vs: Resource, http: IstioHTTPRoute, index: number): HttpRouteSource {
  return { http, site: { vs, path: ['spec', 'http', index] }, index, root: null, inherited: NONE };
}

/** Where `field` of a route source was written. */
export function fieldSite(src: HttpRouteSource, field: InheritedField): RouteSite {
  return src.root !== null && src.inherited.has(field) ? src.root : src.site;
}

/**
 * The routes a root route with `delegate` stands for, in the delegate's order; empty (with a
 * warning) when the delegate is missing, not exported to the root's namespace, or none of
 * its routes fits the root's matches. `qualifyGateway` resolves a gateway name in a
 * namespace (`gw` → `ns/gw`): merged matches mix names written in two namespaces.
 */
export function expandDelegate(
  ctx: TranslateContext,
  root: Resource,
  rootHttp: IstioHTTPRoute,
  index: number,
  qualifyGateway: (ref: string, namespace: string) => string,
): HttpRouteSource[] {
  const rootSite: RouteSite = { vs: root, path: ['spec', 'http', index] };
  const ref = rootHttp.delegate ?? {};
  const name = ref.name ?? '';
  const namespace = ref.namespace || root.metadata.namespace;
  const at = [...rootSite.path, 'delegate'];
  const delegate = ctx.resourcesOf('VirtualService').find((r) => r.metadata.name === name && r.metadata.namespace === namespace);
  const spec = delegate?.spec as IstioVirtualService | undefined;
  if (delegate === undefined || spec === undefined) {
    ctx.warn(root, at, `delegate VirtualService ${namespace}/${name} not found; this route is ignored, as Istio does`);
    return [];
  }
  if ((spec.hosts ?? []).length > 0) {
    // Istio only looks delegates up among VirtualServices without hosts.
    ctx.warn(root, at, `VirtualService ${namespace}/${name} has hosts, so it is no delegate; this route is ignored, as Istio does`);
    return [];
  }
  if (!exportedTo(delegate, spec, root.metadata.namespace)) {
    ctx.warn(
      root,
      at,
      `delegate VirtualService ${namespace}/${name} is not exported to namespace ${root.metadata.namespace}; this route is ignored, as Istio does`,
    );
    return [];
  }
  const rootMatches = qualify(rootHttp.match, root.metadata.namespace, qualifyGateway);
  const out: HttpRouteSource[] = [];
  (spec.http ?? []).forEach((sub, j) => {
    const site: RouteSite = { vs: delegate, path: ['spec', 'http', j] };
    if (sub.delegate) {
      ctx.warn(delegate, [...site.path, 'delegate'], 'a delegate VirtualService cannot delegate again (Istio follows one level); this route is ignored');
      return;
    }
    const matches = mergeMatches(rootMatches, qualify(sub.match, namespace, qualifyGateway));
    if (matches === null) {
      ctx.warn(
        delegate,
        [...site.path, 'match'],
        `conflicts with the match of root VirtualService ${root.metadata.namespace}/${root.metadata.name} spec.http[${index}] (a delegate's match must lie within the root's); this route is ignored, as Istio does`,
      );
      return;
    }
    const { match: _match, ...rest } = sub;
    const http: IstioHTTPRoute = { ...rest };
    if (matches.length > 0) http.match = matches;
    const joined = joinNames(rootHttp.name, sub.name);
    if (joined !== undefined) http.name = joined;
    const inherited = new Set<InheritedField>();
    for (const f of INHERITED_FIELDS) inherit(http, rootHttp, f, inherited);
    out.push({ http, site, index: j, root: rootSite, inherited });
  });
  return out;
}

function inherit<K extends InheritedField>(out: IstioHTTPRoute, root: IstioHTTPRoute, field: K, inherited: Set<InheritedField>): void {
  const value = root[field];
  if (out[field] !== undefined || value === undefined) return;
  out[field] = value;
  inherited.add(field);
}

/** Istio's exportTo for a delegate: `*` by default, `.` is the delegate's own namespace. */
function exportedTo(delegate: Resource, spec: IstioVirtualService, namespace: string): boolean {
  const exportTo = spec.exportTo ?? [];
  if (exportTo.length === 0) return true;
  return exportTo.some((e) => e === '*' || e === namespace || (e === '.' && delegate.metadata.namespace === namespace));
}

function qualify(
  matches: readonly IstioHTTPMatchRequest[] | undefined,
  namespace: string,
  qualifyGateway: (ref: string, namespace: string) => string,
): IstioHTTPMatchRequest[] {
  return (matches ?? []).map((m) => (m.gateways && m.gateways.length > 0 ? { ...m, gateways: m.gateways.map((g) => qualifyGateway(g, namespace)) } : m));
}

/**
 * Istio's mergeHTTPMatchRequests: each delegate match merged with every root match it fits,
 * delegate-major; null when some delegate match fits no root match.
 */
function mergeMatches(root: readonly IstioHTTPMatchRequest[], leaf: readonly IstioHTTPMatchRequest[]): IstioHTTPMatchRequest[] | null {
  if (root.length === 0) return [...leaf];
  if (leaf.length === 0) return [...root];
  const out: IstioHTTPMatchRequest[] = [];
  for (const l of leaf) {
    let fits = false;
    for (const r of root) {
      if (hasConflict(r, l)) continue;
      out.push(mergeMatch(r, l));
      fits = true;
    }
    if (!fits) return null;
  }
  return out;
}

/** Istio's mergeHTTPMatchRequest: the delegate's conditions, completed by the root's. */
function mergeMatch(root: IstioHTTPMatchRequest, leaf: IstioHTTPMatchRequest): IstioHTTPMatchRequest {
  const out: IstioHTTPMatchRequest = { ...leaf };
  const name = joinNames(root.name, leaf.name);
  if (name !== undefined) out.name = name;
  if (out.uri === undefined && root.uri !== undefined) out.uri = root.uri;
  if (out.scheme === undefined && root.scheme !== undefined) out.scheme = root.scheme;
  if (out.method === undefined && root.method !== undefined) out.method = root.method;
  if (out.authority === undefined && root.authority !== undefined) out.authority = root.authority;
  const headers = mergeMaps(root.headers, leaf.headers);
  if (headers !== null) out.headers = headers;
  const withoutHeaders = mergeMaps(root.withoutHeaders, leaf.withoutHeaders);
  if (withoutHeaders !== null) out.withoutHeaders = withoutHeaders;
  const queryParams = mergeMaps(root.queryParams, leaf.queryParams);
  if (queryParams !== null) out.queryParams = queryParams;
  const sourceLabels = mergeMaps(root.sourceLabels, leaf.sourceLabels);
  if (sourceLabels !== null) out.sourceLabels = sourceLabels;
  if (!out.port && root.port) out.port = root.port;
  if (!out.sourceNamespace && root.sourceNamespace) out.sourceNamespace = root.sourceNamespace;
  if ((out.gateways ?? []).length === 0 && root.gateways && root.gateways.length > 0) out.gateways = root.gateways;
  if (!out.statPrefix && root.statPrefix) out.statPrefix = root.statPrefix;
  return out;
}

/** Istio's hasConflict: can `leaf` not be read as a narrowing of `root`? */
function hasConflict(root: IstioHTTPMatchRequest, leaf: IstioHTTPMatchRequest): boolean {
  if (stringMatchConflict(root.uri, leaf.uri)) return true;
  if (stringMatchConflict(root.scheme, leaf.scheme)) return true;
  if (stringMatchConflict(root.method, leaf.method)) return true;
  if (stringMatchConflict(root.authority, leaf.authority)) return true;
  for (const [key, m] of Object.entries(leaf.headers ?? {})) if (stringMatchConflict(own(root.headers, key), m)) return true;
  for (const [key, m] of Object.entries(leaf.withoutHeaders ?? {})) if (stringMatchConflict(own(root.withoutHeaders, key), m)) return true;
  for (const [key, m] of Object.entries(leaf.queryParams ?? {})) if (stringMatchConflict(own(root.queryParams, key), m)) return true;
  if ((root.ignoreUriCase ?? false) !== (leaf.ignoreUriCase ?? false)) return true;
  if (root.port && leaf.port && root.port !== leaf.port) return true;
  if (root.sourceNamespace && leaf.sourceNamespace !== root.sourceNamespace) return true;
  for (const [key, value] of Object.entries(leaf.sourceLabels ?? {})) {
    const rootValue = own(root.sourceLabels, key);
    if (rootValue !== undefined && rootValue !== value) return true;
  }
  const rootGateways = root.gateways ?? [];
  const leafGateways = leaf.gateways ?? [];
  if (rootGateways.length > 0 && leafGateways.length > 0) {
    if (rootGateways.length < leafGateways.length) return true;
    if (leafGateways.some((g) => !rootGateways.includes(g))) return true;
  }
  return false;
}

/**
 * Istio's stringMatchConflict: no conflict when either side is unset; otherwise the leaf
 * must be the root's exact value, or an exact or prefix value starting with the root's
 * prefix. A regex on either side, or an empty matcher, conflicts.
 */
function stringMatchConflict(root: IstioStringMatch | undefined, leaf: IstioStringMatch | undefined): boolean {
  if (root === undefined || leaf === undefined) return false;
  if (root.regex || leaf.regex) return true;
  if (root.exact) return leaf.prefix ? true : (leaf.exact ?? '') !== root.exact;
  if (root.prefix) {
    if (leaf.prefix) return !leaf.prefix.startsWith(root.prefix);
    if (leaf.exact) return !leaf.exact.startsWith(root.prefix);
  }
  return true;
}

/** Istio's name join for merged routes and matches: `root-delegate`, or whichever is set. */
function joinNames(root: string | undefined, leaf: string | undefined): string | undefined {
  if (!leaf) return root;
  return root ? `${root}-${leaf}` : leaf;
}

/** maps.MergeCopy: the root's entries overridden by the delegate's; null when both are empty. */
function mergeMaps<V>(root: Readonly<Record<string, V>> | undefined, leaf: Readonly<Record<string, V>> | undefined): Record<string, V> | null {
  const hasRoot = root !== undefined && Object.keys(root).length > 0;
  const hasLeaf = leaf !== undefined && Object.keys(leaf).length > 0;
  if (!hasRoot && !hasLeaf) return null;
  return { ...root, ...leaf };
}

function own<V>(map: Readonly<Record<string, V>> | undefined, key: string): V | undefined {
  return map !== undefined && Object.hasOwn(map, key) ? map[key] : undefined;
}
