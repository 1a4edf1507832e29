import type { Route, RouteConfiguration, VirtualHost } from '@remora/config';
import { CompiledRoute, type RouteCompileContext, type RouteRequest } from './compiled-route.ts';
import { ROUTE_INDEX_MIN_ROUTES, RouteIndex } from './route-index.ts';

/** A virtual host with its routes compiled; first matching route wins. */
export class CompiledVirtualHost {
  readonly name: string;
  /** The route configuration that holds this host, and the host as configured (for `/explain`). */
  readonly routeConfig: string;
  readonly model: VirtualHost;
  readonly routes: readonly CompiledRoute[];
  /** `require_tls: ALL` (Gateway httpsRedirect): plaintext requests get this 301 to https. */
  readonly tlsRedirect: CompiledRoute | null;
  /** The routes indexed by path; null for a small host, which is scanned. */
  readonly #index: RouteIndex | null;
  /** The routes with Envoy's connect_matcher, in order: the only ones a CONNECT request (no path) can match; null when none. */
  readonly #connectRoutes: readonly CompiledRoute[] | null;
  /** `table`: the route configuration's name, which scopes the routes' filter state. */
  constructor(v: VirtualHost, ctx: RouteCompileContext, table = '') {
    this.name = v.name;
    this.routeConfig = table;
    this.model = v;
    const scope = `${table}/${v.name}`;
    const keys = routeStateKeys(v.routes);
    this.routes = v.routes.map((r, i) => new CompiledRoute(r, ctx, `${scope}/${keys[i]!}`, v, table));
    this.tlsRedirect = v.requireTls ? new CompiledRoute(HTTPS_REDIRECT, ctx, `${scope}/https_redirect`, null, table) : null;
    this.#index = v.routes.length >= ROUTE_INDEX_MIN_ROUTES ? new RouteIndex(v.routes, this.routes) : null;
    const connect = this.routes.filter((r) => r.model.match.path.match.kind === 'connect');
    this.#connectRoutes = connect.length === 0 ? null : connect;
  }

  /**
   * The first route that takes a CONNECT request. As Envoy skips every route that needs a
   * path for a request without one, only connect_matcher routes are tried.
   */
  matchConnect(r: RouteRequest): CompiledRoute | null {
    const routes = this.#connectRoutes;
    if (routes === null) return null;
    for (let i = 0; i < routes.length; i++) if (routes[i]!.matcher.matches(r)) return routes[i]!;
    return null;
  }

  /** The first matching route, as Envoy: through the index when the host has one. */
  match(r: RouteRequest): CompiledRoute | null {
    return this.#index !== null ? this.#index.match(r) : this.scan(r);
  }

  /** The first matching route by trying every route in order. */
  scan(r: RouteRequest): CompiledRoute | null {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) if (routes[i]!.matcher.matches(r)) return routes[i]!;
    return null;
  }
}

/**
 * What names each route's state (rate-limit buckets) within its virtual host, so that it
 * outlives a reload that keeps the route: where the route was written (`origin`), never its
 * Envoy name, which istiod leaves empty for unnamed routes. Routes Istio makes itself
 * (`default`, `block_all`) and routes without an origin fall back to their position; a
 * repeated origin (one delegate behind two root routes) gets its occurrence appended.
 */
function routeStateKeys(routes: readonly Route[]): string[] {
  const seen = new Map<string, number>();
  return routes.map((r, i) => {
    const base = r.origin !== '' ? r.origin : `#${i}`;
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    return n === 0 ? base : `${base}~${n}`;
  });
}

interface WildcardDomain {
  /** `.example.com` for `*.example.com`; `api.` for `api.*`. */
  readonly part: string;
  /** null: the authority must carry no port; '*': any port (one must be present); else that port. */
  readonly port: string | null;
  readonly vhost: CompiledVirtualHost;
}

/** What routes a listener's requests: picks the virtual host for a lower-case authority. */
export interface VirtualHostFinder {
  find(authority: string): CompiledVirtualHost | null;
}

/**
 * Picks the virtual host for a Host/:authority, in Envoy's order: exact name, then the
 * longest `*.suffix` wildcard, then the longest `prefix*` wildcard, then `*`. Domains may
 * carry a port (`reviews:9080`) or a port wildcard (`foo.com:*`); gateways ignore the port.
 */
export class RouteTable implements VirtualHostFinder {
  readonly name: string;
  readonly #exact = new Map<string, CompiledVirtualHost>();
  /** Exact host with `:*`: any explicit port. */
  readonly #exactAnyPort = new Map<string, CompiledVirtualHost>();
  readonly #suffixes: WildcardDomain[] = [];
  readonly #prefixes: WildcardDomain[] = [];
  readonly #default: CompiledVirtualHost | null;
  readonly #ignorePort: boolean;

