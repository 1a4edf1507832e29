/**
 * Envoy's `access_log` of an HTTP connection manager or tcp_proxy → the model's
 * `AccessLogConfig`: the file, stdout and stderr loggers, with their `log_format` (text or
 * JSON), whose command operators are checked here (an unknown one is an error, as Envoy
 * refuses it), and their CEL `filter` (Istio's Telemetry `filter.expression`), parsed here.
 * Other loggers (gRPC, OpenTelemetry) and other filters are warned about.
 */
import { checkJsonAccessLogFormat, parseAccessLogFormat } from '../access-log-format.ts';
import { compileCel } from '../cel.ts';
import type { AccessLogConfig } from '../model/listener.ts';
import { joinPath } from './import-context.ts';

type Obj = Record<string, unknown>;

export interface AccessLogReport {
  error(path: string, message: string): void;
  warn(path: string, message: string): void;
}

const T = 'type.googleapis.com/';
const FILE = `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`;
const CEL_FILTER = `${T}envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter`;
/** The stream loggers and the file they write. */
const STREAMS: Readonly<Record<string, string>> = {
  [`${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`]: '/dev/stdout',
  [`${T}envoy.extensions.access_loggers.stream.v3.StderrAccessLog`]: '/dev/stderr',
};

function obj(v: unknown): Obj | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : null;
}

/**
 * The entries of an `accessLog` list that Remora writes; null when the list is absent or has
 * none Remora writes; an empty list when it is given empty (nothing is logged).
 */
export function readAccessLogs(list: unknown, path: string, at: AccessLogReport): AccessLogConfig[] | null {
  if (!Array.isArray(list)) return null;
  if (list.length === 0) return [];
  const out: AccessLogConfig[] = [];
  list.forEach((entry, i) => {
    const p = `${path}[${i}]`;
    const e = obj(entry) ?? {};
    let filter: string | undefined;
    if (e.filter !== undefined) {
      const f = readFilter(e.filter, joinPath(p, 'filter'), at);
      if (f === null) return;
      filter = f;
    }
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
    out.push({ path: file, ...(format === undefined ? {} : { format }), ...(filter === undefined ? {} : { filter }) });
  });
  return out.length === 0 ? null : out;
}

/**
 * An access log's `filter`: the CEL extension filter's expression (checked here); undefined:
 * a filter Remora does not evaluate (warned, every request logged); null: refused.
 */
function readFilter(raw: unknown, path: string, at: AccessLogReport): string | undefined | null {
  const ext = obj(obj(raw)?.extensionFilter);
  const tc = obj(ext?.typedConfig);
  if (ext === null || String(tc?.['@type'] ?? '') !== CEL_FILTER) {
    at.warn(path, 'ignored: only the CEL extension filter (envoy.access_loggers.extension_filters.cel) is evaluated; every request is logged');
    return undefined;
  }
  const epath = joinPath(joinPath(joinPath(path, 'extensionFilter'), 'typedConfig'), 'expression');
  if (tc!.parsedExpr !== undefined || tc!.checkedExpr !== undefined) {
    at.error(joinPath(joinPath(path, 'extensionFilter'), 'typedConfig'), 'only a CEL expression given as text (expression) is supported');
    return null;
  }
  const expression = typeof tc!.expression === 'string' ? tc!.expression : '';
  try {
    compileCel(expression);
  } catch (err) {
    at.error(epath, (err as Error).message);
    return null;
  }
  return expression;
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
