/** VirtualService rules of Istio's validation (pkg/config/validation: virtualservice.go, validation.go). */
import {
  Report,
  type Path,
  type Obj,
  obj,
  list,
  str,
  num,
  isSet,
  strings,
  entries,
  duration,
  percent,
  fractionalPercent,
  port,
  labels,
  regex,
  subsetName,
} from './checks-common.ts';
import {
  checkFQDN,
  checkHeaderName,
  checkIPSubnet,
  checkWildcardDomain,
  hostsOverlap,
  hostSubsetOf,
  isDNS1123Label,
  isIPAddress,
  routingClaimPath,
} from './names.ts';
import { checkRegexSubstitution } from './regex.ts';
import { GrpcStatus } from '../model/grpc-status.ts';

const SUPPORTED_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE']);
const GRPC_STATUS = new Set(Object.keys(GrpcStatus));
/** Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies (Istio's list). */
const RETRY_ON = new Set([
  '5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'retriable-4xx', 'refused-stream',
  'retriable-status-codes', 'retriable-headers', 'envoy-ratelimited', 'http3-post-connect-failure',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
]);
/** Status codes Go's `http.StatusText` knows; Istio accepts them as retryOn entries. */
const HTTP_STATUS_CODES = new Set([
  100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
  400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423,
  424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
]);
const MB = 1024 * 1024;

interface RouteContext {
  readonly delegate: boolean;
  readonly appliesToGateway: boolean;
}

export function checkVirtualService(r: Report, at: Path, spec: Obj): void {
  const hosts = strings(spec.hosts);
  const gateways = strings(spec.gateways);
  const http = list(spec.http);
  const tcp = list(spec.tcp);
  const tls = list(spec.tls);
  // No hosts: a delegate, reachable only through another VirtualService's http[].delegate.
  const delegate = hosts.length === 0;
  if (delegate) {
    if (gateways.length > 0) r.error([...at, 'gateways'], 'delegate virtual service must have no gateways specified');
    if (tls.length > 0) r.error([...at, 'tls'], 'delegate virtual service must have no tls route specified');
    if (tcp.length > 0) r.error([...at, 'tcp'], 'delegate virtual service must have no tcp route specified');
  }
  const appliesToGateway = gateways.length > 0 && !gateways.includes('mesh');
  gatewayNames(r, [...at, 'gateways'], gateways);

  let allHostsValid = true;
  hosts.forEach((h, i) => {
    const err = checkWildcardDomain(h);
    if (err !== null) {
      if (!isIPAddress(h)) {
        r.error([...at, 'hosts', i], err);
        allHostsValid = false;
      }
    } else if (!appliesToGateway && h === '*') {
      r.error([...at, 'hosts', i], 'wildcard host * is not allowed for virtual services bound to the mesh gateway');
      allHostsValid = false;
    }
  });
  if (allHostsValid) {
    for (let i = 0; i < hosts.length; i++) {
      for (let j = i + 1; j < hosts.length; j++) {
        const a = hosts[i] ?? '';
        const b = hosts[j] ?? '';
        if (hostsOverlap(a, b)) r.error([...at, 'hosts', j], `duplicate hosts in virtual service: ${a} & ${b}`);
      }
    }
  }
  if (http.length === 0 && tcp.length === 0 && tls.length === 0) r.error(at, 'http, tcp or tls must be provided in virtual service');

  const ctx: RouteContext = { delegate, appliesToGateway };
  http.forEach((route, i) => checkHTTPRoute(r, [...at, 'http', i], obj(route) ?? {}, ctx));
  tls.forEach((route, i) => checkTLSRoute(r, [...at, 'tls', i], obj(route) ?? {}, hosts));
  tcp.forEach((route, i) => checkTCPRoute(r, [...at, 'tcp', i], obj(route) ?? {}));
}

function gatewayNames(r: Report, at: Path, names: readonly string[]): void {
  names.forEach((name, i) => {
    const path = [...at, i];
    const slash = name.indexOf('/');
    if (slash < 0) {
      if (name.includes('.')) {
        const [first = '', second = ''] = name.split('.');
        r.warn(path, `using legacy gatewayName format "${name}"; prefer the <namespace>/<name> format: "${second}/${first}"`);
      }
      r.error(path, checkFQDN(name));
      return;
    }
    const ns = name.slice(0, slash);
    const gw = name.slice(slash + 1);
    if (ns === '' || gw === '') r.error(path, 'config namespace and gateway name cannot be empty');
    if (!isDNS1123Label(ns)) r.error(path, `invalid value for namespace: "${ns}"`);
    if (!isDNS1123Label(gw)) r.error(path, `invalid value for gateway name: "${gw}"`);
  });
}

