// Envoy's jwt_authn beyond what istiod writes for RequestAuthentication, on a real gateway:
// the listener's JwtAuthentication is replaced with one using `requires_all`, bare
// `allow_missing` and `allow_missing_or_failed`, a rule without a requirement, an exact path
// rule, and a `requirement_map` that routes pick by `PerRouteConfig` (typed_per_filter_config)
// or that turns the filter off for a route. Tokens are signed here with jose; requests go
// through real sockets to an echo backend, which shows what the upstream received.
import type { JwtAuthenticationJson, PerRouteConfigJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.js';
import type { ProxyConfig, Route } from '@remora/config';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t from 'tap';
import { startBackend, type Echo } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const JWT_AUTHN = 'envoy.filters.http.jwt_authn';
const ISS_A = 'https://a.example';
const ISS_B = 'https://b.example';

/** Two providers reading their own headers; a's verified payload goes to `x-a-payload`. */
const CONFIG = (jwksA: string, jwksB: string): JwtAuthenticationJson => ({
  providers: {
    a: { issuer: ISS_A, localJwks: { inlineString: jwksA }, fromHeaders: [{ name: 'x-token-a' }], forwardPayloadHeader: 'x-a-payload', payloadInMetadata: 'payload' },
    b: { issuer: ISS_B, localJwks: { inlineString: jwksB }, fromHeaders: [{ name: 'x-token-b' }], payloadInMetadata: 'payload' },
  },
  rules: [
    { match: { prefix: '/all' }, requires: { requiresAll: { requirements: [{ providerName: 'a' }, { providerName: 'b' }] } } },
    { match: { prefix: '/missing' }, requires: { allowMissing: {} } },
    { match: { prefix: '/failed' }, requires: { allowMissingOrFailed: {} } },
    { match: { path: '/open' } },
    { match: { prefix: '/' }, requires: { requiresAny: { requirements: [{ providerName: 'a' }, { providerName: 'b' }] } } },
  ],
  requirementMap: {
    'only-b': { providerName: 'b' },
    aud: { providerAndAudiences: { providerName: 'a', audiences: ['special'] } },
  },
});

/** The routes that carry a PerRouteConfig, by the VirtualService route name. */
const PER_ROUTE: Record<string, PerRouteConfigJson> = {
  disabled: { disabled: true },
  'only-b': { requirementName: 'only-b' },
  aud: { requirementName: 'aud' },
  typo: { requirementName: 'nope' },
};

/** `config` with the gateway's jwt_authn filter replaced and the routes' per-filter configs set. */
function withEnvoyJwt(config: ProxyConfig, jwt: JwtAuthenticationJson): ProxyConfig {
  const out = structuredClone(config) as { -readonly [K in keyof ProxyConfig]: ProxyConfig[K] };
  let replaced = 0;
  for (const l of out.listeners) {
    for (const f of l.httpFilters) {
      if (f.name !== JWT_AUTHN) continue;
      (f as { config: unknown }).config = jwt;
      replaced++;
    }
  }
  if (replaced === 0) throw new Error('the gateway has no jwt_authn filter to replace');
  for (const rc of out.routeConfigs) {
    for (const vh of rc.virtualHosts) {
      for (const r of vh.routes) {
        const per = PER_ROUTE[r.name];
        if (per !== undefined) (r as { filterConfigs: Route['filterConfigs'] }).filterConfigs = { ...r.filterConfigs, [JWT_AUTHN]: per };
      }
    }
  }
  return out as ProxyConfig;
}

t.test('requires_all, allow_missing, allow_missing_or_failed, requirement_map and per-route configs over HTTP', async (t) => {
  const keyA = await generateKeyPair('RS256');
  const keyB = await generateKeyPair('ES256');
  const jwks = async (k: Parameters<typeof exportJWK>[0], kid: string, alg: string) => JSON.stringify({ keys: [{ ...(await exportJWK(k)), kid, alg }] });
  const jwksA = await jwks(keyA.publicKey, 'a', 'RS256');
  const jwksB = await jwks(keyB.publicKey, 'b', 'ES256');
  const signA = (claims: Record<string, unknown> = {}) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'a' }).setIssuer(ISS_A).setSubject('alice').setExpirationTime('1h').sign(keyA.privateKey);
  const signB = () => new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'b' }).setIssuer(ISS_B).setSubject('bob').setExpirationTime('1h').sign(keyB.privateKey);
  const a = await signA();
  const aSpecial = await signA({ aud: 'special' });
  const b = await signB();
  const badA = `${a.slice(0, -6)}AAAAAA`;
  const badB = `${b.slice(0, -6)}AAAAAA`;

  const web = await startBackend('web');
  const port = await freePort();
  const route = (name: string, prefix: string) => `  - name: ${name}\n    match: [{ uri: { prefix: ${prefix} } }]\n    route: [{ destination: { host: web } }]\n`;
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: web.port }]),
      // Puts jwt_authn in the gateway's chain; the test then swaps in its own JwtAuthentication.
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: ${ISS_A}
    jwks: ${JSON.stringify(jwksA)}
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
${route('disabled', '/disabled')}${route('only-b', '/only-b')}${route('aud', '/aud')}${route('typo', '/typo')}${route('rest', '/')}`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await web.close();
    mesh.cleanup();
  });
  const snapshot = remora.proxy.runtime.snapshot;
  if (snapshot === null) throw new Error('no snapshot');
  await remora.proxy.runtime.apply(withEnvoyJwt(snapshot.config, CONFIG(jwksA, jwksB)));

  const call = async (path: string, tokens: { a?: string; b?: string } = {}) => {
    const headers: Record<string, string> = { host: 'web.example' };
    if (tokens.a !== undefined) headers['x-token-a'] = tokens.a;
    if (tokens.b !== undefined) headers['x-token-b'] = tokens.b;
    const r = await request(port, path, { headers });
    return { status: r.status, body: r.status === 200 ? '' : r.body, seen: r.status === 200 ? r.json<Echo>().headers : null, authenticate: r.headers['www-authenticate'] };
  };

  await t.test('requires_all: both providers must find a valid token', async (t) => {
    const both = await call('/all', { a, b });
    t.equal(both.status, 200);
    t.equal(both.seen?.['x-a-payload'], a.split('.')[1], "a's payload reaches the upstream");
    t.same([both.seen?.['x-token-a'], both.seen?.['x-token-b']], [undefined, undefined], 'verified tokens are not forwarded');
    const onlyA = await call('/all', { a });
    t.same([onlyA.status, onlyA.body], [401, 'Jwt is missing'], "b's token missing");
    t.equal(onlyA.authenticate, 'Bearer realm="http://web.example/all", error="invalid_token"');
    t.same([(await call('/all', { a, b: badB })).status, (await call('/all', { a, b: badB })).body], [401, 'Jwt verification fails'], "a bad token for b fails the whole requirement");
  });

  await t.test('allow_missing: no token passes, a present token must verify', async (t) => {
    t.equal((await call('/missing')).status, 200, 'no token');
    const good = await call('/missing', { a });
    t.same([good.status, good.seen?.['x-a-payload']], [200, a.split('.')[1]], 'a verified token still gives its outputs');
    t.same([(await call('/missing', { a: badA })).status, (await call('/missing', { a: badA })).body], [401, 'Jwt verification fails'], 'a bad token is refused');
  });

  await t.test('allow_missing_or_failed: a bad token passes too, without outputs', async (t) => {
    const bad = await call('/failed', { a: badA });
    t.equal(bad.status, 200, 'a bad token passes');
    t.same([bad.seen?.['x-token-a'], bad.seen?.['x-a-payload']], [badA, undefined], 'the failed token stays, and no payload is added');
    const good = await call('/failed', { a });
    t.same([good.status, good.seen?.['x-a-payload'], good.seen?.['x-token-a']], [200, a.split('.')[1], undefined], 'a good token is verified and consumed');
  });

  await t.test('a rule without requirement leaves its paths unchecked; path is exact', async (t) => {
    t.equal((await call('/open', { a: badA })).status, 200, '/open: not checked');
    t.same([(await call('/open/more')).status, (await call('/open/more')).body], [401, 'Jwt is missing'], '/open/more falls to the prefix / rule');
    t.equal((await call('/open?x=1', { a: badA })).status, 200, 'the query string is not part of the path');
  });

  await t.test('per-route: disabled, a requirement_map entry, provider_and_audiences, an unknown name', async (t) => {
    t.equal((await call('/disabled', { a: badA })).status, 200, 'disabled: nothing is checked');
    t.same([(await call('/only-b', { a })).status, (await call('/only-b', { a })).body], [401, 'Jwt is missing'], "only-b: a's token does not count");
    t.equal((await call('/only-b', { b })).status, 200, "only-b: b's token");
    t.equal((await call('/aud', { a: aSpecial })).status, 200, 'aud: the requirement audience');
    const wrongAud = await call('/aud', { a });
    t.same([wrongAud.status, wrongAud.body], [403, 'Audiences in Jwt are not allowed'], 'aud: a token without it is 403');
    const typo = await call('/typo', { a });
    t.same([typo.status, typo.body], [403, 'Failed JWT authentication: Wrong requirement_name: nope. It should be one of [only-b,aud]']);
    t.equal((await call('/elsewhere', { b })).status, 200, 'other routes: the rules, any of a and b');
  });
});
