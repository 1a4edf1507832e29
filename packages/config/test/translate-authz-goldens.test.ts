// AuthorizationPolicy → RBAC against istiod's own goldens (pilot/pkg/security/authz/builder/
// testdata/http, with the trust domain bundles its builder_test.go gives each case): the
// generated filter configs must equal istiod's, compared as Envoy messages (key order and
// proto3 defaults do not matter, every field does).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { equals, type JsonObject } from '@bufbuild/protobuf';
import { envoyFromJson, envoyRegistry, envoyToJson } from '@remora/config/envoy';
import { RBACSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.js';
import { type AuthzIssue, type AuthzPolicyInput, buildRbacFilters } from '../src/translate/authz-rbac.ts';
import { GOLDENS_DIR, GOLDENS_MISSING } from './helpers/envoy.ts';

const skip = GOLDENS_DIR === null ? GOLDENS_MISSING : false;
const dir = join(GOLDENS_DIR ?? '', 'authz-builder');

/** builder_test.go's TestGenerator_GenerateHTTP cases that Remora's HTTP path covers: input, outputs, trust domain bundle. */
const CASES: [string, string[], string[]][] = [
  ['allow-empty-rule-in.yaml', ['allow-empty-rule-out.yaml'], []],
  ['allow-full-rule-in.yaml', ['allow-full-rule-out.yaml'], []],
  ['allow-nil-rule-in.yaml', ['allow-nil-rule-out.yaml'], []],
  ['allow-path-in.yaml', ['allow-path-out.yaml'], []],
  ['audit-full-rule-in.yaml', ['audit-full-rule-out.yaml'], []],
  ['deny-and-allow-in.yaml', ['deny-and-allow-out1.yaml', 'deny-and-allow-out2.yaml'], []],
  ['deny-empty-rule-in.yaml', ['deny-empty-rule-out.yaml'], []],
  ['dry-run-allow-and-deny-in.yaml', ['dry-run-allow-and-deny-out1.yaml', 'dry-run-allow-and-deny-out2.yaml'], []],
  ['dry-run-allow-in.yaml', ['dry-run-allow-out.yaml'], []],
  ['dry-run-mix-in.yaml', ['dry-run-mix-out.yaml'], []],
  ['multiple-policies-in.yaml', ['multiple-policies-out.yaml'], []],
  ['single-policy-in.yaml', ['single-policy-out.yaml'], []],
  ['simple-policy-td-aliases-in.yaml', ['simple-policy-td-aliases-out.yaml'], ['td1', 'cluster.local']],
  ['simple-policy-multiple-td-aliases-in.yaml', ['simple-policy-multiple-td-aliases-out.yaml'], ['td1', 'cluster.local', 'some-td']],
  ['simple-policy-principal-with-wildcard-in.yaml', ['simple-policy-principal-with-wildcard-out.yaml'], ['td1', 'foobar']],
  ['td-aliases-source-principal-in.yaml', ['td-aliases-source-principal-out.yaml'], ['new-td', 'old-td', 'some-trustdomain']],
  ['trust-domains-in.yaml', ['trust-domains-out.yaml'], []],
];

/** The files not compared, and why. */
const SKIPPED: Record<string, string> = {
  'allow-host-before-111-out.yaml': 'no builder_test.go case uses it any more (hosts for proxies before Istio 1.11)',
  'custom-bad-multiple-providers-out1.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-bad-multiple-providers-out2.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-bad-out.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-grpc-provider-no-namespace-out1.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-grpc-provider-no-namespace-out2.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-grpc-provider-out1.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-grpc-provider-out2.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-http-provider-out1.yaml': 'CUSTOM (ext_authz): a later issue',
  'custom-http-provider-out2.yaml': 'CUSTOM (ext_authz): a later issue',
};

/** The policies of an input file that select httpbin v1 in foo, as builder_test.go's node. */
function policiesOf(file: string): AuthzPolicyInput[] {
  const out: AuthzPolicyInput[] = [];
  for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
    const r = doc.toJS() as { metadata: { name: string; namespace: string; annotations?: Record<string, string> }; spec?: { action?: string; rules?: unknown[] } } | null;
    if (r === null) continue;
    const action = (r.spec?.action ?? 'ALLOW') as AuthzPolicyInput['action'];
    out.push({
      namespace: r.metadata.namespace,
      name: r.metadata.name,
      action,
      rules: r.spec?.rules,
      dryRun: r.metadata.annotations?.['istio.io/dry-run'] === 'true',
    });
  }
  return out;
}

t.test('every golden file is compared or skipped with a reason', { skip }, async (t) => {
  const { readdirSync } = await import('node:fs');
  const outs = readdirSync(dir).filter((f) => /-out\d*\.yaml$/.test(f));
  const covered = new Set([...CASES.flatMap(([, o]) => o), ...Object.keys(SKIPPED)]);
  t.same(outs.filter((f) => !covered.has(f)), [], 'no output file left out');
});

for (const [input, outputs, trustDomains] of CASES) {
  t.test(input, { skip }, async (t) => {
    const issues: AuthzIssue[] = [];
    const got = buildRbacFilters(policiesOf(input), { trustDomains, report: (i) => issues.push(i) });
    t.same(issues.filter((i) => i.severity === 'error'), [], 'no errors');
    t.equal(got.length, outputs.length, 'as many filters as istiod');
    outputs.forEach((file, i) => {
      const golden = parse(readFileSync(join(dir, file), 'utf8')) as JsonObject;
      t.equal(golden['name'], 'envoy.filters.http.rbac');
      const { '@type': type, ...want } = golden['typedConfig'] as JsonObject;
      t.equal(type, 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC');
      const a = envoyFromJson(RBACSchema, (got[i] ?? {}) as JsonObject);
      const b = envoyFromJson(RBACSchema, want);
      const same = equals(RBACSchema, a, b, { registry: envoyRegistry, unpackAny: true });
      t.ok(same, `${file} equals istiod's`);
      if (!same) t.same(envoyToJson(RBACSchema, a), envoyToJson(RBACSchema, b), `${file}: the difference`);
    });
  });
}
