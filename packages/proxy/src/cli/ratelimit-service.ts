/**
 * `remora ratelimit-service`: a global rate limit service (Envoy's RLS gRPC protocol) reading
 * `envoyproxy/ratelimit` config files and counting in Redis, so every gateway that asks it —
 * and every instance of it sharing the Redis — enforces one limit. Its flags follow that
 * service's environment (REDIS_URL, CACHE_KEY_PREFIX, GRPC_PORT) where it has one.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDomainConfig, type DomainConfig } from '../ratelimit-service/rls-config.ts';

interface Io {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  readonly env: NodeJS.ProcessEnv;
}

export const RATELIMIT_SERVICE_HELP = `usage: remora ratelimit-service -c PATH… [options]

Serves envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over gRPC (plaintext h2c),
the service Envoy's (and Remora's) envoy.filters.http.ratelimit filter calls. Limits come from
envoyproxy/ratelimit config files (domain, descriptors with key, value, rate_limit unit and
requests_per_unit, nested descriptors, shadow_mode); fixed-window counters live in Redis, so
several instances share them. Redis unreachable: calls fail (gRPC UNKNOWN) and the proxy's
failure_mode_deny decides.

options:
  -c, --config PATH          a config file, or a directory of .yaml/.yml files (repeatable)
      --port N               gRPC port (default $GRPC_PORT or 8081; 0 picks a free one)
      --bind ADDR            address to listen on (default 0.0.0.0)
      --redis URL            redis://host:port[/db] or host:port (default $REDIS_URL or 127.0.0.1:6379)
      --redis-timeout MS     a Redis call slower than this fails (default 500)
      --cache-key-prefix P   prepended to every Redis key (default $CACHE_KEY_PREFIX or none)
  -h, --help                 show this help
`;

/** Reads every config file; throws naming the file. Two files for one domain are an error, as in envoyproxy/ratelimit. */
export function loadDomains(paths: readonly string[]): Map<string, DomainConfig> {
  const files: string[] = [];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p).sort()) if (/\.ya?ml$/.test(f)) files.push(join(p, f));
    } else files.push(p);
  }
  const out = new Map<string, DomainConfig>();
  for (const f of files) {
    const d = parseDomainConfig(readFileSync(f, 'utf8'), f);
    if (out.has(d.domain)) throw new Error(`${f}: domain ${d.domain} is already configured by another file`);
    out.set(d.domain, d);
  }
  return out;
}

/** Runs until SIGTERM/SIGINT; resolves with an exit status only when it cannot start. */
export async function runRateLimitService(argv: readonly string[], io: Io): Promise<number | null> {
  let v;
  try {
    v = parseArgs({
      args: [...argv],
      options: {
        config: { type: 'string', short: 'c', multiple: true },
        port: { type: 'string' },
        bind: { type: 'string' },
        redis: { type: 'string' },
        'redis-timeout': { type: 'string' },
        'cache-key-prefix': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    }).values;
  } catch (err) {
    io.err(`remora ratelimit-service: ${(err as Error).message}\n\n${RATELIMIT_SERVICE_HELP}`);
    return 2;
  }
  if (v.help === true) {
    io.out(RATELIMIT_SERVICE_HELP);
    return 0;
  }
  const configs = v.config ?? [];
  const port = Number(v.port ?? io.env.GRPC_PORT ?? 8081);
  const timeout = Number(v['redis-timeout'] ?? 500);
  const usage = configs.length === 0 ? '-c PATH is required' : !Number.isInteger(port) || port < 0 || port > 65535 ? `--port: not a port: ${v.port}` : !(timeout > 0) ? `--redis-timeout: not a positive number: ${v['redis-timeout']}` : null;
  if (usage !== null) {
    io.err(`remora ratelimit-service: ${usage}\n\n${RATELIMIT_SERVICE_HELP}`);
    return 2;
  }
  let domains: Map<string, DomainConfig>;
  try {
    domains = loadDomains(configs);
  } catch (err) {
    io.err(`remora ratelimit-service: ${(err as Error).message}\n`);
    return 1;
  }
  const [{ RedisCounterStore }, { RateLimitServer }] = await Promise.all([import('../ratelimit-service/rls-redis.ts'), import('../ratelimit-service/rls-server.ts')]);
  const log = (line: string): void => io.err(`${new Date().toISOString()} ratelimit-service: ${line}\n`);
  let lastRedisError = '';
  const store = new RedisCounterStore({
    url: v.redis ?? io.env.REDIS_URL ?? '127.0.0.1:6379',
    commandTimeoutMs: timeout,
    // Logged once per distinct error while Redis stays down, not once per reconnect attempt.
    onError: (err) => {
      if (err.message !== lastRedisError) log(`redis: ${err.message}`);
      lastRedisError = err.message;
    },
  });
  const server = new RateLimitServer({ domains, store, keyPrefix: v['cache-key-prefix'] ?? io.env.CACHE_KEY_PREFIX ?? '', log });
  const bind = v.bind ?? '0.0.0.0';
  let bound: number;
  try {
    bound = await server.listen(`${bind.includes(':') ? `[${bind}]` : bind}:${port}`);
  } catch (err) {
    await store.close();
    io.err(`remora ratelimit-service: cannot listen on ${bind}:${port}: ${(err as Error).message}\n`);
    return 1;
  }
  io.out(`ratelimit-service: listening on ${bind}:${bound} (gRPC), domains ${[...domains.keys()].join(', ')}\n`);
  const stop = (): void => {
    void server.close().then(() => store.close()).then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return null;
}
