/**
 * `envoy.filters.http.fault` (envoy.extensions.filters.http.fault.v3.HTTPFault). Istio puts
 * the whole fault in the routes' typed_per_filter_config (a VirtualService `fault` is per
 * HTTP route) and an empty HTTPFault in the chain; a fault in the listener's config applies
 * to routes that bring none of their own, as in Envoy.
 */
import { durationJsonMs, fractionalPercent, timerMs } from '@remora/config';
import type { HTTPFaultJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/fault/v3/fault_pb.js';
import { DETACHED_STATS, type FilterStats } from '../filter-stats.ts';
import { FilterName, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { nodeTimers, type FilterTimers, type RandomSource } from '../timers.ts';
import { CompiledFault, FaultFilterConfig, type FaultStats } from './fault-filter.ts';

export class FaultFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Fault;
  readonly #timers: FilterTimers;
  readonly #random: RandomSource;

  /** `timers` and `random`: Node's and `Math.random` unless a test gives its own. */
  constructor(options: { readonly timers?: FilterTimers; readonly random?: RandomSource } = {}) {
    this.#timers = options.timers ?? nodeTimers;
    this.#random = options.random ?? Math.random;
  }

  compile(config: unknown, context: FilterCompileContext): FaultFilterConfig {
    const fault = config === null || config === undefined ? null : compileFault(config, context);
    return new FaultFilterConfig(this.name, fault, faultStats(context.stats ?? DETACHED_STATS), this.#timers, this.#random);
  }

  /** A route's HTTPFault; an empty one still replaces the listener's (it faults nothing). */
  compileRouteConfig(config: unknown, context: FilterCompileContext): CompiledFault {
    return compileFault(config, context) ?? NO_FAULT;
  }
}

/** Envoy's names; a route's fault counts in the stats of the chain's filter, as in Envoy. */
function faultStats(stats: FilterStats): FaultStats {
  return {
    delaysInjected: stats.http('fault.delays_injected'),
    abortsInjected: stats.http('fault.aborts_injected'),
    activeFaults: stats.http('fault.active_faults', true),
  };
}

const NO_FAULT = new CompiledFault(0, 0, false, 200, null, 0);

/** The fields Remora does not implement; a config using one is refused rather than half applied. */
const UNSUPPORTED: readonly (keyof HTTPFaultJson)[] = ['upstreamCluster', 'headers', 'downstreamNodes', 'responseRateLimit'];

/** An HTTPFault as plain numbers; null when it faults nothing (Envoy's empty HTTPFault). */
function compileFault(config: unknown, context: FilterCompileContext): CompiledFault | null {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error('config must be an HTTPFault object');
  const c = config as HTTPFaultJson;
  for (const f of UNSUPPORTED) {
    const v = c[f];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0) && v !== '') throw new Error(`${f} is not supported`);
  }
  if (c.maxActiveFaults !== undefined) context.warn(`fault filter: maxActiveFaults (${String(c.maxActiveFaults)}) is not enforced`);
  let delayMs = 0;
  let delayPercent = 0;
  if (c.delay !== undefined && c.delay !== null) {
    if (c.delay.headerDelay !== undefined) throw new Error('delay.headerDelay (header-controlled delays) is not supported');
    if (c.delay.fixedDelay === undefined) throw new Error('delay.fixedDelay is required');
    // A delay arms a timer: one longer than Node's timers hold (about 24.8 days) would fire at once.
    delayMs = timerMs(durationJsonMs(c.delay.fixedDelay, 'delay.fixedDelay'));
    delayPercent = fractionalPercent(c.delay.percentage, 'delay.percentage');
  }
  let abort = false;
  let abortStatus = 200;
  let abortGrpcStatus: number | null = null;
  let abortPercent = 0;
  if (c.abort !== undefined && c.abort !== null) {
    const { httpStatus, grpcStatus } = c.abort;
    if (c.abort.headerAbort !== undefined) throw new Error('abort.headerAbort (header-controlled aborts) is not supported');
    if (httpStatus !== undefined) {
      // Envoy's validation: [200, 600).
      if (!Number.isInteger(httpStatus) || httpStatus < 200 || httpStatus > 599) throw new Error(`abort.httpStatus must be an HTTP status (200-599), got ${String(httpStatus)}`);
      abortStatus = httpStatus;
    } else if (grpcStatus !== undefined) {
      if (!Number.isInteger(grpcStatus) || grpcStatus < 0) throw new Error(`abort.grpcStatus must be a gRPC status code, got ${String(grpcStatus)}`);
      abortGrpcStatus = grpcStatus;
    } else {
      throw new Error('abort needs httpStatus or grpcStatus');
    }
    abort = true;
    abortPercent = fractionalPercent(c.abort.percentage, 'abort.percentage');
  }
  if (delayMs === 0 && !abort) return null;
  return new CompiledFault(delayMs, delayPercent, abort, abortStatus, abortGrpcStatus, abortPercent);
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.fault`. */
export const faultFactory = new FaultFilterFactory();
