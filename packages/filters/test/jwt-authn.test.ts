// JWT authentication as Envoy's jwt_authn decides it for the config istiod emits from a
// RequestAuthentication: tokens signed here with jose, keys inline; each case names the
// status and jwt_verify_lib message Envoy answers with.
import { createHmac } from 'node:crypto';
import t from 'tap';
import { FilterStatus } from '@remora/filters';
import { jwtAuthnFactory } from '@remora/filters/internal';
import type { JWTPayload } from 'jose';
import { compile, istiodConfig, jwksOf, makeKey, rule, run, sign, type TestKey } from './jwt-authn-helpers.ts';
import { FakeRequest, RecordingCallbacks, storeContext } from '@remora/filters/testing';

const ISS = 'https://issuer.example';
const now = () => Math.floor(Date.now() / 1000);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A token signed with HMAC, using the RSA key's public JWK text as the secret. */
async function hsWithPublicKey(key: TestKey, payload: object): Promise<string> {
  const h = Buffer.from(JSON.stringify({ alg: 'HS256', kid: key.kid })).toString('base64url');
  const p = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const mac = createHmac('sha256', JSON.stringify(key.jwk)).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${mac}`;
}

const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'] as const;

t.test('every supported algorithm verifies; a tampered signature does not', async (t) => {
  const keys: TestKey[] = [];
  for (const alg of ALGS) keys.push(await makeKey(alg, `k-${alg}`));
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(...keys) })]);
  for (const key of keys) {
    const token = await sign(key);
    const ok = await run(config, { headers: bearer(token) });
    t.equal(ok.outcome, 'continue', `${key.alg}: verified`);
    t.equal(ok.req.auth?.principal, `${ISS}/alice`, `${key.alg}: principal iss/sub`);
    t.equal(ok.req.requestHeader('authorization'), null, `${key.alg}: the token is not forwarded`);

    const [h, p, s] = token.split('.') as [string, string, string];
    const flipped = s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11);
    const bad = await run(config, { headers: bearer(`${h}.${p}.${flipped}`) });
    t.equal(bad.outcome, 401, `${key.alg}: tampered signature → 401`);
    t.equal(bad.body, 'Jwt verification fails', `${key.alg}: Envoy's message`);
    t.equal(bad.details, 'jwt_authn_access_denied{Jwt_verification_fails}');

    // A payload changed under the original signature.
    const forged = Buffer.from(JSON.stringify({ iss: ISS, sub: 'mallory', exp: now() + 3600 })).toString('base64url');
    t.equal((await run(config, { headers: bearer(`${h}.${forged}.${s}`) })).body, 'Jwt verification fails', `${key.alg}: changed payload`);
  }
});

