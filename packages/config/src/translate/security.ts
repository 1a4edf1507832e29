import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import type { MeshConfig } from '../schema/mesh-config.ts';
import { buildExtAuthzFilters, type ServiceLookup } from './authz-extauthz.ts';
import { type AuthzIssue, type AuthzPolicyInput, buildRbacFilters } from './authz-rbac.ts';
import type { TranslateContext } from './context.ts';
import { labelsMatch, type ServiceRegistry } from './registry.ts';
import { outboundClusterName } from './virtual-service.ts';

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

/** A proxy's authorization filters, in the two places of Istio's chain. */
export interface AuthzFilters {
  /** CUSTOM: the RBAC metadata producer and ext_authz per provider, first in the chain (before JWT). */
  readonly custom: readonly HttpFilterConfig[];
  /** AUDIT, DENY, ALLOW RBAC filters, after authentication. */
  readonly rbac: readonly HttpFilterConfig[];
}

export const NO_AUTHZ: AuthzFilters = { custom: [], rbac: [] };

/**
 * The authorization filters for this proxy: istiod's CUSTOM filters (ext_authz through the
 * MeshConfig's extension providers) and its RBAC filters (AUDIT, DENY, ALLOW, in that order)
 * from every AuthorizationPolicy that applies; empty when none does. A rule istiod's
 * validation refuses is an error naming the policy and the field.
 */
export function authzFilters(ctx: TranslateContext, mesh: MeshConfig, registry: ServiceRegistry): AuthzFilters {
  const policies: AuthzPolicyInput[] = [];
  const custom: AuthzPolicyInput[] = [];
  const resources = new Map<AuthzPolicyInput, Resource>();
  for (const r of ctx.resourcesOf('AuthorizationPolicy')) {
    if (!policyApplies(ctx, r)) continue;
    const spec = (r.spec ?? {}) as { action?: AuthzPolicyInput['action']; rules?: unknown[]; provider?: { name?: string } };
    const action = spec.action ?? 'ALLOW';
    const dryRun = r.metadata.annotations['istio.io/dry-run'];
    const policy: AuthzPolicyInput = {
      namespace: r.metadata.namespace,
      name: r.metadata.name,
      action,
      rules: spec.rules,
      dryRun: dryRun !== undefined && /^(1|t|true)$/i.test(dryRun),
      ...(action === 'CUSTOM' ? { provider: spec.provider?.name ?? '' } : {}),
    };
    (action === 'CUSTOM' ? custom : policies).push(policy);
    resources.set(policy, r);
  }
  if (policies.length === 0 && custom.length === 0) return NO_AUTHZ;
  // istiod's trust domain bundle: the mesh's trust domain, then MeshConfig's aliases, once each.
  const opts = {
    trustDomains: [...new Set([ctx.node.trustDomain, ...(mesh.trustDomainAliases ?? [])])],
    report: (issue: AuthzIssue) => {
      const r = resources.get(issue.policy)!;
      const path = ['spec', ...issue.path];
      if (issue.severity === 'error') ctx.error(r, path, issue.message);
      else ctx.warn(r, path, issue.message);
    },
  };
  const rbac = buildRbacFilters(policies, opts).map((config) => ({ name: RBAC_FILTER, config }));
  const ext = custom.length === 0 ? [] : buildExtAuthzFilters(custom, { ...opts, providers: mesh.extensionProviders, lookup: serviceLookup(registry) });
  return { custom: ext, rbac };
}

/** istiod's model.LookupCluster: `[<namespace>/]<hostname>` of a registry service, and its outbound cluster for `port`. */
function serviceLookup(registry: ServiceRegistry): ServiceLookup {
  return (service, port) => {
    const slash = service.indexOf('/');
    const ns = slash < 0 ? null : service.slice(0, slash);
    const host = slash < 0 ? service : service.slice(slash + 1);
    const svc = registry.get(host);
    if (svc === undefined || (ns !== null && svc.namespace !== ns)) return `could not find service ${service} in Istio service registry`;
    return { hostname: svc.host, cluster: outboundClusterName(port, '', svc.host) };
  };
}
