/**
 * `envoy.filters.http.rbac`: Istio AuthorizationPolicy enforcement. The translator hands over
 * the policies that apply to this proxy (`AuthzConfig`); compiling checks and builds every
 * rule once, so a request only runs matchers.
 */
import type { AuthzConfig, AuthzPolicy } from '@remora/config';
import { FilterName, SharedFilterConfig, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { AuthzFilter, type AuthzFilterConfig } from './authz-filter.ts';
import { type AuthzRule, compilePolicy } from './authz-policy.ts';

const ACTIONS = new Set(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']);

export class AuthzFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.Rbac;

  compile(config: unknown, context: FilterCompileContext): AuthzFilterConfig {
    const { policies, trustDomain } = checkConfig(config);
    const opts = { trustDomain, context };
    const deny: AuthzRule[] = [];
    let allow: AuthzRule[] | null = null;
    for (const policy of policies) {
      if (policy.action === 'CUSTOM') {
        context.warn(`AuthorizationPolicy ${policy.name}: CUSTOM (external authorization) is not supported; the policy is ignored`);
        continue;
      }
      const rules = compilePolicy(policy, opts);
      switch (policy.action) {
        case 'DENY':
          if (rules.length === 0) {
            context.warn(
              `AuthorizationPolicy ${policy.name}: DENY action without \`rules\` is meaningless as it will never be triggered; add an empty rule \`{}\` to deny every request`,
            );
          }
          deny.push(...rules);
          break;
        case 'ALLOW':
          // An ALLOW policy turns the ALLOW check on even without rules (then it allows nothing).
          (allow ??= []).push(...rules);
          break;
        case 'AUDIT':
          // Audit only marks requests for a telemetry plugin; it never decides. Checked, then dropped.
          break;
      }
    }
    // Envoy keeps an RBAC filter's policies in a map ordered by name: the first match in that
    // order is the one a denial names.
    deny.sort(byId);
    allow?.sort(byId);
    return new SharedFilterConfig(this.name, new AuthzFilter(deny, allow));
  }
}

function byId(a: AuthzRule, b: AuthzRule): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function checkConfig(config: unknown): AuthzConfig {
  const c = config as Partial<AuthzConfig> | null;
  if (c === null || typeof c !== 'object' || !Array.isArray(c.policies)) throw new Error('config must have a policies list');
  if (typeof c.trustDomain !== 'string' || c.trustDomain === '') throw new Error('config must have a trustDomain');
  c.policies.forEach((p: AuthzPolicy, i) => {
    if (p === null || typeof p !== 'object' || typeof p.name !== 'string' || !ACTIONS.has(p.action) || !Array.isArray(p.rules)) {
      throw new Error(`policies[${i}] must have a name, an action (ALLOW, DENY, AUDIT or CUSTOM) and a rules list`);
    }
  });
  return c as AuthzConfig;
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.rbac`. */
export const authzFactory = new AuthzFilterFactory();
