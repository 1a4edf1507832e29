/**
 * Request header bookkeeping on the hot path: one pass over Node's rawHeaders classifies
 * each header (a length pre-filter, then one map lookup), so the proxy learns the few
 * headers it cares about and builds the upstream header list without a headers object.
 */

export const H_OTHER = 0;
export const H_HOST = 1;
export const H_REQUEST_ID = 2;
export const H_XFF = 3;
export const H_XFP = 4;
export const H_USER_AGENT = 5;
/** Hop-by-hop, never forwarded: keep-alive, proxy-connection, and (handled apart) connection, upgrade. */
export const H_HOP = 6;
export const H_TE = 7;
export const H_CONTENT_LENGTH = 8;
export const H_TRANSFER_ENCODING = 9;
/** `Expect: 100-continue` is answered by the proxy's HTTP server; not forwarded. */
export const H_EXPECT = 10;
export const H_CONNECTION = 11;
export const H_UPGRADE = 12;
/** Forwarded as is; noted because it tells gRPC requests apart. */
export const H_CONTENT_TYPE = 13;
/** `x-forwarded-client-cert`: sanitized at the gateway, appended to on a sidecar's inbound side. */
export const H_XFCC = 14;
/** `x-envoy-attempt-count`: the router sets it on every try, so a value from downstream is replaced, not appended to. */
export const H_ATTEMPT_COUNT = 15;
/** Istio's `x-envoy-peer-metadata` and `-id`: read and removed inbound, replaced by this proxy's outbound. */
export const H_PEER_METADATA = 16;
export const H_PEER_METADATA_ID = 17;

const BY_NAME = new Map<string, number>([
  ['host', H_HOST],
  ['x-request-id', H_REQUEST_ID],
  ['x-forwarded-for', H_XFF],
  ['x-forwarded-proto', H_XFP],
  ['user-agent', H_USER_AGENT],
  ['keep-alive', H_HOP],
  ['proxy-connection', H_HOP],
  ['te', H_TE],
  ['content-length', H_CONTENT_LENGTH],
  ['transfer-encoding', H_TRANSFER_ENCODING],
  ['expect', H_EXPECT],
  ['connection', H_CONNECTION],
  ['upgrade', H_UPGRADE],
  ['content-type', H_CONTENT_TYPE],
  ['x-forwarded-client-cert', H_XFCC],
  ['x-envoy-attempt-count', H_ATTEMPT_COUNT],
  ['x-envoy-peer-metadata', H_PEER_METADATA],
  ['x-envoy-peer-metadata-id', H_PEER_METADATA_ID],
]);
// Common spellings, so most lookups hit without lower-casing.
for (const [name, code] of [...BY_NAME]) {
  BY_NAME.set(name.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase()), code);
}
BY_NAME.set('TE', H_TE);
BY_NAME.set('X-Request-ID', H_REQUEST_ID);

const KNOWN_LENGTH = new Uint8Array(32);
for (const name of BY_NAME.keys()) KNOWN_LENGTH[name.length] = 1;

export function classifyHeader(name: string): number {
  if (name.length >= 32 || KNOWN_LENGTH[name.length] === 0) return H_OTHER;
  return BY_NAME.get(name) ?? BY_NAME.get(name.toLowerCase()) ?? H_OTHER;
}

/** Envoy's router sets (overwrites) it on every proxied response: one per hop, never two. */
export const UPSTREAM_SERVICE_TIME = 'x-envoy-upstream-service-time';

/** Response headers that end at the proxy (hop-by-hop), lower case as undici reports them. */
export const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

/** Removes every `lowerName` entry of a flat `[name, value, …]` list, in place. */
export function removeHeader(headers: string[], lowerName: string): void {
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    if (headers[r]!.toLowerCase() === lowerName) continue;
    headers[w++] = headers[r]!;
    headers[w++] = headers[r + 1]!;
  }
  headers.length = w;
}

/** Drops every header whose lower-cased name is in `lowerNames` from a flat name/value list, in place. */
export function removeHeaders(headers: string[], lowerNames: ReadonlySet<string>): void {
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    if (lowerNames.has(headers[r]!.toLowerCase())) continue;
    headers[w++] = headers[r]!;
    headers[w++] = headers[r + 1]!;
  }
  headers.length = w;
}

/** Value of a header in Node's rawHeaders, case-insensitive; repeats joined with `,` (Envoy matching). */
export function rawHeaderValue(raw: readonly string[], lowerName: string): string | null {
  let out: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!;
    if (n.length === lowerName.length && (n === lowerName || n.toLowerCase() === lowerName)) {
      out = out === null ? raw[i + 1]! : `${out},${raw[i + 1]!}`;
    }
  }
  return out;
}

/** One cookie's value from a Cookie header, or null. */
export function cookieValue(header: string | null, name: string): string | null {
  if (header === null) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/** One query parameter's (first) decoded value, or null. */
export function queryValue(path: string, name: string): string | null {
  return queryOf(path)?.get(name) ?? null;
}

/** The decoded query parameters of a `:path`; null when it has no query string. */
export function queryOf(path: string): URLSearchParams | null {
  const q = path.indexOf('?');
  return q < 0 ? null : new URLSearchParams(path.slice(q + 1));
}
