/**
 * One AuthorizationPolicy compiled into the rules Envoy's RBAC filter would hold after istiod
 * built them (pilot/pkg/security/authz/builder + model): one rule per `rules[i]`, named
 * `ns[<ns>]-policy[<name>]-rule[<i>]`. The policy is first checked the way istiod's
 * validation webhook checks it (pkg/config/validation ValidateAuthorizationPolicy and
 * pkg/config/security), so a policy Kubernetes would refuse is refused here, with its path.
 */
import { Regex, type AuthzPolicy } from '@remora/config';
import type { FilterCompileContext, FilterRequest } from '../filter.ts';
import { type CidrRange, parseCidr } from './authz-cidr.ts';
import {
  type AttributeMatcher,
  AudienceMatcher,
  ClaimMatcher,
  escapeRegExp,
  HeaderMatcher,
  HostMatcher,
  InlineHeaderMatcher,
  IpMatcher,
  type IpSource,
  type IssuerSubject,
  MethodMatcher,
  PathMatcher,
  PeerNamespaceMatcher,
  PeerPrincipalMatcher,
  PortMatcher,
  PresenterMatcher,
  RequestPrincipalMatcher,
  ServiceAccountMatcher,
  SniMatcher,
} from './authz-matcher.ts';
import { StringMatchKind, StringPattern } from './authz-string.ts';

/** A field or condition: some of `values` match (when set) and none of `notValues` do (when set). */
export class AuthzCondition {
  readonly #values: AttributeMatcher | null;
  readonly #notValues: AttributeMatcher | null;

  constructor(values: AttributeMatcher | null, notValues: AttributeMatcher | null) {
    this.#values = values;
    this.#notValues = notValues;
  }

  matches(req: FilterRequest, pathEnd: number): boolean {
    if (this.#values !== null && !this.#values.matches(req, pathEnd)) return false;
    return this.#notValues === null || !this.#notValues.matches(req, pathEnd);
  }
}

/** All of the conditions hold (an empty list always holds). */
function allMatch(conditions: readonly AuthzCondition[], req: FilterRequest, pathEnd: number): boolean {
  for (let i = 0; i < conditions.length; i++) if (!conditions[i]!.matches(req, pathEnd)) return false;
  return true;
}

/** One rule of a policy: any source, any operation, all conditions (absent sections match all). */
export class AuthzRule {
  /** Envoy's policy name, as istiod writes it: `ns[<ns>]-policy[<name>]-rule[<i>]`. */
  readonly id: string;
  /** The local reply details when this rule denies: `rbac_access_denied_matched_policy[<id>]`. */
  readonly details: string;
  /** `from`: each source's fields, ANDed; null when the rule has no `from` (any source). */
  readonly #from: readonly (readonly AuthzCondition[])[] | null;
  readonly #to: readonly (readonly AuthzCondition[])[] | null;
  readonly #when: readonly AuthzCondition[];

  constructor(
    id: string,
    from: readonly (readonly AuthzCondition[])[] | null,
    to: readonly (readonly AuthzCondition[])[] | null,
    when: readonly AuthzCondition[],
  ) {
    this.id = id;
    this.details = deniedDetails(id);
    this.#from = from;
    this.#to = to;
    this.#when = when;
  }

