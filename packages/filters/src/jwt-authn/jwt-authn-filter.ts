/**
 * The per-request step of JWT authentication, as Envoy's jwt_authn runs the config istiod
 * emits for RequestAuthentication (`requires_any` of every provider plus `allow_missing`):
 * a request without a token passes unauthenticated (authorization decides); every token
 * found must verify with a provider that reads its location and names its issuer; a failure
 * is a local reply with jwt_verify_lib's message (401, 403 for a disallowed audience) and
 * `www-authenticate: Bearer realm="<uri>", error="invalid_token"`. A verified token's
 * identity goes to `request.auth`; a token verified before with the same keys completes
 * without waiting, others stop the chain until the signature check (or a JWKS fetch) ends.
 */
import { LRUCache } from 'lru-cache';
import { FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type HttpFilterConfig } from '../filter.ts';
import type { JwtProvider, TokenLocation } from './jwt-authn-rules.ts';
import { JwtStatus, statusDetails, statusHttpCode, statusMessage } from './jwt-authn-status.ts';
import { type ParsedJwt, parseJwt } from './jwt-authn-token.ts';

/** Envoy's `MaximumUriLength` for the realm in `www-authenticate`. */
const MAX_REALM_PATH = 256;
/** Parsed tokens remembered by their text (parsing is pure): at most this many... */
const PARSED_CACHE_SIZE = 1000;
/** ...and at most this many characters of token text, so large made-up tokens cannot pin memory. */
const PARSED_CACHE_CHARS = 2_000_000;

/** One token found in a request, and where. */
interface Found {
  readonly location: TokenLocation;
  readonly jwt: ParsedJwt;
}

/** A token's outcome: Ok with the provider that verified it, or the failure. */
interface Outcome {
  readonly status: JwtStatus;
  readonly provider: JwtProvider | null;
}

/** The compiled JWT authentication of one listener in one snapshot. */
export class JwtAuthnFilterConfig implements HttpFilterConfig {
  readonly name: string;
  readonly providers: readonly JwtProvider[];
  readonly locations: readonly TokenLocation[];
  /** Output headers removed from every request before the check. */
  readonly sanitize: readonly string[];
  /** Envoy's `clear_route_cache`: a verified token makes the request be routed again. */
  readonly clearRouteCache: boolean;
  readonly #parsed = new LRUCache<string, ParsedJwt>({ max: PARSED_CACHE_SIZE, maxSize: PARSED_CACHE_CHARS, sizeCalculation: (_v, token) => token.length });
  /** The clock, in seconds; replaceable for tests. */
  now: () => number = () => Date.now() / 1000;

  constructor(name: string, providers: readonly JwtProvider[], locations: readonly TokenLocation[], sanitize: readonly string[], clearRouteCache = false) {
    this.name = name;
    this.providers = providers;
    this.locations = locations;
    this.sanitize = sanitize;
    this.clearRouteCache = clearRouteCache;
  }

  create(): HttpFilter {
    return new JwtAuthnFilter(this);
  }

  /** A token decoded, or why it cannot be. Only well-formed tokens are remembered: garbage is cheap to refuse again. */
  parse(token: string): ParsedJwt | JwtStatus {
    const cached = this.#parsed.get(token);
    if (cached !== undefined) return cached;
    const p = parseJwt(token);
    if (typeof p !== 'number' && token.length <= PARSED_CACHE_CHARS / 100) this.#parsed.set(token, p);
    return p;
  }

  /**
   * The outcome when it is known without waiting: a failure before the signature, or a token
   * these keys verified before. null: the signature must be checked.
   */
  outcomeNow(found: Found, now: number): Outcome | null {
    const providers = found.location.providersFor(found.jwt.iss);
    if (providers.length === 0) return { status: JwtStatus.JwtUnknownIssuer, provider: null };
    let status: JwtStatus = JwtStatus.JwtUnknownIssuer;
    for (let i = 0; i < providers.length; i++) {
      const p = providers[i]!;
      const s = p.checkClaims(found.jwt, now);
      if (s !== JwtStatus.Ok) {
        status = s;
        continue;
      }
      if (p.verifiedBefore(found.jwt)) return { status: JwtStatus.Ok, provider: p };
      return null;
    }
    return { status, provider: null };
  }

