/**
 * Envoy's `access_log` of an HTTP connection manager or tcp_proxy → the model's
 * `AccessLogConfig`: the file, stdout and stderr loggers, with their `log_format` (text or
 * JSON), whose command operators are checked here (an unknown one is an error, as Envoy
 * refuses it). Other loggers (gRPC, OpenTelemetry) and `filter`s are warned about.
 */
import { checkJsonAccessLogFormat, parseAccessLogFormat } from '../access-log-format.ts';
import type { AccessLogConfig } from '../model/listener.ts';
import { joinPath } from './import-context.ts';

type Obj = Record<string, unknown>;

export interface AccessLogReport {
  error(path: string, message: string): void;
  warn(path: string, message: string): void;
}

const T = 'type.googleapis.com/';
const FILE = `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`;
/** The stream loggers and the file they write. */
const STREAMS: Readonly<Record<string, string>> = {
  [`${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`]: '/dev/stdout',
  [`${T}envoy.extensions.access_loggers.stream.v3.StderrAccessLog`]: '/dev/stderr',
};

function obj(v: unknown): Obj | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : null;
}

/** The entries of an `accessLog` list that Remora writes; null when the list has none (or is absent). */
export function readAccessLogs(list: unknown, path: string, at: AccessLogReport): AccessLogConfig[] | null {
  if (!Array.isArray(list) || list.length === 0) return null;
  const out: AccessLogConfig[] = [];
  list.forEach((entry, i) => {
    const p = `${path}[${i}]`;
    const e = obj(entry) ?? {};
    if (e.filter !== undefined) at.warn(joinPath(p, 'filter'), 'ignored: every request is logged');
    const tc = obj(e.typedConfig);
    const type = String(tc?.['@type'] ?? '');
    const tpath = joinPath(p, 'typedConfig');
    let file: string;
    if (type === FILE) {
      if (typeof tc!.path !== 'string' || tc!.path === '') {
        at.error(joinPath(tpath, 'path'), 'a file access log needs a path');
        return;
      }
      file = tc!.path;
    } else if (STREAMS[type] !== undefined) file = STREAMS[type]!;
    else {
      at.warn(p, `ignored: access logger ${type || String(e.name ?? '')} is not supported (file, stdout and stderr loggers are)`);
      return;
    }
    const format = readFormat(tc!, tpath, at);
    if (format === null) return;
    out.push({ path: file, ...(format === undefined ? {} : { format }) });
  });
  return out.length === 0 ? null : out;
}

/** `log_format` (or the deprecated `format`, `json_format`); undefined: none given (Envoy's default); null: refused. */
function readFormat(tc: Obj, path: string, at: AccessLogReport): AccessLogConfig['format'] | null {
  const lf = obj(tc.logFormat);
  let text: unknown = tc.format;
  let json: unknown = tc.jsonFormat ?? tc.typedJsonFormat;
  let fpath = path;
  if (lf !== null) {
    fpath = joinPath(path, 'logFormat');
    if (lf.omitEmptyValues === true) at.warn(joinPath(fpath, 'omitEmptyValues'), 'ignored: missing values are written (- or null)');
    if (lf.formatters !== undefined) at.warn(joinPath(fpath, 'formatters'), 'ignored: only the built-in command operators are written');
    if (lf.textFormatSource !== undefined && typeof obj(lf.textFormatSource)?.inlineString !== 'string') {
      at.error(joinPath(fpath, 'textFormatSource'), 'only an inline string is supported (not a file)');
      return null;
    }
    text = lf.textFormat ?? obj(lf.textFormatSource)?.inlineString;
    json = lf.jsonFormat;
  }
  try {
    if (typeof text === 'string') {
      parseAccessLogFormat(text);
      return { text };
    }
    const j = obj(json);
    if (j !== null) {
      checkJsonAccessLogFormat(j);
      return { json: j };
    }
  } catch (err) {
    at.error(fpath, (err as Error).message);
    return null;
  }
  return undefined;
}
