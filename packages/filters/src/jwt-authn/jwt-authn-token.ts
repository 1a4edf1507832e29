/**
 * A JWT decoded by jwt_verify_lib's rules (`Jwt::parseFromString`), which decide Envoy's
 * error for a malformed token: exactly two dots and three non-empty sections, base64url
 * JSON objects, `alg` a supported algorithm (so `none` is refused here), typed registered
 * claims. Nothing is verified yet; a parsed token is immutable and may be cached by its text.
 */
import type { RequestAuth } from '../filter.ts';
import { JwtStatus } from './jwt-authn-status.ts';

/** The algorithms jwt_verify_lib implements; any other `alg` (`none` included) is refused. */
const IMPLEMENTED_ALGS: ReadonlySet<string> = new Set([
  'ES256',
  'ES384',
  'ES512',
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'EdDSA',
]);

const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;
const UINT64_LIMIT = 2 ** 64;

export class ParsedJwt {
  /** The token as received. */
  readonly token: string;
  readonly alg: string;
  /** '' when absent. */
  readonly kid: string;
  /** '' when absent. */
  readonly iss: string;
  /** '' when absent. */
  readonly sub: string;
  readonly audiences: readonly string[];
  /** Seconds since the epoch; 0 when absent. */
  readonly nbf: number;
  /** Seconds since the epoch; 0 when absent (never expires). */
  readonly exp: number;
  /** The payload section as received (base64url), which Envoy forwards in `outputPayloadToHeader`. */
  readonly payloadBase64url: string;
  readonly payload: Readonly<Record<string, unknown>>;
  /** Decoded signature length in bytes (Ed25519 signatures must be 64). */
  readonly signatureLength: number;
  #auth: RequestAuth | null = null;
  /** The claim list `#auth` was normalized with (providers share one list per config, so one entry suffices). */
  #authClaims: readonly string[] | null = null;

  constructor(
    token: string,
    header: Record<string, unknown>,
    payloadBase64url: string,
    payload: Record<string, unknown>,
    audiences: readonly string[],
    times: { nbf: number; exp: number },
    signatureLength: number,
  ) {
    this.token = token;
    this.alg = header['alg'] as string;
    this.kid = typeof header['kid'] === 'string' ? header['kid'] : '';
    this.iss = typeof payload['iss'] === 'string' ? payload['iss'] : '';
    this.sub = typeof payload['sub'] === 'string' ? payload['sub'] : '';
    this.audiences = audiences;
    this.nbf = times.nbf;
    this.exp = times.exp;
    this.payloadBase64url = payloadBase64url;
    this.payload = payload;
    this.signatureLength = signatureLength;
  }

  /** The payload section with base64 padding (`pad_forward_payload_header`). */
  get payloadBase64urlPadded(): string {
    const pad = (4 - (this.payloadBase64url.length % 4)) % 4;
    return pad === 0 ? this.payloadBase64url : this.payloadBase64url + '='.repeat(pad);
  }

  /**
   * What authorization sees once the token is verified, its string claims named in
   * `spaceDelimited` turned into lists of their words (Envoy's `normalize_payload_in_metadata`).
   * Built once per parsed token and claim list, and shared (it is read-only).
   */
  authFor(spaceDelimited: readonly string[]): RequestAuth {
    if (this.#auth !== null && this.#authClaims === spaceDelimited) return this.#auth;
    let claims: Record<string, unknown> = this.payload as Record<string, unknown>;
    for (const name of spaceDelimited) {
      const v = claims[name];
      if (typeof v !== 'string') continue;
      if (claims === this.payload) claims = { ...claims };
      claims[name] = v.split(' ').filter((w) => w !== '');
    }
    const azp = this.payload['azp'];
    this.#authClaims = spaceDelimited;
    this.#auth = Object.freeze({
      principal: `${this.iss}/${this.sub}`,
      issuer: this.iss,
      subject: this.sub,
      audiences: this.audiences,
      presenter: typeof azp === 'string' ? azp : '',
      claims,
    });
    return this.#auth;
  }
}

function decodeSection(s: string): Buffer | null {
  if (!BASE64URL.test(s)) return null;
  const eq = s.indexOf('=');
  if ((eq < 0 ? s.length : eq) % 4 === 1) return null;
  return Buffer.from(s, 'base64url');
}