t.test('a table of good and bad tokens', async (t) => {
  const rsa = await makeKey('RS256', 'rsa');
  const ec = await makeKey('ES256', 'ec');
  const other = await makeKey('RS256', 'rsa'); // same kid, a key the proxy does not know
  const config = compile([rule({ issuer: ISS, audiences: ['https://api.example/', 'svc-b'], jwks: jwksOf(rsa, ec) })]);
  const aud = 'api.example';
  const none = (payload: object) =>
    `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`;
  const cases: [string, () => Promise<string>, number | 'continue', string | null][] = [
    ['good RS256', () => sign(rsa, { aud }), 'continue', null],
    ['good ES256, audience in a list', () => sign(ec, { aud: ['x', 'svc-b'] }), 'continue', null],
    ['audience with scheme and slash matches', () => sign(rsa, { aud: 'http://api.example' }), 'continue', null],
    ['expired', () => sign(rsa, { aud, exp: now() - 120 }), 401, 'Jwt is expired'],
    ['expired within the 60 s clock skew', () => sign(rsa, { aud, exp: now() - 30 }), 'continue', null],
    ['not yet valid', () => sign(rsa, { aud, nbf: now() + 120 }), 401, 'Jwt not yet valid'],
    ['nbf within the clock skew', () => sign(rsa, { aud, nbf: now() + 30 }), 'continue', null],
    ['no exp: never expires', () => sign(rsa, { aud, exp: undefined } as unknown as JWTPayload), 'continue', null],
    ['issuer not configured', () => sign(rsa, { aud, iss: 'https://evil.example' }), 401, 'Jwt issuer is not configured'],
    ['wrong audience', () => sign(rsa, { aud: 'other' }), 403, 'Audiences in Jwt are not allowed'],
    ['no audience', () => sign(rsa, {}), 403, 'Audiences in Jwt are not allowed'],
    ['signed by another key under a known kid', () => sign(other, { aud }), 401, 'Jwt verification fails'],
    ['unknown kid', () => sign(rsa, { aud }, { kid: 'nope' }), 401, "Jwks doesn't have key to match kid or alg from Jwt"],
    ['alg none', async () => `${none({ iss: ISS, sub: 'a', aud })}c2ln`, 401, 'Jwt header [alg] is not supported'],
    ['alg none, empty signature', async () => none({ iss: ISS, sub: 'a', aud }), 401, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
    ['HS256 signed with the RSA public key (algorithm confusion)', () => hsWithPublicKey(rsa, { iss: ISS, aud }), 401, "Jwks doesn't have key to match kid or alg from Jwt"],
    // The RSA key's JWK says RS256: a token claiming ES256 under its kid matches no key.
    ['alg does not fit the key', () => sign(ec, { aud }, { kid: 'rsa' }), 401, "Jwks doesn't have key to match kid or alg from Jwt"],
    ['not a JWT', async () => 'abc.def', 401, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
    ['header not JSON', async () => `${Buffer.from('{nope').toString('base64url')}.e30.c2ln`, 401, 'Jwt header is an invalid JSON'],
    ['iss not a string', () => sign(rsa, { aud, iss: 5 as unknown as string }), 401, 'Jwt payload [iss] field is not a string'],
    ['exp not a number', () => sign(rsa, { aud, exp: 'soon' as unknown as number }), 401, 'Jwt payload [exp] field is not an integer'],
  ];
  for (const [name, make, want, body] of cases) {
    const r = await run(config, { headers: bearer(await make()) });
    t.equal(r.outcome, want, `${name}: ${want}`);
    if (body !== null) t.equal(r.body, body, `${name}: body "${body}"`);
    if (want !== 'continue') t.equal(r.req.auth, null, `${name}: no identity`);
  }
});

t.test('no token passes unauthenticated; authorization decides', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const r = await run(config, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
  t.equal(r.outcome, 'continue');
  t.ok(r.sync, 'without waiting');
  t.equal(r.req.auth, null);
  t.equal(r.req.requestHeader('authorization'), 'Basic dXNlcjpwYXNz', 'another scheme is left alone');
});

t.test('the 401 carries www-authenticate with the request URI, as Envoy', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const r = await run(config, { path: '/a/b?x=1', authority: 'shop.example:8080', headers: bearer(await sign(key, { exp: now() - 3600 })) });
  t.equal(r.outcome, 401);
  t.same(r.cb.headers, [['www-authenticate', 'Bearer realm="http://shop.example:8080/a/b?x=1", error="invalid_token"']]);
});

t.test('what authorization sees: principal, audiences, presenter, claims', async (t) => {
  const key = await makeKey('ES256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const token = await sign(key, { sub: 'bob', aud: ['a', 'b'], azp: 'web-app', scope: 'read  write', groups: ['g1'], nested: { role: 'admin' } });
  const { outcome, req } = await run(config, { headers: bearer(token) });
  t.equal(outcome, 'continue');
  const auth = req.auth!;
  t.equal(auth.principal, `${ISS}/bob`);
  t.equal(auth.issuer, ISS);
  t.equal(auth.subject, 'bob');
  t.same(auth.audiences, ['a', 'b']);
  t.equal(auth.presenter, 'web-app');
  t.same(auth.claims['scope'], ['read', 'write'], 'scope split on spaces, as Istio does');
  t.same(auth.claims['groups'], ['g1']);
  t.same(auth.claims['nested'], { role: 'admin' });
});

t.test('token locations', async (t) => {
  const key = await makeKey('RS256', 'k');
  const token = await sign(key);

  t.test('defaults: Authorization Bearer and access_token', async (t) => {
    const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
    t.equal((await run(config, { headers: bearer(token) })).outcome, 'continue');
    const q = await run(config, { path: `/x?access_token=${token}` });
    t.equal(q.outcome, 'continue', 'query parameter');
    t.equal(q.req.auth?.subject, 'alice');
    t.equal((await run(config, { path: '/x?access_token=garbage' })).outcome, 401, 'a bad token in the parameter');
    t.equal((await run(config, { headers: { 'x-jwt': token } })).req.auth, null, 'another header is not read');
    const spaced = await run(config, { headers: { authorization: `Bearer   ${token}, trailing` } });
    t.equal(spaced.req.auth?.subject, 'alice', 'the run of token characters after the prefix');
    const empty = await run(config, { headers: { authorization: 'Bearer ' } });
    t.equal(empty.outcome, 401, 'a prefix without a token: the whole value is the token, as in Envoy');
    t.equal(empty.body, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    const noIss = await run(config, { headers: bearer(await sign(key, { iss: undefined } as unknown as JWTPayload)) });
    t.equal(noIss.body, 'Jwt issuer is not configured', 'a token without iss');
  });

  t.test('fromHeaders with and without prefix, fromParams, fromCookies', async (t) => {
    const config = compile([
      rule({
        issuer: ISS,
        jwks: jwksOf(key),
        fromHeaders: [
          { name: 'x-jwt-assertion', prefix: '' },
          { name: 'x-token', prefix: 'Token ' },
        ],
        fromParams: ['jwt'],
        fromCookies: ['session'],
      }),
    ]);
    const h = await run(config, { headers: { 'x-jwt-assertion': token } });
    t.equal(h.outcome, 'continue', 'header without prefix');
    t.equal(h.req.requestHeader('x-jwt-assertion'), null, 'removed before the upstream');
    t.equal((await run(config, { headers: { 'x-token': `Token ${token}` } })).req.auth?.subject, 'alice', 'header with prefix');
    t.equal((await run(config, { headers: { 'x-token': token } })).req.auth, null, 'prefix missing: no token there');
    const p = await run(config, { path: `/p?a=1&jwt=${token}` });
    t.equal(p.req.auth?.subject, 'alice', 'parameter');
    const c = await run(config, { headers: { cookie: `theme=dark; session=${token}` } });
    t.equal(c.req.auth?.subject, 'alice', 'cookie');
    t.equal(c.req.requestHeader('cookie'), `theme=dark; session=${token}`, 'cookies are left as they are (Envoy removes header tokens only)');
    t.equal((await run(config, { headers: bearer(token) })).req.auth, null, 'Authorization is not a location of this rule');
  });

  t.test('a token in a location of another issuer only: issuer not configured', async (t) => {
    const other = await makeKey('RS256', 'o');
    const config = compile([
      rule({ issuer: ISS, jwks: jwksOf(key) }),
      rule({ issuer: 'https://other.example', jwks: jwksOf(other), fromHeaders: [{ name: 'x-other', prefix: '' }] }),
    ]);
    const r = await run(config, { headers: { 'x-other': token } });
    t.equal(r.outcome, 401);
    t.equal(r.body, 'Jwt issuer is not configured');
    const good = await run(config, { headers: { 'x-other': await sign(other, { iss: 'https://other.example' }) } });
    t.equal(good.req.auth?.issuer, 'https://other.example', 'the other issuer verifies there');
  });
});

t.test('outputs: payload header, claim headers, forwardOriginalToken', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([
    rule({
      issuer: ISS,
      jwks: jwksOf(key),
      outputPayloadToHeader: 'x-jwt-payload',
      outputClaimToHeaders: [
        { header: 'x-sub', claim: 'sub' },
        { header: 'x-level', claim: 'level' },
        { header: 'x-admin', claim: 'admin' },
        { header: 'x-role', claim: 'ns.role' },
        { header: 'x-groups', claim: 'groups' },
        { header: 'x-missing', claim: 'missing' },
      ],
      forwardOriginalToken: true,
    }),
  ]);
  const token = await sign(key, { level: 3, admin: true, ns: { role: 'ops' }, groups: ['a'] });
  const { outcome, req } = await run(config, { headers: { ...bearer(token), 'x-sub': 'spoofed' } });
  t.equal(outcome, 'continue');
  t.equal(req.requestHeader('x-jwt-payload'), token.split('.')[1], 'the payload as received, base64url');
  t.same(JSON.parse(Buffer.from(req.requestHeader('x-jwt-payload')!, 'base64url').toString()).level, 3);
  t.equal(req.requestHeader('x-sub'), 'alice', 'a client cannot choose the claim header');
  t.equal(req.requestHeader('x-level'), '3');
  t.equal(req.requestHeader('x-admin'), 'true');
  t.equal(req.requestHeader('x-role'), 'ops', 'nested claim');
  t.equal(req.requestHeader('x-groups'), null, 'a list is not a header value');
  t.equal(req.requestHeader('x-missing'), null);
  t.equal(req.requestHeader('authorization'), `Bearer ${token}`, 'forwarded');

  // Envoy strips the output headers from every request, token or not.
  const plain = await run(config, { headers: { 'x-jwt-payload': 'e30', 'x-sub': 'admin', 'x-other': 'kept' } });
  t.equal(plain.outcome, 'continue');
  t.equal(plain.req.requestHeader('x-jwt-payload'), null, 'a client-sent payload header is removed');
  t.equal(plain.req.requestHeader('x-sub'), null, 'a client-sent claim header is removed');
  t.equal(plain.req.requestHeader('x-other'), 'kept');
});

t.test('every token must verify', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key), fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }], fromParams: ['access_token'] })]);
  const good = await sign(key);
  const expired = await sign(key, { exp: now() - 3600 });
  const r = await run(config, { path: `/?access_token=${expired}`, headers: bearer(good) });
  t.equal(r.outcome, 401);
  t.equal(r.body, 'Jwt is expired');
  t.equal((await run(config, { path: `/?access_token=${good}`, headers: bearer(good) })).outcome, 'continue', 'two good ones');
});

