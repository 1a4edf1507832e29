// Key sets: JWKS parsing by jwt_verify_lib's rules, and keys fetched from a jwksUri served by
// a real HTTP server on 127.0.0.1: shared first fetch, cache, background refresh, stale keys
// on failure, one rate-limited refresh for an unknown kid, and the fetch timeout. Expiry and
// refresh intervals run on a clock the test moves (no waiting for them to pass).
import { KeyObject } from 'node:crypto';
import t from 'tap';
import { parseJwks } from '../src/jwt-authn/jwt-authn-jwks.ts';
import { RemoteJwks } from '../src/jwt-authn/jwt-authn-jwks-cache.ts';
import { parseJwt, type ParsedJwt } from '../src/jwt-authn/jwt-authn-token.ts';
import { compile, jwksOf, JwksServer, makeKey, manualClock, rule, run, sign, until } from './jwt-authn-helpers.ts';
import { namedStats, storeContext } from '@remora/filters/testing';

const ISS = 'https://issuer.example';
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const parsed = (token: string) => parseJwt(token) as ParsedJwt;

t.test('parseJwks skips unusable keys and refuses a set without any', async (t) => {
  const rsa = await makeKey('RS256', 'rsa');
  t.equal(parseJwks('nope'), 'Jwks is an invalid JSON');
  t.equal(parseJwks('{}'), 'Jwks does not have [keys] field');
  t.equal(parseJwks('{"keys":{}}'), '[keys] in Jwks is not an array');
  t.match(parseJwks('{"keys":[{"kty":"XX"}]}'), /^Jwks doesn't have any valid public key \(keys\[0\]: \[kty\] is not supported in \[keys\]\)$/);
  t.match(parseJwks('{"keys":[{"kty":"EC","crv":"P-256","alg":"ES384","x":"a","y":"b"}]}'), /\[crv\] field specified is not compatible with \[alg\]/);
  const set = parseJwks(JSON.stringify({ keys: [{ kty: 'RSA' }, rsa.jwk] }));
  t.not(typeof set, 'string');
  if (typeof set === 'string') return;
  t.same(set.kids, ['rsa'], 'the bad key is skipped, the good one kept');
});

t.test('a key without alg verifies any algorithm of its type; a wrong type fails verification', async (t) => {
  const rsa = await makeKey('RS256', 'k', { withAlg: false });
  const set = parseJwks(jwksOf(rsa));
  if (typeof set === 'string') throw new Error(set);
  t.equal(await set.verify(parsed(await sign(rsa))), 0, 'RS256 with an alg-less RSA key');
  // The same RSA private key, as a KeyObject so it may sign PS256 too.
  const ps = { ...rsa, alg: 'PS256', privateKey: KeyObject.from(rsa.privateKey as Parameters<typeof KeyObject.from>[0]) };
  t.equal(await set.verify(parsed(await sign(ps))), 0, 'PS256 with the same RSA key');
  const ec = await makeKey('ES256', 'k');
  t.equal(await set.verify(parsed(await sign(ec))), 26, 'ES256 under the RSA key: verification fails');
});

t.test('jwksUri: fetched once for concurrent requests, then cached across compiles', async (t) => {
  const key = await makeKey('ES256', 'k1');
  const server = await new JwksServer().start();
  t.teardown(() => server.stop());
  server.body = jwksOf(key);
  server.delayMs = 100;
  const ctx = storeContext();
  const config = compile([rule({ issuer: ISS, jwksUri: server.uri })], ctx);
  const tokens = await Promise.all([1, 2, 3, 4, 5].map((i) => sign(key, { sub: `u${i}` })));
  const results = await Promise.all(tokens.map((tk) => run(config, { headers: bearer(tk) })));
  t.same(
    results.map((r) => r.outcome),
    ['continue', 'continue', 'continue', 'continue', 'continue'],
  );
  t.equal(server.requests, 1, 'one fetch for five waiting requests');
  // A new snapshot (config reload) keeps the keys: no fetch.
  const reloaded = compile([rule({ issuer: ISS, jwksUri: server.uri, timeoutMs: 2_000 })], ctx);
  t.equal((await run(reloaded, { headers: bearer(await sign(key, { sub: 'u9' })) })).outcome, 'continue');
  t.equal(server.requests, 1, 'still one fetch after a reload');
});

t.test('jwksUri unreachable on the first fetch: Jwks remote fetch is failed, retried later', async (t) => {
  const key = await makeKey('RS256', 'k1');
  const server = await new JwksServer().start();
  await server.stop();
  const ctx = storeContext();
  const clock = manualClock();
  const config = compile([rule({ issuer: ISS, jwksUri: server.uri })], ctx, { clock });
  const token = await sign(key);
  const r = await run(config, { headers: bearer(token) });
  t.equal(r.outcome, 401);
  t.equal(r.body, 'Jwks remote fetch is failed');
  t.match(ctx.warnings.join('\n'), /JWKS fetch from http:\/\/127\.0\.0\.1:\d+\/jwks\.json failed/);
  server.body = jwksOf(key);
  await server.start();
  t.equal((await run(config, { headers: bearer(token) })).outcome, 401, 'within the retry interval: no new fetch');
  clock.advance(999);
  t.equal((await run(config, { headers: bearer(token) })).outcome, 401, '999 ms on: still within it');
  t.equal(server.requests, 0);
  clock.advance(1);
  t.equal((await run(config, { headers: bearer(token) })).outcome, 'continue', 'at 1 s (JWKS_MIN_REFRESH_INTERVAL_MS): fetched and verified');
  t.equal(server.requests, 1);
  await server.stop();
});

t.test('a non-200 answer or a bad document is a failed fetch', async (t) => {
  const key = await makeKey('RS256', 'k1');
  const server = await new JwksServer().start();
  t.teardown(() => server.stop());
  const warnings: string[] = [];
  const opts = { cacheDurationMs: 60_000, minRefreshIntervalMs: 0, timeoutMs: 1_000, warn: (m: string) => void warnings.push(m) };
  server.status = 503;
  server.body = jwksOf(key);
  t.equal(await new RemoteJwks(server.uri, opts).load(), null, '503');
  t.match(warnings.pop(), /HTTP status 503/);
  server.status = 200;
  server.body = '{"keys":[]}';
  t.equal(await new RemoteJwks(server.uri, opts).load(), null, 'no keys');
  t.match(warnings.pop(), /Jwks doesn't have any valid public key/);
  server.delayMs = 500;
  server.body = jwksOf(key);
  const slow = new RemoteJwks(server.uri, { ...opts, timeoutMs: 100 });
  const started = performance.now();
  t.equal(await slow.load(), null, 'too slow');
  t.ok(performance.now() - started < 450, 'gave up at the timeout');
  t.match(warnings.pop(), /timed out after 100 ms/);
});

t.test('stale keys keep serving while refreshed in the background, and when the refresh fails', async (t) => {
  const k1 = await makeKey('RS256', 'k1');
  const k2 = await makeKey('RS256', 'k2');
  const server = await new JwksServer().start();
  t.teardown(() => server.stop());
  server.body = jwksOf(k1);
  const warnings: string[] = [];
  const clock = manualClock();
  const remote = new RemoteJwks(server.uri, { cacheDurationMs: 200, minRefreshIntervalMs: 100, timeoutMs: 1_000, warn: (m) => void warnings.push(m), clock });
  t.same((await remote.load())!.kids, ['k1']);
  server.body = jwksOf(k1, k2);
  clock.advance(200);
  t.same(remote.current()!.kids, ['k1'], 'at the cache duration: fresh, no refresh');
  t.equal(remote.fetches, 1);
  clock.advance(1);
  t.same(remote.current()!.kids, ['k1'], 'just past it: the expired keys are served at once');
  t.equal(remote.fetches, 2, 'and a refresh started');
  await until('the background refresh', () => remote.current()!.kids.length === 2);
  t.same(remote.current()!.kids, ['k1', 'k2'], 'the background refresh replaced them');
  t.equal(remote.fetches, 2, 'one refresh');

  await server.stop();
  clock.advance(201);
  t.same(remote.current()!.kids, ['k1', 'k2'], 'server down: the stale keys serve');
  await until('the refresh to fail', () => remote.failures === 1);
  t.same(remote.current()!.kids, ['k1', 'k2'], 'still, after the refresh failed');
  t.equal(remote.fetches, 3, 'no retry within the retry interval');
  clock.advance(100);
  remote.current();
  t.equal(remote.fetches, 4, 'the retry interval passed: one more try');
  await until('the second refresh to fail', () => remote.failures === 2);
  t.match(warnings.join('\n'), /JWKS fetch from .* failed/);
});

t.test('an unknown kid triggers one refresh, rate limited', async (t) => {
  const k1 = await makeKey('ES256', 'k1');
  const k2 = await makeKey('ES256', 'k2');
  const server = await new JwksServer().start();
  t.teardown(() => server.stop());
  server.body = jwksOf(k1);
  const clock = manualClock();
  const config = compile([rule({ issuer: ISS, jwksUri: server.uri })], storeContext(), { clock });
  t.equal((await run(config, { headers: bearer(await sign(k1)) })).outcome, 'continue');
  t.equal(server.requests, 1);

  // The issuer rotates to k2.
  server.body = jwksOf(k1, k2);
  const rotated = await Promise.all([1, 2, 3].map(async (i) => run(config, { headers: bearer(await sign(k2, { sub: `r${i}` })) })));
  t.same(
    rotated.map((r) => r.outcome),
    ['continue', 'continue', 'continue'],
    'tokens of the new key verify',
  );
  t.equal(server.requests, 2, 'one refresh for them all');

  // Made-up kids right after: no more fetches within the interval.
  const bogus = await makeKey('ES256', 'made-up');
  for (let i = 0; i < 5; i++) {
    const r = await run(config, { headers: bearer(await sign(bogus, { sub: `b${i}` })) });
    t.equal(r.body, "Jwks doesn't have key to match kid or alg from Jwt");
  }
  t.equal(server.requests, 2, 'an unknown-kid flood does not reach the JWKS server');
  clock.advance(999);
  await run(config, { headers: bearer(await sign(bogus, { sub: 'almost' })) });
  t.equal(server.requests, 2, '999 ms on: still none');
  clock.advance(1);
  await run(config, { headers: bearer(await sign(bogus, { sub: 'late' })) });
  t.equal(server.requests, 3, 'at 1 s, one more refresh');
});

t.test("Envoy's jwt_authn stats: jwks_fetch_failed / success, denied / allowed, cors_preflight_bypassed, kept across a reload", async (t) => {
  const key = await makeKey('RS256', 'k1');
  const server = await new JwksServer().start();
  await server.stop();
  const stats = namedStats();
  const ctx = { ...storeContext(), stats };
  const clock = manualClock();
  const config = compile([rule({ issuer: ISS, jwksUri: server.uri })], ctx, { clock });
  const token = await sign(key);
  const v = (name: string) => stats.value(`http.hcm.jwt_authn.${name}`);
  t.equal(v('allowed'), 0, 'created at compile time');
  t.equal((await run(config, { headers: bearer(token) })).outcome, 401);
  t.equal(v('jwks_fetch_failed'), 1);
  t.equal(v('jwks_fetch_success'), 0);
  t.equal(v('denied'), 1);
  t.equal((await run(config, {})).outcome, 'continue', 'no token: istiod allows a missing one');
  t.equal(v('allowed'), 1, 'counted as allowed, as Envoy does');
  const preflight = { method: 'OPTIONS', headers: { origin: 'https://a.example', 'access-control-request-method': 'GET', ...bearer('garbage') } };
  t.equal((await run(config, preflight)).outcome, 'continue', 'a CORS preflight is not checked');
  t.equal(v('cors_preflight_bypassed'), 1);
  t.equal(v('allowed'), 2);

  server.body = jwksOf(key);
  await server.start();
  t.teardown(() => server.stop());
  clock.advance(1_000);
  // A reload compiles the filter again: the same counters, and the cached keys count in them.
  const reloaded = compile([rule({ issuer: ISS, jwksUri: server.uri })], ctx, { clock });
  t.equal((await run(reloaded, { headers: bearer(token) })).outcome, 'continue');
  t.equal(v('jwks_fetch_success'), 1, 'one successful fetch, counted once');
  t.equal(v('jwks_fetch_failed'), 1);
  t.equal(v('allowed'), 3);
  t.equal(v('denied'), 1);
});
