/**
 * Where a filter arms its timers and draws its random numbers. The proxy runs filters with
 * Node's timers and `Math.random`; a unit test passes its own (`ManualTimers` and
 * `randomSequence` in `@remora/filters/testing`) and runs a delay, or a percentage, without
 * waiting or counting on chance (Envoy's filters take `TimeSource` and `RandomGenerator`).
 */

/** A timer as `setTimeout(fn, ms, arg)` arms it: the argument travels with it, so no closure is made per request. */
export interface FilterTimers {
  setTimeout<A>(fn: (arg: A) => void, ms: number, arg: A): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** What `FilterTimers.setTimeout` returns, for `clearTimeout` only. */
export type TimerHandle = object | number;

/** Node's timers. */
export const nodeTimers: FilterTimers = {
  setTimeout: (fn, ms, arg) => setTimeout(fn, ms, arg),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** A uniform draw in [0, 1), as `Math.random`. */
export type RandomSource = () => number;