function checkHTTPRoute(r: Report, at: Path, http: Obj, ctx: RouteContext): void {
  const routes = list(http.route);
  const isRoot = !ctx.delegate && isSet(http.delegate);
  const name = str(http.name);
  if (isRoot) {
    if (isSet(http.redirect)) r.error([...at, 'redirect'], `root HTTP route ${name} must not specify redirect`);
    if (isSet(http.route)) r.error([...at, 'route'], `root HTTP route ${name} must not specify route`);
  } else {
    if (ctx.delegate && isSet(http.delegate)) r.error([...at, 'delegate'], 'delegate HTTP route cannot contain delegate');
    if (isSet(http.redirect)) {
      if (routes.length > 0) r.error([...at, 'route'], 'HTTP route cannot contain both route and redirect');
      if (isSet(http.fault)) r.error([...at, 'fault'], 'HTTP route cannot contain both fault and redirect');
      if (isSet(http.rewrite)) r.error([...at, 'rewrite'], 'HTTP route rule cannot contain both rewrite and redirect');
      if (isSet(http.directResponse)) r.error([...at, 'directResponse'], 'HTTP route cannot contain both redirect and directResponse');
    } else if (isSet(http.directResponse)) {
      if (routes.length > 0) r.error([...at, 'route'], 'HTTP route cannot contain both route and directResponse');
    } else if (routes.length === 0) {
      r.error(at, 'HTTP route, redirect or directResponse is required');
    }
  }

  // Delegating routes (root and delegate) cannot match by regex: Istio merges their matches.
  const noRegex = ctx.delegate || isSet(http.delegate);
  list(http.match).forEach((m, j) => checkHTTPMatch(r, [...at, 'match', j], obj(m) ?? {}, noRegex, ctx));

  headerOperations(r, [...at, 'headers'], http.headers);
  checkCors(r, [...at, 'corsPolicy'], obj(http.corsPolicy));
  checkFault(r, [...at, 'fault'], obj(http.fault));

  if (isSet(http.mirrorPercent)) {
    if (num(http.mirrorPercent) > 100) r.error([...at, 'mirrorPercent'], `mirror_percent must have a max value of 100 (it has ${num(http.mirrorPercent)})`);
    r.warn([...at, 'mirrorPercent'], 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead');
  }
  const mirrorPct = obj(http.mirrorPercentage);
  if (mirrorPct !== null) percent(r, [...at, 'mirrorPercentage', 'value'], num(mirrorPct.value));
  checkDestination(r, [...at, 'mirror'], obj(http.mirror));
  list(http.mirrors).forEach((m, j) => {
    const mirror = obj(m) ?? {};
    const path = [...at, 'mirrors', j];
    const dest = obj(mirror.destination);
    if (dest === null) {
      r.error(path, 'destination is required for mirrors');
      return;
    }
    checkDestination(r, [...path, 'destination'], dest);
    const pct = obj(mirror.percentage);
    if (pct !== null) percent(r, [...path, 'percentage', 'value'], num(pct.value));
  });

  checkRedirect(r, [...at, 'redirect'], obj(http.redirect));
  checkRetries(r, [...at, 'retries'], obj(http.retries));
  checkRewrite(r, [...at, 'rewrite'], obj(http.rewrite));
  checkAuthorityRewrite(r, at, obj(http.rewrite), obj(http.headers));
  routeDestinations(r, [...at, 'route'], routes, true);
  if (isSet(http.timeout)) duration(r, [...at, 'timeout'], http.timeout, true);

  const direct = obj(http.directResponse);
  if (direct !== null) {
    const body = obj(direct.body);
    const size = body === null ? 0 : str(body.string).length + Math.floor((str(body.bytes).length * 3) / 4);
    if (size > MB) r.error([...at, 'directResponse', 'body'], 'large direct_responses may impact control plane performance, must be less than 1MB');
    else if (size > 100 * 1024) r.warn([...at, 'directResponse', 'body'], 'large direct_responses may impact control plane performance');
    r.error([...at, 'directResponse', 'status'], httpStatus(num(direct.status)));
  }
}

function checkHTTPMatch(r: Report, at: Path, m: Obj, noRegex: boolean, ctx: RouteContext): void {
  for (const field of ['headers', 'withoutHeaders'] as const) {
    for (const [name, sm] of entries(m[field])) {
      const path = [...at, field, name];
      if (routingClaimPath(name) !== null) {
        if (!ctx.appliesToGateway) r.error(path, `JWT claim based routing (key: ${name}) is only supported for gateway`);
      } else {
        r.error(path, checkHeaderName(name));
      }
      stringMatch(r, path, obj(sm), noRegex, `${field === 'headers' ? 'header' : 'withoutHeaders'} match ${name}`);
    }
  }
  for (const field of ['uri', 'scheme', 'method', 'authority'] as const) {
    stringMatch(r, [...at, field], obj(m[field]), noRegex, `${field === 'uri' ? 'url' : field} match`);
  }
  for (const [name, sm] of entries(m.queryParams)) stringMatch(r, [...at, 'queryParams', name], obj(sm), noRegex, `query param match ${name}`);
  if (num(m.port) !== 0) port(r, [...at, 'port'], m.port);
  labels(r, [...at, 'sourceLabels'], m.sourceLabels);
  gatewayNames(r, [...at, 'gateways'], strings(m.gateways));
  const ns = str(m.sourceNamespace);
  if (ns !== '' && !isDNS1123Label(ns)) r.error([...at, 'sourceNamespace'], `sourceNamespace match ${ns} is invalid`);
}

function stringMatch(r: Report, at: Path, sm: Obj | null, noRegex: boolean, what: string): void {
  if (sm === null || !isSet(sm.regex)) return;
  if (noRegex) r.error([...at, 'regex'], `${what} does not support regex match for delegating`);
  else regex(r, [...at, 'regex'], sm.regex);
}

/** Istio's `isInternalHeader`: pseudo-headers and Host. */
const isInternalHeader = (h: string): boolean => h.startsWith(':') || h.toLowerCase() === 'host';
const isAuthorityHeader = (h: string): boolean => h.toLowerCase() === ':authority' || h.toLowerCase() === 'host';
// Control characters other than tab (protoc-gen-validate's header value rule).
const HEADER_VALUE_FORBIDDEN = /[\u0000-\u0008\u000A-\u001F\u007F]/;

/** Header add/set/remove of a route or destination. */
function headerOperations(r: Report, at: Path, headers: unknown): void {
  const h = obj(headers);
  if (h === null) return;
  for (const side of ['request', 'response'] as const) {
    const ops = obj(h[side]);
    if (ops === null) continue;
    for (const op of ['add', 'set'] as const) {
      for (const [name, value] of entries(ops[op])) {
        const path = [...at, side, op, name];
        r.error(path, side === 'request' ? headerNameForRequestWrite(name) : headerNameForWrite(name));
        if (HEADER_VALUE_FORBIDDEN.test(str(value))) r.error(path, `header value configuration ${JSON.stringify(str(value))} is invalid`);
      }
    }
    strings(ops.remove).forEach((name, i) => r.error([...at, side, 'remove', i], headerNameForWrite(name)));
  }
}

function headerNameForRequestWrite(name: string): string | null {
  if (name === '') return 'header name cannot be empty';
  // :authority / Host may be set on requests: that is an authority rewrite.
  if (isInternalHeader(name) && !isAuthorityHeader(name)) return `invalid header "${name}": header cannot have ":" prefix`;
  return null;
}

function headerNameForWrite(name: string): string | null {
  if (name === '') return 'header name cannot be empty';
  if (name.toLowerCase() === 'host') return `invalid header "${name}": cannot set Host header`;
  if (isInternalHeader(name)) return `invalid header "${name}": header cannot have ":" prefix`;
  return null;
}

function checkCors(r: Report, at: Path, cors: Obj | null): void {
  if (cors === null) return;
  list(cors.allowOrigins).forEach((o, i) => {
    const sm = obj(o) ?? {};
    const value = str(sm.exact) || str(sm.prefix) || str(sm.regex);
    if (value === '') r.error([...at, 'allowOrigins', i], `"" is not a valid match type for CORS allow origins`);
    else if (isSet(sm.regex)) regex(r, [...at, 'allowOrigins', i, 'regex'], sm.regex);
  });
  strings(cors.allowMethods).forEach((m, i) => {
    if (!SUPPORTED_METHODS.has(m)) r.error([...at, 'allowMethods', i], `"${m}" is not a supported HTTP method`);
  });
  for (const field of ['allowHeaders', 'exposeHeaders'] as const) {
    strings(cors[field]).forEach((h, i) => {
      if (h !== '*') r.error([...at, field, i], checkHeaderName(h));
    });
  }
  if (isSet(cors.maxAge)) {
    const ms = duration(r, [...at, 'maxAge'], cors.maxAge, true);
    if (ms !== null && ms >= 1 && ms % 1000 !== 0) r.error([...at, 'maxAge'], 'max_age duration is accurate only to seconds precision');
  }
}

function httpStatus(status: number): string | null {
  return status < 200 || status > 600 ? `HTTP status ${status} is not in range 200-599` : null;
}

function checkFault(r: Report, at: Path, fault: Obj | null): void {
  if (fault === null) return;
  const abort = obj(fault.abort);
  const delay = obj(fault.delay);
  if (abort === null && delay === null) r.error(at, 'HTTP fault injection must have an abort and/or a delay');
  if (abort !== null) {
    const path = [...at, 'abort'];
    fractionalPercent(r, [...path, 'percentage'], abort.percentage);
    if (isSet(abort.grpcStatus)) {
      const s = str(abort.grpcStatus);
      if (!GRPC_STATUS.has(s)) {
        r.error([...path, 'grpcStatus'], `gRPC status "${s}" is not supported; use a name like NOT_FOUND or UNAVAILABLE`);
      }
    } else if (isSet(abort.http2Error)) {
      r.error([...path, 'http2Error'], 'HTTP/2 abort fault injection not supported yet');
    } else if (isSet(abort.httpStatus)) {
      r.error([...path, 'httpStatus'], httpStatus(num(abort.httpStatus)));
    } else {
      r.warn(path, 'abort configured, but error type not set');
    }
  }
  if (delay !== null) {
    const path = [...at, 'delay'];
    fractionalPercent(r, [...path, 'percentage'], delay.percentage);
    if (isSet(delay.fixedDelay)) duration(r, [...path, 'fixedDelay'], delay.fixedDelay, true);
    if (isSet(delay.exponentialDelay)) {
      duration(r, [...path, 'exponentialDelay'], delay.exponentialDelay, true);
      r.error([...path, 'exponentialDelay'], 'exponentialDelay not supported yet');
    }
  }
}

function checkDestination(r: Report, at: Path, dest: Obj | null): void {
  if (dest === null) return;
  const host = str(dest.host);
  r.error([...at, 'host'], host === '*' ? `invalid destination host ${host}` : checkWildcardDomain(host));
  if (str(dest.subset) !== '') r.error([...at, 'subset'], subsetName(str(dest.subset)));
  const p = obj(dest.port);
  if (p !== null) port(r, [...at, 'port', 'number'], p.number);
}

/**
 * Route destinations: each needs a destination; weights are relative (Istio normalises them),
 * so they may not be negative and may not all be 0 when there are several. A single
 * destination may leave its weight out.
 */
function routeDestinations(r: Report, at: Path, routes: readonly unknown[], http: boolean): void {
  let total = 0;
  routes.forEach((entry, i) => {
    const route = obj(entry) ?? {};
    const path = [...at, i];
    const dest = obj(route.destination);
    if (dest === null) r.error(path, 'destination is required');
    if (http) headerOperations(r, [...path, 'headers'], route.headers);
    checkDestination(r, [...path, 'destination'], dest);
    const w = num(route.weight);
    if (w < 0) r.error([...path, 'weight'], `weight ${w} < 0`);
    total += w;
  });
  if (routes.length > 1 && total === 0) r.error(at, 'total destination weight = 0');
}

function checkRedirect(r: Report, at: Path, redirect: Obj | null): void {
  if (redirect === null) return;
  const hasPort = isSet(redirect.port) || isSet(redirect.derivePort);
  if (str(redirect.uri) === '' && str(redirect.authority) === '' && !hasPort && str(redirect.scheme) === '') {
    r.error(at, 'redirect must specify URI, authority, scheme, or port');
  }
  const code = num(redirect.redirectCode);
  if (code !== 0 && (code < 300 || code > 399)) r.error([...at, 'redirectCode'], `${code} is not a valid redirect code, must be 3xx`);
  const scheme = str(redirect.scheme);
  if (scheme !== '' && scheme !== 'http' && scheme !== 'https') r.error([...at, 'scheme'], 'invalid redirect scheme, must be "http" or "https"');
  if (num(redirect.port) > 0) port(r, [...at, 'port'], redirect.port);
}

function checkRetries(r: Report, at: Path, retries: Obj | null): void {
  if (retries === null) return;
  const attempts = num(retries.attempts);
  if (attempts < 0) r.error([...at, 'attempts'], 'attempts cannot be negative');
  if (attempts === 0 && (isSet(retries.perTryTimeout) || str(retries.retryOn) !== '' || isSet(retries.retryRemoteLocalities))) {
    r.error(at, 'http retry policy configured when attempts are set to 0 (disabled)');
  }
  if (isSet(retries.perTryTimeout)) duration(r, [...at, 'perTryTimeout'], retries.perTryTimeout, true);
  if (isSet(retries.backoff)) duration(r, [...at, 'backoff'], retries.backoff, false);
  const retryOn = str(retries.retryOn);
  if (retryOn !== '') {
    for (const policy of retryOn.split(',')) {
      const asStatus = /^[+-]?\d+$/.test(policy) ? Number(policy) : NaN;
      if (!HTTP_STATUS_CODES.has(asStatus) && !RETRY_ON.has(policy)) r.error([...at, 'retryOn'], `"${policy}" is not a valid retryOn policy`);
    }
  }
}

function checkRewrite(r: Report, at: Path, rewrite: Obj | null): void {
  if (rewrite === null) return;
  const uri = str(rewrite.uri);
  const regexRewrite = obj(rewrite.uriRegexRewrite);
  if (uri !== '' && regexRewrite !== null) r.error(at, 'rewrite may only contain one of URI or UriRegexRewrite');
  if (uri === '' && regexRewrite === null && str(rewrite.authority) === '') {
    r.error(at, 'rewrite must specify at least one of URI, UriRegexRewrite, or authority');
  }
  if (regexRewrite !== null) {
    if (str(regexRewrite.match) === '' || str(regexRewrite.rewrite) === '') {
      r.error([...at, 'uriRegexRewrite'], 'UriRegexRewrite requires both Rewrite and Match fields to be specified');
    } else {
      regex(r, [...at, 'uriRegexRewrite', 'match'], regexRewrite.match);
      r.error([...at, 'uriRegexRewrite', 'rewrite'], checkRegexSubstitution(str(regexRewrite.match), str(regexRewrite.rewrite)));
    }
  }
}

/** The authority may be rewritten in one place only. */
function checkAuthorityRewrite(r: Report, at: Path, rewrite: Obj | null, headers: Obj | null): void {
  let current = str(rewrite?.authority);
  const request = obj(headers?.request);
  for (const op of ['set', 'add'] as const) {
    for (const [k, v] of entries(request?.[op])) {
      if (!isAuthorityHeader(k)) continue;
      if (current !== '') {
        r.error([...at, 'headers', 'request', op, k], `authority header cannot be set multiple times: have "${current}", attempting to set "${str(v)}"`);
        return;
      }
      current = str(v);
    }
  }
}

function checkL4Match(r: Report, at: Path, m: Obj): void {
  strings(m.destinationSubnets).forEach((s, i) => r.error([...at, 'destinationSubnets', i], checkIPSubnet(s)));
  if (num(m.port) !== 0) port(r, [...at, 'port'], m.port);
  labels(r, [...at, 'sourceLabels'], m.sourceLabels);
  gatewayNames(r, [...at, 'gateways'], strings(m.gateways));
}

function checkTCPRoute(r: Report, at: Path, tcp: Obj): void {
  list(tcp.match).forEach((m, i) => checkL4Match(r, [...at, 'match', i], obj(m) ?? {}));
  const routes = list(tcp.route);
  if (routes.length === 0) r.error(at, 'TCP route is required');
  routeDestinations(r, [...at, 'route'], routes, false);
}

function checkTLSRoute(r: Report, at: Path, tls: Obj, vsHosts: readonly string[]): void {
  const matches = list(tls.match);
  if (matches.length === 0) r.error(at, 'TLS route must have at least one match condition');
  matches.forEach((entry, i) => {
    const m = obj(entry) ?? {};
    const path = [...at, 'match', i];
    const sni = strings(m.sniHosts);
    if (sni.length === 0) r.error(path, 'TLS match must have at least one SNI host');
    sni.forEach((h, j) => {
      const hp = [...path, 'sniHosts', j];
      const err = checkWildcardDomain(h);
      if (err !== null) {
        if (isIPAddress(h)) r.warn(hp, `using an IP address ("${h}") goes against SNI spec and most clients do not support this`);
        else r.error(hp, err);
        return;
      }
      if (!vsHosts.some((vh) => hostSubsetOf(h, vh))) {
        r.error(hp, `SNI host "${h}" is not a compatible subset of any of the virtual service hosts: [${vsHosts.join(', ')}]`);
      }
    });
    checkL4Match(r, path, m);
  });
  const routes = list(tls.route);
  if (routes.length === 0) r.error(at, 'TLS route is required');
  routeDestinations(r, [...at, 'route'], routes, false);
}
