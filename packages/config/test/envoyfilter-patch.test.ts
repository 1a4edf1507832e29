// EnvoyFilter as patches on Envoy's resources (istiod's pilot/pkg/networking/core/envoyfilter):
// Istio files are translated, exported as Envoy's v3 resources, and patched; every assertion is
// on that Envoy JSON. Each applyTo with its operations, the matches (context, listener, filter
// chain, filters, route configuration, virtual host, route, cluster, proxy), istiod's order of
// EnvoyFilters, the local rate limit of istio.io's task, and errors naming the EnvoyFilter, the
// patch and the field.
import t from 'tap';
import { translateIstioToEnvoy, type EnvoyResources } from '@remora/config/envoy';
import type { ListenerPorts, ProxyNode, Resource } from '@remora/config';
import { BOOKINFO_SERVICES, briefIssue, INGRESS, load, PORTS, SIDECAR } from './helpers/translate.ts';

type Obj = Record<string, any>;

const INBOUND = { ...PORTS, appPort: 9080 };
const HCM = 'envoy.filters.network.http_connection_manager';
const RBAC = 'envoy.filters.http.rbac';
const JWT = 'envoy.filters.http.jwt_authn';
const FAULT = 'envoy.filters.http.fault';
const LRL = 'envoy.filters.http.local_ratelimit';
const CORS = 'envoy.filters.http.cors';
const ROUTER = 'envoy.filters.http.router';
const T = 'type.googleapis.com/';
const LRL_TYPE = `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`;
const FAULT_TYPE = `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`;

function envoy(yaml: readonly string[], node: ProxyNode = SIDECAR, ports: ListenerPorts = INBOUND): { e: EnvoyResources; brief: string[] } {
  const resources: Resource[] = [];
  yaml.forEach((text, i) => resources.push(...load(text, `test-${i}.yaml`, resources.length).resources));
  const { envoy: e, issues } = translateIstioToEnvoy(resources, node, ports);
  return { e, brief: issues.map(briefIssue) };
}

function listener(e: EnvoyResources, name: string): Obj {
  const l = e.listeners.find((x) => x.name === name);
  if (l === undefined) throw new Error(`no listener ${name}: ${e.listeners.map((x) => x.name).join(', ')}`);
  return l as Obj;
}
/** The HTTP filters of a listener's connection manager (filter chain `chain`). */
function filters(e: EnvoyResources, name = 'virtualInbound', chain = 0): Obj[] {
  const fc = (listener(e, name).filterChains as Obj[])[chain]!;
  const hcm = (fc.filters as Obj[]).find((f) => f.name === HCM);
  if (hcm === undefined) throw new Error(`no connection manager in ${name} chain ${chain}`);
  return hcm.typedConfig.httpFilters as Obj[];
}
const names = (e: EnvoyResources, name = 'virtualInbound', chain = 0) => filters(e, name, chain).map((f) => f.name as string);
function routeConfig(e: EnvoyResources, name: string): Obj {
  const rc = e.routeConfigs.find((r) => r.name === name);
  if (rc === undefined) throw new Error(`no route configuration ${name}: ${e.routeConfigs.map((r) => r.name).join(', ')}`);
  return rc as Obj;
}
const vhostNames = (e: EnvoyResources, rc: string) => (routeConfig(e, rc).virtualHosts as Obj[]).map((v) => v.name as string);
const clusterNames = (e: EnvoyResources) => e.clusters.map((c) => c.name as string);

const DENY_ADMIN = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
`;

const JWT_POLICY = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.test
    jwks: '{"keys":[]}'
`;

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8081, name: http2, protocol: HTTP}
    hosts: ["*"]
`;

const ROUTE_ALL = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - name: to-reviews
    route: [{destination: {host: reviews.default.svc.cluster.local, port: {number: 9080}}}]
`;

interface PatchOpts {
  name?: string;
  ns?: string;
  priority?: number;
  selector?: string;
  applyTo?: string;
  context?: string;
  /** The YAML of `match` below `context` (indented by the helper). */
  match?: string;
  operation: string;
  value?: string;
}

/** An EnvoyFilter with one patch; `match` and `value` are YAML, indented by the helper. */
function ef(o: PatchOpts): string {
  const indent = (s: string, n: number) => s.replace(/^/gm, ' '.repeat(n));
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ${o.name ?? 'ef'}, namespace: ${o.ns ?? 'default'}}
spec:
${o.priority !== undefined ? `  priority: ${o.priority}\n` : ''}${o.selector !== undefined ? `  workloadSelector: {labels: {${o.selector}}}\n` : ''}  configPatches:
  - applyTo: ${o.applyTo ?? 'HTTP_FILTER'}
    match:
      context: ${o.context ?? 'SIDECAR_INBOUND'}
${o.match === undefined ? '' : `${indent(o.match, 6)}\n`}    patch:
      operation: ${o.operation}
${o.value === undefined ? '' : `      value:\n${indent(o.value, 8)}\n`}`;
}

/** `match.listener` naming the connection manager, with a subFilter when given. */
const onHcm = (subFilter?: string, extra = '') =>
  `listener:${extra}\n  filterChain:\n    filter:\n      name: ${HCM}${subFilter === undefined ? '' : `\n      subFilter: {name: ${subFilter}}`}`;

const faultValue = (status: number, name = FAULT) => `name: ${name}
typed_config:
  "@type": ${FAULT_TYPE}
  abort: {http_status: ${status}, percentage: {numerator: 100}}`;

/** The abort status of each fault filter in a chain, in order. */
const faults = (e: EnvoyResources, name = 'virtualInbound') => filters(e, name).filter((f) => f.name === FAULT).map((f) => f.typedConfig.abort.httpStatus as number);

// ---- HTTP_FILTER ----

t.test('HTTP_FILTER REMOVE: the named filter leaves every matching chain, SIDECAR_INBOUND only', async (t) => {
  const base = envoy([BOOKINFO_SERVICES, DENY_ADMIN]);
  t.same(names(base.e), [RBAC, CORS, ROUTER]);
  const { e, brief } = envoy([BOOKINFO_SERVICES, DENY_ADMIN, ef({ operation: 'REMOVE', match: onHcm(RBAC) })]);
  t.same(brief, []);
  t.same(names(e, 'virtualInbound', 0), [CORS, ROUTER], 'the mTLS chain');
  t.same(names(e, 'virtualInbound', 1), [CORS, ROUTER], 'the plaintext chain');
  t.same(names(e, 'virtualOutbound'), [CORS, ROUTER]);
});

t.test('HTTP_FILTER REMOVE without a subFilter does nothing (istiod) and says so; REMOVE of the router is refused', async (t) => {
  const none = envoy([BOOKINFO_SERVICES, DENY_ADMIN, ef({ operation: 'REMOVE', match: onHcm() })]);
  t.same(names(none.e), [RBAC, CORS, ROUTER]);
  t.match(none.brief, [/^warning EnvoyFilter default\/ef spec\.configPatches\[0\]\.match\.listener\.filterChain\.filter\.subFilter: REMOVE of an HTTP filter needs/]);
  const router = envoy([BOOKINFO_SERVICES, ef({ operation: 'REMOVE', match: onHcm(ROUTER) })]);
  t.match(router.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.match\.listener\.filterChain\.filter\.subFilter\.name: Envoy refuses an HTTP filter chain that does not end with envoy\.filters\.http\.router/]);
});

t.test('HTTP_FILTER REPLACE: the filter becomes the patch value, canonical proto3 JSON', async (t) => {
  const value = `name: ${RBAC}
