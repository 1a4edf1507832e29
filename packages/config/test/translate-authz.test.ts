// AuthorizationPolicy in the translated model: istiod's RBAC filters in the inbound chain
// (AUDIT, DENY, ALLOW after jwt_authn), dry-run policies as shadow rules, the trust domain of
// the node, CUSTOM left out with a warning, and refused rules reported with file and path.
import t from 'tap';
import type { RBACJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.js';
import { CHAIN_TAIL, nodeWith, SIDECAR, translate } from './helpers/translate.ts';

const TAIL = CHAIN_TAIL.map((f) => f.name);

const APP_PORT = { bindAddress: '0.0.0.0', outboundPort: 15001, inboundPort: 15006, appPort: 9080, appAddress: '127.0.0.1' };

const policy = (name: string, spec: string, annotations = '') => `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: default
${annotations}
spec:
${spec}
`;

function inbound(yaml: string[], node = SIDECAR) {
  const out = translate(yaml, node, APP_PORT);
  const listener = out.config.listeners.find((l) => l.name === 'virtualInbound');
  if (listener === undefined) throw new Error('no inbound listener');
  return { ...out, filters: listener.httpFilters, outbound: out.config.listeners.find((l) => l.name === 'virtualOutbound')!.httpFilters };
}

const JWT = `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: default }
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{"keys":[]}'
`;

t.test('AUDIT, DENY and ALLOW become three RBAC filters after jwt_authn, on the inbound side only', async (t) => {
  const { filters, outbound, brief } = inbound([
    JWT,
    policy('allow-get', '  rules: [{ to: [{ operation: { methods: [GET] } }] }]'),
    policy('deny-admin', '  action: DENY\n  rules: [{ to: [{ operation: { paths: [/admin*] } }] }]'),
    policy('audit-all', '  action: AUDIT\n  rules: [{}]'),
  ]);
  t.same(brief.filter((b) => b.startsWith('error')), []);
  t.same(filters.map((f) => f.name), ['envoy.filters.http.jwt_authn', 'envoy.filters.http.rbac', 'envoy.filters.http.rbac', 'envoy.filters.http.rbac', ...TAIL]);
  const [audit, deny, allow] = filters.slice(1, 4).map((f) => f.config as RBACJson);
  t.equal(audit?.rules?.action, 'LOG');
  t.same(Object.keys(audit?.rules?.policies ?? {}), ['ns[default]-policy[audit-all]-rule[0]']);
  t.equal(deny?.rules?.action, 'DENY');
  t.same(deny?.rules?.policies?.['ns[default]-policy[deny-admin]-rule[0]']?.permissions, [
    { andRules: { rules: [{ orRules: { rules: [{ urlPath: { path: { prefix: '/admin' } } }] } }] } },
  ]);
  t.equal(allow?.rules?.action, undefined, 'ALLOW is the proto3 default, left out');
  t.equal(allow?.shadowRulesStatPrefix, 'istio_dry_run_allow_');
  t.same(outbound.map((f) => f.name).filter((n) => n.includes('rbac')), []);
  t.same(JSON.parse(JSON.stringify(filters)), filters, 'plain JSON data');
});

t.test('dry-run policies are shadow rules beside the enforced ones', async (t) => {
  const { filters } = inbound([
    policy('enforced', '  action: DENY\n  rules: [{ to: [{ operation: { methods: [DELETE] } }] }]'),
    policy('trial', '  action: DENY\n  rules: [{ to: [{ operation: { methods: [POST] } }] }]', '  annotations: { istio.io/dry-run: "true" }'),
  ]);
  t.same(filters.map((f) => f.name), ['envoy.filters.http.rbac', ...TAIL]);
  const rbac = filters[0]!.config as RBACJson;
  t.same(Object.keys(rbac.rules?.policies ?? {}), ['ns[default]-policy[enforced]-rule[0]']);
  t.same(Object.keys(rbac.shadowRules?.policies ?? {}), ['ns[default]-policy[trial]-rule[0]']);
  t.equal(rbac.shadowRules?.action, 'DENY');
  t.equal(rbac.shadowRulesStatPrefix, 'istio_dry_run_deny_');
});

t.test("principals are rewritten to the node's trust domain, as istiod does", async (t) => {
  const { filters } = inbound([policy('p', '  rules: [{ from: [{ source: { principals: [cluster.local/ns/a/sa/b] } }] }]')], nodeWith(SIDECAR, { trustDomain: 'example.org' }));
  const rbac = filters[0]!.config as RBACJson;
  t.same(rbac.rules?.policies?.['ns[default]-policy[p]-rule[0]']?.principals, [
    { andIds: { ids: [{ orIds: { ids: [{ authenticated: { principalName: { exact: 'spiffe://example.org/ns/a/sa/b' } } }] } }] } },
  ]);
});

t.test('CUSTOM naming a provider the mesh does not have denies what its rules match, with a warning (istiod)', async (t) => {
  const { filters, brief } = inbound([policy('ext', '  action: CUSTOM\n  provider: { name: my-authz }\n  rules: [{}]')]);
  t.same(filters.map((f) => f.name), ['envoy.filters.http.rbac', ...TAIL]);
  const rbac = filters[0]!.config as RBACJson;
  t.equal(rbac.rules?.action, 'DENY');
  t.same(Object.keys(rbac.rules?.policies ?? {}), ['istio-ext-authz-my-authz-ns[default]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action']);
  t.match(brief, [/warning AuthorizationPolicy default\/ext spec\.provider\.name: CUSTOM action for provider my-authz cannot be used.*available providers are \[\] but found "my-authz"/]);
});

t.test('a rule istiod refuses is an error naming file, resource and field', async (t) => {
  const out = translate([policy('bad', '  rules: [{ to: [{ operation: { paths: ["/a/{**}/{*}"] } }] }]')], SIDECAR, APP_PORT);
  const errors = out.issues.filter((i) => i.severity === 'error');
  t.equal(errors.length, 1);
  t.match(errors[0], { file: 'test-0.yaml', kind: 'AuthorizationPolicy', resource: 'default/bad', path: 'spec.rules[0].to[0].operation.paths[0]', message: /\{\*\*\} is not the last operator/ });
});
