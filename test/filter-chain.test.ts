// The whole filter chain on one gateway, in Istio's order: JWT authn → authorization →
// local rate limit → fault → the route's header rewrite → router. Each stage sees what the
// one before it did: a request refused by authn or authz costs no rate-limit token, a
// request over the limit is refused before a fault could abort it, and the route's header
// edits apply to what the JWT filter added.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBackend, type Echo } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CORPUS, MeshDir, startRemora } from './helpers/remora.ts';

// Istio's sample issuer: its token (sub = iss = testing@secure.istio.io) and key set.
const DEMO_JWT = readFileSync(join(CORPUS, 'jwt/demo.jwt'), 'utf8').trim();
const ISTIO_JWKS = readFileSync(join(CORPUS, 'jwt/jwks.json'), 'utf8').trim();
const TOKENS = 5;

t.test('jwt-authn → authz → local rate limit → fault → header rewrite, on one gateway', async (t) => {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: backend.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ headers: { x-fault: { exact: abort } } }]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
    route: [{ destination: { host: web } }]
  - route: [{ destination: { host: web } }]
    headers:
      request:
        remove: [x-jwt-iss]
        set: { x-route: main }
`,
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt-example, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: ${JSON.stringify(ISTIO_JWKS)}
    outputClaimToHeaders:
    - { header: x-jwt-sub, claim: sub }
    - { header: x-jwt-iss, claim: iss }
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: require-jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  rules:
  - from: [{ source: { requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"] } }]
`,
      `apiVersion: ratelimit.remora.dev/v1alpha1
kind: LocalRateLimit
metadata: { name: edge, namespace: istio-system }
spec:
  tokenBucket: { maxTokens: ${TOKENS}, tokensPerFill: ${TOKENS}, fillInterval: 3600s }
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  const send = (token: string | null, headers: Record<string, string> = {}): Promise<Reply> =>
    request(port, '/api', { headers: { host: 'shop.example.com', ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...headers } });

  // Refused by authn (a broken token) and by authz (no token): no token of the bucket spent.
  for (let i = 0; i < TOKENS + 2; i++) {
    t.equal((await send(`${DEMO_JWT.slice(0, -4)}AAAA`)).status, 401, 'bad signature: 401 from jwt-authn');
    t.equal((await send(null)).status, 403, 'no token: 403 from authz');
  }
  t.equal(backend.seen.length, 0);

  // The bucket is whole: the first allowed request passes, with the route's header edits
  // applied to what the JWT filter added.
  const ok = await send(DEMO_JWT);
  t.equal(ok.status, 200, 'the bucket was untouched by the refused requests');
  const seen = ok.json<Echo>().headers;
  t.equal(seen['x-jwt-sub'], 'testing@secure.istio.io', 'claim header from jwt-authn');
  t.equal(seen['x-jwt-iss'], undefined, "the route's remove applies to a header the JWT filter added");
  t.equal(seen['x-route'], 'main');
  t.equal(seen['authorization'], undefined, 'the token itself is not forwarded');

  // A fault route: the abort comes after the rate limit, so it spends a token.
  const aborted = await send(DEMO_JWT, { 'x-fault': 'abort' });
  t.equal(aborted.status, 418, 'fault abort');
  for (let i = 2; i < TOKENS; i++) t.equal((await send(DEMO_JWT)).status, 200);
  const limited = await send(DEMO_JWT, { 'x-fault': 'abort' });
  t.equal(limited.status, 429, 'over the limit: refused by the rate limit before the fault could abort');
  t.equal(limited.body, 'local_rate_limited');
  t.equal((await send(null)).status, 403, 'authz still answers first for a request without a token');
  t.equal(backend.seen.length, TOKENS - 1, 'the backend saw only the allowed, non-aborted requests');
  await waitFor('access log', () => remora.accessLog.some((l) => / 429 RL local_rate_limited /.test(l)) && remora.accessLog.some((l) => / 418 FI fault_filter_abort /.test(l)));
});