  matches(req: FilterRequest, pathEnd: number): boolean {
    return anyAll(this.#to, req, pathEnd) && allMatch(this.#when, req, pathEnd) && anyAll(this.#from, req, pathEnd);
  }
}

function anyAll(sets: readonly (readonly AuthzCondition[])[] | null, req: FilterRequest, pathEnd: number): boolean {
  if (sets === null) return true;
  for (let i = 0; i < sets.length; i++) if (allMatch(sets[i]!, req, pathEnd)) return true;
  return false;
}

/** Envoy RBAC's `responseDetail`: whitespace in the policy id becomes `_`. */
export function deniedDetails(policyId: string): string {
  return `rbac_access_denied_matched_policy[${policyId.replace(/\s/g, '_')}]`;
}

// --- The resource as written (already schema-valid) --------------------------------------------

interface RawSource {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
}

interface RawOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

interface RawCondition {
  key?: string;
  values?: string[];
  notValues?: string[];
}

interface RawRule {
  from?: ({ source?: RawSource | null } | null)[] | null;
  to?: ({ operation?: RawOperation | null } | null)[] | null;
  when?: (RawCondition | null)[] | null;
}

/** What compiling a policy needs besides the policy. */
export interface PolicyCompileOptions {
  /** The mesh trust domain: principals written with `cluster.local` are rewritten to it, as istiod does. */
  readonly trustDomain: string;
  readonly context: FilterCompileContext;
}

/** Compiles every rule of a policy; throws an Error naming the policy and the field on an invalid one. */
export function compilePolicy(policy: AuthzPolicy, opts: PolicyCompileOptions): AuthzRule[] {
  const slash = policy.name.indexOf('/');
  const namespace = slash < 0 ? '' : policy.name.slice(0, slash);
  const name = slash < 0 ? policy.name : policy.name.slice(slash + 1);
  const c = new PolicyCompiler(policy, namespace, opts);
  return policy.rules.map((rule, i) => c.rule(rule, i, `ns[${namespace}]-policy[${name}]-rule[${i}]`));
}

/** Compiles one policy's rules; carries what messages and defaults need. */
class PolicyCompiler {
  readonly #policy: AuthzPolicy;
  readonly #namespace: string;
  readonly #opts: PolicyCompileOptions;

  constructor(policy: AuthzPolicy, namespace: string, opts: PolicyCompileOptions) {
    this.#policy = policy;
    this.#namespace = namespace;
    this.#opts = opts;
  }

  #fail(path: string, message: string): never {
    throw new Error(`AuthorizationPolicy ${this.#policy.name}: ${path}: ${message}`);
  }

