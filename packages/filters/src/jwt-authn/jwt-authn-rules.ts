/**
 * The compiled form of a proxy's jwtRules, shaped like the Envoy config istiod emits: one
 * provider per rule (issuer, audiences, keys, outputs), and the token locations of all
 * providers, each knowing which providers read it. A token found at a location may only be
 * verified by a provider that reads that location and names the token's issuer (Envoy's
 * `isIssuerAllowed`); no such provider is "Jwt issuer is not configured".
 */
import type { JwtRule } from '@remora/config';
import type { FilterRequest } from '../filter.ts';
import type { JwksKeySet } from './jwt-authn-jwks.ts';
import type { JwksSource } from './jwt-authn-jwks-cache.ts';
import { JwtStatus } from './jwt-authn-status.ts';
import { type ParsedJwt, sanitizeAudience } from './jwt-authn-token.ts';

/** jwt_verify_lib's default clock skew (`kClockSkewInSecond`), which Istio keeps. */
export const CLOCK_SKEW_SECONDS = 60;

/** A header value Node can send upstream. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** One provider: a jwtRule of a RequestAuthentication. */
export class JwtProvider {
  readonly origin: string;
  readonly issuer: string;
  /** Sanitized accepted audiences; null: any. */
  readonly #audiences: ReadonlySet<string> | null;
  readonly keys: JwksSource;
  /** Why the keys are unusable (an inline JWKS without a valid key); null when they are fine. */
  readonly #keysStatus: JwtStatus | null;
  readonly payloadHeader: string | null;
  readonly claimHeaders: readonly { readonly header: string; readonly path: readonly string[] }[];
  readonly forward: boolean;

  constructor(rule: JwtRule, keys: JwksSource, keysStatus: JwtStatus | null) {
    this.origin = rule.origin;
    this.issuer = rule.issuer;
    this.#audiences = rule.audiences.length === 0 ? null : new Set(rule.audiences.map(sanitizeAudience));
    this.keys = keys;
    this.#keysStatus = keysStatus;
    this.payloadHeader = rule.outputPayloadToHeader;
    this.claimHeaders = rule.outputClaimToHeaders.map((o) => ({ header: o.header, path: o.claim.split('.') }));
    this.forward = rule.forwardOriginalToken;
  }

  /** The checks before the signature, in Envoy's order: time (with clock skew), then audiences. */
  checkClaims(jwt: ParsedJwt, nowSeconds: number): JwtStatus {
    if (jwt.nbf !== 0 && nowSeconds + CLOCK_SKEW_SECONDS < jwt.nbf) return JwtStatus.JwtNotYetValid;
    if (jwt.exp !== 0 && nowSeconds > jwt.exp + CLOCK_SKEW_SECONDS) return JwtStatus.JwtExpired;
    const allowed = this.#audiences;
    if (allowed !== null) {
      const auds = jwt.audiences;
      let ok = false;
      for (let i = 0; i < auds.length && !ok; i++) ok = allowed.has(sanitizeAudience(auds[i]!));
      if (!ok) return JwtStatus.JwtAudienceNotAllowed;
    }
    return JwtStatus.Ok;
  }

  /** Ok when these keys verified this very token before: no signature check needed. */
  verifiedBefore(jwt: ParsedJwt): boolean {
    return this.keys.current()?.isVerified(jwt.token) ?? false;
  }

  /** Checks the signature, fetching the keys first when there are none yet, or refreshing them for an unknown kid. */
  async verifySignature(jwt: ParsedJwt): Promise<JwtStatus> {
    if (this.#keysStatus !== null) return this.#keysStatus;
    let keys: JwksKeySet | null = this.keys.current() ?? (await this.keys.load());
    if (keys === null) return JwtStatus.JwksFetchFail;
    if (keys.isVerified(jwt.token)) return JwtStatus.Ok;
    if (!keys.hasMatch(jwt)) {
      const refresh = this.keys.refreshForUnknownKid();
      if (refresh !== null) keys = (await refresh) ?? keys;
    }
    return keys.verify(jwt);
  }

  /** Envoy's outputs of a verified token: payload header, claim headers, and the token removed unless forwarded. */
  applyOutputs(req: FilterRequest, jwt: ParsedJwt, location: TokenLocation): void {
    if (this.payloadHeader !== null) req.setRequestHeader(this.payloadHeader, jwt.payloadBase64url);
    const claims = this.claimHeaders;
    for (let i = 0; i < claims.length; i++) {
      const value = claimString(jwt.payload, claims[i]!.path);
      if (value !== null) req.setRequestHeader(claims[i]!.header, value);
    }
    // Envoy removes the token from headers only (not from query parameters or cookies).
    if (!this.forward && location.kind === LocationKind.Header) req.removeRequestHeader(location.name);
  }
}

/**
 * A claim as a header value, as Envoy's `addJWTClaimToHeader`: strings, numbers (integers
 * without a fraction) and booleans; a nested claim by its dotted path; anything else none.
 */
function claimString(payload: Readonly<Record<string, unknown>>, path: readonly string[]): string | null {
  let v: unknown = payload;
  for (let i = 0; i < path.length; i++) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, path[i]!)) return null;
    v = (v as Record<string, unknown>)[path[i]!];
  }
  let s: string;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'boolean') s = v ? 'true' : 'false';
  else if (typeof v === 'number' && Number.isFinite(v)) s = v >= 0 && Number.isInteger(v) && v < 2 ** 64 ? v.toFixed(0) : v.toFixed(6);
  else return null;
  return s !== '' && HEADER_VALUE.test(s) ? s : null;
}

