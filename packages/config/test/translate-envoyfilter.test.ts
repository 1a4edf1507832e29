// EnvoyFilter HTTP_FILTER and NETWORK_FILTER patches on the translated listeners, by istiod's
// rules (pilot/pkg/networking/core/envoyfilter/listener_patch.go): every operation on the
// filters Remora runs, match semantics (context, listener port and name, filter and subFilter
// names, no-op when a subFilter is absent), istiod's order of EnvoyFilters, the connection
// manager MERGE, and errors/warnings that name the EnvoyFilter, the patch and the field.
import t from 'tap';
import type { HttpFilterConfig, ProxyConfig } from '@remora/config';
import { BOOKINFO_SERVICES, INGRESS, PORTS, SIDECAR, translate } from './helpers/translate.ts';

const INBOUND = { ...PORTS, appPort: 9080 };
const RBAC = 'envoy.filters.http.rbac';
const JWT = 'envoy.filters.http.jwt_authn';
const FAULT = 'envoy.filters.http.fault';
const LRL = 'envoy.filters.http.local_ratelimit';
const CORS = 'envoy.filters.http.cors';
const ROUTER = 'envoy.filters.http.router';

const DENY_ADMIN = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
---
`;

const JWT_POLICY = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.test
    jwks: '{"keys":[]}'
---
`;

interface PatchOpts {
  name?: string;
  ns?: string;
  priority?: number;
  applyTo?: string;
  context?: string;
  port?: number;
  listenerName?: string;
  filterName?: string | null;
  subFilter?: string | null;
  operation: string;
  value?: string;
}

/** An EnvoyFilter with one patch; `value` is the patch value's YAML, indented under `value:`. */
function envoyFilter(o: PatchOpts): string {
  const listener = [
    o.port !== undefined ? `          portNumber: ${o.port}` : '',
    o.listenerName !== undefined ? `          name: ${o.listenerName}` : '',
    o.filterName === null
      ? ''
      : `          filterChain:\n            filter:\n              name: ${o.filterName ?? 'envoy.filters.network.http_connection_manager'}${o.subFilter ? `\n              subFilter: {name: ${o.subFilter}}` : ''}`,
  ]
    .filter((l) => l !== '')
    .join('\n');
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ${o.name ?? 'ef'}, namespace: ${o.ns ?? 'default'}}
spec:
${o.priority !== undefined ? `  priority: ${o.priority}\n` : ''}  configPatches:
    - applyTo: ${o.applyTo ?? 'HTTP_FILTER'}
      match:
        context: ${o.context ?? 'SIDECAR_INBOUND'}
${listener === '' ? '' : `        listener:\n${listener}\n`}      patch:
        operation: ${o.operation}
