/**
 * Writing a filter: `defineFilter` turns a name, a typed config parser and a per-request
 * instance maker into a factory the proxy registers (from `--filter <module>`, or a
 * `FilterRegistry` in code). The config is parsed and checked once per snapshot; a request
 * only runs the instance.
 */
import { Stat, type FilterStats } from './filter-stats.ts';
import { FilterStatus, type FilterCallbacks, type FilterCompileContext, type HttpFilter, type HttpFilterConfig, type HttpFilterFactory } from './filter.ts';

/** The `@type` an extension filter's typed_config has: Envoy's TypedStruct. */
export const TYPED_STRUCT = 'type.googleapis.com/xds.type.v3.TypedStruct';

/** The `type_url` inside that TypedStruct that names filter `name`'s config. */
export function configTypeUrl(name: string): string {
  return `type.googleapis.com/remora.${name}`;
}

/**
 * A filter's typed_config as Envoy JSON (a listener's `http_filters` entry, an EnvoyFilter's
 * `patch.value.typed_config`): a TypedStruct whose `type_url` is
 * `type.googleapis.com/remora.<name>` and whose `value` is the config object.
 */
export function typedConfig(name: string, value: Readonly<Record<string, unknown>>): { '@type': string; type_url: string; value: Readonly<Record<string, unknown>> } {
  return { '@type': TYPED_STRUCT, type_url: configTypeUrl(name), value };
}

/** A config a filter cannot use: `field` is the path in its config (`cookie.name`), '' for the whole. */
export class FilterConfigError extends Error {
  /** The path of the field in the config (`cookie.name`); '' for the whole config. */
  readonly field: string;
  constructor(field: string, message: string) {
    super(field === '' ? message : `${field}: ${message}`);
    this.name = 'FilterConfigError';
    this.field = field;
  }
}

/**
 * The filter's own stats, under `http.<stat_prefix>.<filter stat prefix>.`: resolve each
 * counter or gauge once, at setup, and bump its `value` per request. Shown on `/stats` and
 * `/stats/prometheus`; kept across snapshots by name.
 */
export interface FilterStatsScope {
  counter(name: string): Stat;
  gauge(name: string): Stat;
}

/** What setup (once per snapshot, for one chain) offers a filter. */
export interface FilterSetup {
  /** The filter's stats scope. */
  readonly stats: FilterStatsScope;
  /** Where the chain is: the listener's name. */
  readonly scope: string;
  /** The value stored under `key` by an earlier snapshot, or `create()`'s (then stored): state that must outlive a reload. */
  persistent<T>(key: string, create: () => T): T;
  warn(message: string): void;
}

/** What `defineFilter` takes: a filter's name, its config parser and its per-request instance maker; `C` is the parsed config. */
export interface FilterDefinition<C> {
  /** The filter's name, as a listener's `http_filters[].name` and EnvoyFilter patches write it (`acme.canary`). */
  readonly name: string;
  /** The stats namespace under `http.<stat_prefix>.`; default: the name's last dot-separated part. */
  readonly statPrefix?: string;
  /**
   * The config from the typed_config's `value` (JSON), or an object written in TypeScript:
   * check every field and return the compiled form. Throw a `FilterConfigError` naming the
   * field for a config that cannot be used; the proxy refuses the config with the filter's
   * name and the field, and the last good config keeps serving.
   */
  parseConfig(json: unknown, setup: FilterSetup): C;
  /**
   * Once per snapshot: returns the per-request instance maker. A filter without per-request
   * state returns one shared instance (`() => instance`); one with state a fresh one.
   */
  createFilter(config: C, setup: FilterSetup): () => HttpFilter;
}

/** A factory made by `defineFilter`; `parse` checks a config the way the proxy will. */
export interface DefinedFilterFactory<C> extends HttpFilterFactory {
  readonly definition: FilterDefinition<C>;
}