  rule(raw: unknown, i: number, id: string): AuthzRule {
    const at = `rules[${i}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) this.#fail(at, '`rule` must not be nil');
    const r = raw as RawRule;
    let from: AuthzCondition[][] | null = null;
    if (r.from !== undefined && r.from !== null) {
      if (r.from.length === 0) this.#fail(`${at}.from`, '`from` must not be empty');
      from = r.from.map((f, j) => {
        const src = f?.source;
        if (src === undefined || src === null) this.#fail(`${at}.from[${j}]`, '`from.source` must not be nil');
        return this.#source(src, `${at}.from[${j}].source`);
      });
    }
    let to: AuthzCondition[][] | null = null;
    if (r.to !== undefined && r.to !== null) {
      if (r.to.length === 0) this.#fail(`${at}.to`, '`to` must not be empty');
      to = r.to.map((t, j) => {
        const op = t?.operation;
        if (op === undefined || op === null) this.#fail(`${at}.to[${j}]`, '`to.operation` must not be nil');
        return this.#operation(op, `${at}.to[${j}].operation`);
      });
    }
    const when: AuthzCondition[] = [];
    (r.when ?? []).forEach((cond, j) => {
      const compiled = this.#condition(cond, `${at}.when[${j}]`);
      if (compiled !== null) when.push(compiled);
    });
    return new AuthzRule(id, from, to, when);
  }

  #source(s: RawSource, at: string): AuthzCondition[] {
    const n = (v: string[] | undefined) => v?.length ?? 0;
    if (n(s.principals) + n(s.notPrincipals) + n(s.namespaces) + n(s.notNamespaces) > 0 && n(s.serviceAccounts) + n(s.notServiceAccounts) > 0) {
      this.#fail(at, 'cannot set serviceAccounts with namespaces or principals');
    }
    const out: AuthzCondition[] = [];
    // Cheap fields first: a source fails as soon as one field does.
    this.#field(out, at, 'ipBlocks', s.ipBlocks, s.notIpBlocks, (v, p) => this.#ip('source', v, p));
    this.#field(out, at, 'remoteIpBlocks', s.remoteIpBlocks, s.notRemoteIpBlocks, (v, p) => this.#ip('remote', v, p));
    this.#field(out, at, 'principals', s.principals, s.notPrincipals, (v) => this.#peerPrincipal(v));
    this.#field(out, at, 'namespaces', s.namespaces, s.notNamespaces, (v) => new PeerNamespaceMatcher(v));
    this.#field(out, at, 'serviceAccounts', s.serviceAccounts, s.notServiceAccounts, (v, p) => this.#serviceAccounts(v, p));
    this.#field(out, at, 'requestPrincipals', s.requestPrincipals, s.notRequestPrincipals, (v) => requestPrincipals(v));
    if (out.length === 0) this.#fail(at, '`from.source` must not be empty');
    return out;
  }

  #operation(o: RawOperation, at: string): AuthzCondition[] {
    const out: AuthzCondition[] = [];
    this.#field(out, at, 'ports', o.ports, o.notPorts, (v, p) => new PortMatcher(this.#ports(v, p)));
    this.#field(out, at, 'methods', o.methods, o.notMethods, (v) => new MethodMatcher(patterns(v, 'present')));
    this.#field(out, at, 'hosts', o.hosts, o.notHosts, (v) => new HostMatcher(patterns(v, 'present', true)));
    this.#field(out, at, 'paths', o.paths, o.notPaths, (v, p) => this.#paths(v, p));
    if (out.length === 0) this.#fail(at, '`to.operation` must not be empty');
    return out;
  }

  /** Adds the condition for a field and its `not` twin, when either is set (no empty strings allowed). */
  #field(
    out: AuthzCondition[],
    at: string,
    field: string,
    values: string[] | undefined,
    notValues: string[] | undefined,
    build: (values: string[], path: string) => AttributeMatcher,
  ): void {
    const notField = `not${field[0]!.toUpperCase()}${field.slice(1)}`;
    const pos = values !== undefined && values.length > 0 ? build(this.#nonEmpty(values, `${at}.${field}`), `${at}.${field}`) : null;
    const neg = notValues !== undefined && notValues.length > 0 ? build(this.#nonEmpty(notValues, `${at}.${notField}`), `${at}.${notField}`) : null;
    if (pos !== null || neg !== null) out.push(new AuthzCondition(pos, neg));
  }

  #nonEmpty(values: string[], at: string): string[] {
    values.forEach((v, i) => {
      if (v === '') this.#fail(`${at}[${i}]`, 'empty value not allowed');
    });
    return values;
  }

  #ip(which: IpSource, values: string[], at: string): IpMatcher {
    const ranges: CidrRange[] = values.map((v, i) => {
      try {
        return parseCidr(v);
      } catch (err) {
        return this.#fail(`${at}[${i}]`, (err as Error).message);
      }
    });
    return new IpMatcher(which, ranges);
  }

  #ports(values: string[], at: string): number[] {
    return values.map((v, i) => {
      // strconv.ParseUint(v, 10, 32), then at most 65535 (istiod's ValidatePorts).
      if (!/^[0-9]{1,10}$/.test(v) || Number(v) > 65535) this.#fail(`${at}[${i}]`, `bad port (${v})`);
      return Number(v);
    });
  }

  /** Principals with istiod's trust-domain rewrite: `cluster.local/...` stands for the mesh's trust domain. */
  #peerPrincipal(values: string[]): PeerPrincipalMatcher {
    return new PeerPrincipalMatcher(values.map((v) => StringPattern.of(migrateTrustDomain(v, this.#opts.trustDomain), 'non-empty')));
  }

  #serviceAccounts(values: string[], at: string): ServiceAccountMatcher {
    if (values.length > 16) this.#fail(at, 'may not have more than 16 values');
    values.forEach((v, i) => {
      const p = `${at}[${i}]`;
      if (v.includes('*')) this.#fail(p, 'wildcard not allowed');
      const parts = v.split('/');
      if (parts.length > 2 || parts.some((x) => x === '')) this.#fail(p, `expected format 'serviceAccount' or 'namespace/serviceAccount', found "${v}"`);
      if (v.length > 320) this.#fail(p, 'value cannot exceed 320 characters');
    });
    return new ServiceAccountMatcher(values, this.#namespace);
  }

  #paths(values: string[], at: string): PathMatcher {
    const plain: StringPattern[] = [];
    const templates: Regex[] = [];
    values.forEach((v, i) => {
      const t = pathTemplateRegex(v);
      if (typeof t === 'string') this.#fail(`${at}[${i}]`, t);
      if (t === null) plain.push(StringPattern.of(v, 'non-empty'));
      else templates.push(t);
    });
    return new PathMatcher(plain, templates);
  }

  /** A `when` condition; null when it is ignored (Envoy metadata keys). */
  #condition(raw: RawCondition | null, at: string): AuthzCondition | null {
    const key = raw?.key ?? '';
    if (key === '') this.#fail(at, '`key` must not be empty');
    const values = raw?.values ?? [];
    const notValues = raw?.notValues ?? [];
    if (values.length === 0 && notValues.length === 0) this.#fail(at, `at least one of \`values\` or \`notValues\` must be set for key ${key}`);
    if (key.startsWith('experimental.envoy.filters.')) {
      this.#opts.context.warn(
        `AuthorizationPolicy ${this.#policy.name}: ${at}: key ${key} reads Envoy filter metadata, which Remora does not have; the condition is ignored`,
      );
      return null;
    }
    const build = (vs: string[], path: string): AttributeMatcher => this.#attribute(key, this.#nonEmpty(vs, path), path);
    return new AuthzCondition(
      values.length > 0 ? build(values, `${at}.values`) : null,
      notValues.length > 0 ? build(notValues, `${at}.notValues`) : null,
    );
  }

  /** The matcher for one `when` key (istiod's model.New switch, and ValidateAttribute's errors). */
  #attribute(key: string, values: string[], at: string): AttributeMatcher {
    switch (key) {
      case 'source.ip':
        return this.#ip('source', values, at);
      case 'remote.ip':
        return this.#ip('remote', values, at);
      case 'destination.ip':
        return this.#ip('destination', values, at);
      case 'destination.port':
        return new PortMatcher(this.#ports(values, at));
      case 'source.namespace':
        return new PeerNamespaceMatcher(values);
      case 'source.serviceAccount':
        return this.#serviceAccounts(values, at);
      case 'source.principal':
        return this.#peerPrincipal(values);
      case 'request.auth.principal':
        return requestPrincipals(values);
      case 'request.auth.audiences':
        return new AudienceMatcher(patterns(values, 'non-empty'));
      case 'request.auth.presenter':
        return new PresenterMatcher(patterns(values, 'non-empty'));
      case 'connection.sni':
        return new SniMatcher(patterns(values, 'non-empty'));
      case 'destination.namespace':
        return this.#fail(at, `attribute ${key} is replaced by the metadata.namespace`);
      case 'destination.name':
      case 'destination.user':
        return this.#fail(at, `deprecated attribute ${key}: only supported in v1alpha1`);
    }
    if (key.startsWith('request.headers')) {
      return new HeaderMatcher(this.#mapKey(key, 'request.headers', at), patterns(values, 'present'));
    }
    if (key.startsWith('request.experimental.inline.headers')) {
      return new InlineHeaderMatcher(this.#mapKey(key, 'request.experimental.inline.headers', at), patterns(values, 'present'));
    }
    if (key.startsWith('request.auth.claims')) {
      this.#mapKey(key, 'request.auth.claims', at);
      return new ClaimMatcher(claimPath(key.slice('request.auth.claims'.length)), patterns(values, 'non-empty'));
    }
    if (key.startsWith('destination.labels')) return this.#fail(at, `attribute ${key} is replaced by the workload selector`);
    return this.#fail(at, `unknown attribute: ${key}`);
  }

  /** `prefix[name]` → name (istiod's validateMapKey + extractNameInBrackets). */
  #mapKey(key: string, prefix: string, at: string): string {
    const rest = key.slice(prefix.length);
    const open = key.indexOf('[');
    if (!key.endsWith(']') || open <= 0 || open >= key.length - 2 || !rest.startsWith('[')) {
      this.#fail(at, `bad key (${key}): should have format a[b]`);
    }
    return rest.slice(1, -1);
  }
}

