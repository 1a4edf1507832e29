// The load generator: autocannon, in this (pinned) process. Every run is bounded in time by its
// duration, with a hard stop a little later, and in count by a cap checked on autocannon's
// once-a-second tick (no per-response work of ours in the saturated runs).
import autocannon from 'autocannon';
import { ROOT, type RequestTarget } from './net.ts';

/** A request count no run on this harness can reach honestly (≈ 250k req/s); only a guard. */
const MAX_REQUESTS_PER_SECOND = 250_000;

export interface SaturateOptions {
  readonly port: number;
  readonly connections: number;
  readonly durationS: number;
  /** autocannon worker threads; 0 runs in the main thread. */
  readonly workers: number;
  /** Path and headers of every request (default `GET /`). */
  readonly target?: RequestTarget;
}

export interface SaturateResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
}

export interface FixedRateOptions {
  readonly port: number;
  readonly connections: number;
  readonly rate: number;
  readonly durationS: number;
  /** Path and headers of every request (default `GET /`). */
  readonly target?: RequestTarget;
}

export interface LatencyResult {
  readonly requests: number;
  /** Achieved rate, requests per second. */
  readonly rps: number;
  readonly errors: number;
  readonly non2xx: number;
  /** Milliseconds, from autocannon's per-response hrtime (its own histogram keeps whole milliseconds only). */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

interface Run {
  readonly result: autocannon.Result;
  readonly seconds: number;
}

type Tuning = (instance: autocannon.Instance) => void;

function runBounded(options: autocannon.Options, durationS: number, maxRequests: number, tune: Tuning | null): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let seen = 0;
    const instance = autocannon(options, (err: Error | null, result: autocannon.Result) => {
      clearTimeout(hardStop);
      if (err) reject(err);
      else resolve({ result, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
    });
    // autocannon passes { counter, bytes } to 'tick'; its type says no argument.
    (instance as unknown as NodeJS.EventEmitter).on('tick', (tick: { counter?: number } | undefined) => {
      seen += tick?.counter ?? 0;
      if (seen >= maxRequests) instance.stop();
    });
    const hardStop = setTimeout(() => instance.stop(), (durationS + 15) * 1000);
    if (tune !== null) tune(instance);
  });
}

/** As many requests as `connections` keep-alive connections can get answered, for `durationS`. */
export async function saturate(o: SaturateOptions): Promise<SaturateResult> {
  const { result, seconds } = await runBounded(
    {
      url: `http://127.0.0.1:${o.port}${(o.target ?? ROOT).path}`,
      headers: { ...(o.target ?? ROOT).headers },
      connections: o.connections,
      pipelining: 1,
      duration: o.durationS,
      timeout: 10,
      ...(o.workers > 0 ? { workers: o.workers } : {}),
    },
    o.durationS,
    MAX_REQUESTS_PER_SECOND * o.durationS,
    null,
  );
  const ok = result['2xx'];
  // autocannon's own span (10 ms resolution) excludes our set-up time.
  const runSeconds = result.duration > 0 ? result.duration : seconds;
  return { requests: ok, seconds: runSeconds, rps: ok / runSeconds, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx };
}

/**
 * `rate` requests per second in all, spread over `connections`, for `durationS`; latency of each
 * 2xx response recorded to the microsecond. Note autocannon's rate limiter: each connection sends
 * its share of a second back to back, then waits for the next second. With one connection, every
 * request is alone on the wire (no queueing in the proxy), which is the latency a proxy adds.
 */
export async function fixedRate(o: FixedRateOptions): Promise<LatencyResult> {
  const capacity = Math.ceil(o.rate * (o.durationS + 2) * 1.1) + 1000;
  const samples = new Float64Array(capacity);
  let n = 0;
  const { result, seconds } = await runBounded(
    {
      url: `http://127.0.0.1:${o.port}${(o.target ?? ROOT).path}`,
      headers: { ...(o.target ?? ROOT).headers },
      connections: o.connections,
      pipelining: 1,
      duration: o.durationS,
      overallRate: o.rate,
      timeout: 10,
    },
    o.durationS,
    capacity,
    (instance) => {
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        if (statusCode >= 200 && statusCode < 300 && n < capacity) samples[n++] = responseTime;
      });
    },
  );
  const sorted = samples.subarray(0, n).sort();
  const pick = (p: number): number => (n === 0 ? Number.NaN : (sorted[Math.min(n - 1, Math.ceil((p / 100) * n) - 1)] as number));
  return {
    requests: n,
    rps: n / Math.max(seconds, 0.001),
    errors: result.errors,
    non2xx: result.non2xx,
    p50: pick(50),
    p90: pick(90),
    p99: pick(99),
    max: n === 0 ? Number.NaN : (sorted[n - 1] as number),
  };
}
