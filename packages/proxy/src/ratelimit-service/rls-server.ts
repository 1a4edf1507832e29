/**
 * A global rate limit service speaking Envoy's `envoy.service.ratelimit.v3.RateLimitService`
 * over gRPC, with the `envoyproxy/ratelimit` semantics: per request descriptor, the limit its
 * domain's config gives it (none: OK, not counted), a fixed-window counter in Redis, and
 * OVER_LIMIT when the count passes the limit (a `shadow_mode` limit only reports OK). The
 * answer carries each descriptor's status (limit, remaining, time to the window's end), from
 * which the proxy writes its x-ratelimit-* headers. Redis failing: the call ends with gRPC
 * UNKNOWN, so the caller's failure mode decides.
 */
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import {
  RateLimitRequestSchema,
  RateLimitResponseSchema,
  RateLimitResponse_Code,
  type RateLimitRequest,
  type RateLimitResponse,
  type RateLimitResponse_DescriptorStatusSchema,
  type RateLimitResponse_RateLimit_Unit,
} from '@remora/config/envoy/gen/envoy/service/ratelimit/v3/rls_pb.js';
import type { DomainConfig, RateLimitRule } from './rls-config.ts';
import { UNIT_NUMBER, UNIT_SECONDS } from './rls-config.ts';
import type { CounterHit, RedisCounterStore } from './rls-redis.ts';

export const SERVICE_PATH = '/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit';

const METHOD: grpc.MethodDefinition<RateLimitRequest, RateLimitResponse> = {
  path: SERVICE_PATH,
  requestStream: false,
  responseStream: false,
  requestSerialize: (m) => Buffer.from(toBinary(RateLimitRequestSchema, m)),
  requestDeserialize: (b) => fromBinary(RateLimitRequestSchema, b),
  responseSerialize: (m) => Buffer.from(toBinary(RateLimitResponseSchema, m)),
  responseDeserialize: (b) => fromBinary(RateLimitResponseSchema, b),
};

/** Counts of the decisions, for the log and tests. */
export class RlsStats {
  ok = 0;
  overLimit = 0;
  shadowOverLimit = 0;
  redisErrors = 0;
}

export interface RlsOptions {
  readonly domains: ReadonlyMap<string, DomainConfig>;
  readonly store: RedisCounterStore;
  /** Prepended to every Redis key (envoyproxy/ratelimit's CACHE_KEY_PREFIX). */
  readonly keyPrefix: string;
  readonly now?: () => number;
  readonly log: (line: string) => void;
}

/** Decides one ShouldRateLimit call. */
export class RateLimitDecider {
  readonly stats = new RlsStats();
  readonly #o: RlsOptions;
  readonly #now: () => number;

  constructor(o: RlsOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => Date.now() / 1000);
  }

  async decide(req: RateLimitRequest): Promise<RateLimitResponse> {
    const domain = this.#o.domains.get(req.domain);
    // As envoyproxy/ratelimit: a domain without config limits nothing.
    if (domain === undefined) {
      this.stats.ok++;
      return create(RateLimitResponseSchema, { overallCode: RateLimitResponse_Code.OK, statuses: req.descriptors.map(() => ({ code: RateLimitResponse_Code.OK })) });
    }
    const hits = req.hitsAddend === 0 ? 1 : req.hitsAddend;
    const now = Math.floor(this.#now());
    const rules: (RateLimitRule | null)[] = [];
    const counters: CounterHit[] = [];
    const counted: number[] = [];
    req.descriptors.forEach((d, i) => {
      const rule = domain.limitFor(d.entries);
      rules.push(rule);
      if (rule === null || rule.unlimited) return;
      const window = UNIT_SECONDS[rule.unit]!;
      let key = `${this.#o.keyPrefix}${req.domain}_`;
      for (const e of d.entries) key += `${e.key}_${e.value}_`;
      key += String(Math.floor(now / window) * window);
      counters.push({ key, windowSeconds: window });
      counted.push(i);
    });
    const after = counters.length === 0 ? [] : await this.#o.store.increase(hits, counters);
    const statuses: MessageInitShape<typeof RateLimitResponse_DescriptorStatusSchema>[] = rules.map(() => ({ code: RateLimitResponse_Code.OK }));
    let over = false;
    counted.forEach((i, n) => {
      const rule = rules[i]!;
      const window = UNIT_SECONDS[rule.unit]!;
      const count = after[n]!;
      const limit = { name: rule.name, requestsPerUnit: rule.requestsPerUnit, unit: UNIT_NUMBER[rule.unit]! as RateLimitResponse_RateLimit_Unit };
      const overLimit = count > rule.requestsPerUnit;
      if (overLimit && rule.shadowMode) this.stats.shadowOverLimit++;
      const code = overLimit && !rule.shadowMode ? RateLimitResponse_Code.OVER_LIMIT : RateLimitResponse_Code.OK;
      if (code === RateLimitResponse_Code.OVER_LIMIT) over = true;
      statuses[i] = {
        code,
        currentLimit: limit,
        limitRemaining: Math.max(0, rule.requestsPerUnit - count),
        durationUntilReset: { seconds: BigInt(window - (now % window)), nanos: 0 },
      };
    });
    if (over) this.stats.overLimit++;
    else this.stats.ok++;
    return create(RateLimitResponseSchema, {
      overallCode: over ? RateLimitResponse_Code.OVER_LIMIT : RateLimitResponse_Code.OK,
      statuses,
    });
  }
}

/** The gRPC server around a decider; `listen` resolves with the bound port. */
export class RateLimitServer {
  readonly decider: RateLimitDecider;
  readonly #server = new grpc.Server();
  readonly #log: (line: string) => void;

  constructor(o: RlsOptions) {
    this.decider = new RateLimitDecider(o);
    this.#log = o.log;
    this.#server.addService({ ShouldRateLimit: METHOD } as grpc.ServiceDefinition, {
      ShouldRateLimit: (call: grpc.ServerUnaryCall<RateLimitRequest, RateLimitResponse>, cb: grpc.sendUnaryData<RateLimitResponse>) => {
        this.decider.decide(call.request).then(
          (res) => cb(null, res),
          (err: Error) => {
            this.decider.stats.redisErrors++;
            this.#log(`ShouldRateLimit: ${err.message}`);
            cb({ code: grpc.status.UNKNOWN, details: err.message });
          },
        );
      },
    });
  }

  listen(address: string): Promise<number> {
    return new Promise((resolve, reject) =>
      this.#server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.tryShutdown(() => resolve());
      // Calls still open after a second are cut.
      setTimeout(() => this.#server.forceShutdown(), 1000).unref();
    });
  }
}
