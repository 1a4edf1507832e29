// gRPC handling as Envoy applies it: Content-Type detection (Grpc::Common::hasGrpcContentType),
// grpc-timeout parsing (Grpc::Common::getGrpcTimeout), the HTTP↔gRPC status tables
// (Grpc::Utility), local replies as trailers-only responses (Http::Utility::prepareLocalReply)
// and grpc-message percent-encoding (gRPC doc/PROTOCOL-HTTP2.md, "Status-Message").
import t from 'tap';
import {
  encodeGrpcMessage,
  GRPC_LOCAL_REPLY_HTTP_STATUS,
  grpcLocalReplyHeaders,
  grpcRequestTimeoutMs,
  GrpcStatus,
  grpcToHttpStatus,
  httpToGrpcStatus,
  isGrpcRequest,
  localReplyGrpcStatus,
  parseGrpcTimeout,
} from '@remora/proxy';

t.test('isGrpcRequest: application/grpc and application/grpc+<subtype> only', async (t) => {
  const yes = ['application/grpc', 'application/grpc+proto', 'application/grpc+json', 'application/grpc+'];
  const no = [
    null,
    '',
    'application/grpc-web',
    'application/grpc-web+proto',
    'application/grpc-web-text',
    'application/grpc;charset=utf-8',
    'application/grpcx',
    'Application/gRPC',
    'application/json',
    ' application/grpc',
  ];
  for (const ct of yes) t.equal(isGrpcRequest(ct), true, `${ct} is gRPC`);
  for (const ct of no) t.equal(isGrpcRequest(ct), false, `${JSON.stringify(ct)} is not gRPC`);
});

t.test('parseGrpcTimeout: every unit, in ms, sub-ms units rounded up', async (t) => {
  const table: [string, number | null][] = [
    ['1H', 3_600_000],
    ['2M', 120_000],
    ['3S', 3000],
    ['250m', 250],
    ['0m', 0],
    ['1000u', 1],
    ['1001u', 2],
    ['1u', 1],
    ['0u', 0],
    ['1n', 1],
    ['1000000n', 1],
    ['1000001n', 2],
    ['99999999n', 100],
    ['99999999H', 99_999_999 * 3_600_000],
    ['00000001S', 1000],
    // Invalid: Envoy's getGrpcTimeout returns nullopt for all of these.
    ['', null],
    ['S', null],
    ['10', null],
    ['100000000S', null], // 9 digits
    ['1s', null],
    ['1h', null],
    ['1x', null],
    ['-1S', null],
    ['+1S', null],
    ['1.5S', null],
    [' 1S', null],
    ['1S ', null],
    ['1 S', null],
    ['0x10m', null],
  ];
  for (const [value, ms] of table) t.equal(parseGrpcTimeout(value), ms, `${JSON.stringify(value)} → ${ms}`);
});

t.test("grpcRequestTimeoutMs: grpc-timeout capped by Istio's max_grpc_timeout (= route timeout)", async (t) => {
  // [route timeout ms, grpc-timeout header, expected; 0 = no timeout]
  const table: [number, string | null, number][] = [
    [0, null, 0], // no route timeout, no header: none
    [0, '5S', 5000], // no route timeout: the client's deadline applies
    [10_000, null, 10_000], // no header: the route's
    [10_000, '5S', 5000], // the shorter wins
    [3000, '5S', 3000],
    [3000, '0S', 3000], // 0 means infinity, capped by the route
    [0, '0S', 0],
    [3000, 'bogus', 3000], // invalid header: as if absent
    [0, 'bogus', 0],
  ];
  for (const [route, header, ms] of table) t.equal(grpcRequestTimeoutMs(route, header), ms, `route ${route}, grpc-timeout ${header} → ${ms}`);
});

t.test("httpToGrpcStatus: Envoy's table", async (t) => {
  const table: [number, number][] = [
    [400, 13],
    [401, 16],
    [403, 7],
    [404, 12],
    [429, 14],
    [502, 14],
    [503, 14],
    [504, 14],
    // everything else: UNKNOWN
    [200, 2],
    [204, 2],
    [301, 2],
    [405, 2],
    [408, 2],
    [409, 2],
    [413, 2],
    [431, 2],
    [500, 2],
    [501, 2],
    [505, 2],
  ];
  for (const [http, grpc] of table) t.equal(httpToGrpcStatus(http), grpc, `${http} → ${grpc}`);
});

t.test("grpcToHttpStatus: Envoy's table", async (t) => {
  const table: [number, number][] = [
    [0, 200],
    [1, 499],
    [2, 500],
    [3, 400],
    [4, 504],
    [5, 404],
    [6, 409],
    [7, 403],
    [8, 429],
    [9, 400],
    [10, 409],
    [11, 400],
    [12, 501],
    [13, 500],
    [14, 503],
    [15, 500],
    [16, 401],
    [17, 500],
    [-1, 500],
  ];
  for (const [grpc, http] of table) t.equal(grpcToHttpStatus(grpc), http, `${grpc} → ${http}`);
});

