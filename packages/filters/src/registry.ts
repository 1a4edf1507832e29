import type { HttpFilterConfig, HttpFilterFactory } from './filter.ts';

/** Filter factories by name; the runtime compiles each listener's chain through it. */
export class FilterRegistry {
  readonly #factories = new Map<string, HttpFilterFactory>();

  register(factory: HttpFilterFactory): void {
    if (this.#factories.has(factory.name)) throw new Error(`filter ${factory.name} is already registered`);
    this.#factories.set(factory.name, factory);
  }

  has(name: string): boolean {
    return this.#factories.has(name);
  }

  /** Compiles a chain in order; an unknown name or a bad config throws, naming the filter. */
  compileChain(chain: readonly { readonly name: string; readonly config: unknown }[]): HttpFilterConfig[] {
    return chain.map(({ name, config }) => {
      const factory = this.#factories.get(name);
      if (factory === undefined) throw new Error(`unknown HTTP filter ${name}`);
      try {
        return factory.compile(config);
      } catch (err) {
        throw new Error(`filter ${name}: ${(err as Error).message}`);
      }
    });
  }
}
