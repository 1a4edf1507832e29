/**
 * A JwtRequirement compiled into a tree of verifiers, decided as Envoy's jwt_authn decides
 * them (verifier.cc): a provider needs a token at one of its locations, and every token there
 * must verify with it; `requires_any` passes when one child passes, else fails with the most
 * telling child error (any error but "missing" and "unknown issuer", then "unknown issuer"),
 * unless it allows missing (`allow_missing`: only when no token was there at all) or failure
 * (`allow_missing_or_failed`); `requires_all` fails with its first failing child. A bare
 * `allow_missing` or `allow_missing_or_failed` reads the locations of every provider.
 *
 * Evaluation is a pure function of the request's tokens and a table of (token, provider)
 * outcomes. An outcome that needs a signature check (or a JWKS fetch) is "pending": the run
 * starts those checks, waits for them, and decides again with the table filled. A token these
 * keys verified before is decided at once, so the common request never waits.
 */
import type { JwtProvider, TokenLocation } from './jwt-authn-rules.ts';
import { JwtStatus } from './jwt-authn-status.ts';
import type { ParsedJwt } from './jwt-authn-token.ts';

/** Not yet decided: a signature check is running or must start. */
export const PENDING = -2;
/** Not looked at yet (a cell of the outcome table). */
const UNKNOWN = -1;

export type Decision = JwtStatus | typeof PENDING;

/** The tokens of one request and what is known about them; one per request that carries a token. */
export class VerifyRun {
  /** Per location: the parsed token, the reason it does not parse, or null when absent. */
  readonly tokens: readonly (ParsedJwt | JwtStatus | null)[];
  /** Outcomes by `location * providerCount + provider.index`: UNKNOWN, PENDING or a JwtStatus. */
  readonly outcomes: Int8Array;
  readonly providerCount: number;
  readonly now: number;
  /** Cells whose signature check must start, gathered by an evaluation. */
  toCheck: number[] | null = null;

  constructor(tokens: readonly (ParsedJwt | JwtStatus | null)[], providerCount: number, now: number) {
    this.tokens = tokens;
    this.providerCount = providerCount;
    this.outcomes = new Int8Array(tokens.length * providerCount).fill(UNKNOWN);
    this.now = now;
  }

  /** The outcome of the token at `loc` with provider `p`, starting what is needed to know it. */
  outcome(loc: number, jwt: ParsedJwt, p: JwtProvider): Decision {
    const cell = loc * this.providerCount + p.index;
    const known = this.outcomes[cell]!;
    if (known !== UNKNOWN) return known as Decision;
    let s: Decision = p.checkClaims(jwt, this.now);
    if (s === JwtStatus.Ok && !p.verifiedBefore(jwt)) {
      s = PENDING;
      (this.toCheck ??= []).push(cell);
    }
    this.outcomes[cell] = s;
    return s;
  }
}

/** One node of a compiled requirement. */
export interface Verifier {
  decide(run: VerifyRun, locations: readonly TokenLocation[]): Decision;
}

/** `provider_name` / `provider_and_audiences`: a token at the provider's locations, and all of them valid. */
export class ProviderVerifier implements Verifier {
  readonly #provider: JwtProvider;

  constructor(provider: JwtProvider) {
    this.#provider = provider;
  }

  decide(run: VerifyRun): Decision {
    const p = this.#provider;
    const locs = p.locations;
    let found = false;
    let pending = false;
    for (let i = 0; i < locs.length; i++) {
      const loc = locs[i]!;
      const token = run.tokens[loc];
      if (token === null || token === undefined) continue;
      found = true;
      if (typeof token === 'number') return token;
      if (!p.acceptsIssuer(token.iss)) return JwtStatus.JwtUnknownIssuer;
      const s = run.outcome(loc, token, p);
      if (s === PENDING) pending = true;
      else if (s !== JwtStatus.Ok) return s;
    }
    if (pending) return PENDING;
    return found ? JwtStatus.Ok : JwtStatus.JwtMissed;
  }
}

