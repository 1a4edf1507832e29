// The local rate limit filter as Envoy's envoy.filters.http.local_ratelimit behaves: token
// bucket refilled per fill interval, 429 `local_rate_limited` with RL and x-envoy-ratelimited,
// filter_enabled / filter_enforced fractions, x-ratelimit-* headers, per-route buckets,
// descriptors, and buckets kept across recompiles (hot reloads) while their settings hold.
import t from 'tap';
import type { LocalRateLimitConfigJson } from '@remora/config';
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import { FilterName, FilterStatus, type HttpFilter } from '@remora/filters';
import { LocalRateLimitFilterFactory, TokenBucket } from '@remora/filters/internal';
import { RecordingCallbacks, storeContext } from '@remora/filters/testing';
import { RouteRequest } from './local-ratelimit-helpers.ts';

/** A clock the test moves by hand. */
function manualClock() {
  const c = { now: 1000, fn: () => c.now };
  return c;
}

interface Bucket {
  maxTokens: number;
  tokensPerFill: number;
  fillIntervalMs: number;
}

const bucketJson = (b: Bucket) => ({ maxTokens: b.maxTokens, tokensPerFill: b.tokensPerFill, fillInterval: `${b.fillIntervalMs / 1000}s` });
const percent = (p: number) => ({ runtimeKey: 'k', defaultValue: { numerator: p * 10_000, denominator: 'MILLION' as const } });

/** Envoy's LocalRateLimit JSON from the settings a test varies. */
function config(
  over: {
    statPrefix?: string;
    tokenBucket?: Bucket | null;
    enabledPercent?: number;
    enforcedPercent?: number;
    status?: number;
    grpcResourceExhausted?: boolean;
    responseHeadersToAdd?: [string, string][];
    xRateLimitHeaders?: boolean;
    descriptors?: { entries: { key: string; value: string }[]; tokenBucket: Bucket }[];
  } = {},
): LocalRateLimitConfigJson {
  const tb = over.tokenBucket === undefined ? { maxTokens: 3, tokensPerFill: 2, fillIntervalMs: 1000 } : over.tokenBucket;
  return {
    statPrefix: over.statPrefix ?? 'http_local_rate_limiter',
    ...(tb === null ? {} : { tokenBucket: bucketJson(tb) }),
    filterEnabled: percent(over.enabledPercent ?? 100),
    filterEnforced: percent(over.enforcedPercent ?? 100),
    ...(over.status !== undefined ? { status: { code: over.status === 503 ? 'ServiceUnavailable' : over.status } as never } : {}),
    ...(over.grpcResourceExhausted === true ? { rateLimitedAsResourceExhausted: true } : {}),
    ...(over.responseHeadersToAdd ? { responseHeadersToAdd: over.responseHeadersToAdd.map(([key, value]) => ({ header: { key, value } })) } : {}),
    ...(over.xRateLimitHeaders === true ? { enableXRatelimitHeaders: 'DRAFT_VERSION_03' as const } : {}),
    ...(over.descriptors ? { descriptors: over.descriptors.map((d) => ({ entries: d.entries, tokenBucket: bucketJson(d.tokenBucket) })) } : {}),
  };
}

/** A compile context for the filter at `scope` (a listener's name, or a route's path). */
function scoped(scope: string, store = new Map<string, unknown>()) {
  return { ...storeContext(store), scope };
}

const NO_ROUTE = { rateLimits: [], forwards: true, cluster: null };
const routeInput = (rateLimits: RateLimitJson[]) => ({ rateLimits, forwards: true, cluster: null });

function send(filter: HttpFilter, req = new RouteRequest()) {
  const cb = new RecordingCallbacks();
  const status = filter.onRequest(req, cb);
  return { status, cb, limited: status === FilterStatus.StopIteration };
}

t.test('token bucket: starts full, refills per whole interval, never above max', async (t) => {
  const clock = manualClock();
  const b = new TokenBucket({ maxTokens: 3, tokensPerFill: 2, fillIntervalMs: 1000 }, clock.fn);
  t.ok(b.consume() && b.consume() && b.consume(), 'three tokens at start');
  t.notOk(b.consume(), 'fourth refused');
  clock.now += 999;
  t.notOk(b.consume(), 'no refill before the interval');
  clock.now += 1;
  t.equal(b.remaining, 2, 'one fill adds tokens_per_fill');
  clock.now += 10_000;
  t.equal(b.remaining, 3, 'capped at max_tokens');
  t.equal(b.resetSeconds, 1, 'reset: seconds to the next fill');
  clock.now += 1500;
  t.equal(b.resetSeconds, 1, 'fills stay on interval boundaries (0.5 s left rounds up)');
});

