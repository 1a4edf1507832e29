/**
 * A JSON Web Key Set, parsed by jwt_verify_lib's rules (`Jwks::createFrom`): keys that do not
 * parse are skipped, a set without any usable key is an error. Keys become Node KeyObjects
 * once (jose converts each to a WebCrypto key once and caches it), and verification follows
 * `verifyJwtWithoutTimeChecking`: a key is tried when its `kid` and `alg` (when both sides
 * have them) match the token's; no such key is "Jwks doesn't have key to match kid or alg",
 * a matching key that does not verify is "Jwt verification fails".
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { compactVerify } from 'jose';
import { LRUCache } from 'lru-cache';
import { JwtStatus } from './jwt-authn-status.ts';
import type { ParsedJwt } from './jwt-authn-token.ts';

/** One usable key of a set. */
interface Jwk {
  readonly kty: 'RSA' | 'EC' | 'OKP' | 'oct';
  /** '' when absent: matches any token kid. */
  readonly kid: string;
  /** '' when absent: used for any token alg (a wrong pairing then fails verification). */
  readonly alg: string;
  readonly key: KeyObject | Uint8Array;
}

/** How many verified tokens a key set remembers, so a repeated token skips the signature check. */
const VERIFIED_CACHE_SIZE = 1000;

/** jose's verify options per algorithm, built once. */
const VERIFY_OPTIONS = new Map<string, { algorithms: string[] }>();
function verifyOptions(alg: string): { algorithms: string[] } {
  let o = VERIFY_OPTIONS.get(alg);
  if (o === undefined) VERIFY_OPTIONS.set(alg, (o = { algorithms: [alg] }));
  return o;
}

export class JwksKeySet {
  readonly #keys: readonly Jwk[];
  /** Tokens whose signature this set verified (a token's text fixes its signature, so the result holds). */
  readonly #verified = new LRUCache<string, true>({ max: VERIFIED_CACHE_SIZE });

  constructor(keys: readonly Jwk[]) {
    this.#keys = keys;
  }

  get size(): number {
    return this.#keys.length;
  }

  /** The kids in the set ('' for keys without one), for messages and tests. */
  get kids(): string[] {
    return this.#keys.map((k) => k.kid);
  }

  /** Whether this set verified this token's signature before. */
  isVerified(token: string): boolean {
    return this.#verified.has(token);
  }

  /** Whether any key's kid and alg fit the token (else an unknown kid, perhaps a rotation). */
  hasMatch(jwt: ParsedJwt): boolean {
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) if (keyMatches(keys[i]!, jwt)) return true;
    return false;
  }

  /** Checks the signature with every fitting key in order; Ok at the first that verifies. */
  async verify(jwt: ParsedJwt): Promise<JwtStatus> {
    let matched = false;
    for (const key of this.#keys) {
      if (!keyMatches(key, jwt)) continue;
      matched = true;
      if (key.kty === 'OKP' && jwt.signatureLength !== 64) return JwtStatus.JwtEd25519SignatureWrongLength;
      try {
        await compactVerify(jwt.token, key.key, verifyOptions(jwt.alg));
        this.#verified.set(jwt.token, true);
        return JwtStatus.Ok;
      } catch {
        // A key of the wrong type for the alg, or a bad signature: try the next key.
      }
    }
    return matched ? JwtStatus.JwtVerificationFail : JwtStatus.JwksKidAlgMismatch;
  }
}

function keyMatches(key: Jwk, jwt: ParsedJwt): boolean {
  if (jwt.kid !== '' && key.kid !== '' && key.kid !== jwt.kid) return false;
  return key.alg === '' || key.alg === jwt.alg;
}

/** Parses a JWKS document; a string (jwt_verify_lib's message, with the last key's problem) when unusable. */
export function parseJwks(text: string): JwksKeySet | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'Jwks is an invalid JSON';
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return 'Jwks is an invalid JSON';
  if (!Object.hasOwn(doc, 'keys')) return 'Jwks does not have [keys] field';
  const list = (doc as { keys: unknown }).keys;
  if (!Array.isArray(list)) return '[keys] in Jwks is not an array';
  const keys: Jwk[] = [];
  let lastError = '';
  for (let i = 0; i < list.length; i++) {
    const entry: unknown = list[i];
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) continue;
    const key = parseJwk(entry as Record<string, unknown>);
    if (typeof key === 'string') lastError = `keys[${i}]: ${key}`;
    else keys.push(key);
  }
  if (keys.length === 0) return `Jwks doesn't have any valid public key${lastError === '' ? '' : ` (${lastError})`}`;
  return new JwksKeySet(keys);
}

/** A string field: the value, '' when absent, null when of another type. */
function field(jwk: Record<string, unknown>, name: string): string | null {
  if (!Object.hasOwn(jwk, name)) return '';
  const v = jwk[name];
  return typeof v === 'string' ? v : null;
}