typed_config:
  "@type": ${T}envoy.extensions.filters.http.rbac.v3.RBAC
  rules:
    action: DENY
    policies:
      all:
        permissions: [{any: true}]
        principals: [{any: true}]`;
  const { e, brief } = envoy([BOOKINFO_SERVICES, DENY_ADMIN, ef({ operation: 'REPLACE', match: onHcm(RBAC), value })]);
  t.same(brief, []);
  t.strictSame(filters(e)[0], {
    name: RBAC,
    typedConfig: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, rules: { action: 'DENY', policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } } } },
  });
  const gone = envoy([BOOKINFO_SERVICES, ef({ operation: 'REPLACE', match: onHcm(RBAC), value: faultValue(500) })]);
  t.same(names(gone.e), [CORS, ROUTER], 'REPLACE of a filter not in the chain');
  t.match(gone.brief, [/nothing is replaced there, as istiod does/]);
});

t.test('HTTP_FILTER inserts: INSERT_FIRST before jwt_authn, INSERT_BEFORE / INSERT_AFTER rbac, ADD before the router', async (t) => {
  const chain = (operation: string, sub?: string) => names(envoy([BOOKINFO_SERVICES, JWT_POLICY, DENY_ADMIN, ef({ operation, match: onHcm(sub), value: faultValue(503) })]).e);
  t.same(chain('INSERT_FIRST'), [FAULT, JWT, RBAC, CORS, ROUTER]);
  t.same(chain('INSERT_BEFORE'), [FAULT, JWT, RBAC, CORS, ROUTER], 'INSERT_BEFORE without a subFilter: first, before jwt_authn and rbac');
  t.same(chain('INSERT_BEFORE', RBAC), [JWT, FAULT, RBAC, CORS, ROUTER]);
  t.same(chain('INSERT_AFTER', RBAC), [JWT, RBAC, FAULT, CORS, ROUTER]);
  t.same(chain('INSERT_AFTER'), [JWT, RBAC, CORS, FAULT, ROUTER], 'INSERT_AFTER without a subFilter is ADD');
  t.same(chain('ADD'), [JWT, RBAC, CORS, FAULT, ROUTER], 'ADD: the end of the chain, before the router');
  t.same(chain('INSERT_BEFORE', ROUTER), [JWT, RBAC, CORS, FAULT, ROUTER]);
  // Istio's own filters stand in the chain while patches apply.
  t.same(chain('INSERT_BEFORE', 'envoy.filters.http.grpc_stats'), [JWT, RBAC, FAULT, CORS, ROUTER], 'before gRPC stats: right after authorization');
  t.same(chain('INSERT_AFTER', 'istio.metadata_exchange'), [FAULT, JWT, RBAC, CORS, ROUTER]);
  const { e } = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(503) })]);
  t.strictSame(filters(e)[0], { name: FAULT, typedConfig: { '@type': FAULT_TYPE, abort: { httpStatus: 503, percentage: { numerator: 100 } } } }, 'snake_case in, lowerCamelCase out');
  const after = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_AFTER', match: onHcm(ROUTER), value: faultValue(503) })]);
  t.same(names(after.e), [CORS, FAULT, ROUTER]);
  t.match(after.brief, [/Envoy refuses HTTP filters after envoy\.filters\.http\.router \(it must be last\); envoy\.filters\.http\.fault is placed just before it/]);
  const missing = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_AFTER', match: onHcm('envoy.filters.http.ext_authz'), value: faultValue(500) })]);
  t.same(names(missing.e), [CORS, ROUTER]);
  t.match(missing.brief, [/^warning EnvoyFilter default\/ef .*subFilter\.name: envoy\.filters\.http\.ext_authz is not in the SIDECAR_INBOUND listener's HTTP filter chain/]);
});

t.test('HTTP_FILTER deprecated filter names match their canonical filter, with a warning', async (t) => {
  const { e, brief } = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_BEFORE', match: onHcm('envoy.router'), value: faultValue(503, 'envoy.fault') })]);
  t.same(names(e), [CORS, FAULT, ROUTER]);
  t.match(brief, [/using deprecated filter name "envoy\.fault"; use "envoy\.filters\.http\.fault" instead/]);
});

const LRL_INSERT = ef({
  name: 'insert',
  operation: 'INSERT_BEFORE',
  match: onHcm(),
  value: `name: ${LRL}
