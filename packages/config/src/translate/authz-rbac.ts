/**
 * AuthorizationPolicy → Envoy RBAC, the way istiod's authz builder does it
 * (pilot/pkg/security/authz/builder/builder.go, model/*.go, matcher/*.go): one
 * `envoy.filters.http.rbac` filter per action present — AUDIT (LOG), then DENY, then ALLOW —
 * each holding `rules` for the enforced policies and `shadow_rules` for the dry-run ones;
 * one Envoy policy per rule, named `ns[<ns>]-policy[<name>]-rule[<i>]`, with the same
 * permission/principal trees istiod writes. Rules istiod's validation webhook refuses are
 * reported (with the field path), not built.
 */
import type { HeaderMatcherJson } from '../envoy/gen/envoy/config/route/v3/route_components_pb.ts';
import type { PermissionJson, PolicyJson, PrincipalJson, RBACJson as RBACRulesJson } from '../envoy/gen/envoy/config/rbac/v3/rbac_pb.ts';
import type { RBACJson } from '../envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.ts';
import type { MetadataMatcherJson } from '../envoy/gen/envoy/type/matcher/v3/metadata_pb.ts';
import type { StringMatcherJson } from '../envoy/gen/envoy/type/matcher/v3/string_pb.ts';
import type { ValueMatcherJson } from '../envoy/gen/envoy/type/matcher/v3/value_pb.ts';
import type { AnyJson } from '@bufbuild/protobuf/wkt';
import { checkIPSubnet, isIPAddress } from '../schema/names.ts';

/** One AuthorizationPolicy, as the builder needs it (the spec already schema-valid). */
export interface AuthzPolicyInput {
  readonly namespace: string;
  readonly name: string;
  readonly action: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  /** CUSTOM: the `provider.name` (an extension provider of the MeshConfig). */
  readonly provider?: string;
  /** The spec's `rules`; undefined when the spec has none (then the policy never matches). */
  readonly rules: readonly unknown[] | undefined;
  /** The `istio.io/dry-run` annotation: evaluated as `shadow_rules`, never enforced. */
  readonly dryRun: boolean;
}

/** A problem found in a policy; `path` is relative to the policy's `spec`. */
export interface AuthzIssue {
  readonly policy: AuthzPolicyInput;
  readonly severity: 'error' | 'warning';
  readonly path: readonly (string | number)[];
  readonly message: string;
}

export interface RbacBuildOptions {
  /** istiod's trust domain bundle: the mesh trust domain, then its aliases. */
  readonly trustDomains: readonly string[];
  readonly report: (issue: AuthzIssue) => void;
}

/** Envoy's RBAC metadata for a verified JWT: jwt_authn's dynamic metadata, `payload_in_metadata: payload`. */
export const JWT_METADATA_FILTER = 'envoy.filters.http.jwt_authn';
export const JWT_METADATA_PAYLOAD = 'payload';

/** istiod's shadow rules stat prefixes (authz/model). */
const DRY_RUN_ALLOW_PREFIX = 'istio_dry_run_allow_';
const DRY_RUN_DENY_PREFIX = 'istio_dry_run_deny_';

/** The policy istiod writes for a policy without rules: never matches. */
const POLICY_MATCH_NEVER: PolicyJson = {
  permissions: [{ notRule: { any: true } }],
  principals: [{ notId: { any: true } }],
};

/**
 * The RBAC filter configs for the policies that apply to one proxy, in istiod's order (AUDIT,
 * DENY, ALLOW); empty when there are none.
 */
export function buildRbacFilters(policies: readonly AuthzPolicyInput[], opts: RbacBuildOptions): RBACJson[] {
  const out: RBACJson[] = [];
  for (const action of ['AUDIT', 'DENY', 'ALLOW'] as const) {
    const of = policies.filter((p) => p.action === action);
    if (of.length > 0) out.push(buildOne(of, action, opts));
  }
  return out;
}

