import type { FilterCompileContext, HttpFilterConfig, HttpFilterFactory } from './filter.ts';

/** Filter factories by name; the runtime compiles each listener's chain through it. */
export class FilterRegistry {
  readonly #factories = new Map<string, HttpFilterFactory>();

  register(factory: HttpFilterFactory): this {
    if (this.#factories.has(factory.name)) throw new Error(`filter ${factory.name} is already registered`);
    this.#factories.set(factory.name, factory);
    return this;
  }

  has(name: string): boolean {
    return this.#factories.has(name);
  }

  /** Compiles a chain in order; an unknown name or a bad config throws, naming the filter. */
  compileChain(chain: readonly { readonly name: string; readonly config: unknown }[], context: FilterCompileContext): HttpFilterConfig[] {
    return chain.map(({ name, config }) => {
      const factory = this.#factories.get(name);
      if (factory === undefined) throw new Error(`unknown HTTP filter ${name}`);
      try {
        return factory.compile(config, context);
      } catch (err) {
        throw new Error(`filter ${name}: ${(err as Error).message}`);
      }
    });
  }

  /** Compiles a route's per-filter overrides; filters without route configs are skipped. */
  compileRouteConfigs(configs: Readonly<Record<string, unknown>>, context: FilterCompileContext): Map<string, unknown> | null {
    let out: Map<string, unknown> | null = null;
    for (const [name, config] of Object.entries(configs)) {
      const factory = this.#factories.get(name);
      if (factory?.compileRouteConfig === undefined) continue;
      try {
        (out ??= new Map()).set(name, factory.compileRouteConfig(config, context));
      } catch (err) {
        throw new Error(`filter ${name} (route config): ${(err as Error).message}`);
      }
    }
    return out;
  }
}
