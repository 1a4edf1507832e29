/**
 * The HTTP filter contract, shaped like Envoy's decoder filters. A filter has three parts:
 * a factory registered once by name, a config compiled once per snapshot (all parsing,
 * key loading and regex compilation happen there), and a small per-request instance that is
 * cheap to create and never throws. Filters know nothing of listeners, sockets or sources.
 */

/** What a filter's `onRequest` returns: go on to the next filter, or stop here. */
export const FilterStatus = {
  /** Hand the request to the next filter (or the router). */
  Continue: 0,
  /**
   * Stop iterating: the filter has answered with a local reply, or will resume the chain
   * later through `FilterCallbacks.continueRequest()` (a JWKS fetch, a fault delay).
   */
  StopIteration: 1,
} as const;
export type FilterStatus = (typeof FilterStatus)[keyof typeof FilterStatus];

/** Envoy response flags a filter may set on its local reply. */
export type FilterResponseFlag = 'RL' | 'FI' | 'DI' | 'UAEX' | 'NR';

/** The request as filters see and change it. */
export interface FilterRequest {
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly scheme: string;
  /** The peer's address as the listener saw it. */
  readonly sourceIp: string;
  /** Lower-case name; repeated headers joined with `,`; null when absent. */
  requestHeader(name: string): string | null;
  setRequestHeader(name: string, value: string): void;
  removeRequestHeader(name: string): void;
}

/** How a filter acts on the request beyond its return value. */
export interface FilterCallbacks {
  /** Ends the request with a response from the proxy (Envoy's local reply). */
  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string): void;
  /** Resumes the chain after `StopIteration` (from a timer or a promise callback). */
  continueRequest(): void;
  /** True once the client has gone; a waiting filter should stop its work. */
  readonly aborted: boolean;
}

/** The per-request part. Created per request from the compiled config; must not throw. */
export interface HttpFilter {
  onRequest(request: FilterRequest, callbacks: FilterCallbacks): FilterStatus;
  /** The request ended (completed, replied locally, or aborted): release timers, cancel waits. */
  onDestroy?(): void;
}

/** The compiled config of one filter in one snapshot; immutable. */
export interface HttpFilterConfig {
  readonly name: string;
  /** A fresh per-request instance. */
  create(): HttpFilter;
}

/** Registered once by name; turns the translator's plain config into a compiled one. */
export interface HttpFilterFactory {
  readonly name: string;
  /** Throws a descriptive Error when the config cannot be used (compile time only). */
  compile(config: unknown): HttpFilterConfig;
}
