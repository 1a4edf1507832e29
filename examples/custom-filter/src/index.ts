/**
 * `example.canary`: sticky canary assignment. A request without the canary cookie (and
 * without the routing header, which a tester may send to choose) is put in
 * the canary group with the configured probability, and the response sets the cookie so the
 * client stays in its group; a request with the cookie keeps its group. The group travels to
 * the routes as a request header (the VirtualService matches it), the route is chosen again
 * (`clearRouteCache`), the group is recorded as dynamic metadata for the access log
 * (`%DYNAMIC_METADATA(example.canary:group)%`), the response says which group served it, and
 * counters count the assignments under `http.<stat_prefix>.canary.*`.
 *
 * Load it with `remora … --filter examples/custom-filter` and place it with an EnvoyFilter
 * (see ../coffee-shop/mesh/canary-filter.yaml).
 */
import { defineFilter, FilterConfigError, FilterStatus, type FilterCallbacks, type FilterRequest, type FilterResponse, type HttpFilter, type Stat } from '@remora/filters';

export const NAME = 'example.canary';

/** The config as written in the EnvoyFilter's TypedStruct `value` (or in TypeScript). */
export interface CanaryConfigInput {
  /** Cookie that remembers the group (default `canary`). */
  cookie?: string;
  /** Request header the routes match (default `x-canary`; `true` for the canary group, `false` otherwise). */
  header?: string;
  /** Share of new clients put in the canary group, 0–100 (default 10). */
  percent?: number;
  /** Cookie lifetime in seconds (default 3600). */
  maxAgeSeconds?: number;
}

export interface CanaryConfig {
  readonly cookie: string;
  readonly header: string;
  readonly percent: number;
  readonly setCookieCanary: string;
  readonly setCookieStable: string;
  readonly stats: { readonly assignedCanary: Stat; readonly assignedStable: Stat; readonly sticky: Stat };
  /** Random number in [0, 100); injected by tests. */
  readonly random: () => number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Checks the config once per snapshot; errors name the field. */
export function parseCanaryConfig(json: unknown): Omit<CanaryConfig, 'stats' | 'random'> {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new FilterConfigError('', 'the config must be an object');
  const c = json as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!['cookie', 'header', 'percent', 'maxAgeSeconds'].includes(key)) throw new FilterConfigError(key, 'unknown field (cookie, header, percent, maxAgeSeconds)');
  }
  const str = (key: string, fallback: string): string => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'string' || !TOKEN.test(v)) throw new FilterConfigError(key, `must be a cookie or header name, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (key: string, fallback: number, min: number, max: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new FilterConfigError(key, `must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  const cookie = str('cookie', 'canary');
  const header = str('header', 'x-canary').toLowerCase();
  const percent = num('percent', 10, 0, 100);
  const maxAge = Math.floor(num('maxAgeSeconds', 3600, 1, 400 * 24 * 3600));
  const setCookie = (group: string): string => `${cookie}=${group}; Max-Age=${maxAge}; Path=/; HttpOnly; SameSite=Lax`;
  return { cookie, header, percent, setCookieCanary: setCookie('canary'), setCookieStable: setCookie('stable') };
}

/** One request's filter: it remembers whether it assigned a group, to set the cookie on the way back. */
export class CanaryFilter implements HttpFilter {
  readonly #config: CanaryConfig;
  /** The group this request was newly put in; null when it came with the cookie. */
  #assigned: 'canary' | 'stable' | null = null;
  #group: 'canary' | 'stable' = 'stable';

  constructor(config: CanaryConfig) {
    this.#config = config;
  }

  onRequest(request: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const c = this.#config;
    const explicit = request.requestHeader(c.header);
    const cookie = request.cookie(c.cookie);
    if (explicit !== null) {
      // A client that names its group (a tester's header) keeps it, for this request only.
      this.#group = explicit === 'true' ? 'canary' : 'stable';
      request.setDynamicMetadata(NAME, 'group', this.#group);
      return FilterStatus.Continue;
    }
    if (cookie === 'canary' || cookie === 'stable') {
      this.#group = cookie;
      c.stats.sticky.value++;
    } else {
      this.#group = c.random() < c.percent ? 'canary' : 'stable';
      this.#assigned = this.#group;
      (this.#group === 'canary' ? c.stats.assignedCanary : c.stats.assignedStable).value++;
    }
    request.setRequestHeader(c.header, this.#group === 'canary' ? 'true' : 'false');
    request.setDynamicMetadata(NAME, 'group', this.#group);
    // The routes match the header just set: choose the route again.
    callbacks.clearRouteCache();
    return FilterStatus.Continue;
  }

  onResponse(response: FilterResponse): FilterStatus {
    response.setHeader('x-canary-group', this.#group);
    if (this.#assigned !== null) response.addHeader('set-cookie', this.#assigned === 'canary' ? this.#config.setCookieCanary : this.#config.setCookieStable);
    return FilterStatus.Continue;
  }
}

/** The factory: export it (default) for `--filter`. */
export const canaryFilter = defineFilter<CanaryConfig>({
  name: NAME,
  parseConfig: (json, setup) => ({
    ...parseCanaryConfig(json),
    stats: { assignedCanary: setup.stats.counter('assigned_canary'), assignedStable: setup.stats.counter('assigned_stable'), sticky: setup.stats.counter('sticky') },
    random: () => Math.random() * 100,
  }),
  createFilter: (config) => () => new CanaryFilter(config),
});

export default canaryFilter;
