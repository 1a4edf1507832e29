// envoy.filters.http.rbac from its Envoy config (the proto3 JSON of RBAC), as a user or an
// xDS server writes it: every matcher form Envoy documents, the three actions, shadow rules
// that are counted but never enforced, metadata from the verified JWT, and compile errors that
// name the field.
import t from 'tap';
import { FilterStatus, Stat, type FilterStats } from '@remora/filters';
import { rbacFactory, type RbacFilter } from '@remora/filters/internal';
import type { RBACJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.js';
import type { PermissionJson, PrincipalJson } from '@remora/config/envoy/gen/envoy/config/rbac/v3/rbac_pb.js';
import { FakeRequest, RecordingCallbacks, storeContext, type ReqInit } from '@remora/filters/testing';
import { jwt, peer } from './authz-helpers.ts';

const BASE: ReqInit = { authority: 'httpbin.foo', sourceIp: '10.0.0.1', remoteIp: '10.0.0.1', destinationIp: '10.0.0.100', destinationPort: 8000 };

function compile(config: RBACJson) {
  const context = storeContext();
  const compiled = rbacFactory.compile(config, context);
  return { filter: compiled.create() as RbacFilter, warnings: context.warnings };
}

/** 'allow' or the 403's details. */
function counts(filter: RbacFilter) {
  const { allowed, denied, shadowAllowed, shadowDenied } = filter.stats;
  return { allowed: allowed.value, denied: denied.value, shadowAllowed: shadowAllowed.value, shadowDenied: shadowDenied.value };
}

function run(filter: RbacFilter, init: ReqInit): string {
  const cb = new RecordingCallbacks();
  const status = filter.onRequest(new FakeRequest({ ...BASE, ...init }), cb);
  if (status === FilterStatus.Continue) return 'allow';
  if (cb.reply?.status !== 403 || cb.reply.body !== 'RBAC: access denied') throw new Error(`unexpected reply ${JSON.stringify(cb.reply)}`);
  return cb.reply.details;
}

/** An ALLOW filter with one policy `p` of one permission and one principal. */
const allow = (permission: PermissionJson, principal: PrincipalJson = { any: true }): RBACJson => ({
  rules: { policies: { p: { permissions: [permission], principals: [principal] } } },
});
const A = 'allow';
const N = 'rbac_access_denied_matched_policy[none]';

t.test('header matchers: every HeaderMatcher form', async (t) => {
  const cases: [string, PermissionJson, ReqInit, string][] = [
    ['exact', { header: { name: 'x-a', stringMatch: { exact: 'v' } } }, { headers: { 'x-a': 'v' } }, A],
    ['exact is case-sensitive', { header: { name: 'x-a', stringMatch: { exact: 'v' } } }, { headers: { 'x-a': 'V' } }, N],
    ['exact ignoreCase', { header: { name: 'x-a', stringMatch: { exact: 'v', ignoreCase: true } } }, { headers: { 'x-a': 'V' } }, A],
    ['prefix', { header: { name: 'X-A', stringMatch: { prefix: 'ab' } } }, { headers: { 'x-a': 'abc' } }, A],
    ['suffix', { header: { name: 'x-a', stringMatch: { suffix: 'bc' } } }, { headers: { 'x-a': 'abc' } }, A],
    ['contains', { header: { name: 'x-a', stringMatch: { contains: 'b' } } }, { headers: { 'x-a': 'abc' } }, A],
    ['contains, not there', { header: { name: 'x-a', stringMatch: { contains: 'z' } } }, { headers: { 'x-a': 'abc' } }, N],
    ['safe_regex matches the whole value', { header: { name: 'x-a', stringMatch: { safeRegex: { regex: 'a.' } } } }, { headers: { 'x-a': 'abc' } }, N],
    ['safe_regex', { header: { name: 'x-a', stringMatch: { safeRegex: { regex: 'a.c' } } } }, { headers: { 'x-a': 'abc' } }, A],
    ['deprecated exact_match', { header: { name: 'x-a', exactMatch: 'v' } }, { headers: { 'x-a': 'v' } }, A],
    ['deprecated safe_regex_match', { header: { name: 'x-a', safeRegexMatch: { regex: '[0-9]+' } } }, { headers: { 'x-a': '42' } }, A],
    ['range_match, end exclusive', { header: { name: 'x-n', rangeMatch: { start: '1', end: '10' } } }, { headers: { 'x-n': '10' } }, N],
    ['range_match', { header: { name: 'x-n', rangeMatch: { start: '1', end: '10' } } }, { headers: { 'x-n': '9' } }, A],
    ['present_match', { header: { name: 'x-a', presentMatch: true } }, { headers: { 'x-a': '' } }, A],
    ['present_match, absent', { header: { name: 'x-a', presentMatch: true } }, {}, N],
    ['present_match false, absent', { header: { name: 'x-a', presentMatch: false } }, {}, A],
    ['invert_match', { header: { name: 'x-a', stringMatch: { exact: 'v' }, invertMatch: true } }, { headers: { 'x-a': 'w' } }, A],
    ['invert_match, equal value', { header: { name: 'x-a', stringMatch: { exact: 'v' }, invertMatch: true } }, { headers: { 'x-a': 'v' } }, N],
    ['invert_match does not match an absent header', { header: { name: 'x-a', stringMatch: { exact: 'v' }, invertMatch: true } }, {}, N],
    ['treat_missing_header_as_empty', { header: { name: 'x-a', stringMatch: { exact: '' }, treatMissingHeaderAsEmpty: true } }, {}, A],
    [':authority with ignore_case', { header: { name: ':authority', stringMatch: { suffix: '.FOO', ignoreCase: true } } }, {}, A],
    [':method', { header: { name: ':method', stringMatch: { exact: 'POST' } } }, { method: 'POST' }, A],
    [':path is the whole path', { header: { name: ':path', stringMatch: { exact: '/a?b' } } }, { path: '/a?b' }, A],
  ];
  for (const [name, permission, req, want] of cases) t.equal(run(compile(allow(permission)).filter, req), want, name);
});

t.test('permissions: and/or/not, url_path, ports, addresses, SNI, uri_template', async (t) => {
  const cases: [string, PermissionJson, ReqInit, string][] = [
    ['and', { andRules: { rules: [{ destinationPort: 8000 }, { header: { name: ':method', stringMatch: { exact: 'GET' } } }] } }, {}, A],
    ['and, one fails', { andRules: { rules: [{ destinationPort: 8000 }, { header: { name: ':method', stringMatch: { exact: 'PUT' } } }] } }, {}, N],
    ['or', { orRules: { rules: [{ destinationPort: 1 }, { destinationPort: 8000 }] } }, {}, A],
    ['not', { notRule: { destinationPort: 8000 } }, {}, N],
    ...(() => {
      // Plain matches on one header and url paths are evaluated together: same answers as one by one.
      const mixed: PermissionJson = { orRules: { rules: [
        { header: { name: 'x-a', stringMatch: { exact: '1' } } },
        { urlPath: { path: { exact: '/z' } } },
        { header: { name: 'X-A', stringMatch: { prefix: '2' } } },
        { header: { name: 'x-a', stringMatch: { exact: '3' }, invertMatch: true } },
        { urlPath: { path: { prefix: '/y/' } } },
      ] } };
      return [
        ['or: second plain value of a header', mixed, { headers: { 'x-a': '22' }, path: '/q' }, A],
        ['or: the inverted one of the same header', mixed, { headers: { 'x-a': '9' }, path: '/q' }, A],
        ['or: none (the inverted one sees 3)', mixed, { headers: { 'x-a': '3' }, path: '/q' }, N],
        ['or: a url path', mixed, { path: '/y/a?b' }, A],
        ['or: header absent, no path', mixed, { path: '/q' }, N],
      ] as [string, PermissionJson, ReqInit, string][];
    })(),
    ['url_path ignores the query', { urlPath: { path: { exact: '/a' } } }, { path: '/a?x=1' }, A],
    ['url_path ignores the fragment', { urlPath: { path: { suffix: '/a' } } }, { path: '/x/a#f' }, A],
    ['url_path ignore_case', { urlPath: { path: { prefix: '/ADMIN', ignoreCase: true } } }, { path: '/admin/x' }, A],
    ['url_path regex, without the query', { urlPath: { path: { safeRegex: { regex: '/a/[0-9]+' } } } }, { path: '/a/12?q' }, A],
    ['destination_port_range', { destinationPortRange: { start: 8000, end: 8001 } }, {}, A],
    ['destination_port_range, end exclusive', { destinationPortRange: { start: 7000, end: 8000 } }, {}, N],
    ['destination_ip', { destinationIp: { addressPrefix: '10.0.0.0', prefixLen: 24 } }, {}, A],
    ['destination_ip, other', { destinationIp: { addressPrefix: '10.0.1.0', prefixLen: 24 } }, {}, N],
    ['requested_server_name', { requestedServerName: { suffix: '.example.com' } }, { sni: 'api.example.com' }, A],
    ['requested_server_name, plaintext', { requestedServerName: { suffix: '.example.com' } }, {}, N],
    ['uri_template *', { uriTemplate: { name: 'uri-template', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', pathTemplate: '/v1/*/items' } as never } }, { path: '/v1/x/items?q' }, A],
    ['uri_template * is one segment', { uriTemplate: { name: 'uri-template', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', pathTemplate: '/v1/*/items' } as never } }, { path: '/v1/x/y/items' }, N],
    ['uri_template ** then literal', { uriTemplate: { name: 'uri-template', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', pathTemplate: '/**/logo.png' } as never } }, { path: '/a/b/logo.png' }, A],
  ];
  for (const [name, permission, req, want] of cases) t.equal(run(compile(allow(permission)).filter, req), want, name);
});

t.test('principals: peer identity, addresses, headers, paths', async (t) => {
  const cases: [string, PrincipalJson, ReqInit, string][] = [
    ['authenticated without a name: any mTLS peer', { authenticated: {} }, { peer: peer('a', 'b') }, A],
    ['authenticated, plaintext', { authenticated: {} }, {}, N],
    ['principal_name sees the SPIFFE URI', { authenticated: { principalName: { exact: 'spiffe://cluster.local/ns/a/sa/b' } } }, { peer: peer('a', 'b') }, A],
    ['principal_name regex', { authenticated: { principalName: { safeRegex: { regex: 'spiffe://.+/ns/a/.*' } } } }, { peer: peer('a', 'x') }, A],
    ['direct_remote_ip', { directRemoteIp: { addressPrefix: '10.0.0.0', prefixLen: 8 } }, { sourceIp: '10.9.9.9', remoteIp: '192.0.2.1' }, A],
    ['source_ip is the peer address too', { sourceIp: { addressPrefix: '10.9.9.9', prefixLen: 32 } }, { sourceIp: '10.9.9.9' }, A],
    ['remote_ip is the client per X-Forwarded-For', { remoteIp: { addressPrefix: '192.0.2.0', prefixLen: 24 } }, { sourceIp: '10.9.9.9', remoteIp: '192.0.2.1' }, A],
    ['remote_ip is not the peer', { remoteIp: { addressPrefix: '10.0.0.0', prefixLen: 8 } }, { sourceIp: '10.9.9.9', remoteIp: '192.0.2.1' }, N],
    ['IPv6 CIDR', { directRemoteIp: { addressPrefix: '2001:db8::', prefixLen: 32 } }, { sourceIp: '2001:db8::1' }, A],
    ['header', { header: { name: 'x-user', stringMatch: { exact: 'alice' } } }, { headers: { 'x-user': 'alice' } }, A],
    ['url_path', { urlPath: { path: { prefix: '/public' } } }, { path: '/public/a' }, A],
    ['not any', { notId: { any: true } }, {}, N],
    ['or of and', { orIds: { ids: [{ andIds: { ids: [{ any: true }, { notId: { any: true } }] } }, { any: true }] } }, {}, A],
  ];
  for (const [name, principal, req, want] of cases) t.equal(run(compile(allow({ any: true }, principal)).filter, req), want, name);
});

t.test('metadata matchers read the verified JWT (jwt_authn payload and istio_authn keys)', async (t) => {
  const token = jwt('https://issuer.example', 'alice', { groups: ['dev', 'ops'], realm: { role: 'admin' }, level: 3 }, ['api'], 'web');
  const meta = (filter: string, path: string[], value: object, invert = false): PrincipalJson => ({ metadata: { filter, path: path.map((key) => ({ key })), value, ...(invert ? { invert } : {}) } });
  const cases: [string, PrincipalJson, ReqInit, string][] = [
    ['jwt_authn payload iss', meta('envoy.filters.http.jwt_authn', ['payload', 'iss'], { stringMatch: { exact: 'https://issuer.example' } }), { auth: token }, A],
    ['jwt_authn list claim, one_of', meta('envoy.filters.http.jwt_authn', ['payload', 'groups'], { listMatch: { oneOf: { stringMatch: { exact: 'ops' } } } }), { auth: token }, A],
    ['jwt_authn nested claim', meta('envoy.filters.http.jwt_authn', ['payload', 'realm', 'role'], { stringMatch: { prefix: 'adm' } }), { auth: token }, A],
    ['jwt_authn number claim', meta('envoy.filters.http.jwt_authn', ['payload', 'level'], { doubleMatch: { exact: 3 } }), { auth: token }, A],
    ['jwt_authn without a token', meta('envoy.filters.http.jwt_authn', ['payload', 'iss'], { stringMatch: { safeRegex: { regex: '.+' } } }), {}, N],
    ['inverted, without a token: the absent value is inverted too', meta('envoy.filters.http.jwt_authn', ['payload', 'iss'], { stringMatch: { exact: 'x' } }, true), {}, A],
    ['present_match', meta('envoy.filters.http.jwt_authn', ['payload', 'realm'], { presentMatch: true }), { auth: token }, A],
    ['istio_authn request.auth.principal', meta('istio_authn', ['request.auth.principal'], { stringMatch: { exact: 'https://issuer.example/alice' } }), { auth: token }, A],
    ['istio_authn request.auth.audiences', meta('istio_authn', ['request.auth.audiences'], { listMatch: { oneOf: { stringMatch: { exact: 'api' } } } }), { auth: token }, A],
    ['istio_authn request.auth.presenter', meta('istio_authn', ['request.auth.presenter'], { stringMatch: { exact: 'web' } }), { auth: token }, A],
    ['istio_authn request.auth.claims nested', meta('istio_authn', ['request.auth.claims', 'realm', 'role'], { stringMatch: { exact: 'admin' } }), { auth: token }, A],
    ['istio_authn or_match', meta('istio_authn', ['request.auth.claims', 'groups'], { orMatch: { valueMatchers: [{ stringMatch: { exact: 'x' } }, { listMatch: { oneOf: { stringMatch: { exact: 'dev' } } } }] } }), { auth: token }, A],
  ];
  for (const [name, principal, req, want] of cases) t.equal(run(compile(allow({ any: true }, principal)).filter, req), want, name);
  const { warnings } = compile(allow({ metadata: { filter: 'envoy.filters.network.mysql_proxy', path: [{ key: 't' }], value: { presentMatch: true } } }));
  t.match(warnings, [/rules\.policies\[p\]\.permissions\[0\]\.metadata: Remora has no dynamic metadata envoy\.filters\.network\.mysql_proxy\[t\]/]);
});

t.test('actions: DENY names the first matching policy by name, ALLOW denies with [none], LOG never denies', async (t) => {
  const deny = compile({ rules: { action: 'DENY', policies: { 'z-last': { permissions: [{ any: true }], principals: [{ any: true }] }, 'a first': { permissions: [{ any: true }], principals: [{ any: true }] } } } }).filter;
  t.equal(run(deny, {}), 'rbac_access_denied_matched_policy[a_first]', 'ordered by name; whitespace becomes _');
  const allowNothing = compile({ rules: { policies: {} } }).filter;
  t.equal(run(allowNothing, {}), N);
  const log = compile({ rules: { action: 'LOG', policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } } }).filter;
  t.equal(run(log, {}), A);
  const noRules = compile({}).filter;
  t.equal(run(noRules, {}), A, 'no rules: nothing is enforced');
  t.equal(deny.stats.denied.value, 1);
});

t.test('shadow_rules are evaluated and counted, never enforced', async (t) => {
  const { filter } = compile({
    rules: { policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } },
    shadowRules: { action: 'DENY', policies: { s: { permissions: [{ urlPath: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } },
    shadowRulesStatPrefix: 'istio_dry_run_deny_',
  });
  t.equal(run(filter, { path: '/admin/x' }), A, 'the shadow DENY matches, the request still passes');
  t.equal(run(filter, { path: '/public' }), A);
  t.same(counts(filter), { allowed: 2, denied: 0, shadowAllowed: 1, shadowDenied: 1 });
  const onlyShadow = compile({ shadowRules: { policies: {} } }).filter;
  t.equal(run(onlyShadow, {}), A, 'a shadow ALLOW nothing matches does not deny');
  t.same(counts(onlyShadow), { allowed: 0, denied: 0, shadowAllowed: 0, shadowDenied: 1 });
});

t.test("stat names: Envoy's `rbac.` then rules_stat_prefix / shadow_rules_stat_prefix, in the connection manager's namespace", async (t) => {
  const names: string[] = [];
  const stats: FilterStats = {
    http: (name) => (names.push(`http.<prefix>.${name}`), new Stat()),
    root: (name) => (names.push(name), new Stat()),
  };
  const policies = { p: { permissions: [{ any: true }], principals: [{ any: true }] } };
  rbacFactory.compile({ rules: { policies }, shadowRules: { policies }, shadowRulesStatPrefix: 'istio_dry_run_allow_' }, { ...storeContext(), stats });
  t.same(names, ['http.<prefix>.rbac.allowed', 'http.<prefix>.rbac.denied', 'http.<prefix>.rbac.istio_dry_run_allow_shadow_allowed', 'http.<prefix>.rbac.istio_dry_run_allow_shadow_denied']);
  names.length = 0;
  rbacFactory.compile({ rules: { policies }, rulesStatPrefix: 'enforced_' }, { ...storeContext(), stats });
  t.same(names.slice(0, 2), ['http.<prefix>.rbac.enforced_allowed', 'http.<prefix>.rbac.enforced_denied']);
});

t.test('what Remora cannot evaluate is a compile error naming the field', async (t) => {
  const bad: [string, unknown, RegExp][] = [
    ['CEL condition', { rules: { policies: { p: { permissions: [{ any: true }], principals: [{ any: true }], condition: {} } } } }, /rules\.policies\[p\]\.condition: CEL conditions are not supported/],
    ['generic matcher', { matcher: {} }, /matcher: the generic matcher API is not supported/],
    ['filter_state principal', allow({ any: true }, { filterState: { key: 'k' } } as PrincipalJson), /principals\[0\]: no supported identifier/],
    ['bad regex', allow({ header: { name: 'x', stringMatch: { safeRegex: { regex: '(' } } } }), /permissions\[0\]\.header\.stringMatch\.safeRegex\.regex: regex/],
    ['bad CIDR', allow({ destinationIp: { addressPrefix: '10.0.0.256', prefixLen: 32 } }), /permissions\[0\]\.destinationIp: bad CIDR range/],
    ['no permissions', { rules: { policies: { p: { principals: [{ any: true }] } } } }, /rules\.policies\[p\]\.permissions: at least one is required/],
    ['bad action', { rules: { action: 'MAYBE', policies: {} } }, /rules\.action: MAYBE/],
    ['empty prefix', allow({ urlPath: { path: { prefix: '' } } }), /urlPath\.path: an empty prefix is not allowed/],
  ];
  for (const [name, config, want] of bad) t.throws(() => compile(config as RBACJson), want, name);
});