${o.value === undefined ? '' : `        value:\n${o.value.replace(/^/gm, '          ')}\n`}---
`;
}

const faultValue = (status: number, name = FAULT) => `name: ${name}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
  abort: {http_status: ${status}, percentage: {numerator: 100}}`;

function chain(config: ProxyConfig, listener: string): HttpFilterConfig[] {
  const l = config.listeners.find((x) => x.name === listener);
  if (l === undefined) throw new Error(`no listener ${listener}: ${config.listeners.map((x) => x.name).join(', ')}`);
  return [...l.httpFilters];
}
const names = (config: ProxyConfig, listener = 'virtualInbound') => chain(config, listener).map((f) => f.name);

t.test('REMOVE: the named filter leaves the chain', async (t) => {
  const base = translate([BOOKINFO_SERVICES, DENY_ADMIN], SIDECAR, INBOUND);
  t.same(names(base.config), [RBAC, CORS, ROUTER]);
  const { config, brief } = translate([BOOKINFO_SERVICES, DENY_ADMIN, envoyFilter({ operation: 'REMOVE', subFilter: RBAC })], SIDECAR, INBOUND);
  t.same(brief, []);
  t.same(names(config), [CORS, ROUTER]);
  t.same(names(config, 'virtualOutbound'), [CORS, ROUTER], 'SIDECAR_INBOUND only');
});

t.test('REMOVE without a subFilter does nothing, as istiod, and says so', async (t) => {
  const { config, brief } = translate([BOOKINFO_SERVICES, DENY_ADMIN, envoyFilter({ operation: 'REMOVE' })], SIDECAR, INBOUND);
  t.same(names(config), [RBAC, CORS, ROUTER]);
  t.match(brief, [/^warning EnvoyFilter default\/ef spec\.configPatches\[0\]\.match\.listener\.filterChain\.filter\.subFilter: REMOVE of an HTTP filter needs/]);
});

t.test('REMOVE of the router is refused: Envoy needs it last', async (t) => {
  const { brief } = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'REMOVE', subFilter: ROUTER })], SIDECAR, INBOUND);
  t.match(brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.match\.listener\.filterChain\.filter\.subFilter\.name: Envoy refuses an HTTP filter chain that does not end with envoy\.filters\.http\.router/]);
});

t.test('REPLACE: the filter takes the patch config (canonical proto3 JSON)', async (t) => {
  const value = `name: ${RBAC}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
  rules:
    action: DENY
    policies:
      all:
        permissions: [{any: true}]
        principals: [{any: true}]`;
  const { config, brief } = translate([BOOKINFO_SERVICES, DENY_ADMIN, envoyFilter({ operation: 'REPLACE', subFilter: RBAC, value })], SIDECAR, INBOUND);
  t.same(brief, []);
  t.same(names(config), [RBAC, CORS, ROUTER]);
  t.strictSame(chain(config, 'virtualInbound')[0]!.config, { rules: { action: 'DENY', policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } } } });
});

t.test('INSERT_FIRST puts the filter before jwt_authn; INSERT_BEFORE rbac between jwt_authn and rbac; INSERT_AFTER rbac after it', async (t) => {
  const first = translate([BOOKINFO_SERVICES, JWT_POLICY, DENY_ADMIN, envoyFilter({ operation: 'INSERT_FIRST', value: faultValue(503) })], SIDECAR, INBOUND);
  t.same(first.brief, []);
  t.same(names(first.config), [FAULT, JWT, RBAC, CORS, ROUTER]);
  const before = translate([BOOKINFO_SERVICES, JWT_POLICY, DENY_ADMIN, envoyFilter({ operation: 'INSERT_BEFORE', subFilter: RBAC, value: faultValue(503) })], SIDECAR, INBOUND);
  t.same(names(before.config), [JWT, FAULT, RBAC, CORS, ROUTER]);
  const after = translate([BOOKINFO_SERVICES, JWT_POLICY, DENY_ADMIN, envoyFilter({ operation: 'INSERT_AFTER', subFilter: RBAC, value: faultValue(503) })], SIDECAR, INBOUND);
  t.same(names(after.config), [JWT, RBAC, FAULT, CORS, ROUTER]);
  t.strictSame(chain(after.config, 'virtualInbound')[2]!.config, { abort: { httpStatus: 503, percentage: { numerator: 100 } } });
  const add = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'ADD', value: faultValue(503) })], SIDECAR, INBOUND);
  t.same(names(add.config), [CORS, FAULT, ROUTER], 'ADD: the end of the chain, before the router');
});

t.test('deprecated filter names match their canonical filter, with istiod\'s warning', async (t) => {
  const { config, brief } = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'INSERT_BEFORE', subFilter: 'envoy.router', value: faultValue(503, 'envoy.fault') })], SIDECAR, INBOUND);
  t.same(names(config), [CORS, FAULT, ROUTER]);
  t.match(brief, [/using deprecated filter name "envoy\.fault"; use "envoy\.filters\.http\.fault" instead/]);
});

t.test('MERGE: proto merge into the local rate limit (message fields merged, repeated appended, scalars replaced)', async (t) => {
  const insert = envoyFilter({
    name: 'insert',
    operation: 'INSERT_BEFORE',
    value: `name: ${LRL}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  stat_prefix: http_local_rate_limiter
  token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
  response_headers_to_add: [{header: {key: x-one, value: '1'}}]`,
  });
  const merge = envoyFilter({
    name: 'merge',
    operation: 'MERGE',
    subFilter: LRL,
    value: `typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  token_bucket: {max_tokens: 1}
  response_headers_to_add: [{header: {key: x-two, value: '2'}}]`,
  });
  const { config, brief } = translate([BOOKINFO_SERVICES, insert, merge], SIDECAR, INBOUND);
  t.same(brief, []);
  t.strictSame(chain(config, 'virtualInbound')[0], {
    name: LRL,
    config: {
      statPrefix: 'http_local_rate_limiter',
      tokenBucket: { maxTokens: 1, tokensPerFill: 4, fillInterval: '60s' },
      responseHeadersToAdd: [{ header: { key: 'x-one', value: '1' } }, { header: { key: 'x-two', value: '2' } }],
    },
  });
});

t.test("MERGE: the merged local rate limit still keeps Envoy's rules; a Duration merges field by field, as proto.Merge", async (t) => {
  const insert = envoyFilter({
    name: 'insert',
    operation: 'INSERT_BEFORE',
    value: `name: ${LRL}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  stat_prefix: http_local_rate_limiter
  token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}`,
  });
  const merge = (fields: string) =>
    envoyFilter({
      name: 'merge',
      operation: 'MERGE',
      subFilter: LRL,
      value: `typed_config:\n  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n  ${fields}`,
    });
  const bad = translate([BOOKINFO_SERVICES, insert, merge('descriptors: [{entries: [{key: k, value: v}]}]')], SIDECAR, INBOUND);
  t.match(bad.brief, [/^error EnvoyFilter default\/merge spec\.configPatches\[0\]\.patch\.value\.typed_config\.descriptors\[0\]\.token_bucket: token_bucket is required in a descriptor/]);
  const nanos = translate([BOOKINFO_SERVICES, insert, merge('token_bucket: {fill_interval: 0.5s}')], SIDECAR, INBOUND);
  t.same(nanos.brief, []);
  const lrl = chain(nanos.config, 'virtualInbound')[0]!.config as { tokenBucket: { fillInterval: string } };
  t.equal(lrl.tokenBucket.fillInterval, '60.500s', 'seconds 0 is a default, not copied; nanos are');
});

t.test('MERGE of another type leaves a filter alone (istiod merges only the same type)', async (t) => {
  const merge = envoyFilter({ operation: 'MERGE', value: `typed_config:\n  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n  abort: {http_status: 500}` });
  const { config, brief } = translate([BOOKINFO_SERVICES, DENY_ADMIN, merge], SIDECAR, INBOUND);
  t.same(brief, []);
  const base = translate([BOOKINFO_SERVICES, DENY_ADMIN], SIDECAR, INBOUND);
  t.strictSame(chain(config, 'virtualInbound'), chain(base.config, 'virtualInbound'));
});

t.test('match: context, listener port and name, network filter name; a missing subFilter is a no-op with a warning', async (t) => {
  const insert = (o: Partial<PatchOpts>) => names(translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'INSERT_FIRST', value: faultValue(500), ...o })], SIDECAR, INBOUND).config);
  t.same(insert({ context: 'SIDECAR_OUTBOUND' }), [CORS, ROUTER], 'other context');
  t.same(insert({ context: 'ANY' }), [FAULT, CORS, ROUTER], 'ANY');
  t.same(insert({ port: 9080 }), [FAULT, CORS, ROUTER], "the app's port on the inbound side");
  t.same(insert({ port: 9999 }), [CORS, ROUTER], 'another port');
  t.same(insert({ listenerName: 'virtualInbound' }), [FAULT, CORS, ROUTER], 'listener name');
  t.same(insert({ listenerName: 'virtualOutbound' }), [CORS, ROUTER], 'another listener name');
  t.same(insert({ filterName: 'envoy.filters.network.tcp_proxy' }), [CORS, ROUTER], 'another network filter');
  t.same(insert({ filterName: 'envoy.http_connection_manager' }), [FAULT, CORS, ROUTER], 'the deprecated connection manager name');
  const missing = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'INSERT_AFTER', subFilter: 'envoy.filters.http.ext_authz', value: faultValue(500) })], SIDECAR, INBOUND);
  t.same(names(missing.config), [CORS, ROUTER]);
  t.match(missing.brief, [/^warning EnvoyFilter default\/ef .*subFilter\.name: envoy\.filters\.http\.ext_authz is not in the SIDECAR_INBOUND listener's HTTP filter chain/]);
  const gone = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'REPLACE', subFilter: RBAC, value: faultValue(500) })], SIDECAR, INBOUND);
  t.same(names(gone.config), [CORS, ROUTER], 'REPLACE of a filter not in the chain');
  t.match(gone.brief, [/nothing is replaced there, as istiod does/]);
});

t.test('order: priority first, then the root namespace before the workload namespace, then age', async (t) => {
  const a = envoyFilter({ name: 'a', ns: 'default', operation: 'INSERT_FIRST', value: faultValue(501) });
  const b = envoyFilter({ name: 'b', ns: 'istio-system', operation: 'INSERT_FIRST', value: faultValue(502) });
  const statuses = (config: ProxyConfig) => chain(config, 'virtualInbound').filter((f) => f.name === FAULT).map((f) => (f.config as { abort: { httpStatus: number } }).abort.httpStatus);
  // INSERT_FIRST: the patch applied last ends up first.
  t.same(statuses(translate([BOOKINFO_SERVICES, a, b], SIDECAR, INBOUND).config), [501, 502], 'root namespace (502) applies first although younger');
  const a2 = envoyFilter({ name: 'a', ns: 'default', priority: -1, operation: 'INSERT_FIRST', value: faultValue(501) });
  t.same(statuses(translate([BOOKINFO_SERVICES, a2, b], SIDECAR, INBOUND).config), [502, 501], 'a lower priority applies first');
  const c = envoyFilter({ name: 'c', ns: 'default', operation: 'INSERT_FIRST', value: faultValue(503) });
  t.same(statuses(translate([BOOKINFO_SERVICES, a, c], SIDECAR, INBOUND).config), [503, 501], 'same namespace and priority: the older first');
});

t.test('bad typed_config: an error naming the EnvoyFilter, the patch and the exact field', async (t) => {
  const value = `name: ${FAULT}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
  abort: {http_status: 503, percentage: {numerator: 100, denominator: SOMETIMES}}`;
  const { brief } = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'INSERT_FIRST', value })], SIDECAR, INBOUND);
  t.equal(brief.length, 1);
  t.match(brief[0], /^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.abort\.percentage\.denominator: /);
  const wrongType = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'INSERT_FIRST', value: `name: ${RBAC}\ntyped_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}` })], SIDECAR, INBOUND);
  t.match(wrongType.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.@type: envoy\.filters\.http\.rbac takes type\.googleapis\.com\/envoy\.extensions\.filters\.http\.rbac\.v3\.RBAC/]);
  const badMerge = translate([BOOKINFO_SERVICES, envoyFilter({ operation: 'MERGE', subFilter: CORS, value: `typed_config:\n  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors\n  nope: 1` })], SIDECAR, INBOUND);
  t.match(badMerge.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.nope: /]);
});

t.test('REPLACE with a filter Remora lacks is refused unless is_optional', async (t) => {
  const { brief } = translate([BOOKINFO_SERVICES, DENY_ADMIN, envoyFilter({ operation: 'REPLACE', subFilter: RBAC, value: 'name: envoy.filters.http.ext_authz\ntyped_config: {"@type": type.googleapis.com/google.protobuf.Empty}' })], SIDECAR, INBOUND);
  t.match(brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.name: Remora has no HTTP filter envoy\.filters\.http\.ext_authz/]);
});

const HCM = (fields: string, o: Partial<PatchOpts> = {}) =>
  envoyFilter({
    applyTo: 'NETWORK_FILTER',
    context: 'GATEWAY',
    operation: 'MERGE',
    ns: 'istio-system',
    value: `typed_config:\n  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n${fields.replace(/^/gm, '  ')}`,
    ...o,
  });

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
`;