typed_config:
  "@type": ${LRL_TYPE}
  stat_prefix: http_local_rate_limiter
  token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
  response_headers_to_add: [{header: {key: x-one, value: '1'}}]`,
});
const lrlMerge = (fields: string) =>
  ef({ name: 'merge', operation: 'MERGE', match: onHcm(LRL), value: `typed_config:\n  "@type": ${LRL_TYPE}\n${fields.replace(/^/gm, '  ')}` });

t.test("HTTP_FILTER MERGE: istiod's proto merge (messages merged, lists appended, scalars replaced, a Duration replaced whole)", async (t) => {
  const { e, brief } = envoy([BOOKINFO_SERVICES, LRL_INSERT, lrlMerge("token_bucket: {max_tokens: 1, fill_interval: 0.5s}\nresponse_headers_to_add: [{header: {key: x-two, value: '2'}}]")]);
  t.same(brief, []);
  t.strictSame(filters(e)[0], {
    name: LRL,
    typedConfig: {
      '@type': LRL_TYPE,
      statPrefix: 'http_local_rate_limiter',
      tokenBucket: { maxTokens: 1, tokensPerFill: 4, fillInterval: '0.500s' },
      responseHeadersToAdd: [{ header: { key: 'x-one', value: '1' } }, { header: { key: 'x-two', value: '2' } }],
    },
  });
  const bad = envoy([BOOKINFO_SERVICES, LRL_INSERT, lrlMerge('descriptors: [{entries: [{key: k, value: v}]}]')]);
  t.match(bad.brief, [/^error EnvoyFilter default\/merge spec\.configPatches\[0\]\.patch\.value\.typed_config\.descriptors\[0\]\.token_bucket: token_bucket is required in a descriptor/]);
});

t.test('HTTP_FILTER MERGE of another type leaves a filter alone; MERGE may rename, as istiod', async (t) => {
  const other = envoy([BOOKINFO_SERVICES, DENY_ADMIN, ef({ operation: 'MERGE', match: onHcm(), value: `typed_config:\n  "@type": ${FAULT_TYPE}\n  abort: {http_status: 500}` })]);
  t.same(other.brief, []);
  t.strictSame(filters(other.e), filters(envoy([BOOKINFO_SERVICES, DENY_ADMIN]).e));
  const rename = envoy([BOOKINFO_SERVICES, ef({ operation: 'MERGE', match: onHcm(CORS), value: 'name: envoy.filters.http.lua' })]);
  t.match(rename.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.name: Remora has no HTTP filter envoy\.filters\.http\.lua/]);
});

t.test('HTTP_FILTER match: context, listener port and name, network filter name, filter chain', async (t) => {
  const chain = (o: Partial<PatchOpts>, listenerName = 'virtualInbound') =>
    names(envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(500), ...o })]).e, listenerName);
  t.same(chain({ context: 'SIDECAR_OUTBOUND' }), [CORS, ROUTER], 'other context');
  t.same(chain({ context: 'SIDECAR_OUTBOUND' }, 'virtualOutbound'), [FAULT, CORS, ROUTER], 'the outbound capture');
  t.same(chain({ context: 'SIDECAR_OUTBOUND' }, '0.0.0.0_9080'), [FAULT, CORS, ROUTER], "the outbound port's listener, which requests to 9080 use");
  t.same(chain({ context: 'ANY' }), [FAULT, CORS, ROUTER], 'ANY');
  t.same(chain({ context: 'ANY' }, 'virtualOutbound'), [FAULT, CORS, ROUTER], 'ANY: the outbound side too');
  const gw = (port: number) =>
    envoy([GATEWAY, ef({ ns: 'istio-system', context: 'GATEWAY', operation: 'INSERT_FIRST', match: onHcm(undefined, `\n  portNumber: ${port}`), value: faultValue(500) })], INGRESS, PORTS).e;
  t.same([names(gw(8080), '0.0.0.0_8080'), names(gw(8080), '0.0.0.0_8081')], [[FAULT, CORS, ROUTER], [CORS, ROUTER]], 'a gateway port: its listener only');
  const app = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(undefined, '\n  portNumber: 9080'), value: faultValue(500) })]).e;
  t.same(
    [0, 2].map((i) => names(app, 'virtualInbound', i)),
    [
      [FAULT, CORS, ROUTER],
      [FAULT, CORS, ROUTER],
    ],
    "the app's port on the inbound side: its redirected chains (destination port 9080) and the chains for connections made to 15006 directly, which count as addressed to the app's port",
  );
  t.same(chain({ match: onHcm(undefined, '\n  portNumber: 9999') }), [CORS, ROUTER], 'another port');
  t.same(chain({ context: 'SIDECAR_OUTBOUND', match: onHcm(undefined, '\n  portNumber: 9080') }, '0.0.0.0_9080'), [FAULT, CORS, ROUTER], 'outbound port 9080: its listener');
  t.same(chain({ context: 'SIDECAR_OUTBOUND', match: onHcm(undefined, '\n  portNumber: 9080') }, 'virtualOutbound'), [CORS, ROUTER], 'not the capture listener');
  t.same(chain({ match: onHcm(undefined, '\n  name: virtualInbound') }), [FAULT, CORS, ROUTER], 'listener name');
  t.same(chain({ match: onHcm(undefined, '\n  name: virtualOutbound') }), [CORS, ROUTER], 'another listener name');
  t.same(chain({ match: 'listener:\n  filterChain:\n    filter: {name: envoy.filters.network.tcp_proxy}' }), [CORS, ROUTER], 'another network filter');
  t.same(chain({ match: 'listener:\n  filterChain:\n    filter: {name: envoy.http_connection_manager}' }), [FAULT, CORS, ROUTER], 'the deprecated connection manager name');
  const mtlsOnly = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: `listener:\n  filterChain:\n    transportProtocol: tls\n    filter: {name: ${HCM}}`, value: faultValue(500) })]).e;
  t.same([names(mtlsOnly, 'virtualInbound', 0), names(mtlsOnly, 'virtualInbound', 1)], [[FAULT, CORS, ROUTER], [CORS, ROUTER]], 'filterChain.transportProtocol');
  const dport = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: `listener:\n  filterChain:\n    destinationPort: 9080\n    filter: {name: ${HCM}}`, value: faultValue(500) })]).e;
  t.same([0, 2].map((i) => names(dport, 'virtualInbound', i)), [[FAULT, CORS, ROUTER], [FAULT, CORS, ROUTER]], 'filterChain.destinationPort');
  const sni = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: `listener:\n  filterChain:\n    sni: example.com\n    filter: {name: ${HCM}}`, value: faultValue(500) })]).e;
  t.same(names(sni), [CORS, ROUTER], 'filterChain.sni: no chain has that server name');
});

t.test('order: priority first, then the root namespace before the workload namespace, then age', async (t) => {
  const a = ef({ name: 'a', ns: 'default', operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(501) });
  const b = ef({ name: 'b', ns: 'istio-system', operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(502) });
  // INSERT_FIRST: the patch applied last ends up first.
  t.same(faults(envoy([BOOKINFO_SERVICES, a, b]).e), [501, 502], 'root namespace (502) applies first although younger');
  const a2 = ef({ name: 'a', ns: 'default', priority: -1, operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(501) });
  t.same(faults(envoy([BOOKINFO_SERVICES, a2, b]).e), [502, 501], 'a lower priority applies first');
  const c = ef({ name: 'c', ns: 'default', operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(503) });
  t.same(faults(envoy([BOOKINFO_SERVICES, a, c]).e), [503, 501], 'same namespace and priority: the older first');
});

t.test('selection: workloadSelector, namespace, proxy metadata and version', async (t) => {
  const chain = (o: Partial<PatchOpts>) => names(envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(500), ...o })]).e);
  t.same(chain({ selector: 'app: productpage' }), [FAULT, CORS, ROUTER]);
  t.same(chain({ selector: 'app: reviews' }), [CORS, ROUTER], 'another workload');
  t.same(chain({ ns: 'other' }), [CORS, ROUTER], 'another namespace');
  t.same(chain({ ns: 'istio-system' }), [FAULT, CORS, ROUTER], 'the root namespace');
  t.same(chain({ match: `proxy: {metadata: {NAMESPACE: default}}\n${onHcm()}` }), [FAULT, CORS, ROUTER], 'proxy metadata');
  t.same(chain({ match: `proxy: {metadata: {NAMESPACE: other}}\n${onHcm()}` }), [CORS, ROUTER]);
  const version = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: `proxy: {proxyVersion: '^1\\..*'}\n${onHcm()}`, value: faultValue(500) })]);
  t.same(names(version.e), [CORS, ROUTER]);
  t.match(version.brief, [/match\.proxy\.proxyVersion: Remora reports no Istio proxy version/]);
});

t.test('errors name the EnvoyFilter, the patch and the field; the patch is not applied', async (t) => {
  const value = `name: ${FAULT}
