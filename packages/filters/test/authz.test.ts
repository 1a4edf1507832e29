// Authorization decisions, as Envoy's RBAC filters decide them once istiod has translated the
// AuthorizationPolicies (pilot/pkg/security/authz). One table of policies × requests per
// field, each `not` form, the action order, and the examples of Istio's AuthorizationPolicy
// reference and its authorization tasks.
import t, { type Test } from 'tap';
import { rbacFactory } from '@remora/filters/internal';
import { type AuthzPolicy, compile, decide, denied, DENIED_NONE, jwt, peer, policy, type ReqInit, run } from './authz-helpers.ts';

interface Case {
  name: string;
  req: ReqInit;
  /** 'allow', or the 403's details. */
  want: string;
}

/** Runs each request against the same policies. */
function table(t: Test, title: string, policies: AuthzPolicy[], cases: Case[], trustDomain?: string): void {
  t.test(title, async (t) => {
    const { config } = compile(policies, trustDomain);
    const filter = config.create();
    for (const c of cases) t.equal(run(filter, c.req), c.want, c.name);
  });
}

/** One ALLOW policy `ns/allow` with a single rule. */
const allowOnly = (rule: unknown): AuthzPolicy[] => [policy('foo/allow', 'ALLOW', [rule])];
const from = (source: Record<string, unknown>) => ({ from: [{ source }] });
const to = (operation: Record<string, unknown>) => ({ to: [{ operation }] });
const when = (key: string, values?: string[], notValues?: string[]) => ({
  when: [{ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }],
});
const A = 'allow';
const N = DENIED_NONE;

t.test('action order and rule shapes', async (t) => {
  table(t, 'no policy of any action: everything passes', [policy('foo/audit', 'AUDIT', [{}])], [
    { name: 'GET', req: {}, want: A },
    { name: 'POST', req: { method: 'POST', path: '/admin' }, want: A },
  ]);
  table(t, 'allow-all: rules [{}] matches every request', [policy('foo/allow-all', 'ALLOW', [{}])], [
    { name: 'GET /', req: {}, want: A },
    { name: 'DELETE /x from anywhere', req: { method: 'DELETE', path: '/x', sourceIp: '192.0.2.1' }, want: A },
  ]);
  table(t, 'allow-nothing: spec {} (no rules field) denies everything the ALLOW filter sees', [policy('foo/allow-nothing', 'ALLOW')], [
    { name: 'GET /', req: {}, want: N },
    { name: 'with an identity', req: { peer: peer('foo', 'sleep') }, want: N },
  ]);
  table(t, 'allow-nothing beside an allow policy: the other one still allows', [policy('foo/allow-nothing', 'ALLOW'), policy('foo/get', 'ALLOW', [to({ methods: ['GET'] })])], [
    { name: 'GET allowed by foo/get', req: {}, want: A },
    { name: 'POST denied', req: { method: 'POST' }, want: N },
  ]);
  table(t, 'deny-all: DENY with rules [{}]', [policy('foo/deny-all', 'DENY', [{}])], [
    { name: 'GET /', req: {}, want: denied('foo', 'deny-all') },
  ]);
  t.test('DENY without rules never matches, with a warning (istiod validation refuses it)', async (t) => {
    const { config, warnings } = compile([policy('foo/deny-none', 'DENY')]);
    t.equal(run(config.create(), {}), A);
    t.match(warnings, [/AuthorizationPolicy foo\/deny-none: DENY action without `rules`/]);
  });
  table(
    t,
    'DENY is evaluated before ALLOW and names the matched rule',
    [policy('foo/allow-all', 'ALLOW', [{}]), policy('foo/deny-post', 'DENY', [to({ methods: ['PUT'] }), to({ methods: ['POST'] })])],
    [
      { name: 'GET: no DENY matches, ALLOW does', req: {}, want: A },
      { name: 'POST: second rule of the DENY policy', req: { method: 'POST' }, want: denied('foo', 'deny-post', 1) },
      { name: 'PUT: first rule', req: { method: 'PUT' }, want: denied('foo', 'deny-post', 0) },
    ],
  );
  table(t, 'no ALLOW policy: what no DENY matches passes', [policy('foo/deny-post', 'DENY', [to({ methods: ['POST'] })])], [
    { name: 'GET', req: {}, want: A },
    { name: 'POST', req: { method: 'POST' }, want: denied('foo', 'deny-post') },
  ]);
  table(
    t,
    'several ALLOW policies: any one may allow',
    [policy('foo/get-info', 'ALLOW', [to({ methods: ['GET'], paths: ['/info'] })]), policy('bar/post-data', 'ALLOW', [to({ methods: ['POST'], paths: ['/data'] })])],
    [
      { name: 'GET /info by the first', req: { path: '/info' }, want: A },
      { name: 'POST /data by the second', req: { method: 'POST', path: '/data' }, want: A },
      { name: 'GET /data by neither', req: { path: '/data' }, want: N },
    ],
  );
  table(
    t,
    'AUDIT policies never decide',
    [policy('foo/audit-get', 'AUDIT', [to({ methods: ['GET'] })]), policy('foo/allow-post', 'ALLOW', [to({ methods: ['POST'] })])],
    [
      { name: 'GET matches only the AUDIT policy: still denied by ALLOW', req: {}, want: N },
      { name: 'POST allowed', req: { method: 'POST' }, want: A },
    ],
  );
  table(
    t,
    'several DENY policies match: the first in Envoy policy-name order is named',
    [policy('foo/zeta', 'DENY', [{}]), policy('foo/alpha', 'DENY', [{}]), policy('bar/mid', 'DENY', [to({ methods: ['POST'] })])],
    [
      { name: 'GET: ns[foo]-policy[alpha] sorts before ns[foo]-policy[zeta]', req: {}, want: denied('foo', 'alpha') },
      { name: 'POST: ns[bar] sorts first', req: { method: 'POST' }, want: denied('bar', 'mid') },
    ],
  );
  table(
    t,
    'a rule needs a source AND an operation AND every condition; sources and operations are ORed',
    allowOnly({
      from: [{ source: { namespaces: ['a'] } }, { source: { namespaces: ['b'] } }],
      to: [{ operation: { methods: ['GET'] } }, { operation: { methods: ['POST'], paths: ['/data'] } }],
      when: [
        { key: 'request.headers[x-a]', values: ['1'] },
        { key: 'request.headers[x-b]', values: ['2'] },
      ],
    }),
    [
      { name: 'all hold (first source, first operation)', req: { peer: peer('a', 's'), headers: { 'x-a': '1', 'x-b': '2' } }, want: A },
      { name: 'second source, second operation', req: { peer: peer('b', 's'), method: 'POST', path: '/data', headers: { 'x-a': '1', 'x-b': '2' } }, want: A },
      { name: 'operation fields are ANDed: POST to /other', req: { peer: peer('b', 's'), method: 'POST', path: '/other', headers: { 'x-a': '1', 'x-b': '2' } }, want: N },
      { name: 'no source matches', req: { peer: peer('c', 's'), headers: { 'x-a': '1', 'x-b': '2' } }, want: N },
      { name: 'one condition fails', req: { peer: peer('a', 's'), headers: { 'x-a': '1' } }, want: N },
    ],
  );
  t.test('CUSTOM policies are ignored with a warning', async (t) => {
    const { config, warnings } = compile([{ ...policy('foo/ext', 'CUSTOM', [{}]), provider: 'my-authz' }]);
    t.equal(run(config.create(), {}), A);
    t.match(warnings, [/foo\/ext: CUSTOM/]);
  });
  t.test('stateless: create() hands out one shared instance', async (t) => {
    const { config } = compile([policy('foo/allow-all', 'ALLOW', [{}])]);
    t.equal(config.create(), config.create());
    t.equal(config.name, 'envoy.filters.http.rbac');
    t.equal(rbacFactory.name, 'envoy.filters.http.rbac');
  });
});