t.test('NETWORK_FILTER MERGE into the connection manager: the modelled fields change, others are reported', async (t) => {
  const { config, brief } = translate([GATEWAY, HCM('server_header_transformation: PASS_THROUGH\nserver_name: edge\nhttp_protocol_options: {accept_http_10: true, default_host_for_http_10: x}\nuse_remote_address: true')], INGRESS);
  t.strictSame(config.listeners[0]!.connectionManager, { serverName: 'edge', serverHeaderTransformation: 'PASS_THROUGH', httpProtocolOptions: { acceptHttp10: true } });
  t.same(brief.sort(), [
    'warning EnvoyFilter istio-system/ef spec.configPatches[0].patch.value.typed_config.http_protocol_options.default_host_for_http_10: default_host_for_http_10 is not supported by Remora and is ignored',
    'warning EnvoyFilter istio-system/ef spec.configPatches[0].patch.value.typed_config.use_remote_address: use_remote_address is not supported by Remora and is ignored',
  ]);
  const sidecar = translate([BOOKINFO_SERVICES, HCM('server_header_transformation: APPEND_IF_ABSENT', { context: 'SIDECAR_INBOUND', ns: 'default' })], SIDECAR, INBOUND);
  t.same(
    sidecar.config.listeners.map((l) => [l.name, l.connectionManager?.serverHeaderTransformation]),
    [
      ['virtualOutbound', 'OVERWRITE'],
      ['virtualInbound', 'APPEND_IF_ABSENT'],
    ],
  );
  const other = translate([GATEWAY, HCM('server_name: edge', { port: 9999 })], INGRESS);
  t.equal(other.config.listeners[0]!.connectionManager?.serverName, 'istio-envoy', 'another port');
  const bad = translate([GATEWAY, HCM('server_header_transformation: SOMETIMES')], INGRESS);
  t.match(bad.brief, [/^error EnvoyFilter istio-system\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.server_header_transformation: /]);
});

t.test('patches Remora does not apply yet: a warning naming the EnvoyFilter and the patch', async (t) => {
  const kinds = ['LISTENER', 'FILTER_CHAIN', 'ROUTE_CONFIGURATION', 'VIRTUAL_HOST', 'HTTP_ROUTE', 'CLUSTER', 'EXTENSION_CONFIG'];
  for (const applyTo of kinds) {
    const { brief } = translate([GATEWAY, envoyFilter({ applyTo, context: 'GATEWAY', ns: 'istio-system', filterName: null, operation: 'MERGE', value: 'name: x' })], INGRESS);
    t.same(brief, [`warning EnvoyFilter istio-system/ef spec.configPatches[0].applyTo: applyTo ${applyTo} is not applied by Remora yet; this patch is ignored`], applyTo);
  }
  const add = translate([GATEWAY, envoyFilter({ applyTo: 'NETWORK_FILTER', context: 'GATEWAY', ns: 'istio-system', operation: 'INSERT_FIRST', value: 'name: envoy.filters.network.rbac' })], INGRESS);
  t.match(add.brief, [/^warning EnvoyFilter istio-system\/ef spec\.configPatches\[0\]\.patch\.operation: INSERT_FIRST of a network filter is not applied by Remora yet/]);
});
