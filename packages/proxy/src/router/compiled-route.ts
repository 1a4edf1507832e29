import type { RequestAuth } from '@remora/filters';
import { RouteHeaderMutation } from '@remora/filters/internal';
import {
  RegexRewrite,
  type ClaimMatch,
  type DirectResponseAction,
  type ForwardAction,
  type HeaderMutation,
  type RedirectAction,
  type Route,
  type RouteMatch,
  type VirtualHost,
} from '@remora/config';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import { CompiledRetryPolicy } from './retry-policy.ts';
import { StringMatcher } from './string-matcher.ts';

/** What route matching reads from a request; a request's `ActiveStream` implements it without copying. */
export interface RouteRequest {
  readonly method: string;
  /** `:path` as received, query string included. */
  readonly path: string;
  /** The path without its query string. */
  readonly pathOnly: string;
  readonly authority: string;
  readonly scheme: string;
  /** Lower-case name; repeated headers joined with `,` as Envoy matches them; null when absent. */
  requestHeader(name: string): string | null;
  queryParam(name: string): string | null;
  /** The verified JWT, once the JWT filter has run; what claim conditions read. */
  readonly auth: RequestAuth | null;
}

const PATH_ANY = 0;
const PATH_PREFIX = 1;
const PATH_EXACT_OR_REGEX = 2;
/** Envoy's connect_matcher: the method is CONNECT (such a request has no path to match). */
const PATH_CONNECT = 3;
const ANY_PATH = { kind: 'any' } as const;

class HeaderCondition {
  readonly name: string;
  readonly matcher: StringMatcher;
  readonly invert: boolean;
  /** What an absent header is matched as: '' (Envoy's treat_missing_header_as_empty) or null (never matches). */
  readonly missing: string | null;
  constructor(name: string, matcher: StringMatcher, invert: boolean, missingAsEmpty: boolean) {
    this.name = name;
    this.matcher = matcher;
    this.invert = invert;
    this.missing = missingAsEmpty ? '' : null;
  }
}

class QueryCondition {
  readonly name: string;
  readonly matcher: StringMatcher;
  constructor(name: string, matcher: StringMatcher) {
    this.name = name;
    this.matcher = matcher;
  }
}

/**
 * A condition on a claim of the verified JWT (istiod's metadata matcher on the jwt_authn
 * payload): a string claim matches by value, a list claim when one string element does.
 */
class ClaimCondition {
  readonly #path: readonly string[];
  readonly #matcher: StringMatcher;
  readonly invert: boolean;
  constructor(c: ClaimMatch) {
    this.#path = c.path;
    this.#matcher = new StringMatcher(c.match);
    this.invert = c.invert;
  }

  matches(auth: RequestAuth | null): boolean {
    if (auth === null) return false;
    let v: unknown = auth.claims;
    const path = this.#path;
    for (let i = 0; i < path.length; i++) {
      if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, path[i]!)) return false;
      v = (v as Record<string, unknown>)[path[i]!];
    }
    if (typeof v === 'string') return this.#matcher.matches(v);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const e: unknown = v[i];
        if (typeof e === 'string' && this.#matcher.matches(e)) return true;
      }
    }
    return false;
  }
}

/** A RouteMatch compiled once: regexes built, case folding decided, empty lists made null. */
export class RouteMatcher {
  readonly #pathKind: number;
  readonly #path: StringMatcher;
  readonly #headers: HeaderCondition[] | null;
  readonly #query: QueryCondition[] | null;
  readonly #claims: ClaimCondition[] | null;
  readonly #model: RouteMatch;

  constructor(m: RouteMatch) {
    this.#model = m;
    const pm = m.path.match;
    this.#path = new StringMatcher(pm.kind === 'connect' ? ANY_PATH : pm, m.path.ignoreCase);
    // Envoy: prefix matches the whole :path; exact and regex match it without the query.
    this.#pathKind = pm.kind === 'any' ? PATH_ANY : pm.kind === 'prefix' ? PATH_PREFIX : pm.kind === 'connect' ? PATH_CONNECT : PATH_EXACT_OR_REGEX;
    this.#headers = m.headers.length === 0 ? null : m.headers.map((h) => new HeaderCondition(h.name, new StringMatcher(h.match), h.invert, h.missingAsEmpty === true));
    this.#query = m.queryParams.length === 0 ? null : m.queryParams.map((q) => new QueryCondition(q.name, new StringMatcher(q.match)));
    this.#claims = m.claims === undefined || m.claims.length === 0 ? null : m.claims.map((c) => new ClaimCondition(c));
  }

