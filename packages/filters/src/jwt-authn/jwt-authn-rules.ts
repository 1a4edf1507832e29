/**
 * The providers of a compiled JwtAuthentication (issuer, audiences, keys, outputs) and the
 * token locations of all of them, each knowing which providers read it. A token found at a
 * location may only be verified by a provider that reads that location and names the token's
 * issuer (Envoy's `isIssuerSpecified`); no such provider is "Jwt issuer is not configured".
 */
import type { FilterRequest, RequestAuth } from '../filter.ts';
import type { JwksKeySet } from './jwt-authn-jwks.ts';
import type { JwksSource } from './jwt-authn-jwks-cache.ts';
import { JwtStatus } from './jwt-authn-status.ts';
import { type ParsedJwt, sanitizeAudience } from './jwt-authn-token.ts';

/** jwt_verify_lib's default clock skew (`kClockSkewInSecond`), which Istio keeps. */
export const CLOCK_SKEW_SECONDS = 60;

/** A header value Node can send upstream. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** What a provider is compiled from: Envoy's JwtProvider, its JSON read and checked. */
export interface ProviderSettings {
  /** The provider's name in `providers`. */
  readonly name: string;
  readonly issuer: string;
  /** Accepted `aud` values; empty: any. */
  readonly audiences: readonly string[];
  /** `forward_payload_header`, lower case; null: none. */
  readonly payloadHeader: string | null;
  /** `pad_forward_payload_header`: the payload header keeps base64 padding. */
  readonly padPayloadHeader: boolean;
  readonly claimHeaders: readonly { readonly header: string; readonly claim: string }[];
  readonly forward: boolean;
  /** `payload_in_metadata`; '' when unset (then the verified identity is not handed on). */
  readonly payloadInMetadata: string;
  /** `normalize_payload_in_metadata.space_delimited_claims`. */
  readonly spaceDelimitedClaims: readonly string[];
  readonly clockSkewSeconds: number;
  readonly clearRouteCache: boolean;
}

/** One provider of the config, or a provider with a requirement's own audiences (`provider_and_audiences`). */
export class JwtProvider {
  readonly name: string;
  /** Position among the config's providers (audience variants included): indexes a request's outcomes. */
  readonly index: number;
  /** The provider whose token locations this one reads (itself, unless it is an audience variant). */
  readonly base: JwtProvider;
  readonly issuer: string;
  /** Sanitized accepted audiences; null: any. */
  readonly #audiences: ReadonlySet<string> | null;
  readonly keys: JwksSource;
  /** Why the keys are unusable (an inline JWKS without a valid key); null when they are fine. */
  readonly #keysStatus: JwtStatus | null;
  readonly payloadHeader: string | null;
  readonly #padPayloadHeader: boolean;
  readonly claimHeaders: readonly { readonly header: string; readonly path: readonly string[] }[];
  readonly forward: boolean;
  /** Whether a verified token's identity goes on to authorization (`payload_in_metadata` set). */
  readonly handsOnIdentity: boolean;
  readonly #spaceDelimitedClaims: readonly string[];
  readonly #clockSkew: number;
  readonly clearRouteCache: boolean;
  /** Indexes of the config's token locations this provider reads; set when the locations are built. */
  locations: readonly number[] = [];
  readonly #settings: ProviderSettings;

  constructor(settings: ProviderSettings, index: number, keys: JwksSource, keysStatus: JwtStatus | null, base: JwtProvider | null = null) {
    this.#settings = settings;
    this.name = settings.name;
    this.index = index;
    this.base = base ?? this;
    this.issuer = settings.issuer;
    this.#audiences = settings.audiences.length === 0 ? null : new Set(settings.audiences.map(sanitizeAudience));
    this.keys = keys;
    this.#keysStatus = keysStatus;
    this.payloadHeader = settings.payloadHeader;
    this.#padPayloadHeader = settings.padPayloadHeader;
    this.claimHeaders = settings.claimHeaders.map((o) => ({ header: o.header, path: o.claim.split('.') }));
    this.forward = settings.forward;
    this.handsOnIdentity = settings.payloadInMetadata !== '';
    this.#spaceDelimitedClaims = settings.spaceDelimitedClaims;
    this.#clockSkew = settings.clockSkewSeconds;
    this.clearRouteCache = settings.clearRouteCache;
  }

  /** The same provider checking other audiences (a requirement's `provider_and_audiences`). */
  withAudiences(audiences: readonly string[], index: number): JwtProvider {
    const v = new JwtProvider({ ...this.#settings, audiences }, index, this.keys, this.#keysStatus, this.base);
    v.locations = this.locations;
    return v;
  }

  /** Whether this provider may verify a token naming issuer `iss`. */
  acceptsIssuer(iss: string): boolean {
    return iss === this.issuer;
  }

  /** What authorization sees of a token this provider verified. */
  identity(jwt: ParsedJwt): RequestAuth {
    return jwt.authFor(this.#spaceDelimitedClaims);
  }

  /** The checks before the signature, in Envoy's order: time (with clock skew), then audiences. */
  checkClaims(jwt: ParsedJwt, nowSeconds: number): JwtStatus {
    const skew = this.#clockSkew;
    if (jwt.nbf !== 0 && nowSeconds + skew < jwt.nbf) return JwtStatus.JwtNotYetValid;
    if (jwt.exp !== 0 && nowSeconds > jwt.exp + skew) return JwtStatus.JwtExpired;
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
    if (this.payloadHeader !== null) req.setRequestHeader(this.payloadHeader, this.#padPayloadHeader ? jwt.payloadBase64urlPadded : jwt.payloadBase64url);
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

/**
 * Where a provider looks for tokens: its `from_headers`, `from_params` and `from_cookies`, or,
 * with none of them, Envoy's defaults: `Authorization: Bearer <token>` and `?access_token=`.
 */
export interface ProviderLocations {
  readonly headers: readonly { readonly name: string; readonly prefix: string }[];
  readonly params: readonly string[];
  readonly cookies: readonly string[];
}

/** The locations of all providers, each once, in the order the providers name them; sets each provider's `locations`. */
export function buildLocations(providers: readonly JwtProvider[], where: readonly ProviderLocations[]): TokenLocation[] {
  const byKey = new Map<string, number>();
  const out: TokenLocation[] = [];
  providers.forEach((p, i) => {
    const mine: number[] = [];
    const add = (kind: LocationKind, name: string, prefix: string) => {
      const key = `${kind}\u0000${name}\u0000${prefix}`;
      let at = byKey.get(key);
      if (at === undefined) {
        at = out.length;
        byKey.set(key, at);
        out.push(new TokenLocation(kind, name, prefix));
      }
      const loc = out[at]!;
      if (!loc.providers.includes(p)) loc.providers.push(p);
      if (!mine.includes(at)) mine.push(at);
    };
    const w = where[i]!;
    for (const h of w.headers) add(LocationKind.Header, h.name.toLowerCase(), h.prefix);
    for (const q of w.params) add(LocationKind.Param, q, '');
    for (const c of w.cookies) add(LocationKind.Cookie, c, '');
    p.locations = mine;
  });
  for (const l of out) l.seal();
  return out;
}
