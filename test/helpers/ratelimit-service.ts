// The global rate limit service of `remora ratelimit-service`, run in the test's process so the
// test owns its clock: the same config loading, Redis counter store and gRPC server
// (envoy.service.ratelimit.v3.RateLimitService over @grpc/grpc-js) the CLI runs, with `now`
// injected. Its fixed windows then start where the test says, and a scenario never straddles
// two of them, however long it takes.
import { loadDomains } from '../../packages/proxy/src/cli/ratelimit-service.ts';
import { RedisCounterStore } from '../../packages/proxy/src/ratelimit-service/rls-redis.ts';
import { RateLimitServer } from '../../packages/proxy/src/ratelimit-service/rls-server.ts';

/** A clock in epoch seconds that moves only when told; it starts at the start of an hour (so of every minute and second window). */
export class RlsClock {
  seconds = 1_800_000_000;
  advance(seconds: number): void {
    this.seconds += seconds;
  }
}

export interface TestRls {
  readonly port: number;
  readonly clock: RlsClock;
  /** The service's log lines (Redis errors, failed calls). */
  readonly out: string[];
  readonly server: RateLimitServer;
  stop(): Promise<void>;
}

/** Listens on 127.0.0.1:`port` (0: a free one), counting in the Redis on `redisPort`. `clock` may be shared by several instances. */
export async function startTestRls(port: number, redisPort: number, configFile: string, clock = new RlsClock()): Promise<TestRls> {
  const out: string[] = [];
  const log = (line: string): void => void out.push(line);
  let lastRedisError = '';
  const store = new RedisCounterStore({
    url: `127.0.0.1:${redisPort}`,
    commandTimeoutMs: 500,
    onError: (err) => {
      if (err.message !== lastRedisError) log(`redis: ${err.message}`);
      lastRedisError = err.message;
    },
  });
  const server = new RateLimitServer({ domains: loadDomains([configFile]), store, keyPrefix: '', now: () => clock.seconds, log });
  let bound: number;
  try {
    bound = await server.listen(`127.0.0.1:${port}`);
  } catch (err) {
    await store.close();
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    port: bound,
    clock,
    out,
    server,
    stop: () => (stopped ??= server.close().then(() => store.close())),
  };
}
