/**
 * `envoy.filters.http.fault` per request, for Istio's VirtualService `fault`: the matched
 * route's config (else the listener's) may delay the request (response flag DI)
 * and then abort it (FI) with an HTTP status or, for gRPC, a gRPC status. Each percentage is
 * a fresh draw per request. A delayed request holds one timer, released when the client goes.
 * Timers and draws come from the config's `FilterTimers` and `RandomSource` (Node's and
 * `Math.random` in the proxy; a test's own in unit tests).
 */
import { FilterName, FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type HttpFilterConfig } from '../filter.ts';
import type { Stat } from '../filter-stats.ts';
import { draw } from '../fractional-percent.ts';
import { nodeTimers, type FilterTimers, type RandomSource, type TimerHandle } from '../timers.ts';

/** Envoy's abort reply body and details. */
export const FAULT_ABORT_BODY = 'fault filter abort';
export const FAULT_ABORT_DETAILS = 'fault_filter_abort';

/** A route's compiled fault: plain numbers, checked at compile time. */
export class CompiledFault {
  /** 0: no delay. */
  readonly delayMs: number;
  readonly delayPercent: number;
  readonly abort: boolean;
  /** HTTP status of the abort; 200 when only a gRPC status is set (Envoy's: the status then travels in grpc-status). */
  readonly abortStatus: number;
  readonly abortGrpcStatus: number | null;
  readonly abortPercent: number;

  constructor(delayMs: number, delayPercent: number, abort: boolean, abortStatus: number, abortGrpcStatus: number | null, abortPercent: number) {
    this.delayMs = delayMs;
    this.delayPercent = delayPercent;
    this.abort = abort;
    this.abortStatus = abortStatus;
    this.abortGrpcStatus = abortGrpcStatus;
    this.abortPercent = abortPercent;
  }
}

/**
 * Envoy's fault filter stats, `http.<stat_prefix>.fault.*`: requests delayed, requests
 * aborted, and the gauge of requests with a fault under way.
 */
export interface FaultStats {
  readonly delaysInjected: Stat;
  readonly abortsInjected: Stat;
  readonly activeFaults: Stat;
}

export class FaultFilter implements HttpFilter {
  readonly #defaultFault: CompiledFault | null;
  readonly #stats: FaultStats;
  readonly #timers: FilterTimers;
  readonly #random: RandomSource;
  #timer: TimerHandle | null = null;
  #fault: CompiledFault | null = null;
  #callbacks: FilterCallbacks | null = null;
  /** This request counts in `active_faults` until it ends. */
  #active = false;

  constructor(defaultFault: CompiledFault | null, stats: FaultStats, timers: FilterTimers, random: RandomSource) {
    this.#defaultFault = defaultFault;
    this.#stats = stats;
    this.#timers = timers;
    this.#random = random;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    // A route's HTTPFault replaces the listener's (Envoy's per-route config).
    const fault = (req.routeFilterConfig(FilterName.Fault) as CompiledFault | null) ?? this.#defaultFault;
    if (fault === null) return FilterStatus.Continue;
    if (fault.delayMs > 0 && draw(fault.delayPercent, this.#random)) {
      this.#activate();
      this.#stats.delaysInjected.value++;
      callbacks.setResponseFlag('DI');
      this.#fault = fault;
      this.#callbacks = callbacks;
      this.#timer = this.#timers.setTimeout(delayDone, fault.delayMs, this);
      return FilterStatus.StopIteration;
    }
    return this.#abortIfDrawn(fault, callbacks) ? FilterStatus.StopIteration : FilterStatus.Continue;
  }

  #activate(): void {
    if (this.#active) return;
    this.#active = true;
    this.#stats.activeFaults.value++;
  }

  #abortIfDrawn(fault: CompiledFault, callbacks: FilterCallbacks): boolean {
    if (!fault.abort || !draw(fault.abortPercent, this.#random)) return false;
    this.#activate();
    this.#stats.abortsInjected.value++;
    callbacks.sendLocalReply(fault.abortStatus, FAULT_ABORT_BODY, 'FI', FAULT_ABORT_DETAILS, fault.abortGrpcStatus);
    return true;
  }

  /** The delay ran out: abort now if drawn, else let the request go on. */
  resume(): void {
    this.#timer = null;
    const callbacks = this.#callbacks!;
    if (callbacks.aborted) return;
    if (!this.#abortIfDrawn(this.#fault!, callbacks)) callbacks.continueRequest();
  }

  onDestroy(): void {
    if (this.#timer !== null) {
      this.#timers.clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#callbacks = null;
    if (this.#active) {
      this.#active = false;
      this.#stats.activeFaults.value--;
    }
  }

  /** True while a delay timer is pending. */
  get delaying(): boolean {
    return this.#timer !== null;
  }
}

function delayDone(filter: FaultFilter): void {
  filter.resume();
}

export class FaultFilterConfig implements HttpFilterConfig {
  readonly name: string;
  /** The listener's own fault (null: Istio's empty HTTPFault), for routes without one. */
  readonly fault: CompiledFault | null;
  readonly stats: FaultStats;
  readonly #timers: FilterTimers;
  readonly #random: RandomSource;

  constructor(name: string, fault: CompiledFault | null, stats: FaultStats, timers: FilterTimers = nodeTimers, random: RandomSource = Math.random) {
    this.name = name;
    this.fault = fault;
    this.stats = stats;
    this.#timers = timers;
    this.#random = random;
  }

  /** One small instance per request: a delay needs its own timer. */
  create(): HttpFilter {
    return new FaultFilter(this.fault, this.stats, this.#timers, this.#random);
  }
}
