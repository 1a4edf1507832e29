/**
 * The per-request step of Envoy's jwt_authn. The requirement comes from the route's
 * `PerRouteConfig` (disabled, or a `requirement_map` entry by name), else from the first
 * `rules` entry whose match takes the request path; none: the request passes untouched.
 * Tokens are looked for at every provider location, decided by the requirement's verifiers,
 * and a failure is a local reply with jwt_verify_lib's message (401, 403 for a disallowed
 * audience) and `www-authenticate: Bearer realm="<uri>", error="invalid_token"`. On success
 * each verified token gives its provider's outputs, and the first one verified by a provider
 * with `payload_in_metadata` becomes `request.auth`. Tokens verified before with the same keys
 * complete without waiting; others stop the chain until their signature checks end.
 *
 * istiod's config (RequestAuthentication) requires any provider or no token at all: a request
 * without a token passes unauthenticated and authorization decides.
 */
import { LRUCache } from 'lru-cache';
import { FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter, type HttpFilterConfig, type RequestAuth } from '../filter.ts';
import type { Stat } from '../filter-stats.ts';
import type { JwtProvider, TokenLocation } from './jwt-authn-rules.ts';
import { JwtStatus, statusDetails, statusHttpCode, statusMessage } from './jwt-authn-status.ts';
import { type ParsedJwt, parseJwt } from './jwt-authn-token.ts';
import { type Decision, PENDING, type Verifier, VerifyRun } from './jwt-authn-verifier.ts';

/** Envoy's `MaximumUriLength` for the realm in `www-authenticate`. */
const MAX_REALM_PATH = 256;
/** Parsed tokens remembered by their text (parsing is pure): at most this many... */
const PARSED_CACHE_SIZE = 1000;
/** ...and at most this many characters of token text, so large made-up tokens cannot pin memory. */
const PARSED_CACHE_CHARS = 2_000_000;

/** A `rules` entry: the paths it takes, and its requirement (null: these paths are not checked). */
export interface RequirementRule {
  readonly matches: (path: string) => boolean;
  readonly verifier: Verifier | null;
}

/** A route's `PerRouteConfig` (typed_per_filter_config), compiled. */
export interface JwtAuthnRouteConfig {
  readonly disabled: boolean;
  /** The `requirement_map` entry the route uses; '' with `disabled`. */
  readonly requirementName: string;
}

/**
 * Envoy's jwt_authn counters, `http.<stat_prefix>.jwt_authn.*`. As Envoy, a request the filter
 * lets through counts as allowed even when no rule required a token (or it is a bypassed CORS
 * preflight, also counted as such), and every refusal counts as denied.
 */
export interface JwtAuthnStats {
  readonly allowed: Stat;
  readonly denied: Stat;
  readonly corsPreflightBypassed: Stat;
  readonly jwksFetchSuccess: Stat;
  readonly jwksFetchFailed: Stat;
}

/** The compiled JWT authentication of one listener in one snapshot. */
export class JwtAuthnFilterConfig implements HttpFilterConfig {
  readonly name: string;
  /** Every provider, audience variants included, by `index`. */
  readonly providers: readonly JwtProvider[];
  readonly locations: readonly TokenLocation[];
  /** Output headers removed from every checked request before its tokens are looked at. */
  readonly sanitize: readonly string[];
  readonly rules: readonly RequirementRule[];
  readonly requirementMap: ReadonlyMap<string, Verifier>;
  /** `bypass_cors_preflight`: a CORS preflight carries no credentials and is not checked. */
  readonly bypassCorsPreflight: boolean;
  /** Whether a rule needs the path (istiod's single prefix `/` rule does not). */
  readonly #needsPath: boolean;
  /** The run of a request without tokens: nothing in it changes, so every such request shares it. */
  readonly #noTokens: VerifyRun;
  readonly #parsed = new LRUCache<string, ParsedJwt>({ max: PARSED_CACHE_SIZE, maxSize: PARSED_CACHE_CHARS, sizeCalculation: (_v, token) => token.length });
  readonly stats: JwtAuthnStats;
  /** The clock, in seconds; replaceable for tests. */
  now: () => number = () => Date.now() / 1000;

