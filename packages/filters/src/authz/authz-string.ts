/**
 * Istio's string values in AuthorizationPolicy: `abc` exact, `abc*` prefix, `*abc` suffix, `*`
 * presence. istiod turns them into Envoy matchers (`matcher.StringMatcher`, `HeaderMatcher`,
 * `HostMatcher`); these do the same comparisons on the request's value, case-insensitively
 * for hosts, without allocating.
 */

export const StringMatchKind = {
  Exact: 0,
  Prefix: 1,
  Suffix: 2,
  /** `*` as a string matcher: regex `.+`, any non-empty value. */
  NonEmpty: 3,
  /** `*` as a header matcher: the header is present, whatever its value. */
  Present: 4,
} as const;
export type StringMatchKind = (typeof StringMatchKind)[keyof typeof StringMatchKind];

/** One compiled value. */
export class StringPattern {
  readonly kind: StringMatchKind;
  readonly value: string;
  readonly ignoreCase: boolean;

  constructor(kind: StringMatchKind, value: string, ignoreCase = false) {
    this.kind = kind;
    this.ignoreCase = ignoreCase;
    this.value = ignoreCase ? value.toLowerCase() : value;
  }

  /**
   * Istio's wildcard forms. `star` says what a lone `*` means: non-empty (string matchers,
   * `.+`) or present (header matchers).
   */
  static of(v: string, star: 'non-empty' | 'present', ignoreCase = false): StringPattern {
    if (v === '*') return new StringPattern(star === 'present' ? StringMatchKind.Present : StringMatchKind.NonEmpty, '', ignoreCase);
    if (v.startsWith('*')) return new StringPattern(StringMatchKind.Suffix, v.slice(1), ignoreCase);
    if (v.endsWith('*')) return new StringPattern(StringMatchKind.Prefix, v.slice(0, -1), ignoreCase);
    return new StringPattern(StringMatchKind.Exact, v, ignoreCase);
  }

  /** Matches `s` (null: absent), or its first `end` characters when given (a path without its query). */
  matches(s: string | null, end: number = s === null ? 0 : s.length): boolean {
    return s !== null && this.matchesRegion(s, 0, end);
  }

  /** Matches the region s[start, end) (one value of a comma-separated header). */
  matchesRegion(s: string, start: number, end: number): boolean {
    const v = this.value;
    const len = end - start;
    switch (this.kind) {
      case StringMatchKind.Present:
        return true;
      case StringMatchKind.NonEmpty:
        return len > 0;
      case StringMatchKind.Exact:
        return len === v.length && regionEquals(s, start, v, this.ignoreCase);
      case StringMatchKind.Prefix:
        return len >= v.length && regionEquals(s, start, v, this.ignoreCase);
      default:
        return len >= v.length && regionEquals(s, end - v.length, v, this.ignoreCase);
    }
  }
}

/** Whether s[at, at + v.length) equals `v` (already lower-case when ignoring case; ASCII folding, as Envoy's). */
function regionEquals(s: string, at: number, v: string, ignoreCase: boolean): boolean {
  if (!ignoreCase) return s.startsWith(v, at);
  for (let i = 0; i < v.length; i++) {
    let c = s.charCodeAt(at + i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== v.charCodeAt(i)) return false;
  }
  return true;
}

/** Whether any pattern matches `s` (its first `end` characters when given). */
export function anyMatches(patterns: readonly StringPattern[], s: string | null, end?: number): boolean {
  if (s === null) return false;
  const e = end ?? s.length;
  for (let i = 0; i < patterns.length; i++) if (patterns[i]!.matches(s, e)) return true;
  return false;
}
