// Requests and callbacks for the local rate limit and fault filters' unit tests: a request
// with a route config and a gRPC switch, and callbacks that record everything.
import type { FilterCallbacks, FilterCompileContext, FilterRequest, FilterResponseFlag, RequestAuth } from '@remora/filters';

export class RouteRequest implements FilterRequest {
  readonly method = 'GET';
  readonly path = '/';
  readonly authority = 'svc.test';
  readonly scheme = 'http';
  readonly sourceIp: string;
  readonly remoteIp: string;
  readonly destinationIp = '127.0.0.1';
  readonly destinationPort = 8080;
  readonly sni = '';
  readonly peer = null;
  readonly isGrpc: boolean;
  readonly routeName = 'r';
  auth: RequestAuth | null = null;
  readonly #headers: Map<string, string>;
  readonly #routeConfigs: Map<string, unknown>;

  constructor(opts: { headers?: Record<string, string>; routeConfigs?: Map<string, unknown>; grpc?: boolean; remoteIp?: string } = {}) {
    this.#headers = new Map(Object.entries(opts.headers ?? {}));
    this.#routeConfigs = opts.routeConfigs ?? new Map();
    this.isGrpc = opts.grpc ?? false;
    this.sourceIp = this.remoteIp = opts.remoteIp ?? '10.0.0.1';
  }
  requestHeader(name: string): string | null {
    return this.#headers.get(name) ?? null;
  }
  setRequestHeader(name: string, value: string): void {
    this.#headers.set(name, value);
  }
  removeRequestHeader(name: string): void {
    this.#headers.delete(name);
  }
  queryParam(): string | null {
    return null;
  }
  cookie(): string | null {
    return null;
  }
  routeFilterConfig(name: string): unknown {
    return this.#routeConfigs.get(name) ?? null;
  }
}

export interface Reply {
  status: number;
  body: string | null;
  flag: FilterResponseFlag | null;
  details: string;
  grpcStatus: number | null;
}

export class RecordingCallbacks implements FilterCallbacks {
  reply: Reply | null = null;
  aborted = false;
  continued = 0;
  readonly headers: [string, string][] = [];
  readonly flags: FilterResponseFlag[] = [];
  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string, grpcStatus: number | null = null): void {
    this.reply = { status, body, flag, details, grpcStatus };
    this.aborted = true;
  }
  continueRequest(): void {
    this.continued++;
  }
  addResponseHeader(name: string, value: string): void {
    this.headers.push([name, value]);
  }
  setResponseFlag(flag: FilterResponseFlag): void {
    this.flags.push(flag);
  }
  header(name: string): string | undefined {
    return this.headers.find(([n]) => n === name)?.[1];
  }
}

/** A compile context whose persistent store can be shared by several compiles (hot reloads). */
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
