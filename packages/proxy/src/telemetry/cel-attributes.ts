/**
 * Envoy's request attributes for CEL expressions (the access-log CEL filter, the stats
 * plugin's tag values): `request.*`, `response.*`, `source.*`, `destination.*`,
 * `connection.*`, `upstream.*`, `xds.*`, read from a finished request's access-log record.
 * The expression is parsed when the config is compiled; per evaluation, one small activation
 * whose fields are getters, so an attribute is read only when the expression reads it.
 * Header maps hold only the names the expression can ask for (see `celHeaderNames`).
 */
import { celHeaderNames, compileCel } from '@remora/config';
import { ResponseFlag } from './response-flags.ts';
import type { AccessLogRecord } from './access-log-record.ts';

/** Remora's response-flag bits past DPE/UMSDR → Envoy's CoreResponseFlag bit (what `response.flags` holds). */
const ENVOY_BITS: readonly (readonly [number, number])[] = [
  [ResponseFlag.UPE, 1 << 23],
  [ResponseFlag.NC, 1 << 24],
  [ResponseFlag.OM, 1 << 25],
  [ResponseFlag.DF, 1 << 26],
];
const SAME_BITS = (1 << 20) - 1;

function envoyFlags(flags: number): bigint {
  let out = flags & SAME_BITS;
  for (const [ours, theirs] of ENVOY_BITS) if ((flags & ours) !== 0) out |= theirs;
  return BigInt(out);
}

/** `host:port` → [host, port]; IPv6 `[::1]:80` too. */
function splitHostPort(a: string | null): [string, bigint] {
  if (a === null || a === '') return ['', 0n];
  const i = a.lastIndexOf(':');
  if (i < 0) return [a, 0n];
  const host = a.startsWith('[') ? a.slice(1, i - 1) : a.slice(0, i);
  const port = Number(a.slice(i + 1));
  return [host, Number.isInteger(port) ? BigInt(port) : 0n];
}

function headerMap(names: readonly string[], get: ((name: string) => string | null) | undefined): Map<string, string> {
  const m = new Map<string, string>();
  if (get === undefined) return m;
  for (const n of names) {
    const v = get(n);
    if (v !== null) m.set(n, v);
  }
  return m;
}

function activation(r: AccessLogRecord, names: readonly string[]): Record<string, unknown> {
  return {
    request: {
      get path() { return r.path ?? r.originalPath; },
      get url_path() { const p = r.path ?? r.originalPath; const q = p.indexOf('?'); return q < 0 ? p : p.slice(0, q); },
      get host() { return r.authority ?? ''; },
      get method() { return r.method; },
      get headers() { return headerMap(names, r.requestHeader?.bind(r)); },
      get useragent() { return r.userAgent ?? ''; },
      get id() { return r.requestId ?? ''; },
      get protocol() { return r.protocol; },
      get size() { return BigInt(r.bytesReceived); },
      get total_size() { return BigInt(r.bytesReceived); },
    },
    response: {
      get code() { return BigInt(r.responseCode); },
      get code_details() { return r.responseCodeDetails; },
      get flags() { return envoyFlags(r.responseFlags); },
      get headers() { return headerMap(names, r.responseHeader?.bind(r)); },
      get size() { return BigInt(r.bytesSent); },
      get total_size() { return BigInt(r.bytesSent); },
    },
    source: {
      get address() { return splitHostPort(r.downstreamRemoteAddress)[0]; },
      get port() { return splitHostPort(r.downstreamRemoteAddress)[1]; },
    },
    destination: {
      get address() { return splitHostPort(r.downstreamLocalAddress)[0]; },
      get port() { return splitHostPort(r.downstreamLocalAddress)[1]; },
    },
    connection: {
      get mtls() { return r.downstreamMtls === true; },
      get requested_server_name() { return r.requestedServerName ?? ''; },
    },
    upstream: {
      get address() { return splitHostPort(r.upstreamHost)[0]; },
      get port() { return splitHostPort(r.upstreamHost)[1]; },
    },
    xds: {
      get cluster_name() { return r.upstreamCluster ?? ''; },
      get route_name() { return r.routeName ?? ''; },
    },
  };
}

/**
 * A CEL expression as a function of a finished request: its value, or `undefined` when
 * evaluating fails (a missing header, a type mismatch), which Envoy treats as "no value".
 */
export function compileRecordExpression(expression: string): (r: AccessLogRecord) => unknown {
  const program = compileCel(expression);
  const names = celHeaderNames(expression);
  return (r) => {
    try {
      return program(activation(r, names));
    } catch {
      return undefined;
    }
  };
}

/** An access-log filter: true when the expression is `true` (Envoy's CEL filter logs nothing on an error or a non-bool). */
export function compileRecordFilter(expression: string): (r: AccessLogRecord) => boolean {
  const f = compileRecordExpression(expression);
  return (r) => f(r) === true;
}

/** A tag value, as the stats plugin writes one: strings as they are, numbers and bools printed; an error or null: `unknown`. */
export function compileRecordTag(expression: string): (r: AccessLogRecord) => string {
  const f = compileRecordExpression(expression);
  return (r) => {
    const v = f(r);
    if (v === undefined || v === null) return 'unknown';
    if (typeof v === 'string') return v;
    if (typeof v === 'bigint' || typeof v === 'number' || typeof v === 'boolean') return String(v);
    return 'unknown';
  };
}