function buildOne(policies: readonly AuthzPolicyInput[], action: 'ALLOW' | 'DENY' | 'AUDIT', opts: RbacBuildOptions): RBACJson {
  const envoyAction = action === 'AUDIT' ? 'LOG' : action;
  let rules: Record<string, PolicyJson> | null = null;
  let shadow: Record<string, PolicyJson> | null = null;
  for (const policy of policies) {
    const target = policy.dryRun ? (shadow ??= {}) : (rules ??= {});
    if ((policy.rules ?? []).length === 0 && action === 'DENY') {
      opts.report({ policy, severity: 'warning', path: [], message: 'DENY action without `rules` is meaningless as it will never be triggered; add an empty rule `{}` to deny every request' });
    }
    buildPolicies(policy, '', target, opts);
  }
  const config: RBACJson = {};
  if (rules !== null) config.rules = rbacRules(envoyAction, rules);
  if (shadow !== null) config.shadowRules = rbacRules(envoyAction, shadow);
  // istiod takes the prefix from the shadow rules' action, and a nil RBAC reads as ALLOW.
  const prefix = shadow === null || envoyAction === 'ALLOW' ? DRY_RUN_ALLOW_PREFIX : envoyAction === 'DENY' ? DRY_RUN_DENY_PREFIX : '';
  if (prefix !== '') config.shadowRulesStatPrefix = prefix;
  return config;
}

/**
 * One Envoy policy per rule of `policy` into `target`, named `<prefix>ns[<ns>]-policy[<name>]-rule[<i>]`
 * (a policy without rules: one that never matches). Invalid rules are reported and left out.
 */
export function buildPolicies(policy: AuthzPolicyInput, prefix: string, target: Record<string, PolicyJson>, opts: RbacBuildOptions): void {
  const b = new PolicyBuilder(policy, opts);
  const list = policy.rules ?? [];
  list.forEach((rule, i) => {
    const generated = b.rule(rule, i);
    if (generated !== null) target[`${prefix}ns[${policy.namespace}]-policy[${policy.name}]-rule[${i}]`] = generated;
  });
  if (list.length === 0) target[`${prefix}ns[${policy.namespace}]-policy[${policy.name}]-rule[0]`] = POLICY_MATCH_NEVER;
}

function rbacRules(action: 'ALLOW' | 'DENY' | 'LOG', policies: Record<string, PolicyJson>): RBACRulesJson {
  // proto3 JSON leaves the default enum value (ALLOW) out.
  return action === 'ALLOW' ? { policies } : { action, policies };
}

// --- The resource as written (already schema-valid) --------------------------------------------

interface RawSource {
  [field: string]: string[] | undefined;
}

interface RawCondition {
  key?: string;
  values?: string[];
  notValues?: string[];
}

interface RawRule {
  from?: ({ source?: RawSource | null } | null)[] | null;
  to?: ({ operation?: RawSource | null } | null)[] | null;
  when?: (RawCondition | null)[] | null;
}

/** A compile failure of one rule: the rule is skipped and the error reported. */
class RuleError extends Error {
  readonly path: readonly (string | number)[];
  constructor(path: readonly (string | number)[], message: string) {
    super(message);
    this.path = path;
  }
}

type Path = readonly (string | number)[];

/** One field of a source/operation/condition, istiod's `rule` (key, values, notValues and its generator). */
interface Field {
  readonly key: string;
  readonly values: readonly string[];
  readonly notValues: readonly string[];
  readonly at: Path;
  readonly notAt: Path;
  /** One value → one matcher (istiod's `generator`), ORed; or all values → one (`extendedGenerator`). */
  readonly kind: 'permission' | 'principal';
  readonly one: ((value: string, at: Path) => PermissionJson | PrincipalJson) | null;
  readonly all: ((values: readonly string[], at: Path) => PermissionJson | PrincipalJson) | null;
}

class PolicyBuilder {
  readonly #policy: AuthzPolicyInput;
  readonly #opts: RbacBuildOptions;

  constructor(policy: AuthzPolicyInput, opts: RbacBuildOptions) {
    this.#policy = policy;
    this.#opts = opts;
  }

