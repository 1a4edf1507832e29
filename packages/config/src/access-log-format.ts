/**
 * Envoy's access log format strings (`SubstitutionFormatString`): literal text and command
 * operators `%NAME%`, `%NAME(ARG)%`, `%NAME(ARG):N%` (at most N characters), with header
 * operators taking `MAIN?ALTERNATIVE`. Parsed once, when a config is read: an unknown
 * operator is an error there (Envoy refuses the config too), and the runtime compiles the
 * parts into a function of the finished request.
 */

/** One operator of a format string. */
export interface FormatOperator {
  /** `REQ`, `START_TIME`, `RESPONSE_CODE`, ... */
  readonly name: string;
  /** The argument(s) in parentheses: `REQ(A?B)` has ['a', 'b'] (header names lower-cased); `START_TIME(%s)` ['%s']. */
  readonly args: readonly string[];
  /** `:N`: the value is cut to N characters; null: whole. */
  readonly maxLength: number | null;
}

/** Literal text, or an operator. */
export type FormatPart = string | FormatOperator;

/** Operators that take a header name (`MAIN?ALTERNATIVE`). */
const HEADER_OPERATORS = new Set(['REQ', 'RESP', 'TRAILER', 'REQ_WITHOUT_QUERY']);

/** Operators that take an optional argument. */
const ARG_OPERATORS = new Set(['START_TIME']);

/**
 * The operators Remora writes: the ones Istio's default formats use and the common ones.
 * Values Remora does not have (`UPSTREAM_LOCAL_ADDRESS`, `CONNECTION_TERMINATION_DETAILS`)
 * are written as missing (`-`, JSON null), as Envoy writes an unset value.
 */
export const ACCESS_LOG_OPERATORS: ReadonlySet<string> = new Set([
  'START_TIME',
  'DYNAMIC_METADATA',
  'REQ',
  'RESP',
  'TRAILER',
  'REQ_WITHOUT_QUERY',
  'PROTOCOL',
  'RESPONSE_CODE',
  'RESPONSE_FLAGS',
  'RESPONSE_CODE_DETAILS',
  'CONNECTION_TERMINATION_DETAILS',
  'UPSTREAM_TRANSPORT_FAILURE_REASON',
  'BYTES_RECEIVED',
  'BYTES_SENT',
  'DURATION',
  'UPSTREAM_HOST',
  'UPSTREAM_CLUSTER',
  'UPSTREAM_CLUSTER_RAW',
  'UPSTREAM_LOCAL_ADDRESS',
  'DOWNSTREAM_LOCAL_ADDRESS',
  'DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT',
  'DOWNSTREAM_LOCAL_PORT',
  'DOWNSTREAM_REMOTE_ADDRESS',
  'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT',
  'DOWNSTREAM_REMOTE_PORT',
  'DOWNSTREAM_DIRECT_REMOTE_ADDRESS',
  'DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT',
  'REQUESTED_SERVER_NAME',
  'ROUTE_NAME',
  'HOSTNAME',
]);

/** Envoy's default format, for an access log without `log_format`. */
export const ENVOY_DEFAULT_ACCESS_LOG_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ' +
  '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n';

/** Istio's text format (`EnvoyTextLogFormat`): what istiod writes when `accessLogFormat` is empty. */
export const ISTIO_TEXT_ACCESS_LOG_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% ' +
  '%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% ' +
  '%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" ' +
  '%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n';