t.test('from.source', async (t) => {
  table(t, 'principals: exact, prefix, suffix; plaintext has none', allowOnly(from({ principals: ['cluster.local/ns/default/sa/sleep', 'cluster.local/ns/prod/sa/web-*', '*/sa/admin'] })), [
    { name: 'exact', req: { peer: peer('default', 'sleep') }, want: A },
    { name: 'exact is exact', req: { peer: peer('default', 'sleepy') }, want: N },
    { name: 'prefix', req: { peer: peer('prod', 'web-frontend') }, want: A },
    { name: 'suffix', req: { peer: peer('any', 'admin') }, want: A },
    { name: 'other', req: { peer: peer('default', 'other') }, want: N },
    { name: 'plaintext', req: {}, want: N },
  ]);
  table(t, 'principals ["*"]: any authenticated peer', allowOnly(from({ principals: ['*'] })), [
    { name: 'mTLS', req: { peer: peer('x', 'y') }, want: A },
    { name: 'plaintext', req: {}, want: N },
  ]);
  table(t, 'notPrincipals ["*"] in a DENY: plaintext is refused (Istio\'s "require mTLS" pattern)', [policy('foo/require-mtls', 'DENY', [from({ notPrincipals: ['*'] })])], [
    { name: 'plaintext denied', req: {}, want: denied('foo', 'require-mtls') },
    { name: 'mTLS passes', req: { peer: peer('x', 'y') }, want: A },
  ]);
  table(t, 'principals and notPrincipals together', allowOnly(from({ principals: ['cluster.local/ns/prod/*'], notPrincipals: ['cluster.local/ns/prod/sa/batch'] })), [
    { name: 'prod web', req: { peer: peer('prod', 'web') }, want: A },
    { name: 'prod batch excluded', req: { peer: peer('prod', 'batch') }, want: N },
  ]);
  table(
    t,
    'principals written with cluster.local mean the mesh trust domain (istiod trust-domain migration)',
    allowOnly(from({ principals: ['cluster.local/ns/default/sa/sleep', 'other.td/ns/default/sa/web'] })),
    [
      { name: 'cluster.local → example.org', req: { peer: peer('default', 'sleep', 'example.org') }, want: A },
      { name: 'a foreign trust domain stays as written', req: { peer: peer('default', 'web', 'other.td') }, want: A },
      { name: 'the literal cluster.local identity no longer matches', req: { peer: peer('default', 'sleep', 'cluster.local') }, want: N },
    ],
    'example.org',
  );
  table(t, 'namespaces and notNamespaces (peer namespace, `*` wildcards)', allowOnly(from({ namespaces: ['test', 'prod-*'], notNamespaces: ['prod-canary'] })), [
    { name: 'test', req: { peer: peer('test', 'a') }, want: A },
    { name: 'prod-eu by wildcard', req: { peer: peer('prod-eu', 'a') }, want: A },
    { name: 'prod-canary excluded', req: { peer: peer('prod-canary', 'a') }, want: N },
    { name: 'dev', req: { peer: peer('dev', 'a') }, want: N },
    { name: 'plaintext has no namespace', req: {}, want: N },
  ]);
  table(t, 'notNamespaces alone: plaintext matches the negation', allowOnly(from({ notNamespaces: ['dev'] })), [
    { name: 'dev excluded', req: { peer: peer('dev', 'a') }, want: N },
    { name: 'prod', req: { peer: peer('prod', 'a') }, want: A },
    { name: 'plaintext', req: {}, want: A },
  ]);
  table(t, 'serviceAccounts: ns/sa, or sa in the policy namespace (foo)', allowOnly(from({ serviceAccounts: ['default/sleep', 'web'], notServiceAccounts: ['default/sleep-v2'] })), [
    { name: 'default/sleep', req: { peer: peer('default', 'sleep') }, want: A },
    { name: 'foo/web (policy namespace)', req: { peer: peer('foo', 'web') }, want: A },
    { name: 'bar/web', req: { peer: peer('bar', 'web') }, want: N },
    { name: 'no partial service account match', req: { peer: peer('default', 'sleep-v2') }, want: N },
    { name: 'plaintext', req: {}, want: N },
  ]);
  table(t, 'notServiceAccounts alone', allowOnly(from({ notServiceAccounts: ['default/sleep'] })), [
    { name: 'default/sleep excluded', req: { peer: peer('default', 'sleep') }, want: N },
    { name: 'other account', req: { peer: peer('default', 'web') }, want: A },
  ]);
  table(
    t,
    'requestPrincipals: iss/sub split at the last slash, wildcards on either side',
    allowOnly(from({ requestPrincipals: ['https://accounts.example.com/alice', 'issuer-b/*', '*/bob', 'iss-c*'] })),
    [
      { name: 'exact iss/sub (issuer is a URL)', req: { auth: jwt('https://accounts.example.com', 'alice') }, want: A },
      { name: 'exact needs both', req: { auth: jwt('https://accounts.example.com', 'mallory') }, want: N },
      { name: 'iss/* any subject of issuer-b', req: { auth: jwt('issuer-b', 'zed') }, want: A },
      { name: '*/bob: any issuer, subject bob', req: { auth: jwt('anything', 'bob') }, want: A },
      { name: 'iss-c*: issuer prefix', req: { auth: jwt('iss-c.example', 'x') }, want: A },
      { name: 'no token', req: {}, want: N },
    ],
  );
  table(t, 'requestPrincipals ["*"] in ALLOW: any token', allowOnly(from({ requestPrincipals: ['*'] })), [
    { name: 'token', req: { auth: jwt('i', 's') }, want: A },
    { name: 'no token', req: {}, want: N },
  ]);
  table(t, 'notRequestPrincipals ["*"] in DENY: requests without a token are refused (Istio\'s require-jwt pattern)', [policy('foo/require-jwt', 'DENY', [from({ notRequestPrincipals: ['*'] })])], [
    { name: 'no token', req: {}, want: denied('foo', 'require-jwt') },
    { name: 'token', req: { auth: jwt('i', 's') }, want: A },
  ]);
  table(t, 'ipBlocks and notIpBlocks: source.ip (the peer), single IPs and CIDRs', allowOnly(from({ ipBlocks: ['1.2.3.4', '5.6.7.0/24'], notIpBlocks: ['5.6.7.8'] })), [
    { name: 'single IP', req: { sourceIp: '1.2.3.4' }, want: A },
    { name: 'in CIDR', req: { sourceIp: '5.6.7.200' }, want: A },
    { name: 'excluded by notIpBlocks', req: { sourceIp: '5.6.7.8' }, want: N },
    { name: 'outside', req: { sourceIp: '5.6.8.1' }, want: N },
    { name: 'an IPv4-mapped IPv6 peer counts as IPv4', req: { sourceIp: '::ffff:1.2.3.4' }, want: A },
    { name: 'remote.ip is not source.ip', req: { sourceIp: '9.9.9.9', remoteIp: '1.2.3.4' }, want: N },
  ]);
  table(t, 'ipBlocks with IPv6 CIDRs', allowOnly(from({ ipBlocks: ['2001:db8::/32', '::1', 'fe80::1:2:3:4/126'] })), [
    { name: 'in 2001:db8::/32', req: { sourceIp: '2001:db8:abcd::42' }, want: A },
    { name: 'full form in range', req: { sourceIp: '2001:0db8:0000:0000:0000:0000:0000:0001' }, want: A },
    { name: 'outside /32', req: { sourceIp: '2001:db9::1' }, want: N },
    { name: 'loopback', req: { sourceIp: '::1' }, want: A },
    { name: 'in /126', req: { sourceIp: 'fe80::1:2:3:7' }, want: A },
    { name: 'outside /126', req: { sourceIp: 'fe80::1:2:3:8' }, want: N },
    { name: 'an IPv4 peer never matches an IPv6 range', req: { sourceIp: '127.0.0.1' }, want: N },
  ]);
  table(t, 'remoteIpBlocks and notRemoteIpBlocks: remote.ip (X-Forwarded-For client)', allowOnly(from({ remoteIpBlocks: ['203.0.113.0/24'], notRemoteIpBlocks: ['203.0.113.66'] })), [
    { name: 'client in range behind a proxy', req: { sourceIp: '10.0.0.5', remoteIp: '203.0.113.7' }, want: A },
    { name: 'excluded client', req: { sourceIp: '10.0.0.5', remoteIp: '203.0.113.66' }, want: N },
    { name: 'peer in range is not enough', req: { sourceIp: '203.0.113.7', remoteIp: '10.0.0.5' }, want: N },
  ]);
  table(t, 'fields of one source are ANDed', allowOnly(from({ principals: ['cluster.local/ns/a/sa/x'], ipBlocks: ['10.0.0.0/8'] })), [
    { name: 'both', req: { peer: peer('a', 'x'), sourceIp: '10.1.1.1' }, want: A },
    { name: 'principal only', req: { peer: peer('a', 'x'), sourceIp: '192.168.1.1' }, want: N },
  ]);
});

