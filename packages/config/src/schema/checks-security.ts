/** PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules. */
import {
  Report,
  type Path,
  type Obj,
  obj,
  list,
  str,
  isSet,
  strings,
  entries,
  duration,
  workloadSelector,
} from './checks-common.ts';
import { checkHeaderName, checkIPSubnet, isIPAddress } from './names.ts';

export function checkPeerAuthentication(r: Report, at: Path, spec: Obj): void {
  const selector = obj(spec.selector);
  const emptySelector = selector === null || entries(selector.matchLabels).length === 0;
  const portLevel = obj(spec.portLevelMtls);
  const ports = entries(portLevel);
  if (emptySelector && ports.length > 0) r.error([...at, 'portLevelMtls'], 'mesh/namespace peer authentication cannot have port level mTLS');
  if (portLevel !== null && ports.length === 0) r.error([...at, 'portLevelMtls'], 'port level mTLS, if defined, must have at least one element');
  for (const [key] of ports) {
    const n = /^\d+$/.test(key) ? Number(key) : NaN;
    if (!(n >= 1 && n <= 65535)) r.error([...at, 'portLevelMtls', key], 'port must be in range 1..65535');
  }
  workloadSelector(r, [...at, 'selector'], spec.selector, 'matchLabels');
}

/** Kinds a policy may attach to (group, kind); the version is not checked. */
const TARGET_REF_KINDS = new Set(['core/Service', 'networking.istio.io/ServiceEntry', 'gateway.networking.k8s.io/Gateway']);

function targetRefs(r: Report, at: Path, spec: Obj): void {
  const set = [isSet(spec.selector), isSet(spec.targetRef), list(spec.targetRefs).length > 0].filter(Boolean).length;
  if (set > 1) r.error(at, 'only one of targetRefs or workloadSelector can be set');
  workloadSelector(r, [...at, 'selector'], spec.selector, 'matchLabels');
  const one = (path: Path, ref: Obj | null): void => {
    if (ref === null) return;
    if (str(ref.name) === '') r.error(path, 'targetRef name must be set');
    if (str(ref.namespace) !== '') r.error([...path, 'namespace'], 'targetRef namespace must not be set; cross namespace referencing is not supported');
    const group = str(ref.group) || 'core';
    if (!TARGET_REF_KINDS.has(`${group}/${str(ref.kind)}`)) {
      r.error(path, `targetRef must be to a Service, ServiceEntry or gateway.networking.k8s.io Gateway, but was ${str(ref.group)}/${str(ref.kind)}`);
    }
  };
  one([...at, 'targetRef'], obj(spec.targetRef));
  list(spec.targetRefs).forEach((ref, i) => one([...at, 'targetRefs', i], obj(ref)));
}

export function checkRequestAuthentication(r: Report, at: Path, spec: Obj): void {
  targetRefs(r, at, spec);
  list(spec.jwtRules).forEach((entry, i) => {
    const rule = obj(entry);
    if (rule === null) return;
    const path = [...at, 'jwtRules', i];
    if (str(rule.issuer) === '') r.error([...path, 'issuer'], 'issuer must be set');
    strings(rule.audiences).forEach((a, j) => {
      if (a === '') r.error([...path, 'audiences', j], 'audience must be non-empty string');
    });
    const jwksUri = str(rule.jwksUri);
    if (jwksUri !== '') r.error([...path, 'jwksUri'], jwksURI(jwksUri));
    const jwks = str(rule.jwks);
    if (jwks !== '') r.error([...path, 'jwks'], jwksDocument(jwks));
    list(rule.fromHeaders).forEach((h, j) => {
      if (str(obj(h)?.name) === '') r.error([...path, 'fromHeaders', j], 'location header name must be non-empty string');
    });
    strings(rule.fromParams).forEach((p, j) => {
      if (p === '') r.error([...path, 'fromParams', j], 'location query must be non-empty string');
    });
    strings(rule.fromCookies).forEach((c, j) => {
      if (c === '') r.error([...path, 'fromCookies', j], 'cookie name must be non-empty string');
    });
    list(rule.outputClaimToHeaders).forEach((entry2, j) => {
      const ch = obj(entry2) ?? {};
      const hp = [...path, 'outputClaimToHeaders', j];
      if (str(ch.claim) === '' || str(ch.header) === '') r.error(hp, 'outputClaimToHeaders header and claim value must be non-empty string');
      else r.error([...hp, 'header'], checkHeaderName(str(ch.header)));
    });
    if (isSet(rule.timeout)) duration(r, [...path, 'timeout'], rule.timeout, true);
  });
}