typed_config:
  "@type": ${FAULT_TYPE}
  abort: {http_status: 503, percentage: {numerator: 100, denominator: SOMETIMES}}`;
  const bad = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(), value })]);
  t.equal(bad.brief.length, 1);
  t.match(bad.brief[0], /^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.abort\.percentage\.denominator: /);
  t.same(names(bad.e), [CORS, ROUTER]);
  const wrongType = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_FIRST', match: onHcm(), value: `name: ${RBAC}\ntyped_config: {"@type": ${FAULT_TYPE}}` })]);
  t.match(wrongType.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.@type: envoy\.filters\.http\.rbac takes type\.googleapis\.com\/envoy\.extensions\.filters\.http\.rbac\.v3\.RBAC/]);
  const badMerge = envoy([BOOKINFO_SERVICES, ef({ operation: 'MERGE', match: onHcm(CORS), value: `typed_config:\n  "@type": ${T}envoy.extensions.filters.http.cors.v3.Cors\n  nope: 1` })]);
  t.match(badMerge.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.nope: unknown field "nope"/]);
  const badRoute = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'HTTP_ROUTE', operation: 'MERGE', value: 'route: {timeout: soon}' })]);
  t.match(badRoute.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.route\.timeout: /]);
});

t.test('a filter Remora does not run: an error naming it unless is_optional; Istio\'s own are skipped', async (t) => {
  const lua = (extra = '') => ef({ name: 'lua', operation: 'INSERT_BEFORE', match: onHcm(), value: `name: envoy.filters.http.lua${extra}` });
  t.same(envoy([BOOKINFO_SERVICES, lua()]).brief, [
    'error EnvoyFilter default/lua spec.configPatches[0].patch.value.name: Remora has no HTTP filter envoy.filters.http.lua; Envoy refuses an unknown filter too unless the patch sets is_optional: true',
  ]);
  const optional = envoy([BOOKINFO_SERVICES, lua('\nis_optional: true')]);
  t.same(optional.brief, ['warning EnvoyFilter default/lua spec.configPatches[0].patch.value.is_optional: Remora has no HTTP filter envoy.filters.http.lua; it is optional, so it is skipped, as Envoy does']);
  t.same(names(optional.e), [CORS, ROUTER]);
  const replace = envoy([BOOKINFO_SERVICES, DENY_ADMIN, ef({ operation: 'REPLACE', match: onHcm(RBAC), value: `name: envoy.filters.http.ext_authz\ntyped_config: {"@type": ${T}google.protobuf.Empty}` })]);
  t.match(replace.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.name: Remora has no HTTP filter envoy\.filters\.http\.ext_authz/]);
  const stats = envoy([BOOKINFO_SERVICES, ef({ operation: 'INSERT_BEFORE', match: onHcm(), value: 'name: istio.stats' })]);
  t.same(stats.brief, []);
  t.same(names(stats.e), [CORS, ROUTER]);
  const network = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'NETWORK_FILTER', operation: 'INSERT_FIRST', value: 'name: envoy.filters.network.rbac' })]);
  t.match(network.brief, [/^error EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.value\.name: Remora has no network filter "envoy\.filters\.network\.rbac"/]);
});

// ---- the local rate limit of istio.io's task ----

/** istio.io's local rate limit EnvoyFilter: an HTTP_FILTER insert of a TypedStruct LocalRateLimit without a bucket, and an HTTP_ROUTE MERGE of the route's. */
function docsLimit(o: { context?: string; selector?: string; routeMatch?: string; routeApplyTo?: string; bucket?: string } = {}): string {
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels: {${o.selector ?? 'app: productpage'}}
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: ${o.context ?? 'SIDECAR_INBOUND'}
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
    - applyTo: ${o.routeApplyTo ?? 'HTTP_ROUTE'}
      match:
        context: ${o.context ?? 'SIDECAR_INBOUND'}
        routeConfiguration:
${(o.routeMatch ?? 'vhost:\n  name: "inbound|http|9080"\n  route: {action: ANY}').replace(/^/gm, '          ')}
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket: ${o.bucket ?? '{max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}'}
                filter_enabled:
                  runtime_key: local_rate_limit_enabled
                  default_value: {numerator: 100, denominator: HUNDRED}
                filter_enforced:
                  runtime_key: local_rate_limit_enforced
                  default_value: {numerator: 100, denominator: HUNDRED}
                response_headers_to_add:
                  - append: false
                    header: {key: x-local-rate-limit, value: 'true'}
`;
}

const ROUTE_LIMIT = {
  '@type': LRL_TYPE,
  statPrefix: 'http_local_rate_limiter',
  tokenBucket: { maxTokens: 4, tokensPerFill: 4, fillInterval: '60s' },
  filterEnabled: { runtimeKey: 'local_rate_limit_enabled', defaultValue: { numerator: 100 } },
  filterEnforced: { runtimeKey: 'local_rate_limit_enforced', defaultValue: { numerator: 100 } },
  responseHeadersToAdd: [{ header: { key: 'x-local-rate-limit', value: 'true' }, append: false }],
};

t.test("istio.io's local rate limit: the filter first in the inbound chain, the route's limit in typed_per_filter_config", async (t) => {
  const { e, brief } = envoy([BOOKINFO_SERVICES, DENY_ADMIN, docsLimit()]);
  t.same(brief, []);
  t.same(names(e), [LRL, RBAC, CORS, ROUTER], 'INSERT_BEFORE without a subFilter: first, before rbac');
  t.strictSame(filters(e)[0], { name: LRL, typedConfig: { '@type': LRL_TYPE, statPrefix: 'http_local_rate_limiter' } }, 'the TypedStruct read as the LocalRateLimit it carries');
  t.same(names(e, 'virtualOutbound'), [CORS, ROUTER], 'SIDECAR_INBOUND only');
  const route = (routeConfig(e, 'inbound|9080||').virtualHosts as Obj[])[0]!.routes[0] as Obj;
  t.strictSame(route.typedPerFilterConfig, { [LRL]: ROUTE_LIMIT });
  t.ok((routeConfig(e, '9080').virtualHosts as Obj[]).every((v) => (v.routes as Obj[]).every((r) => r.typedPerFilterConfig === undefined)), 'outbound routes untouched');
});

t.test('local rate limit: VIRTUAL_HOST MERGE, gateway ports, route configuration matches', async (t) => {
  const vh = envoy([BOOKINFO_SERVICES, docsLimit({ routeApplyTo: 'VIRTUAL_HOST', routeMatch: 'vhost: {name: "inbound|http|9080"}' })]);
  t.same(vh.brief, []);
  t.strictSame((routeConfig(vh.e, 'inbound|9080||').virtualHosts as Obj[])[0]!.typedPerFilterConfig, { [LRL]: ROUTE_LIMIT });
  const gw = envoy([BOOKINFO_SERVICES, GATEWAY, ROUTE_ALL, docsLimit({ context: 'GATEWAY', selector: 'istio: ingressgateway', routeApplyTo: 'VIRTUAL_HOST', routeMatch: 'portNumber: 8080\nvhost: {name: "*:8080"}' })], INGRESS, PORTS);
  t.same(gw.brief, []);
  t.same(names(gw.e, '0.0.0.0_8080'), [LRL, CORS, ROUTER]);
  t.same(names(gw.e, '0.0.0.0_8081'), [LRL, CORS, ROUTER], 'every gateway port: the filter patch names none');
  t.strictSame((routeConfig(gw.e, 'http.8080').virtualHosts as Obj[])[0]!.typedPerFilterConfig, { [LRL]: ROUTE_LIMIT });
  t.equal((routeConfig(gw.e, 'http.8081').virtualHosts as Obj[])[0]!.typedPerFilterConfig, undefined, 'portNumber 8080 only');
  const byName = envoy([BOOKINFO_SERVICES, docsLimit({ routeMatch: 'name: "inbound|9080||"' })]);
  t.ok(((routeConfig(byName.e, 'inbound|9080||').virtualHosts as Obj[])[0]!.routes[0] as Obj).typedPerFilterConfig, 'route configuration name');
  const port = envoy([BOOKINFO_SERVICES, docsLimit({ context: 'SIDECAR_OUTBOUND', routeMatch: 'portNumber: 9080\nvhost: {name: "reviews.default.svc.cluster.local:9080"}' })]);
  const reviews = (routeConfig(port.e, '9080').virtualHosts as Obj[]).find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!;
  t.ok((reviews.routes[0] as Obj).typedPerFilterConfig, 'outbound: route configuration 9080, virtual host by name');
  t.ok((routeConfig(port.e, '9080').virtualHosts as Obj[]).filter((v) => v !== reviews).every((v) => (v.routes as Obj[]).every((r) => r.typedPerFilterConfig === undefined)), 'other virtual hosts untouched');
  t.same(names(port.e, '0.0.0.0_9080'), [LRL, CORS, ROUTER], "the listener requests to port 9080 use has the filter");
});