  /** One rule as an Envoy policy; null (with an error reported) when invalid. */
  rule(raw: unknown, i: number): PolicyJson | null {
    try {
      return this.#rule(raw, ['rules', i]);
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      this.#opts.report({ policy: this.#policy, severity: 'error', path: err.path, message: err.message });
      return null;
    }
  }

  #rule(raw: unknown, at: Path): PolicyJson {
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new RuleError(at, '`rule` must not be nil');
    const r = raw as RawRule;
    // `when` conditions go to the end of every permission or principal (istiod's appendLast).
    const basePermission: Field[] = [];
    const basePrincipal: Field[] = [];
    (r.when ?? []).forEach((cond, j) => {
      const f = this.#condition(cond, [...at, 'when', j]);
      if (f !== null) (f.kind === 'permission' ? basePermission : basePrincipal).push(f);
    });

    const principals: Field[][] = [];
    if (r.from !== undefined && r.from !== null) {
      if (r.from.length === 0) throw new RuleError([...at, 'from'], '`from` must not be empty');
      r.from.forEach((f, j) => {
        const src = f?.source;
        if (src === undefined || src === null) throw new RuleError([...at, 'from', j], '`from.source` must not be nil');
        principals.push([...this.#source(src, [...at, 'from', j, 'source']), ...basePrincipal]);
      });
    } else {
      principals.push(basePrincipal);
    }
    const permissions: Field[][] = [];
    if (r.to !== undefined && r.to !== null) {
      if (r.to.length === 0) throw new RuleError([...at, 'to'], '`to` must not be empty');
      r.to.forEach((t, j) => {
        const op = t?.operation;
        if (op === undefined || op === null) throw new RuleError([...at, 'to', j], '`to.operation` must not be nil');
        permissions.push([...this.#operation(op, [...at, 'to', j, 'operation']), ...basePermission]);
      });
    } else {
      permissions.push(basePermission);
    }
    return {
      permissions: permissions.map((fields) => ({ andRules: { rules: andOf(fields, { any: true }) as PermissionJson[] } })),
      principals: principals.map((fields) => ({ andIds: { ids: andOf(fields, { any: true }) as PrincipalJson[] } })),
    };
  }

  /** A source's fields in istiod's order (each insertFront, so the last inserted comes first). */
  #source(s: RawSource, at: Path): Field[] {
    const n = (k: string) => s[k]?.length ?? 0;
    if (n('principals') + n('notPrincipals') + n('namespaces') + n('notNamespaces') > 0 && n('serviceAccounts') + n('notServiceAccounts') > 0) {
      throw new RuleError(at, 'cannot set serviceAccounts with namespaces or principals');
    }
    const out: Field[] = [];
    const field = (name: string, key: string, kind: 'principal', one: Field['one'], all: Field['all'] = null) => {
      const f = this.#field(s, name, at, key, kind, one, all);
      if (f !== null) out.push(f);
    };
    field('principals', 'source.principal', 'principal', (v) => authenticated(withSpiffe(v)));
    field('requestPrincipals', 'request.auth.principal', 'principal', null, requestPrincipals);
    field('serviceAccounts', 'source.serviceAccount', 'principal', (v, p) => this.#serviceAccount(v, p));
    field('trustDomains', 'source.trustDomain', 'principal', trustDomain);
    field('namespaces', 'source.namespace', 'principal', namespace);
    field('remoteIpBlocks', 'remote.ip', 'principal', (v, p) => ({ remoteIp: cidr(v, p) }));
    field('ipBlocks', 'source.ip', 'principal', (v, p) => ({ directRemoteIp: cidr(v, p) }));
    if (out.length === 0) throw new RuleError(at, '`from.source` must not be empty');
    return out;
  }

  #operation(o: RawSource, at: Path): Field[] {
    const out: Field[] = [];
    const field = (name: string, key: string, one: Field['one']) => {
      const f = this.#field(o, name, at, key, 'permission', one, null);
      if (f !== null) out.push(f);
    };
    field('hosts', ':authority', (v) => ({ header: headerMatcher(':authority', v, true) }));
    field('methods', ':method', (v) => ({ header: headerMatcher(':method', v, false) }));
    field('paths', 'path-matcher', (v, p) => path(v, p));
    field('ports', 'destination.port', (v, p) => ({ destinationPort: port(v, p) }));
    if (out.length === 0) throw new RuleError(at, '`to.operation` must not be empty');
    return out;
  }

  /** A field and its `not` twin; null when neither is set. Values checked for emptiness. */
  #field(obj: RawSource, name: string, at: Path, key: string, kind: Field['kind'], one: Field['one'], all: Field['all']): Field | null {
    const notName = `not${name[0]!.toUpperCase()}${name.slice(1)}`;
    const values = nonEmpty(obj[name] ?? [], [...at, name]);
    const notValues = nonEmpty(obj[notName] ?? [], [...at, notName]);
    if (values.length === 0 && notValues.length === 0) return null;
    return { key, values: this.#migrate(key, values), notValues: this.#migrate(key, notValues), at: [...at, name], notAt: [...at, notName], kind, one, all };
  }

  /** istiod's Model.MigrateTrustDomain: principals and trust domains in every trust domain of the bundle. */
  #migrate(key: string, values: readonly string[]): readonly string[] {
    if (values.length === 0) return values;
    if (key === 'source.principal') return replaceTrustDomainAliases(values, this.#opts.trustDomains);
    if (key === 'source.trustDomain') return expandTrustDomainAliases(values, this.#opts.trustDomains);
    return values;
  }

  #serviceAccount(v: string, at: Path): PrincipalJson {
    if (v.includes('*')) throw new RuleError(at, 'wildcard not allowed');
    const parts = v.split('/');
    if (parts.length > 2 || parts.some((x) => x === '')) throw new RuleError(at, `expected format 'serviceAccount' or 'namespace/serviceAccount', found "${v}"`);
    if (v.length > 320) throw new RuleError(at, 'value cannot exceed 320 characters');
    const slash = v.indexOf('/');
    const ns = slash < 0 ? this.#policy.namespace : v.slice(0, slash);
    const sa = slash < 0 ? v : v.slice(slash + 1);
    return authenticated({ safeRegex: { regex: `spiffe://.+/ns/${quoteMeta(ns)}/(.+/|)sa/${quoteMeta(sa)}(/.+)?` } });
  }

  /** A `when` condition (istiod's model.New switch and ValidateAttribute). */
  #condition(raw: RawCondition | null, at: Path): Field | null {
    const key = raw?.key ?? '';
    if (key === '') throw new RuleError(at, '`key` must not be empty');
    const values = nonEmpty(raw?.values ?? [], [...at, 'values']);
    const notValues = nonEmpty(raw?.notValues ?? [], [...at, 'notValues']);
    if (values.length === 0 && notValues.length === 0) throw new RuleError(at, `at least one of \`values\` or \`notValues\` must be set for key ${key}`);
    const field = (kind: Field['kind'], one: Field['one'], all: Field['all'] = null): Field => ({
      key, values: this.#migrate(key, values), notValues: this.#migrate(key, notValues), at: [...at, 'values'], notAt: [...at, 'notValues'], kind, one, all,
    });
    const check = (test: (v: string, p: Path) => unknown) => {
      values.forEach((v, i) => test(v, [...at, 'values', i]));
      notValues.forEach((v, i) => test(v, [...at, 'notValues', i]));
    };
    const badAt = values.length > 0 ? [...at, 'values'] : [...at, 'notValues'];
    switch (key) {
      case 'destination.ip':
        return field('permission', (v, p) => ({ destinationIp: cidr(v, p) }));
      case 'destination.port':
        check(port);
        return field('permission', (v, p) => ({ destinationPort: port(v, p) }));
      case 'connection.sni':
        return field('permission', (v) => ({ requestedServerName: stringMatcher(v) }));
      case 'source.ip':
        return field('principal', (v, p) => ({ directRemoteIp: cidr(v, p) }));
      case 'remote.ip':
        return field('principal', (v, p) => ({ remoteIp: cidr(v, p) }));
      case 'source.namespace':
        return field('principal', namespace);
      case 'source.trustDomain':
        return field('principal', trustDomain);
      case 'source.serviceAccount':
        if (values.length > 16 || notValues.length > 16) throw new RuleError(badAt, 'may not have more than 16 values');
        check((v, p) => this.#serviceAccount(v, p));
        return field('principal', (v, p) => this.#serviceAccount(v, p));
      case 'source.principal':
        return field('principal', (v) => authenticated(withSpiffe(v)));
      case 'request.auth.principal':
        return field('principal', null, requestPrincipals);
      case 'request.auth.audiences':
        return field('principal', null, (vs) => ({ metadata: jwtClaimList(['aud'], vs) }));
      case 'request.auth.presenter':
        return field('principal', null, (vs) => ({ metadata: jwtClaimList(['azp'], vs) }));
      case 'destination.namespace':
        throw new RuleError(badAt, `attribute ${key} is replaced by the metadata.namespace`);
      case 'destination.name':
      case 'destination.user':
        throw new RuleError(badAt, `deprecated attribute ${key}: only supported in v1alpha1`);
    }
    if (key.startsWith('request.headers')) {
      const name = mapKey(key, 'request.headers', badAt);
      return field('principal', (v) => ({ header: headerMatcher(name, v, false) }));
    }
    if (key.startsWith('request.experimental.inline.headers')) {
      const name = mapKey(key, 'request.experimental.inline.headers', badAt);
      return field('principal', (v) => ({ header: inlineHeaderMatcher(name, v) }));
    }
    if (key.startsWith('request.auth.claims')) {
      mapKey(key, 'request.auth.claims', badAt);
      const claims = claimPath(key.slice('request.auth.claims'.length));
      return field('principal', null, (vs) => ({ metadata: jwtClaimList(claims, vs) }));
    }
    if (key.startsWith('experimental.envoy.filters.')) {
      const parts = key.slice('experimental.'.length).replace(/\]$/, '').split('[');
      if (parts.length < 2 || !key.endsWith(']')) throw new RuleError(badAt, `bad key (${key}): should have format a[b]`);
      const filter = parts[0]!;
      const metaKey = parts.slice(1).join('[');
      this.#opts.report({
        policy: this.#policy,
        severity: 'warning',
        path: at,
        message: `key ${key} reads the dynamic metadata of ${filter}, which Remora does not run: the condition never matches (as in Envoy without that filter)`,
      });
      return field('permission', null, (vs) => ({ metadata: envoyFilterMetadata(filter, metaKey, vs) }));
    }
    if (key.startsWith('destination.labels')) throw new RuleError(badAt, `attribute ${key} is replaced by the workload selector`);
    throw new RuleError(badAt, `unknown attribute: ${key}`);
  }
}

