import { Regex, type StringMatch } from '@remora/config';

const EXACT = 0;
const PREFIX = 1;
const SUFFIX = 2;
const REGEX = 3;
const PRESENT = 4;
const ANY = 5;
const CONTAINS = 6;

/**
 * A compiled string condition. One class with a kind switch rather than a class per kind,
 * so the call site in the route loop stays monomorphic.
 */
export class StringMatcher {
  readonly #kind: number;
  readonly #value: string;
  /** RE2, linear in the value's length: a config regex cannot stall the event loop. */
  readonly #regex: Regex | null;
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
      case 'contains':
        this.#kind = CONTAINS;
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
    // Envoy's safe_regex matchers match the whole value. Throws (at compile time only) on a bad pattern.
    this.#regex = m.kind === 'regex' ? new Regex(m.value, { ignoreCase }) : null;
  }

  /** `value` is null when the header/parameter is absent: only `present`'s inverse and `any` hold then. */
  matches(value: string | null): boolean {
    if (this.#kind === ANY) return true;
    if (value === null) return false;
    switch (this.#kind) {
      case PRESENT:
        return true;
      case REGEX:
        return this.#regex!.matchesAll(value);
      default: {
        const v = this.#ignoreCase ? value.toLowerCase() : value;
        if (this.#kind === EXACT) return v === this.#value;
        if (this.#kind === PREFIX) return v.startsWith(this.#value);
        if (this.#kind === CONTAINS) return v.includes(this.#value);
        return v.endsWith(this.#value);
      }
    }
  }

  get isAny(): boolean {
    return this.#kind === ANY;
  }
}
