/**
 * `envoy.filters.http.rbac` per request, as Envoy's RBAC filter: the enforced `rules` decide
 * (ALLOW: a request no policy matches is refused; DENY: a request a policy matches is refused;
 * LOG: never refuses), the `shadow_rules` are evaluated, counted and recorded in the request's
 * dynamic metadata, never enforced. A refusal
 * is Envoy's 403 `RBAC: access denied` with details `rbac_access_denied_matched_policy[<name>]`.
 * With the `rbac` log component at debug (`POST /logging?rbac=debug`) each request logs
 * Envoy's lines: `checking request: …`, `shadow denied, matched policy <name>`,
 * `enforced allowed, matched policy none`, …
 * Stateless: one instance serves every request.
 */
import { FilterName, FilterStatus, type FilterCallbacks, type FilterLog, type FilterRequest, type HttpFilter, type SharedFilterConfig } from '../filter.ts';
import type { Stat } from '../filter-stats.ts';
import type { RbacMatcher } from './rbac-matcher.ts';

/** Envoy's RBAC local reply body. */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

/** Envoy RBAC's response details: whitespace in the policy name becomes `_`. */
export function deniedDetails(policyName: string): string {
  return `rbac_access_denied_matched_policy[${policyName.replace(/\s/g, '_')}]`;
}

/** Details when an ALLOW engine matched no policy. */
export const RBAC_DENIED_NONE = deniedDetails('none');

/** One Envoy policy: any permission and any principal. */
export class RbacPolicy {
  readonly name: string;
  /** The local reply details when this policy denies. */
  readonly details: string;
  readonly #permissions: readonly RbacMatcher[];
  readonly #principals: readonly RbacMatcher[];

  constructor(name: string, permissions: readonly RbacMatcher[], principals: readonly RbacMatcher[]) {
    this.name = name;
    this.details = deniedDetails(name);
    this.#permissions = permissions;
    this.#principals = principals;
  }

  matches(req: FilterRequest, pathEnd: number): boolean {
    return anyMatches(this.#permissions, req, pathEnd) && anyMatches(this.#principals, req, pathEnd);
  }
}

function anyMatches(ms: readonly RbacMatcher[], req: FilterRequest, pathEnd: number): boolean {
  for (let i = 0; i < ms.length; i++) if (ms[i]!.matches(req, pathEnd)) return true;
  return false;
}

export const RbacAction = { Allow: 0, Deny: 1, Log: 2 } as const;
export type RbacAction = (typeof RbacAction)[keyof typeof RbacAction];

/** One `RBAC` message: an action and its policies, in Envoy's order (by name). */
export class RbacEngine {
  readonly action: RbacAction;
  readonly policies: readonly RbacPolicy[];

  constructor(action: RbacAction, policies: readonly RbacPolicy[]) {
    this.action = action;
    this.policies = policies;
  }

  /** The first policy (by name) that matches, or null. */
  firstMatch(req: FilterRequest, pathEnd: number): RbacPolicy | null {
    const ps = this.policies;
    for (let i = 0; i < ps.length; i++) if (ps[i]!.matches(req, pathEnd)) return ps[i]!;
    return null;
  }
}

/**
 * Envoy's RBAC filter counters: `http.<stat_prefix>.rbac.<rules_stat_prefix>allowed` and
 * `.denied`, `http.<stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed` and
 * `.shadow_denied` (Istio's dry-run sets `istio_dry_run_allow_` / `istio_dry_run_deny_`).
 */
export interface RbacStats {
  readonly allowed: Stat;
  readonly denied: Stat;
  readonly shadowAllowed: Stat;
  readonly shadowDenied: Stat;
}

export class RbacFilter implements HttpFilter {
  /** null: no enforced rules. */
  readonly #rules: RbacEngine | null;
  readonly #shadow: RbacEngine | null;
  readonly stats: RbacStats;
  /** Envoy's dynamic metadata keys of the shadow result: `<shadow_rules_stat_prefix>shadow_effective_policy_id`, `…shadow_engine_result`. */
  readonly #shadowPolicyKey: string;
  readonly #shadowResultKey: string;
  /** The `rbac` log component; null: never logs. */
  readonly #log: FilterLog | null;

  constructor(rules: RbacEngine | null, shadow: RbacEngine | null, stats: RbacStats, shadowStatPrefix = '', log: FilterLog | null = null) {
    this.#rules = rules;
    this.#shadow = shadow;
    this.stats = stats;
    this.#shadowPolicyKey = `${shadowStatPrefix}shadow_effective_policy_id`;
    this.#shadowResultKey = `${shadowStatPrefix}shadow_engine_result`;
    this.#log = log;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const details = this.evaluate(req);
    if (details === null) return FilterStatus.Continue;
    callbacks.sendLocalReply(403, RBAC_DENIED_BODY, null, details);
    return FilterStatus.StopIteration;
  }