t.test('to.operation', async (t) => {
  table(t, 'hosts: case-insensitive exact, prefix, suffix; the port is part of the Host', allowOnly(to({ hosts: ['httpbin.foo', 'api.example.com:*', '*.internal.example'] })), [
    { name: 'exact', req: { authority: 'httpbin.foo' }, want: A },
    { name: 'case-insensitive', req: { authority: 'HttpBin.FOO' }, want: A },
    { name: 'exact host does not match host:port (Istio: write host:* too)', req: { authority: 'httpbin.foo:8000' }, want: N },
    { name: 'prefix host:*', req: { authority: 'API.example.com:8443' }, want: A },
    { name: 'suffix', req: { authority: 'svc.internal.example' }, want: A },
    { name: 'other', req: { authority: 'example.com' }, want: N },
  ]);
  table(t, 'notHosts', allowOnly(to({ notHosts: ['admin.example.com'] })), [
    { name: 'admin excluded, any case', req: { authority: 'ADMIN.example.com' }, want: N },
    { name: 'other host', req: { authority: 'www.example.com' }, want: A },
  ]);
  table(t, 'ports and notPorts: the destination port', allowOnly(to({ ports: ['8000', '9000'], notPorts: ['9000'] })), [
    { name: '8000', req: { destinationPort: 8000 }, want: A },
    { name: '9000 excluded', req: { destinationPort: 9000 }, want: N },
    { name: '8080', req: { destinationPort: 8080 }, want: N },
  ]);
  table(t, 'methods and notMethods: case-sensitive', allowOnly(to({ methods: ['GET', 'HEAD', 'P*'], notMethods: ['PATCH'] })), [
    { name: 'GET', req: {}, want: A },
    { name: 'lower-case get is another method', req: { method: 'get' }, want: N },
    { name: 'POST by prefix', req: { method: 'POST' }, want: A },
    { name: 'PATCH excluded', req: { method: 'PATCH' }, want: N },
    { name: 'DELETE', req: { method: 'DELETE' }, want: N },
  ]);
  table(t, 'paths: exact, prefix, suffix; the query string is not part of the path', allowOnly(to({ paths: ['/info', '/api/*', '*.html'] })), [
    { name: 'exact', req: { path: '/info' }, want: A },
    { name: 'exact with a query', req: { path: '/info?user=1' }, want: A },
    { name: 'exact is exact', req: { path: '/info/x' }, want: N },
    { name: 'prefix', req: { path: '/api/v1/users' }, want: A },
    { name: 'prefix needs the slash', req: { path: '/api' }, want: N },
    { name: 'suffix', req: { path: '/docs/index.html' }, want: A },
    { name: 'suffix before the query', req: { path: '/index.html?x=.json' }, want: A },
    { name: 'a suffix in the query does not count', req: { path: '/index.json?x=.html' }, want: N },
    { name: 'case-sensitive', req: { path: '/INFO' }, want: N },
  ]);
  table(t, 'paths ["*"]: any path', allowOnly(to({ paths: ['*'] })), [{ name: 'any', req: { path: '/whatever?q' }, want: A }]);
  table(t, 'notPaths', allowOnly(to({ notPaths: ['/admin*'] })), [
    { name: '/admin/x excluded', req: { path: '/admin/x' }, want: N },
    { name: '/adminx excluded (prefix)', req: { path: '/adminx' }, want: N },
    { name: '/public', req: { path: '/public' }, want: A },
  ]);
  table(t, 'path template {*}: exactly one segment', allowOnly(to({ paths: ['/foo/{*}', '/users/{*}/profile'] })), [
    { name: '/foo/bar', req: { path: '/foo/bar' }, want: A },
    { name: '/foo/bar with a query', req: { path: '/foo/bar?x=/y' }, want: A },
    { name: 'not two segments', req: { path: '/foo/bar/baz' }, want: N },
    { name: 'not an empty segment', req: { path: '/foo/' }, want: N },
    { name: 'in the middle', req: { path: '/users/42/profile' }, want: A },
    { name: 'middle segment cannot hold a slash', req: { path: '/users/4/2/profile' }, want: N },
  ]);
  table(t, 'path template {**}: any number of segments, at the end or before literals', allowOnly(to({ paths: ['/foo/{**}', '/a/{*}/b/{**}', '/static/{**}/logo.png'] })), [
    { name: '/foo/ (zero segments)', req: { path: '/foo/' }, want: A },
    { name: '/foo/a/b/c', req: { path: '/foo/a/b/c' }, want: A },
    { name: '/foo needs the slash', req: { path: '/foo' }, want: N },
    { name: '{*} then {**}', req: { path: '/a/x/b/y/z' }, want: A },
    { name: '{*} then {**}, wrong literal', req: { path: '/a/x/c/y' }, want: N },
    { name: '{**} in the middle', req: { path: '/static/img/2024/logo.png' }, want: A },
    { name: '{**} in the middle, other file', req: { path: '/static/img/logo.svg' }, want: N },
  ]);
  table(t, 'notPaths with a template', allowOnly(to({ notPaths: ['/private/{**}'] })), [
    { name: 'excluded', req: { path: '/private/a/b' }, want: N },
    { name: 'other', req: { path: '/public/a' }, want: A },
  ]);
});

