/**
 * `envoy.filters.http.rbac`: compiles Envoy's RBAC filter config (the proto3 JSON of
 * envoy.extensions.filters.http.rbac.v3.RBAC) once per snapshot into matcher trees, so a
 * request only walks them. What Remora cannot evaluate (CEL conditions, the generic
 * `matcher` API, filter state) is a compile error naming the field.
 */
import type { PolicyJson, RBACJson as RBACRulesJson } from '@remora/config/envoy/gen/envoy/config/rbac/v3/rbac_pb.js';
import type { RBACJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.js';
import { DETACHED_STATS, type FilterStats } from '../filter-stats.ts';
import { FilterName, SharedFilterConfig, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { RbacAction, RbacEngine, RbacFilter, type RbacFilterConfig, RbacPolicy, type RbacStats } from './rbac-filter.ts';
import { compilePermission, compilePrincipal, type RbacCompileSink } from './rbac-matcher.ts';

export class RbacFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Rbac;

  compile(config: unknown, context: FilterCompileContext): RbacFilterConfig {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('config must be an RBAC message (JSON object)');
    const c = config as RBACJson;
    for (const f of ['matcher', 'shadowMatcher'] as const) {
      if (c[f] !== undefined) throw new Error(`${f}: the generic matcher API is not supported; use rules`);
    }
    const rules = c.rules === undefined ? null : compileEngine(c.rules, 'rules', context);
    const shadow = c.shadowRules === undefined ? null : compileEngine(c.shadowRules, 'shadowRules', context);
    return new SharedFilterConfig(this.name, new RbacFilter(rules, shadow, rbacStats(c, context.stats ?? DETACHED_STATS), c.shadowRulesStatPrefix ?? '', context.logger?.('rbac') ?? null));
  }
}

/** Envoy's names (source/extensions/filters/common/rbac/utility.cc): `rbac.` then the rules' or the shadow rules' own prefix. */
function rbacStats(c: RBACJson, stats: FilterStats): RbacStats {
  const rules = `rbac.${c.rulesStatPrefix ?? ''}`;
  const shadow = `rbac.${c.shadowRulesStatPrefix ?? ''}`;
  return {
    allowed: stats.http(`${rules}allowed`),
    denied: stats.http(`${rules}denied`),
    shadowAllowed: stats.http(`${shadow}shadow_allowed`),
    shadowDenied: stats.http(`${shadow}shadow_denied`),
  };
}

const ACTIONS: Readonly<Record<string, RbacAction>> = { ALLOW: RbacAction.Allow, DENY: RbacAction.Deny, LOG: RbacAction.Log };

function compileEngine(r: RBACRulesJson, at: string, sink: RbacCompileSink): RbacEngine {
  const action = ACTIONS[r.action ?? 'ALLOW'];
  if (action === undefined) throw new Error(`${at}.action: ${String(r.action)} is not ALLOW, DENY or LOG`);
  // Envoy keeps the policies in a map ordered by name: the first match in that order is the one a denial names.
  const names = Object.keys(r.policies ?? {}).sort();
  const policies = names.map((name) => compilePolicy(name, r.policies![name]!, `${at}.policies[${name}]`, sink));
  return new RbacEngine(action, policies);
}

function compilePolicy(name: string, p: PolicyJson, at: string, sink: RbacCompileSink): RbacPolicy {
  if (p.condition !== undefined || p.checkedCondition !== undefined) throw new Error(`${at}.condition: CEL conditions are not supported`);
  const permissions = (p.permissions ?? []).map((x, i) => compilePermission(x, `${at}.permissions[${i}]`, sink));
  const principals = (p.principals ?? []).map((x, i) => compilePrincipal(x, `${at}.principals[${i}]`, sink));
  if (permissions.length === 0) throw new Error(`${at}.permissions: at least one is required`);
  if (principals.length === 0) throw new Error(`${at}.principals: at least one is required`);
  return new RbacPolicy(name, permissions, principals);
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.rbac`. */
export const rbacFactory = new RbacFilterFactory();
