/**
 * The request attributes an AuthorizationPolicy can test, each compiled from a list of values
 * into one matcher that says whether ANY of the values matches (Istio ORs a field's values).
 * They are what istiod's authz model generators emit as Envoy RBAC principals and
 * permissions (pilot/pkg/security/authz/model/generator.go), evaluated directly.
 */
import { Regex } from '@remora/config';
import type { FilterRequest } from '../filter.ts';
import { type CidrRange, parseRequestIp, scratchInAny } from './authz-cidr.ts';
import { anyMatches, type StringPattern } from './authz-string.ts';

/** One field (or condition) with its values: true when any value matches the request. */
export interface AttributeMatcher {
  /** `pathEnd`: the length of the path without its query string (computed once per request). */
  matches(req: FilterRequest, pathEnd: number): boolean;
}

/** `principals`, `source.principal`: the peer's mTLS identity (Envoy `authenticated.principal_name`). */
export class PeerPrincipalMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const peer = req.peer;
    return peer !== null && anyMatches(this.#patterns, peer.principal);
  }
}

/**
 * `namespaces`, `source.namespace`: the peer's namespace; `*` anywhere in a value matches any
 * text (istiod turns it into `.*` inside its regex on the principal: any, then `/ns/<v>/`, then any).
 * Globs run on RE2, as Envoy runs istiod's regex: several `*` cannot make a match backtrack.
 */
export class PeerNamespaceMatcher implements AttributeMatcher {
  readonly #exact: ReadonlySet<string>;
  readonly #globs: readonly Regex[];
  constructor(values: readonly string[]) {
    const exact = new Set<string>();
    const globs: Regex[] = [];
    for (const v of values) {
      if (v.includes('*')) globs.push(new Regex(v.split('*').map(escapeRegExp).join('.*')));
      else exact.add(v);
    }
    this.#exact = exact;
    this.#globs = globs;
  }
  matches(req: FilterRequest): boolean {
    const peer = req.peer;
    if (peer === null) return false;
    if (this.#exact.has(peer.namespace)) return true;
    for (let i = 0; i < this.#globs.length; i++) if (this.#globs[i]!.matchesAll(peer.namespace)) return true;
    return false;
  }
}

/**
 * `serviceAccounts`, `source.serviceAccount` (Istio 1.25): `ns/sa`, or `sa` in the policy's
 * namespace, against the peer identity, with istiod's regex
 * `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` (on the principal, which has no `spiffe://`).
 */
export class ServiceAccountMatcher implements AttributeMatcher {
  /** On RE2, as Envoy runs them. */
  readonly #regexes: readonly Regex[];
  constructor(values: readonly string[], policyNamespace: string) {
    this.#regexes = values.map((v) => {
      const slash = v.indexOf('/');
      const ns = slash < 0 ? policyNamespace : v.slice(0, slash);
      const sa = slash < 0 ? v : v.slice(slash + 1);
      return new Regex(`.+/ns/${escapeRegExp(ns)}/(.+/|)sa/${escapeRegExp(sa)}(/.+)?`);
    });
  }
  matches(req: FilterRequest): boolean {
    const peer = req.peer;
    if (peer === null) return false;
    for (let i = 0; i < this.#regexes.length; i++) if (this.#regexes[i]!.matchesAll(peer.principal)) return true;
    return false;
  }
}

/** One `requestPrincipals` value split as istiod splits it: issuer and subject matchers. */
export interface IssuerSubject {
  readonly issuer: StringPattern;
  readonly subject: StringPattern;
}

/** `requestPrincipals`, `request.auth.principal`: the JWT's `iss` and `sub` (istiod's extended generator). */
export class RequestPrincipalMatcher implements AttributeMatcher {
  readonly #values: readonly IssuerSubject[];
  constructor(values: readonly IssuerSubject[]) {
    this.#values = values;
  }
  matches(req: FilterRequest): boolean {
    const auth = req.auth;
    if (auth === null) return false;
    for (let i = 0; i < this.#values.length; i++) {
      const v = this.#values[i]!;
      if (v.issuer.matches(auth.issuer) && v.subject.matches(auth.subject)) return true;
    }
    return false;
  }
}

/** `request.auth.audiences`: any audience of the token. */
export class AudienceMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const auth = req.auth;
    if (auth === null) return false;
    const auds = auth.audiences;
    for (let i = 0; i < auds.length; i++) if (anyMatches(this.#patterns, auds[i]!)) return true;
    return false;
  }
}

/** `request.auth.presenter`: the token's `azp`. */
export class PresenterMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const auth = req.auth;
    return auth !== null && auth.presenter !== '' && anyMatches(this.#patterns, auth.presenter);
  }
}

/**
 * `request.auth.claims[a][b]…`: the claim at that path of the token's payload. A string claim
 * matches when a value matches it; a list claim when a value matches one of its string
 * elements (istiod's list-or-value metadata matcher); other types never match.
 */
