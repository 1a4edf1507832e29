/**
 * `envoy.filters.http.fault`: Istio puts the whole fault in the routes' configs (a
 * VirtualService `fault` is per HTTP route); the listener's filter only runs them.
 */
import type { FaultConfig } from '@remora/config';
import { FilterName, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { CompiledFault, FaultFilterConfig } from './fault-filter.ts';

export class FaultFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Fault;

  compile(config: unknown, _context: FilterCompileContext): FaultFilterConfig {
    if (config !== null && config !== undefined && typeof config !== 'object') throw new Error('config must be an object');
    return new FaultFilterConfig(this.name);
  }

  compileRouteConfig(config: unknown, _context: FilterCompileContext): CompiledFault {
    return new CompiledFault(checkFault(config));
  }
}

function percent(v: unknown, where: string): void {
  if (typeof v !== 'number' || !(v >= 0 && v <= 100)) throw new Error(`${where} must be a percentage (0-100), got ${String(v)}`);
}

function checkFault(config: unknown): FaultConfig {
  const c = config as Partial<FaultConfig> | null;
  if (c === null || typeof c !== 'object') throw new Error('config must be an object');
  const { delay, abort } = c;
  if (delay !== null && delay !== undefined) {
    if (typeof delay.fixedDelayMs !== 'number' || !(delay.fixedDelayMs >= 0) || !Number.isFinite(delay.fixedDelayMs)) {
      throw new Error(`delay.fixedDelayMs must be a non-negative duration, got ${String(delay.fixedDelayMs)}`);
    }
    percent(delay.percent, 'delay.percent');
  }
  if (abort !== null && abort !== undefined) {
    const { httpStatus, grpcStatus } = abort;
    if (httpStatus === null && grpcStatus === null) throw new Error('abort needs httpStatus or grpcStatus');
    if (httpStatus !== null && (!Number.isInteger(httpStatus) || httpStatus < 200 || httpStatus > 599)) {
      throw new Error(`abort.httpStatus must be an HTTP status (200-599), got ${String(httpStatus)}`);
    }
    if (grpcStatus !== null && (!Number.isInteger(grpcStatus) || grpcStatus < 0)) throw new Error(`abort.grpcStatus must be a gRPC status code, got ${String(grpcStatus)}`);
    percent(abort.percent, 'abort.percent');
  }
  return { delay: delay ?? null, abort: abort ?? null };
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.fault`. */
export const faultFactory = new FaultFilterFactory();
