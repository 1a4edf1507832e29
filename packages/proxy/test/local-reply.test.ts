// The one local-reply catalogue: Envoy's status, response flag, details and body of each reply
// the proxy makes, encoded once (body bytes, header block, gRPC trailers-only form from the one
// gRPC status table), for the router, the filters, the overload manager and the upgrade path.
import t from 'tap';
import { GrpcStatus } from '@remora/config';
import { failureLocalReply, filterLocalReply, LocalReplies, LocalReply, rawLocalReply } from '../src/http/local-reply.ts';
import { ResponseFlag } from '../src/telemetry/response-flags.ts';
import { AttemptFailure } from '../src/upstream/connect-errors.ts';

t.test('a reply is encoded once: body bytes, content headers, gRPC form', async (t) => {
  const r = LocalReplies.noHealthyUpstream;
  t.equal(r.status, 503);
  t.equal(r.flag, ResponseFlag.UH);
  t.equal(r.details, 'no_healthy_upstream');
  t.same(r.body, Buffer.from('no healthy upstream'));
  t.same(r.head, ['content-length', '19', 'content-type', 'text/plain']);
  t.equal(r.grpcStatus, GrpcStatus.UNAVAILABLE, '503 maps to UNAVAILABLE');
  t.same(r.grpcHead, ['content-type', 'application/grpc', 'grpc-status', '14', 'grpc-message', 'no healthy upstream']);
});

t.test('no body: content-length 0 and no content-type; 404 maps to UNIMPLEMENTED', async (t) => {
  const r = LocalReplies.noRoute;
  t.equal(r.body, null);
  t.same(r.head, ['content-length', '0']);
  t.same(r.grpcHead, ['content-type', 'application/grpc', 'grpc-status', '12']);
});

t.test('circuit-breaker overflow is marked x-envoy-overloaded in both forms', async (t) => {
  const r = LocalReplies.overflow;
  t.equal(r.flag, ResponseFlag.UO);
  t.match(r.head, ['content-length', String(r.body!.length), 'content-type', 'text/plain', 'x-envoy-overloaded', 'true']);
  t.equal(r.grpcHead.at(-2), 'x-envoy-overloaded');
});

t.test("a cause's own gRPC status wins over the mapped one", async (t) => {
  t.equal(LocalReplies.routeTimeout.grpcStatus, GrpcStatus.DEADLINE_EXCEEDED);
  t.equal(failureLocalReply(AttemptFailure.PerTryTimeout, 'per_try_timeout').grpcStatus, GrpcStatus.DEADLINE_EXCEEDED);
  t.equal(new LocalReply(429, ResponseFlag.RL, 'local_rate_limited', 'local_rate_limited', GrpcStatus.RESOURCE_EXHAUSTED).grpcStatusText, '8');
});

t.test('upstream failures: one reply per kind, connect failures per reason', async (t) => {
  const a = failureLocalReply(AttemptFailure.ConnectFailure, 'ECONNREFUSED');
  t.equal(a.flag, ResponseFlag.UF);
  t.match(a.body!.toString(), /transport failure reason: ECONNREFUSED$/);
  t.equal(failureLocalReply(AttemptFailure.ConnectFailure, 'ECONNREFUSED'), a, 'made once');
  t.not(failureLocalReply(AttemptFailure.ConnectFailure, 'EHOSTUNREACH'), a);
  t.equal(failureLocalReply(AttemptFailure.Reset, 'ECONNRESET'), failureLocalReply(AttemptFailure.Reset, 'EPIPE'));
  t.equal(failureLocalReply(AttemptFailure.RefusedStream, '').flag, ResponseFlag.UR);
});

t.test("filters' replies are encoded once per distinct reply", async (t) => {
  const a = filterLocalReply(403, 0, 'rbac_access_denied_matched_policy[none]', 'RBAC: access denied', null);
  t.equal(filterLocalReply(403, 0, 'rbac_access_denied_matched_policy[none]', 'RBAC: access denied', null), a);
  t.not(filterLocalReply(403, 0, 'rbac_access_denied_matched_policy[none]', 'other', null), a, 'another body');
  t.not(filterLocalReply(403, 0, 'rbac_access_denied_matched_policy[none]', 'RBAC: access denied', GrpcStatus.INTERNAL), a, 'another gRPC status');
  t.equal(a.grpcStatus, GrpcStatus.PERMISSION_DENIED);
  t.same(a.grpcHead.slice(4), ['grpc-message', 'RBAC: access denied']);
});

t.test("the codec's refusals come from the catalogue, as raw HTTP/1.1 that closes the connection", async (t) => {
  t.equal(
    rawLocalReply(LocalReplies.lowVersion, 'server: istio-envoy\r\n'),
    'HTTP/1.1 426 Upgrade Required\r\ncontent-length: 16\r\ncontent-type: text/plain\r\nserver: istio-envoy\r\nconnection: close\r\n\r\nUpgrade Required',
  );
  t.equal(rawLocalReply(LocalReplies.codecError, ''), 'HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nBad Request');
  t.equal(rawLocalReply(LocalReplies.headersTooLarge, ''), 'HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n');
  t.equal(rawLocalReply(LocalReplies.noRoute, ''), 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n', 'CONNECT without a route: 404, no body');
  for (const r of [LocalReplies.lowVersion, LocalReplies.codecError, LocalReplies.headersTooLarge, LocalReplies.requestTimeout]) t.equal(r.flag, ResponseFlag.DPE, `${r.status} is a downstream protocol error`);
});