function jwksURI(uri: string): string | null {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return `jwksUri ${JSON.stringify(uri)} is not a valid URL`;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? null : `URI scheme "${u.protocol.slice(0, -1)}" is not supported`;
}

function jwksDocument(jwks: string): string | null {
  try {
    const doc = JSON.parse(jwks) as unknown;
    const keys = obj(doc)?.keys;
    // A JWK Set, or a single JWK (jwx accepts both).
    if (Array.isArray(keys) || typeof obj(doc)?.kty === 'string') return null;
    return 'jwks parse error: not a JWK or JWK Set';
  } catch (err) {
    return `jwks parse error: ${(err as Error).message}`;
  }
}

const SOURCE_LISTS = [
  'principals', 'requestPrincipals', 'namespaces', 'ipBlocks', 'remoteIpBlocks', 'serviceAccounts',
  'notPrincipals', 'notRequestPrincipals', 'notNamespaces', 'notIpBlocks', 'notRemoteIpBlocks', 'notServiceAccounts',
];
const SOURCE_IP_LISTS = ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'];
const OPERATION_LISTS = ['ports', 'methods', 'paths', 'hosts', 'notPorts', 'notMethods', 'notPaths', 'notHosts'];
// Path templates Istio supports are {*} and {**} alone; named variables and bare globs are not.
const UNSUPPORTED_PATH_TEMPLATE = /\/\{\w+=\*[*]?\}|\{\w*\}|\/\*[*]?|\*[*]?\//;

