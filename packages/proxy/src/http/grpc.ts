/**
 * The gRPC pieces Envoy applies to gRPC requests it proxies: recognising them, the
 * `grpc-timeout` header, and local replies sent as gRPC trailers-only responses. References:
 * Envoy `source/common/grpc/{common.cc,status.cc}`, `source/common/http/utility.cc`
 * (`prepareLocalReply`, `PercentEncoding::encode`), and gRPC's `doc/PROTOCOL-HTTP2.md`.
 */

import { GrpcStatus } from '@remora/config';

export { GrpcStatus, type GrpcStatusName } from '@remora/config';

const GRPC = 'application/grpc';

/**
 * Whether a request is gRPC by its Content-Type, as Envoy's `Grpc::Common::hasGrpcContentType`:
 * exactly `application/grpc` or `application/grpc+<subtype>` (case-sensitive). gRPC-Web
 * (`application/grpc-web…`) is not gRPC.
 */
export function isGrpcRequest(contentType: string | null): boolean {
  return (
    contentType !== null &&
    contentType.startsWith(GRPC) &&
    (contentType.length === GRPC.length || contentType.charCodeAt(GRPC.length) === 43) /* + */
  );
}

/** Envoy's `MAX_GRPC_TIMEOUT_VALUE`: TimeoutValue is at most 8 digits. */
const MAX_TIMEOUT_VALUE = 99_999_999;

/**
 * The `grpc-timeout` header in milliseconds, or null when it is not
 * `TimeoutValue TimeoutUnit` (1 to 8 ASCII digits, then one of `H M S m u n`). Microseconds and
 * nanoseconds round up to the next millisecond, as Envoy's `Grpc::Common::getGrpcTimeout`; so
 * `1n` is 1 ms and `0m` is 0 (which Envoy's router reads as "no timeout").
 */
export function parseGrpcTimeout(value: string): number | null {
  const len = value.length;
  if (len < 2 || len > 9) return null;
  let n = 0;
  for (let i = 0; i < len - 1; i++) {
    const d = value.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return null;
    n = n * 10 + d;
  }
  if (n > MAX_TIMEOUT_VALUE) return null;
  switch (value.charCodeAt(len - 1)) {
    case 72 /* H */:
      return n * 3_600_000;
    case 77 /* M */:
      return n * 60_000;
    case 83 /* S */:
      return n * 1000;
    case 109 /* m */:
      return n;
    case 117 /* u */:
      return Math.ceil(n / 1000);
    case 110 /* n */:
      return Math.ceil(n / 1_000_000);
    default:
      return null;
  }
}

/**
 * The overall timeout Envoy's router applies to a gRPC request on an Istio route, in ms (0: none).
 * istiod sets `max_grpc_timeout` to the route timeout (0 when the route has none), so the router
 * uses the request's `grpc-timeout` (absent or invalid: infinite), capped by the route timeout
 * when there is one (`Router::FilterUtility::finalTimeout`).
 */
export function grpcRequestTimeoutMs(routeTimeoutMs: number, grpcTimeout: string | null): number {
  let ms = grpcTimeout === null ? 0 : (parseGrpcTimeout(grpcTimeout) ?? 0);
  if (routeTimeoutMs !== 0 && (ms === 0 || ms > routeTimeoutMs)) ms = routeTimeoutMs;
  return ms;
}

/**
 * HTTP status → gRPC status, Envoy's `Grpc::Utility::httpToGrpcStatus` (from gRPC's
 * `doc/http-grpc-status-mapping.md`): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 * 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN.
 */
export function httpToGrpcStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/**
 * gRPC status → HTTP status, Envoy's `Grpc::Utility::grpcToHttpStatus` (what Envoy feeds outlier
 * detection and retries when an upstream answers with `grpc-status` in its headers).
 */
export function grpcToHttpStatus(grpcStatus: number): number {
  switch (grpcStatus) {
    case GrpcStatus.OK:
      return 200;
    case GrpcStatus.CANCELLED:
      return 499;
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.OUT_OF_RANGE:
      return 400;
    case GrpcStatus.DEADLINE_EXCEEDED:
      return 504;
    case GrpcStatus.NOT_FOUND:
      return 404;
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.ABORTED:
      return 409;
    case GrpcStatus.PERMISSION_DENIED:
      return 403;
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return 429;
    case GrpcStatus.UNIMPLEMENTED:
      return 501;
    case GrpcStatus.UNAVAILABLE:
      return 503;
    case GrpcStatus.UNAUTHENTICATED:
      return 401;
    default:
      // UNKNOWN, INTERNAL, DATA_LOSS and codes past 16.
      return 500;
  }
}

