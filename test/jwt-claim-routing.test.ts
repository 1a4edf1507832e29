// istio.io's "JWT claim based routing" task on a real gateway: a RequestAuthentication on the
// ingress gateway and a VirtualService that routes on `@request.auth.claims.…`. Tokens are
// signed here with a key made for the test. Routes match the verified token's claims (the
// route is chosen again after JWT authentication), list claims match when one element does,
// nested claims by `.` or `[]`; a request without a token matches no claim route, and a
// request header named like a claim never stands in for one.
import { connect } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const ISSUER = 'testing@secure.istio.io';

t.test('routing on JWT claims at the gateway (istio.io jwt-route task)', async (t) => {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const sign = (claims: Record<string, unknown>, issuer = ISSUER, key = privateKey) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'test-key' }).setIssuer(issuer).setSubject(issuer).setIssuedAt().setExpirationTime('1h').sign(key);

  const group = await startBackend('group1-only');
  const iss = await startBackend('by-issuer');
  const nested = await startBackend('by-team');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('httpbin-gateway', port),
      serviceEntry('group', 'group', [{ port: group.port }]),
      serviceEntry('iss', 'iss', [{ port: iss.port }]),
      serviceEntry('nested', 'nested', [{ port: nested.port }]),
      `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: ingress-jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: ${ISSUER}
    jwks: ${JSON.stringify(JSON.stringify({ keys: [jwk] }))}
    outputClaimToHeaders:
    - { header: x-jwt-team, claim: team }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: httpbin }
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match:
    - uri: { prefix: /headers }
      headers:
        "@request.auth.claims.groups": { exact: group1 }
    route: [{ destination: { host: group } }]
  - match:
    - uri: { prefix: /issuer }
      headers:
        "@request.auth.claims.iss": { exact: ${ISSUER} }
    route: [{ destination: { host: iss } }]
  - match:
    - uri: { prefix: /team-dot }
      headers:
        "@request.auth.claims.org.team": { prefix: pay }
    - uri: { prefix: /team-brackets }
      headers:
        "@request.auth.claims[org][team]": { exact: payments }
    route: [{ destination: { host: nested } }]
  - match:
    - uri: { prefix: /not-admin }
      withoutHeaders:
        "@request.auth.claims.groups": { exact: admin }
    route: [{ destination: { host: iss } }]
  - match:
    - uri: { prefix: /by-output-header }
      headers:
        x-jwt-team: { exact: blue }
    route: [{ destination: { host: nested } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    for (const b of [group, iss, nested]) await b.close();
    mesh.cleanup();
  });
  const call = async (path: string, token: string | null, headers: Record<string, string> = {}) => {
    const r = await request(port, path, { headers: { host: 'httpbin.example.com', ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...headers } });
    return { status: r.status, by: r.status === 200 ? r.json<{ name: string }>().name : null };
  };

  const groups = await sign({ groups: ['group1', 'group2'], scope: ['scope1', 'scope2'] });
  const otherGroups = await sign({ groups: ['group2'] });
  const plain = await sign({});
  const team = await sign({ org: { team: 'payments' }, team: 'blue' });
  const admin = await sign({ groups: ['admin'] });

  // The task: a token whose `groups` list holds group1 is routed; none, or another group, is not.
  t.same(await call('/headers', groups), { status: 200, by: 'group1-only' }, 'groups [group1, group2] contains group1: routed');
  t.same(await call('/headers', null), { status: 404, by: null }, 'no token: no claim to match, 404');
  t.same(await call('/headers', otherGroups), { status: 404, by: null }, 'groups [group2]: 404');
  t.same(await call('/headers', plain), { status: 404, by: null }, 'a token without groups: 404');
  t.equal((await call('/headers', `${groups.slice(0, -4)}AAAA`)).status, 401, 'a token that does not verify: 401 from jwt-authn');

  // A string claim, exact.
  t.same(await call('/issuer', plain), { status: 200, by: 'by-issuer' }, 'iss exact');
  t.same(await call('/issuer', null), { status: 404, by: null }, 'iss without a token: 404');

  // Nested claims, by `.` and by `[]`.
  t.same(await call('/team-dot', team), { status: 200, by: 'by-team' }, 'org.team prefix');
  t.same(await call('/team-brackets', team), { status: 200, by: 'by-team' }, '[org][team] exact');
  t.same(await call('/team-brackets', groups), { status: 404, by: null }, 'no org claim: 404');

  // withoutHeaders on a claim: inverted; a request without a token has no such claim.
  t.same(await call('/not-admin', groups), { status: 200, by: 'by-issuer' }, 'groups without admin');
  t.same(await call('/not-admin', null), { status: 200, by: 'by-issuer' }, 'no token: not admin either');
  t.same(await call('/not-admin', admin), { status: 404, by: null }, 'groups [admin]: excluded');

  // The route is chosen again after authentication: headers the JWT filter set count, as in Envoy.
  t.same(await call('/by-output-header', team), { status: 200, by: 'by-team' }, 'outputClaimToHeaders header matched after authn');

  // A header literally named like the claim is no claim: with no token or a token without
  // groups, the claim route is not taken. Node's client refuses such a name, so raw HTTP/1.1.
  const raw = (token: string | null) =>
    new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => {
        s.write(`GET /headers HTTP/1.1\r\nHost: httpbin.example.com\r\n${token === null ? '' : `Authorization: Bearer ${token}\r\n`}@request.auth.claims.groups: group1\r\nConnection: close\r\n\r\n`);
      });
      let out = '';
      s.setTimeout(5_000, () => s.destroy(new Error('timeout')));
      s.on('data', (c: Buffer) => (out += c.toString()));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
  for (const token of [null, plain]) {
    const reply = await raw(token);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1]);
    t.ok(status === 400 || status === 404, `a spoofed claim header ${token === null ? 'without a token' : 'with a token without groups'} is not routed (${status})`);
  }
  t.equal(group.seen.length, 1, 'only the group1 token reached the group1 route');
});