function parseJwk(jwk: Record<string, unknown>): Jwk | string {
  if (!Object.hasOwn(jwk, 'kty')) return '[kty] is missing in [keys]';
  const kty = jwk['kty'];
  if (typeof kty !== 'string') return '[kty] is bad in [keys]';
  const kid = field(jwk, 'kid') ?? '';
  const alg = field(jwk, 'alg') ?? '';
  switch (kty) {
    case 'RSA':
      return parseRsa(jwk, kid, alg);
    case 'EC':
      return parseEc(jwk, kid, alg);
    case 'OKP':
      return parseOkp(jwk, kid, alg);
    case 'oct':
      return parseOct(jwk, kid, alg);
    default:
      return '[kty] is not supported in [keys]';
  }
}

function parseRsa(jwk: Record<string, unknown>, kid: string, alg: string): Jwk | string {
  if (alg !== '' && !alg.startsWith('RS') && !alg.startsWith('PS')) return '[alg] is not started with [RS] or [PS] for an RSA key';
  const n = field(jwk, 'n');
  if (n === '') return '[n] field is missing for a RSA key';
  if (n === null) return '[n] field is not string for a RSA key';
  const e = field(jwk, 'e');
  if (e === '') return '[e] field is missing for a RSA key';
  if (e === null) return '[e] field is not string for a RSA key';
  // jwt_verify_lib refuses non-standard exponents (other than 3 and 65537) early.
  const exponent = Buffer.from(e, 'base64url').toString('hex').replace(/^0+/, '');
  if (exponent !== '10001' && exponent !== '3') return 'Jwks RSA [n] or [e] field is missing or has a parse error';
  try {
    return { kty: 'RSA', kid, alg, key: createPublicKey({ key: { kty: 'RSA', n, e }, format: 'jwk' }) };
  } catch {
    return 'Jwks RSA [n] or [e] field is missing or has a parse error';
  }
}

const EC_ALG_CURVE: Readonly<Record<string, string>> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

function parseEc(jwk: Record<string, unknown>, kid: string, alg: string): Jwk | string {
  if (alg !== '' && !alg.startsWith('ES')) return '[alg] is not started with [ES] for an EC key';
  let crv = field(jwk, 'crv');
  if (crv === null) return '[crv] field is not string for an EC key';
  if (alg !== '' && crv !== '' && EC_ALG_CURVE[alg] !== crv) return '[crv] field specified is not compatible with [alg] for an EC key';
  if (crv === '') crv = alg === '' ? 'P-256' : (EC_ALG_CURVE[alg] ?? '');
  if (crv !== 'P-256' && crv !== 'P-384' && crv !== 'P-521') return '[crv] or [alg] field is not supported for an EC key';
  const x = field(jwk, 'x');
  if (x === '') return '[x] field is missing for an EC key';
  if (x === null) return '[x] field is not string for an EC key';
  const y = field(jwk, 'y');
  if (y === '') return '[y] field is missing for an EC key';
  if (y === null) return '[y] field is not string for an EC key';
  try {
    return { kty: 'EC', kid, alg, key: createPublicKey({ key: { kty: 'EC', crv, x, y }, format: 'jwk' }) };
  } catch {
    return 'Jwks EC [x] and [y] fields have a parse error.';
  }
}

function parseOkp(jwk: Record<string, unknown>, kid: string, alg: string): Jwk | string {
  if (alg !== '' && alg !== 'EdDSA') return '[alg] is not [EdDSA] for an OKP key';
  const crv = field(jwk, 'crv');
  if (crv === '') return '[crv] field is missing for an OKP key';
  if (crv === null) return '[crv] field is not string for an OKP key';
  if (crv !== 'Ed25519') return '[crv] field is not supported for an OKP key';
  const x = field(jwk, 'x');
  if (x === '') return '[x] field is missing for an OKP key';
  if (x === null) return '[x] field is not string for an OKP key';
  if (!/^[A-Za-z0-9_-]+$/.test(x)) return 'Jwks OKP [x] field is an invalid Base64.';
  if (Buffer.from(x, 'base64url').length !== 32) return 'Jwks OKP [x] field is wrong length.';
  try {
    return { kty: 'OKP', kid, alg, key: createPublicKey({ key: { kty: 'OKP', crv, x }, format: 'jwk' }) };
  } catch {
    return 'Jwks OKP [x] field is an invalid Base64.';
  }
}

function parseOct(jwk: Record<string, unknown>, kid: string, alg: string): Jwk | string {
  if (alg !== '' && alg !== 'HS256' && alg !== 'HS384' && alg !== 'HS512') return '[alg] does not start with [HS] for an HMAC key';
  const k = field(jwk, 'k');
  if (k === '') return '[k] field is missing for an HMAC key';
  if (k === null) return '[k] field is not string for an HMAC key';
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(k)) return 'Jwks Oct key is an invalid Base64';
  const secret = new Uint8Array(Buffer.from(k, 'base64url'));
  if (secret.length === 0) return 'Jwks Oct key is an invalid Base64';
  return { kty: 'oct', kid, alg, key: secret };
}