/** Compiles values with Istio's wildcards. */
function patterns(values: readonly string[], star: 'non-empty' | 'present', ignoreCase = false): StringPattern[] {
  return values.map((v) => StringPattern.of(v, star, ignoreCase));
}

/**
 * istiod's trust-domain migration (trustdomain.Bundle.ReplaceTrustDomainAliases) for one trust
 * domain and no aliases: a `<td>/ns/<ns>/sa/<sa>` principal written with `cluster.local`
 * means the mesh's trust domain; `*` trust domains and other shapes stay as written.
 */
export function migrateTrustDomain(principal: string, trustDomain: string): string {
  const parts = principal.split('/');
  if (parts.length !== 5 || parts[0] !== 'cluster.local') return principal;
  parts[0] = trustDomain;
  return parts.join('/');
}

/**
 * `requestPrincipals` values split as istiod's extended generator splits them: at the last `/`
 * into issuer and subject, wildcards applying to the side they stand on; `*` alone needs both.
 */
function requestPrincipals(values: readonly string[]): RequestPrincipalMatcher {
  const nonEmpty = new StringPattern(StringMatchKind.NonEmpty, '');
  const exact = (v: string) => new StringPattern(StringMatchKind.Exact, v);
  const parsed: IssuerSubject[] = values.map((value) => {
    const idx = value.lastIndexOf('/');
    const found = idx >= 0;
    const iss = found ? value.slice(0, idx) : value;
    const sub = found ? value.slice(idx + 1) : '';
    if (value === '*') return { issuer: nonEmpty, subject: nonEmpty };
    if (value.startsWith('*')) {
      if (found) return { issuer: iss === '*' ? nonEmpty : new StringPattern(StringMatchKind.Suffix, iss.slice(1)), subject: exact(sub) };
      return { issuer: nonEmpty, subject: new StringPattern(StringMatchKind.Suffix, value.slice(1)) };
    }
    if (value.endsWith('*')) {
      if (found) return { issuer: exact(iss), subject: sub === '*' ? nonEmpty : new StringPattern(StringMatchKind.Prefix, sub.slice(0, -1)) };
      return { issuer: new StringPattern(StringMatchKind.Prefix, value.slice(0, -1)), subject: nonEmpty };
    }
    return { issuer: exact(iss), subject: exact(sub) };
  });
  return new RequestPrincipalMatcher(parsed);
}

