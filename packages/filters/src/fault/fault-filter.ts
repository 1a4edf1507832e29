/**
 * `envoy.filters.http.fault` per request, for Istio's VirtualService `fault`: the matched
 * route's config (else the listener's) may delay the request (response flag DI)
 * and then abort it (FI) with an HTTP status or, for gRPC, a gRPC status. Each percentage is
 * a fresh draw per request. A delayed request holds one timer, released when the client goes.
 */
import { FilterName, FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type HttpFilterConfig } from '../filter.ts';
import { draw } from '../local-ratelimit/local-ratelimit-filter.ts';

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

export class FaultFilter implements HttpFilter {
  readonly #defaultFault: CompiledFault | null;
  #timer: NodeJS.Timeout | null = null;
  #fault: CompiledFault | null = null;
  #callbacks: FilterCallbacks | null = null;

  constructor(defaultFault: CompiledFault | null) {
    this.#defaultFault = defaultFault;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    // A route's HTTPFault replaces the listener's (Envoy's per-route config).
    const fault = (req.routeFilterConfig(FilterName.Fault) as CompiledFault | null) ?? this.#defaultFault;
    if (fault === null) return FilterStatus.Continue;
    if (fault.delayMs > 0 && draw(fault.delayPercent)) {
      callbacks.setResponseFlag('DI');
      this.#fault = fault;
      this.#callbacks = callbacks;
      this.#timer = setTimeout(delayDone, fault.delayMs, this);
      return FilterStatus.StopIteration;
    }
    return abortIfDrawn(fault, callbacks) ? FilterStatus.StopIteration : FilterStatus.Continue;
  }

  /** The delay ran out: abort now if drawn, else let the request go on. */
  resume(): void {
    this.#timer = null;
    const callbacks = this.#callbacks!;
    if (callbacks.aborted) return;
    if (!abortIfDrawn(this.#fault!, callbacks)) callbacks.continueRequest();
  }

  onDestroy(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#callbacks = null;
  }

  /** True while a delay timer is pending. */
  get delaying(): boolean {
    return this.#timer !== null;
  }
}

function delayDone(filter: FaultFilter): void {
  filter.resume();
}

function abortIfDrawn(fault: CompiledFault, callbacks: FilterCallbacks): boolean {
  if (!fault.abort || !draw(fault.abortPercent)) return false;
  callbacks.sendLocalReply(fault.abortStatus, FAULT_ABORT_BODY, 'FI', FAULT_ABORT_DETAILS, fault.abortGrpcStatus);
  return true;
}

export class FaultFilterConfig implements HttpFilterConfig {
  readonly name: string;
  /** The listener's own fault (null: Istio's empty HTTPFault), for routes without one. */
  readonly fault: CompiledFault | null;

  constructor(name: string, fault: CompiledFault | null) {
    this.name = name;
    this.fault = fault;
  }

  /** One small instance per request: a delay needs its own timer. */
  create(): HttpFilter {
    return new FaultFilter(this.fault);
  }
}
