/**
 * Envoy's `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` messages, encoded with
 * protobuf-es. The generated descriptors are loaded on the first ratelimit filter config only
 * (they cost time to load, and most proxies never call a rate limit service).
 */
export const SHOULD_RATE_LIMIT_PATH = '/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit';

/** What a RateLimitResponse says, in the filter's terms. */
export interface RateLimitDecision {
  readonly overLimit: boolean;
  /** Flat name, value lists: headers for the client's response, and for the upstream request. */
  readonly responseHeaders: readonly string[];
  readonly requestHeaders: readonly string[];
  /** The body of a 429 (the service's `raw_body`); '' for none. */
  readonly body: string;
  /**
   * The x-ratelimit-* values (DRAFT_VERSION_03) from the descriptor with the fewest requests
   * left, as Envoy computes them; null when no descriptor carries a limit.
   */
  readonly xRateLimit: { readonly limit: string; readonly remaining: string; readonly reset: string } | null;
}

export interface RateLimitCodec {
  /** The gRPC message (5-byte frame header included) of a RateLimitRequest. */
  encode(domain: string, descriptors: readonly (readonly string[])[]): Buffer;
  /** The RateLimitResponse of a gRPC response body; throws when it is not one. */
  decode(body: Buffer): RateLimitDecision;
}

let codec: Promise<RateLimitCodec> | null = null;

/** The codec, loaded once. */
export function rateLimitCodec(): Promise<RateLimitCodec> {
  return (codec ??= load());
}

/** Envoy's window of a unit in seconds for the quota policy; 0: none is written. */
const WINDOW_SECONDS: readonly number[] = [0, 1, 60, 3600, 86400, 0, 0];

async function load(): Promise<RateLimitCodec> {
  const [{ create, toBinary, fromBinary }, rls] = await Promise.all([
    import('@bufbuild/protobuf'),
    import('@remora/config/envoy/gen/envoy/service/ratelimit/v3/rls_pb.js'),
  ]);
  const { RateLimitRequestSchema, RateLimitResponseSchema, RateLimitResponse_Code } = rls;
  return {
    encode(domain, descriptors) {
      const msg = create(RateLimitRequestSchema, {
        domain,
        descriptors: descriptors.map((flat) => {
          const entries: { key: string; value: string }[] = [];
          for (let i = 0; i < flat.length; i += 2) entries.push({ key: flat[i]!, value: flat[i + 1]! });
          return { entries };
        }),
        hitsAddend: 1,
      });
      const bytes = toBinary(RateLimitRequestSchema, msg);
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
      const r = fromBinary(RateLimitResponseSchema, body.subarray(5, 5 + len));
      const responseHeaders: string[] = [];
      const requestHeaders: string[] = [];
      for (const h of r.responseHeadersToAdd) responseHeaders.push(h.key.toLowerCase(), h.value !== '' ? h.value : Buffer.from(h.rawValue).toString('latin1'));
      for (const h of r.requestHeadersToAdd) requestHeaders.push(h.key.toLowerCase(), h.value !== '' ? h.value : Buffer.from(h.rawValue).toString('latin1'));
      let min: (typeof r.statuses)[number] | null = null;
      let policy = '';
      for (const s of r.statuses) {
        const limit = s.currentLimit;
        if (limit === undefined) continue;
        if (min === null || s.limitRemaining < min.limitRemaining) min = s;
        const window = WINDOW_SECONDS[limit.unit] ?? 0;
        if (window !== 0) {
          policy += `, ${limit.requestsPerUnit};w=${window}`;
          if (limit.name !== '') policy += `;name="${limit.name}"`;
        }
      }
      const xRateLimit =
        min === null
          ? null
          : { limit: `${min.currentLimit!.requestsPerUnit}${policy}`, remaining: String(min.limitRemaining), reset: String(min.durationUntilReset?.seconds ?? 0n) };
      return {
        // Envoy takes anything but OVER_LIMIT (UNKNOWN included) as OK.
        overLimit: r.overallCode === RateLimitResponse_Code.OVER_LIMIT,
        responseHeaders,
        requestHeaders,
        body: Buffer.from(r.rawBody).toString('utf8'),
        xRateLimit,
      };
    },
  };
}