t.test('two rules for one issuer: either key set may verify', async (t) => {
  const k1 = await makeKey('RS256', 'k1');
  const k2 = await makeKey('ES256', 'k2');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(k1), audiences: ['one'] }), rule({ issuer: ISS, jwks: jwksOf(k2) })]);
  t.equal((await run(config, { headers: bearer(await sign(k2, { aud: 'x' })) })).outcome, 'continue', 'the second rule');
  t.equal((await run(config, { headers: bearer(await sign(k1, { aud: 'one' })) })).outcome, 'continue', 'the first rule');
  const unknown = await makeKey('RS256', 'k1');
  // istiod's two-provider requirement is any{origins-0, origins-1, all{any{origins-0, missing},
  // any{origins-1, missing}}}: Envoy reports the last child's error other than "missing", and
  // that child, `all`, fails with origins-0's audience check.
  const failed = await run(config, { headers: bearer(await sign(unknown)) });
  t.same([failed.outcome, failed.body], [403, 'Audiences in Jwt are not allowed'], "the last child's failure is reported, as Envoy's requires_any does");
  const onlySecond = await run(config, { headers: bearer(await sign(unknown, { aud: 'one' })) });
  t.same([onlySecond.outcome, onlySecond.body], [401, 'Jwt verification fails'], "with the audience right, origins-0's signature check is what fails");
});