/** `and` of the fields' matchers (each field: values ORed, notValues ORed and negated); `fallback` when empty. */
function andOf(fields: readonly Field[], fallback: PermissionJson | PrincipalJson): (PermissionJson | PrincipalJson)[] {
  const and: (PermissionJson | PrincipalJson)[] = [];
  for (const f of fields) {
    const perm = f.kind === 'permission';
    const or = (ms: (PermissionJson | PrincipalJson)[]) => (perm ? { orRules: { rules: ms as PermissionJson[] } } : { orIds: { ids: ms as PrincipalJson[] } });
    const not = (m: PermissionJson | PrincipalJson) => (perm ? { notRule: m as PermissionJson } : { notId: m as PrincipalJson });
    if (f.all !== null) {
      if (f.values.length > 0) and.push(f.all(f.values, f.at));
      if (f.notValues.length > 0) and.push(not(f.all(f.notValues, f.notAt)));
    } else if (f.one !== null) {
      const one = f.one;
      if (f.values.length > 0) and.push(or(f.values.map((v, i) => one(v, [...f.at, i]))));
      if (f.notValues.length > 0) and.push(not(or(f.notValues.map((v, i) => one(v, [...f.notAt, i])))));
    }
  }
  if (and.length === 0) and.push(fallback);
  return and;
}

