import type { FaultConfig } from '../model/filters.ts';

export const FAULT_FILTER = 'envoy.filters.http.fault';

/** gRPC status names Istio accepts in `abort.grpcStatus`, with their codes. */
const GRPC_CODES: Record<string, number> = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

interface IstioPercent {
  value?: number;
}

export interface IstioFault {
  delay?: { fixedDelay?: string; percentage?: IstioPercent; percent?: number };
  abort?: { httpStatus?: number; grpcStatus?: string; http2Error?: string; percentage?: IstioPercent };
}

/**
 * Istio's HTTPFaultInjection as the fault filter's config. A percentage left out means
 * every request (Istio translates a missing percentage to 100%).
 */
export function faultConfig(f: IstioFault, durationMs: (v: string | undefined, fallback: number) => number): FaultConfig {
  const pct = (p: IstioPercent | undefined, legacy?: number): number => p?.value ?? legacy ?? 100;
  return {
    delay: f.delay ? { fixedDelayMs: durationMs(f.delay.fixedDelay, 0), percent: pct(f.delay.percentage, f.delay.percent) } : null,
    abort: f.abort
      ? {
          httpStatus: f.abort.httpStatus ?? null,
          grpcStatus: f.abort.grpcStatus !== undefined ? (GRPC_CODES[f.abort.grpcStatus.toUpperCase()] ?? (Number(f.abort.grpcStatus) || 2)) : null,
          percent: pct(f.abort.percentage),
        }
      : null,
  };
}
