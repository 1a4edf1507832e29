/**
 * Durations as Istio reads them: Go's `time.ParseDuration` syntax (`"1.5s"`, `"100ms"`,
 * `"1h30m"`, `"0"`), which is what Istio's YAML/JSON decoding of `google.protobuf.Duration`
 * accepts, and which includes the protobuf JSON form (`"1.5s"`).
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3, // U+00B5 micro sign
  'μs': 1e-3, // U+03BC Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

// One component: digits with an optional fraction (".5" and "5." are valid, "." is not), then a unit.
const COMPONENT = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * Parses a duration string into milliseconds (fractions kept: `"100us"` is 0.1). Returns null
 * when `s` is not a valid duration. Negative durations parse (Go accepts them); callers that
 * need a positive one check the value.
 */
export function parseDuration(s: string): number | null {
  let i = 0;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    i = 1;
  }
  const rest = s.slice(i);
  if (rest === '0') return 0;
  if (rest === '') return null;
  let total = 0;
  COMPONENT.lastIndex = i;
  while (COMPONENT.lastIndex < s.length) {
    const start = COMPONENT.lastIndex;
    const m = COMPONENT.exec(s);
    if (m === null || m.index !== start) return null;
    const unit = UNIT_MS[m[2] as string];
    if (unit === undefined) return null;
    total += Number(m[1]) * unit;
  }
  return sign * total;
}
