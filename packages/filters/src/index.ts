/**
 * `@remora/filters`: the contract between Remora and an HTTP filter written as its own npm
 * package. Everything exported here is documented and kept stable; nothing else is public.
 * Remora's built-in filters and the proxy's plumbing live in `@remora/filters/internal`, which
 * a filter package must not import; the fakes for a filter's unit tests are
 * `@remora/filters/testing`. The exact set of names is checked by test/public-api.test.ts.
 */

// Writing a filter: a name, a typed config parsed once per snapshot, a per-request instance.
export {
  defineFilter,
  FilterConfigError,
  type DefinedFilterFactory,
  type FilterDefinition,
  type FilterSetup,
  type FilterStatsScope,
} from './define-filter.ts';

// Placing a filter: its typed_config as a listener chain or an EnvoyFilter patch writes it.
export { typedConfig, configTypeUrl, TYPED_STRUCT } from './define-filter.ts';

// Bodies: Envoy's buffer filter for requests, and a bounded collector for responses.
export { readRequestBody, ResponseBodyBuffer, REQUEST_PAYLOAD_TOO_LARGE, RESPONSE_PAYLOAD_TOO_LARGE } from './define-filter.ts';

// The per-request contract: what a filter sees of the request and response, and how it acts.
export {
  FilterStatus,
  FilterName,
  type FilterResponseFlag,
  type PeerIdentity,
  type RequestAuth,
  type FilterRequest,
  type FilterCallbacks,
  type FilterResponse,
  type HttpFilter,
} from './filter.ts';

// Stats: a counter or gauge resolved once at setup, bumped per request.
export { Stat, type FilterStats } from './filter-stats.ts';

// The factory contract under defineFilter, for a filter that implements it directly.
export {
  type HttpFilterFactory,
  type HttpFilterConfig,
  type RouteFilterInput,
  type FilterCompileContext,
  type FilterLog,
  type FilterUpstream,
  type FilterUpstreamRequest,
  type FilterUpstreamResponse,
  type FilterUpstreamFailure,
} from './filter.ts';

// The registry a filter is added to when the proxy is embedded (`builtinFilters()` of
// `@remora/proxy` makes one; `register` adds a factory).
export type { FilterRegistry } from './registry.ts';