/** Istio's JSON format (`EnvoyJSONLogFormatIstio`), in istiod's key order. */
export const ISTIO_JSON_ACCESS_LOG_FORMAT: Readonly<Record<string, string>> = {
  start_time: '%START_TIME%',
  route_name: '%ROUTE_NAME%',
  method: '%REQ(:METHOD)%',
  path: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%',
  protocol: '%PROTOCOL%',
  response_code: '%RESPONSE_CODE%',
  response_flags: '%RESPONSE_FLAGS%',
  response_code_details: '%RESPONSE_CODE_DETAILS%',
  connection_termination_details: '%CONNECTION_TERMINATION_DETAILS%',
  bytes_received: '%BYTES_RECEIVED%',
  bytes_sent: '%BYTES_SENT%',
  duration: '%DURATION%',
  upstream_service_time: '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%',
  x_forwarded_for: '%REQ(X-FORWARDED-FOR)%',
  user_agent: '%REQ(USER-AGENT)%',
  request_id: '%REQ(X-REQUEST-ID)%',
  authority: '%REQ(:AUTHORITY)%',
  upstream_host: '%UPSTREAM_HOST%',
  upstream_cluster: '%UPSTREAM_CLUSTER_RAW%',
  upstream_local_address: '%UPSTREAM_LOCAL_ADDRESS%',
  downstream_local_address: '%DOWNSTREAM_LOCAL_ADDRESS%',
  downstream_remote_address: '%DOWNSTREAM_REMOTE_ADDRESS%',
  requested_server_name: '%REQUESTED_SERVER_NAME%',
  upstream_transport_failure_reason: '%UPSTREAM_TRANSPORT_FAILURE_REASON%',
};

const OPERATOR = /^%([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?(?::(\d+))?%/;

/** Parses a format string; throws an Error naming the position and operator when it cannot be used. */
export function parseAccessLogFormat(text: string): FormatPart[] {
  const parts: FormatPart[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const pct = text.indexOf('%', i);
    if (pct < 0) {
      literal += text.slice(i);
      break;
    }
    literal += text.slice(i, pct);
    const m = OPERATOR.exec(text.slice(pct));
    if (m === null) throw new Error(`no valid command operator at position ${pct} ("${text.slice(pct, pct + 24)}")`);
    const name = m[1]!;
    if (!ACCESS_LOG_OPERATORS.has(name)) throw new Error(`command operator %${name}% is not supported (supported: ${[...ACCESS_LOG_OPERATORS].join(', ')})`);
    const arg = m[2];
    let args: string[] = [];
    if (HEADER_OPERATORS.has(name)) {
      if (arg === undefined || arg === '') throw new Error(`%${name}% needs a header name: %${name}(X-HEADER)%`);
      args = arg.split('?').map((h) => h.toLowerCase());
      if (args.length > 2) throw new Error(`%${name}(${arg})%: at most one alternative header (MAIN?ALTERNATIVE)`);
    } else if (name === 'DYNAMIC_METADATA') {
      // NAMESPACE:KEY*: a filter's namespace, then a path of keys into its Struct (Remora's values are flat: one key).
      if (arg === undefined || arg === '') throw new Error('%DYNAMIC_METADATA% needs a namespace: %DYNAMIC_METADATA(NAMESPACE:KEY)%');
      args = arg.split(':');
      if (args.some((a) => a === '')) throw new Error(`%DYNAMIC_METADATA(${arg})%: an empty namespace or key`);
      if (args.length > 2) throw new Error(`%DYNAMIC_METADATA(${arg})%: metadata values are strings; a path deeper than one key is not supported`);
    } else if (arg !== undefined) {
      if (!ARG_OPERATORS.has(name)) throw new Error(`%${name}% takes no argument`);
      args = [arg];
    }
    if (literal !== '') parts.push(literal);
    literal = '';
    parts.push({ name, args, maxLength: m[3] === undefined ? null : Number(m[3]) });
    i = pct + m[0].length;
  }
  if (literal !== '') parts.push(literal);
  return parts;
}

/** Checks every string in a JSON format (nested objects too); throws naming the key. */
export function checkJsonAccessLogFormat(format: Readonly<Record<string, unknown>>, at = ''): void {
  for (const [key, value] of Object.entries(format)) {
    const path = at === '' ? key : `${at}.${key}`;
    if (typeof value === 'string') {
      try {
        parseAccessLogFormat(value);
      } catch (err) {
        throw new Error(`${path}: ${(err as Error).message}`);
      }
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) checkJsonAccessLogFormat(value as Record<string, unknown>, path);
    else if (typeof value !== 'number' && typeof value !== 'boolean' && value !== null) throw new Error(`${path}: a JSON format value is a format string, a number, a boolean or an object`);
  }
}
