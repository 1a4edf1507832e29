import { RE2JS } from 're2js';

/**
 * Regexes from config, on RE2 as Envoy runs them (Istio validates them with Go's `regexp`, the
 * same syntax). RE2 matches in time linear in the input whatever the pattern, so a route regex
 * such as `/(a+)+` cannot hold the event loop the way a backtracking engine (V8's RegExp) would
 * on a long path. The engine is re2js, a pure JavaScript port of RE2/Go `regexp`: the native
 * `re2` addon needs a compiler toolchain and headers at install time, and `re2-wasm` costs about
 * 1.8 µs a match against re2js' 0.2 µs (V8: 0.03 µs) on ordinary route regexes.
 *
 * Every regex is compiled once, when a snapshot is built; the hot path only matches.
 */

/** Istio's cap: Envoy bounds RE2 program size, and the length approximates it. */
export const MAX_REGEX_LENGTH = 1024;

/** A pattern RE2 cannot compile; the message is RE2's (Go `regexp`'s) reason. */
export class RegexSyntaxError extends Error {
  readonly pattern: string;
  constructor(pattern: string, reason: string) {
    super(`regex ${JSON.stringify(pattern)} is invalid: ${reason}`);
    this.name = 'RegexSyntaxError';
    this.pattern = pattern;
  }
}

/**
 * Compiled programs by pattern and flags, shared by every snapshot that uses them. A reload of
 * a mesh whose regexes did not change compiles none: compiling is what costs (a 10,000-route
 * mesh with one header regex a route made about 240 MB of garbage a reload, and the heap grew
 * with each reload). A compiled RE2JS is immutable for matching, and matching is synchronous,
 * so sharing one is safe. Entries are weak: a program goes once no snapshot holds it.
 */
const compiled = new Map<string, WeakRef<RE2JS>>();
const forget = new FinalizationRegistry<string>((key) => {
  if (compiled.get(key)?.deref() === undefined) compiled.delete(key);
});

function compileRe2(pattern: string, ignoreCase: boolean): RE2JS {
  const key = (ignoreCase ? 'i:' : 's:') + pattern;
  const known = compiled.get(key)?.deref();
  if (known !== undefined) return known;
  try {
    const re = RE2JS.compile(pattern, ignoreCase ? RE2JS.CASE_INSENSITIVE : 0);
    compiled.set(key, new WeakRef(re));
    forget.register(re, key);
    return re;
  } catch (err) {
    // "error parsing regexp: missing closing ): `(v1`" → keep the reason, as Go prints it.
    throw new RegexSyntaxError(pattern, (err as Error).message.replace(/^error parsing regexp: /, ''));
  }
}

/** A compiled RE2 pattern. Matching never throws and never allocates a matcher. */
export class Regex {
  readonly pattern: string;
  readonly #re: RE2JS;

  /** Throws RegexSyntaxError (at compile time only). */
  constructor(pattern: string, options: { readonly ignoreCase?: boolean } = {}) {
    this.pattern = pattern;
    this.#re = compileRe2(pattern, options.ignoreCase === true);
  }

  /** Whether all of `s` matches: Envoy's `safe_regex` string matchers (about 0.2 µs on a short path). */
  matchesAll(s: string): boolean {
    return this.#re.testExact(s);
  }

  /** Whether some part of `s` matches (an unanchored search). */
  matchesPart(s: string): boolean {
    return this.#re.test(s);
  }
}

/**
 * Envoy's `regex_rewrite` (Istio `uriRegexRewrite`): every non-overlapping match of the pattern
 * replaced by the substitution, as RE2::GlobalReplace does it. In the substitution `\0` … `\9`
 * insert a capture group (`\0` the whole match) and `\\` a backslash; everything else, `$`
 * included, is literal.
 */
export class RegexRewrite {
  readonly pattern: string;
  readonly substitution: string;
  readonly #re: RE2JS;
  /** Literal text at even indexes, group numbers at odd ones: `lit, group, lit, …, lit`. */
  readonly #parts: readonly (string | number)[];