  /** `compiled`: the virtual hosts already compiled, in order (see `compile`); else they are compiled here. */
  constructor(rc: RouteConfiguration, ctx: RouteCompileContext, compiled: readonly CompiledVirtualHost[] | null = null) {
    this.name = rc.name;
    this.#ignorePort = rc.ignorePortInHostMatching;
    let def: CompiledVirtualHost | null = null;
    for (let i = 0; i < rc.virtualHosts.length; i++) {
      const v = rc.virtualHosts[i]!;
      const vhost = compiled?.[i] ?? new CompiledVirtualHost(v, ctx, rc.name);
      for (const raw of v.domains) {
        const d = raw.toLowerCase();
        if (d === '*') {
          def ??= vhost;
          continue;
        }
        const { host, port } = splitDomain(d);
        if (host.startsWith('*')) this.#suffixes.push({ part: host.slice(1), port, vhost });
        else if (host.endsWith('*')) this.#prefixes.push({ part: host.slice(0, -1), port, vhost });
        else if (port === '*') {
          if (!this.#exactAnyPort.has(host)) this.#exactAnyPort.set(host, vhost);
        } else if (!this.#exact.has(d)) this.#exact.set(d, vhost);
      }
    }
    this.#suffixes.sort((a, b) => b.part.length - a.part.length);
    this.#prefixes.sort((a, b) => b.part.length - a.part.length);
    this.#default = def;
  }

  /**
   * Compiles a route configuration a virtual host at a time, awaiting `pause()` between them
   * when it returns a promise, so that a large one does not hold the event loop.
   */
  static async compile(rc: RouteConfiguration, ctx: RouteCompileContext, pause: () => Promise<void> | null): Promise<RouteTable> {
    const compiled: CompiledVirtualHost[] = [];
    for (const v of rc.virtualHosts) {
      const p = pause();
      if (p !== null) await p;
      compiled.push(new CompiledVirtualHost(v, ctx, rc.name));
    }
    return new RouteTable(rc, ctx, compiled);
  }

  /** `authority` must already be lower case. */
  find(authority: string): CompiledVirtualHost | null {
    let host = authority;
    let port: string | null = null;
    const colon = authority.lastIndexOf(':');
    if (colon > 0 && authority.charCodeAt(authority.length - 1) !== 93 /* ] */ && authority.indexOf(']', colon) < 0) {
      host = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    }
    if (this.#ignorePort) {
      port = null;
      const v = this.#exact.get(host);
      if (v !== undefined) return v;
    } else {
      const v = this.#exact.get(authority);
      if (v !== undefined) return v;
      if (port !== null) {
        const a = this.#exactAnyPort.get(host);
        if (a !== undefined) return a;
      }
    }
    for (const w of this.#suffixes) {
      if (host.length > w.part.length && host.endsWith(w.part) && portMatches(w.port, port, this.#ignorePort)) return w.vhost;
    }
    for (const w of this.#prefixes) {
      if (host.length > w.part.length && host.startsWith(w.part) && portMatches(w.port, port, this.#ignorePort)) return w.vhost;
    }
    return this.#default;
  }
}

function portMatches(want: string | null, got: string | null, ignorePort: boolean): boolean {
  if (ignorePort) return true;
  if (want === '*') return got !== null;
  return want === got;
}

function splitDomain(d: string): { host: string; port: string | null } {
  const colon = d.lastIndexOf(':');
  if (colon > 0 && !d.endsWith(']')) {
    const port = d.slice(colon + 1);
    if (port === '*' || /^\d+$/.test(port)) return { host: d.slice(0, colon), port };
  }
  return { host: d, port: null };
}

/**
 * The route for a request on a listener: its virtual host by authority, then the first
 * matching route; null means 404 NR.
 */
export function findRoute(routes: VirtualHostFinder | null, request: RouteRequest): CompiledRoute | null {
  if (routes === null) return null;
  const vhost = routes.find(request.authority.toLowerCase());
  if (vhost === null) return null;
  if (vhost.tlsRedirect !== null && request.scheme !== 'https') return vhost.tlsRedirect;
  return request.method === 'CONNECT' ? vhost.matchConnect(request) : vhost.match(request);
}

/** Envoy's SSL redirect (`require_tls`, no route of its own, so no name): 301 to the same host and path over https. */
const HTTPS_REDIRECT: Route = {
  name: '',
  match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] },
  action: { kind: 'redirect', status: 301, scheme: 'https', authority: null, port: null, derivePortFromScheme: false, path: null },
  requestHeaders: null,
  responseHeaders: null,
  filterConfigs: {},
  origin: '',
};
