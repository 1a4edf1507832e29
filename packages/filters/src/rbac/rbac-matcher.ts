/**
 * Envoy RBAC's permission and principal trees (envoy.config.rbac.v3.Permission / Principal),
 * compiled once per snapshot into matcher objects; a request only walks them. The request's
 * path end (without query and fragment) is computed once per request and passed down.
 */
import { Regex } from '@remora/config';
import type { PermissionJson, PrincipalJson } from '@remora/config/envoy/gen/envoy/config/rbac/v3/rbac_pb.js';
import type { HeaderMatcherJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import type { CidrRangeJson } from '@remora/config/envoy/gen/envoy/config/core/v3/address_pb.js';
import type { MetadataMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/metadata_pb.js';
import type { ValueMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/value_pb.js';
import type { FilterRequest, PeerIdentity, RequestAuth } from '../filter.ts';
import { CidrRange, parseCidr, parseRequestIp, scratchInAny } from './rbac-cidr.ts';
import { StringMatch } from './rbac-string.ts';

/** One node of a permission or principal tree. */
export interface RbacMatcher {
  matches(req: FilterRequest, pathEnd: number): boolean;
  /**
   * Rough evaluation cost, for ordering: and/or have no side effects, so their children run
   * cheapest first (a port or exact header before an RE2 regex) and fail or succeed early.
   */
  readonly cost: number;
}

/** Costs: a field compare, a string compare, a walk of the JWT payload, an RE2 match. */
const COST_FIELD = 1;
const COST_STRING = 2;
const COST_METADATA = 4;
const COST_REGEX = 20;

/** What compiling a tree reports besides errors (thrown, naming the JSON path). */
export interface RbacCompileSink {
  warn(message: string): void;
}

const ANY: RbacMatcher = { matches: () => true, cost: 0 };

function byCost(ms: readonly RbacMatcher[]): RbacMatcher[] {
  return [...ms].sort((a, b) => a.cost - b.cost);
}

function sumCost(ms: readonly RbacMatcher[]): number {
  let c = 0;
  for (const m of ms) c += m.cost;
  return c;
}

class AndMatcher implements RbacMatcher {
  readonly #all: readonly RbacMatcher[];
  readonly cost: number;
  constructor(all: readonly RbacMatcher[]) {
    this.#all = byCost(all);
    this.cost = sumCost(all);
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    const all = this.#all;
    for (let i = 0; i < all.length; i++) if (!all[i]!.matches(req, pathEnd)) return false;
    return true;
  }
}

class OrMatcher implements RbacMatcher {
  readonly #any: readonly RbacMatcher[];
  readonly cost: number;
  constructor(any: readonly RbacMatcher[]) {
    this.#any = byCost(any);
    this.cost = sumCost(any);
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    const any = this.#any;
    for (let i = 0; i < any.length; i++) if (any[i]!.matches(req, pathEnd)) return true;
    return false;
  }
}

class NotMatcher implements RbacMatcher {
  readonly #m: RbacMatcher;
  readonly cost: number;
  constructor(m: RbacMatcher) {
    this.#m = m;
    this.cost = m.cost;
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    return !this.#m.matches(req, pathEnd);
  }
}

/** Pseudo-headers read from the request line. */
const PSEUDO_HEADERS: Readonly<Record<string, (req: FilterRequest) => string>> = {
  ':authority': (req) => req.authority,
  ':method': (req) => req.method,
  ':path': (req) => req.path,
  ':scheme': (req) => req.scheme,
};

const HeaderKind = { Present: 0, String: 1, Range: 2 } as const;

/**
 * Envoy's route HeaderMatcher: repeated headers joined with `,`; an absent header matches
 * nothing (inverted or not) except `present_match: false`, unless `treat_missing_header_as_empty`.
 */
export class HeaderRule implements RbacMatcher {
  readonly #name: string;
  readonly #pseudo: ((req: FilterRequest) => string) | null;
  readonly #kind: number;
  readonly #present: boolean;
  readonly #string: StringMatch | null;
  readonly #rangeStart: number;
  readonly #rangeEnd: number;
  readonly #invert: boolean;
  readonly #missingAsEmpty: boolean;
  readonly cost: number;

  constructor(h: HeaderMatcherJson, at: string) {
    if (typeof h.name !== 'string' || h.name === '') throw new Error(`${at}.name: required`);
    this.#name = h.name.toLowerCase();
    this.#pseudo = PSEUDO_HEADERS[this.#name] ?? null;
    this.#invert = h.invertMatch === true;
    this.#missingAsEmpty = h.treatMissingHeaderAsEmpty === true;
    let kind: number = HeaderKind.String;
    let present = false;
    let str: StringMatch | null = null;
    let start = 0;
    let end = 0;
    if (h.presentMatch !== undefined) {
      kind = HeaderKind.Present;
      present = h.presentMatch;
    } else if (h.stringMatch !== undefined) str = new StringMatch(h.stringMatch, `${at}.stringMatch`);
    else if (h.exactMatch !== undefined) str = new StringMatch({ exact: h.exactMatch }, `${at}.exactMatch`);
    else if (h.prefixMatch !== undefined) str = new StringMatch({ prefix: h.prefixMatch }, `${at}.prefixMatch`);
    else if (h.suffixMatch !== undefined) str = new StringMatch({ suffix: h.suffixMatch }, `${at}.suffixMatch`);
    else if (h.containsMatch !== undefined) str = new StringMatch({ contains: h.containsMatch }, `${at}.containsMatch`);
    else if (h.safeRegexMatch !== undefined) str = new StringMatch({ safeRegex: h.safeRegexMatch }, `${at}.safeRegexMatch`);
    else if (h.rangeMatch !== undefined) {
      kind = HeaderKind.Range;
      start = Number(h.rangeMatch.start ?? 0);
      end = Number(h.rangeMatch.end ?? 0);
    } else {
      // No specifier: Envoy matches on presence.
      kind = HeaderKind.Present;
      present = true;
    }
    this.#kind = kind;
    this.#present = present;
    this.#string = str;
    this.#rangeStart = start;
    this.#rangeEnd = end;
    this.cost = COST_FIELD + (str === null ? 0 : str.cost);
  }

  /** The header name and string matcher when this is a plain string match (no invert, absent never matches); else null. */
  get simple(): { readonly name: string; readonly match: StringMatch } | null {
    if (this.#kind !== HeaderKind.String || this.#invert || this.#missingAsEmpty) return null;
    return { name: this.#name, match: this.#string! };
  }

  matches(req: FilterRequest): boolean {
    let value = this.#pseudo === null ? req.requestHeader(this.#name) : this.#pseudo(req);
    if (value === null) {
      if (!this.#missingAsEmpty) return this.#kind === HeaderKind.Present && this.#present === this.#invert;
      value = '';
    }
    let m: boolean;
    if (this.#kind === HeaderKind.Present) m = this.#present;
    else if (this.#kind === HeaderKind.String) m = this.#string!.matches(value);
    else {
      const n = /^-?[0-9]+$/.test(value) ? Number(value) : NaN;
      m = n >= this.#rangeStart && n < this.#rangeEnd;
    }
    return m !== this.#invert;
  }
}

/**
 * Several plain string matches on one header, ORed (istiod's form for a field's values): the
 * header is read once and each matcher runs inline, without a call per value.
 */
class HeaderAnyRule implements RbacMatcher {
  readonly #name: string;
  readonly #pseudo: ((req: FilterRequest) => string) | null;
  readonly #ms: readonly StringMatch[];
  readonly cost: number;
  constructor(name: string, ms: readonly StringMatch[]) {
    this.#name = name;
    this.#pseudo = PSEUDO_HEADERS[name] ?? null;
    this.#ms = [...ms].sort((a, b) => a.cost - b.cost);
    this.cost = COST_FIELD + ms.reduce((c, m) => c + m.cost, 0);
  }
  matches(req: FilterRequest): boolean {
    const value = this.#pseudo === null ? req.requestHeader(this.#name) : this.#pseudo(req);
    if (value === null) return false;
    const ms = this.#ms;
    for (let i = 0; i < ms.length; i++) if (ms[i]!.matches(value)) return true;
    return false;
  }
}

/** Several `url_path` matchers ORed: one call, each matcher inline. */
class UrlPathAnyRule implements RbacMatcher {
  readonly #ms: readonly StringMatch[];
  readonly cost: number;
  constructor(ms: readonly StringMatch[]) {
    this.#ms = [...ms].sort((a, b) => a.cost - b.cost);
    this.cost = ms.reduce((c, m) => c + m.cost, 0);
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    const ms = this.#ms;
    const path = req.path;
    for (let i = 0; i < ms.length; i++) if (ms[i]!.matchesRegion(path, 0, pathEnd)) return true;
    return false;
  }
}

/** `url_path`: the path without query string and fragment. */
class UrlPathRule implements RbacMatcher {
  readonly #m: StringMatch;
  readonly cost: number;
  constructor(m: StringMatch) {
    this.#m = m;
    this.cost = m.cost;
  }
  get match(): StringMatch {
    return this.#m;
  }
  matches(req: FilterRequest, pathEnd: number): boolean {
    return this.#m.matchesRegion(req.path, 0, pathEnd);
  }
}

/** `uri_template` (envoy.extensions.path.match.uri_template): `*` one segment, `**` the rest. */
class UriTemplateRule implements RbacMatcher {
  readonly #re: Regex;
  /** The template's literal start (up to its first operator): most paths fail on it without the regex. */
  readonly #prefix: string;
  readonly cost = COST_REGEX;
  constructor(re: Regex, prefix: string) {
    this.#re = re;
    this.#prefix = prefix;
  }
  matches(req: FilterRequest): boolean {
    const path = req.path;
    // The regex takes an optional query/fragment tail: no substring needed.
    return path.startsWith(this.#prefix) && this.#re.matchesAll(path);
  }
}

type IpSource = 'direct' | 'remote' | 'destination';

class CidrRule implements RbacMatcher {
  readonly #which: IpSource;
  readonly #range: readonly CidrRange[];
  readonly cost = COST_STRING;
  constructor(which: IpSource, range: CidrRange) {
    this.#which = which;
    this.#range = [range];
  }
  matches(req: FilterRequest): boolean {
    const ip = this.#which === 'direct' ? req.sourceIp : this.#which === 'remote' ? req.remoteIp : req.destinationIp;
    return scratchInAny(parseRequestIp(ip), this.#range);
  }
}

class PortRule implements RbacMatcher {
  readonly #start: number;
  /** Exclusive. */
  readonly #end: number;
  readonly cost = COST_FIELD;
  constructor(start: number, end: number) {
    this.#start = start;
    this.#end = end;
  }
  matches(req: FilterRequest): boolean {
    return req.destinationPort >= this.#start && req.destinationPort < this.#end;
  }
}

class SniRule implements RbacMatcher {
  readonly #m: StringMatch;
  readonly cost: number;
  constructor(m: StringMatch) {
    this.#m = m;
    this.cost = m.cost;
  }
  matches(req: FilterRequest): boolean {
    return this.#m.matches(req.sni);
  }
}

/** The peer's SPIFFE URI (`spiffe://` + Istio principal), built once per peer identity. */
const peerUris = new WeakMap<PeerIdentity, string>();
function peerUri(peer: PeerIdentity): string {
  let uri = peerUris.get(peer);
  if (uri === undefined) peerUris.set(peer, (uri = `spiffe://${peer.principal}`));
  return uri;
}

/** `authenticated`: an mTLS peer; `principal_name` against its URI SAN. */
class AuthenticatedRule implements RbacMatcher {
  readonly #name: StringMatch | null;
  readonly cost: number;
  constructor(name: StringMatch | null) {
    this.#name = name;
    this.cost = COST_FIELD + (name === null ? 0 : name.cost);
  }
  matches(req: FilterRequest): boolean {
    const peer = req.peer;
    if (peer === null) return false;
    return this.#name === null || this.#name.matches(peerUri(peer));
  }
}

// --- Metadata: the verified JWT, as jwt_authn (`payload`) and Istio's istio_authn expose it ---

/** Reads the metadata value a matcher's path names, from the request; undefined when absent. */
type MetadataReader = (auth: RequestAuth) => unknown;

/** A compiled ValueMatcher on a JSON-like value (google.protobuf.Value as the JWT payload gives it). */
type ValueTest = (v: unknown) => boolean;

function compileValue(v: ValueMatcherJson | undefined, at: string): ValueTest {
  if (v === undefined || v === null) throw new Error(`${at}: required`);
  if (v.stringMatch !== undefined) {
    const m = new StringMatch(v.stringMatch, `${at}.stringMatch`);
    return (x) => typeof x === 'string' && m.matches(x);
  }
  if (v.presentMatch !== undefined) {
    const want = v.presentMatch;
    return (x) => (x !== undefined) === want;
  }
  if (v.nullMatch !== undefined) return (x) => x === null;
  if (v.boolMatch !== undefined) {
    const want = v.boolMatch;
    return (x) => x === want;
  }
  if (v.doubleMatch !== undefined) {
    const d = v.doubleMatch;
    if (d.exact !== undefined) {
      const want = Number(d.exact);
      return (x) => typeof x === 'number' && x === want;
    }
    if (d.range !== undefined) {
      const start = Number(d.range.start ?? -Infinity);
      const end = Number(d.range.end ?? Infinity);
      return (x) => typeof x === 'number' && x >= start && x < end;
    }
    throw new Error(`${at}.doubleMatch: exact or range is required`);
  }
  if (v.listMatch !== undefined) {
    const one = compileValue(v.listMatch.oneOf, `${at}.listMatch.oneOf`);
    return (x) => {
      if (!Array.isArray(x)) return false;
      for (let i = 0; i < x.length; i++) if (one(x[i])) return true;
      return false;
    };
  }
  if (v.orMatch !== undefined) {
    const all = (v.orMatch.valueMatchers ?? []).map((m, i) => compileValue(m, `${at}.orMatch.valueMatchers[${i}]`));
    return (x) => {
      for (let i = 0; i < all.length; i++) if (all[i]!(x)) return true;
      return false;
    };
  }
  throw new Error(`${at}: one of stringMatch, presentMatch, nullMatch, boolMatch, doubleMatch, listMatch or orMatch is required`);
}

/** A nested key of a JSON object; undefined when a step is missing or not an object. */
function dig(v: unknown, keys: readonly string[]): unknown {
  for (let i = 0; i < keys.length; i++) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const key = keys[i]!;
    if (!Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** The filters whose dynamic metadata Remora has: the JWT result. */
export const JWT_AUTHN_METADATA = 'envoy.filters.http.jwt_authn';
export const ISTIO_AUTHN_METADATA = 'istio_authn';

const STANDARD_CLAIMS: Readonly<Record<string, MetadataReader>> = {
  iss: (auth) => auth.issuer,
  sub: (auth) => auth.subject,
  aud: (auth) => auth.audiences,
  azp: (auth) => (auth.presenter === '' ? undefined : auth.presenter),
};

/**
 * The reader for a metadata path, or null when Remora has no such metadata. jwt_authn's is the
 * payload under istiod's `payload_in_metadata: payload`; istio_authn's is keyed by Istio's
 * attribute names (`request.auth.principal`, `.audiences`, `.presenter`, `.claims` + path).
 */
function metadataReader(filter: string, path: readonly string[]): MetadataReader | null {
  if (filter === JWT_AUTHN_METADATA) {
    if (path[0] !== 'payload') return null;
    const rest = path.slice(1);
    // The standard claims also have fields of their own in RequestAuth, for a payload that lacks them.
    if (rest.length === 1) {
      const fallback = STANDARD_CLAIMS[rest[0]!];
      if (fallback !== undefined) return (auth) => dig(auth.claims, rest) ?? fallback(auth);
    }
    return (auth) => dig(auth.claims, rest);
  }
  if (filter === ISTIO_AUTHN_METADATA) {
    const rest = path.slice(1);
    switch (path[0]) {
      case 'request.auth.principal':
        return rest.length === 0 ? (auth) => auth.principal : null;
      case 'request.auth.audiences':
        return rest.length === 0 ? (auth) => auth.audiences : null;
      case 'request.auth.presenter':
        return rest.length === 0 ? (auth) => (auth.presenter === '' ? undefined : auth.presenter) : null;
      case 'request.auth.claims':
        return (auth) => dig(auth.claims, rest);
    }
  }
  return null;
}

/** `metadata`: Envoy's MetadataMatcher; an absent value matches only `invert`ed or `present_match: false`. */
class MetadataRule implements RbacMatcher {
  readonly #read: MetadataReader | null;
  readonly #test: ValueTest;
  readonly #invert: boolean;
  readonly cost = COST_METADATA;
  constructor(read: MetadataReader | null, test: ValueTest, invert: boolean) {
    this.#read = read;
    this.#test = test;
    this.#invert = invert;
  }
  matches(req: FilterRequest): boolean {
    const auth = req.auth;
    const v = auth === null || this.#read === null ? undefined : this.#read(auth);
    return this.#test(v) !== this.#invert;
  }
}

function compileMetadata(m: MetadataMatcherJson | undefined, at: string, sink: RbacCompileSink): RbacMatcher {
  if (m === undefined || m === null) throw new Error(`${at}: required`);
  const filter = m.filter ?? '';
  const path = (m.path ?? []).map((s, i) => {
    if (typeof s.key !== 'string') throw new Error(`${at}.path[${i}].key: required`);
    return s.key;
  });
  if (filter === '' || path.length === 0) throw new Error(`${at}: filter and path are required`);
  const read = metadataReader(filter, path);
  if (read === null) {
    sink.warn(`${at}: Remora has no dynamic metadata ${filter}[${path.join('.')}]: the matcher sees no value`);
  }
  return new MetadataRule(read, compileValue(m.value, `${at}.value`), m.invert === true);
}

function compileCidr(c: CidrRangeJson | undefined, at: string): CidrRange {
  if (c === undefined || typeof c.addressPrefix !== 'string') throw new Error(`${at}.addressPrefix: required`);
  const len = c.prefixLen;
  try {
    return parseCidr(len === undefined || len === null ? c.addressPrefix : `${c.addressPrefix}/${Number(len)}`);
  } catch (err) {
    throw new Error(`${at}: ${(err as Error).message}`);
  }
}

/** RFC 3986 pchar: what a template's `*` matches within a segment. */
const PCHAR = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";
const LITERAL = new RegExp(`^[${PCHAR}]+$`);

/**
 * A `uri_template` path template (`/a/*`, `/**` + literals; Envoy's `{name=*}` variables are
 * accepted with their operator) → the regex Envoy's matcher amounts to, allowing a query or
 * fragment after the path.
 */
function compileUriTemplate(template: unknown, at: string): UriTemplateRule {
  if (typeof template !== 'string' || !template.startsWith('/')) throw new Error(`${at}: a path template must start with /`);
  const segments = template.slice(1).split('/');
  let sawAny = false;
  const parts = segments.map((raw, i) => {
    const named = /^\{[a-zA-Z][a-zA-Z0-9_]*(?:=(\*\*?))?\}$/.exec(raw);
    const seg = named !== null ? (named[1] ?? '*') : raw;
    if (sawAny && (seg === '*' || seg === '**')) throw new Error(`${at}: ${template}: ** must be the last operator`);
    if (seg === '*') return `[${PCHAR}]+`;
    if (seg === '**') {
      sawAny = true;
      return `[${PCHAR}/]*`;
    }
    if (seg === '' && i !== segments.length - 1) throw new Error(`${at}: ${template}: empty path segment`);
    if (seg !== '' && !LITERAL.test(seg)) throw new Error(`${at}: ${template}: invalid literal ${seg}`);
    return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  const op = segments.findIndex((seg) => seg === '*' || seg === '**' || seg.startsWith('{'));
  const prefix = op < 0 ? template : `/${segments.slice(0, op).map((seg) => `${seg}/`).join('')}`;
  return new UriTemplateRule(new Regex(`/${parts.join('/')}(?:[?#](?s:.*))?`), prefix);
}

/** Compiles a Permission; throws naming `at` and the field. */
export function compilePermission(p: PermissionJson, at: string, sink: RbacCompileSink): RbacMatcher {
  if (p === null || typeof p !== 'object') throw new Error(`${at}: must be an object`);
  if (p.any === true) return ANY;
  if (p.andRules !== undefined) return and((p.andRules.rules ?? []).map((r, i) => compilePermission(r, `${at}.andRules.rules[${i}]`, sink)));
  if (p.orRules !== undefined) return or((p.orRules.rules ?? []).map((r, i) => compilePermission(r, `${at}.orRules.rules[${i}]`, sink)));
  if (p.notRule !== undefined) return new NotMatcher(compilePermission(p.notRule, `${at}.notRule`, sink));
  if (p.header !== undefined) return new HeaderRule(p.header, `${at}.header`);
  if (p.urlPath !== undefined) {
    if (p.urlPath.path === undefined) throw new Error(`${at}.urlPath.path: required`);
    return new UrlPathRule(new StringMatch(p.urlPath.path, `${at}.urlPath.path`));
  }
  if (p.destinationIp !== undefined) return new CidrRule('destination', compileCidr(p.destinationIp, `${at}.destinationIp`));
  if (p.destinationPort !== undefined) {
    const port = Number(p.destinationPort);
    return new PortRule(port, port + 1);
  }
  if (p.destinationPortRange !== undefined) {
    return new PortRule(Number(p.destinationPortRange.start ?? 0), Number(p.destinationPortRange.end ?? 0));
  }
  if (p.metadata !== undefined) return compileMetadata(p.metadata, `${at}.metadata`, sink);
  if (p.requestedServerName !== undefined) return new SniRule(new StringMatch(p.requestedServerName, `${at}.requestedServerName`));
  if (p.uriTemplate !== undefined) {
    const cfg = p.uriTemplate.typedConfig as { '@type'?: string; pathTemplate?: unknown } | undefined;
    if (cfg?.['@type'] !== 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig') {
      throw new Error(`${at}.uriTemplate.typedConfig: must be a UriTemplateMatchConfig`);
    }
    return compileUriTemplate(cfg.pathTemplate, `${at}.uriTemplate.typedConfig.pathTemplate`);
  }
  throw new Error(`${at}: no supported rule (any, andRules, orRules, notRule, header, urlPath, destinationIp, destinationPort, destinationPortRange, metadata, requestedServerName, uriTemplate)`);
}

/** Compiles a Principal; throws naming `at` and the field. */
export function compilePrincipal(p: PrincipalJson, at: string, sink: RbacCompileSink): RbacMatcher {
  if (p === null || typeof p !== 'object') throw new Error(`${at}: must be an object`);
  if (p.any === true) return ANY;
  if (p.andIds !== undefined) return and((p.andIds.ids ?? []).map((r, i) => compilePrincipal(r, `${at}.andIds.ids[${i}]`, sink)));
  if (p.orIds !== undefined) return or((p.orIds.ids ?? []).map((r, i) => compilePrincipal(r, `${at}.orIds.ids[${i}]`, sink)));
  if (p.notId !== undefined) return new NotMatcher(compilePrincipal(p.notId, `${at}.notId`, sink));
  if (p.authenticated !== undefined) {
    const name = p.authenticated.principalName;
    return new AuthenticatedRule(name === undefined ? null : new StringMatch(name, `${at}.authenticated.principalName`));
  }
  if (p.sourceIp !== undefined) return new CidrRule('direct', compileCidr(p.sourceIp, `${at}.sourceIp`));
  if (p.directRemoteIp !== undefined) return new CidrRule('direct', compileCidr(p.directRemoteIp, `${at}.directRemoteIp`));
  if (p.remoteIp !== undefined) return new CidrRule('remote', compileCidr(p.remoteIp, `${at}.remoteIp`));
  if (p.header !== undefined) return new HeaderRule(p.header, `${at}.header`);
  if (p.urlPath !== undefined) {
    if (p.urlPath.path === undefined) throw new Error(`${at}.urlPath.path: required`);
    return new UrlPathRule(new StringMatch(p.urlPath.path, `${at}.urlPath.path`));
  }
  if (p.metadata !== undefined) return compileMetadata(p.metadata, `${at}.metadata`, sink);
  throw new Error(`${at}: no supported identifier (any, andIds, orIds, notId, authenticated, sourceIp, directRemoteIp, remoteIp, header, urlPath, metadata)`);
}

/** A one-element set is its element: saves a call per level on istiod's single-field rules. */
function and(ms: RbacMatcher[]): RbacMatcher {
  return ms.length === 1 ? ms[0]! : new AndMatcher(ms);
}

/** Plain matches on one header, and url paths, are merged into one matcher each (same result, fewer calls). */
function or(ms: RbacMatcher[]): RbacMatcher {
  if (ms.length === 1) return ms[0]!;
  const headers = new Map<string, StringMatch[]>();
  const paths: StringMatch[] = [];
  const rest: RbacMatcher[] = [];
  for (const m of ms) {
    const simple = m instanceof HeaderRule ? m.simple : null;
    if (simple !== null) {
      let list = headers.get(simple.name);
      if (list === undefined) headers.set(simple.name, (list = []));
      list.push(simple.match);
    } else if (m instanceof UrlPathRule) paths.push(m.match);
    else rest.push(m);
  }
  for (const [name, list] of headers) rest.push(new HeaderAnyRule(name, list));
  if (paths.length > 0) rest.push(new UrlPathAnyRule(paths));
  return rest.length === 1 ? rest[0]! : new OrMatcher(rest);
}
