// CORS decisions and headers, as Envoy's CORS filter computes them for an Istio corsPolicy.
// The table follows Envoy's test/extensions/filters/http/cors/cors_filter_test.cc (its fixture:
// allow origin exact "*", methods "GET", headers "content-type", expose "content-type", max age
// "0", credentials false) and Istio's VirtualService corsPolicy documentation example.
import t from 'tap';
import type { CorsPolicy, StringMatch } from '@remora/config';
import {
  CompiledCors,
  CORS_ACTUAL,
  CORS_NONE,
  CORS_PREFLIGHT,
  CORS_PREFLIGHT_UNMATCHED,
  CORS_RESPONSE_DETAILS,
  type CorsDecision,
  type CorsOptions,
} from '@remora/proxy';

const exact = (value: string): StringMatch => ({ kind: 'exact', value });
const prefix = (value: string): StringMatch => ({ kind: 'prefix', value });
const regex = (value: string): StringMatch => ({ kind: 'regex', value });

/** Envoy's CorsFilterTest fixture, with overrides. */
const envoyFixture = (over: Partial<CorsPolicy> = {}): CorsPolicy => ({
  allowOrigins: [exact('*')],
  allowMethods: ['GET'],
  allowHeaders: ['content-type'],
  exposeHeaders: ['content-type'],
  maxAgeSeconds: 0,
  allowCredentials: false,
  forwardUnmatchedPreflights: true,
  ...over,
});

interface Req {
  method: string;
  origin?: string;
  acrm?: string;
  acrh?: string;
}

/** Runs a request through the policy the way the exchange does; returns what the client would see of CORS. */
function run(cors: CompiledCors, req: Req): { decision: CorsDecision; preflight: string[] | null; response: string[] } {
  const origin = req.origin ?? null;
  const decision = cors.decide(req.method, origin, req.acrm ?? null);
  let preflight: string[] | null = null;
  const response: string[] = [];
  if (decision === CORS_PREFLIGHT || decision === CORS_PREFLIGHT_UNMATCHED) {
    preflight = [];
    cors.pushPreflightHeaders(preflight, decision, origin!, req.acrm!, req.acrh ?? null);
  } else if (decision === CORS_ACTUAL) {
    cors.applyResponseHeaders(response, origin!);
  }
  return { decision, preflight, response };
}

const compile = (p: CorsPolicy, o?: CorsOptions) => new CompiledCors(p, o);

interface Row {
  name: string;
  policy: CorsPolicy;
  options?: CorsOptions;
  req: Req;
  decision: CorsDecision;
  /** Headers of the local 200 answer, or null when the request goes upstream. */
  preflight: string[] | null;
  /** Headers set on the upstream (or later local) response. */
  response: string[];
}

const PREFLIGHT_FIXTURE = ['access-control-allow-methods', 'GET', 'access-control-allow-headers', 'content-type', 'access-control-max-age', '0'];