function nonEmpty(values: readonly string[], at: Path): readonly string[] {
  const i = values.indexOf('');
  if (i >= 0) throw new RuleError([...at, i], 'empty value not allowed');
  return values;
}

/** istiod's StringMatcherWithPrefix: `*` any non-empty, `*x` suffix, `x*` prefix, else exact. */
export function stringMatcher(v: string, prefix = ''): StringMatcherJson {
  if (v === '*') return { safeRegex: { regex: '.+' } };
  if (v.startsWith('*')) return prefix === '' ? { suffix: v.slice(1) } : { safeRegex: { regex: `${prefix}.*${quoteMeta(v.slice(1))}` } };
  if (v.endsWith('*')) return { prefix: prefix + v.slice(0, -1) };
  return { exact: prefix + v };
}

function withSpiffe(v: string): StringMatcherJson {
  return stringMatcher(v, 'spiffe://');
}

function authenticated(principalName: StringMatcherJson): PrincipalJson {
  return { authenticated: { principalName } };
}

/** istiod's HeaderMatcher / HostMatcher (hosts ignore case). */
function headerMatcher(name: string, v: string, ignoreCase: boolean): HeaderMatcherJson {
  if (v === '*') return { name, presentMatch: true };
  const ic = ignoreCase ? { ignoreCase: true } : {};
  if (v.startsWith('*')) return { name, stringMatch: { suffix: v.slice(1), ...ic } };
  if (v.endsWith('*')) return { name, stringMatch: { prefix: v.slice(0, -1), ...ic } };
  return { name, stringMatch: { exact: v, ...ic } };
}

