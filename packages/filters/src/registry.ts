import { SKIPPED_ISTIO_FILTERS } from '@remora/config';
import type { FilterCompileContext, HttpFilterConfig, HttpFilterFactory, RouteFilterInput } from './filter.ts';

export { SKIPPED_ISTIO_FILTERS };

/** A listener's filter entry: Envoy's HttpFilter (`name`, `typed_config`, `is_optional`). */
export interface ChainEntry {
  readonly name: string;
  readonly config: unknown;
  readonly isOptional?: boolean;
}

const NO_ROUTE: RouteFilterInput = { rateLimits: [], forwards: false, cluster: null };

/** Filter factories by name; the runtime compiles each listener's chain through it. */
export class FilterRegistry {
  readonly #factories = new Map<string, HttpFilterFactory>();

  /** Adds a factory under its `name`; a second factory of one name is an error. */
  register(factory: HttpFilterFactory): this {
    if (this.#factories.has(factory.name)) throw new Error(`filter ${factory.name} is already registered`);
    this.#factories.set(factory.name, factory);
    return this;
  }

  /** True when a factory of that name is registered. */
  has(name: string): boolean {
    return this.#factories.has(name);
  }

  /**
   * Compiles a chain in order into the steps a request runs. As Envoy: an unknown name is an
   * error unless the entry is `is_optional` (then skipped with a warning); a terminal filter
   * (the router) must be last and is not a step. Istio's own filters in SKIPPED_ISTIO_FILTERS
   * are accepted and skipped. A bad config throws, naming the filter.
   */
  compileChain(chain: readonly ChainEntry[], context: FilterCompileContext): HttpFilterConfig[] {
    const out: HttpFilterConfig[] = [];
    chain.forEach(({ name, config, isOptional }, i) => {
      const factory = this.#factories.get(name);
      if (factory === undefined) {
        if (SKIPPED_ISTIO_FILTERS.has(name)) return;
        if (isOptional === true) {
          context.warn(`HTTP filter ${name} is not supported; it is optional (is_optional), so it is skipped`);
          return;
        }
        throw new Error(`unknown HTTP filter ${name} (at ${i} of the chain); Envoy refuses it too unless it is marked is_optional`);
      }
      if (factory.terminal === true && i !== chain.length - 1) {
        throw new Error(`filter ${name} is terminal and must be the last HTTP filter, but is at ${i} of ${chain.length}`);
      }
      let compiled: HttpFilterConfig;
      try {
        compiled = factory.compile(config, context);
      } catch (err) {
        throw new Error(`filter ${name}: ${(err as Error).message}`);
      }
      if (factory.terminal !== true) out.push(compiled);
    });
    return out;
  }

  /**
   * Compiles a route's per-filter overrides, and the route configs of filters that read the
   * route's `rate_limits`; filters without route configs are skipped. Null: nothing to compile.
   */
  compileRouteConfigs(configs: Readonly<Record<string, unknown>>, context: FilterCompileContext, route: RouteFilterInput = NO_ROUTE): Map<string, unknown> | null {
    let out: Map<string, unknown> | null = null;
    const rateLimits = route.rateLimits;
    const compile = (name: string, factory: HttpFilterFactory, config: unknown): void => {
      try {
        (out ??= new Map()).set(name, factory.compileRouteConfig!(config, context, route));
      } catch (err) {
        throw new Error(`filter ${name} (route config): ${(err as Error).message}`);
      }
    };
    for (const [name, config] of Object.entries(configs)) {
      const factory = this.#factories.get(name);
      if (factory?.compileRouteConfig !== undefined) compile(name, factory, config);
    }
    if (rateLimits.length > 0) {
      for (const [name, factory] of this.#factories) {
        if (factory.readsRouteRateLimits === true && !(name in configs)) compile(name, factory, undefined);
      }
    }
    return out;
  }
}
