import type { HTTPFaultJson } from '../envoy/gen/envoy/extensions/filters/http/fault/v3/fault_pb.ts';
import type { FractionalPercentJson } from '../envoy/gen/envoy/type/v3/percent_pb.ts';
import { msToDurationJson, percentToFractional } from '../model/envoy-values.ts';
import { grpcStatusCode } from '../model/grpc-status.ts';

export const FAULT_FILTER = 'envoy.filters.http.fault';

interface IstioPercent {
  value?: number;
}

export interface IstioFault {
  delay?: { fixedDelay?: string; percentage?: IstioPercent; percent?: number };
  abort?: { httpStatus?: number; grpcStatus?: string; http2Error?: string; percentage?: IstioPercent };
}

/** istiod's translateIntegerToFractionalPercent (the deprecated integer `percent`), in canonical JSON (zero fields left out). */
function legacyPercent(percent: number | undefined): FractionalPercentJson {
  return percent === undefined || percent === 0 ? {} : { numerator: percent };
}

function fractional(p: IstioPercent): FractionalPercentJson {
  const out = percentToFractional(p.value ?? 0);
  return out.numerator === 0 ? { denominator: 'MILLION' } : out;
}

/**
 * Istio's HTTPFaultInjection as Envoy's HTTPFault, as istiod's route.TranslateFault builds it
 * (the route's typed_per_filter_config): a percentage over a MILLION, or the deprecated
 * integer `percent` over a HUNDRED; no percentage at all means no request is faulted (Istio's
 * documented default, and Envoy's for an unset FractionalPercent). Null when nothing is left
 * (istiod drops exponential delays and HTTP/2 error aborts).
 */
export function faultConfig(f: IstioFault, durationMs: (v: string | undefined, fallback: number) => number): HTTPFaultJson | null {
  const out: HTTPFaultJson = {};
  if (f.delay !== undefined && f.delay.fixedDelay !== undefined) {
    out.delay = {
      fixedDelay: msToDurationJson(durationMs(f.delay.fixedDelay, 0)),
      percentage: f.delay.percentage !== undefined ? fractional(f.delay.percentage) : legacyPercent(f.delay.percent),
    };
  }
  const a = f.abort;
  if (a !== undefined && (a.httpStatus !== undefined || a.grpcStatus !== undefined)) {
    out.abort = a.httpStatus !== undefined ? { httpStatus: a.httpStatus } : { grpcStatus: grpcCode(a.grpcStatus!) };
    if (a.percentage !== undefined) out.abort.percentage = fractional(a.percentage);
  }
  return out.delay === undefined && out.abort === undefined ? null : out;
}

function grpcCode(name: string): number {
  return grpcStatusCode(name) ?? (Number(name) || 2);
}
