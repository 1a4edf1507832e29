import { STATUS_CODES } from 'node:http';
import { GrpcStatus } from '@remora/config';
import { AttemptFailure, failureReply, OVERFLOW_FAILURE, type FailureReply } from '../upstream/connect-errors.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import { grpcLocalReplyHeaders, localReplyGrpcStatus } from './grpc.ts';

/**
 * One of Envoy's local replies (a response the proxy makes itself), encoded once: status,
 * response flag and `%RESPONSE_CODE_DETAILS%`, the body as bytes with its header block, and
 * the gRPC trailers-only form (`grpc-status` from the one status table, `grpc-message`
 * percent-encoded). Every local reply goes through one of these: the router's, the filters',
 * the overload manager's, the upgrade path's.
 */
export class LocalReply {
  readonly status: number;
  /** The response flag, as a bit (0: none). */
  readonly flag: number;
  readonly details: string;
  /** The body as the client gets it; null: none. */
  readonly body: Buffer | null;
  /** `content-length` (and `content-type: text/plain` with a body; `x-envoy-overloaded` for UO): copied, then added to. */
  readonly head: readonly string[];
  /** The gRPC status sent to a gRPC request: the cause's own, else Envoy's mapping of `status`. */
  readonly grpcStatus: number;
  readonly grpcStatusText: string;
  /** The trailers-only head of the gRPC form (no `content-length`: the writer adds what its protocol needs). */
  readonly grpcHead: readonly string[];

  constructor(status: number, flag: number, details: string, text: string | null, grpcStatus: number | null = null) {
    this.status = status;
    this.flag = flag;
    this.details = details;
    this.body = text === null ? null : Buffer.from(text);
    const head = ['content-length', String(this.body === null ? 0 : this.body.length)];
    if (this.body !== null) head.push('content-type', 'text/plain');
    // Envoy's router marks every request it drops for circuit breaking (its own UO replies).
    const overloaded = flag === ResponseFlag.UO;
    if (overloaded) head.push('x-envoy-overloaded', 'true');
    this.head = head;
    this.grpcStatus = localReplyGrpcStatus(status, grpcStatus);
    this.grpcStatusText = String(this.grpcStatus);
    const grpcHead = grpcLocalReplyHeaders(this.grpcStatus, (text ?? '').trimEnd());
    if (overloaded) grpcHead.push('x-envoy-overloaded', 'true');
    this.grpcHead = grpcHead;
  }
}

function fromFailure(r: FailureReply, grpcStatus: number | null = null): LocalReply {
  return new LocalReply(r.status, ResponseFlag[r.flag], r.details, r.body, grpcStatus);
}

/** The replies the request path itself makes. */
export const LocalReplies = {
  /** Envoy's 400 for a request target it will not route (path normalization, fragments). */
  badPath: new LocalReply(400, ResponseFlag.DPE, 'path_normalization_failed', 'Bad Request'),
  overloaded: new LocalReply(503, ResponseFlag.OM, 'overload_manager', 'envoy overloaded'),
  internalError: new LocalReply(500, 0, 'internal_error', 'internal error\n'),
  filterError: new LocalReply(500, 0, 'filter_error', 'internal error'),
  noRoute: new LocalReply(404, ResponseFlag.NR, 'route_not_found', null),
  /** An upgrade (CONNECT) neither the connection manager nor the matched route enables: Envoy's 403, before any filter runs. */
  upgradeFailed: new LocalReply(403, 0, 'upgrade_failed', null),
  noCluster: new LocalReply(503, ResponseFlag.NC, 'cluster_not_found', null),
  noHealthyUpstream: new LocalReply(503, ResponseFlag.UH, 'no_healthy_upstream', 'no healthy upstream'),
  /** The cluster's circuit breaker has no room (503 UO). */
  overflow: fromFailure(OVERFLOW_FAILURE),
  routeTimeout: new LocalReply(504, 0, 'upstream_response_timeout', 'upstream request timeout', GrpcStatus.DEADLINE_EXCEEDED),
  upstreamInvalid: new LocalReply(502, ResponseFlag.UPE, 'upstream_response_invalid', 'upstream sent an invalid response'),
  upstreamHeadersTooLarge: new LocalReply(502, ResponseFlag.UPE, 'upstream_response_headers_too_large', 'upstream sent an invalid response'),
  /** The HTTP/1 codec's refusals, before any route or filter (the connection closes after them). */
  lowVersion: new LocalReply(426, ResponseFlag.DPE, 'low_version', 'Upgrade Required'),
  codecError: new LocalReply(400, ResponseFlag.DPE, 'codec_error', 'Bad Request'),
  /** An HTTP/1.1 request without `Host` (Envoy's connection manager refuses it before routing). */
  missingHost: new LocalReply(400, 0, 'missing_host_header', 'Bad Request'),
  headersTooLarge: new LocalReply(431, ResponseFlag.DPE, 'codec_error', ''),
  requestTimeout: new LocalReply(408, ResponseFlag.DPE, 'codec_error', ''),
} as const;