export function checkAuthorizationPolicy(r: Report, at: Path, spec: Obj): void {
  targetRefs(r, at, spec);
  const action = str(spec.action) || 'ALLOW';
  const rules = spec.rules;
  if (action === 'CUSTOM') {
    if (!isSet(rules)) {
      r.error(at, 'CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request');
    } else if (str(obj(spec.provider)?.name) === '') {
      r.error([...at, 'provider'], '`provider.name` must not be empty');
    }
  }
  if (isSet(spec.provider) && action !== 'CUSTOM') r.error([...at, 'provider'], `\`provider\` must not be with non CUSTOM action, found ${action}`);
  if (action === 'DENY' && !isSet(rules)) {
    r.error(at, 'DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request');
  }
  list(rules).forEach((entry, i) => {
    const rule = obj(entry);
    const path = [...at, 'rules', i];
    if (rule === null) {
      r.error(path, '`rule` must not be nil');
      return;
    }
    if (Array.isArray(rule.from) && rule.from.length === 0) r.error([...path, 'from'], '`from` must not be empty');
    list(rule.from).forEach((f, j) => {
      const fp = [...path, 'from', j];
      const source = obj(obj(f)?.source);
      if (source === null) {
        r.error(fp, '`from.source` must not be nil');
        return;
      }
      const sp = [...fp, 'source'];
      if (!SOURCE_LISTS.some((k) => list(source[k]).length > 0)) r.error(sp, '`from.source` must not be empty');
      for (const k of SOURCE_IP_LISTS) strings(source[k]).forEach((v, n) => r.error([...sp, k, n], ipOrCIDR(v)));
      for (const k of SOURCE_LISTS) {
        const idx = strings(source[k]).indexOf('');
        if (idx >= 0) r.error([...sp, k, idx], `empty value not allowed, found in ${k}`);
      }
      if (action === 'CUSTOM') {
        for (const k of ['namespaces', 'notNamespaces', 'principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals']) {
          if (list(source[k]).length > 0) r.error([...sp, k], `From.${k} is currently not supported with CUSTOM action`);
        }
      }
    });
    if (Array.isArray(rule.to) && rule.to.length === 0) r.error([...path, 'to'], '`to` must not be empty');
    list(rule.to).forEach((t, j) => {
      const tp = [...path, 'to', j];
      const op = obj(obj(t)?.operation);
      if (op === null) {
        r.error(tp, '`to.operation` must not be nil');
        return;
      }
      const opPath = [...tp, 'operation'];
      if (!OPERATION_LISTS.some((k) => list(op[k]).length > 0)) r.error(opPath, '`to.operation` must not be empty');
      for (const k of ['ports', 'notPorts']) strings(op[k]).forEach((v, n) => r.error([...opPath, k, n], portString(v)));
      for (const k of OPERATION_LISTS) {
        const idx = strings(op[k]).indexOf('');
        if (idx >= 0) r.error([...opPath, k, idx], `empty value not allowed, found in ${k}`);
      }
      for (const k of ['paths', 'notPaths']) {
        strings(op[k]).forEach((v, n) => {
          if ((v.includes('{*}') || v.includes('{**}')) && UNSUPPORTED_PATH_TEMPLATE.test(v)) {
            r.error([...opPath, k, n], `invalid or unsupported path template, found in ${k}`);
          }
        });
      }
    });
    list(rule.when).forEach((w, j) => {
      const cond = obj(w) ?? {};
      const cp = [...path, 'when', j];
      const key = str(cond.key);
      if (key === '') {
        r.error([...cp, 'key'], '`key` must not be empty');
        return;
      }
      if (action === 'CUSTOM' && (key === 'source.namespace' || key === 'source.principal' || key.startsWith('request.auth.'))) {
        r.error([...cp, 'key'], `${key} is currently not supported with CUSTOM action`);
      }
      const values = strings(cond.values);
      const notValues = strings(cond.notValues);
      if (values.length === 0 && notValues.length === 0) {
        r.error(cp, `at least one of \`values\` or \`notValues\` must be set for key ${key}`);
        return;
      }
      // A bad key would fail both lists the same way: report it once.
      const vErr = values.length > 0 ? attribute(key, values) : null;
      const nErr = notValues.length > 0 ? attribute(key, notValues) : null;
      if (vErr !== null) r.error([...cp, 'values'], `invalid \`value\` for \`key\` ${key}: ${vErr}`);
      if (nErr !== null && nErr !== vErr) r.error([...cp, 'notValues'], `invalid \`notValue\` for \`key\` ${key}: ${nErr}`);
    });
  });
}

function ipOrCIDR(v: string): string | null {
  if (v.includes('/')) return checkIPSubnet(v) === null ? null : `bad CIDR range (${v})`;
  return isIPAddress(v) ? null : `bad IP address (${v})`;
}

function portString(v: string): string | null {
  return /^\d+$/.test(v) && Number(v) <= 65535 ? null : `bad port (${v})`;
}

/** `request.headers[name]`-style keys: a name in brackets. */
function mapKey(key: string): string | null {
  const open = key.indexOf('[');
  return key.endsWith(']') && open > 0 && open < key.length - 2 ? null : `bad key (${key}): should have format a[b]`;
}

/** Istio's `security.ValidateAttribute`: the condition keys AuthorizationPolicy knows. */
function attribute(key: string, values: readonly string[]): string | null {
  if (values.includes('')) return `empty value not allowed, found in ${key}`;
  const firstError = (errs: (string | null)[]): string | null => errs.find((e) => e !== null) ?? null;
  if (key.startsWith('request.headers')) return mapKey(key);
  if (key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') return firstError(values.map(ipOrCIDR));
  if (['source.namespace', 'source.principal', 'request.auth.principal', 'request.auth.audiences', 'request.auth.presenter', 'connection.sni'].includes(key)) {
    return null;
  }
  if (key.startsWith('request.auth.claims')) return mapKey(key);
  if (key === 'destination.port') return firstError(values.map(portString));
  if (key.startsWith('experimental.envoy.filters.')) return mapKey(key);
  if (key === 'destination.namespace') return `attribute ${key} is replaced by the metadata.namespace`;
  if (key.startsWith('destination.labels')) return `attribute ${key} is replaced by the workload selector`;
  if (key === 'destination.name' || key === 'destination.user') return `deprecated attribute ${key}: only supported in v1alpha1`;
  return `unknown attribute: ${key}`;
}