/**
 * The gRPC status of a local reply to a gRPC request. Envoy uses the status the cause carries
 * when it has one (`explicit`: a fault abort with `grpcStatus`, the connection manager's max
 * stream duration → DEADLINE_EXCEEDED), else `httpToGrpcStatus` of the HTTP status it would
 * have sent. So Remora's replies map as Envoy's do: 404 NR → 12 UNIMPLEMENTED; 503 UH/UF/UC/UO/
 * NC/URX → 14 UNAVAILABLE; 504 UT → 14 UNAVAILABLE (Envoy's router passes no explicit status for
 * its timeout; only Envoy ≥ 1.38 with the opt-in runtime flag
 * `envoy.reloadable_features.grpc_timeout_returns_deadline_exceeded` sends 4 DEADLINE_EXCEEDED:
 * pass it as `explicit` to mimic that); 429 RL → 14; 403 RBAC → 7 PERMISSION_DENIED; 401 JWT →
 * 16 UNAUTHENTICATED; 400 DPE → 13 INTERNAL; 500 → 2 UNKNOWN.
 */
export function localReplyGrpcStatus(httpStatus: number, explicit: number | null = null): number {
  return explicit ?? httpToGrpcStatus(httpStatus);
}

/** HTTP status of every gRPC local reply: the status travels in `grpc-status`. */
export const GRPC_LOCAL_REPLY_HTTP_STATUS = 200;

/**
 * Headers of a gRPC local reply, as Envoy's `prepareLocalReply` sends it to a gRPC request: a
 * trailers-only response (HTTP 200, everything in one header block, end of stream, no body and
 * no content-length): `content-type: application/grpc`, `grpc-status`, and `grpc-message` (the
 * percent-encoded reply text) when the text is not empty. Envoy sends the text as it is, except
 * that it drops one trailing newline from JSON-formatted bodies; the caller passes the final text.
 */
export function grpcLocalReplyHeaders(grpcStatus: number, message: string): string[] {
  const out = ['content-type', GRPC, 'grpc-status', String(grpcStatus)];
  if (message !== '') out.push('grpc-message', encodeGrpcMessage(message));
  return out;
}

const HEX = '0123456789ABCDEF';

/**
 * Percent-encodes a `grpc-message` value per gRPC's PROTOCOL-HTTP2.md: the text as UTF-8, every
 * byte outside `Percent-Byte-Unencoded` (%x20-%x24 / %x26-%x7E: space and VCHAR except `%`)
 * written `%` + two upper-case hex digits. Text that needs no encoding is returned as is.
 * (Envoy's `PercentEncoding::encode` also escapes `~` (%7E); decoders read both the same way.)
 */
export function encodeGrpcMessage(message: string): string {
  let i = 0;
  for (; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) break;
  }
  if (i === message.length) return message;
  // Slow path from the first byte that needs it; the prefix before it is plain ASCII.
  let out = message.slice(0, i);
  const bytes = Buffer.from(message.slice(i), 'utf8');
  for (let j = 0; j < bytes.length; j++) {
    const b = bytes[j]!;
    if (b < 0x20 || b > 0x7e || b === 0x25) out += `%${HEX[b >> 4]!}${HEX[b & 15]!}`;
    else out += String.fromCharCode(b);
  }
  return out;
}

/**
 * Counts gRPC messages in a stream of body chunks (Envoy's grpc_stats frame inspector, which
 * Istio's `istio_request_messages_total` / `istio_response_messages_total` read): each message
 * is a 5-byte prefix (flag, 32-bit big-endian length) and its payload; a message counts when
 * its prefix starts.
 */
export class GrpcMessageCounter {
  count = 0;
  /** Bytes of the current prefix read so far (0 between messages). */
  #prefixAt = 0;
  #length = 0;
  /** Payload bytes still to skip. */
  #remaining = 0;

  feed(chunk: Uint8Array): void {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#remaining > 0) {
        const skip = Math.min(this.#remaining, n - i);
        this.#remaining -= skip;
        i += skip;
        continue;
      }
      if (this.#prefixAt === 0) this.count++;
      else this.#length = this.#length * 256 + chunk[i]!;
      i++;
      if (++this.#prefixAt === 5) {
        this.#remaining = this.#length;
        this.#length = 0;
        this.#prefixAt = 0;
      }
    }
  }
}
