/**
 * Regex rules: Istio matches with RE2 (and validates with Go's RE2-syntax `regexp`); Remora
 * compiles the same patterns as JavaScript RegExps. A pattern is accepted when it is RE2 syntax
 * and compiles in JavaScript, so it means the same on both engines for the constructs users write.
 */

/** Istio's cap: Envoy bounds RE2 program size, and the length approximates it. */
export const MAX_REGEX_LENGTH = 1024;

/**
 * RE2 pattern → the same pattern in JavaScript syntax: RE2's `(?P<name>…)` groups become
 * `(?<name>…)`. Everything else a pattern that passes `checkRegex` uses reads the same.
 */
export function re2ToJs(re: string): string {
  return re.replace(/\(\?P</g, '(?<');
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
    new RegExp(re2ToJs(re));
  } catch (err) {
    // V8: "Invalid regular expression: /a(/: Unterminated group" → keep the reason.
    const msg = (err as Error).message;
    const reason = msg.slice(msg.lastIndexOf(': ') + 2);
    return `regex ${JSON.stringify(re)} is invalid: ${reason}`;
  }
  return null;
}

/**
 * The first construct JavaScript accepts but RE2 does not: lookaround, backreferences,
 * `\cX` and `\uXXXX` escapes. Escapes and character classes are skipped properly, so `\(?=`
 * or `[(?=]` are not mistaken for a lookahead.
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
