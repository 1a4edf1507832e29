/**
 * Envoy's `StringMatcher` (envoy.type.matcher.v3), compiled once: exact, prefix, suffix,
 * contains (with `ignore_case`, ASCII folding as Envoy's) or `safe_regex` (RE2, whole value).
 * Matching works on a region of the value, so a path is matched without its query string and
 * without allocating.
 */
import { Regex } from '@remora/config';
import type { StringMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/string_pb.js';

const Kind = { Exact: 0, Prefix: 1, Suffix: 2, Contains: 3, Regex: 4 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];

export class StringMatch {
  readonly #kind: Kind;
  /** Evaluation cost for ordering (see RbacMatcher.cost). */
  readonly cost: number;
  /** Lower-case when ignoring case. */
  readonly #value: string;
  readonly #ignoreCase: boolean;
  readonly #regex: Regex | null;

  constructor(json: StringMatcherJson | undefined, at: string) {
    if (json === undefined || json === null || typeof json !== 'object') throw new Error(`${at}: a string matcher is required`);
    const ic = json.ignoreCase === true;
    let kind: Kind;
    let value = '';
    let regex: Regex | null = null;
    if (typeof json.exact === 'string') {
      kind = Kind.Exact;
      value = json.exact;
    } else if (typeof json.prefix === 'string') {
      kind = Kind.Prefix;
      value = json.prefix;
    } else if (typeof json.suffix === 'string') {
      kind = Kind.Suffix;
      value = json.suffix;
    } else if (typeof json.contains === 'string') {
      kind = Kind.Contains;
      value = json.contains;
    } else if (json.safeRegex !== undefined) {
      kind = Kind.Regex;
      const pattern = json.safeRegex.regex;
      if (typeof pattern !== 'string') throw new Error(`${at}.safeRegex.regex: required`);
      try {
        regex = new Regex(pattern, { ignoreCase: ic });
      } catch (err) {
        throw new Error(`${at}.safeRegex.regex: ${(err as Error).message}`);
      }
    } else {
      throw new Error(`${at}: one of exact, prefix, suffix, contains or safeRegex is required`);
    }
    if ((kind === Kind.Prefix || kind === Kind.Suffix || kind === Kind.Contains) && value === '') {
      throw new Error(`${at}: an empty ${['exact', 'prefix', 'suffix', 'contains'][kind]} is not allowed`);
    }
    this.#kind = kind;
    this.#ignoreCase = ic;
    this.#value = ic ? value.toLowerCase() : value;
    this.#regex = regex;
    this.cost = regex === null ? 2 : 20;
  }

  matches(s: string): boolean {
    return this.matchesRegion(s, 0, s.length);
  }

  /** Matches s[start, end). */
  matchesRegion(s: string, start: number, end: number): boolean {
    const v = this.#value;
    const len = end - start;
    switch (this.#kind) {
      case Kind.Exact:
        return len === v.length && regionEquals(s, start, v, this.#ignoreCase);
      case Kind.Prefix:
        return len >= v.length && regionEquals(s, start, v, this.#ignoreCase);
      case Kind.Suffix:
        return len >= v.length && regionEquals(s, end - v.length, v, this.#ignoreCase);
      case Kind.Contains:
        for (let i = start; i + v.length <= end; i++) if (regionEquals(s, i, v, this.#ignoreCase)) return true;
        return false;
      default:
        // A region other than the whole value only for a path with a query: rare enough to slice.
        return this.#regex!.matchesAll(start === 0 && end === s.length ? s : s.slice(start, end));
    }
  }
}

/** Whether s[at, at + v.length) equals `v` (already lower-case when ignoring case). */
function regionEquals(s: string, at: number, v: string, ignoreCase: boolean): boolean {
  if (!ignoreCase) return s.startsWith(v, at);
  for (let i = 0; i < v.length; i++) {
    let c = s.charCodeAt(at + i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== v.charCodeAt(i)) return false;
  }
  return true;
}