  constructor(
    name: string,
    parts: {
      readonly providers: readonly JwtProvider[];
      readonly locations: readonly TokenLocation[];
      readonly sanitize: readonly string[];
      readonly rules: readonly RequirementRule[];
      readonly requirementMap: ReadonlyMap<string, Verifier>;
      readonly bypassCorsPreflight: boolean;
      readonly needsPath: boolean;
    },
    stats: JwtAuthnStats,
  ) {
    this.name = name;
    this.stats = stats;
    this.providers = parts.providers;
    this.locations = parts.locations;
    this.sanitize = parts.sanitize;
    this.rules = parts.rules;
    this.requirementMap = parts.requirementMap;
    this.bypassCorsPreflight = parts.bypassCorsPreflight;
    this.#needsPath = parts.needsPath;
    this.#noTokens = new VerifyRun(new Array<null>(parts.locations.length).fill(null), 0, 0);
  }

  create(): HttpFilter {
    return new JwtAuthnFilter(this);
  }

  /** The requirement of the first rule that takes the request's path; null: no rule does, or it checks nothing. */
  verifierFor(rawPath: string): Verifier | null {
    const rules = this.rules;
    if (rules.length === 0) return null;
    let path = rawPath;
    if (this.#needsPath) {
      const q = path.indexOf('?');
      if (q >= 0) path = path.slice(0, q);
    }
    for (let i = 0; i < rules.length; i++) if (rules[i]!.matches(path)) return rules[i]!.verifier;
    return null;
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
   * What the filter would decide on `req`, without counting it: the requirement, each token
   * and each provider's outcome, the identity handed on. Signature checks do run (they may
   * fetch a JWKS), as they would for the request.
   */
  async explain(req: FilterRequest): Promise<JwtExplanation> {
    const base = { tokens: [] as JwtExplanation['tokens'], auth: null, clearRouteCache: false };
    if (this.bypassCorsPreflight && req.method === 'OPTIONS' && req.requestHeader('origin') !== null && req.requestHeader('access-control-request-method') !== null) {
      return { ...base, requirement: 'cors-preflight-bypassed', allowed: true, httpStatus: null, message: 'OK' };
    }
    let verifier: Verifier | null;
    let requirement: JwtExplanation['requirement'] = 'rule';
    const route = req.routeFilterConfig(this.name) as JwtAuthnRouteConfig | null;
    if (route !== null) {
      if (route.disabled) return { ...base, requirement: 'disabled-by-route', allowed: true, httpStatus: null, message: 'OK' };
      verifier = this.requirementMap.get(route.requirementName) ?? null;
      if (verifier === null) {
        return { ...base, requirement: 'unknown-requirement-name', allowed: false, httpStatus: 403, message: `Wrong requirement_name: ${route.requirementName}` };
      }
      requirement = 'route';
    } else {
      verifier = this.verifierFor(req.path);
      if (verifier === null) return { ...base, requirement: 'none', allowed: true, httpStatus: null, message: 'OK' };
    }
    for (const h of this.sanitize) req.removeRequestHeader(h);
    const run = this.runFor(req);
    let decision: Decision = verifier.decide(run, this.locations);
    for (let round = 0; decision === PENDING && round <= run.outcomes.length; round++) {
      const cells = run.toCheck ?? [];
      run.toCheck = null;
      await Promise.all(
        cells.map(async (cell) => {
          run.outcomes[cell] = await this.providers[cell % run.providerCount]!.verifySignature(run.tokens[Math.floor(cell / run.providerCount)] as ParsedJwt);
        }),
      );
      decision = verifier.decide(run, this.locations);
    }
    const status: JwtStatus = decision === PENDING ? JwtStatus.JwtVerificationFail : decision;
    const n = run.providerCount;
    let auth: RequestAuth | null = null;
    let clearRouteCache = false;
    const tokens = run.tokens.flatMap((jwt, loc): JwtExplanation['tokens'] => {
      if (jwt === null || jwt === undefined) return [];
      const l = this.locations[loc]!;
      const location = `${['header', 'query parameter', 'cookie'][l.kind]!} ${l.name}${l.prefix === '' ? '' : ` (prefix ${JSON.stringify(l.prefix)})`}`;
      if (typeof jwt === 'number') return [{ location, issuer: null, problem: statusMessage(jwt), providers: [] }];
      const providers: { name: string; issuer: string; outcome: string }[] = [];
      for (let i = 0; i < n; i++) {
        const o = run.outcomes[loc * n + i]!;
        if (o < 0) continue;
        const p = this.providers[i]!;
        providers.push({ name: p.name, issuer: p.issuer, outcome: statusMessage(o as JwtStatus) });
        if (o === JwtStatus.Ok && status === JwtStatus.Ok) {
          if (auth === null && p.handsOnIdentity) auth = p.identity(jwt);
          if (p.clearRouteCache) clearRouteCache = true;
        }
      }
      if (providers.length === 0) providers.push(...l.providersFor(jwt.iss).map((p) => ({ name: p.name, issuer: p.issuer, outcome: 'not tried' })));
      return [{ location, issuer: jwt.iss, problem: l.providersFor(jwt.iss).length === 0 ? statusMessage(JwtStatus.JwtUnknownIssuer) : null, providers }];
    });
    const ok = status === JwtStatus.Ok;
    return { requirement, allowed: ok, httpStatus: ok ? null : statusHttpCode(status), message: statusMessage(status), tokens, auth, clearRouteCache };
  }