t.test('when conditions', async (t) => {
  table(t, 'request.headers[...]: values with wildcards, header names case-insensitive', allowOnly(when('request.headers[X-Token]', ['admin', 'svc-*', '*-ops'])), [
    { name: 'exact', req: { headers: { 'x-token': 'admin' } }, want: A },
    { name: 'prefix', req: { headers: { 'x-token': 'svc-42' } }, want: A },
    { name: 'suffix', req: { headers: { 'x-token': 'team-ops' } }, want: A },
    { name: 'values are case-sensitive', req: { headers: { 'x-token': 'Admin' } }, want: N },
    { name: 'absent', req: {}, want: N },
  ]);
  table(t, 'request.headers ["*"]: present, even empty', allowOnly(when('request.headers[x-present]', ['*'])), [
    { name: 'present', req: { headers: { 'x-present': '' } }, want: A },
    { name: 'absent', req: {}, want: N },
  ]);
  table(t, 'request.headers notValues: an absent header satisfies the negation', allowOnly(when('request.headers[x-env]', undefined, ['prod'])), [
    { name: 'prod excluded', req: { headers: { 'x-env': 'prod' } }, want: N },
    { name: 'dev', req: { headers: { 'x-env': 'dev' } }, want: A },
    { name: 'absent', req: {}, want: A },
  ]);
  table(t, 'request.headers: repeated headers are matched joined with commas, as Envoy does', allowOnly(when('request.headers[x-tag]', ['a,b'])), [
    { name: 'joined', req: { headers: { 'x-tag': 'a,b' } }, want: A },
    { name: 'single', req: { headers: { 'x-tag': 'a' } }, want: N },
  ]);
  table(t, 'request.experimental.inline.headers: one of the comma-separated values', allowOnly(when('request.experimental.inline.headers[x-tag]', ['b', 'x*'])), [
    { name: 'second value', req: { headers: { 'x-tag': 'a,b' } }, want: A },
    { name: 'prefix on one value', req: { headers: { 'x-tag': 'a,xyz' } }, want: A },
    { name: 'none', req: { headers: { 'x-tag': 'a,c' } }, want: N },
  ]);
  table(t, 'request.headers[:authority] reads the pseudo-header', allowOnly(when('request.headers[:authority]', ['*.example.com'])), [
    { name: 'host', req: { authority: 'a.example.com' }, want: A },
    { name: 'other', req: { authority: 'a.example.org' }, want: N },
  ]);
  table(t, 'source.ip and remote.ip', allowOnly({ when: [{ key: 'source.ip', values: ['10.0.0.0/8'] }, { key: 'remote.ip', notValues: ['10.9.9.9'] }] }), [
    { name: 'both hold', req: { sourceIp: '10.1.2.3', remoteIp: '10.1.2.3' }, want: A },
    { name: 'remote excluded', req: { sourceIp: '10.1.2.3', remoteIp: '10.9.9.9' }, want: N },
    { name: 'source outside', req: { sourceIp: '11.0.0.1' }, want: N },
  ]);
  table(t, 'source.namespace and source.principal', allowOnly({ when: [{ key: 'source.namespace', values: ['prod'] }, { key: 'source.principal', notValues: ['cluster.local/ns/prod/sa/batch'] }] }), [
    { name: 'prod/web', req: { peer: peer('prod', 'web') }, want: A },
    { name: 'prod/batch', req: { peer: peer('prod', 'batch') }, want: N },
    { name: 'plaintext', req: {}, want: N },
  ]);
  table(t, 'source.serviceAccount', allowOnly(when('source.serviceAccount', ['prod/web'])), [
    { name: 'prod/web', req: { peer: peer('prod', 'web') }, want: A },
    { name: 'dev/web', req: { peer: peer('dev', 'web') }, want: N },
  ]);
  table(t, 'request.auth.principal', allowOnly(when('request.auth.principal', ['iss.example/alice'])), [
    { name: 'alice', req: { auth: jwt('iss.example', 'alice') }, want: A },
    { name: 'bob', req: { auth: jwt('iss.example', 'bob') }, want: N },
    { name: 'no token', req: {}, want: N },
  ]);
  table(t, 'request.auth.audiences: any audience of the token', allowOnly(when('request.auth.audiences', ['api.example.com', 'svc-*'])), [
    { name: 'one of several', req: { auth: jwt('i', 's', {}, ['web', 'api.example.com']) }, want: A },
    { name: 'prefix', req: { auth: jwt('i', 's', {}, ['svc-orders']) }, want: A },
    { name: 'none', req: { auth: jwt('i', 's', {}, ['web']) }, want: N },
    { name: 'no audience', req: { auth: jwt('i', 's') }, want: N },
  ]);
  table(t, 'request.auth.presenter (azp)', allowOnly(when('request.auth.presenter', ['frontend'])), [
    { name: 'frontend', req: { auth: jwt('i', 's', {}, [], 'frontend') }, want: A },
    { name: 'absent', req: { auth: jwt('i', 's') }, want: N },
  ]);
  table(t, 'request.auth.claims[...]: strings, lists, nested claims', allowOnly({
    when: [
      { key: 'request.auth.claims[groups]', values: ['group1'] },
      { key: 'request.auth.claims[realm_access][roles]', values: ['admin*'] },
    ],
  }), [
    { name: 'list claim with the value, nested list with a prefix match', req: { auth: jwt('i', 's', { groups: ['group0', 'group1'], realm_access: { roles: ['user', 'admin-eu'] } }) }, want: A },
    { name: 'string claim', req: { auth: jwt('i', 's', { groups: 'group1', realm_access: { roles: 'administrator' } }) }, want: A },
    { name: 'nested claim missing', req: { auth: jwt('i', 's', { groups: ['group1'], realm_access: {} }) }, want: N },
    { name: 'nested claim not an object', req: { auth: jwt('i', 's', { groups: ['group1'], realm_access: 'admin' }) }, want: N },
    { name: 'list without the value', req: { auth: jwt('i', 's', { groups: ['group2'], realm_access: { roles: ['admin'] } }) }, want: N },
  ]);
  table(t, 'request.auth.claims: non-string claims never match', allowOnly(when('request.auth.claims[level]', ['3'])), [
    { name: 'number', req: { auth: jwt('i', 's', { level: 3 }) }, want: N },
    { name: 'string', req: { auth: jwt('i', 's', { level: '3' }) }, want: A },
  ]);
  table(t, 'request.auth.claims with a dotted name is one claim', allowOnly(when('request.auth.claims[example.com/role]', ['ops'])), [
    { name: 'dotted claim', req: { auth: jwt('i', 's', { 'example.com/role': 'ops' }) }, want: A },
  ]);
  table(t, 'request.auth.claims notValues: no token satisfies the negation', allowOnly(when('request.auth.claims[role]', undefined, ['guest'])), [
    { name: 'guest', req: { auth: jwt('i', 's', { role: 'guest' }) }, want: N },
    { name: 'no token', req: {}, want: A },
  ]);
  table(t, 'destination.ip and destination.port', allowOnly({ when: [{ key: 'destination.ip', values: ['10.0.0.100'] }, { key: 'destination.port', values: ['8000'], notValues: ['8001'] }] }), [
    { name: 'both', req: {}, want: A },
    { name: 'other port', req: { destinationPort: 8001 }, want: N },
    { name: 'other address', req: { destinationIp: '10.0.0.101' }, want: N },
  ]);
  table(t, 'connection.sni', allowOnly(when('connection.sni', ['*.example.com'])), [
    { name: 'TLS with a matching name', req: { sni: 'api.example.com' }, want: A },
    { name: 'plaintext has no SNI', req: {}, want: N },
  ]);
  t.test('experimental.envoy.filters.* reads filter metadata Remora does not have: as in Envoy without that filter, it never matches', async (t) => {
    const { config, warnings } = compile(allowOnly({ to: [{ operation: { methods: ['GET'] } }], ...when('experimental.envoy.filters.network.mysql_proxy[db.table]', ['[update]']) }));
    t.equal(run(config.create(), {}), N, 'the ALLOW rule cannot match');
    t.equal(run(config.create(), { method: 'POST' }), N);
    t.match(warnings, [/foo\/allow: rules\[0\]\.when\[0\]: key experimental\.envoy\.filters\.network\.mysql_proxy\[db\.table\].*never matches/, /no dynamic metadata envoy\.filters\.network\.mysql_proxy/]);
    const negated = compile(allowOnly({ to: [{ operation: { methods: ['GET'] } }], when: [{ key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', notValues: ['[update]'] }] }));
    t.equal(run(negated.config.create(), {}), A, 'notValues: an absent value is not one of them');
  });
});

t.test("Istio's documented examples", async (t) => {
  // AuthorizationPolicy reference: the first example.
  table(
    t,
    'reference: principal sleep or namespace test; GET /info* or POST /data; JWT from accounts.google.com',
    [
      policy('foo/httpbin', 'ALLOW', [
        {
          from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }, { source: { namespaces: ['test'] } }],
          to: [{ operation: { methods: ['GET'], paths: ['/info*'] } }, { operation: { methods: ['POST'], paths: ['/data'] } }],
          when: [{ key: 'request.auth.claims[iss]', values: ['https://accounts.google.com'] }],
        },
      ]),
    ],
    [
      { name: 'sleep GET /info/x with a Google token', req: { peer: peer('default', 'sleep'), path: '/info/x', auth: jwt('https://accounts.google.com', 'u') }, want: A },
      { name: 'namespace test POST /data', req: { peer: peer('test', 'any'), method: 'POST', path: '/data', auth: jwt('https://accounts.google.com', 'u') }, want: A },
      { name: 'without the token', req: { peer: peer('default', 'sleep'), path: '/info' }, want: N },
      { name: 'another issuer', req: { peer: peer('default', 'sleep'), path: '/info', auth: jwt('https://evil.example', 'u') }, want: N },
      { name: 'POST /info', req: { peer: peer('default', 'sleep'), method: 'POST', path: '/info', auth: jwt('https://accounts.google.com', 'u') }, want: N },
      { name: 'other namespace', req: { peer: peer('dev', 'sleep'), path: '/info', auth: jwt('https://accounts.google.com', 'u') }, want: N },
    ],
  );
  table(t, 'reference: DENY POST from namespace dev', [policy('foo/httpbin', 'DENY', [{ from: [{ source: { namespaces: ['dev'] } }], to: [{ operation: { methods: ['POST'] } }] }])], [
    { name: 'dev POST', req: { peer: peer('dev', 'x'), method: 'POST' }, want: denied('foo', 'httpbin') },
    { name: 'dev GET', req: { peer: peer('dev', 'x') }, want: A },
    { name: 'prod POST', req: { peer: peer('prod', 'x'), method: 'POST' }, want: A },
  ]);
  table(t, 'reference: DENY POST on port 8080', [policy('foo/httpbin', 'DENY', [to({ methods: ['POST'], ports: ['8080'] })])], [
    { name: 'POST :8080', req: { method: 'POST', destinationPort: 8080 }, want: denied('foo', 'httpbin') },
    { name: 'POST :8000', req: { method: 'POST', destinationPort: 8000 }, want: A },
  ]);
  table(t, 'reference: AUDIT GET /user/profile/* has no effect on the decision', [policy('ns1/anyname', 'AUDIT', [to({ methods: ['GET'], paths: ['/user/profile/*'] })])], [
    { name: 'audited request passes', req: { path: '/user/profile/me' }, want: A },
  ]);
  // "Authorization for HTTP traffic" task (bookinfo).
  const bookinfo = [
    policy('default/allow-nothing', 'ALLOW'),
    policy('default/productpage-viewer', 'ALLOW', [to({ methods: ['GET'] })]),
    policy('default/details-viewer', 'ALLOW', [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/bookinfo-productpage'] } }], to: [{ operation: { methods: ['GET'] } }] }]),
  ];
  table(t, 'HTTP task: allow-nothing, then GET for all (productpage-viewer)', bookinfo.slice(0, 2), [
    { name: 'GET /productpage', req: { path: '/productpage' }, want: A },
    { name: 'POST /productpage', req: { method: 'POST', path: '/productpage' }, want: N },
  ]);
  table(t, 'HTTP task: allow-nothing only: RBAC: access denied', bookinfo.slice(0, 1), [{ name: 'GET /productpage', req: { path: '/productpage' }, want: N }]);
  table(t, 'HTTP task: details-viewer allows GET from the productpage service account', [bookinfo[0]!, bookinfo[2]!], [
    { name: 'productpage GET /details/0', req: { peer: peer('default', 'bookinfo-productpage'), path: '/details/0' }, want: A },
    { name: 'sleep GET /details/0', req: { peer: peer('default', 'sleep'), path: '/details/0' }, want: N },
    { name: 'productpage DELETE', req: { peer: peer('default', 'bookinfo-productpage'), method: 'DELETE', path: '/details/0' }, want: N },
  ]);
  // "Authorization policies with a deny action" task (httpbin).
  const denyGet = policy('foo/deny-method-get', 'DENY', [{ to: [{ operation: { methods: ['GET'] } }], when: [{ key: 'request.headers[x-token]', notValues: ['admin'] }] }]);
  const allowIp = policy('foo/allow-path-ip', 'ALLOW', [to({ paths: ['/ip'] })]);
  table(t, 'deny task: GET denied unless x-token: admin', [denyGet], [
    { name: 'GET /get x-token: admin', req: { path: '/get', headers: { 'x-token': 'admin' } }, want: A },
    { name: 'GET /get x-token: guest', req: { path: '/get', headers: { 'x-token': 'guest' } }, want: denied('foo', 'deny-method-get') },
    { name: 'GET /get without x-token', req: { path: '/get' }, want: denied('foo', 'deny-method-get') },
    { name: 'POST /post x-token: guest', req: { method: 'POST', path: '/post', headers: { 'x-token': 'guest' } }, want: A },
  ]);
  table(t, 'deny task: with allow-path-ip, DENY first, then only /ip', [denyGet, allowIp], [
    { name: 'GET /ip x-token: guest: denied by the DENY policy', req: { path: '/ip', headers: { 'x-token': 'guest' } }, want: denied('foo', 'deny-method-get') },
    { name: 'GET /ip x-token: admin', req: { path: '/ip', headers: { 'x-token': 'admin' } }, want: A },
    { name: 'GET /get x-token: admin: no ALLOW matches', req: { path: '/get', headers: { 'x-token': 'admin' } }, want: N },
  ]);
  // "Ingress gateway" task: IP-based allow and deny lists.
  table(t, 'ingress task: ipBlocks allow list', [policy('istio-system/ingress-policy', 'ALLOW', [from({ ipBlocks: ['1.2.3.4', '5.6.7.0/24'] })])], [
    { name: 'listed', req: { sourceIp: '5.6.7.9' }, want: A },
    { name: 'not listed', req: { sourceIp: '127.0.0.1' }, want: N },
  ]);
  table(t, 'ingress task: remoteIpBlocks deny list', [policy('istio-system/ingress-policy', 'DENY', [from({ remoteIpBlocks: ['203.0.113.0/28'] })])], [
    { name: 'denied client', req: { sourceIp: '10.0.0.1', remoteIp: '203.0.113.3' }, want: denied('istio-system', 'ingress-policy') },
    { name: 'other client', req: { sourceIp: '10.0.0.1', remoteIp: '203.0.113.30' }, want: A },
  ]);
  // "JWT" authorization task.
  table(
    t,
    'JWT task: requestPrincipals, then a groups claim',
    [policy('foo/require-jwt', 'ALLOW', [{ from: [{ source: { requestPrincipals: ['testing@secure.istio.io/testing@secure.istio.io'] } }], when: [{ key: 'request.auth.claims[groups]', values: ['group1'] }] }])],
    [
      { name: 'valid token with group1', req: { auth: jwt('testing@secure.istio.io', 'testing@secure.istio.io', { groups: ['group1', 'group2'] }) }, want: A },
      { name: 'valid token without group1', req: { auth: jwt('testing@secure.istio.io', 'testing@secure.istio.io') }, want: N },
      { name: 'no token', req: {}, want: N },
    ],
  );
});

t.test('policies istiod validation refuses are compile errors naming the policy and field', async (t) => {
  const bad: [string, unknown, RegExp][] = [
    ['unknown when key', when('request.body', ['x']), /foo\/allow: rules\[0\]\.when\[0\]\.values: unknown attribute: request\.body/],
    ['destination.labels', when('destination.labels[app]', ['x']), /replaced by the workload selector/],
    ['condition without values', { when: [{ key: 'source.ip' }] }, /at least one of `values` or `notValues` must be set for key source\.ip/],
    ['empty key', { when: [{ key: '', values: ['x'] }] }, /`key` must not be empty/],
    ['bad header key', when('request.headers', ['x']), /bad key \(request\.headers\): should have format a\[b\]/],
    ['bad CIDR', from({ ipBlocks: ['10.0.0.0/33'] }), /rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: bad CIDR range \(10\.0\.0\.0\/33\)/],
    ['bad IP', when('remote.ip', ['10.0.0.256']), /when\[0\]\.values\[0\]: bad IP address/],
    ['bad port', to({ ports: ['80a'] }), /to\[0\]\.operation\.ports\[0\]: bad port \(80a\)/],
    ['port out of range', when('destination.port', ['65536']), /bad port \(65536\)/],
    ['empty source', from({}), /rules\[0\]\.from\[0\]\.source: `from\.source` must not be empty/],
    ['empty operation', to({}), /`to\.operation` must not be empty/],
    ['from: []', { from: [] }, /`from` must not be empty/],
    ['from without source', { from: [{}] }, /`from\.source` must not be nil/],
    ['empty value', to({ methods: [''] }), /methods\[0\]: empty value not allowed/],
    ['serviceAccounts with principals', from({ serviceAccounts: ['a/b'], principals: ['x'] }), /cannot set serviceAccounts with namespaces or principals/],
    ['serviceAccounts wildcard', from({ serviceAccounts: ['a/*'] }), /wildcard not allowed/],
    ['serviceAccounts format', from({ serviceAccounts: ['a/b/c'] }), /expected format 'serviceAccount' or 'namespace\/serviceAccount'/],
    ['{**} then another operator', to({ paths: ['/a/{**}/{*}'] }), /\{\*\*\} is not the last operator/],
    ['braces outside a template', to({ paths: ['/a/{id}'] }), /contains '\{' or '\}' beyond a supported path template/],
    ['invalid literal in a template', to({ paths: ['/a b/{*}'] }), /with invalid string literal/],
    ['template not starting with /', to({ paths: ['a/{*}'] }), /must start with \//],
    ['rule null', null, /rules\[0\]: `rule` must not be nil/],
  ];
  for (const ip of ['1.2.3', '01.2.3.4', '1.2.3.4.5', '2001:db8:::1', '1:2:3:4:5:6:7:8:9', ':1::', '::1/129', '10.0.0.0/-1', '10.0.0.0/8/8', 'fe80::1%eth0']) {
    bad.push([`bad address ${ip}`, from({ notIpBlocks: [ip] }), /notIpBlocks\[0\]: bad (IP address|CIDR range)/]);
  }
  for (const [name, rule, want] of bad) {
    t.throws(() => compile(allowOnly(rule)), want, name);
  }
  t.throws(() => rbacFactory.compile('x', { persistent: (_k, c) => c(), warn: () => {} }), /RBAC message/);
});

t.test('decide(): one-off helper agrees with the compiled table', async (t) => {
  t.equal(decide([policy('foo/deny-all', 'DENY', [{}])], {}), denied('foo', 'deny-all'));
});