t.test("local rate limit errors: Envoy's rules, with the field path as written", async (t) => {
  const cases: [string, RegExp][] = [
    ['{max_tokens: -4, tokens_per_fill: 4, fill_interval: 60s}', /value\.token_bucket\.max_tokens: cannot decode field envoy\.type\.v3\.TokenBucket\.max_tokens from JSON/],
    ['{max_tokens: 4, fill_interval: 1 minute}', /value\.token_bucket\.fill_interval: cannot decode message google\.protobuf\.Duration from JSON: "1 minute"$/],
    ['{max_tokens: 4, fillInterval: 60s, burst: 2}', /value\.token_bucket\.burst: unknown field "burst" in envoy\.type\.v3\.TokenBucket$/],
    ['{max_tokens: 0, tokens_per_fill: 4, fill_interval: 60s}', /value\.token_bucket\.max_tokens: max_tokens is required$/],
    ['{max_tokens: 4, fill_interval: 20ms}', /value\.token_bucket\.fill_interval: cannot decode message google\.protobuf\.Duration from JSON: "20ms"$/],
    ['{max_tokens: 4, tokens_per_fill: 0, fill_interval: 60s}', /value\.token_bucket\.tokens_per_fill: tokens_per_fill must be a positive integer, got 0$/],
    ['{max_tokens: 4, fill_interval: 0.020s}', /value\.token_bucket\.fill_interval: fill_interval must be at least 50ms/],
    ['{fill_interval: 1s}', /value\.token_bucket\.max_tokens: max_tokens is required$/],
    ['null', /value\.token_bucket: token_bucket is required in a route's local rate limit/],
  ];
  for (const [bucket, want] of cases) {
    const { e, brief } = envoy([BOOKINFO_SERVICES, docsLimit({ bucket })]);
    t.match(brief, [new RegExp(`^error EnvoyFilter istio-system/filter-local-ratelimit-svc spec\\.configPatches\\[1\\]\\.patch\\.value\\.typed_per_filter_config\\.envoy\\.filters\\.http\\.local_ratelimit\\.${want.source}`)], bucket);
    t.equal(((routeConfig(e, 'inbound|9080||').virtualHosts as Obj[])[0]!.routes[0] as Obj).typedPerFilterConfig, undefined, 'an invalid limit is not installed');
  }
  const badFraction = envoy([BOOKINFO_SERVICES, docsLimit().replace(/(runtime_key: local_rate_limit_enforced\n\s+default_value: \{numerator: 100, denominator: )HUNDRED/, '$1PERCENT')]);
  t.same(badFraction.brief, [
    'error EnvoyFilter istio-system/filter-local-ratelimit-svc spec.configPatches[1].patch.value.typed_per_filter_config.envoy.filters.http.local_ratelimit.value.filter_enforced.default_value.denominator: cannot decode enum envoy.type.v3.FractionalPercent.DenominatorType from JSON: "PERCENT"',
  ]);
  const filterLevel = envoy([BOOKINFO_SERVICES, docsLimit().replace('              stat_prefix: http_local_rate_limiter\n    - applyTo', '              stat_prefix: http_local_rate_limiter\n              token_bucket: {max_tokens: -5}\n    - applyTo')]);
  t.match(filterLevel.brief, [/^error EnvoyFilter istio-system\/filter-local-ratelimit-svc spec\.configPatches\[0\]\.patch\.value\.typed_config\.value\.token_bucket\.max_tokens: cannot decode field envoy\.type\.v3\.TokenBucket\.max_tokens from JSON/]);
  t.same(names(filterLevel.e), [CORS, ROUTER], 'the filter is not inserted');
  const wrongType = envoy([BOOKINFO_SERVICES, docsLimit().replace('v3.LocalRateLimit\n            value', 'v3.RateLimit\n            value')]);
  t.match(wrongType.brief, [/spec\.configPatches\[0\]\.patch\.value\.typed_config\.type_url: envoy\.filters\.http\.local_ratelimit takes type\.googleapis\.com\/envoy\.extensions\.filters\.http\.local_ratelimit\.v3\.LocalRateLimit/]);
});

t.test("local rate limit warnings: a route's limit where no listener runs the filter; an EnvoyFilter's limit beside a LocalRateLimit resource's", async (t) => {
  const routeOnly = docsLimit().replace(/    - applyTo: HTTP_FILTER[\s\S]*?(    - applyTo: HTTP_ROUTE)/, '$1');
  const { e, brief } = envoy([BOOKINFO_SERVICES, routeOnly]);
  t.same(brief, [
    "warning EnvoyFilter istio-system/filter-local-ratelimit-svc spec.configPatches[0]: no SIDECAR_INBOUND listener runs envoy.filters.http.local_ratelimit (no HTTP_FILTER patch inserts it there), so this patch's local rate limit has no effect there",
  ]);
  t.strictSame(((routeConfig(e, 'inbound|9080||').virtualHosts as Obj[])[0]!.routes[0] as Obj).typedPerFilterConfig, { [LRL]: ROUTE_LIMIT }, 'the patch still applies, as istiod');
  t.same(envoy([BOOKINFO_SERVICES, docsLimit()]).brief, [], 'none with the filter inserted');

  const native = `apiVersion: ratelimit.remora.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: rl, namespace: default}
spec:
  tokenBucket: {maxTokens: 1, fillInterval: 1s}
`;
  const both = envoy([BOOKINFO_SERVICES, native, docsLimit()]);
  t.same(names(both.e), [LRL, LRL, CORS, ROUTER], "the EnvoyFilter's first (INSERT_BEFORE without a subFilter), then the resource's");
  t.same(both.brief, [
    'warning EnvoyFilter istio-system/filter-local-ratelimit-svc spec.configPatches[0].patch.value: the SIDECAR_INBOUND listener virtualInbound already has the local rate limit of a LocalRateLimit resource; both limits apply',
  ]);
});

t.test("a local rate limit with its own rate_limits (newer than Envoy's bundled descriptors) goes in the exporter's private form; its fields as Envoy reads them", async (t) => {
  const { e, brief } = envoy([
    BOOKINFO_SERVICES,
    ef({
      operation: 'INSERT_BEFORE',
      match: onHcm(),
      value: `name: ${LRL}
typedConfig:
  "@type": ${LRL_TYPE}
  statPrefix: rl
  tokenBucket: {maxTokens: 10, fillInterval: 1.5s}
  filterEnabled: {runtimeKey: e, defaultValue: {numerator: 5000, denominator: TEN_THOUSAND}}
  status: {code: 503}
  enable_x_ratelimit_headers: DRAFT_VERSION_03
  rate_limited_as_resource_exhausted: true
  always_consume_default_token_bucket: false
  descriptors:
    - entries: [{key: client, value: slow}]
      token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
  rate_limits:
    - actions: [{request_headers: {header_name: x-client, descriptor_key: client}}]
    - actions: [{generic_key: {descriptor_value: all}}, {remote_address: {}}]`,
    }),
  ]);
  t.same(brief, []);
  t.strictSame(filters(e)[0], {
    name: LRL,
    typedConfig: {
      '@type': `${T}xds.type.v3.TypedStruct`,
      typeUrl: `${T}remora.${LRL}`,
      value: {
        statPrefix: 'rl',
        status: { code: 'ServiceUnavailable' },
        tokenBucket: { maxTokens: 10, fillInterval: '1.500s' },
        filterEnabled: { defaultValue: { numerator: 5000, denominator: 'TEN_THOUSAND' }, runtimeKey: 'e' },
        descriptors: [{ entries: [{ key: 'client', value: 'slow' }], tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillInterval: '60s' } }],
        enableXRatelimitHeaders: 'DRAFT_VERSION_03',
        alwaysConsumeDefaultTokenBucket: false,
        rateLimitedAsResourceExhausted: true,
        rateLimits: [
          { actions: [{ requestHeaders: { headerName: 'x-client', descriptorKey: 'client' } }] },
          { actions: [{ genericKey: { descriptorValue: 'all' } }, { remoteAddress: {} }] },
        ],
      },
    },
  });
});

// ---- NETWORK_FILTER, FILTER_CHAIN, LISTENER ----

const hcmMerge = (fields: string, o: Partial<PatchOpts> = {}) =>
  ef({
    applyTo: 'NETWORK_FILTER',
    context: 'GATEWAY',
    ns: 'istio-system',
    operation: 'MERGE',
    match: `listener:\n  filterChain:\n    filter: {name: ${HCM}}`,
    value: `typed_config:\n  "@type": ${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n${fields.replace(/^/gm, '  ')}`,
    ...o,
  });
const hcmOf = (e: EnvoyResources, name: string) => ((listener(e, name).filterChains as Obj[])[0]!.filters as Obj[])[0]!.typedConfig as Obj;

t.test('NETWORK_FILTER MERGE into the connection manager (proto merge of HttpConnectionManager)', async (t) => {
  const { e, brief } = envoy([GATEWAY, hcmMerge('server_header_transformation: PASS_THROUGH\nserver_name: edge\nhttp_protocol_options: {accept_http_10: true}\nuse_remote_address: false\nstream_idle_timeout: 30s')], INGRESS, PORTS);
  t.same(brief, []);
  const hcm = hcmOf(e, '0.0.0.0_8080');
  t.equal(hcm.serverHeaderTransformation, 'PASS_THROUGH');
  t.equal(hcm.serverName, 'edge');
  t.strictSame(hcm.httpProtocolOptions, { acceptHttp10: true });
  t.equal(hcm.streamIdleTimeout, '30s', 'any field of the message');
  t.same((hcm.httpFilters as Obj[]).map((f) => f.name), [CORS, ROUTER], 'the HTTP filters kept');
  const other = envoy([GATEWAY, hcmMerge('server_name: edge', { match: `listener:\n  portNumber: 9999\n  filterChain:\n    filter: {name: ${HCM}}` })], INGRESS, PORTS);
  t.equal(hcmOf(other.e, '0.0.0.0_8080').serverName, 'istio-envoy', 'another port');
  const bad = envoy([GATEWAY, hcmMerge('server_header_transformation: SOMETIMES')], INGRESS, PORTS);
  t.match(bad.brief, [/^error EnvoyFilter istio-system\/ef spec\.configPatches\[0\]\.patch\.value\.typed_config\.server_header_transformation: /]);
  const sidecar = envoy([BOOKINFO_SERVICES, hcmMerge('server_header_transformation: APPEND_IF_ABSENT', { context: 'SIDECAR_INBOUND', ns: 'default' })]);
  t.same(sidecar.brief, []);
  t.same(
    sidecar.e.listeners.flatMap((l) => ((l.filterChains ?? []) as Obj[]).flatMap((fc) => (fc.filters as Obj[]).filter((f) => f.name === HCM).map((f) => [l.name, f.typedConfig.serverHeaderTransformation ?? 'OVERWRITE']))),
    [
      ['virtualOutbound', 'OVERWRITE'],
      ['0.0.0.0_9080', 'OVERWRITE'],
      ['virtualInbound', 'APPEND_IF_ABSENT'],
      ['virtualInbound', 'APPEND_IF_ABSENT'],
      ['virtualInbound', 'APPEND_IF_ABSENT'],
      ['virtualInbound', 'APPEND_IF_ABSENT'],
    ],
    'SIDECAR_INBOUND: every inbound chain (direct connections to 15006 and redirected ones to 9080), no outbound one',
  );
});

t.test('NETWORK_FILTER REMOVE and REPLACE; FILTER_CHAIN REMOVE, MERGE and ADD; LISTENER REMOVE, MERGE and ADD', async (t) => {
  const removeHcm = envoy([GATEWAY, ef({ applyTo: 'NETWORK_FILTER', context: 'GATEWAY', ns: 'istio-system', operation: 'REMOVE', match: `listener:\n  portNumber: 8081\n  filterChain:\n    filter: {name: ${HCM}}` })], INGRESS, PORTS);
  t.same((listener(removeHcm.e, '0.0.0.0_8081').filterChains as Obj[])[0]!.filters, []);
  t.equal(((listener(removeHcm.e, '0.0.0.0_8080').filterChains as Obj[])[0]!.filters as Obj[]).length, 1);
  const tcp = `name: envoy.filters.network.tcp_proxy\ntyped_config:\n  "@type": ${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n  stat_prefix: s\n  cluster: outbound|9080||reviews.default.svc.cluster.local`;
  const replace = envoy([GATEWAY, ef({ applyTo: 'NETWORK_FILTER', context: 'GATEWAY', ns: 'istio-system', operation: 'REPLACE', match: `listener:\n  portNumber: 8081\n  filterChain:\n    filter: {name: ${HCM}}`, value: tcp })], INGRESS, PORTS);
  t.same(replace.brief, []);
  t.strictSame((listener(replace.e, '0.0.0.0_8081').filterChains as Obj[])[0]!.filters, [
    { name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`, statPrefix: 's', cluster: 'outbound|9080||reviews.default.svc.cluster.local' } },
  ]);

  const fcRemove = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'FILTER_CHAIN', operation: 'REMOVE', match: 'listener:\n  filterChain: {transportProtocol: raw_buffer}' })]);
  t.same(
    (listener(fcRemove.e, 'virtualInbound').filterChains as Obj[]).map((fc) => [fc.filterChainMatch?.destinationPort ?? null, fc.filterChainMatch?.transportProtocol ?? null]),
    [
      [15006, 'tls'],
      [9080, 'tls'],
      [null, null],
    ],
    'the plaintext chains removed; the catch-all, matching no transport protocol, kept',
  );
  const fcMerge = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'FILTER_CHAIN', operation: 'MERGE', match: 'listener:\n  filterChain: {transportProtocol: tls}', value: 'name: mtls\nfilter_chain_match: {server_names: [a.example]}' })]);
  t.same(
    (listener(fcMerge.e, 'virtualInbound').filterChains as Obj[]).map((fc) => [fc.name, fc.filterChainMatch]),
    [
      ['mtls', { destinationPort: 15006, transportProtocol: 'tls', serverNames: ['a.example'] }],
      [undefined, { destinationPort: 15006, transportProtocol: 'raw_buffer' }],
      ['mtls', { destinationPort: 9080, transportProtocol: 'tls', serverNames: ['a.example'] }],
      ['0.0.0.0_9080', { destinationPort: 9080, transportProtocol: 'raw_buffer' }],
      ['virtualInbound', undefined],
    ],
  );
  const fcTls = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'FILTER_CHAIN', operation: 'MERGE', match: 'listener:\n  filterChain: {transportProtocol: tls}', value: `name: ignored\ntransport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    "@type": ${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n    require_client_certificate: false\n    common_tls_context: {alpn_protocols: [h3]}` })]);
  const fc0 = (listener(fcTls.e, 'virtualInbound').filterChains as Obj[])[0]!;
  t.equal(fc0.name, undefined, 'a transport socket merge applies nothing else of the patch, as istiod');
  t.same(fc0.transportSocket.typedConfig.commonTlsContext.alpnProtocols, ['h2', 'http/1.1', 'h3'], 'merged into the socket of the same name');
  t.equal(fc0.transportSocket.typedConfig.requireClientCertificate, true, 'false is proto3 default: nothing to merge');
  const fcAdd = envoy([GATEWAY, ef({ applyTo: 'FILTER_CHAIN', context: 'GATEWAY', ns: 'istio-system', operation: 'INSERT_FIRST', match: 'listener: {portNumber: 8081}', value: `filter_chain_match: {server_names: [b.example]}\nfilters:\n- ${tcp.replace(/\n/g, '\n  ')}` })], INGRESS, PORTS);
  t.same(fcAdd.brief, []);
  t.same((listener(fcAdd.e, '0.0.0.0_8081').filterChains as Obj[]).map((fc) => fc.filterChainMatch?.serverNames ?? null), [null, ['b.example']], 'INSERT_FIRST of a filter chain is ADD (istiod): appended');

  const lRemove = envoy([GATEWAY, ef({ applyTo: 'LISTENER', context: 'GATEWAY', ns: 'istio-system', operation: 'REMOVE', match: 'listener: {portNumber: 8081}' })], INGRESS, PORTS);
  t.same(lRemove.e.listeners.map((l) => l.name), ['0.0.0.0_8080']);
  const lMerge = envoy([GATEWAY, ef({ applyTo: 'LISTENER', context: 'GATEWAY', ns: 'istio-system', operation: 'MERGE', match: 'listener: {name: 0.0.0.0_8080}', value: 'per_connection_buffer_limit_bytes: 65536\nlistener_filters_timeout: 1s' })], INGRESS, PORTS);
  t.equal(listener(lMerge.e, '0.0.0.0_8080').perConnectionBufferLimitBytes, 65536);
  t.equal(listener(lMerge.e, '0.0.0.0_8080').listenerFiltersTimeout, '1s');
  t.equal(listener(lMerge.e, '0.0.0.0_8081').perConnectionBufferLimitBytes, undefined);
  const added = `name: extra\naddress: {socket_address: {address: 0.0.0.0, port_value: 9000}}\nfilter_chains:\n- filters:\n  - ${tcp.replace(/\n/g, '\n    ')}`;
  const lAdd = envoy([GATEWAY, ef({ applyTo: 'LISTENER', context: 'GATEWAY', ns: 'istio-system', operation: 'ADD', value: added })], INGRESS, PORTS);
  t.same(lAdd.brief, []);
  t.same(lAdd.e.listeners.map((l) => l.name), ['0.0.0.0_8080', '0.0.0.0_8081', 'extra']);
  t.equal(listener(lAdd.e, 'extra').address.socketAddress.portValue, 9000);
  const lAny = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'LISTENER', context: 'ANY', operation: 'ADD', value: added })]);
  t.same(lAny.e.listeners.filter((l) => l.name === 'extra').length, 1, 'ANY: added once, on the outbound side (istiod)');
  const badAdd = envoy([GATEWAY, ef({ applyTo: 'LISTENER', context: 'GATEWAY', ns: 'istio-system', operation: 'ADD', value: `${added.replace(/envoy\.filters\.network\.tcp_proxy/, 'envoy.filters.network.redis_proxy')}` })], INGRESS, PORTS);
  t.match(badAdd.brief, [/^error EnvoyFilter istio-system\/ef spec\.configPatches\[0\]\.patch\.value\.filter_chains\[0\]\.filters\[0\]\.name: Remora has no network filter "envoy\.filters\.network\.redis_proxy"/]);
});

// ---- ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE ----

t.test('ROUTE_CONFIGURATION MERGE; VIRTUAL_HOST REMOVE, REPLACE, ADD', async (t) => {
  const rc = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'ROUTE_CONFIGURATION', context: 'SIDECAR_OUTBOUND', operation: 'MERGE', match: 'routeConfiguration: {portNumber: 9080}', value: 'max_direct_response_body_size_bytes: 2048\nrequest_headers_to_add: [{header: {key: x-rc, value: "1"}}]' })]);
  t.same(rc.brief, []);
  t.equal(routeConfig(rc.e, '9080').maxDirectResponseBodySizeBytes, 2048);
  t.strictSame(routeConfig(rc.e, '9080').requestHeadersToAdd, [{ header: { key: 'x-rc', value: '1' } }]);
  t.equal(routeConfig(rc.e, 'inbound|9080||').requestHeadersToAdd, undefined, 'the inbound table is SIDECAR_INBOUND');
  const remove = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'VIRTUAL_HOST', context: 'SIDECAR_OUTBOUND', operation: 'REMOVE', match: 'routeConfiguration:\n  vhost: {name: "ratings.default.svc.cluster.local:9080"}' })]);
  // allow_any: Istio's default outboundTrafficPolicy ALLOW_ANY, in every outbound table.
  t.same(vhostNames(remove.e, '9080'), ['productpage.default.svc.cluster.local:9080', 'reviews.default.svc.cluster.local:9080', 'details.default.svc.cluster.local:9080', 'allow_any']);
  const vh = 'name: extra\ndomains: [extra.example]\nroutes:\n- match: {prefix: /}\n  direct_response: {status: 204}';
  const replace = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'VIRTUAL_HOST', context: 'SIDECAR_OUTBOUND', operation: 'REPLACE', match: 'routeConfiguration:\n  vhost: {name: "ratings.default.svc.cluster.local:9080"}', value: vh })]);
  t.same(vhostNames(replace.e, '9080')[2], 'extra');
  t.strictSame((routeConfig(replace.e, '9080').virtualHosts as Obj[])[2], { name: 'extra', domains: ['extra.example'], routes: [{ match: { prefix: '/' }, directResponse: { status: 204 } }] });
  const add = envoy([BOOKINFO_SERVICES, ef({ applyTo: 'VIRTUAL_HOST', context: 'SIDECAR_OUTBOUND', operation: 'ADD', match: 'routeConfiguration: {name: "9080"}', value: vh })]);
  t.same(vhostNames(add.e, '9080').at(-1), 'extra');
  t.same(vhostNames(add.e, 'inbound|9080||'), ['inbound|http|9080']);
});

t.test('HTTP_ROUTE: MERGE, REMOVE, ADD, INSERT_BEFORE / INSERT_AFTER / INSERT_FIRST by route name and action', async (t) => {
  const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: v2
    match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews}}]
  - name: old
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: rest
    route: [{destination: {host: reviews}}]
`;
  const routes = (e: EnvoyResources) => ((routeConfig(e, '9080').virtualHosts as Obj[]).find((v) => v.name === 'reviews.default.svc.cluster.local:9080')!.routes as Obj[]);
  const rname = (e: EnvoyResources) => routes(e).map((r) => r.name as string);
  const patch = (operation: string, route: string, value?: string) =>
    envoy([BOOKINFO_SERVICES, vs, ef({ applyTo: 'HTTP_ROUTE', context: 'SIDECAR_OUTBOUND', operation, match: `routeConfiguration:\n  vhost:\n    name: "reviews.default.svc.cluster.local:9080"\n    route: ${route}`, ...(value === undefined ? {} : { value }) })]);
  const added = 'name: added\nmatch: {prefix: /added}\ndirect_response: {status: 418}';
  t.same(rname(envoy([BOOKINFO_SERVICES, vs]).e), ['v2', 'old', 'rest']);
  t.same(rname(patch('REMOVE', '{name: old}').e), ['v2', 'rest']);
  t.same(rname(patch('REMOVE', '{action: REDIRECT}').e), ['v2', 'rest'], 'by action');
  t.same(rname(patch('INSERT_BEFORE', '{name: old}', added).e), ['v2', 'added', 'old', 'rest']);
  t.same(rname(patch('INSERT_AFTER', '{name: old}', added).e), ['v2', 'old', 'added', 'rest']);
  t.same(rname(patch('INSERT_FIRST', '{name: rest}', added).e), ['added', 'v2', 'old', 'rest']);
  t.same(rname(patch('INSERT_FIRST', '{name: nothing}', added).e), ['v2', 'old', 'rest'], 'INSERT_FIRST with a route match that matches nothing: no insert');
  t.same(rname(patch('ADD', '{name: nothing}', added).e), ['v2', 'old', 'rest', 'added'], 'ADD: at the end');
  const merged = patch('MERGE', '{name: v2}', 'route: {timeout: 3s, retry_policy: {num_retries: 7}}\nrequest_headers_to_add: [{header: {key: x-m, value: "1"}}]');
  t.same(merged.brief, []);
  const v2 = routes(merged.e)[0]!;
  t.equal(v2.route.timeout, '3s');
  t.equal(v2.route.retryPolicy.numRetries, 7);
  t.equal(v2.route.retryPolicy.retryOn, routes(envoy([BOOKINFO_SERVICES, vs]).e)[0]!.route.retryPolicy.retryOn, 'the rest of the retry policy kept');
  t.strictSame(v2.requestHeadersToAdd, [{ header: { key: 'x-m', value: '1' } }]);
  t.equal(routes(merged.e)[2]!.route.timeout, '0s', 'other routes untouched');
  const replace = patch('REPLACE', '{name: v2}', added);
  t.match(replace.brief, [/^warning EnvoyFilter default\/ef spec\.configPatches\[0\]\.patch\.operation: istiod does not apply REPLACE to HTTP_ROUTE/]);
});

// ---- CLUSTER ----

t.test('CLUSTER: MERGE, REMOVE, ADD by name, service, subset and port; transport socket merges', async (t) => {
  const cluster = (e: EnvoyResources, name: string) => e.clusters.find((c) => c.name === name) as Obj;
  const patch = (operation: string, match: string, value?: string, context = 'SIDECAR_OUTBOUND') =>
    envoy([BOOKINFO_SERVICES, ef({ applyTo: 'CLUSTER', context, operation, ...(match === '' ? {} : { match }), ...(value === undefined ? {} : { value }) })]);
  const merged = patch('MERGE', 'cluster: {service: reviews.default.svc.cluster.local, portNumber: 9080}', 'connect_timeout: 2s\nper_connection_buffer_limit_bytes: 1024');
  t.same(merged.brief, []);
  t.equal(cluster(merged.e, 'outbound|9080||reviews.default.svc.cluster.local').connectTimeout, '2s');
  t.equal(cluster(merged.e, 'outbound|9080||reviews.default.svc.cluster.local').perConnectionBufferLimitBytes, 1024);
  t.equal(cluster(merged.e, 'outbound|9080||ratings.default.svc.cluster.local').perConnectionBufferLimitBytes, undefined);
  const removed = patch('REMOVE', 'cluster: {name: "outbound|9080||ratings.default.svc.cluster.local"}');
  t.notOk(clusterNames(removed.e).includes('outbound|9080||ratings.default.svc.cluster.local'));
  t.notOk(removed.e.endpoints.some((x) => x.assignment.clusterName === 'outbound|9080||ratings.default.svc.cluster.local'), 'its endpoints go too');
  // Four services, the inbound one, PassthroughCluster, BlackHoleCluster and InboundPassthroughCluster.
  t.same(clusterNames(patch('REMOVE', 'cluster: {subset: v1}').e).length, 8, 'no subset v1 cluster here');
  const inbound = patch('MERGE', 'cluster: {portNumber: 9080}', 'connect_timeout: 3s', 'SIDECAR_INBOUND');
  t.equal(cluster(inbound.e, 'inbound|9080||').connectTimeout, '3s');
  t.equal(cluster(inbound.e, 'outbound|9080||reviews.default.svc.cluster.local').connectTimeout, '10s', 'SIDECAR_INBOUND: inbound clusters only');
  const add = patch('ADD', '', 'name: extra\ntype: STATIC\nconnect_timeout: 1s\nload_assignment: {cluster_name: extra, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}');
  t.same(add.brief, []);
  t.equal(clusterNames(add.e).at(-1), 'extra');
  t.same(add.e.endpoints.at(-1), { assignment: { clusterName: 'extra', endpoints: [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: 9 } } } }] }] }, eds: false });
  const dr = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
`;
  const ts = envoy([BOOKINFO_SERVICES, dr, ef({ applyTo: 'CLUSTER', context: 'SIDECAR_OUTBOUND', operation: 'MERGE', match: 'cluster: {service: reviews.default.svc.cluster.local}', value: `connect_timeout: 9s\ntransport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    "@type": ${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n    sni: custom.example` })]);
  t.same(ts.brief, []);
  const reviews = cluster(ts.e, 'outbound|9080||reviews.default.svc.cluster.local');
  t.equal(reviews.transportSocket.typedConfig.sni, 'custom.example', 'merged into the socket of the same name');
  t.ok(reviews.transportSocket.typedConfig.commonTlsContext, 'the rest of the socket kept');
  t.equal(reviews.connectTimeout, '10s', 'nothing else of the patch applies, as istiod');
});

t.test('EXTENSION_CONFIG, BOOTSTRAP and LISTENER_FILTER: a warning, the patch ignored; targetRefs: a warning', async (t) => {
  for (const applyTo of ['EXTENSION_CONFIG', 'BOOTSTRAP', 'LISTENER_FILTER']) {
    const { brief } = envoy([BOOKINFO_SERVICES, ef({ applyTo, operation: 'MERGE', value: 'name: x' })]);
    t.same(brief, [`warning EnvoyFilter default/ef spec.configPatches[0].applyTo: applyTo ${applyTo} is not supported by Remora; this patch is ignored`], applyTo);
  }
  const targeted = ef({ operation: 'INSERT_FIRST', match: onHcm(), value: faultValue(500) }).replace('spec:\n', 'spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n');
  const { e, brief } = envoy([BOOKINFO_SERVICES, targeted]);
  t.same(names(e), [CORS, ROUTER]);
  t.match(brief, [/spec\.targetRefs: targetRefs is not supported by Remora/]);
});