/**
 * `allow_missing` / `allow_missing_or_failed` on their own: the tokens at every provider's
 * locations, each verified by a provider that reads its location and names its issuer.
 * Without tokens: Ok. Allowing failures: Ok once every token was tried (the verified ones
 * still give their outputs). Allowing only missing: every token must verify (Envoy lets the
 * last one it tries decide; Remora refuses a bad token beside a good one, as providers do).
 */
export class AnyProviderVerifier implements Verifier {
  readonly #allowFailed: boolean;

  constructor(allowFailed: boolean) {
    this.#allowFailed = allowFailed;
  }

  decide(run: VerifyRun, locations: readonly TokenLocation[]): Decision {
    let pending = false;
    let failure: JwtStatus = JwtStatus.Ok;
    for (let loc = 0; loc < locations.length; loc++) {
      const token = run.tokens[loc];
      if (token === null || token === undefined) continue;
      const s = typeof token === 'number' ? token : anyProviderOutcome(run, loc, token, locations[loc]!);
      if (s === PENDING) pending = true;
      else if (s !== JwtStatus.Ok && failure === JwtStatus.Ok) failure = s;
    }
    if (pending) return PENDING;
    return this.#allowFailed ? JwtStatus.Ok : failure;
  }
}

/** A token checked by the providers of its location that name its issuer: the first that verifies wins, else the last failure. */
function anyProviderOutcome(run: VerifyRun, loc: number, jwt: ParsedJwt, location: TokenLocation): Decision {
  const providers = location.providersFor(jwt.iss);
  let status: Decision = JwtStatus.JwtUnknownIssuer;
  let pending = false;
  for (let i = 0; i < providers.length; i++) {
    const s = run.outcome(loc, jwt, providers[i]!);
    if (s === JwtStatus.Ok) return s;
    if (s === PENDING) pending = true;
    else status = s;
  }
  return pending ? PENDING : status;
}

/** `requires_any`, with its `allow_missing` / `allow_missing_or_failed` members as flags. */
export class AnyVerifier implements Verifier {
  readonly #children: readonly Verifier[];
  readonly #allowMissing: boolean;
  readonly #allowFailed: boolean;

  constructor(children: readonly Verifier[], allowMissing: boolean, allowFailed: boolean) {
    this.#children = children;
    this.#allowMissing = allowMissing;
    this.#allowFailed = allowFailed;
  }

  decide(run: VerifyRun, locations: readonly TokenLocation[]): Decision {
    const children = this.#children;
    let pending = false;
    let final: JwtStatus = JwtStatus.JwtMissed;
    for (let i = 0; i < children.length; i++) {
      const s = children[i]!.decide(run, locations);
      if (s === JwtStatus.Ok) return s;
      if (s === PENDING) {
        pending = true;
        continue;
      }
      // Envoy prefers an error other than "missing" and "unknown issuer", then "unknown issuer".
      if ((s !== JwtStatus.JwtMissed && s !== JwtStatus.JwtUnknownIssuer) || final === JwtStatus.JwtMissed) final = s;
    }
    if (pending) return PENDING;
    if (this.#allowFailed) return JwtStatus.Ok;
    if (this.#allowMissing && final === JwtStatus.JwtMissed) return JwtStatus.Ok;
    return final;
  }
}

/** `requires_all`: every child; the first failure decides. */
export class AllVerifier implements Verifier {
  readonly #children: readonly Verifier[];

  constructor(children: readonly Verifier[]) {
    this.#children = children;
  }

  decide(run: VerifyRun, locations: readonly TokenLocation[]): Decision {
    const children = this.#children;
    let pending = false;
    for (let i = 0; i < children.length; i++) {
      const s = children[i]!.decide(run, locations);
      if (s === PENDING) pending = true;
      else if (s !== JwtStatus.Ok) return s;
    }
    return pending ? PENDING : JwtStatus.Ok;
  }
}

/** A requirement with no type set: everything passes. */
export const ALLOW_ALL: Verifier = { decide: () => JwtStatus.Ok };