t.test('over the limit: 429 local_rate_limited, RL, x-envoy-ratelimited, response_headers_to_add', async (t) => {
  const clock = manualClock();
  const f = new LocalRateLimitFilterFactory(clock.fn).compile(config({ responseHeadersToAdd: [['x-local-rate-limit', 'true']] }), storeContext()).create();
  for (let i = 0; i < 3; i++) t.equal(send(f).status, FilterStatus.Continue, `request ${i + 1} passes`);
  const { status, cb } = send(f);
  t.equal(status, FilterStatus.StopIteration);
  t.same(cb.reply, { status: 429, body: 'local_rate_limited', flag: 'RL', details: 'local_rate_limited', grpcStatus: null });
  t.equal(cb.header('x-envoy-ratelimited'), 'true');
  t.equal(cb.header('x-local-rate-limit'), 'true');
  clock.now += 1000;
  t.equal(send(f).status, FilterStatus.Continue, 'refilled after the interval');
  const passed = send(f);
  t.equal(passed.status, FilterStatus.Continue);
  t.equal(passed.cb.header('x-local-rate-limit'), undefined, 'response_headers_to_add only on refusals');
  t.ok(send(f).limited, 'two tokens per fill');
});

t.test('status and gRPC: custom status, RESOURCE_EXHAUSTED when asked', async (t) => {
  const f = new LocalRateLimitFilterFactory(manualClock().fn)
    .compile(config({ tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 1000 }, status: 503, grpcResourceExhausted: true }), storeContext())
    .create();
  send(f);
  const { cb } = send(f, new RouteRequest({ grpc: true }));
  t.equal(cb.reply?.status, 503);
  t.equal(cb.reply?.grpcStatus, 8);
});

t.test('x-ratelimit headers (DRAFT_VERSION_03) on passing and refused requests', async (t) => {
  const f = new LocalRateLimitFilterFactory(manualClock().fn).compile(config({ xRateLimitHeaders: true }), storeContext()).create();
  const first = send(f).cb;
  t.equal(first.header('x-ratelimit-limit'), '3');
  t.equal(first.header('x-ratelimit-remaining'), '2');
  t.equal(first.header('x-ratelimit-reset'), '1');
  send(f);
  send(f);
  const refused = send(f);
  t.ok(refused.limited);
  t.equal(refused.cb.header('x-ratelimit-remaining'), '0');
  const off = new LocalRateLimitFilterFactory(manualClock().fn).compile(config(), storeContext()).create();
  t.equal(send(off).cb.headers.length, 0, 'off by default');
});

t.test('filter_enabled and filter_enforced fractions', async (t) => {
  const one = { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 60_000 };
  const disabled = new LocalRateLimitFilterFactory(manualClock().fn).compile(config({ tokenBucket: one, enabledPercent: 0 }), storeContext()).create();
  for (let i = 0; i < 5; i++) t.notOk(send(disabled).limited, 'disabled (Envoy default 0%): never limited');
  const shadow = new LocalRateLimitFilterFactory(manualClock().fn).compile(config({ tokenBucket: one, enforcedPercent: 0 }), storeContext()).create();
  for (let i = 0; i < 5; i++) t.notOk(send(shadow).limited, 'not enforced: over-limit requests pass');
  const half = new LocalRateLimitFilterFactory(manualClock().fn).compile(config({ tokenBucket: one, enforcedPercent: 50 }), storeContext()).create();
  send(half);
  let refused = 0;
  const n = 4000;
  for (let i = 0; i < n; i++) if (send(half).limited) refused++;
  t.ok(Math.abs(refused / n - 0.5) < 0.05, `50% enforced refuses about half (${refused}/${n})`);
  const enabledHalf = new LocalRateLimitFilterFactory(manualClock().fn).compile(config({ tokenBucket: one, enabledPercent: 50 }), storeContext()).create();
  let limited = 0;
  for (let i = 0; i < n; i++) if (send(enabledHalf).limited) limited++;
  t.ok(Math.abs(limited / n - 0.5) < 0.05, `50% enabled checks about half (${limited}/${n})`);
});

t.test('buckets survive a recompile with the same key and settings; new settings start full', async (t) => {
  const clock = manualClock();
  const factory = new LocalRateLimitFilterFactory(clock.fn);
  const store = new Map<string, unknown>();
  const a = factory.compile(config(), storeContext(store)).create();
  send(a);
  send(a);
  send(a);
  const b = factory.compile(config({ statPrefix: 'renamed', responseHeadersToAdd: [['x-a', 'b']] }), storeContext(store)).create();
  t.ok(send(b).limited, 'same bucket after a reload that left it alone');
  const c = factory.compile(config({ tokenBucket: { maxTokens: 5, tokensPerFill: 2, fillIntervalMs: 1000 } }), storeContext(store)).create();
  t.notOk(send(c).limited, 'a changed bucket starts full');
  const d = factory.compile(config(), scoped('0.0.0.0_8081', store)).create();
  t.notOk(send(d).limited, 'another listener has its own bucket');
});