/**
 * A local reply as raw HTTP/1.1 bytes, for a connection with no request object to answer
 * through (the codec's refusals): `server` is the connection
 * manager's `server:` line (or ''); the connection closes after it.
 */
export function rawLocalReply(reply: LocalReply, server: string): string {
  let out = `HTTP/1.1 ${reply.status} ${STATUS_CODES[reply.status] ?? ''}\r\n`;
  for (let i = 0; i < reply.head.length; i += 2) out += `${reply.head[i]}: ${reply.head[i + 1]}\r\n`;
  return `${out}${server}connection: close\r\n\r\n${reply.body === null ? '' : reply.body.toString('latin1')}`;
}

const PER_TRY_TIMEOUT = fromFailure(failureReply(AttemptFailure.PerTryTimeout, ''), GrpcStatus.DEADLINE_EXCEEDED);
const RESET = fromFailure(failureReply(AttemptFailure.Reset, ''));
const REFUSED_STREAM = fromFailure(failureReply(AttemptFailure.RefusedStream, ''));
const PROTOCOL_ERROR = fromFailure(failureReply(AttemptFailure.ProtocolError, ''));

/** Most distinct replies kept for filters and connect failures; past it, replies are made per use. */
const CACHE_LIMIT = 256;

/** Connect-failure replies by transport failure reason (a handful in practice: errno names, TLS errors). */
const connectFailures = new Map<string, LocalReply>();

/** Envoy's reply for an upstream try that failed before its response (upstream/connect-errors.ts). */
export function failureLocalReply(failure: AttemptFailure, reason: string): LocalReply {
  switch (failure) {
    case AttemptFailure.PerTryTimeout:
      return PER_TRY_TIMEOUT;
    case AttemptFailure.RefusedStream:
      return REFUSED_STREAM;
    case AttemptFailure.Reset:
      return RESET;
    case AttemptFailure.ProtocolError:
      return PROTOCOL_ERROR;
  }
  let r = connectFailures.get(reason);
  if (r === undefined) {
    r = fromFailure(failureReply(failure, reason));
    if (connectFailures.size < CACHE_LIMIT) connectFailures.set(reason, r);
  }
  return r;
}

/** Filters' replies by details, then matched on the rest (filters reply with a few constant texts each). */
interface FilterReplyKey {
  readonly status: number;
  readonly flag: number;
  readonly text: string | null;
  readonly explicitGrpc: number | null;
  readonly reply: LocalReply;
}

const filterReplies = new Map<string, FilterReplyKey[]>();
let filterReplyCount = 0;

/** A filter's `sendLocalReply`, encoded once per distinct reply. */
export function filterLocalReply(status: number, flag: number, details: string, text: string | null, grpcStatus: number | null): LocalReply {
  let list = filterReplies.get(details);
  if (list !== undefined) {
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      if (r.status === status && r.flag === flag && r.explicitGrpc === grpcStatus && r.text === text) return r.reply;
    }
  }
  const reply = new LocalReply(status, flag, details, text, grpcStatus);
  if (filterReplyCount < CACHE_LIMIT) {
    if (list === undefined) filterReplies.set(details, (list = []));
    list.push({ status, flag, text, explicitGrpc: grpcStatus, reply });
    filterReplyCount++;
  }
  return reply;
}