const rows: Row[] = [
  { name: 'RequestWithoutOrigin', policy: envoyFixture(), req: { method: 'GET' }, decision: CORS_NONE, preflight: null, response: [] },
  {
    name: 'RequestWithOrigin',
    policy: envoyFixture(),
    req: { method: 'GET', origin: 'localhost' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'content-type'],
  },
  { name: 'OptionsRequestWithoutOrigin', policy: envoyFixture(), req: { method: 'OPTIONS' }, decision: CORS_NONE, preflight: null, response: [] },
  {
    name: 'OptionsRequestWithoutAccessRequestMethod (an actual request, forwarded)',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: 'localhost' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'content-type'],
  },
  {
    name: 'empty Origin is no Origin',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: '', acrm: 'GET' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    name: 'empty Access-Control-Request-Method is not a preflight',
    policy: envoyFixture(),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: '' },
    decision: CORS_ACTUAL,
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
    decision: CORS_PREFLIGHT,
    preflight: ['access-control-allow-origin', 'test-host', ...PREFLIGHT_FIXTURE, 'access-control-expose-headers', 'content-type'],
    response: [],
  },
  {
    name: 'OptionsRequestNotMatchingOrigin (forwarded upstream, untouched)',
    policy: envoyFixture({ allowOrigins: [exact('localhost')] }),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    name: 'OptionsRequestEmptyOriginList',
    policy: envoyFixture({ allowOrigins: [] }),
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    name: 'ValidOptionsRequestWithAllowCredentialsTrue',
    policy: envoyFixture({ allowCredentials: true, allowOrigins: [exact('localhost')], exposeHeaders: [] }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    decision: CORS_PREFLIGHT,
    preflight: ['access-control-allow-origin', 'localhost', 'access-control-allow-credentials', 'true', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'ValidOptionsRequestWithAllowCredentialsFalse',
    policy: envoyFixture({ exposeHeaders: [] }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    decision: CORS_PREFLIGHT,
    preflight: ['access-control-allow-origin', 'localhost', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'EncodeWithAllowCredentialsTrue',
    policy: envoyFixture({ allowCredentials: true, exposeHeaders: [] }),
    req: { method: 'GET', origin: 'localhost' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-allow-credentials', 'true'],
  },
  {
    name: 'EncodeWithExposeHeaders',
    policy: envoyFixture({ exposeHeaders: ['custom-header-1'] }),
    req: { method: 'GET', origin: 'localhost' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost', 'access-control-expose-headers', 'custom-header-1'],
  },
  {
    name: 'EncodeWithAllowCredentialsFalse (null means unset: no header either)',
    policy: envoyFixture({ allowCredentials: null, exposeHeaders: [] }),
    req: { method: 'GET', origin: 'localhost' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost'],
  },
  {
    name: 'EncodeWithNonMatchingOrigin',
    policy: envoyFixture({ allowOrigins: [exact('localhost')] }),
    req: { method: 'GET', origin: 'test-host' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    name: 'NoVHostCorsEntry (allow methods unset: no allow-methods header)',
    policy: envoyFixture({ allowMethods: [], exposeHeaders: [] }),
    req: { method: 'OPTIONS', origin: 'localhost', acrm: 'GET' },
    decision: CORS_PREFLIGHT,
    preflight: ['access-control-allow-origin', 'localhost', 'access-control-allow-headers', 'content-type', 'access-control-max-age', '0'],
    response: [],
  },
  {
    name: 'OptionsRequestMatchingOriginByRegex',
    policy: envoyFixture({ allowOrigins: [regex('.*')], exposeHeaders: [] }),
    req: { method: 'OPTIONS', origin: 'www.envoyproxy.io', acrm: 'GET' },
    decision: CORS_PREFLIGHT,
    preflight: ['access-control-allow-origin', 'www.envoyproxy.io', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'OptionsRequestNotMatchingOriginByRegex',
    policy: envoyFixture({ allowOrigins: [regex('.*.envoyproxy.io')] }),
    req: { method: 'OPTIONS', origin: 'www.envoyproxy.com', acrm: 'GET' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    // Envoy ≥ 1.30 forward_not_matching_preflights: false (Istio unmatchedPreflights: IGNORE):
    // the filter answers, without access-control-allow-origin, so the browser fails the preflight.
    name: 'not-matching preflight with unmatchedPreflights IGNORE is answered locally, without allow-origin',
    policy: envoyFixture({ allowOrigins: [exact('localhost')], allowCredentials: true }),
    options: { forwardNotMatchingPreflights: false },
    req: { method: 'OPTIONS', origin: 'test-host', acrm: 'GET' },
    decision: CORS_PREFLIGHT_UNMATCHED,
    preflight: ['access-control-allow-credentials', 'true', ...PREFLIGHT_FIXTURE],
    response: [],
  },
  {
    name: 'unmatchedPreflights IGNORE leaves a not-matching actual request alone',
    policy: envoyFixture({ allowOrigins: [exact('localhost')] }),
    options: { forwardNotMatchingPreflights: false },
    req: { method: 'GET', origin: 'test-host' },
    decision: CORS_NONE,
    preflight: null,
    response: [],
  },
  {
    // Envoy compares the method with "OPTIONS" as is: anything else is an actual request.
    name: 'a method other than exactly OPTIONS is never a preflight',
    policy: envoyFixture({ exposeHeaders: [] }),
    req: { method: 'options', origin: 'localhost', acrm: 'GET' },
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'localhost'],
  },
];

t.test("Envoy's CORS filter table", async (t) => {
  for (const row of rows) {
    const got = run(compile(row.policy, row.options), row.req);
    t.same(got, { decision: row.decision, preflight: row.preflight, response: row.response }, row.name);
  }
});

t.test("Istio's corsPolicy documentation example (ratings-route)", async (t) => {
  // allowOrigins: [{exact: https://example.com}], allowMethods: [POST, GET],
  // allowCredentials: false, allowHeaders: [X-Foo-Bar], maxAge: "24h".
  const cors = compile({
    allowOrigins: [exact('https://example.com')],
    allowMethods: ['POST', 'GET'],
    allowHeaders: ['X-Foo-Bar'],
    exposeHeaders: [],
    maxAgeSeconds: 86400,
    allowCredentials: false,
    forwardUnmatchedPreflights: true,
  });
  t.same(run(cors, { method: 'OPTIONS', origin: 'https://example.com', acrm: 'POST', acrh: 'x-foo-bar' }), {
    decision: CORS_PREFLIGHT,
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
  t.same(run(cors, { method: 'POST', origin: 'https://example.com' }), {
    decision: CORS_ACTUAL,
    preflight: null,
    response: ['access-control-allow-origin', 'https://example.com'],
  });
  for (const origin of ['http://example.com', 'https://example.com.evil.io', 'https://EXAMPLE.com', 'https://example.com:8443']) {
    t.equal(cors.decide('POST', origin, null), CORS_NONE, `${origin} is not allowed (exact, case-sensitive)`);
    t.equal(cors.decide('OPTIONS', origin, 'POST'), CORS_NONE, `${origin}: preflight forwarded (Istio default FORWARD)`);
  }
  t.equal(CORS_RESPONSE_DETAILS, 'cors_response');
});

t.test('origin matchers: exact, prefix, regex (RE2, full match), and "*"', async (t) => {
  const cors = compile(
    envoyFixture({
      allowOrigins: [exact('https://a.example'), prefix('https://dev-'), regex('https://[a-z]+\\.example\\.org'), regex('https://(?P<team>[a-z]+)\\.corp')],
    }),
  );
  const allowed = ['https://a.example', 'https://dev-anything', 'https://shop.example.org', 'https://infra.corp'];
  const denied = ['https://b.example', 'https://prod-x', 'https://shop.example.org.evil', 'xhttps://shop.example.org', 'https://Infra.corp', '*'];
  for (const o of allowed) t.equal(cors.isOriginAllowed(o), true, `${o} allowed`);
  for (const o of denied) t.equal(cors.isOriginAllowed(o), false, `${o} denied`);

  // Envoy tries each matcher against the literal "*" first: such a matcher allows every origin.
  for (const m of [exact('*'), prefix('*'), prefix(''), regex('.*'), regex('\\*')]) {
    const any = compile(envoyFixture({ allowOrigins: [m] }));
    t.equal(any.isOriginAllowed('https://whatever.test'), true, `${m.kind} ${JSON.stringify(m.value)} allows any origin`);
  }
  t.equal(compile(envoyFixture({ allowOrigins: [regex('https://.*')] })).isOriginAllowed('null'), false, 'a regex that does not match "*" does not');
  t.throws(() => compile(envoyFixture({ allowOrigins: [regex('(')] })), 'a bad regex fails at compile time');
});

t.test('allow methods / headers "*" echo what the preflight asked for', async (t) => {
  const cors = compile(envoyFixture({ allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: [], maxAgeSeconds: null }));
  const out: string[] = [];
  cors.pushPreflightHeaders(out, CORS_PREFLIGHT, 'https://a', 'DELETE', 'x-a,x-b');
  t.same(out, ['access-control-allow-origin', 'https://a', 'access-control-allow-methods', 'DELETE', 'access-control-allow-headers', 'x-a,x-b']);
  const none: string[] = [];
  cors.pushPreflightHeaders(none, CORS_PREFLIGHT, 'https://a', 'PUT', null);
  t.same(
    none,
    ['access-control-allow-origin', 'https://a', 'access-control-allow-methods', 'PUT', 'access-control-allow-headers', ''],
    'Envoy sets the echoed header even when the request sent no Access-Control-Request-Headers',
  );
  const listed = compile(envoyFixture({ allowHeaders: ['*', 'x-a'] }));
  t.equal(listed.allowHeaders, '*,x-a', 'only exactly "*" echoes');
});

t.test('values are joined and precomputed once', async (t) => {
  const cors = compile(envoyFixture({ allowMethods: ['GET', 'POST'], allowHeaders: ['a', 'b'], exposeHeaders: ['x', 'y'], maxAgeSeconds: 300 }));
  t.equal(cors.allowMethods, 'GET,POST');
  t.equal(cors.allowHeaders, 'a,b');
  t.equal(cors.exposeHeaders, 'x,y');
  t.equal(cors.maxAge, '300');
  t.equal(compile(envoyFixture({ maxAgeSeconds: null })).maxAge, '', 'no maxAge: no header');
  t.equal(cors.forwardNotMatchingPreflights, true, "Istio's default is FORWARD");
});

t.test('applyResponseHeaders replaces what the upstream sent, keeps everything else', async (t) => {
  const cors = compile(envoyFixture({ allowCredentials: true, exposeHeaders: ['x-total'] }));
  const out = [
    'content-type',
    'text/plain',
    'Access-Control-Allow-Origin',
    '*',
    'access-control-allow-credentials',
    'false',
    'access-control-allow-origin',
    'https://dup',
    'x-other',
    '1',
  ];
  cors.applyResponseHeaders(out, 'https://a');
  t.same(out, [
    'content-type',
    'text/plain',
    'access-control-allow-origin',
    'https://a',
    'access-control-allow-credentials',
    'true',
    'x-other',
    '1',
    'access-control-expose-headers',
    'x-total',
  ]);

  const plain = compile(envoyFixture({ exposeHeaders: [] }));
  const upstream = ['access-control-expose-headers', 'x-upstream', 'access-control-allow-credentials', 'true'];
  plain.applyResponseHeaders(upstream, 'https://b');
  t.same(
    upstream,
    ['access-control-expose-headers', 'x-upstream', 'access-control-allow-credentials', 'true', 'access-control-allow-origin', 'https://b'],
    'headers the policy does not set are left as the upstream sent them',
  );
});
