// The one reading of upstream errors shared by requests, upgrade tunnels, TCP proxying and
// TLS origination: which errors are connect failures (Envoy's UF, retried on
// `connect-failure`), resets (UC), refused streams (UR) and per-try timeouts (UT), the
// transport failure reason each is logged with, and the local reply Envoy's router makes.
import t from 'tap';
import { AttemptFailure, chargedStatus, classifyUpstreamError, failureReply, isConnectErrorCode, midResponseFlag, OVERFLOW_FAILURE } from '../src/upstream/connect-errors.ts';

const err = (code: string | undefined, message = 'boom'): Error => Object.assign(new Error(message), code === undefined ? {} : { code });

t.test('connection never made: a connect failure with the errno as reason', async (t) => {
  for (const code of ['ECONNREFUSED', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN']) {
    t.same(classifyUpstreamError(err(code), false, null), { failure: AttemptFailure.ConnectFailure, reason: code }, code);
    t.same(classifyUpstreamError(err(code), null, null), { failure: AttemptFailure.ConnectFailure, reason: code }, `${code} (undici: connection state unknown)`);
    t.ok(isConnectErrorCode(code));
  }
  t.ok(isConnectErrorCode('TLS_error:|CERTIFICATE_VERIFY_FAILED:x:TLS_error_end'), "Envoy's TLS reasons are connect failures");
  t.notOk(isConnectErrorCode('ECONNRESET'));
});

t.test('a connection that was made and then broke is a reset, whatever its code', async (t) => {
  t.same(classifyUpstreamError(err('ECONNRESET'), false, null), { failure: AttemptFailure.Reset, reason: 'ECONNRESET' });
  t.same(classifyUpstreamError(err('ETIMEDOUT'), true, null), { failure: AttemptFailure.Reset, reason: 'ETIMEDOUT' }, 'a timeout on a live connection is no connect failure');
  t.same(classifyUpstreamError(err('UND_ERR_SOCKET', 'other side closed'), null, null), { failure: AttemptFailure.Reset, reason: 'UND_ERR_SOCKET' });
  t.same(classifyUpstreamError(err(undefined, 'socket hang up'), null, null), { failure: AttemptFailure.Reset, reason: 'socket hang up' }, 'no code: the message is the reason');
});

t.test('HTTP/2 REFUSED_STREAM and per-try timeouts', async (t) => {
  t.same(classifyUpstreamError(err('ERR_HTTP2_STREAM_ERROR', 'Stream closed with error code NGHTTP2_REFUSED_STREAM'), true, null).failure, AttemptFailure.RefusedStream);
  t.same(classifyUpstreamError(err('per_try_timeout'), true, null), { failure: AttemptFailure.PerTryTimeout, reason: 'per_try_timeout' });
});

t.test("a TLS failure is a connect failure with the TLS reader's reason, even after the handshake", async (t) => {
  const reader = { explain: (e: Error) => ((e as { code?: string }).code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' ? { code: 'TLS_error:|TLSV13_ALERT_CERTIFICATE_REQUIRED:x:TLS_error_end' } : null) };
  t.same(classifyUpstreamError(err('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), true, reader), {
    failure: AttemptFailure.ConnectFailure,
    reason: 'TLS_error:|TLSV13_ALERT_CERTIFICATE_REQUIRED:x:TLS_error_end',
  });
  t.same(classifyUpstreamError(err('ECONNRESET'), true, reader), { failure: AttemptFailure.Reset, reason: 'ECONNRESET' }, 'not a TLS failure: read as usual');
});

t.test("Envoy's local replies and flags for each failure", async (t) => {
  t.same(failureReply(AttemptFailure.ConnectFailure, 'ECONNREFUSED'), {
    status: 503,
    flag: 'UF',
    details: 'upstream_reset_before_response_started{connection_failure}',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ECONNREFUSED',
  });
  t.match(failureReply(AttemptFailure.Reset, 'ECONNRESET'), { status: 503, flag: 'UC', details: 'upstream_reset_before_response_started{connection_termination}' });
  t.match(failureReply(AttemptFailure.RefusedStream, ''), { status: 503, flag: 'UR', details: 'upstream_reset_before_response_started{remote_refused_stream_reset}' });
  t.match(failureReply(AttemptFailure.PerTryTimeout, 'per_try_timeout'), { status: 504, flag: 'UT', details: 'upstream_per_try_timeout', body: 'upstream request timeout' });
  t.match(OVERFLOW_FAILURE, { status: 503, flag: 'UO', body: /reset reason: overflow$/ });
  t.equal(midResponseFlag(AttemptFailure.PerTryTimeout), 'UT');
  t.equal(midResponseFlag(AttemptFailure.Reset), 'UC');
  t.equal(chargedStatus(AttemptFailure.PerTryTimeout), 504);
  t.equal(chargedStatus(AttemptFailure.ConnectFailure), 503);
});
