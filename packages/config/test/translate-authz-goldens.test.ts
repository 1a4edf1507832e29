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
import { ExtAuthzSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ext_authz/v3/ext_authz_pb.js';
import { type AuthzIssue, type AuthzPolicyInput, buildRbacFilters } from '../src/translate/authz-rbac.ts';
import { buildExtAuthzFilters, type ServiceLookup } from '../src/translate/authz-extauthz.ts';
import { parseMeshConfig, type MeshConfig } from '../src/schema/mesh-config.ts';
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
};

/** The policies of an input file that select httpbin v1 in foo, as builder_test.go's node. */
function policiesOf(file: string): AuthzPolicyInput[] {
  const out: AuthzPolicyInput[] = [];
  for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
    const r = doc.toJS() as { metadata: { name: string; namespace: string; annotations?: Record<string, string> }; spec?: { action?: string; rules?: unknown[]; provider?: { name: string } } } | null;
    if (r === null) continue;
    const action = (r.spec?.action ?? 'ALLOW') as AuthzPolicyInput['action'];
    out.push({
      namespace: r.metadata.namespace,
      name: r.metadata.name,
      action,
      rules: r.spec?.rules,
      dryRun: r.metadata.annotations?.['istio.io/dry-run'] === 'true',
      ...(r.spec?.provider !== undefined ? { provider: r.spec.provider.name } : {}),
    });
  }
  return out;
}

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

// --- CUSTOM (ext_authz): builder_test.go's mesh configs, written as the `mesh` ConfigMap holds them.

const MESH_CONFIGS: Record<string, string> = {
  grpcNoNamespace: `
extensionProviders:
- name: default
  envoyExtAuthzGrpc:
    service: my-custom-ext-authz.foo.svc.cluster.local
    port: 9000
    failOpen: true
    statusOnError: "403"
`,
  grpc: `
extensionProviders:
- name: default
  envoyExtAuthzGrpc:
    service: foo/my-custom-ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 2ms
    failOpen: true
    statusOnError: "403"
    includeRequestBodyInCheck:
      maxRequestBytes: 4096
      allowPartialMessage: true
`,
  http: `
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: foo/my-custom-ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 10s
    failOpen: true
    statusOnError: "403"
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-custom-id, x-prefix-*, "*-suffix"]
    includeHeadersInCheck: [should-not-include-when-IncludeRequestHeadersInCheck-is-set]
    includeAdditionalHeadersInCheck: {x-header-1: value-1, x-header-2: value-2}
    includeRequestBodyInCheck:
      maxRequestBytes: 2048
      allowPartialMessage: true
      packAsBytes: true
    headersToUpstreamOnAllow: [Authorization, x-prefix-*, "*-suffix"]
    headersToDownstreamOnDeny: [Set-cookie, x-prefix-*, "*-suffix"]
    headersToDownstreamOnAllow: [Set-cookie, x-prefix-*, "*-suffix"]
`,
  invalid: `
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: foo/my-custom-ext-authz
    port: 999999
    pathPrefix: check
    statusOnError: "999"
`,
};

/** builder_test.go's push: one service, my-custom-ext-authz.foo.svc.cluster.local in foo. */
const lookup: ServiceLookup = (service, port) => {
  const host = 'my-custom-ext-authz.foo.svc.cluster.local';
  if (service !== host && service !== `foo/${host}`) return `could not find service ${service} in Istio service registry`;
  return { hostname: host, cluster: `outbound|${port}||${host}` };
};

function meshOf(name: string): MeshConfig {
  const r = parseMeshConfig(MESH_CONFIGS[name]!, `${name}.yaml`);
  if (r.mesh === null) throw new Error(r.issues.map((i) => i.message).join('; '));
  return r.mesh;
}

/** builder_test.go's CUSTOM cases: name, mesh config, input, outputs, whether istiod logs a problem. */
const CUSTOM_CASES: [string, string, string, string[], boolean][] = [
  ['custom-grpc-provider-no-namespace', 'grpcNoNamespace', 'custom-simple-http-in.yaml', ['custom-grpc-provider-no-namespace-out1.yaml', 'custom-grpc-provider-no-namespace-out2.yaml'], false],
  ['custom-grpc-provider', 'grpc', 'custom-simple-http-in.yaml', ['custom-grpc-provider-out1.yaml', 'custom-grpc-provider-out2.yaml'], false],
  ['custom-http-provider', 'http', 'custom-simple-http-in.yaml', ['custom-http-provider-out1.yaml', 'custom-http-provider-out2.yaml'], false],
  ['custom-bad-multiple-providers', 'http', 'custom-bad-multiple-providers-in.yaml', ['custom-bad-multiple-providers-out1.yaml', 'custom-bad-multiple-providers-out2.yaml'], true],
  ['custom-bad-invalid-config', 'invalid', 'custom-simple-http-in.yaml', ['custom-bad-out.yaml'], true],
];

