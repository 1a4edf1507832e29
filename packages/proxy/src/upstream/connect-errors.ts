/**
 * The one reading of how an upstream try failed, for every way Remora reaches an upstream
 * (undici requests, upgrade tunnels, TCP proxying, TLS origination): the error becomes Envoy's
 * failure kind (what retry policies and outlier detection see), its transport failure reason
 * (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`), and the response flag, status, details and body of
 * the local reply Envoy's router makes for it.
 */

/** How an upstream try failed before its response could be used. */
export const AttemptFailure = {
  /** The connection could not be made (refused, unreachable, connect timeout, TLS handshake). */
  ConnectFailure: 0,
  /** The connection broke or was reset before response headers. */
  Reset: 1,
  /** HTTP/2 REFUSED_STREAM. */
  RefusedStream: 2,
  /** The per-try timeout fired (Envoy counts it as a 504 for `5xx`/`gateway-error`, and as a reset). */
  PerTryTimeout: 3,
  /** The response could not be parsed (malformed, head too large): Envoy's protocol error, a 502 with UPE; `reset` retries it. */
  ProtocolError: 4,
} as const;
export type AttemptFailure = (typeof AttemptFailure)[keyof typeof AttemptFailure];

/**
 * Error codes that mean the connection was never made (Node's errno names, undici's connect
 * timeout, name resolution failures). Any other error on a connection not yet made is a
 * termination of it (a reset during the handshake).
 */
const CONNECT_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** The prefix of Envoy's TLS transport failure reasons (`TLS_error:|…:TLS_error_end`). */
const TLS_ERROR = 'TLS_error:';

/** Envoy's transport failure reason for a connect timeout of a raw socket. */
export const CONNECT_TIMEOUT_REASON = 'ETIMEDOUT';
/** The reason a per-try timeout is logged with. */
export const PER_TRY_TIMEOUT_REASON = 'per_try_timeout';

/** True for a code that says the connection could not be made (TLS failures included). */
export function isConnectErrorCode(code: string): boolean {
  return CONNECT_ERROR_CODES.has(code) || code.startsWith(TLS_ERROR);
}

/** What `classifyUpstreamError` needs of a TLS cluster: its reading of a TLS failure (Envoy's TLS_error reason as `code`). */
export interface TlsFailureReader {
  explain(err: Error): { readonly code: string } | null;
}

/** A failed try: its kind and Envoy's transport failure reason. */
export interface UpstreamFailure {
  readonly failure: AttemptFailure;
  readonly reason: string;
}

/**
 * One error of an upstream try, read as Envoy does. `connected`: the connection was made
 * before the error (a refused-connection code after that cannot be a connect failure), or
 * null when the caller cannot tell (undici: its connect errors carry their own codes). A TLS
 * failure, even one a TLS 1.3 server reports after our side of the handshake (our
 * certificate refused), is a connect failure with Envoy's TLS_error reason.
 */
export function classifyUpstreamError(err: Error, connected: boolean | null, tls: TlsFailureReader | null): UpstreamFailure {
  if (tls !== null) {
    const t = tls.explain(err);
    if (t !== null) return { failure: AttemptFailure.ConnectFailure, reason: t.code };
  }
  const code = (err as { code?: unknown }).code;
  const reason = typeof code === 'string' && code !== '' ? code : err.message;
  if (reason === PER_TRY_TIMEOUT_REASON) return { failure: AttemptFailure.PerTryTimeout, reason };
  if (connected !== true && isConnectErrorCode(reason)) return { failure: AttemptFailure.ConnectFailure, reason };
  // llhttp's parse errors (HPE_*), a head over the limit, a body shorter or longer than announced: a malformed response.
  if (reason.startsWith('HPE_') || reason === 'UND_ERR_HEADERS_OVERFLOW' || reason === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return { failure: AttemptFailure.ProtocolError, reason };
  // HTTP/2 REFUSED_STREAM (code 7) means the server never processed the stream.
  if (err.message.includes('REFUSED_STREAM')) return { failure: AttemptFailure.RefusedStream, reason };
  return { failure: AttemptFailure.Reset, reason };
}

/** Envoy's response flag names for failures of an upstream try. */
export type UpstreamFailureFlag = 'UF' | 'UC' | 'UR' | 'UT' | 'UO' | 'UPE';

/** A local reply for an upstream try that failed before a response could be used. */
export interface FailureReply {
  readonly status: number;
  readonly flag: UpstreamFailureFlag;
  readonly details: string;
  readonly body: string;
}

const RESET_BEFORE_HEADERS = 'upstream connect error or disconnect/reset before headers. reset reason: ';

/** Envoy's answer when the cluster's circuit breaker has no room (503 UO). */
export const OVERFLOW_FAILURE: FailureReply = {
  status: 503,
  flag: 'UO',
  details: 'upstream_reset_before_response_started{overflow}',
  body: `${RESET_BEFORE_HEADERS}overflow`,
};

const PER_TRY_TIMEOUT: FailureReply = { status: 504, flag: 'UT', details: 'upstream_per_try_timeout', body: 'upstream request timeout' };
const REFUSED_STREAM: FailureReply = {
  status: 503,
  flag: 'UR',
  details: 'upstream_reset_before_response_started{remote_refused_stream_reset}',
  body: `${RESET_BEFORE_HEADERS}remote refused stream reset`,
};
const PROTOCOL_ERROR: FailureReply = {
  status: 502,
  flag: 'UPE',
  details: 'upstream_reset_before_response_started{protocol_error}',
  body: `${RESET_BEFORE_HEADERS}protocol error`,
};
const TERMINATION: FailureReply = {
  status: 503,
  flag: 'UC',
  details: 'upstream_reset_before_response_started{connection_termination}',
  body: `${RESET_BEFORE_HEADERS}connection termination`,
};

/** Envoy's status, flag, details and body for each way a try can fail before its response. */
export function failureReply(failure: AttemptFailure, reason: string): FailureReply {
  switch (failure) {
    case AttemptFailure.ConnectFailure:
      return {
        status: 503,
        flag: 'UF',
        details: 'upstream_reset_before_response_started{connection_failure}',
        body: `${RESET_BEFORE_HEADERS}connection failure, transport failure reason: ${reason}`,
      };
    case AttemptFailure.PerTryTimeout:
      return PER_TRY_TIMEOUT;
    case AttemptFailure.RefusedStream:
      return REFUSED_STREAM;
    case AttemptFailure.ProtocolError:
      return PROTOCOL_ERROR;
    default:
      return TERMINATION;
  }
}

/**
 * The flag of a failure once the response has started (headers out): all that can be done
 * is to cut the client off; Envoy flags a per-try timeout UT, anything else UC.
 */
export function midResponseFlag(failure: AttemptFailure): UpstreamFailureFlag {
  return failure === AttemptFailure.PerTryTimeout ? 'UT' : 'UC';
}

/** Envoy's router charges a reset or connect failure as a 503 from the host, a per-try timeout as a 504. */
export function chargedStatus(failure: AttemptFailure): number {
  return failure === AttemptFailure.PerTryTimeout ? 504 : failure === AttemptFailure.ProtocolError ? 502 : 503;
}