t.test("local replies to gRPC requests: Remora's causes map as Envoy's do", async (t) => {
  // [cause, HTTP status the proxy would send, explicit gRPC status the cause carries, expected]
  const table: [string, number, number | null, number][] = [
    ['404 NR route_not_found', 404, null, GrpcStatus.UNIMPLEMENTED],
    ['503 UH no_healthy_upstream', 503, null, GrpcStatus.UNAVAILABLE],
    ['503 UF connection failure', 503, null, GrpcStatus.UNAVAILABLE],
    ['503 UC connection termination', 503, null, GrpcStatus.UNAVAILABLE],
    ['503 UO overflow', 503, null, GrpcStatus.UNAVAILABLE],
    ['503 NC cluster_not_found', 503, null, GrpcStatus.UNAVAILABLE],
    ['504 UT upstream request timeout (Envoy default: the router passes no gRPC status)', 504, null, GrpcStatus.UNAVAILABLE],
    ['504 UT with grpc_timeout_returns_deadline_exceeded', 504, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.DEADLINE_EXCEEDED],
    ['408 downstream max stream duration (HCM passes DEADLINE_EXCEEDED)', 408, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.DEADLINE_EXCEEDED],
    ['429 RL local rate limit', 429, null, GrpcStatus.UNAVAILABLE],
    ['403 RBAC: access denied', 403, null, GrpcStatus.PERMISSION_DENIED],
    ['401 Jwt is missing', 401, null, GrpcStatus.UNAUTHENTICATED],
    ['400 DPE', 400, null, GrpcStatus.INTERNAL],
    ['431 DPE headers too large', 431, null, GrpcStatus.UNKNOWN],
    ['500 internal error', 500, null, GrpcStatus.UNKNOWN],
    ['fault abort with grpcStatus RESOURCE_EXHAUSTED', 200, GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus.RESOURCE_EXHAUSTED],
    ['fault abort with grpcStatus OK', 200, GrpcStatus.OK, GrpcStatus.OK],
  ];
  for (const [cause, http, explicit, grpc] of table) t.equal(localReplyGrpcStatus(http, explicit), grpc, cause);
  t.equal(localReplyGrpcStatus(503), GrpcStatus.UNAVAILABLE, 'explicit status defaults to none');
});

t.test('grpcLocalReplyHeaders: a trailers-only response, as Envoy sends it', async (t) => {
  t.equal(GRPC_LOCAL_REPLY_HTTP_STATUS, 200);
  t.same(grpcLocalReplyHeaders(14, 'no healthy upstream'), [
    'content-type',
    'application/grpc',
    'grpc-status',
    '14',
    'grpc-message',
    'no healthy upstream',
  ]);
  t.same(grpcLocalReplyHeaders(12, ''), ['content-type', 'application/grpc', 'grpc-status', '12'], 'no text: no grpc-message (404 NR has no body)');
  t.same(
    grpcLocalReplyHeaders(14, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ECONNREFUSED'),
    [
      'content-type',
      'application/grpc',
      'grpc-status',
      '14',
      'grpc-message',
      'upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ECONNREFUSED',
    ],
  );
  t.same(grpcLocalReplyHeaders(7, 'RBAC: access denied'), ['content-type', 'application/grpc', 'grpc-status', '7', 'grpc-message', 'RBAC: access denied']);
  const h = grpcLocalReplyHeaders(2, 'internal error\n');
  t.equal(h[5], 'internal error%0A', 'a trailing newline is encoded, as Envoy does for text bodies');
  t.notOk(h.includes('content-length'), 'no content-length: Envoy removes it from gRPC local replies');
});

t.test('encodeGrpcMessage: percent-encoding per the gRPC HTTP/2 protocol', async (t) => {
  const table: [string, string][] = [
    ['', ''],
    ['no healthy upstream', 'no healthy upstream'], // spaces stay
    ['100%', '100%25'],
    ['%%', '%25%25'],
    ['a%20b', 'a%2520b'], // an already-encoded-looking text is encoded again
    ['line1\nline2', 'line1%0Aline2'],
    ['tab\there', 'tab%09here'],
    ['\r\n', '%0D%0A'],
    ['\x00', '%00'],
    ['\x7f', '%7F'], // DEL
    ['~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}', '~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}'], // every other printable stays
    ['é', '%C3%A9'], // non-ASCII: its UTF-8 bytes, upper-case hex
    ['café 100%', 'caf%C3%A9 100%25'],
    ['日本', '%E6%97%A5%E6%9C%AC'],
    ['😀', '%F0%9F%98%80'], // astral plane: 4 UTF-8 bytes
    ['\u00a0', '%C2%A0'],
  ];
  for (const [text, encoded] of table) {
    t.equal(encodeGrpcMessage(text), encoded, `${JSON.stringify(text)} → ${encoded}`);
    t.equal(decodeURIComponent(encoded), text, `${encoded} decodes back`);
  }

  // Every output is in the spec's grammar: Percent-Byte-Unencoded (%x20-24 / %x26-7E) or "%" 2HEXDIGIT (0-9 A-F).
  const grammar = /^(?:[\x20-\x24\x26-\x7e]|%[0-9A-F]{2})*$/;
  let all = '';
  for (let c = 0; c < 0x800; c++) all += String.fromCharCode(c);
  const encoded = encodeGrpcMessage(all);
  t.match(encoded, grammar, 'all of U+0000–U+07FF encode into the grammar');
  t.equal(decodeURIComponent(encoded), all, 'and decode back');
  const plain = 'plain ASCII message';
  t.equal(encodeGrpcMessage(plain), plain, 'text needing no encoding comes back as is');
});
