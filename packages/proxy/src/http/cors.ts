import type { CorsPolicy } from '@remora/config';
import { StringMatcher } from '../router/string-matcher.ts';

/**
 * Envoy's CORS filter (`source/extensions/filters/http/cors/cors_filter.cc`) for Istio's
 * `corsPolicy`, which istiod translates into a per-route Envoy `CorsPolicy`
 * (`TranslateCORSPolicy`: lists joined with `,`, max age in whole seconds, filter enabled 100%).
 *
 * Per request the exchange asks `decide()`; the answer says whether the proxy answers a
 * preflight itself, adds headers to whatever response the request gets, or does nothing.
 */

/** Not a CORS request (no or empty Origin), or the origin is not allowed: touch nothing. */
export const CORS_NONE = 0;
/**
 * An allowed origin on an actual request (or an OPTIONS without Access-Control-Request-Method):
 * forward it, then `applyResponseHeaders()` on the response, whichever produced it (upstream or a
 * local reply after routing: Envoy runs the CORS encoder on both).
 */
export const CORS_ACTUAL = 1;
/** A preflight from an allowed origin: answer 200 locally with `pushPreflightHeaders()`. */
export const CORS_PREFLIGHT = 2;
/**
 * A preflight from an origin not allowed, with Istio's `unmatchedPreflights: IGNORE`
 * (Envoy `forward_not_matching_preflights: false`): answer 200 locally, without
 * `access-control-allow-origin`. With Istio's default (FORWARD) such a preflight is CORS_NONE.
 */
export const CORS_PREFLIGHT_UNMATCHED = 3;

export type CorsDecision = typeof CORS_NONE | typeof CORS_ACTUAL | typeof CORS_PREFLIGHT | typeof CORS_PREFLIGHT_UNMATCHED;

/** Envoy's response code details for a preflight answered by the filter. */
export const CORS_RESPONSE_DETAILS = 'cors_response';

export const H_ALLOW_ORIGIN = 'access-control-allow-origin';
export const H_ALLOW_CREDENTIALS = 'access-control-allow-credentials';
export const H_ALLOW_METHODS = 'access-control-allow-methods';
export const H_ALLOW_HEADERS = 'access-control-allow-headers';
export const H_EXPOSE_HEADERS = 'access-control-expose-headers';
export const H_MAX_AGE = 'access-control-max-age';

export interface CorsOptions {
  /**
   * Istio's `unmatchedPreflights`: true (FORWARD, Istio's default) lets a preflight from an
   * origin that is not allowed go upstream; false (IGNORE) answers it locally.
   */
  readonly forwardNotMatchingPreflights?: boolean;
}

/** A route's CORS policy, compiled once per snapshot: origin matchers built, header values joined. */
export class CompiledCors {
  /** Some matcher accepts the literal `*`: Envoy then allows every origin. */
  readonly #allowAny: boolean;
  /** Exact origins in a set, the common case; the other kinds in order. */
  readonly #exact: ReadonlySet<string>;
  readonly #others: readonly StringMatcher[];
  /** Joined values; '' when unset (Envoy sends no header for an empty value). */
  readonly allowMethods: string;
  readonly allowHeaders: string;
  readonly exposeHeaders: string;
  readonly maxAge: string;
  readonly allowCredentials: boolean;
  readonly forwardNotMatchingPreflights: boolean;
  readonly #echoMethod: boolean;
  readonly #echoHeaders: boolean;

  /** Throws (at compile time only) on an origin regex RE2 cannot compile. */
  constructor(policy: CorsPolicy, options: CorsOptions = {}) {
    const exact = new Set<string>();
    const others: StringMatcher[] = [];
    let allowAny = false;
    for (const m of policy.allowOrigins) {
      const matcher = new StringMatcher(m);
      // Envoy's isOriginAllowed tries every matcher against "*" before the origin itself.
      if (matcher.matches('*')) allowAny = true;
      if (m.kind === 'exact') exact.add(m.value);
      else others.push(matcher);
    }
    this.#allowAny = allowAny;
    this.#exact = exact;
    this.#others = others;
    this.allowMethods = policy.allowMethods.join(',');
    this.allowHeaders = policy.allowHeaders.join(',');
    this.exposeHeaders = policy.exposeHeaders.join(',');
    this.maxAge = policy.maxAgeSeconds === null ? '' : String(policy.maxAgeSeconds);
    this.allowCredentials = policy.allowCredentials === true;
    this.forwardNotMatchingPreflights = options.forwardNotMatchingPreflights ?? true;
    // Envoy: a configured value of exactly "*" echoes what the preflight asked for.
    this.#echoMethod = this.allowMethods === '*';
    this.#echoHeaders = this.allowHeaders === '*';
  }

