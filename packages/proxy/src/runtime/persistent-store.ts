import type { FilterCompileContext } from '@remora/filters';
import type { Logger, Loggers } from '../logger.ts';

/**
 * State filters keep across config swaps (rate-limit buckets, JWKS caches), by key. Each
 * compile marks the keys it uses; when its snapshot goes live, keys no snapshot uses any
 * more are dropped, so a removed policy does not leave its state behind.
 */
export class PersistentStore {
  readonly #values = new Map<string, unknown>();
  #used = new Set<string>();

  /**
   * A compile context for one snapshot; call `commit` when that snapshot goes live. `log`
   * takes the compile's warnings; `loggers` are the components filters log to per request.
   */
  begin(log: Logger, loggers?: Loggers): FilterCompileContext {
    const used = new Set<string>();
    this.#used = used;
    const values = this.#values;
    return {
      persistent<T>(key: string, create: () => T): T {
        used.add(key);
        if (values.has(key)) return values.get(key) as T;
        const v = create();
        values.set(key, v);
        return v;
      },
      warn: (message: string) => log.warn(message),
      ...(loggers === undefined ? {} : { logger: (component: string) => loggers.byName(component) ?? null }),
    };
  }

  /** The last compile's snapshot is live: forget what it did not use. */
  commit(): void {
    for (const [key, value] of [...this.#values]) {
      if (this.#used.has(key)) continue;
      this.#values.delete(key);
      // State held elsewhere (a bucket in memory shared with other workers) is let go.
      if (typeof (value as Partial<Disposable> | null)?.[Symbol.dispose] === 'function') (value as Disposable)[Symbol.dispose]();
    }
  }

  get size(): number {
    return this.#values.size;
  }
}
