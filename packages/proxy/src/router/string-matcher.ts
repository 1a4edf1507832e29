import { re2ToJs, type StringMatch } from '@remora/config';

const EXACT = 0;
const PREFIX = 1;
const SUFFIX = 2;
const REGEX = 3;
const PRESENT = 4;
const ANY = 5;

/**
 * Envoy's RE2 regexes as JS regexes: anchored for a full match, RE2's `(?P<name>…)` groups
 * renamed. Throws (at compile time only) when the pattern is not a valid JS regex.
 */
export function compileRegex(pattern: string, ignoreCase = false): RegExp {
  return new RegExp(`^(?:${re2ToJs(pattern)})$`, ignoreCase ? 'i' : '');
}

/**
 * A compiled string condition. One class with a kind switch rather than a class per kind,
 * so the call site in the route loop stays monomorphic.
 */
export class StringMatcher {
  readonly #kind: number;
  readonly #value: string;
  readonly #regex: RegExp | null;
  readonly #ignoreCase: boolean;

  constructor(m: StringMatch | { readonly kind: 'present' } | { readonly kind: 'any' }, ignoreCase = false) {
    this.#ignoreCase = ignoreCase;
    switch (m.kind) {
      case 'exact':
        this.#kind = EXACT;
        break;
      case 'prefix':
        this.#kind = PREFIX;
        break;
      case 'suffix':
        this.#kind = SUFFIX;
        break;
      case 'regex':
        this.#kind = REGEX;
        break;
      case 'present':
        this.#kind = PRESENT;
        break;
      default:
        this.#kind = ANY;
    }
    const value = 'value' in m ? m.value : '';
    this.#value = ignoreCase ? value.toLowerCase() : value;
    this.#regex = m.kind === 'regex' ? compileRegex(m.value, ignoreCase) : null;
  }

  /** `value` is null when the header/parameter is absent: only `present`'s inverse and `any` hold then. */
  matches(value: string | null): boolean {
    if (this.#kind === ANY) return true;
    if (value === null) return false;
    switch (this.#kind) {
      case PRESENT:
        return true;
      case REGEX:
        return this.#regex!.test(value);
      default: {
        const v = this.#ignoreCase ? value.toLowerCase() : value;
        if (this.#kind === EXACT) return v === this.#value;
        if (this.#kind === PREFIX) return v.startsWith(this.#value);
        return v.endsWith(this.#value);
      }
    }
  }

  get isAny(): boolean {
    return this.#kind === ANY;
  }
}
