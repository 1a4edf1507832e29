// The same Istio YAML, the same requests, the same answers: a gateway configured from files
// and the same gateway configured over ADS (state of the world and incremental) with what
// istiod would push for that YAML. One table of scenarios — weighted subsets, header-match
// routing, a retry on 503, a per-try timeout (504 UT), a fault abort, AuthorizationPolicy
// deny and allow, a JWT-protected path, a redirect, a direct response, an EnvoyFilter local
// rate limit — run by one runner in each mode, asserting status, backend, headers and the
// access log's response flags.
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MODES, startGateway, type ModedGateway } from './helpers/xds-mesh.ts';

const ISS = 'https://issuer.parity.test';

interface World {
  readonly port: number;
  readonly rlPort: number;
  readonly token: string;
  readonly badToken: string;
  readonly gw: ModedGateway;
  readonly backends: Record<'v1' | 'v2' | 'flaky' | 'hang', Backend>;
}

/** The mesh every mode runs: one gateway port for the scenarios, another with a local rate limit. */
function meshYaml(port: number, rlPort: number, b: World['backends'], jwks: string): string {
  return doc(
    gateway('gw', port),
    gateway('gw-rl', rlPort),
    serviceEntry('web', 'web.example', [
      { port: b.v1.port, labels: { version: 'v1' } },
      { port: b.v2.port, labels: { version: 'v2' } },
    ]),
    serviceEntry('flaky', 'flaky.example', [{ port: b.flaky.port }]),
    serviceEntry('hang', 'hang.example', [{ port: b.hang.port }]),
    `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web }
spec:
  host: web.example
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
`,
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: scenarios }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /weighted }, headers: { x-version: { exact: v2 } } }]
    route: [{ destination: { host: web.example, subset: v2 } }]
    headers: { response: { set: { x-matched: header } } }
  - match: [{ uri: { prefix: /weighted } }]
    route:
    - { destination: { host: web.example, subset: v1 }, weight: 50 }
    - { destination: { host: web.example, subset: v2 }, weight: 50 }
    headers: { response: { set: { x-matched: weighted } } }
  - match: [{ uri: { prefix: /retry } }]
    route: [{ destination: { host: flaky.example } }]
    retries: { attempts: 2, retryOn: 5xx }
  - match: [{ uri: { prefix: /per-try } }]
    route: [{ destination: { host: hang.example } }]
    timeout: 700ms
    retries: { attempts: 5, perTryTimeout: 200ms, retryOn: 5xx }
  - match: [{ uri: { prefix: /fault } }]
    route: [{ destination: { host: web.example, subset: v1 } }]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
  - match: [{ uri: { prefix: /old } }]
    redirect: { uri: /new, authority: new.example, redirectCode: 301 }
  - match: [{ uri: { prefix: /direct } }]
    directResponse: { status: 203, body: { string: "straight from the gateway" } }
  - route: [{ destination: { host: web.example, subset: v1 } }]
`,
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: limited }
spec:
  hosts: ["*"]
  gateways: [gw-rl]
  http:
  - route: [{ destination: { host: web.example, subset: v1 } }]
`,
    `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin/*"] } }]
`,
    `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
  rules:
  - to: [{ operation: { notPaths: ["/private/*", "/jwt/*"] } }]
  - from: [{ source: { requestPrincipals: ["${ISS}/*"] } }]
    to: [{ operation: { paths: ["/jwt/*"] } }]
`,
    `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: issuer, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: ${ISS}
    jwks: ${JSON.stringify(jwks)}
    outputClaimToHeaders: [{ header: x-jwt-sub, claim: sub }]
`,
    `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: local-ratelimit, namespace: istio-system }
spec:
  workloadSelector:
    labels: { istio: ingressgateway }
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        portNumber: ${rlPort}
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: { name: envoy.filters.http.router }
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: { max_tokens: 3, tokens_per_fill: 3, fill_interval: 3600s }
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: { numerator: 100, denominator: HUNDRED }
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: { numerator: 100, denominator: HUNDRED }
`,
  );
}