const SCHEMAS = {
  'envoy.filters.http.rbac': RBACSchema,
  'envoy.filters.http.ext_authz': ExtAuthzSchema,
} as const;

for (const [name, mesh, input, outputs, warns] of CUSTOM_CASES) {
  t.test(name, { skip }, async (t) => {
    const issues: AuthzIssue[] = [];
    const got = buildExtAuthzFilters(policiesOf(input), { trustDomains: [], report: (i) => issues.push(i), providers: meshOf(mesh).extensionProviders, lookup });
    t.same(issues.filter((i) => i.severity === 'error'), [], 'no errors');
    t.equal(issues.length > 0, warns, warns ? 'a warning names the problem' : 'no warnings');
    t.equal(got.length, outputs.length, 'as many filters as istiod');
    outputs.forEach((file, i) => {
      const golden = parse(readFileSync(join(dir, file), 'utf8')) as JsonObject;
      t.equal(got[i]?.name, golden['name'], `${file}: the filter`);
      const schema = SCHEMAS[golden['name'] as keyof typeof SCHEMAS];
      const { '@type': type, ...want } = golden['typedConfig'] as JsonObject;
      t.equal(type, `type.googleapis.com/${schema.typeName}`);
      const a = envoyFromJson(schema, (got[i]?.config ?? {}) as JsonObject);
      const b = envoyFromJson(schema, want);
      const same = equals(schema, a as never, b as never, { registry: envoyRegistry, unpackAny: true });
      t.ok(same, `${file} equals istiod's`);
      if (!same) t.same(envoyToJson(schema, a as never), envoyToJson(schema, b as never), `${file}: the difference`);
    });
  });
}

t.test('an invalid provider is reported with each of istiod\'s reasons', { skip }, async (t) => {
  const issues: AuthzIssue[] = [];
  buildExtAuthzFilters(policiesOf('custom-simple-http-in.yaml'), { trustDomains: [], report: (i) => issues.push(i), providers: meshOf('invalid').extensionProviders, lookup });
  const text = issues.map((i) => i.message).join('\n');
  t.match(text, /port must be in the range \[1, 65535\], found: 999999/);
  t.match(text, /could not find service foo\/my-custom-ext-authz/);
  t.match(text, /unsupported statusOnError 999/);
  t.match(text, /pathPrefix must begin with `\/`/);
});

t.test('a CUSTOM policy naming an unknown provider denies what its rules match', { skip }, async (t) => {
  const issues: AuthzIssue[] = [];
  const policies = policiesOf('custom-simple-http-in.yaml').map((p) => ({ ...p, provider: 'nope' }));
  const got = buildExtAuthzFilters(policies, { trustDomains: [], report: (i) => issues.push(i), providers: meshOf('http').extensionProviders, lookup });
  t.equal(got.length, 1);
  t.same(Object.keys((got[0]!.config as { rules: { policies: object } }).rules.policies), [
    'istio-ext-authz-nope-ns[foo]-policy[httpbin-1]-rule[0]-deny-due-to-bad-CUSTOM-action',
    'istio-ext-authz-nope-ns[foo]-policy[httpbin-2]-rule[0]-deny-due-to-bad-CUSTOM-action',
  ]);
  t.match(issues[0]?.message, /available providers are \[default\] but found "nope"/);
});

t.test('every golden file is compared or skipped with a reason', { skip }, async (t) => {
  const { readdirSync } = await import('node:fs');
  const outs = readdirSync(dir).filter((f) => /-out\d*\.yaml$/.test(f));
  const covered = new Set([...CASES.flatMap(([, o]) => o), ...CUSTOM_CASES.flatMap(([, , , o]) => o), ...Object.keys(SKIPPED)]);
  t.same(outs.filter((f) => !covered.has(f)), [], 'no output file left out');
});