  /** The request's tokens, by location; the shared empty run when it has none. */
  runFor(req: FilterRequest): VerifyRun {
    const locations = this.locations;
    let tokens: (ParsedJwt | JwtStatus | null)[] | null = null;
    for (let i = 0; i < locations.length; i++) {
      const token = locations[i]!.extract(req);
      if (token === null) continue;
      tokens ??= new Array<ParsedJwt | JwtStatus | null>(locations.length).fill(null);
      tokens[i] = this.parse(token);
    }
    return tokens === null ? this.#noTokens : new VerifyRun(tokens, this.providers.length, this.now());
  }
}

/** What the JWT filter would decide on a request, as `JwtAuthnFilterConfig.explain` reports it. */
export interface JwtExplanation {
  /** Which requirement applies: none (no rule takes the path), a rule's, the route's, or the route disables the filter. */
  readonly requirement: 'none' | 'rule' | 'route' | 'disabled-by-route' | 'cors-preflight-bypassed' | 'unknown-requirement-name';
  readonly allowed: boolean;
  /** The local reply status when refused (401, 403); null when allowed. */
  readonly httpStatus: number | null;
  /** Envoy's message: `OK`, `Jwt is missing`, `Jwt is expired`, … */
  readonly message: string;
  /** The tokens found, where, and what each provider made of them. */
  readonly tokens: readonly {
    readonly location: string;
    readonly issuer: string | null;
    /** Why the token cannot be read at all; null when it parses. */
    readonly problem: string | null;
    readonly providers: readonly { readonly name: string; readonly issuer: string; readonly outcome: string }[];
  }[];
  /** The identity authorization would see (`request.auth.principal`, claims); null: none. */
  readonly auth: RequestAuth | null;
  /** A verified token's provider asks for the route to be chosen again (claims routing). */
  readonly clearRouteCache: boolean;
}

export class JwtAuthnFilter implements HttpFilter {
  readonly #config: JwtAuthnFilterConfig;
  #done = false;

  constructor(config: JwtAuthnFilterConfig) {
    this.#config = config;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const config = this.#config;
    const stats = config.stats;
    if (config.bypassCorsPreflight && req.method === 'OPTIONS' && req.requestHeader('origin') !== null && req.requestHeader('access-control-request-method') !== null) {
      stats.corsPreflightBypassed.value++;
      stats.allowed.value++;
      return FilterStatus.Continue;
    }
    let verifier: Verifier | null;
    const route = req.routeFilterConfig(config.name) as JwtAuthnRouteConfig | null;
    if (route !== null) {
      if (route.disabled) {
        stats.allowed.value++;
        return FilterStatus.Continue;
      }
      verifier = config.requirementMap.get(route.requirementName) ?? null;
      if (verifier === null) return this.#wrongRequirementName(callbacks, route.requirementName);
    } else {
      verifier = config.verifierFor(req.path);
      if (verifier === null) {
        stats.allowed.value++;
        return FilterStatus.Continue;
      }
    }
    const sanitize = config.sanitize;
    for (let i = 0; i < sanitize.length; i++) req.removeRequestHeader(sanitize[i]!);
    const run = config.runFor(req);
    const decision = verifier.decide(run, config.locations);
    if (decision === PENDING) {
      void this.#verify(req, callbacks, verifier, run);
      return FilterStatus.StopIteration;
    }
    if (decision !== JwtStatus.Ok) return this.#fail(req, callbacks, decision);
    this.#succeed(req, callbacks, run);
    return FilterStatus.Continue;
  }

