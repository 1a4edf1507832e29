/**
 * Where a filter reads the time, arms its timers and draws its random numbers. The proxy
 * runs filters with `performance.now`, Node's timers and `Math.random`; a unit test passes
 * its own (`ManualTimers` and `randomSequence` in `@remora/filters/testing`) and runs a
 * delay, an expiry or a percentage without waiting or counting on chance (Envoy's filters
 * take a `TimeSource` and a `RandomGenerator`).
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

/** A monotonic millisecond clock; tests pass their own. */
export type Clock = () => number;

export const monotonicClock: Clock = () => performance.now();

/** A uniform draw in [0, 1), as `Math.random`. */
export type RandomSource = () => number;
