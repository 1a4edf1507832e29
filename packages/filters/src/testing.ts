/**
 * `@remora/filters/testing`: the proxy's side of the filter contract, for filters' unit
 * tests, without a proxy: a request view (every field settable, headers by lower-case name,
 * query parameters and cookies read from the path and the Cookie header, per-route configs),
 * a response view, callbacks that record everything a filter did, a compile context whose
 * persistent store can outlive one compile, stats kept by name, `streamBody` to pass a
 * body through a filter's data hook chunk by chunk, and timers and random draws a test
 * controls (`ManualTimers`, `randomSequence`).
 */
import { Stat } from './filter-stats.ts';
import type { FilterStats } from './filter-stats.ts';
import type { FilterCallbacks, FilterCompileContext, FilterRequest, FilterResponse, FilterResponseFlag, PeerIdentity, RequestAuth } from './filter.ts';
import type { FilterTimers, RandomSource, TimerHandle } from './timers.ts';

export interface ReqInit {
  method?: string;
  /** With the query string. */
  path?: string;
  authority?: string;
  scheme?: string;
  sourceIp?: string;
  /** Defaults to `sourceIp`. */
  remoteIp?: string;
  destinationIp?: string;
  destinationPort?: number;
  sni?: string;
  peer?: PeerIdentity | null;
  auth?: RequestAuth | null;
  headers?: Record<string, string>;
  /** Per-route filter configs by filter name. */
  routeConfigs?: ReadonlyMap<string, unknown>;
  routeName?: string | null;
  grpc?: boolean;
}

export class FakeRequest implements FilterRequest {
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly scheme: string;
  readonly protocol: string;
  readonly sourceIp: string;
  readonly remoteIp: string;
  readonly destinationIp: string;
  readonly destinationPort: number;
  readonly sni: string;
  readonly peer: PeerIdentity | null;
  readonly isGrpc: boolean;
  readonly routeName: string | null;
  auth: RequestAuth | null;
  readonly headers: Map<string, string>;
  readonly #query: URLSearchParams;
  readonly #routeConfigs: ReadonlyMap<string, unknown>;
  /** Dynamic metadata set by filters, by `<filter> <key>`. */
  readonly metadata = new Map<string, string>();

