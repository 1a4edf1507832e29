/**
 * The outcomes of JWT authentication, with Envoy's wording (jwt_verify_lib `getStatusString`):
 * the local reply body is the message, the response code details are
 * `jwt_authn_access_denied{<message with whitespace as _>}` (Envoy's jwt_authn `generateRcDetails`).
 */

export const JwtStatus = {
  Ok: 0,
  JwtMissed: 1,
  JwtNotYetValid: 2,
  JwtExpired: 3,
  JwtBadFormat: 4,
  JwtHeaderParseErrorBadBase64: 5,
  JwtHeaderParseErrorBadJson: 6,
  JwtHeaderBadAlg: 7,
  JwtHeaderNotImplementedAlg: 8,
  JwtHeaderBadKid: 9,
  JwtPayloadParseErrorBadBase64: 10,
  JwtPayloadParseErrorBadJson: 11,
  JwtPayloadParseErrorIssNotString: 12,
  JwtPayloadParseErrorSubNotString: 13,
  JwtPayloadParseErrorIatNotInteger: 14,
  JwtPayloadParseErrorIatOutOfRange: 15,
  JwtPayloadParseErrorNbfNotInteger: 16,
  JwtPayloadParseErrorNbfOutOfRange: 17,
  JwtPayloadParseErrorExpNotInteger: 18,
  JwtPayloadParseErrorExpOutOfRange: 19,
  JwtPayloadParseErrorJtiNotString: 20,
  JwtPayloadParseErrorAudNotString: 21,
  JwtSignatureParseErrorBadBase64: 22,
  JwtEd25519SignatureWrongLength: 23,
  JwtUnknownIssuer: 24,
  JwtAudienceNotAllowed: 25,
  JwtVerificationFail: 26,
  JwksKidAlgMismatch: 27,
  JwksFetchFail: 28,
  JwksNoValidKeys: 29,
} as const;
export type JwtStatus = (typeof JwtStatus)[keyof typeof JwtStatus];

const MESSAGES: readonly string[] = [
  'OK',
  'Jwt is missing',
  'Jwt not yet valid',
  'Jwt is expired',
  'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
  'Jwt header is an invalid Base64url encoded',
  'Jwt header is an invalid JSON',
  'Jwt header [alg] field is required and must be a string',
  'Jwt header [alg] is not supported',
  'Jwt header [kid] field is not a string',
  'Jwt payload is an invalid Base64url encoded',
  'Jwt payload is an invalid JSON',
  'Jwt payload [iss] field is not a string',
  'Jwt payload [sub] field is not a string',
  'Jwt payload [iat] field is not an integer',
  'Jwt payload [iat] field is not a positive 64 bit integer',
  'Jwt payload [nbf] field is not an integer',
  'Jwt payload [nbf] field is not a positive 64 bit integer',
  'Jwt payload [exp] field is not an integer',
  'Jwt payload [exp] field is not a positive 64 bit integer',
  'Jwt payload [jti] field is not a string',
  'Jwt payload [aud] field is not a string or string list',
  'Jwt signature is an invalid Base64url encoded',
  'Jwt ED25519 signature is wrong length',
  'Jwt issuer is not configured',
  'Audiences in Jwt are not allowed',
  'Jwt verification fails',
  "Jwks doesn't have key to match kid or alg from Jwt",
  'Jwks remote fetch is failed',
  "Jwks doesn't have any valid public key",
];

// Built once: the hot path only indexes.
const DETAILS: readonly string[] = MESSAGES.map((m) => `jwt_authn_access_denied{${m.replace(/\s/g, '_')}}`);

/** Envoy's message for a status: the local reply body. */
export function statusMessage(status: JwtStatus): string {
  return MESSAGES[status]!;
}

/** Envoy's response code details for a failed status, e.g. `jwt_authn_access_denied{Jwt_is_expired}`. */
export function statusDetails(status: JwtStatus): string {
  return DETAILS[status]!;
}

/** Envoy answers a disallowed audience with 403 and every other failure with 401. */
export function statusHttpCode(status: JwtStatus): number {
  return status === JwtStatus.JwtAudienceNotAllowed ? 403 : 401;
}
