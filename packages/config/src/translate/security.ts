import type { AuthzConfig, AuthzPolicy } from '../model/filters.ts';
import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
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

/** The authorization filter for this proxy: every AuthorizationPolicy that applies; null when none. */
export function authzFilter(ctx: TranslateContext): HttpFilterConfig | null {
  const policies: AuthzPolicy[] = [];
  for (const r of ctx.resourcesOf('AuthorizationPolicy')) {
    if (!policyApplies(ctx, r)) continue;
    const spec = (r.spec ?? {}) as { action?: AuthzPolicy['action']; rules?: unknown[]; provider?: { name?: string } };
    const action = spec.action ?? 'ALLOW';
    if (action === 'CUSTOM') {
      ctx.warn(r, ['spec', 'action'], 'CUSTOM (external authorization) is not supported yet; this policy is ignored');
      continue;
    }
    policies.push({
      name: `${r.metadata.namespace}/${r.metadata.name}`,
      action,
      rules: spec.rules ?? [],
      hasRules: spec.rules !== undefined,
      provider: spec.provider?.name ?? null,
    });
  }
  if (policies.length === 0) return null;
  const config: AuthzConfig = { policies, trustDomain: ctx.node.trustDomain };
  return { name: RBAC_FILTER, config };
}