  constructor(init: ReqInit = {}) {
    this.method = init.method ?? 'GET';
    this.path = init.path ?? '/';
    this.authority = init.authority ?? 'example.com';
    this.scheme = init.scheme ?? 'http';
    this.protocol = 'HTTP/1.1';
    this.sourceIp = init.sourceIp ?? '127.0.0.1';
    this.remoteIp = init.remoteIp ?? this.sourceIp;
    this.destinationIp = init.destinationIp ?? '127.0.0.1';
    this.destinationPort = init.destinationPort ?? 8080;
    this.sni = init.sni ?? '';
    this.peer = init.peer ?? null;
    this.auth = init.auth ?? null;
    this.isGrpc = init.grpc ?? false;
    this.routeName = init.routeName ?? null;
    this.headers = new Map(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    const q = this.path.indexOf('?');
    this.#query = new URLSearchParams(q < 0 ? '' : this.path.slice(q + 1));
    this.#routeConfigs = init.routeConfigs ?? new Map();
  }

  requestHeader(name: string): string | null {
    return this.headers.get(name) ?? null;
  }
  setRequestHeader(name: string, value: string): void {
    this.headers.set(name.toLowerCase(), value);
  }
  removeRequestHeader(name: string): void {
    this.headers.delete(name.toLowerCase());
  }
  queryParam(name: string): string | null {
    return this.#query.get(name);
  }
  cookie(name: string): string | null {
    for (const part of (this.headers.get('cookie') ?? '').split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
    return null;
  }
  routeFilterConfig(name: string): unknown {
    return this.#routeConfigs.get(name) ?? null;
  }
  requestHeaderList(): readonly string[] {
    return [...this.headers].flat();
  }
  dynamicMetadata(filter: string, key: string): string | null {
    return this.metadata.get(`${filter} ${key}`) ?? null;
  }
  setDynamicMetadata(filter: string, key: string, value: string): void {
    this.metadata.set(`${filter} ${key}`, value);
  }
}

/** A local reply a filter sent. */
export interface LocalReply {
  status: number;
  body: string | null;
  flag: FilterResponseFlag | null;
  details: string;
  grpcStatus: number | null;
}

export class RecordingCallbacks implements FilterCallbacks {
  reply: LocalReply | null = null;
  /** True once the request is over (a local reply was sent), or set by a test: the client left. */
  aborted = false;
  continued = 0;
  /** Times the filter asked for the route to be chosen again. */
  routeCacheCleared = 0;
  /** Response headers the filter added, in order. */
  readonly headers: [string, string][] = [];
  readonly flags: FilterResponseFlag[] = [];
  #settle: (() => void) | null = null;
  /** Resolves once the filter replied or continued. */
  readonly settled = new Promise<void>((resolve) => (this.#settle = resolve));

  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string, grpcStatus: number | null = null): void {
    if (this.reply !== null) throw new Error('a second local reply');
    this.reply = { status, body, flag, details, grpcStatus };
    this.aborted = true;
    this.#settle!();
  }
  continueRequest(): void {
    this.continued++;
    this.#settle!();
  }
  addResponseHeader(name: string, value: string): void {
    this.headers.push([name, value]);
  }
  /** Response headers the filter set (replacing), in order; a later set of a name replaces the earlier. */
  readonly setHeaders = new Map<string, string>();
  setResponseHeader(name: string, value: string): void {
    this.setHeaders.set(name, value);
  }
  setResponseFlag(flag: FilterResponseFlag): void {
    this.flags.push(flag);
  }
  clearRouteCache(): void {
    this.routeCacheCleared++;
  }
  header(name: string): string | undefined {
    return this.headers.find(([n]) => n === name)?.[1];
  }
  /**
   * The request body `bufferRequestBody` reads (set by a test; null: the request has none).
   * Delivered on a later tick, as the proxy does once the client has sent it.
   */
  requestBody: Buffer | null = null;
  bufferRequestBody(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void {
    const body = this.requestBody ?? Buffer.alloc(0);
    setImmediate(() => done(body.length <= maxBytes ? body : body.subarray(0, maxBytes), body.length <= maxBytes));
  }
}

export interface ResponseInit {
  status?: number;
  headers?: Record<string, string>;
  /** The proxy made it (a local reply). */
  local?: boolean;
}

/** A response head as `onResponse` sees it; `headers` holds what the filters left, by lower-case name. */
export class FakeResponse implements FilterResponse {
  status: number;
  readonly local: boolean;
  readonly headers: [string, string][];

  constructor(init: ResponseInit = {}) {
    this.status = init.status ?? 200;
    this.local = init.local ?? false;
    this.headers = Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
  }
  setStatus(status: number): void {
    this.status = status;
  }
  header(name: string): string | null {
    const values = this.headers.filter(([n]) => n === name).map(([, v]) => v);
    return values.length === 0 ? null : values.join(',');
  }
  headerList(): readonly string[] {
    return this.headers.flat();
  }
  setHeader(name: string, value: string): void {
    this.removeHeader(name);
    this.headers.push([name.toLowerCase(), value]);
  }
  addHeader(name: string, value: string): void {
    this.headers.push([name.toLowerCase(), value]);
  }
  removeHeader(name: string): void {
    const lower = name.toLowerCase();
    for (let i = this.headers.length - 1; i >= 0; i--) if (this.headers[i]![0] === lower) this.headers.splice(i, 1);
  }
}

/**
 * Passes a body through a data hook (`onRequestData` or `onResponseData`) as the proxy does:
 * each chunk in order, `end` on the last (an empty last call when `chunks` is empty), and
 * returns what the hook let through, joined. Stops early once the callbacks saw a local reply.
 */
export function streamBody(hook: (chunk: Buffer, end: boolean, callbacks: FilterCallbacks) => Buffer, chunks: readonly (Buffer | string)[], callbacks: FilterCallbacks): Buffer {
  const out: Buffer[] = [];
  const list = chunks.length === 0 ? [Buffer.alloc(0)] : chunks.map((c) => (typeof c === 'string' ? Buffer.from(c) : c));
  for (let i = 0; i < list.length && !callbacks.aborted; i++) out.push(hook(list[i]!, i === list.length - 1, callbacks));
  return Buffer.concat(out);
}

/** A compile context that keeps its warnings; pass a store to share it across compiles (hot reloads). */
export function storeContext(store = new Map<string, unknown>()): FilterCompileContext & { warnings: string[]; store: Map<string, unknown> } {
  const warnings: string[] = [];
  return {
    warnings,
    store,
    persistent<T>(key: string, create: () => T): T {
      if (!store.has(key)) store.set(key, create());
      return store.get(key) as T;
    },
    warn: (m: string) => void warnings.push(m),
  };
}

/** Stats kept by name as the runtime keeps them (the same object for a name, across compiles); `value(name)` reads one. */
export function namedStats(): FilterStats & { value(name: string): number | undefined; names(): string[] } {
  const byName = new Map<string, Stat>();
  const get = (name: string): Stat => {
    let s = byName.get(name);
    if (s === undefined) byName.set(name, (s = new Stat()));
    return s;
  };
  return {
    http: (name) => get(`http.hcm.${name}`),
    root: (name) => get(name),
    value: (name) => byName.get(name)?.value,
    names: () => [...byName.keys()],
  };
}

interface ManualTimer {
  readonly id: number;
  readonly at: number;
  readonly fire: () => void;
}

/**
 * Timers on a clock of the test's own: nothing fires until `advance(ms)` moves the clock,
 * and then each timer due fires in order of its time (then of arming), with `now` at its
 * time. Pass to a filter factory that takes `FilterTimers` to run delays without waiting.
 */
export class ManualTimers implements FilterTimers {
  /** Milliseconds since the timers were made. */
  now = 0;
  #next = 1;
  readonly #armed = new Map<number, ManualTimer>();

  setTimeout<A>(fn: (arg: A) => void, ms: number, arg: A): TimerHandle {
    const id = this.#next++;
    this.#armed.set(id, { id, at: this.now + Math.max(0, ms), fire: () => fn(arg) });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    if (typeof handle === 'number') this.#armed.delete(handle);
  }

  /** Timers armed and not yet fired or cleared. */
  get pending(): number {
    return this.#armed.size;
  }

  /** When each pending timer is due, in ms from now, soonest first. */
  dueIn(): number[] {
    return [...this.#armed.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Moves the clock `ms` on, firing every timer due by then (including ones armed while firing). */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      let soonest: ManualTimer | null = null;
      for (const t of this.#armed.values()) if (t.at <= until && (soonest === null || t.at < soonest.at || (t.at === soonest.at && t.id < soonest.id))) soonest = t;
      if (soonest === null) break;
      this.#armed.delete(soonest.id);
      this.now = soonest.at;
      soonest.fire();
    }
    this.now = until;
  }
}

/** A `RandomSource` that returns `values` in turn, over and over (each in [0, 1)). */
export function randomSequence(values: readonly number[]): RandomSource {
  if (values.length === 0 || values.some((v) => !(v >= 0 && v < 1))) throw new Error('randomSequence: values must be in [0, 1)');
  let i = 0;
  return () => values[i++ % values.length]!;
}
