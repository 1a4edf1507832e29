// RequestAuthentication end to end: tokens signed in the test (node:crypto, independent of
// the proxy's verifier), a JWKS served by a real HTTP server on 127.0.0.1 (jwksUri), Istio's
// own sample token and key set, and AuthorizationPolicy requestPrincipals on top. Replies are
// Envoy's: 401 with jwt_verify_lib's message and `www-authenticate`, 403 for a disallowed
// audience, 403 "RBAC: access denied" when a policy requires a token the request lacks.
import { generateKeyPairSync, type KeyObject, sign as cryptoSign, constants } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { startBackend, type Echo } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CORPUS, MeshDir, startRemora } from './helpers/remora.ts';

const ISS = 'https://issuer.test';
const now = () => Math.floor(Date.now() / 1000);
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

type Alg = 'RS256' | 'RS384' | 'PS256' | 'ES256' | 'ES384' | 'EdDSA';

interface Key {
  readonly alg: Alg;
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly jwk: Record<string, unknown>;
}

function makeKey(alg: Alg, kid: string): Key {
  const pair =
    alg === 'EdDSA'
      ? generateKeyPairSync('ed25519')
      : alg.startsWith('ES')
        ? generateKeyPairSync('ec', { namedCurve: alg === 'ES256' ? 'P-256' : 'P-384' })
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { alg, kid, privateKey: pair.privateKey, jwk: { ...pair.publicKey.export({ format: 'jwk' }), kid, alg } };
}