/**
 * `request.experimental.inline.headers[name]`: a value matches any one of the header's
 * comma-separated values, as a regex over the whole header.
 */
function inlineHeaderMatcher(name: string, v: string): HeaderMatcherJson {
  if (v === '*') return { name, presentMatch: true };
  const one = v.startsWith('*') ? `[^,]*${quoteMeta(v.slice(1))}` : v.endsWith('*') ? `${quoteMeta(v.slice(0, -1))}[^,]*` : quoteMeta(v);
  return { name, stringMatch: { safeRegex: { regex: `(?:[^,]*,)*${one}(?:,.*)?` } } };
}

function namespace(v: string): PrincipalJson {
  return authenticated({ safeRegex: { regex: `.*/ns/${v.split('*').map(quoteMeta).join('.*')}/.*` } });
}

function trustDomain(v: string): PrincipalJson {
  if (v === '*') return authenticated({ prefix: 'spiffe://' });
  if (!v.includes('*')) return authenticated({ prefix: `spiffe://${v}/` });
  const star = v.indexOf('*');
  return authenticated({ safeRegex: { regex: `spiffe://${quoteMeta(v.slice(0, star))}[^/]*${quoteMeta(v.slice(star + 1))}/.*` } });
}

/** istiod's requestPrincipalGenerator: issuer and subject split at the last `/`, as metadata on the JWT payload. */
function requestPrincipals(values: readonly string[]): PrincipalJson {
  const any: StringMatcherJson = { safeRegex: { regex: '.+' } };
  const or = values.map((value): PrincipalJson => {
    const idx = value.lastIndexOf('/');
    const found = idx >= 0;
    const iss = found ? value.slice(0, idx) : value;
    const sub = found ? value.slice(idx + 1) : '';
    let mi: StringMatcherJson;
    let ms: StringMatcherJson;
    if (value === '*') {
      mi = any;
      ms = any;
    } else if (value.startsWith('*')) {
      if (found) {
        mi = iss === '*' ? any : { suffix: iss.slice(1) };
        ms = { exact: sub };
      } else {
        mi = any;
        ms = { suffix: value.slice(1) };
      }
    } else if (value.endsWith('*')) {
      if (found) {
        mi = { exact: iss };
        ms = sub === '*' ? any : { prefix: sub.slice(0, -1) };
      } else {
        mi = { prefix: value.slice(0, -1) };
        ms = any;
      }
    } else {
      mi = { exact: iss };
      ms = { exact: sub };
    }
    return { andIds: { ids: [{ metadata: jwtClaim('iss', mi) }, { metadata: jwtClaim('sub', ms) }] } };
  });
  return or.length === 1 ? or[0]! : { orIds: { ids: or } };
}

