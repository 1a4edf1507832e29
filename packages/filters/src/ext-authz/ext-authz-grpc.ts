/**
 * Envoy's `envoy.service.auth.v3.Authorization/Check` messages, encoded with protobuf-es. The
 * generated descriptors are loaded on the first gRPC ext_authz config only (they cost time
 * to load, and most proxies never ask a gRPC authorizer).
 */
import type { FilterRequest } from '../filter.ts';

export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/** What a CheckResponse says, in the filter's terms. */
export interface CheckDecision {
  readonly allowed: boolean;
  /** Denied: the status for the client (default 403). */
  readonly status: number;
  readonly body: string;
  /** Flat name, value lists. OK: headers to set on (or `append` to) the upstream request; denied: headers for the client. */
  readonly headers: readonly string[];
  readonly appendHeaders: readonly string[];
  readonly removeHeaders: readonly string[];
  /** OK: headers for the client's response. */
  readonly responseHeaders: readonly string[];
}

export interface CheckCodec {
  /**
   * The gRPC message (5-byte frame header included) of the request's CheckRequest; `body`:
   * the request body read for the check (`http.body` as UTF-8, or `http.raw_body` when packed as bytes).
   */
  encode(req: FilterRequest, headers: Readonly<Record<string, string>>, body?: { readonly bytes: Buffer; readonly packAsBytes: boolean } | null): Buffer;
  /** The CheckResponse of a gRPC response body; throws when it is not one. */
  decode(body: Buffer): CheckDecision;
}

let codec: Promise<CheckCodec> | null = null;

/** The codec, loaded once. */
export function checkCodec(): Promise<CheckCodec> {
  return (codec ??= load());
}

async function load(): Promise<CheckCodec> {
  const [{ create, toBinary, fromBinary }, ext] = await Promise.all([
    import('@bufbuild/protobuf'),
    import('@remora/config/envoy/gen/envoy/service/auth/v3/external_auth_pb.js'),
  ]);
  const { CheckRequestSchema, CheckResponseSchema } = ext;
  return {
    encode(req, headers, body = null) {
      const msg = create(CheckRequestSchema, {
        attributes: {
          source: {
            address: { address: { case: 'socketAddress', value: { address: req.sourceIp, portSpecifier: { case: 'portValue', value: 0 } } } },
            principal: req.peer === null ? '' : `spiffe://${req.peer.principal}`,
          },
          destination: {
            address: { address: { case: 'socketAddress', value: { address: req.destinationIp, portSpecifier: { case: 'portValue', value: req.destinationPort } } } },
          },
          request: {
            time: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
            http: {
              id: req.requestHeader('x-request-id') ?? '',
              method: req.method,
              headers,
              path: req.path,
              host: req.authority,
              scheme: req.scheme,
              protocol: req.protocol,
              size: -1n,
              ...(body === null ? {} : body.packAsBytes ? { rawBody: new Uint8Array(body.bytes.buffer, body.bytes.byteOffset, body.bytes.length) } : { body: body.bytes.toString('utf8') }),
            },
          },
        },
      });
      const bytes = toBinary(CheckRequestSchema, msg);
      const out = Buffer.allocUnsafe(5 + bytes.length);
      out[0] = 0;
      out.writeUInt32BE(bytes.length, 1);
      out.set(bytes, 5);
      return out;
    },
    decode(body) {
      if (body.length < 5 || body[0] !== 0) throw new Error('not an uncompressed gRPC message');
      const len = body.readUInt32BE(1);
      if (body.length < 5 + len) throw new Error('truncated gRPC message');
      const r = fromBinary(CheckResponseSchema, body.subarray(5, 5 + len));
      const code = r.status?.code ?? 0;
      const headers: string[] = [];
      const appendHeaders: string[] = [];
      const responseHeaders: string[] = [];
      const removeHeaders: string[] = [];
      if (code === 0) {
        const ok = r.httpResponse.case === 'okResponse' ? r.httpResponse.value : null;
        for (const h of ok?.headers ?? []) {
          if (h.header === undefined) continue;
          // HeaderValueOption: `append` (deprecated) defaults to false here; append_action APPEND_IF_EXISTS_OR_ADD is 0.
          const append = h.append !== undefined ? h.append : false;
          (append ? appendHeaders : headers).push(h.header.key.toLowerCase(), h.header.value);
        }
        for (const name of ok?.headersToRemove ?? []) removeHeaders.push(name.toLowerCase());
        for (const h of ok?.responseHeadersToAdd ?? []) if (h.header !== undefined) responseHeaders.push(h.header.key.toLowerCase(), h.header.value);
        return { allowed: true, status: 200, body: '', headers, appendHeaders, removeHeaders, responseHeaders };
      }
      const denied = r.httpResponse.case === 'deniedResponse' ? r.httpResponse.value : null;
      for (const h of denied?.headers ?? []) if (h.header !== undefined) headers.push(h.header.key.toLowerCase(), h.header.value);
      const status = denied?.status?.code ?? 0;
      return { allowed: false, status: status === 0 ? 403 : status, body: denied?.body ?? '', headers, appendHeaders, removeHeaders, responseHeaders };
    },
  };
}