export class ClaimMatcher implements AttributeMatcher {
  readonly #path: readonly string[];
  readonly #patterns: readonly StringPattern[];
  constructor(path: readonly string[], patterns: readonly StringPattern[]) {
    this.#path = path;
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const auth = req.auth;
    if (auth === null) return false;
    let v: unknown = auth.claims;
    for (let i = 0; i < this.#path.length; i++) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
      const key = this.#path[i]!;
      if (!Object.hasOwn(v, key)) return false;
      v = (v as Record<string, unknown>)[key];
    }
    if (typeof v === 'string') return anyMatches(this.#patterns, v);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const e: unknown = v[i];
        if (typeof e === 'string' && anyMatches(this.#patterns, e)) return true;
      }
    }
    return false;
  }
}

/** Which address an IP matcher reads. */
export type IpSource = 'source' | 'remote' | 'destination';

/** `ipBlocks`/`source.ip` (peer address), `remoteIpBlocks`/`remote.ip` (client per X-Forwarded-For), `destination.ip`. */
export class IpMatcher implements AttributeMatcher {
  readonly #which: IpSource;
  readonly #ranges: readonly CidrRange[];
  constructor(which: IpSource, ranges: readonly CidrRange[]) {
    this.#which = which;
    this.#ranges = ranges;
  }
  matches(req: FilterRequest): boolean {
    const ip = this.#which === 'source' ? req.sourceIp : this.#which === 'remote' ? req.remoteIp : req.destinationIp;
    return scratchInAny(parseRequestIp(ip), this.#ranges);
  }
}

/** `ports`, `destination.port`: the port the connection was accepted on. */
export class PortMatcher implements AttributeMatcher {
  readonly #ports: ReadonlySet<number>;
  constructor(ports: readonly number[]) {
    this.#ports = new Set(ports);
  }
  matches(req: FilterRequest): boolean {
    return this.#ports.has(req.destinationPort);
  }
}

/** `hosts`: `:authority`, case-insensitive; `*` means present. */
export class HostMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const a = req.authority;
    return a !== '' && anyMatches(this.#patterns, a);
  }
}

/** `methods`: `:method`, case-sensitive. */
export class MethodMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    return anyMatches(this.#patterns, req.method);
  }
}

/**
 * `paths`: the path without its query string (Envoy `url_path`), exact, prefix, suffix or `*`;
 * path templates (`{*}`, `{**}`) as Envoy's uri_template matcher compiles them to regexes.
 */
export class PathMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  readonly #templates: readonly Regex[];
  constructor(patterns: readonly StringPattern[], templates: readonly Regex[]) {
    this.#patterns = patterns;
    this.#templates = templates;
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    const path = req.path;
    if (anyMatches(this.#patterns, path, pathEnd)) return true;
    // Template regexes take an optional `?…`/`#…` tail: no substring needed.
    for (let i = 0; i < this.#templates.length; i++) if (this.#templates[i]!.matchesAll(path)) return true;
    return false;
  }
}

/** Pseudo-headers a `request.headers[...]` key may name, read from the request line. */
const PSEUDO_HEADERS: Readonly<Record<string, (req: FilterRequest) => string>> = {
  ':authority': (req) => req.authority,
  ':method': (req) => req.method,
  ':path': (req) => req.path,
  ':scheme': (req) => req.scheme,
};

/** `request.headers[name]`: the header's value (repeated headers joined with `,`, as Envoy matches them); `*` means present. */
export class HeaderMatcher implements AttributeMatcher {
  readonly #name: string;
  readonly #pseudo: ((req: FilterRequest) => string) | null;
  readonly #patterns: readonly StringPattern[];
  constructor(name: string, patterns: readonly StringPattern[]) {
    this.#name = name.toLowerCase();
    this.#pseudo = PSEUDO_HEADERS[this.#name] ?? null;
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    return anyMatches(this.#patterns, this.#pseudo === null ? req.requestHeader(this.#name) : this.#pseudo(req));
  }
}

/**
 * `request.experimental.inline.headers[name]`: like `request.headers`, but a value may match any
 * one of the comma-separated values of the header (istiod's `HeaderMatcherWithRegex`).
 */
export class InlineHeaderMatcher implements AttributeMatcher {
  readonly #name: string;
  readonly #patterns: readonly StringPattern[];
  constructor(name: string, patterns: readonly StringPattern[]) {
    this.#name = name.toLowerCase();
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    const h = req.requestHeader(this.#name);
    if (h === null) return false;
    let start = 0;
    for (;;) {
      const comma = h.indexOf(',', start);
      const end = comma < 0 ? h.length : comma;
      for (let i = 0; i < this.#patterns.length; i++) if (this.#patterns[i]!.matchesRegion(h, start, end)) return true;
      if (comma < 0) return false;
      start = comma + 1;
    }
  }
}

/** `connection.sni`: the TLS server name ('' for plaintext, which nothing but a negation matches). */
export class SniMatcher implements AttributeMatcher {
  readonly #patterns: readonly StringPattern[];
  constructor(patterns: readonly StringPattern[]) {
    this.#patterns = patterns;
  }
  matches(req: FilterRequest): boolean {
    return anyMatches(this.#patterns, req.sni);
  }
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