function jwtClaim(claim: string, m: StringMatcherJson): MetadataMatcherJson {
  return { filter: JWT_METADATA_FILTER, path: [{ key: JWT_METADATA_PAYLOAD }, { key: claim }], value: { stringMatch: m } };
}

/** istiod's MetadataListValueMatcher (extended JWT): the claim is a list holding a match, or a matching value. */
function jwtClaimList(claims: readonly string[], values: readonly string[]): MetadataMatcherJson {
  const value = orValues(values.map((v) => ({ stringMatch: stringMatcher(v) })));
  return {
    filter: JWT_METADATA_FILTER,
    path: [JWT_METADATA_PAYLOAD, ...claims].map((key) => ({ key })),
    value: { orMatch: { valueMatchers: [{ listMatch: { oneOf: value } }, value] } },
  };
}

function orValues(ms: ValueMatcherJson[]): ValueMatcherJson {
  return ms.length === 1 ? ms[0]! : { orMatch: { valueMatchers: ms } };
}

/** istiod's envoyFilterGenerator (extended): `[v]` one element of a list, else the value. */
function envoyFilterMetadata(filter: string, key: string, values: readonly string[]): MetadataMatcherJson {
  const ms = values.map((v): ValueMatcherJson =>
    v.startsWith('[') && v.endsWith(']') ? { listMatch: { oneOf: { stringMatch: stringMatcher(v.slice(1, -1)) } } } : { stringMatch: stringMatcher(v) },
  );
  return { filter, path: [{ key }], value: orValues(ms) };
}

/** A path value: uri_template for `{*}`/`{**}`, else url_path (istiod's pathGenerator). */
function path(v: string, at: Path): PermissionJson {
  const problem = pathTemplateProblem(v);
  if (problem !== null) throw new RuleError(at, problem);
  if (v.includes('{*}') || v.includes('{**}')) {
    return {
      uriTemplate: {
        name: 'uri-template',
        // An Any's JSON carries the message's fields beside `@type`, which AnyJson does not spell out.
        typedConfig: {
          '@type': 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig',
          pathTemplate: v.replaceAll('{**}', '**').replaceAll('{*}', '*'),
        } as AnyJson,
      },
    };
  }
  return { urlPath: { path: stringMatcher(v) } };
}

/** RFC 3986 pchar, what Envoy's uri_template accepts in a literal. */
const VALID_LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

/** istiod's CheckValidPathTemplate and Envoy's template parser: null when the path is fine. */
function pathTemplateProblem(path: string): string | null {
  const hasTemplate = path.includes('{*}') || path.includes('{**}');
  const globs = path.replace(/^\/+|\/+$/g, '').split('/');
  let sawAny = false;
  for (const glob of globs) {
    if ((glob === '{*}' || glob === '{**}') && sawAny) return `invalid or unsupported path ${path}: {**} is not the last operator`;
    if (glob === '{*}') continue;
    if (glob === '{**}') {
      sawAny = true;
      continue;
    }
    if (/[{}]/.test(glob)) return `invalid or unsupported path ${path}: contains '{' or '}' beyond a supported path template`;
    if (hasTemplate && !VALID_LITERAL.test(glob)) return `invalid or unsupported path ${path}: contains segment ${glob} with invalid string literal`;
  }
  if (!hasTemplate) return null;
  if (!path.startsWith('/')) return `invalid or unsupported path ${path}: a path template must start with /`;
  const segments = path.slice(1).split('/');
  if (segments.some((s, i) => s === '' && i !== segments.length - 1)) return `invalid or unsupported path ${path}: empty path segment`;
  return null;
}

function port(v: string, at: Path): number {
  // strconv.ParseUint(v, 10, 32), then at most 65535 (istiod's ValidatePorts).
  if (!/^[0-9]{1,10}$/.test(v) || Number(v) > 65535) throw new RuleError(at, `bad port (${v})`);
  return Number(v);
}