const NO_PROVIDERS: readonly JwtProvider[] = [];

export const LocationKind = { Header: 0, Param: 1, Cookie: 2 } as const;
export type LocationKind = (typeof LocationKind)[keyof typeof LocationKind];

/** Where tokens are looked for, and the providers that read it. */
export class TokenLocation {
  readonly kind: LocationKind;
  /** Header (lower-case), query parameter or cookie name. */
  readonly name: string;
  /** Header value prefix ('' for none). */
  readonly prefix: string;
  readonly providers: JwtProvider[] = [];
  /** Providers by issuer, built by `seal`. */
  #byIssuer = new Map<string, JwtProvider[]>();

  constructor(kind: LocationKind, name: string, prefix: string) {
    this.kind = kind;
    this.name = name;
    this.prefix = prefix;
  }

  seal(): void {
    for (const p of this.providers) {
      let list = this.#byIssuer.get(p.issuer);
      if (list === undefined) this.#byIssuer.set(p.issuer, (list = []));
      list.push(p);
    }
  }

  /** The providers that may verify a token with issuer `iss` (none for a token without `iss`: Istio providers all name one). */
  providersFor(iss: string): readonly JwtProvider[] {
    return this.#byIssuer.get(iss) ?? NO_PROVIDERS;
  }

  /**
   * The token here, or null, as Envoy's extractor: a header's whole value, or with a prefix
   * the run of base64url characters and dots after it (the whole value when there is none);
   * a query parameter or cookie as it is, even empty.
   */
  extract(req: FilterRequest): string | null {
    switch (this.kind) {
      case LocationKind.Header: {
        const value = req.requestHeader(this.name);
        if (value === null || this.prefix === '') return value;
        const at = value.indexOf(this.prefix);
        return at < 0 ? null : extractJwt(value, at + this.prefix.length);
      }
      case LocationKind.Param:
        return req.queryParam(this.name);
      case LocationKind.Cookie:
        return req.cookie(this.name);
    }
  }
}

/** Envoy's `extractJWT`: after `from`, skip to the first token character and take the run of them. */
function extractJwt(value: string, from: number): string {
  let start = from;
  while (start < value.length && !isTokenChar(value.charCodeAt(start))) start++;
  if (start >= value.length) return value;
  let end = start;
  while (end < value.length && isTokenChar(value.charCodeAt(end))) end++;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

/** Base64url characters and the dot. */
function isTokenChar(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95 || c === 46;
}

/**
 * The headers the filter writes (payload and claim headers): Envoy removes them from every
 * request before looking for tokens, so a client cannot pose as a verified token.
 */
export function headersToSanitize(providers: readonly JwtProvider[]): string[] {
  const out = new Set<string>();
  for (const p of providers) {
    if (p.payloadHeader !== null) out.add(p.payloadHeader);
    for (const c of p.claimHeaders) out.add(c.header);
  }
  return [...out];
}

/** The locations of all providers, each once, in the order the rules name them. */
export function buildLocations(rules: readonly JwtRule[], providers: readonly JwtProvider[]): TokenLocation[] {
  const byKey = new Map<string, TokenLocation>();
  const add = (kind: LocationKind, name: string, prefix: string, provider: JwtProvider) => {
    const key = `${kind}\u0000${name}\u0000${prefix}`;
    let loc = byKey.get(key);
    if (loc === undefined) byKey.set(key, (loc = new TokenLocation(kind, name, prefix)));
    if (!loc.providers.includes(provider)) loc.providers.push(provider);
  };
  rules.forEach((rule, i) => {
    const p = providers[i]!;
    for (const h of rule.fromHeaders) add(LocationKind.Header, h.name.toLowerCase(), h.prefix, p);
    for (const q of rule.fromParams) add(LocationKind.Param, q, '', p);
    for (const c of rule.fromCookies) add(LocationKind.Cookie, c, '', p);
  });
  const out = [...byKey.values()];
  for (const l of out) l.seal();
  return out;
}