  /**
   * What `evaluate` would decide, without counting, logging or recording metadata: per
   * engine (enforced, shadow) its action, the policy that matched (null: none) and whether
   * the request passes. null for an engine the filter does not have.
   */
  explain(req: FilterRequest): { readonly enforced: RbacVerdict | null; readonly shadow: RbacVerdict | null } {
    const path = req.path;
    let pathEnd = path.indexOf('?');
    const hash = path.indexOf('#');
    if (pathEnd < 0 || (hash >= 0 && hash < pathEnd)) pathEnd = hash;
    if (pathEnd < 0) pathEnd = path.length;
    const verdict = (e: RbacEngine | null): RbacVerdict | null => {
      if (e === null) return null;
      const matched = e.firstMatch(req, pathEnd);
      return {
        action: e.action === RbacAction.Allow ? 'ALLOW' : e.action === RbacAction.Deny ? 'DENY' : 'LOG',
        matchedPolicy: matched === null ? null : matched.name,
        allowed: isAllowed(e, matched),
        policies: e.policies.map((p) => p.name),
      };
    };
    return { enforced: verdict(this.#rules), shadow: verdict(this.#shadow) };
  }

  /** null when the request may pass; else the local reply details naming why not. */
  evaluate(req: FilterRequest): string | null {
    const path = req.path;
    // Envoy's url_path: the path without query string and fragment.
    let pathEnd = path.indexOf('?');
    const hash = path.indexOf('#');
    if (pathEnd < 0 || (hash >= 0 && hash < pathEnd)) pathEnd = hash;
    if (pathEnd < 0) pathEnd = path.length;
    // Only a debug level builds log lines; the check is one comparison per request.
    const log = this.#log !== null && this.#log.enabled('debug') ? this.#log : null;
    if (log !== null) log.debug(checkingRequest(req));

    const shadow = this.#shadow;
    if (shadow !== null) {
      // As Envoy: the shadow result goes into the request's dynamic metadata, where later
      // filters read it (istiod's CUSTOM policies enable ext_authz by the matched policy's name).
      const matched = shadow.firstMatch(req, pathEnd);
      const allowed = isAllowed(shadow, matched);
      if (allowed) this.stats.shadowAllowed.value++;
      else this.stats.shadowDenied.value++;
      if (log !== null) log.debug(`shadow ${allowed ? 'allowed' : 'denied'}, matched policy ${matched === null ? 'none' : matched.name}`);
      if (matched !== null) req.setDynamicMetadata(FilterName.Rbac, this.#shadowPolicyKey, matched.name);
      req.setDynamicMetadata(FilterName.Rbac, this.#shadowResultKey, allowed ? 'allowed' : 'denied');
    }
    const rules = this.#rules;
    if (rules === null) {
      if (log !== null) log.debug('no engine, allowed by default');
      return null;
    }
    const matched = rules.firstMatch(req, pathEnd);
    if (isAllowed(rules, matched)) {
      this.stats.allowed.value++;
      if (log !== null) log.debug(`enforced allowed, matched policy ${matched === null ? 'none' : matched.name}`);
      return null;
    }
    this.stats.denied.value++;
    if (log !== null) log.debug(`enforced denied, matched policy ${matched === null ? 'none' : matched.name}`);
    return matched === null ? RBAC_DENIED_NONE : matched.details;
  }
}

/** One RBAC engine's decision on a request, as `RbacFilter.explain` reports it. */
export interface RbacVerdict {
  readonly action: 'ALLOW' | 'DENY' | 'LOG';
  /** The first policy (by name) that matched; null: none did. */
  readonly matchedPolicy: string | null;
  readonly allowed: boolean;
  /** Every policy of the engine, in the order they are tried. */
  readonly policies: readonly string[];
}

/**
 * Envoy's first RBAC debug line: the connection's facts, the peer certificate's SANs and the
 * headers (`'name', 'value'` each on a line, pseudo-headers first, as Envoy prints a header map).
 */
function checkingRequest(req: FilterRequest): string {
  const peer = req.peer;
  const ssl = peer === null ? 'none' : `uriSanPeerCertificate: ${peer.principal === '' ? '' : `spiffe://${peer.principal}`}, dnsSanPeerCertificate: , subjectPeerCertificate: `;
  let headers = `':authority', '${req.authority}'\n':path', '${req.path}'\n':method', '${req.method}'\n':scheme', '${req.scheme}'\n`;
  const list = req.requestHeaderList();
  for (let i = 0; i + 1 < list.length; i += 2) headers += `'${list[i]!.toLowerCase()}', '${list[i + 1]!}'\n`;
  return (
    `checking request: requestedServerName: ${req.sni}, sourceIP: ${req.sourceIp}, directRemoteIP: ${req.sourceIp}, remoteIP: ${req.remoteIp},` +
    `localAddress: ${req.destinationIp}:${req.destinationPort}, ssl: ${ssl}, headers: ${headers}, dynamicMetadata: `
  );
}

function isAllowed(engine: RbacEngine, matched: RbacPolicy | null): boolean {
  switch (engine.action) {
    case RbacAction.Allow:
      return matched !== null;
    case RbacAction.Deny:
      return matched === null;
    default:
      return true;
  }
}

/** The compiled RBAC filter of one listener in one snapshot. */
export type RbacFilterConfig = SharedFilterConfig<RbacFilter>;