function parseObject(bytes: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(bytes.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A claim that must be a string when present. */
function badString(obj: Record<string, unknown>, name: string): boolean {
  return Object.hasOwn(obj, name) && typeof obj[name] !== 'string';
}

/** A time claim: a number in [0, 2^64), truncated; 0 when absent; a status when wrong. */
function timeClaim(payload: Record<string, unknown>, name: string, notInteger: JwtStatus, outOfRange: JwtStatus): number | { status: JwtStatus } {
  if (!Object.hasOwn(payload, name)) return 0;
  const v = payload[name];
  if (typeof v !== 'number') return { status: notInteger };
  if (v < 0 || v >= UINT64_LIMIT) return { status: outOfRange };
  return Math.trunc(v);
}

/** Decodes a token; a status other than Ok when it is malformed. */
export function parseJwt(token: string): ParsedJwt | JwtStatus {
  const d1 = token.indexOf('.');
  const d2 = d1 < 0 ? -1 : token.indexOf('.', d1 + 1);
  if (d2 < 0 || token.indexOf('.', d2 + 1) >= 0) return JwtStatus.JwtBadFormat;
  const h = token.slice(0, d1);
  const p = token.slice(d1 + 1, d2);
  const s = token.slice(d2 + 1);
  if (h === '' || p === '' || s === '') return JwtStatus.JwtBadFormat;

  const headerBytes = decodeSection(h);
  if (headerBytes === null) return JwtStatus.JwtHeaderParseErrorBadBase64;
  const header = parseObject(headerBytes);
  if (header === null) return JwtStatus.JwtHeaderParseErrorBadJson;
  const alg = header['alg'];
  if (typeof alg !== 'string') return JwtStatus.JwtHeaderBadAlg;
  if (!IMPLEMENTED_ALGS.has(alg)) return JwtStatus.JwtHeaderNotImplementedAlg;
  if (badString(header, 'kid')) return JwtStatus.JwtHeaderBadKid;

  const payloadBytes = decodeSection(p);
  if (payloadBytes === null) return JwtStatus.JwtPayloadParseErrorBadBase64;
  const payload = parseObject(payloadBytes);
  if (payload === null) return JwtStatus.JwtPayloadParseErrorBadJson;
  if (badString(payload, 'iss')) return JwtStatus.JwtPayloadParseErrorIssNotString;
  if (badString(payload, 'sub')) return JwtStatus.JwtPayloadParseErrorSubNotString;
  const iat = timeClaim(payload, 'iat', JwtStatus.JwtPayloadParseErrorIatNotInteger, JwtStatus.JwtPayloadParseErrorIatOutOfRange);
  if (typeof iat !== 'number') return iat.status;
  const nbf = timeClaim(payload, 'nbf', JwtStatus.JwtPayloadParseErrorNbfNotInteger, JwtStatus.JwtPayloadParseErrorNbfOutOfRange);
  if (typeof nbf !== 'number') return nbf.status;
  const exp = timeClaim(payload, 'exp', JwtStatus.JwtPayloadParseErrorExpNotInteger, JwtStatus.JwtPayloadParseErrorExpOutOfRange);
  if (typeof exp !== 'number') return exp.status;
  if (badString(payload, 'jti')) return JwtStatus.JwtPayloadParseErrorJtiNotString;

  let audiences: readonly string[] = [];
  if (Object.hasOwn(payload, 'aud')) {
    const aud = payload['aud'];
    if (typeof aud === 'string') audiences = [aud];
    else if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) audiences = aud as string[];
    else return JwtStatus.JwtPayloadParseErrorAudNotString;
  }

  const signature = decodeSection(s);
  if (signature === null) return JwtStatus.JwtSignatureParseErrorBadBase64;
  return new ParsedJwt(token, header, p, payload, Object.freeze(audiences), { nbf, exp }, signature.length);
}

/**
 * jwt_verify_lib's CheckAudience: scheme (`http://`, `https://`) and one trailing `/` are
 * ignored on both sides, since users often add them by mistake.
 */
export function sanitizeAudience(aud: string): string {
  let begin = 0;
  let end = aud.length;
  if (aud.startsWith('http://')) begin = 7;
  else if (aud.startsWith('https://')) begin = 8;
  if (end > 0 && aud.charCodeAt(end - 1) === 47 /* / */) end--;
  return begin === 0 && end === aud.length ? aud : aud.slice(begin, end);
}
