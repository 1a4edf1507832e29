/**
 * Envoy's access log formats compiled once per config into a function of the finished
 * request: a text line (missing values `-`), or a line of JSON (an operator alone in a value
 * keeps its type — numbers stay numbers — and a missing one is null). Nothing is parsed per
 * request.
 */
import { hostname } from 'node:os';
import { ENVOY_DEFAULT_ACCESS_LOG_FORMAT, parseAccessLogFormat, type AccessLogConfig, type FormatOperator } from '@remora/config';
import { formatResponseFlags } from './response-flags.ts';
import type { AccessLogRecord } from './access-log-record.ts';

export type LineFormatter = (r: AccessLogRecord) => string;
type Value = string | number | null;
type Getter = (r: AccessLogRecord) => Value;

/** The line formatter of one access log config. Throws (with the operator) when a format cannot be used. */
export function compileAccessLogFormat(format: AccessLogConfig['format']): LineFormatter {
  if (format === undefined) return compileText(ENVOY_DEFAULT_ACCESS_LOG_FORMAT);
  if ('text' in format) return compileText(format.text);
  const obj = compileJsonObject(format.json);
  return (r) => obj(r) + '\n';
}

function compileText(text: string): LineFormatter {
  const parts = parseAccessLogFormat(text).map((p): LineFormatter => {
    if (typeof p === 'string') return () => p;
    const get = getter(p);
    return (r) => {
      const v = get(r);
      return v === null || v === '' ? '-' : String(v);
    };
  });
  if (parts.length === 1) return parts[0]!;
  return (r) => {
    let s = '';
    for (let i = 0; i < parts.length; i++) s += parts[i]!(r);
    return s;
  };
}

/** A JSON object's writer: its keys' JSON written once, each value by its format. */
function compileJsonObject(json: Readonly<Record<string, unknown>>): (r: AccessLogRecord) => string {
  const entries = Object.entries(json).map(([key, value], i): [string, (r: AccessLogRecord) => string] => {
    const prefix = (i === 0 ? '{' : ',') + JSON.stringify(key) + ':';
    if (typeof value === 'string') return [prefix, compileJsonValue(value)];
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return [prefix, compileJsonObject(value as Record<string, unknown>)];
    const literal = JSON.stringify(value ?? null);
    return [prefix, () => literal];
  });
  if (entries.length === 0) return () => '{}';
  return (r) => {
    let s = '';
    for (let i = 0; i < entries.length; i++) s += entries[i]![0] + entries[i]![1](r);
    return s + '}';
  };
}

function compileJsonValue(format: string): (r: AccessLogRecord) => string {
  const parts = parseAccessLogFormat(format);
  if (parts.length === 1 && typeof parts[0] !== 'string') {
    // An operator alone: its own type, null when missing.
    const get = getter(parts[0]!);
    return (r) => {
      const v = get(r);
      return v === null || v === '' ? 'null' : JSON.stringify(v);
    };
  }
  const text = compileText(format);
  return (r) => JSON.stringify(text(r));
}

/** `.000Z` … `.999Z`: the end of an ISO-8601 time, by millisecond. */
const MILLIS_Z: readonly string[] = Array.from({ length: 1000 }, (_, i) => `.${String(i).padStart(3, '0')}Z`);
let lastSecond = -1;
/** `lastSecond` as ISO-8601 without its milliseconds. */
let lastSecondIso = '';
let lastMs = -1;
let lastIso = '';

/**
 * ISO-8601 start time (Envoy's default START_TIME): the date and time of day are formatted
 * once per second, the milliseconds appended from a table.
 */
export function isoTime(ms: number): string {
  if (ms === lastMs) return lastIso;
  const second = Math.floor(ms / 1000);
  if (second !== lastSecond) {
    lastSecond = second;
    lastSecondIso = new Date(second * 1000).toISOString().slice(0, -5);
  }
  lastMs = ms;
  lastIso = lastSecondIso + MILLIS_Z[(ms - second * 1000) | 0]!;
  return lastIso;
}

const withoutPort = (a: string): string => {
  const i = a.lastIndexOf(':');
  if (i < 0) return a;
  const host = a.slice(0, i);
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
};
const portOf = (a: string): number | null => {
  const i = a.lastIndexOf(':');
  return i < 0 ? null : Number(a.slice(i + 1));
};

const HOSTNAME = hostname();

function cut(get: Getter, max: number | null): Getter {
  if (max === null) return get;
  return (r) => {
    const v = get(r);
    return typeof v === 'string' && v.length > max ? v.slice(0, max) : v;
  };
}

function getter(op: FormatOperator): Getter {
  return cut(baseGetter(op), op.maxLength);
}