  /** Whether `origin` is allowed (Envoy: any matcher matches `*` or the origin, case-sensitive). */
  isOriginAllowed(origin: string): boolean {
    if (this.#allowAny || this.#exact.has(origin)) return true;
    const others = this.#others;
    for (let i = 0; i < others.length; i++) if (others[i]!.matches(origin)) return true;
    return false;
  }

  /**
   * What to do with a request. `requestMethod` is its Access-Control-Request-Method, only
   * read for OPTIONS (pass null otherwise). No allocation; with no Origin it returns at once.
   */
  decide(method: string, origin: string | null, requestMethod: string | null): CorsDecision {
    if (origin === null || origin === '') return CORS_NONE;
    const allowed = this.isOriginAllowed(origin);
    // Envoy's preflight test: method exactly OPTIONS, non-empty Access-Control-Request-Method.
    if (method !== 'OPTIONS' || requestMethod === null || requestMethod === '') return allowed ? CORS_ACTUAL : CORS_NONE;
    if (allowed) return CORS_PREFLIGHT;
    return this.forwardNotMatchingPreflights ? CORS_NONE : CORS_PREFLIGHT_UNMATCHED;
  }

  /**
   * Headers of the local preflight answer (status 200, no body), pushed as `name, value` pairs.
   * `decision` is CORS_PREFLIGHT or CORS_PREFLIGHT_UNMATCHED. For an allowed origin the list
   * includes what Envoy's own encoder adds to the reply it generated (the filter's
   * encodeHeaders runs on its local reply too): `access-control-expose-headers` when set.
   */
  pushPreflightHeaders(out: string[], decision: CorsDecision, origin: string, requestMethod: string, requestHeaders: string | null): void {
    const allowed = decision === CORS_PREFLIGHT;
    if (allowed) out.push(H_ALLOW_ORIGIN, origin);
    if (this.allowCredentials) out.push(H_ALLOW_CREDENTIALS, 'true');
    if (this.allowMethods !== '') out.push(H_ALLOW_METHODS, this.#echoMethod ? requestMethod : this.allowMethods);
    // Envoy sets the echoed value even when the request sent none (an empty header).
    if (this.allowHeaders !== '') out.push(H_ALLOW_HEADERS, this.#echoHeaders ? (requestHeaders ?? '') : this.allowHeaders);
    if (this.maxAge !== '') out.push(H_MAX_AGE, this.maxAge);
    if (allowed && this.exposeHeaders !== '') out.push(H_EXPOSE_HEADERS, this.exposeHeaders);
  }

  /**
   * For CORS_ACTUAL: sets the CORS response headers on a flat `[name, value, …]` list, replacing
   * any the upstream sent (Envoy `setInline`). Only the configured ones are touched.
   */
  applyResponseHeaders(out: string[], origin: string): void {
    setHeader(out, H_ALLOW_ORIGIN, origin);
    if (this.allowCredentials) setHeader(out, H_ALLOW_CREDENTIALS, 'true');
    if (this.exposeHeaders !== '') setHeader(out, H_EXPOSE_HEADERS, this.exposeHeaders);
  }
}

/** Replaces every `name` entry with one `name: value` (kept at the first one's place), else appends. */
function setHeader(out: string[], lowerName: string, value: string): void {
  let found = -1;
  let w = 0;
  for (let r = 0; r < out.length; r += 2) {
    const n = out[r]!;
    if (n.length === lowerName.length && (n === lowerName || n.toLowerCase() === lowerName)) {
      if (found >= 0) continue; // a duplicate: drop it
      found = w;
    }
    if (w !== r) {
      out[w] = n;
      out[w + 1] = out[r + 1]!;
    }
    w += 2;
  }
  out.length = w;
  if (found >= 0) {
    out[found] = lowerName;
    out[found + 1] = value;
  } else out.push(lowerName, value);
}
