/**
 * `envoy.filters.http.router` (envoy.extensions.filters.http.router.v3.Router): the terminal
 * filter of every HTTP chain. Remora's router is not a filter step (a request is routed once
 * the chain lets it through), so compiling only checks the config and that it is last; the
 * registry leaves it out of the steps a request runs.
 */
import type { RouterJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/router/v3/router_pb.js';
import { FilterName, FilterStatus, SharedFilterConfig, type FilterCompileContext, type HttpFilter, type HttpFilterFactory } from '../filter.ts';

/** Fields of Router that change what Remora would do and that it does not implement. */
const UNSUPPORTED: readonly (keyof RouterJson)[] = ['upstreamHttpFilters', 'strictCheckHeaders', 'respectExpectedRqTimeout'];

/** Never run (the registry drops terminal filters from the steps); passes the request on should it be. */
const PASS: HttpFilter = { onRequest: () => FilterStatus.Continue };

export class RouterFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Router;
  /** Envoy's terminal filter: must be the last of the chain. */
  readonly terminal = true;

  compile(config: unknown, context: FilterCompileContext): SharedFilterConfig<HttpFilter> {
    if (config !== null && config !== undefined && (typeof config !== 'object' || Array.isArray(config))) throw new Error('config must be a Router object');
    const c = (config ?? {}) as RouterJson;
    for (const f of UNSUPPORTED) {
      const v = c[f];
      if (v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0)) throw new Error(`${f} is not supported`);
    }
    // Istio leaves start_child_span off: the request's one span (client on outbound, server on
    // inbound) carries the upstream's tags. Per-attempt child spans are not made; say so.
    if (c.startChildSpan === true) context.warn('router: startChildSpan is not honoured; a request has one span, retries included (Istio\'s default)');
    if (c.suppressEnvoyHeaders === true) context.warn('router: suppressEnvoyHeaders is not honoured; x-envoy-* headers are still added');
    return new SharedFilterConfig(this.name, PASS);
  }
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.router`. */
export const routerFactory = new RouterFilterFactory();
