/**
 * The per-request step of authorization, as the RBAC filters istiod emits behave in Envoy:
 * the DENY filter first (any matching DENY rule denies, naming it), then the ALLOW filter
 * (present when any ALLOW policy applies: a request no ALLOW rule matches is denied with
 * `rbac_access_denied_matched_policy[none]`). Stateless: one instance serves every request.
 */
import { FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type SharedFilterConfig } from '../filter.ts';
import { type AuthzRule, deniedDetails } from './authz-policy.ts';

/** Envoy's RBAC local reply body. */
export const RBAC_DENIED_BODY = 'RBAC: access denied';
/** Details when an ALLOW filter matched no policy. */
export const RBAC_DENIED_NONE = deniedDetails('none');

export class AuthzFilter implements HttpFilter {
  readonly #deny: readonly AuthzRule[];
  /** null: no ALLOW policy applies, so nothing needs allowing. Empty: ALLOW policies without rules, nothing is allowed. */
  readonly #allow: readonly AuthzRule[] | null;

  constructor(deny: readonly AuthzRule[], allow: readonly AuthzRule[] | null) {
    this.#deny = deny;
    this.#allow = allow;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const details = this.evaluate(req);
    if (details === null) return FilterStatus.Continue;
    callbacks.sendLocalReply(403, RBAC_DENIED_BODY, null, details);
    return FilterStatus.StopIteration;
  }

  /** null when the request may pass; else the local reply details naming why not. */
  evaluate(req: FilterRequest): string | null {
    const path = req.path;
    // Envoy's url_path: the path without query string and fragment.
    let pathEnd = path.indexOf('?');
    const hash = path.indexOf('#');
    if (pathEnd < 0 || (hash >= 0 && hash < pathEnd)) pathEnd = hash;
    if (pathEnd < 0) pathEnd = path.length;

    const deny = this.#deny;
    for (let i = 0; i < deny.length; i++) if (deny[i]!.matches(req, pathEnd)) return deny[i]!.details;
    const allow = this.#allow;
    if (allow === null) return null;
    for (let i = 0; i < allow.length; i++) if (allow[i]!.matches(req, pathEnd)) return null;
    return RBAC_DENIED_NONE;
  }
}

/** The compiled authorization of one listener in one snapshot. */
export type AuthzFilterConfig = SharedFilterConfig<AuthzFilter>;