  matches(r: RouteRequest): boolean {
    if (this.#pathKind === PATH_PREFIX) {
      if (!this.#path.matches(r.path)) return false;
    } else if (this.#pathKind === PATH_EXACT_OR_REGEX) {
      if (!this.#path.matches(r.pathOnly)) return false;
    } else if (this.#pathKind === PATH_CONNECT) {
      if (r.method !== 'CONNECT') return false;
    }
    const headers = this.#headers;
    if (headers !== null) {
      for (let i = 0; i < headers.length; i++) {
        const h = headers[i]!;
        if (h.matcher.matches(r.requestHeader(h.name) ?? h.missing) === h.invert) return false;
      }
    }
    const query = this.#query;
    if (query !== null) {
      for (let i = 0; i < query.length; i++) {
        const q = query[i]!;
        if (!q.matcher.matches(r.queryParam(q.name))) return false;
      }
    }
    const claims = this.#claims;
    if (claims !== null) {
      for (let i = 0; i < claims.length; i++) {
        const c = claims[i]!;
        if (c.matches(r.auth) === c.invert) return false;
      }
    }
    return true;
  }

  /**
   * Why this match does not take the request: the first condition that fails, in the order
   * `matches` checks them, as a sentence; null when it matches. Read-only, for `/explain`.
   */
  explain(r: RouteRequest): string | null {
    if (this.matches(r)) return null;
    const m = this.#model;
    if (this.#pathKind === PATH_CONNECT) {
      if (r.method !== 'CONNECT') return `connect_matcher takes CONNECT requests only, not ${r.method}`;
    } else if (this.#pathKind !== PATH_ANY) {
      const value = this.#pathKind === PATH_PREFIX ? r.path : r.pathOnly;
      if (!this.#path.matches(value)) return `path ${describeMatch(m.path.match)}${m.path.ignoreCase ? ' (ignoring case)' : ''} does not match ${JSON.stringify(value)}`;
    }
    const headers = this.#headers;
    if (headers !== null) {
      for (let i = 0; i < headers.length; i++) {
        const h = headers[i]!;
        const value = r.requestHeader(h.name);
        if (h.matcher.matches(value ?? h.missing) !== h.invert) continue;
        const what = h.name === ':method' ? 'method' : `header ${h.name}`;
        const got = value === null ? 'none' : JSON.stringify(value);
        return `${what} ${h.invert ? 'must not be ' : ''}${describeMatch(m.headers[i]!.match)}: request has ${got}`;
      }
    }
    const query = this.#query;
    if (query !== null) {
      for (let i = 0; i < query.length; i++) {
        const q = query[i]!;
        const value = r.queryParam(q.name);
        if (q.matcher.matches(value)) continue;
        return `query parameter ${q.name} ${describeMatch(m.queryParams[i]!.match)}: request has ${value === null ? 'none' : JSON.stringify(value)}`;
      }
    }
    const claims = this.#claims;
    if (claims !== null) {
      for (let i = 0; i < claims.length; i++) {
        const c = claims[i]!;
        if (c.matches(r.auth) !== c.invert) continue;
        const cm = m.claims![i]!;
        const who = r.auth === null ? 'the request has no verified JWT' : `the verified JWT of ${r.auth.principal} does not satisfy it`;
        return `JWT claim ${cm.path.join('.')} ${c.invert ? 'must not be ' : ''}${describeMatch(cm.match)}: ${who}`;
      }
    }
    return 'does not match';
  }
}

/** A string condition in words: `exact "jason"`, `prefix "/api"`, `present`. */
export function describeMatch(m: { readonly kind: string; readonly value?: string }): string {
  if (m.kind === 'present' || m.kind === 'any' || m.kind === 'connect') return m.kind;
  return `${m.kind} ${JSON.stringify(m.value ?? '')}`;
}

export class WeightedTarget {
  readonly name: string;
  readonly weight: number;
  /** Null when the config names a cluster that does not exist: requests get 503 NC. */
  readonly cluster: UpstreamCluster | null;
  /** The destination's header edits (Istio's `route[].headers` in a split), applied by the router before the route's on requests, after them on responses. */
  readonly headerMutation: RouteHeaderMutation;
  constructor(name: string, weight: number, cluster: UpstreamCluster | null, req: HeaderMutation | null, resp: HeaderMutation | null) {
    this.name = name;
    this.weight = weight;
    this.cluster = cluster;
    this.headerMutation = RouteHeaderMutation.of(req, resp);
  }
}

/** A shadow destination (Istio `mirror`/`mirrors`): a copy of `percent`% of requests. */
export class MirrorTarget {
  readonly name: string;
  readonly cluster: UpstreamCluster | null;
  readonly percent: number;
  constructor(name: string, cluster: UpstreamCluster | null, percent: number) {
    this.name = name;
    this.cluster = cluster;
    this.percent = percent;
  }
}

/** A forward action with its weighted pick table resolved against live clusters. */
export class ForwardTarget {
  readonly kind = 'forward' as const;
  readonly targets: readonly WeightedTarget[];
  readonly #cumulative: Uint32Array;
  readonly #total: number;
  readonly timeoutMs: number;
  /** Null when the route never retries (no policy, or zero retries). */
  readonly retry: CompiledRetryPolicy | null;
  readonly mirrors: readonly MirrorTarget[];
  readonly prefixRewrite: string | null;
  /** Envoy's regex_rewrite on RE2 (GlobalReplace, `\1` substitutions); null without one. */
  readonly regexRewrite: RegexRewrite | null;
  readonly authorityRewrite: string | null;
  readonly model: ForwardAction;

  constructor(a: ForwardAction, clusters: ReadonlyMap<string, UpstreamCluster>) {
    this.model = a;
    this.targets = a.clusters.map(
      (c) => new WeightedTarget(c.cluster, c.weight, clusters.get(c.cluster) ?? null, c.requestHeaders, c.responseHeaders),
    );
    this.#cumulative = new Uint32Array(this.targets.length);
    let sum = 0;
    this.targets.forEach((t, i) => (this.#cumulative[i] = sum += t.weight));
    this.#total = sum;
    this.timeoutMs = a.timeoutMs;
    this.retry = a.retry !== null && a.retry.numRetries > 0 ? new CompiledRetryPolicy(a.retry) : null;
    this.mirrors = a.mirrors.map((m) => new MirrorTarget(m.cluster, clusters.get(m.cluster) ?? null, m.percent));
    this.prefixRewrite = a.rewrite?.prefix ?? null;
    // Throws (at compile time only) on a pattern or substitution RE2 cannot use.
    this.regexRewrite = a.rewrite?.regex ? new RegexRewrite(a.rewrite.regex.pattern, a.rewrite.regex.substitution) : null;
    this.authorityRewrite = a.authorityRewrite;
  }

  /** Weighted random pick, as Envoy's weighted clusters. */
  pick(random: number): WeightedTarget {
    const targets = this.targets;
    if (targets.length === 1) return targets[0]!;
    const r = Math.floor(random * this.#total);
    const cum = this.#cumulative;
    for (let i = 0; i < cum.length; i++) if (r < cum[i]!) return targets[i]!;
    return targets[targets.length - 1]!;
  }
}

export class RedirectTarget {
  readonly kind = 'redirect' as const;
  readonly model: RedirectAction;
  constructor(a: RedirectAction) {
    this.model = a;
  }
}

export class DirectResponseTarget {
  readonly kind = 'direct-response' as const;
  readonly status: number;
  readonly body: Buffer | null;
  constructor(a: DirectResponseAction) {
    this.status = a.status;
    this.body = a.body === null ? null : Buffer.from(a.body, 'latin1');
  }
}

export type RouteTarget = ForwardTarget | RedirectTarget | DirectResponseTarget;

/** What compiling routes needs: the live clusters, and the per-route filter config compiler. */
export interface RouteCompileContext {
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /**
   * Compiles a route's per-filter configs (Envoy's typed_per_filter_config, and what reads its
   * rate_limits); null when it has none. `scope` names the route's state: `<route config>/<vhost>/<route state key>`.
   */
  routeFilters(route: Route, scope: string, vh?: VirtualHost | null): ReadonlyMap<string, unknown> | null;
}

/** A context for routes without per-route filter configs (unit tests, tools). */
export function plainRouteContext(clusters: ReadonlyMap<string, UpstreamCluster>): RouteCompileContext {
  return { clusters, routeFilters: () => null };
}

/** A route ready for the hot path. */
export class CompiledRoute {
  readonly name: string;
  readonly matcher: RouteMatcher;
  readonly target: RouteTarget;
  /** The route's header edits, its virtual host's and route configuration's folded in (the router's stage). */
  readonly headerMutation: RouteHeaderMutation;
  /** Whether the prefix rewrite applies to an exact or prefix path match (the text it replaces). */
  readonly matchedPrefix: string | null;
  readonly model: Route;
  /** The route configuration holding the route ('' for routes made outside one). */
  readonly routeConfig: string;

  /** Compiled per-filter configs of this route, by filter name; null when none. */
  readonly filterConfigs: ReadonlyMap<string, unknown> | null;

  /** `scope`: `<route config>/<virtual host>/<route state key>`, which names the route's filter state (see `routeStateKeys`). */
  constructor(r: Route, ctx: RouteCompileContext, scope = '', vh: VirtualHost | null = null, routeConfig = '') {
    const clusters = ctx.clusters;
    this.routeConfig = routeConfig;
    this.model = r;
    this.name = r.name;
    this.filterConfigs = ctx.routeFilters(r, scope, vh);
    this.matcher = new RouteMatcher(r.match);
    const a = r.action;
    this.target =
      a.kind === 'forward' ? new ForwardTarget(a, clusters) : a.kind === 'redirect' ? new RedirectTarget(a) : new DirectResponseTarget(a);
    this.headerMutation = RouteHeaderMutation.of(r.requestHeaders, r.responseHeaders);
    const pm = r.match.path.match;
    // A route without a path match is Envoy's `prefix: /` (as istiod and the exporter write it): a prefix rewrite swaps that `/`.
    this.matchedPrefix = pm.kind === 'prefix' || pm.kind === 'exact' ? pm.value : pm.kind === 'any' ? '/' : null;
  }
}
