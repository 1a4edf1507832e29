/**
 * Envoy's small value messages in their proto3 JSON form, read and written without the
 * descriptors of `@remora/config/envoy` (so filters can compile configs at no load cost).
 */
import type { FractionalPercentJson } from '../envoy/gen/envoy/type/v3/percent_pb.ts';

const DENOMINATORS: Readonly<Record<string, number>> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000, 0: 100, 1: 10_000, 2: 1_000_000 };

/**
 * A FractionalPercent as a percentage, 0–100 (a numerator above its denominator is capped at
 * 100%, as Envoy does); an unset message is 0%, Envoy's default. Throws on a bad value.
 */
export function fractionalPercent(p: FractionalPercentJson | undefined, where: string): number {
  if (p === undefined || p === null) return 0;
  if (typeof p !== 'object') throw new Error(`${where} must be a FractionalPercent {numerator, denominator}, got ${JSON.stringify(p)}`);
  const num = p.numerator ?? 0;
  if (typeof num !== 'number' || !Number.isInteger(num) || num < 0) throw new Error(`${where}.numerator must be a non-negative integer, got ${JSON.stringify(num)}`);
  const den = DENOMINATORS[String(p.denominator ?? 'HUNDRED')];
  if (den === undefined) throw new Error(`${where}.denominator must be HUNDRED, TEN_THOUSAND or MILLION, got ${JSON.stringify(p.denominator)}`);
  return Math.min(100, (num / den) * 100);
}

/** A percentage (0–100) as istiod writes it: a FractionalPercent over a MILLION. */
export function percentToFractional(percent: number): FractionalPercentJson {
  return { numerator: Math.round(percent * 10_000), denominator: 'MILLION' };
}

// proto3 JSON Duration: seconds with up to 9 fractional digits and an `s`.
const DURATION = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/;

/** A google.protobuf.Duration JSON string in milliseconds; throws when it is not one (or negative). */
export function durationJsonMs(v: unknown, where: string): number {
  const m = typeof v === 'string' ? DURATION.exec(v) : null;
  if (m === null || m[1] === '-') throw new Error(`${where} must be a non-negative duration such as "1.5s", got ${JSON.stringify(v)}`);
  return Number(m[2]) * 1000 + Number(`0.${m[3] ?? '0'}`) * 1000;
}

/**
 * The longest delay a Node.js timer takes (2^31 - 1 ms, ~24.8 days); a longer one fires after
 * 1 ms. A Duration holds up to ~10,000 years and Envoy arms its timers with any of them, so a
 * duration that bounds a timer is capped here: beyond ~24.8 days it is "never" either way.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** `ms` capped at {@link MAX_TIMER_MS}, for a duration that arms a timer. */
export function timerMs(ms: number): number {
  return ms > MAX_TIMER_MS ? MAX_TIMER_MS : ms;
}

/** Milliseconds as a google.protobuf.Duration JSON string, as protobuf writes it (0, 3, 6 or 9 fractional digits). */
export function msToDurationJson(ms: number): string {
  const nanos = Math.round(ms * 1e6);
  const seconds = Math.floor(nanos / 1e9);
  const frac = nanos % 1e9;
  if (frac === 0) return `${seconds}s`;
  const digits = String(frac).padStart(9, '0');
  const len = digits.endsWith('000000') ? 3 : digits.endsWith('000') ? 6 : 9;
  return `${seconds}.${digits.slice(0, len)}s`;
}

/** envoy.type.v3.StatusCode's JSON names and their HTTP codes (HttpStatus.code). */
const STATUS_CODES: Readonly<Record<string, number>> = {
  Continue: 100, OK: 200, Created: 201, Accepted: 202, NonAuthoritativeInformation: 203, NoContent: 204,
  ResetContent: 205, PartialContent: 206, MultiStatus: 207, AlreadyReported: 208, IMUsed: 226,
  MultipleChoices: 300, MovedPermanently: 301, Found: 302, SeeOther: 303, NotModified: 304, UseProxy: 305,
  TemporaryRedirect: 307, PermanentRedirect: 308, BadRequest: 400, Unauthorized: 401, PaymentRequired: 402,
  Forbidden: 403, NotFound: 404, MethodNotAllowed: 405, NotAcceptable: 406, ProxyAuthenticationRequired: 407,
  RequestTimeout: 408, Conflict: 409, Gone: 410, LengthRequired: 411, PreconditionFailed: 412,
  PayloadTooLarge: 413, URITooLong: 414, UnsupportedMediaType: 415, RangeNotSatisfiable: 416,
  ExpectationFailed: 417, MisdirectedRequest: 421, UnprocessableEntity: 422, Locked: 423,
  FailedDependency: 424, UpgradeRequired: 426, PreconditionRequired: 428, TooManyRequests: 429,
  RequestHeaderFieldsTooLarge: 431, InternalServerError: 500, NotImplemented: 501, BadGateway: 502,
  ServiceUnavailable: 503, GatewayTimeout: 504, HTTPVersionNotSupported: 505, VariantAlsoNegotiates: 506,
  InsufficientStorage: 507, LoopDetected: 508, NotExtended: 510, NetworkAuthenticationRequired: 511,
};

/** An HttpStatus `code` (its enum name, or a number as proto3 JSON also allows) as a number; null: not a status. */
export function httpStatusCode(code: unknown): number | null {
  if (typeof code === 'number') return Number.isInteger(code) && code >= 100 && code <= 599 ? code : null;
  return typeof code === 'string' ? (STATUS_CODES[code] ?? null) : null;
}

let STATUS_NAMES: Map<number, string> | null = null;

/** An HTTP code as envoy.type.v3.StatusCode's JSON name; null when the enum has no such code. */
export function httpStatusName(code: number): string | null {
  STATUS_NAMES ??= new Map(Object.entries(STATUS_CODES).map(([name, c]) => [c, name]));
  return STATUS_NAMES.get(code) ?? null;
}