t.test('per-route config replaces the listener limit with its own bucket; rate_limits drive descriptors', async (t) => {
  const clock = manualClock();
  const factory = new LocalRateLimitFilterFactory(clock.fn);
  const ctx = storeContext();
  const listener = factory.compile(config({ tokenBucket: null }), ctx).create();
  t.match(ctx.warnings[0], /limits nothing unless a route brings its own/);
  t.notOk(send(listener).limited, 'no bucket at listener level: nothing limited');
  const routeCfg = config({ tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 1000 } });
  const routes = new Map([[FilterName.LocalRateLimit, factory.compileRouteConfig(routeCfg, scoped('rc/vh/route-a'), NO_ROUTE)]]);
  t.notOk(send(listener, new RouteRequest({ routeConfigs: routes })).limited);
  t.ok(send(listener, new RouteRequest({ routeConfigs: routes })).limited, "the route's bucket of 1");

  const withDescriptors = factory.compile(
    config({
      tokenBucket: { maxTokens: 100, tokensPerFill: 1, fillIntervalMs: 1000 },
      descriptors: [{ entries: [{ key: 'client', value: 'slow' }], tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 1000 } }],
    }),
    ctx,
  ).create();
  const rl = factory.compileRouteConfig(undefined, ctx, routeInput([{ actions: [{ requestHeaders: { headerName: 'X-Client', descriptorKey: 'client' } }] }]));
  const rc = new Map([[FilterName.LocalRateLimit, rl]]);
  const slow = () => new RouteRequest({ headers: { 'x-client': 'slow' }, routeConfigs: rc });
  t.notOk(send(withDescriptors, slow()).limited);
  t.ok(send(withDescriptors, slow()).limited, 'matching descriptor: its bucket of 1');
  for (let i = 0; i < 5; i++) t.notOk(send(withDescriptors, new RouteRequest({ headers: { 'x-client': 'fast' }, routeConfigs: rc })).limited, 'other values use the default bucket');
  t.notOk(send(withDescriptors, new RouteRequest({ routeConfigs: rc })).limited, 'no header: no descriptor');

  const generic = factory.compileRouteConfig(undefined, ctx, routeInput([{ actions: [{ remoteAddress: {} }] }]));
  const byIp = factory
    .compile(
      config({
        tokenBucket: null,
        descriptors: [{ entries: [{ key: 'remote_address', value: '10.9.9.9' }], tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 1000 } }],
      }),
      scoped('ip'),
    )
    .create();
  const from = (ip: string) => new RouteRequest({ remoteIp: ip, routeConfigs: new Map([[FilterName.LocalRateLimit, generic]]) });
  send(byIp, from('10.9.9.9'));
  t.ok(send(byIp, from('10.9.9.9')).limited, 'remote_address descriptor');
  t.notOk(send(byIp, from('10.1.1.1')).limited);
});

t.test('bad configs are refused with the field named', async (t) => {
  const f = new LocalRateLimitFilterFactory();
  const ctx = storeContext();
  t.throws(() => f.compile(config({ tokenBucket: { maxTokens: 0, tokensPerFill: 1, fillIntervalMs: 1000 } }), ctx), /tokenBucket.maxTokens must be a positive integer/);
  t.throws(() => f.compile(config({ tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 10 } }), ctx), /tokenBucket.fillInterval must be at least 50ms/);
  t.throws(() => f.compile({ ...config(), filterEnforced: { defaultValue: { numerator: 1, denominator: 'PERCENT' as 'HUNDRED' } } }, ctx), /filterEnforced.defaultValue.denominator must be HUNDRED/);
  t.throws(() => f.compileRouteConfig(config({ tokenBucket: null }), ctx, NO_ROUTE), /tokenBucket must be set for a route/);
  t.throws(() => f.compile(null, ctx), /config must be a LocalRateLimit object/);
  t.throws(() => f.compile({ ...config(), statPrefix: '' }, ctx), /statPrefix is required/);
  t.throws(() => f.compile({ ...config(), localRateLimitPerDownstreamConnection: true }, ctx), /localRateLimitPerDownstreamConnection is not supported/);
  t.throws(() => f.compileRouteConfig(undefined, ctx, routeInput([{ actions: [{ extension: { name: 'x' } }] }])), /actions\[0\]\.extension: not supported/);
});

t.test("Envoy's defaults: filter_enabled unset is 0% (nothing checked), status below 400 answers 429", async (t) => {
  const f = new LocalRateLimitFilterFactory(manualClock().fn);
  const one = { statPrefix: 'x', tokenBucket: { maxTokens: 1, fillInterval: '60s' } };
  const unset = f.compile(one, scoped('a')).create();
  for (let i = 0; i < 3; i++) t.notOk(send(unset).limited);
  const low = f.compile({ ...one, filterEnabled: percent(100), filterEnforced: percent(100), status: { code: 'OK' } }, scoped('b')).create();
  send(low);
  t.equal(send(low).cb.reply?.status, 429);
});
