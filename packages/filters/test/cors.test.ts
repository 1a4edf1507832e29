// Envoy's CORS filter (envoy.filters.http.cors) on a route's CorsPolicy, as Envoy computes it.
// The table follows Envoy's test/extensions/filters/http/cors/cors_filter_test.cc (its fixture:
// allow origin exact "*", methods "GET", headers "content-type", expose "content-type", max age
// "0", credentials false) and Istio's VirtualService corsPolicy documentation example.
import t from 'tap';
import { FilterName, FilterStatus } from '@remora/filters';
import { CORS_RESPONSE_DETAILS, corsFactory, CorsFilterFactory, CorsPolicy } from '@remora/filters/internal';
import type { CorsPolicyJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import type { StringMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/string_pb.js';
import { FakeRequest, RecordingCallbacks, storeContext } from '@remora/filters/testing';

const exact = (value: string): StringMatcherJson => ({ exact: value });
const prefix = (value: string): StringMatcherJson => ({ prefix: value });
const regex = (value: string): StringMatcherJson => ({ safeRegex: { regex: value } });

/** Envoy's CorsFilterTest fixture, with overrides. */
const envoyFixture = (over: Partial<CorsPolicyJson> = {}): CorsPolicyJson => ({
  allowOriginStringMatch: [exact('*')],
  allowMethods: 'GET',
  allowHeaders: 'content-type',
  exposeHeaders: 'content-type',
  maxAge: '0',
  allowCredentials: false,
  ...over,
});

interface Req {
  method: string;
  origin?: string;
  acrm?: string;
  acrh?: string;
  headers?: Record<string, string>;
}

const compile = (p: CorsPolicyJson): CorsPolicy => corsFactory.compileRouteConfig(p, storeContext());

/**
 * Runs a request through the filter on a route with `policy`: `preflight` is the headers of the
 * 200 the filter answered with (null when it let the request go on), `response` the headers it
 * set on whatever response the request gets.
 */
function run(policy: CorsPolicy | CorsPolicyJson, req: Req, factory: CorsFilterFactory = corsFactory): { preflight: string[] | null; response: string[] } {
  const compiled = policy instanceof CorsPolicy ? policy : compile(policy);
  const filter = factory.compile({}, storeContext()).create();
  const headers: Record<string, string> = { ...req.headers };
  if (req.origin !== undefined) headers.origin = req.origin;
  if (req.acrm !== undefined) headers['access-control-request-method'] = req.acrm;
  if (req.acrh !== undefined) headers['access-control-request-headers'] = req.acrh;
  const cb = new RecordingCallbacks();
  const status = filter.onRequest(new FakeRequest({ method: req.method, headers, routeConfigs: new Map([[FilterName.Cors, compiled]]) }), cb);
  const set = [...cb.setHeaders].flat();
  if (cb.reply !== null) {
    if (status !== FilterStatus.StopIteration || cb.reply.status !== 200 || cb.reply.details !== CORS_RESPONSE_DETAILS || cb.reply.body !== null || cb.reply.flag !== null) {
      throw new Error(`unexpected answer ${JSON.stringify(cb.reply)} (status ${status})`);
    }
    return { preflight: set, response: [] };
  }
  if (status !== FilterStatus.Continue) throw new Error('stopped without answering');
  return { preflight: null, response: set };
}

interface Row {
  name: string;
  policy: CorsPolicyJson;
  req: Req;
  /** Headers of the local 200 answer, or null when the request goes on (upstream). */
  preflight: string[] | null;
  /** Headers set on the upstream (or later local) response. */
  response: string[];
}

const PREFLIGHT_FIXTURE = ['access-control-allow-methods', 'GET', 'access-control-allow-headers', 'content-type', 'access-control-max-age', '0'];

const rows: Row[] = [
  { name: 'RequestWithoutOrigin', policy: envoyFixture(), req: { method: 'GET' }, preflight: null, response: [] },
  {
    name: 'RequestWithOrigin',
    policy: envoyFixture(),
    req: { method: 'GET', origin: 'localhost' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'content-type'],
  },
  { name: 'OptionsRequestWithoutOrigin', policy: envoyFixture(), req: { method: 'OPTIONS' }, preflight: null, response: [] },
  {
    name: 'OptionsRequestWithoutAccessRequestMethod (an actual request, forwarded)',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: 'localhost' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'content-type'],
  },
  {
    name: 'empty Origin is no Origin',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: '', acrm: 'GET' },
    preflight: null,
    response: [],
  },
  {
    name: 'empty Access-Control-Request-Method is not a preflight',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: '' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'content-type'],
  },
  {
    // Envoy's unit test sees only the decoder's headers; its own encodeHeaders then runs on the
    // reply it generated (FilterManager encodes a decoder filter's response through every
    // encoder filter) and adds access-control-expose-headers: the integration test
    // TestRouteConfigSuccess of the same era expected it on the preflight.
    name: 'OptionsRequestMatchingOriginByWildcard',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    preflight: ['access-control-allow-origin', 'test-host', ...PREFLIGHT_FIXTURE, 'access-control-expose-headers', 'content-type'],
    response: [],
  },
  {
    name: 'OptionsRequestNotMatchingOrigin (forwarded upstream, untouched)',
    policy: envoyFixture({ allowOriginStringMatch: [exact('localhost')] }),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    preflight: null,
    response: [],
  },
  {
    name: 'OptionsRequestEmptyOriginList',
    policy: envoyFixture({ allowOriginStringMatch: [] }),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    preflight: null,
    response: [],
  },
  {
    name: 'ValidOptionsRequestWithAllowCredentialsTrue',
    policy: envoyFixture({ allowCredentials: true, allowOriginStringMatch: [exact('localhost')], exposeHeaders: '' }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    preflight: ['access-control-allow-origin', 'localhost', 'access-control-allow-credentials', 'true', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'ValidOptionsRequestWithAllowCredentialsFalse',
    policy: envoyFixture({ exposeHeaders: '' }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    preflight: ['access-control-allow-origin', 'localhost', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'EncodeWithAllowCredentialsTrue',
    policy: envoyFixture({ allowCredentials: true, exposeHeaders: '' }),
    req: { method: 'GET', origin: 'localhost' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-allow-credentials', 'true'],
  },
  {
    name: 'EncodeWithExposeHeaders',
    policy: envoyFixture({ exposeHeaders: 'custom-header-1' }),
    req: { method: 'GET', origin: 'localhost' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'custom-header-1'],
  },
  {
    name: 'EncodeWithAllowCredentialsFalse (unset: no header either)',
    policy: { allowOriginStringMatch: [exact('*')], allowMethods: 'GET', allowHeaders: 'content-type', maxAge: '0' },
    req: { method: 'GET', origin: 'localhost' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost'],
  },
  {
    name: 'EncodeWithNonMatchingOrigin',
    policy: envoyFixture({ allowOriginStringMatch: [exact('localhost')] }),
    req: { method: 'GET', origin: 'test-host' },
    preflight: null,
    response: [],
  },
  {
    name: 'NoVHostCorsEntry (allow methods unset: no allow-methods header)',
    policy: envoyFixture({ allowMethods: '', exposeHeaders: '' }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    preflight: ['access-control-allow-origin', 'localhost', 'access-control-allow-headers', 'content-type', 'access-control-max-age', '0'],
    response: [],
  },
  {
    name: 'OptionsRequestMatchingOriginByRegex',
    policy: envoyFixture({ allowOriginStringMatch: [regex('.*')], exposeHeaders: '' }),
    req: { method: 'OPTIONS', origin: 'www.envoyproxy.io', acrm: 'GET' },
    preflight: ['access-control-allow-origin', 'www.envoyproxy.io', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'OptionsRequestNotMatchingOriginByRegex',
    policy: envoyFixture({ allowOriginStringMatch: [regex('.*.envoyproxy.io')] }),
    req: { method: 'OPTIONS', origin: 'www.envoyproxy.com', acrm: 'GET' },
    preflight: null,
    response: [],
  },
  {
    // Envoy ≥ 1.30 forward_not_matching_preflights: false (Istio unmatchedPreflights: IGNORE):
    // the filter answers, without access-control-allow-origin, so the browser fails the preflight.
    name: 'not-matching preflight with unmatchedPreflights IGNORE is answered locally, without allow-origin',
    policy: envoyFixture({ allowOriginStringMatch: [exact('localhost')], allowCredentials: true, forwardNotMatchingPreflights: false }),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    preflight: ['access-control-allow-credentials', 'true', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'unmatchedPreflights IGNORE leaves a not-matching actual request alone',
    policy: envoyFixture({ allowOriginStringMatch: [exact('localhost')], forwardNotMatchingPreflights: false }),
    req: { method: 'GET', origin: 'test-host' },
    preflight: null,
    response: [],
  },
  {
    // Envoy compares the method with "OPTIONS" as is: anything else is an actual request.
    name: 'a method other than exactly OPTIONS is never a preflight',
    policy: envoyFixture({ exposeHeaders: '' }),
    req: { method: 'options', origin: 'localhost', acrm: 'GET' },
    preflight: null,
    response: ['access-control-allow-origin', 'localhost'],
  },
];

t.test("Envoy's CORS filter table", async (t) => {
  for (const row of rows) t.same(run(row.policy, row.req), { preflight: row.preflight, response: row.response }, row.name);
});

t.test("Istio's corsPolicy documentation example (ratings-route), as istiod translates it", async (t) => {
  // allowOrigins: [{exact: https://example.com}], allowMethods: [POST, GET],
  // allowCredentials: false, allowHeaders: [X-Foo-Bar], maxAge: "24h".
  const cors = compile({
    allowOriginStringMatch: [exact('https://example.com')],
    allowMethods: 'POST,GET',
    allowHeaders: 'X-Foo-Bar',
    maxAge: '86400',
    allowCredentials: false,
    filterEnabled: { defaultValue: { numerator: 100, denominator: 'HUNDRED' } },
    forwardNotMatchingPreflights: true,
  });
  t.same(run(cors, { method: 'OPTIONS', origin: 'https://example.com', acrm: 'POST', acrh: 'x-foo-bar' }), {
    preflight: [
      'access-control-allow-origin',
      'https://example.com',
      'access-control-allow-methods',
      'POST,GET',
      'access-control-allow-headers',
      'X-Foo-Bar',
      'access-control-max-age',
      '86400',
    ],
    response: [],
  });
  t.same(run(cors, { method: 'POST', origin: 'https://example.com' }), { preflight: null, response: ['access-control-allow-origin', 'https://example.com'] });
  for (const origin of ['http://example.com', 'https://example.com.evil.io', 'https://EXAMPLE.com', 'https://example.com:8443']) {
    t.same(run(cors, { method: 'POST', origin }), { preflight: null, response: [] }, `${origin} is not allowed (exact, case-sensitive)`);
    t.same(run(cors, { method: 'OPTIONS', origin, acrm: 'POST' }), { preflight: null, response: [] }, `${origin}: preflight forwarded (Istio default FORWARD)`);
  }
});

t.test('origin matchers: exact, prefix, regex (RE2, full match), ignore_case, and "*"', async (t) => {
  const cors = compile(
    envoyFixture({
      allowOriginStringMatch: [exact('https://a.example'), prefix('https://dev-'), regex('https://[a-z]+\\.example\\.org'), regex('https://(?P<team>[a-z]+)\\.corp'), { exact: 'https://MiXed.test', ignoreCase: true }],
    }),
  );
  const allowed = ['https://a.example', 'https://dev-anything', 'https://shop.example.org', 'https://infra.corp', 'https://mixed.TEST'];
  const denied = ['https://b.example', 'https://prod-x', 'https://shop.example.org.evil', 'xhttps://shop.example.org', 'https://Infra.corp', '*'];
  for (const o of allowed) t.equal(cors.isOriginAllowed(o), true, `${o} allowed`);
  for (const o of denied) t.equal(cors.isOriginAllowed(o), false, `${o} denied`);

  // Envoy tries each matcher against the literal "*" first: such a matcher allows every origin.
  for (const m of [exact('*'), prefix('*'), regex('.*'), regex('\\*')]) {
    t.equal(compile(envoyFixture({ allowOriginStringMatch: [m] })).isOriginAllowed('https://whatever.test'), true, `${JSON.stringify(m)} allows any origin`);
  }
  t.equal(compile(envoyFixture({ allowOriginStringMatch: [regex('https://.*')] })).isOriginAllowed('null'), false, 'a regex that does not match "*" does not');
  t.throws(() => compile(envoyFixture({ allowOriginStringMatch: [regex('(')] })), /allowOriginStringMatch\[0\]\.safeRegex\.regex/, 'a bad regex fails at compile time, naming the field');
  t.throws(() => compile(envoyFixture({ allowOriginStringMatch: [prefix('')] })), /allowOriginStringMatch\[0\]: an empty prefix/, "an empty prefix is refused (Envoy's min_len)");
});

t.test('allow methods / headers "*" echo what the preflight asked for', async (t) => {
  const cors = compile(envoyFixture({ allowMethods: '*', allowHeaders: '*', exposeHeaders: '', maxAge: '' }));
  t.same(run(cors, { method: 'OPTIONS', origin: 'https://a', acrm: 'DELETE', acrh: 'x-a,x-b' }).preflight, [
    'access-control-allow-origin',
    'https://a',
    'access-control-allow-methods',
    'DELETE',
    'access-control-allow-headers',
    'x-a,x-b',
  ]);
  t.same(
    run(cors, { method: 'OPTIONS', origin: 'https://a', acrm: 'PUT' }).preflight,
    ['access-control-allow-origin', 'https://a', 'access-control-allow-methods', 'PUT', 'access-control-allow-headers', ''],
    'Envoy sets the echoed header even when the request sent no Access-Control-Request-Headers',
  );
  t.same(run(envoyFixture({ allowHeaders: '*,x-a', exposeHeaders: '' }), { method: 'OPTIONS', origin: 'https://a', acrm: 'PUT', acrh: 'x-z' }).preflight?.slice(4, 6), ['access-control-allow-headers', '*,x-a'], 'only exactly "*" echoes');
});

t.test('allow_private_network_access answers a private network preflight', async (t) => {
  const policy = envoyFixture({ exposeHeaders: '', allowPrivateNetworkAccess: true });
  const pna = { 'access-control-request-private-network': 'true' };
  t.same(run(policy, { method: 'OPTIONS', origin: 'https://a', acrm: 'GET', headers: pna }).preflight?.slice(-2), ['access-control-allow-private-network', 'true']);
  t.notOk(run(policy, { method: 'OPTIONS', origin: 'https://a', acrm: 'GET' }).preflight?.includes('access-control-allow-private-network'), 'only when the browser asks');
  t.notOk(run(envoyFixture(), { method: 'OPTIONS', origin: 'https://a', acrm: 'GET', headers: pna }).preflight?.includes('access-control-allow-private-network'), 'only when allowed');
});

t.test('filter_enabled: a fraction below 100% draws per request; 0% leaves every request alone', async (t) => {
  let draw = 0;
  const factory = new CorsFilterFactory(() => draw);
  const half = envoyFixture({ exposeHeaders: '', filterEnabled: { defaultValue: { numerator: 50, denominator: 'HUNDRED' } } });
  draw = 0.49;
  t.same(run(half, { method: 'GET', origin: 'https://a' }, factory).response, ['access-control-allow-origin', 'https://a'], 'drawn under 50%: enforced');
  draw = 0.5;
  t.same(run(half, { method: 'GET', origin: 'https://a' }, factory).response, [], 'drawn at 50%: not');
  t.same(run(envoyFixture({ filterEnabled: { defaultValue: { numerator: 0 } } }), { method: 'OPTIONS', origin: 'https://a', acrm: 'GET' }), { preflight: null, response: [] }, '0%: a preflight goes upstream');
});

t.test('bad configs are refused at compile time, naming the field', async (t) => {
  t.throws(() => compile(envoyFixture({ allowCredentials: 'yes' as unknown as boolean })), /allowCredentials must be a boolean/);
  t.throws(() => compile(envoyFixture({ maxAge: 60 as unknown as string })), /maxAge must be a string/);
  t.throws(() => compile(envoyFixture({ filterEnabled: {} })), /filterEnabled\.defaultValue is required/);
  t.throws(() => compile(envoyFixture({ filterEnabled: { defaultValue: { numerator: 1, denominator: 'BILLION' as 'HUNDRED' } } })), /filterEnabled\.defaultValue\.denominator/);
  t.throws(() => corsFactory.compile({ allowMethods: 'GET' }, storeContext()), /Cors has no field allowMethods/, "the chain's Cors carries no policy");
  t.doesNotThrow(() => corsFactory.compile({}, storeContext()), "istiod's empty Cors");
});

t.test('a route without a CorsPolicy, or a request without Origin, is not touched', async (t) => {
  const config = corsFactory.compile({}, storeContext());
  const filter = config.create();
  const cb = new RecordingCallbacks();
  t.equal(filter.onRequest(new FakeRequest({ method: 'OPTIONS', headers: { origin: 'https://a', 'access-control-request-method': 'GET' } }), cb), FilterStatus.Continue);
  t.same([cb.reply, cb.setHeaders.size, cb.headers.length], [null, 0, 0]);
  t.equal(config.create(), filter, 'one shared instance: nothing allocated per request');
});
