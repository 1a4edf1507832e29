// Policies, identities and a way to run a request through a set of AuthorizationPolicies, for
// the RBAC filter's unit tests: the policies are built into Envoy RBAC filters the way the
// translator builds them (istiod's authz builder), and those filters run in order.
import { buildRbacFilters, type AuthzIssue, type AuthzPolicyInput } from '@remora/config';
import { FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type PeerIdentity, type RequestAuth } from '@remora/filters';
import { rbacFactory } from '@remora/filters/internal';
import { FakeRequest, RecordingCallbacks, storeContext, type ReqInit } from '@remora/filters/testing';

export type { ReqInit };

/** An AuthorizationPolicy: `<namespace>/<name>`, its action and its `rules` (undefined: the spec had none). */
export interface AuthzPolicy {
  readonly name: string;
  readonly action: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  readonly rules: readonly unknown[] | undefined;
  readonly provider?: string;
  readonly dryRun?: boolean;
}

/** The authorization tests' request: httpbin in namespace foo, as in Istio's examples. */
const DEFAULTS: ReqInit = { authority: 'httpbin.foo', sourceIp: '10.0.0.1', destinationIp: '10.0.0.100', destinationPort: 8000 };

export function policy(name: string, action: AuthzPolicy['action'], rules?: unknown[]): AuthzPolicy {
  return { name, action, rules };
}

/** The RBAC filters of one chain, run in order as the listener runs them. */
class RbacChain implements HttpFilter {
  readonly #filters: readonly HttpFilter[];
  constructor(filters: readonly HttpFilter[]) {
    this.#filters = filters;
  }
  onRequest(req: FilterRequest, cb: FilterCallbacks): FilterStatus {
    for (const f of this.#filters) if (f.onRequest(req, cb) !== FilterStatus.Continue) return FilterStatus.StopIteration;
    return FilterStatus.Continue;
  }
}

const where = (i: AuthzIssue) =>
  `AuthorizationPolicy ${i.policy.namespace}/${i.policy.name}: ${i.path.map((p, n) => (typeof p === 'number' ? `[${p}]` : n === 0 ? p : `.${p}`)).join('')}${i.path.length > 0 ? ': ' : ''}${i.message}`;

/**
 * Builds the policies into RBAC filters (trust domain `cluster.local` unless given) and
 * compiles them; an error the translator would report throws, naming the policy and field.
 */
export function compile(policies: AuthzPolicy[], trustDomain = 'cluster.local') {
  const context = storeContext();
  const inputs: AuthzPolicyInput[] = [];
  for (const p of policies) {
    if (p.action === 'CUSTOM') {
      context.warn(`AuthorizationPolicy ${p.name}: CUSTOM (external authorization) is not supported yet; this policy is ignored`);
      continue;
    }
    const [namespace = '', name = ''] = p.name.split('/');
    inputs.push({ namespace, name, action: p.action, rules: p.rules, dryRun: p.dryRun ?? false });
  }
  const errors: string[] = [];
  const rbac = buildRbacFilters(inputs, {
    trustDomains: [trustDomain],
    report: (i) => (i.severity === 'error' ? errors.push(where(i)) : context.warn(where(i))),
  });
  if (errors.length > 0) throw new Error(errors.join('; '));
  const compiled = rbac.map((c) => rbacFactory.compile(c, context));
  const chain = new RbacChain(compiled.map((c) => c.create()));
  return { config: { name: rbacFactory.name, create: () => chain }, rbac, compiled, warnings: context.warnings };
}

/** Runs one request: 'allow', or the details of the 403 (after checking the reply is Envoy's). */
export function decide(policies: AuthzPolicy[], init: ReqInit, trustDomain?: string): string {
  const { config } = compile(policies, trustDomain);
  return run(config.create(), init);
}

export function run(filter: HttpFilter, init: ReqInit): string {
  const cb = new RecordingCallbacks();
  const status = filter.onRequest(new FakeRequest({ ...DEFAULTS, ...init }), cb);
  if (status === FilterStatus.Continue) {
    if (cb.reply !== null) throw new Error('continued after a local reply');
    return 'allow';
  }
  const r = cb.reply;
  if (r === null) throw new Error('stopped without a local reply');
  if (r.status !== 403 || r.body !== 'RBAC: access denied' || r.flag !== null) throw new Error(`unexpected reply ${JSON.stringify(r)}`);
  return r.details;
}

/** Envoy's details for a denial by a DENY rule, or by an ALLOW filter nothing matched. */
export const denied = (ns: string, name: string, rule = 0) => `rbac_access_denied_matched_policy[ns[${ns}]-policy[${name}]-rule[${rule}]]`;
export const DENIED_NONE = 'rbac_access_denied_matched_policy[none]';

export const peer = (ns: string, sa: string, td = 'cluster.local'): PeerIdentity => ({ principal: `${td}/ns/${ns}/sa/${sa}`, namespace: ns });

export function jwt(iss: string, sub: string, claims: Record<string, unknown> = {}, audiences: string[] = [], presenter = ''): RequestAuth {
  return { principal: `${iss}/${sub}`, issuer: iss, subject: sub, audiences, presenter, claims: { iss, sub, ...claims } };
}