t.test('a CORS preflight passes without a token check', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const headers = { ...bearer('garbage'), origin: 'https://app.example', 'access-control-request-method': 'POST' };
  t.equal((await run(config, { method: 'OPTIONS', headers })).outcome, 'continue');
  t.equal((await run(config, { method: 'GET', headers })).outcome, 401);
});

t.test('a token verified before completes without waiting', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const token = await sign(key);
  const first = await run(config, { headers: bearer(token) });
  t.equal(first.outcome, 'continue');
  t.notOk(first.sync, 'the first check of a signature is asynchronous');
  t.equal(first.cb.continued, 1, 'continueRequest once');
  const again = await run(config, { headers: bearer(token) });
  t.ok(again.sync, 'the second is synchronous');
  t.equal(again.cb.continued, 0, 'Continue returned, continueRequest not called');
  t.equal(again.req.auth?.subject, 'alice');
  t.equal(again.req.requestHeader('authorization'), null, 'outputs applied on the fast path too');
  // Time checks still run on every request.
  config.now = () => now() + 7200;
  const later = await run(config, { headers: bearer(token) });
  t.equal(later.body, 'Jwt is expired', 'a cached token still expires');
});

t.test('the client goes away while the signature is checked', async (t) => {
  const key = await makeKey('RS256', 'k');
  const config = compile([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const badToken = (await sign(key)).slice(0, -4) + 'AAAA';
  for (const [name, token] of [
    ['good token', await sign(key)],
    ['bad token', badToken],
  ] as const) {
    const req = new FakeRequest({ headers: bearer(token) });
    const cb = new RecordingCallbacks();
    const filter = config.create();
    t.equal(filter.onRequest(req, cb), FilterStatus.StopIteration, `${name}: waits`);
    cb.aborted = true;
    filter.onDestroy?.();
    await new Promise((r) => setTimeout(r, 50));
    t.equal(cb.reply, null, `${name}: no reply after the client left`);
    t.equal(cb.continued, 0, `${name}: no continue after the client left`);
    t.equal(req.auth, null);
  }
});

t.test('compile errors and warnings', async (t) => {
  const key = await makeKey('RS256', 'k');
  t.throws(() => compile([rule({ issuer: ISS, jwksUri: 'ftp://keys.example/jwks' })]), /providers\.origins-0\.remote_jwks\.http_uri\.uri: "ftp:\/\/keys.example\/jwks" must be http or https/);
  t.throws(() => compile([rule({ issuer: ISS, jwksUri: 'not a url' })]), /providers\.origins-0\.remote_jwks\.http_uri\.uri: "not a url" is not a URL/);
  t.throws(() => compile([rule({ issuer: '', jwks: jwksOf(key) })]), /providers\.origins-0\.issuer: issuer must be a non-empty string/);
  t.throws(() => compile([rule({ issuer: ISS })]), /providers\.origins-0: one of remote_jwks and local_jwks must be set/);

  const ctx = storeContext();
  const config = compile([rule({ issuer: ISS, jwks: '{"keys":[{"kty":"RSA","n":"","e":"AQAB"}]}' })], ctx);
  t.match(ctx.warnings[0], /jwt_authn provider origins-0 \(issuer https:\/\/issuer.example\): local_jwks: Jwks doesn't have any valid public key/);
  const r = await run(config, { headers: bearer(await sign(key)) });
  t.equal(r.outcome, 401, 'tokens fail, the proxy keeps serving');
  t.equal(r.body, "Jwks doesn't have any valid public key");
  t.equal((await run(config, {})).outcome, 'continue', 'requests without a token pass');
});

t.test('clear_route_cache: a verified token has the request routed again (gateways); no token or a bad one does not', async (t) => {
  const key = await makeKey('RS256', 'k1');
  const rules = [rule({ issuer: ISS, jwks: jwksOf(key) })];
  const token = await sign(key, { iss: ISS, sub: 'alice', groups: ['group1'] });
  const gatewayLike = compile(rules, storeContext(), { clearRouteCache: true });
  const ok = await run(gatewayLike, { headers: bearer(token) });
  t.equal(ok.outcome, 'continue');
  t.equal(ok.cb.routeCacheCleared, 1, 'once, after the claims are set');
  t.same(ok.req.auth?.claims.groups, ['group1']);
  t.equal((await run(gatewayLike, {})).cb.routeCacheCleared, 0, 'no token: the route stands');
  t.equal((await run(gatewayLike, { headers: bearer(`${token.slice(0, -4)}AAAA`) })).cb.routeCacheCleared, 0, 'a failed token: 401, no re-route');
  const sidecarLike = compile(rules);
  t.equal((await run(sidecarLike, { headers: bearer(token) })).cb.routeCacheCleared, 0, "without clearRouteCache (istiod's sidecars) the route stands");
});

t.test('Envoy configs Remora cannot honour are refused at compile time, naming the field', async (t) => {
  const key = await makeKey('RS256', 'k');
  const base = istiodConfig([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const withProvider = (extra: object) => ({ ...base, providers: { 'origins-0': { ...base.providers!['origins-0'], ...extra } } });
  t.throws(() => jwtAuthnFactory.compile(withProvider({ subjects: { prefix: 'spiffe://' } }), storeContext()), /providers\.origins-0\.subjects: not supported/);
  t.throws(() => jwtAuthnFactory.compile(withProvider({ requireExpiration: true }), storeContext()), /providers\.origins-0\.require_expiration: not supported/);
  t.throws(
    () => jwtAuthnFactory.compile({ ...base, rules: [{ match: { prefix: '/' }, requires: { providerName: 'nope' } }] }, storeContext()),
    /rules\[0\]\.requires\.provider_name: required provider "nope" is not configured/,
  );
  t.throws(
    () => jwtAuthnFactory.compile({ ...base, rules: [{ match: { prefix: '/' }, requirementName: 'missing' }] }, storeContext()),
    /rules\[0\]\.requirement_name: "missing" is not in requirement_map/,
  );
  t.throws(
    () => jwtAuthnFactory.compile({ ...base, rules: [{ match: { safeRegex: { regex: '/a.*' } }, requires: { providerName: 'origins-0' } }] }, storeContext()),
    /rules\[0\]\.match\.safe_regex: not supported in jwt_authn rules/,
  );
  t.throws(() => jwtAuthnFactory.compileRouteConfig({}), /exactly one of disabled: true and requirement_name must be set/);
  t.throws(() => jwtAuthnFactory.compileRouteConfig({ disabled: true, requirementName: 'x' }), /exactly one of/);
  t.same(jwtAuthnFactory.compileRouteConfig({ requirementName: 'x' }), { disabled: false, requirementName: 'x' });
});

t.test('a provider without payload_in_metadata verifies but hands no identity on; clock_skew_seconds is honoured', async (t) => {
  const key = await makeKey('RS256', 'k');
  const base = istiodConfig([rule({ issuer: ISS, jwks: jwksOf(key) })]);
  const provider = { ...base.providers!['origins-0'] };
  delete provider.payloadInMetadata;
  const silent = jwtAuthnFactory.compile({ ...base, providers: { 'origins-0': provider } }, storeContext());
  const r = await run(silent, { headers: bearer(await sign(key)) });
  t.same([r.outcome, r.req.auth], ['continue', null]);
  const expiredLately = await sign(key, { exp: now() - 90 });
  t.equal((await run(compile([rule({ issuer: ISS, jwks: jwksOf(key) })]), { headers: bearer(expiredLately) })).body, 'Jwt is expired', '60 s skew by default');
  const lenient = jwtAuthnFactory.compile({ ...base, providers: { 'origins-0': { ...base.providers!['origins-0'], clockSkewSeconds: 120 } } }, storeContext());
  t.equal((await run(lenient, { headers: bearer(expiredLately) })).outcome, 'continue', '120 s skew');
});
