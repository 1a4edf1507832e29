// Policies, identities and a way to run a request through a compiled set of policies, for
// the authorization filter's unit tests.
import type { AuthzPolicy } from '@remora/config';
import { authzFactory, FilterStatus, type PeerIdentity, type RequestAuth } from '@remora/filters';
import { FakeRequest, RecordingCallbacks, storeContext, type ReqInit } from './filter-fakes.ts';

export type { ReqInit };

/** The authorization tests' request: httpbin in namespace foo, as in Istio's examples. */
const DEFAULTS: ReqInit = { authority: 'httpbin.foo', sourceIp: '10.0.0.1', destinationIp: '10.0.0.100', destinationPort: 8000 };

/** An AuthorizationPolicy as the translator hands it over; `rules` undefined: the spec had none. */
export function policy(name: string, action: AuthzPolicy['action'], rules?: unknown[]): AuthzPolicy {
  return { name, action, rules: rules ?? [], hasRules: rules !== undefined, provider: null };
}

/** Compiles the policies (trust domain `cluster.local` unless given) into the filter's config. */
export function compile(policies: AuthzPolicy[], trustDomain = 'cluster.local') {
  const context = storeContext();
  const config = authzFactory.compile({ policies, trustDomain }, context);
  return { config, warnings: context.warnings };
}

/** Runs one request: 'allow', or the details of the 403 (after checking the reply is Envoy's). */
export function decide(policies: AuthzPolicy[], init: ReqInit, trustDomain?: string): string {
  const { config } = compile(policies, trustDomain);
  return run(config.create(), init);
}

export function run(filter: ReturnType<ReturnType<typeof compile>['config']['create']>, init: ReqInit): string {
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