function baseGetter(op: FormatOperator): Getter {
  switch (op.name) {
    case 'START_TIME':
      return op.args.length === 0 || op.args[0] === '' ? (r) => isoTime(r.startTime) : strftime(op.args[0]!);
    case 'REQ': {
      const main = requestHeader(op.args[0]!);
      if (op.args.length === 1) return main;
      const alt = requestHeader(op.args[1]!);
      return (r) => main(r) ?? alt(r);
    }
    case 'REQ_WITHOUT_QUERY': {
      const get = baseGetter({ ...op, name: 'REQ' });
      return (r) => {
        const v = get(r);
        if (typeof v !== 'string') return v;
        const q = v.indexOf('?');
        return q < 0 ? v : v.slice(0, q);
      };
    }
    case 'RESP': {
      const main = responseHeader(op.args[0]!);
      if (op.args.length === 1) return main;
      const alt = responseHeader(op.args[1]!);
      return (r) => main(r) ?? alt(r);
    }
    case 'TRAILER':
      return () => null;
    case 'PROTOCOL':
      return (r) => (r.protocol === '-' ? null : r.protocol);
    case 'RESPONSE_CODE':
      return (r) => r.responseCode;
    case 'RESPONSE_FLAGS':
      return (r) => formatResponseFlags(r.responseFlags);
    case 'RESPONSE_CODE_DETAILS':
      return (r) => (r.responseCodeDetails === '-' ? null : r.responseCodeDetails || null);
    case 'UPSTREAM_TRANSPORT_FAILURE_REASON':
      return (r) => r.upstreamTransportFailureReason || null;
    case 'BYTES_RECEIVED':
      return (r) => r.bytesReceived;
    case 'BYTES_SENT':
      return (r) => r.bytesSent;
    case 'DURATION':
      return (r) => Math.round(r.durationMs);
    case 'UPSTREAM_HOST':
      return (r) => r.upstreamHost;
    case 'UPSTREAM_CLUSTER':
    case 'UPSTREAM_CLUSTER_RAW':
      return (r) => r.upstreamCluster;
    case 'DOWNSTREAM_LOCAL_ADDRESS':
      return (r) => r.downstreamLocalAddress;
    case 'DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT':
      return (r) => withoutPort(r.downstreamLocalAddress);
    case 'DOWNSTREAM_LOCAL_PORT':
      return (r) => portOf(r.downstreamLocalAddress);
    case 'DOWNSTREAM_REMOTE_ADDRESS':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS':
      return (r) => r.downstreamRemoteAddress;
    case 'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT':
      return (r) => withoutPort(r.downstreamRemoteAddress);
    case 'DOWNSTREAM_REMOTE_PORT':
      return (r) => portOf(r.downstreamRemoteAddress);
    case 'REQUESTED_SERVER_NAME':
      return (r) => r.requestedServerName;
    case 'ROUTE_NAME':
      return (r) => r.routeName;
    case 'HOSTNAME':
      return () => HOSTNAME;
    case 'DYNAMIC_METADATA': {
      const ns = op.args[0]!;
      const key = op.args[1];
      if (key !== undefined) return (r) => r.dynamicMetadata?.(ns, key) ?? null;
      // The whole namespace: its Struct as JSON (Envoy's form), missing when empty.
      return (r) => {
        const all = r.dynamicMetadataOf?.(ns);
        return all === undefined || all === null ? null : JSON.stringify(all);
      };
    }
    // Values Remora does not have: written as missing, as Envoy writes an unset value.
    case 'CONNECTION_TERMINATION_DETAILS':
    case 'UPSTREAM_LOCAL_ADDRESS':
      return () => null;
    default:
      // parseAccessLogFormat admits only the operators above.
      throw new Error(`command operator %${op.name}% is not supported`);
  }
}

/** `%REQ(name)%`: the record's own fields for the headers every record has, else the request's headers. */
function requestHeader(name: string): Getter {
  switch (name) {
    case ':method':
      return (r) => (r.method === '-' ? null : r.method);
    case ':path':
      return (r) => r.path ?? (r.originalPath === '-' ? null : r.originalPath);
    case ':authority':
    case 'host':
      return (r) => r.authority;
    case 'x-envoy-original-path':
      return (r) => (r.path !== undefined && r.originalPath !== r.path ? r.originalPath : null);
    case 'x-forwarded-for':
      return (r) => r.xForwardedFor;
    case 'user-agent':
      return (r) => r.userAgent;
    case 'x-request-id':
      return (r) => r.requestId;
    default:
      return (r) => r.requestHeader?.(name) ?? null;
  }
}

function responseHeader(name: string): Getter {
  if (name === 'x-envoy-upstream-service-time') return (r) => (r.upstreamServiceTimeMs < 0 ? null : String(Math.round(r.upstreamServiceTimeMs)));
  return (r) => r.responseHeader?.(name) ?? null;
}

/** `%START_TIME(fmt)%`: Envoy's strftime-like formats, the common specifiers (UTC). */
function strftime(fmt: string): Getter {
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  const parts: ((d: Date) => string)[] = [];
  for (let i = 0; i < fmt.length; i++) {
    const c = fmt[i]!;
    if (c !== '%' || i === fmt.length - 1) {
      parts.push(() => c);
      continue;
    }
    const m = /^%E(\d)S|^%(\d)?f/.exec(fmt.slice(i));
    if (m !== null) {
      const digits = Number(m[1] ?? m[2] ?? 9);
      parts.push(m[1] !== undefined ? (d) => `${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3).padEnd(digits, '0').slice(0, digits)}` : (d) => pad(d.getUTCMilliseconds(), 3).padEnd(digits, '0').slice(0, digits));
      i += m[0].length - 1;
      continue;
    }
    const s = fmt[++i]!;
    const spec: Record<string, (d: Date) => string> = {
      Y: (d) => String(d.getUTCFullYear()),
      m: (d) => pad(d.getUTCMonth() + 1),
      d: (d) => pad(d.getUTCDate()),
      H: (d) => pad(d.getUTCHours()),
      M: (d) => pad(d.getUTCMinutes()),
      S: (d) => pad(d.getUTCSeconds()),
      s: (d) => String(Math.floor(d.getTime() / 1000)),
      z: () => '+0000',
      Z: () => 'UTC',
      F: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`,
      T: (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`,
      '%': () => '%',
    };
    parts.push(spec[s] ?? (() => `%${s}`));
  }
  return (r) => {
    const d = new Date(r.startTime);
    let out = '';
    for (const p of parts) out += p(d);
    return out;
  };
}