/** istiod's AddrStrToCidrRange: an address is a /32 or /128. */
function cidr(v: string, at: Path): { addressPrefix: string; prefixLen: number } {
  const slash = v.indexOf('/');
  const addr = slash < 0 ? v : v.slice(0, slash);
  const bad = () => new RuleError(at, slash < 0 ? `bad IP address (${v})` : `bad CIDR range (${v})`);
  if (addr.includes('%') || !isIPAddress(addr) || /(^|[.:])0[0-9]/.test(addr) && !addr.includes(':')) throw bad();
  const max = addr.includes(':') ? 128 : 32;
  if (slash < 0) return { addressPrefix: addr, prefixLen: max };
  const len = v.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(len) || Number(len) > max || checkIPSubnet(v) !== null) throw bad();
  return { addressPrefix: addr, prefixLen: Number(len) };
}

/** `prefix[name]` → name (istiod's validateMapKey + extractNameInBrackets). */
function mapKey(key: string, prefix: string, at: Path): string {
  const rest = key.slice(prefix.length);
  const open = key.indexOf('[');
  if (!key.endsWith(']') || open <= 0 || open >= key.length - 2 || !rest.startsWith('[')) {
    throw new RuleError(at, `bad key (${key}): should have format a[b]`);
  }
  return rest.slice(1, -1);
}

/** `[a][b]` → [a, b]; a single bracketed name may contain anything but brackets (istiod's extractNameInNestedBrackets). */
export function claimPath(s: string): string[] {
  const out: string[] = [];
  let begin = 0;
  while (begin < s.length) {
    let end = -1;
    if (s[begin] === '[') {
      for (let i = begin + 1; i < s.length; i++) {
        if (s[i] === '[') break;
        if (s[i] === ']') {
          end = i;
          break;
        }
      }
    }
    if (end < 0) return [s.slice(1, -1)];
    out.push(s.slice(begin + 1, end));
    begin = end + 1;
  }
  return out;
}

/** Go's regexp.QuoteMeta. */
function quoteMeta(s: string): string {
  return s.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');
}

/**
 * istiod's trustdomain.Bundle.ReplaceTrustDomainAliases on `principals`/`source.principal`:
 * a `<td>/ns/<ns>/sa/<sa>` principal whose trust domain is the mesh's, an alias or
 * `cluster.local` stands for the same identity in every trust domain of the bundle.
 */
export function replaceTrustDomainAliases(principals: readonly string[], trustDomains: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of principals) {
    const parts = p.split('/');
    if (parts.length !== 5 || parts[0] === '*') {
      out.push(p);
      continue;
    }
    const td = parts[0]!;
    if (!stringMatch(td, trustDomains) && td !== 'cluster.local') {
      out.push(p);
      continue;
    }
    const replaced: string[] = [];
    for (const t of trustDomains) {
      const np = suffixMatch(t, td) ? p : `${t}/${parts.slice(1).join('/')}`;
      if (!replaced.includes(np)) replaced.push(np);
    }
    out.push(...replaced);
  }
  return out;
}

/** istiod's trustdomain stringMatch: equal, `*`, or a prefix/suffix wildcard either way. */
function stringMatch(a: string, list: readonly string[]): boolean {
  return list.some((s) => a === s || s === '*' || prefixMatch(a, s) || prefixMatch(s, a) || suffixMatch(a, s) || suffixMatch(s, a));
}

function prefixMatch(a: string, pattern: string): boolean {
  return pattern.endsWith('*') && a.startsWith(pattern.slice(0, -1));
}

function suffixMatch(a: string, pattern: string): boolean {
  return pattern.startsWith('*') && a.endsWith(pattern.slice(1));
}

/** istiod's ExpandTrustDomainAliases on `trustDomains`/`source.trustDomain`. */
export function expandTrustDomainAliases(values: readonly string[], trustDomains: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) for (const x of trustDomains.includes(v) ? trustDomains : [v]) if (!out.includes(x)) out.push(x);
  return out;
}