/** The factory for a filter definition; register it (or export it from a `--filter` module). */
export function defineFilter<C>(definition: FilterDefinition<C>): DefinedFilterFactory<C> {
  const name = definition.name;
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`filter name ${JSON.stringify(name)} must be letters, digits, '.', '_' and '-'`);
  const statPrefix = definition.statPrefix ?? name.slice(name.lastIndexOf('.') + 1);
  return {
    name,
    definition,
    compile(json: unknown, context: FilterCompileContext): HttpFilterConfig {
      const setup = setupOf(context, statPrefix);
      const config = definition.parseConfig(json ?? {}, setup);
      const create = definition.createFilter(config, setup);
      return { name, create };
    },
  };
}

function setupOf(context: FilterCompileContext, statPrefix: string): FilterSetup {
  const stats: FilterStats | undefined = context.stats;
  return {
    stats: {
      counter: (n) => (stats === undefined ? new Stat() : stats.http(`${statPrefix}.${n}`)),
      gauge: (n) => (stats === undefined ? new Stat() : stats.http(`${statPrefix}.${n}`, true)),
    },
    scope: context.scope ?? '',
    persistent: (key, create) => context.persistent(`${statPrefix}/${key}`, create),
    warn: (m) => context.warn(m),
  };
}

/** Envoy's answer to a request body larger than a buffering filter's limit. */
export const REQUEST_PAYLOAD_TOO_LARGE = { status: 413, body: 'Payload Too Large', details: 'request_payload_too_large' } as const;
/** Envoy's answer when a response body outgrows a buffering filter's limit (before its head went out). */
export const RESPONSE_PAYLOAD_TOO_LARGE = { status: 500, body: 'Internal Server Error', details: 'response_payload_too_large' } as const;

/**
 * Reads the whole request body for a filter's `onRequest` (Envoy's buffer filter): `done`
 * gets it, then the chain goes on (unless `done` replied); a body larger than `maxBytes` is
 * answered with 413 `request_payload_too_large`. Return its result from `onRequest`. The body
 * still goes upstream as sent.
 */
export function readRequestBody(callbacks: FilterCallbacks, maxBytes: number, done: (body: Buffer) => void): FilterStatus {
  const read = callbacks.bufferRequestBody;
  if (read === undefined) return FilterStatus.Continue;
  read.call(callbacks, maxBytes, (body, complete) => {
    if (callbacks.aborted) return;
    if (!complete) {
      const r = REQUEST_PAYLOAD_TOO_LARGE;
      callbacks.sendLocalReply(r.status, r.body, null, r.details);
      return;
    }
    done(body);
    callbacks.continueRequest();
  });
  return FilterStatus.StopIteration;
}

const EMPTY = Buffer.alloc(0);

/**
 * Collects a response body for a filter's `onResponseData` (return `FilterStatus.StopIteration`
 * from `onResponse` so the head waits for it): chunks are held until the end, then `done`
 * gets the whole body and returns what the client gets. A body larger than `maxBytes` is
 * answered with 500 `response_payload_too_large`, as Envoy does. One per request.
 */
export class ResponseBodyBuffer {
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #failed = false;

  /** `maxBytes`: the largest body it holds; past it, the 500 reply. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Call from `onResponseData` with its arguments and return the result: empty until `end`,
   * then what `done` makes of the whole body.
   */
  push(chunk: Buffer, end: boolean, callbacks: FilterCallbacks, done: (body: Buffer) => Buffer): Buffer {
    if (this.#failed) return EMPTY;
    this.#size += chunk.length;
    if (this.#size > this.#maxBytes) {
      this.#failed = true;
      this.#chunks = [];
      const r = RESPONSE_PAYLOAD_TOO_LARGE;
      callbacks.sendLocalReply(r.status, r.body, null, r.details);
      return EMPTY;
    }
    if (chunk.length > 0) this.#chunks.push(chunk);
    if (!end) return EMPTY;
    const body = Buffer.concat(this.#chunks, this.#size);
    this.#chunks = [];
    return done(body);
  }
}