/** One request with a request id, and the access log line it left. */
async function call(t: Test, w: World, path: string, headers: Record<string, string> = {}, port = w.port): Promise<{ r: Reply; log: string }> {
  const id = `${w.gw.mode}-${path}-${Math.random().toString(36).slice(2, 8)}`;
  const r = await request(port, path, { headers: { host: 'shop.example', 'x-request-id': id, ...headers } });
  let log = '';
  await waitFor(`the access log line of ${path}`, () => (log = w.gw.remora.accessLog.find((l) => l.includes(`"${id}"`)) ?? '') !== '', 3_000).catch(() => {});
  t.not(log, '', `${path}: logged`);
  return { r, log };
}

const backendOf = (r: Reply): unknown => r.headers['x-backend'];

/** The scenarios: each names the behaviour it asserts. */
const SCENARIOS: { readonly name: string; readonly run: (t: Test, w: World) => Promise<void> }[] = [
  {
    name: 'weighted subsets: 50/50 reaches both v1 and v2',
    run: async (t, w) => {
      const seen = new Set<unknown>();
      for (let i = 0; i < 40 && seen.size < 2; i++) {
        const r = await request(w.port, '/weighted', { headers: { host: 'shop.example' } });
        t.equal(r.status, 200);
        t.equal(r.headers['x-matched'], 'weighted');
        seen.add(backendOf(r));
      }
      t.same([...seen].sort(), ['v1', 'v2'], 'both subsets served');
    },
  },
  {
    name: 'header match: x-version: v2 always reaches subset v2',
    run: async (t, w) => {
      for (let i = 0; i < 6; i++) {
        const { r, log } = await call(t, w, '/weighted', { 'x-version': 'v2' });
        t.same([r.status, backendOf(r), r.headers['x-matched']], [200, 'v2', 'header']);
        t.match(log, /" 200 - via_upstream /);
      }
    },
  },
  {
    name: 'retry on 503: the second attempt answers 200',
    run: async (t, w) => {
      const before = w.backends.flaky.seen.length;
      const { r, log } = await call(t, w, '/retry');
      t.equal(r.status, 200);
      t.equal(backendOf(r), 'flaky');
      t.same(w.backends.flaky.seen.slice(before).map((s) => s.headers['x-envoy-attempt-count']), ['1', '2'], 'a 503, then the retry');
      t.match(log, /" 200 - via_upstream /);
    },
  },
  {
    name: 'per-try timeout: retried on each per-try timeout, then 504 UT at the route timeout',
    run: async (t, w) => {
      const before = w.backends.hang.seen.length;
      const t0 = Date.now();
      const { r, log } = await call(t, w, '/per-try');
      const elapsed = Date.now() - t0;
      t.equal(r.status, 504);
      t.equal(r.body, 'upstream request timeout');
      t.ok(elapsed >= 650 && elapsed < 1_500, `answered at the route timeout (${elapsed} ms)`);
      t.ok(w.backends.hang.seen.length - before >= 3, 'each per-try timeout led to another try');
      t.match(log, /" 504 UT upstream_response_timeout /);
    },
  },
  {
    name: 'fault abort: 418 FI without reaching the upstream',
    run: async (t, w) => {
      const before = w.backends.v1.seen.length;
      const { r, log } = await call(t, w, '/fault');
      t.equal(r.status, 418);
      t.equal(r.body, 'fault filter abort');
      t.equal(w.backends.v1.seen.length, before, 'nothing reached v1');
      t.match(log, /" 418 FI fault_filter_abort /);
    },
  },
  {
    name: 'AuthorizationPolicy: a DENY rule answers 403 naming the rule; ALLOW lets the rest through; a path no ALLOW rule covers is 403',
    run: async (t, w) => {
      const denied = await call(t, w, '/admin/users');
      t.same([denied.r.status, denied.r.body], [403, 'RBAC: access denied']);
      t.match(denied.log, /" 403 - rbac_access_denied_matched_policy\[ns\[istio-system\]-policy\[deny-admin\]-rule\[0\]\] /);
      const unlisted = await call(t, w, '/private/x');
      t.same([unlisted.r.status, unlisted.r.body], [403, 'RBAC: access denied']);
      t.match(unlisted.log, /" 403 - rbac_access_denied_matched_policy\[none\] /);
      const allowed = await call(t, w, '/shop');
      t.same([allowed.r.status, backendOf(allowed.r)], [200, 'v1']);
    },
  },
  {
    name: 'JWT: no token 403 (no ALLOW rule matches), a bad token 401, a good one 200 with the claim forwarded',
    run: async (t, w) => {
      const missing = await call(t, w, '/jwt/orders');
      t.same([missing.r.status, missing.r.body], [403, 'RBAC: access denied']);
      const bad = await call(t, w, '/jwt/orders', { authorization: `Bearer ${w.badToken}` });
      t.same([bad.r.status, bad.r.body], [401, 'Jwt verification fails']);
      t.match(bad.log, /" 401 - jwt_authn_access_denied\{Jwt_verification_fails\} /);
      const good = await call(t, w, '/jwt/orders', { authorization: `Bearer ${w.token}` });
      t.same([good.r.status, backendOf(good.r)], [200, 'v1']);
      const echoed = JSON.parse(good.r.body) as { headers: Record<string, string> };
      t.equal(echoed.headers['x-jwt-sub'], 'alice', 'the sub claim reached the upstream');
      t.match(good.log, /" 200 - via_upstream /);
    },
  },
  {
    name: 'redirect: 301 to the new authority and path',
    run: async (t, w) => {
      const { r, log } = await call(t, w, '/old/page');
      t.equal(r.status, 301);
      t.equal(r.headers.location, 'http://new.example/new');
      t.match(log, /" 301 - /);
    },
  },
  {
    name: 'direct response: status and body from the route',
    run: async (t, w) => {
      const { r, log } = await call(t, w, '/direct');
      t.same([r.status, r.body], [203, 'straight from the gateway']);
      t.match(log, /" 203 - direct_response /);
    },
  },
  {
    name: 'EnvoyFilter local rate limit on one port: 3 pass, then 429 RL; the other port is not limited',
    run: async (t, w) => {
      const statuses: number[] = [];
      let lastLog = '';
      for (let i = 0; i < 5; i++) {
        const { r, log } = await call(t, w, '/limited', {}, w.rlPort);
        statuses.push(r.status);
        lastLog = log;
        if (r.status === 429) t.equal(r.body, 'local_rate_limited');
      }
      t.same(statuses, [200, 200, 200, 429, 429]);
      t.match(lastLog, /" 429 RL local_rate_limited /);
      for (let i = 0; i < 5; i++) t.equal((await request(w.port, '/shop', { headers: { host: 'x' } })).status, 200, 'the scenario port has no limit');
    },
  },
];

async function world(t: Test, mode: (typeof MODES)[number]): Promise<World> {
  const backends = {
    v1: await startBackend('v1'),
    v2: await startBackend('v2'),
    // 503 to a first attempt, the echo to a retry.
    flaky: await startBackend('flaky', (req, res) => {
      if (req.headers['x-envoy-attempt-count'] === '1') {
        res.writeHead(503);
        res.end('try again');
        return;
      }
      res.writeHead(200, { 'x-backend': 'flaky' });
      res.end('ok');
    }),
    // Never answers; closing the backend ends what it holds.
    hang: await startBackend('hang', () => {}),
  };
  t.teardown(() => Promise.all(Object.values(backends).map((b) => b.close())));
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const other = await generateKeyPair('RS256');
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' }] });
  const sign = (key: Parameters<SignJWT["sign"]>[0]) =>
    new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(ISS).setIssuedAt().setExpirationTime('1h').sign(key);
  const [port, rlPort] = [await freePort(), await freePort()];
  const gw = await startGateway(mode, meshYaml(port, rlPort, backends, jwks));
  t.teardown(() => gw.stop());
  return { port, rlPort, token: await sign(privateKey), badToken: await sign(other.privateKey), gw, backends };
}

for (const mode of MODES) {
  t.test(`configured from ${mode === 'files' ? 'files' : `xDS (${mode === 'sotw' ? 'state of the world' : 'delta'})`}`, async (t) => {
    const w = await world(t, mode);
    for (const s of SCENARIOS) await t.test(s.name, (t) => s.run(t, w));
  });
}