/** `[a][b]` → [a, b]; a single bracketed name may contain anything but brackets (istiod's extractNameInNestedBrackets). */
export function claimPath(s: string): string[] {
  const path: string[] = [];
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
    path.push(s.slice(begin + 1, end));
    begin = end + 1;
  }
  return path;
}

/** RFC 3986 pchar, what Envoy's uri_template accepts in a literal and what `{*}` matches. */
const PCHAR = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";
const VALID_LITERAL = new RegExp(`^[${PCHAR}]+$`);

/**
 * A path with Istio's templates → the regex Envoy's uri_template matcher uses: `{*}` one path
 * segment (`[pchar]+`), `{**}` any text including `/` (`[pchar/]*`), literals as written,
 * segments joined by `/`; the regex stops at the query string. null when the path has no
 * template; a message when it is invalid (istiod's CheckValidPathTemplate, Envoy's parser).
 */
export function pathTemplateRegex(path: string): Regex | null | string {
  const hasTemplate = path.includes('{*}') || path.includes('{**}');
  // istiod's check runs on every path: braces outside a whole `{*}`/`{**}` segment are refused.
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
  const parts = segments.map((seg, i) => {
    if (seg === '{*}') return `[${PCHAR}]+`;
    if (seg === '{**}') return `[${PCHAR}/]*`;
    // Only a single trailing slash may leave an empty segment (Envoy refuses `//`).
    if (seg === '' && i !== segments.length - 1) return null;
    return escapeRegExp(seg);
  });
  if (parts.includes(null)) return `invalid or unsupported path ${path}: empty path segment`;
  // RE2 has no lookahead: the whole path matches, with any query or fragment after the template.
  return new Regex(`/${parts.join('/')}(?:[?#](?s:.*))?`);
}