  onDestroy(): void {
    this.#done = true;
  }

  /** Runs the signature checks the requirement waits for, and decides again, until it is decided. */
  async #verify(req: FilterRequest, callbacks: FilterCallbacks, verifier: Verifier, run: VerifyRun): Promise<void> {
    const config = this.#config;
    let decision: Decision = PENDING;
    try {
      // Each round settles at least one (token, provider) cell, so this ends.
      for (let round = 0; decision === PENDING && round <= run.outcomes.length; round++) {
        const cells = run.toCheck ?? [];
        run.toCheck = null;
        await Promise.all(
          cells.map(async (cell) => {
            const provider = config.providers[cell % run.providerCount]!;
            const jwt = run.tokens[Math.floor(cell / run.providerCount)] as ParsedJwt;
            run.outcomes[cell] = await provider.verifySignature(jwt);
          }),
        );
        if (this.#done || callbacks.aborted) return;
        decision = verifier.decide(run, config.locations);
      }
    } catch {
      // Verification does not throw by design; should it, the request fails closed.
      decision = JwtStatus.JwtVerificationFail;
    }
    if (this.#done || callbacks.aborted) return;
    if (decision !== JwtStatus.Ok) {
      this.#fail(req, callbacks, decision === PENDING ? JwtStatus.JwtVerificationFail : decision);
      return;
    }
    this.#succeed(req, callbacks, run);
    callbacks.continueRequest();
  }

  /** The outputs of every verified token, the identity for authorization, and a new route choice when asked for. */
  #succeed(req: FilterRequest, callbacks: FilterCallbacks, run: VerifyRun): void {
    const config = this.#config;
    config.stats.allowed.value++;
    const n = run.providerCount;
    if (n === 0) return;
    let clearRouteCache = false;
    let auth: RequestAuth | null = null;
    for (let loc = 0; loc < run.tokens.length; loc++) {
      const jwt = run.tokens[loc];
      if (jwt === null || typeof jwt === 'number' || jwt === undefined) continue;
      for (let i = 0; i < n; i++) {
        if (run.outcomes[loc * n + i] !== JwtStatus.Ok) continue;
        const p = config.providers[i]!;
        p.applyOutputs(req, jwt, config.locations[loc]!);
        if (auth === null && p.handsOnIdentity) auth = p.identity(jwt);
        if (p.clearRouteCache) clearRouteCache = true;
      }
    }
    if (auth !== null) req.auth = auth;
    if (clearRouteCache) callbacks.clearRouteCache();
  }

  /** Envoy's answer to a route naming a requirement the filter does not have. */
  #wrongRequirementName(callbacks: FilterCallbacks, name: string): FilterStatus {
    this.#done = true;
    this.#config.stats.denied.value++;
    const message = `Wrong requirement_name: ${name}. It should be one of [${[...this.#config.requirementMap.keys()].join(',')}]`;
    callbacks.sendLocalReply(403, `Failed JWT authentication: ${message}`, null, `jwt_authn_access_denied{${message.replace(/\s/g, '_')}}`);
    return FilterStatus.StopIteration;
  }

  #fail(req: FilterRequest, callbacks: FilterCallbacks, status: JwtStatus): FilterStatus {
    this.#done = true;
    this.#config.stats.denied.value++;
    const path = req.path.length > MAX_REALM_PATH ? req.path.slice(0, MAX_REALM_PATH) : req.path;
    callbacks.addResponseHeader('www-authenticate', `Bearer realm="${req.scheme}://${req.authority}${path}", error="invalid_token"`);
    callbacks.sendLocalReply(statusHttpCode(status), statusMessage(status), null, statusDetails(status));
    return FilterStatus.StopIteration;
  }
}