/** A compact JWS, signed the way RFC 7518 says for each algorithm. */
function sign(key: Key, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): string {
  const payload = { iss: ISS, sub: 'alice', aud: 'shop', exp: now() + 3600, ...claims };
  const input = `${b64({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })}.${b64(payload)}`;
  const hash = key.alg === 'EdDSA' ? null : `sha${key.alg.slice(2)}`;
  const sig =
    key.alg === 'PS256'
      ? cryptoSign(hash, Buffer.from(input), { key: key.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
      : key.alg.startsWith('ES')
        ? cryptoSign(hash, Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
        : cryptoSign(hash, Buffer.from(input), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

/** The issuer's JWKS endpoint: a real server whose keys the test rotates, and which it can take down. */
class JwksServer {
  keys: Key[] = [];
  requests = 0;
  #server: Server | null = null;
  port = 0;
  async start(): Promise<void> {
    const server = createServer((_req, res) => {
      this.requests++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: this.keys.map((k) => k.jwk) }));
    });
    await new Promise<void>((r) => server.listen(this.port, '127.0.0.1', r));
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
  }
  async stop(): Promise<void> {
    const s = this.#server;
    if (s === null) return;
    this.#server = null;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

const DEMO_JWT = readFileSync(join(CORPUS, 'jwt/demo.jwt'), 'utf8').trim();
const GROUPS_JWT = readFileSync(join(CORPUS, 'jwt/groups-scope.jwt'), 'utf8').trim();
const ISTIO_JWKS = readFileSync(join(CORPUS, 'jwt/jwks.json'), 'utf8').trim();

t.test('gateway: RequestAuthentication with a jwksUri and Istio sample keys, AuthorizationPolicy requiring tokens', async (t) => {
  const backend = await startBackend('web');
  const jwks = new JwksServer();
  const k1 = makeKey('RS256', 'k1');
  const others = (['RS384', 'PS256', 'ES256', 'ES384', 'EdDSA'] as const).map((alg) => makeKey(alg, `k-${alg}`));
  jwks.keys = [k1, ...others];
  await jwks.start();
  const port = await freePort();
  const indent = (s: string) => JSON.stringify(s);
  const authn = (audiences: string[]) =>
    doc(
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: issuer-test, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: ${ISS}
    jwksUri: http://127.0.0.1:${jwks.port}/jwks.json
    audiences: [${audiences.join(', ')}]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - { header: x-jwt-sub, claim: sub }
`,
      // Istio's authz-jwt task: the sample issuer with its inline key set.
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt-example, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: ${indent(ISTIO_JWKS)}
    forwardOriginalToken: true
`,
    );
  const mesh = new MeshDir({
    'routes.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: backend.port }]),
      routeAll('gw'),
    ),
    'authn.yaml': authn(['shop']),
    'authz.yaml': doc(
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: require-jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
  rules:
  - from:
    - source: { requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"] }
    to:
    - operation: { paths: ["/headers"] }
  - from:
    - source: { requestPrincipals: ["${ISS}/*"] }
    to:
    - operation: { paths: ["/api/*"] }
  - to:
    - operation: { paths: ["/groups"] }
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
  - to:
    - operation: { paths: ["/public/*"] }
`,
    ),
  });
  t.teardown(async () => {
    await backend.close();
    await jwks.stop();
    mesh.cleanup();
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(() => remora.stop());
  const send = (path: string, token: string | null, headers: Record<string, string> = {}): Promise<Reply> =>
    request(port, path, { headers: { host: 'shop.example.com', ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...headers } });

  t.test('a table of good and bad tokens', async (t) => {
    const good = sign(k1);
    const [h, p, s] = good.split('.') as [string, string, string];
    const stranger = makeKey('RS256', 'k1');
    const cases: [string, string | null, number, string | null][] = [
      ['no token', null, 200, null],
      ['RS256', good, 200, null],
      ...others.map((k): [string, string, number, null] => [k.alg, sign(k, { sub: `user-${k.alg}` }), 200, null]),
      ['audience list with the accepted one', sign(k1, { aud: ['other', 'shop'] }), 200, null],
      ['expired an hour ago', sign(k1, { exp: now() - 3600 }), 401, 'Jwt is expired'],
      ['expired 20 s ago (within the clock skew)', sign(k1, { exp: now() - 20 }), 200, null],
      ['not valid for an hour', sign(k1, { nbf: now() + 3600 }), 401, 'Jwt not yet valid'],
      ['an issuer no rule names', sign(k1, { iss: 'https://other.test' }), 401, 'Jwt issuer is not configured'],
      ['wrong audience', sign(k1, { aud: 'billing' }), 403, 'Audiences in Jwt are not allowed'],
      ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${p}.${s}`, 401, 'Jwt header [alg] is not supported'],
      ['RS256 header on the EdDSA key', sign(others[4]!, {}, { alg: 'RS256' }), 401, "Jwks doesn't have key to match kid or alg from Jwt"],
      ['tampered signature', `${h}.${p}.${s.slice(0, -6)}AAAAAA`, 401, 'Jwt verification fails'],
      ['payload changed', `${h}.${b64({ iss: ISS, sub: 'root', aud: 'shop', exp: now() + 3600 })}.${s}`, 401, 'Jwt verification fails'],
      ['signed by a stranger under a known kid', sign(stranger), 401, 'Jwt verification fails'],
      ['not a JWT', 'hello', 401, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
    ];
    for (const [name, token, status, body] of cases) {
      const r = await send('/public/x', token);
      t.equal(r.status, status, `${name}: ${status}`);
      if (body !== null) {
        t.equal(r.body, body, `${name}: "${body}"`);
        t.equal(r.headers['www-authenticate'], 'Bearer realm="http://shop.example.com/public/x", error="invalid_token"', `${name}: www-authenticate`);
      }
    }
    // The token whose header alg fits no key of its kid asked for one refresh (a rotation may explain it).
    t.equal(jwks.requests, 2, 'one fetch, and one refresh for the unknown kid/alg pair');
  });

  t.test('what the upstream gets from a verified token', async (t) => {
    const token = sign(k1, { sub: 'bob' });
    const r = await send('/public/echo', token);
    t.equal(r.status, 200);
    const seen = r.json<Echo>().headers;
    t.equal(seen['authorization'], undefined, 'the token is removed (forwardOriginalToken: false)');
    t.equal(seen['x-jwt-sub'], 'bob', 'outputClaimToHeaders');
    t.same(JSON.parse(Buffer.from(seen['x-jwt-payload'] as string, 'base64url').toString()).sub, 'bob', 'outputPayloadToHeader');
    const q = await send(`/public/q?access_token=${token}`, null);
    t.equal(q.status, 200, 'the token in ?access_token=');
    t.equal(q.json<Echo>().headers['x-jwt-sub'], 'bob');
    t.equal((await send('/public/q?access_token=nope', null)).status, 401, 'a bad one there is refused');
  });

  t.test("Istio's require-JWT example with the sample token (authz-jwt task)", async (t) => {
    const none = await send('/headers', null);
    t.equal(none.status, 403, 'no token: 403 from RBAC');
    t.equal(none.body, 'RBAC: access denied');
    const ok = await send('/headers', DEMO_JWT);
    t.equal(ok.status, 200, 'demo.jwt: 200');
    t.equal(ok.json<Echo>().headers['authorization'], `Bearer ${DEMO_JWT}`, 'forwardOriginalToken: true keeps it');
    const bad = await send('/headers', 'invalidToken');
    t.equal(bad.status, 401, 'an invalid token: 401');
    t.equal(bad.body, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    const [dh, dp] = DEMO_JWT.split('.');
    const forged = await send('/headers', `${dh}.${dp}.${GROUPS_JWT.split('.')[2]}`);
    t.equal(forged.status, 401, "the sample payload under another token's signature: 401");
    t.equal(forged.body, 'Jwt verification fails');
    t.equal((await send('/headers', sign(k1))).status, 403, 'a valid token of another principal: 403');
    t.equal((await send('/groups', GROUPS_JWT)).status, 200, 'groups-scope.jwt has group1: 200');
    t.equal((await send('/groups', DEMO_JWT)).status, 403, 'demo.jwt has no groups: 403');
  });

  t.test('requestPrincipals with a wildcard subject', async (t) => {
    t.equal((await send('/api/orders', null)).status, 403, 'no token: 403');
    t.equal((await send('/api/orders', sign(k1, { sub: 'carol' }))).status, 200, 'any subject of the issuer');
    t.equal((await send('/api/orders', DEMO_JWT)).status, 403, 'another issuer: 403');
  });

  t.test('the access log names the failure', async (t) => {
    const before = remora.accessLog.length;
    await send('/public/logged', sign(k1, { exp: now() - 3600 }));
    await waitFor('access log line', () => remora.accessLog.slice(before).some((l) => l.includes('"GET /public/logged HTTP/1.1" 401 - jwt_authn_access_denied{Jwt_is_expired}')));
    t.pass('"GET /public/logged HTTP/1.1" 401 - jwt_authn_access_denied{Jwt_is_expired}');
  });

  t.test('a RequestAuthentication changed at run time applies; the fetched keys are kept', async (t) => {
    const billing = sign(k1, { aud: 'billing', sub: 'reload' });
    t.equal((await send('/public/reload', billing)).status, 403, 'audience billing not accepted yet');
    const fetched = jwks.requests;
    mesh.write('authn.yaml', authn(['shop', 'billing']));
    await waitFor('the new audience applies', async () => (await send('/public/reload', billing)).status === 200, 15_000);
    t.pass('audience billing accepted after the reload');
    t.equal(jwks.requests, fetched, 'no JWKS fetch for the new config: the cache outlived the old one');
  });

  t.test('key rotation: a token with a new kid refreshes the keys', async (t) => {
    const k2 = makeKey('ES256', 'k2');
    const pause = () => new Promise((r) => setTimeout(r, 1_100)); // the refresh rate limit
    await pause();
    const before = jwks.requests;
    t.equal((await send('/public/r', sign(k2))).status, 401, 'not published yet: 401');
    t.equal(jwks.requests, before + 1, 'the unknown kid asked for a refresh');
    t.equal((await send('/public/r', sign(k2, { sub: 'again' }))).status, 401, 'right after: still 401');
    t.equal(jwks.requests, before + 1, 'no second refresh within the interval');
    jwks.keys = [k1, ...others, k2];
    await pause();
    t.equal((await send('/public/r', sign(k2, { sub: 'rotated' }))).status, 200, 'published: the new kid verifies');
    t.equal(jwks.requests, before + 2, 'one more refresh');
    t.equal((await send('/public/r', sign(k1))).status, 200, 'the old key still verifies');
  });

  t.test('JWKS server down: cached keys keep working', async (t) => {
    await jwks.stop();
    t.equal((await send('/public/d', sign(k1, { sub: 'down1' }))).status, 200, 'k1');
    t.equal((await send('/public/d', sign(others[2]!, { sub: 'down2' }))).status, 200, 'ES256 key');
    const k3 = makeKey('RS256', 'k3');
    const r = await send('/public/d', sign(k3));
    t.equal(r.status, 401, 'an unknown kid cannot be fetched: 401');
    t.equal(r.body, "Jwks doesn't have key to match kid or alg from Jwt");
    t.equal((await send('/public/d', sign(k1, { sub: 'down3' }))).status, 200, 'and k1 still works after the failed refresh');
  });
});

t.test('sidecar inbound: RequestAuthentication selecting the workload', async (t) => {
  const app = await startBackend('httpbin');
  const key = makeKey('ES256', 'side');
  const mesh = new MeshDir({
    'authn.yaml': `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  jwtRules:
  - issuer: ${ISS}
    jwks: ${JSON.stringify(JSON.stringify({ keys: [key.jwk] }))}
    fromHeaders: [{ name: x-jwt-assertion }]
`,
  });
  t.teardown(async () => {
    await app.close();
    mesh.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=httpbin', '--namespace', 'foo']);
  t.teardown(() => remora.stop());
  const send = (headers: Record<string, string>) => request(remora.ports.inbound, '/get', { headers: { host: 'httpbin.foo:8000', ...headers } });
  const ok = await send({ 'x-jwt-assertion': sign(key) });
  t.equal(ok.status, 200, 'valid token in the custom header');
  t.equal(ok.json<Echo>().headers['x-jwt-assertion'], undefined, 'removed before the app');
  const bad = await send({ 'x-jwt-assertion': sign(key, { exp: now() - 3600 }) });
  t.equal(bad.status, 401);
  t.equal(bad.body, 'Jwt is expired');
  t.equal((await send({})).status, 200, 'no token: passes (no AuthorizationPolicy)');
  t.equal((await send({ authorization: `Bearer ${sign(key, { exp: now() - 3600 })}` })).status, 200, 'Authorization is not a location of this rule');
});

t.test('the client leaves while the proxy waits for the JWKS: nothing breaks, the next request is answered', async (t) => {
  const app = await startBackend('httpbin');
  const key = makeKey('RS256', 'slow');
  let fetches = 0;
  const slow = createServer((_req, res) => {
    fetches++;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [key.jwk] }));
    }, 400);
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  const mesh = new MeshDir({
    'authn.yaml': `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: httpbin, namespace: foo }
spec:
  jwtRules:
  - issuer: ${ISS}
    jwksUri: http://127.0.0.1:${(slow.address() as AddressInfo).port}/keys
`,
  });
  t.teardown(async () => {
    await app.close();
    slow.closeAllConnections();
    await new Promise<void>((r) => slow.close(() => r()));
    mesh.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=httpbin', '--namespace', 'foo']);
  t.teardown(() => remora.stop());
  const inbound = remora.ports.inbound;

  // A request that gives up after 100 ms, while the JWKS takes 400.
  const gone = await request(inbound, '/get', { headers: { host: 'httpbin.foo:8000', authorization: `Bearer ${sign(key)}` }, timeoutMs: 100 }).then(
    () => 'answered',
    (err: Error) => err.message,
  );
  t.match(gone, /timed out/, 'the client gave up first');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(app.seen.length, 0, 'the abandoned request never reached the app');
  const ok = await request(inbound, '/get', { headers: { host: 'httpbin.foo:8000', authorization: `Bearer ${sign(key, { sub: 'next' })}` } });
  t.equal(ok.status, 200, 'the next request verifies with the keys the first one fetched');
  t.equal(fetches, 1, 'one fetch');
  t.notOk(
    remora.log.some((l) => /\[error\]|filter failed/.test(l)),
    'no error logged',
  );
});