  /** The outcome with signatures checked: the first provider that verifies wins, else the last failure. */
  async outcome(found: Found, now: number): Promise<Outcome> {
    const providers = found.location.providersFor(found.jwt.iss);
    let status: JwtStatus = JwtStatus.JwtUnknownIssuer;
    for (const p of providers) {
      let s = p.checkClaims(found.jwt, now);
      if (s === JwtStatus.Ok) s = await p.verifySignature(found.jwt);
      if (s === JwtStatus.Ok) return { status: s, provider: p };
      status = s;
    }
    return { status, provider: null };
  }
}

export class JwtAuthnFilter implements HttpFilter {
  readonly #config: JwtAuthnFilterConfig;
  #done = false;

  constructor(config: JwtAuthnFilterConfig) {
    this.#config = config;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    // Istio sets bypass_cors_preflight: a preflight carries no credentials.
    if (req.method === 'OPTIONS' && req.requestHeader('origin') !== null && req.requestHeader('access-control-request-method') !== null) {
      return FilterStatus.Continue;
    }
    const config = this.#config;
    const sanitize = config.sanitize;
    for (let i = 0; i < sanitize.length; i++) req.removeRequestHeader(sanitize[i]!);
    const locations = config.locations;
    let found: Found[] | null = null;
    for (let i = 0; i < locations.length; i++) {
      const location = locations[i]!;
      const token = location.extract(req);
      if (token === null) continue;
      const jwt = config.parse(token);
      if (typeof jwt === 'number') return this.#fail(req, callbacks, jwt);
      (found ??= []).push({ location, jwt });
    }
    if (found === null) return FilterStatus.Continue;

    const now = config.now();
    let outcomes: Outcome[] | null = [];
    for (let i = 0; i < found.length; i++) {
      const o = config.outcomeNow(found[i]!, now);
      if (o === null) {
        outcomes = null;
        break;
      }
      if (o.status !== JwtStatus.Ok) return this.#fail(req, callbacks, o.status);
      outcomes.push(o);
    }
    if (outcomes !== null) {
      this.#succeed(req, callbacks, found, outcomes);
      return FilterStatus.Continue;
    }
    void this.#verify(req, callbacks, found, now);
    return FilterStatus.StopIteration;
  }

  onDestroy(): void {
    this.#done = true;
  }

  async #verify(req: FilterRequest, callbacks: FilterCallbacks, found: readonly Found[], now: number): Promise<void> {
    const outcomes: Outcome[] = [];
    try {
      // Every token must verify (Envoy: a good token beside a bad one must not pass).
      for (const f of found) {
        const o = await this.#config.outcome(f, now);
        if (this.#done || callbacks.aborted) return;
        if (o.status !== JwtStatus.Ok) {
          this.#fail(req, callbacks, o.status);
          return;
        }
        outcomes.push(o);
      }
    } catch {
      // Verification does not throw by design; should it, the request fails closed.
      if (!this.#done && !callbacks.aborted) this.#fail(req, callbacks, JwtStatus.JwtVerificationFail);
      return;
    }
    this.#succeed(req, callbacks, found, outcomes);
    callbacks.continueRequest();
  }

  #succeed(req: FilterRequest, callbacks: FilterCallbacks, found: readonly Found[], outcomes: readonly Outcome[]): void {
    for (let i = 0; i < found.length; i++) outcomes[i]!.provider!.applyOutputs(req, found[i]!.jwt, found[i]!.location);
    req.auth = found[0]!.jwt.auth;
    if (this.#config.clearRouteCache) callbacks.clearRouteCache();
  }

  #fail(req: FilterRequest, callbacks: FilterCallbacks, status: JwtStatus): FilterStatus {
    this.#done = true;
    const path = req.path.length > MAX_REALM_PATH ? req.path.slice(0, MAX_REALM_PATH) : req.path;
    callbacks.addResponseHeader('www-authenticate', `Bearer realm="${req.scheme}://${req.authority}${path}", error="invalid_token"`);
    callbacks.sendLocalReply(statusHttpCode(status), statusMessage(status), null, statusDetails(status));
    return FilterStatus.StopIteration;
  }
}
