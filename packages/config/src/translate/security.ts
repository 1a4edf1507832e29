import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import { type AuthzPolicyInput, buildRbacFilters } from './authz-rbac.ts';
import type { TranslateContext } from './context.ts';
import { labelsMatch } from './registry.ts';

/** Envoy's filter names (also in @remora/filters, which this package may not import). */
export const RBAC_FILTER = 'envoy.filters.http.rbac';

interface TargetRef {
  group?: string;
  kind?: string;
  name?: string;
  namespace?: string;
}

interface SelectorSpec {
  selector?: { matchLabels?: Record<string, string> };
  targetRef?: TargetRef;
  targetRefs?: TargetRef[];
}

/**
 * Does a security policy apply to this proxy? As Istio decides: a policy in the root
 * namespace without selector applies mesh-wide; one in the workload's namespace without
 * selector applies namespace-wide; `selector.matchLabels` picks workloads (from the root
 * namespace: in every namespace); `targetRefs` naming a Gateway pick the gateway whose
 * workload name (or `gateway.networking.k8s.io/gateway-name` label) it names.
 */
export function policyApplies(ctx: TranslateContext, r: Resource): boolean {
  const { node } = ctx;
  const ns = r.metadata.namespace;
  const root = ns === node.rootNamespace;
  if (!root && ns !== node.namespace) return false;
  const spec = (r.spec ?? {}) as SelectorSpec;
  const refs = spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : []);
  if (refs.length > 0) {
    return refs.some((ref) => {
      if ((ref.kind ?? '') !== 'Gateway') return false;
      const name = ref.name ?? '';
      return name === node.workloadName || name === node.labels['gateway.networking.k8s.io/gateway-name'];
    });
  }
  const sel = spec.selector?.matchLabels;
  if (sel && Object.keys(sel).length > 0) return labelsMatch(sel, node.labels);
  return true;
}

/**
 * The authorization filters for this proxy: istiod's RBAC filters (AUDIT, DENY, ALLOW, in
 * that order) from every AuthorizationPolicy that applies; empty when none does. A rule
 * istiod's validation refuses is an error naming the policy and the field.
 */
export function authzFilters(ctx: TranslateContext): HttpFilterConfig[] {
  const policies: AuthzPolicyInput[] = [];
  const resources = new Map<AuthzPolicyInput, Resource>();
  for (const r of ctx.resourcesOf('AuthorizationPolicy')) {
    if (!policyApplies(ctx, r)) continue;
    const spec = (r.spec ?? {}) as { action?: AuthzPolicyInput['action'] | 'CUSTOM'; rules?: unknown[] };
    const action = spec.action ?? 'ALLOW';
    if (action === 'CUSTOM') {
      ctx.warn(r, ['spec', 'action'], 'CUSTOM (external authorization) is not supported yet; this policy is ignored');
      continue;
    }
    const dryRun = r.metadata.annotations['istio.io/dry-run'];
    const policy: AuthzPolicyInput = { namespace: r.metadata.namespace, name: r.metadata.name, action, rules: spec.rules, dryRun: dryRun !== undefined && /^(1|t|true)$/i.test(dryRun) };
    policies.push(policy);
    resources.set(policy, r);
  }
  if (policies.length === 0) return [];
  // istiod's bundle: the mesh trust domain (no aliases are configured in Remora yet).
  const built = buildRbacFilters(policies, {
    trustDomains: [ctx.node.trustDomain],
    report: (issue) => {
      const r = resources.get(issue.policy)!;
      const path = ['spec', ...issue.path];
      if (issue.severity === 'error') ctx.error(r, path, issue.message);
      else ctx.warn(r, path, issue.message);
    },
  });
  return built.map((config) => ({ name: RBAC_FILTER, config }));
}