  /** Throws RegexSyntaxError for the pattern, or an Error naming what is wrong in the substitution. */
  constructor(pattern: string, substitution: string) {
    this.pattern = pattern;
    this.substitution = substitution;
    this.#re = compileRe2(pattern, false);
    const problem = checkSubstitution(substitution, this.#re.groupCount());
    if (problem !== null) throw new Error(problem);
    this.#parts = parseSubstitution(substitution);
  }

  /** `s` with every match replaced; `s` itself when nothing matches. */
  apply(s: string): string {
    const m = this.#re.matcher(s);
    const parts = this.#parts;
    let out = '';
    let p = 0;
    let lastEnd = -1;
    let count = 0;
    while (p <= s.length && m.find(p)) {
      const start = m.start();
      const end = m.end();
      if (p < start) out += s.slice(p, start);
      if (start === end && start === lastEnd) {
        // RE2: no empty match right where the last match ended; copy one character and go on.
        const n = isHighSurrogate(s.charCodeAt(p)) && p + 1 < s.length ? 2 : 1;
        if (p < s.length) out += s.slice(p, p + n);
        p += n;
        continue;
      }
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]!;
        out += typeof part === 'string' ? part : (m.group(part) ?? '');
      }
      p = end;
      lastEnd = end;
      count++;
    }
    if (count === 0) return s;
    return p < s.length ? out + s.slice(p) : out;
  }
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

/**
 * Error message for a `uriRegexRewrite` substitution RE2 would refuse, or null when it is fine
 * (null too when the pattern itself does not compile: `checkRegex` reports that).
 */
export function checkRegexSubstitution(pattern: string, substitution: string): string | null {
  let re: RE2JS;
  try {
    re = compileRe2(pattern, false);
  } catch {
    return null;
  }
  return checkSubstitution(substitution, re.groupCount());
}

/**
 * What RE2::Rewrite would refuse in a substitution: a `\` followed by anything but a digit or a
 * backslash, or a group the pattern does not have (RE2 then rewrites nothing). Null when fine.
 */
function checkSubstitution(substitution: string, groupCount: number): string | null {
  for (let i = 0; i < substitution.length; i++) {
    if (substitution[i] !== '\\') continue;
    const c = substitution[++i];
    if (c === '\\') continue;
    if (c === undefined || c < '0' || c > '9') {
      return `invalid substitution ${JSON.stringify(substitution)}: \\${c ?? ''} is not \\0-\\9 or \\\\`;
    }
    const n = c.charCodeAt(0) - 48;
    if (n > groupCount) return `invalid substitution ${JSON.stringify(substitution)}: \\${n} but the pattern has ${groupCount} capture group${groupCount === 1 ? '' : 's'}`;
  }
  return null;
}

function parseSubstitution(substitution: string): (string | number)[] {
  const parts: (string | number)[] = [];
  let lit = '';
  for (let i = 0; i < substitution.length; i++) {
    const c = substitution[i]!;
    if (c !== '\\') {
      lit += c;
      continue;
    }
    const next = substitution[++i]!;
    if (next === '\\') lit += '\\';
    else {
      parts.push(lit, next.charCodeAt(0) - 48);
      lit = '';
    }
  }
  parts.push(lit);
  return parts;
}

/** Error message for a regex Istio or Remora cannot use, or null when it is fine. */
export function checkRegex(re: string): string | null {
  if (re === '') return 'regex must not be empty';
  if (re.length > MAX_REGEX_LENGTH) return `regex is too large, max length allowed is ${MAX_REGEX_LENGTH}`;
  const unsupported = findNonRE2Construct(re);
  if (unsupported !== null) {
    return `regex ${JSON.stringify(re)} uses ${unsupported}, which RE2 (Istio's regex engine) does not support`;
  }
  try {
    compileRe2(re, false);
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}

/**
 * The first construct other engines accept but RE2 does not, named for the user (RE2's own
 * message is terser): lookaround, backreferences, `\cX` and `\uXXXX` escapes. Escapes and
 * character classes are skipped properly, so `\(?=` or `[(?=]` are not mistaken for a lookahead.
 */
function findNonRE2Construct(re: string): string | null {
  let inClass = false;
  for (let i = 0; i < re.length; i++) {
    const c = re[i];
    if (c === '\\') {
      const next = re[i + 1];
      if (next === undefined) return null; // trailing backslash: the compile step reports it
      if (next === 'u') return 'a \\u escape (write the character itself)';
      if (next === 'c') return 'a \\c control escape';
      if (!inClass && next >= '1' && next <= '9' && !/\d/.test(re[i + 2] ?? '')) return `a backreference (\\${next})`;
      if (!inClass && next === 'k' && re[i + 2] === '<') return 'a named backreference (\\k<…>)';
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') {
      inClass = true;
      continue;
    }
    if (c === '(' && re[i + 1] === '?') {
      const rest = re.slice(i + 2, i + 4);
      if (rest.startsWith('=')) return 'a lookahead (?=…)';
      if (rest.startsWith('!')) return 'a negative lookahead (?!…)';
      if (rest === '<=') return 'a lookbehind (?<=…)';
      if (rest === '<!') return 'a negative lookbehind (?<!…)';
    }
  }
  return null;
}
