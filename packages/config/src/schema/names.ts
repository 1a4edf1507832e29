/**
 * Name, host, address and label rules of Istio's validation (`pkg/config/labels`,
 * `pkg/config/validation/agent`), each returning an error message or null.
 */
import { isIP } from 'node:net';

export const DNS1123_LABEL_MAX_LENGTH = 63;
// Istio's own DNS-1123 label format accepts upper case (pkg/config/labels).
const DNS1123_LABEL = /^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$/;
// '*', a label with a leading '*' or '*-', or a plain label.
const WILDCARD_LABEL = /^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$/;
const QUALIFIED_NAME = '(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]';
const DNS_PREFIX = '[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)*/';
const LABEL_KEY = new RegExp(`^(${DNS_PREFIX})?(${QUALIFIED_NAME})$`);
const LABEL_VALUE = new RegExp(`^(?:${QUALIFIED_NAME})?$`);
const HEADER_NAME = /^[-_A-Za-z0-9]+$/;

export function isDNS1123Label(s: string): boolean {
  return s.length <= DNS1123_LABEL_MAX_LENGTH && DNS1123_LABEL.test(s);
}

export function isWildcardDNS1123Label(s: string): boolean {
  return s.length <= DNS1123_LABEL_MAX_LENGTH && WILDCARD_LABEL.test(s);
}

export function isIPAddress(s: string): boolean {
  return isIP(s) !== 0;
}

function checkDNS1123Preconditions(name: string): string | null {
  if (name.length > 255) return `domain name "${name}" too long (max 255)`;
  if (name.length === 0) return 'empty domain name not allowed';
  return null;
}

function checkDNS1123Labels(domain: string): string | null {
  const parts = domain.split('.');
  const top = parts[parts.length - 1] ?? '';
  if (/^[+-]?\d+$/.test(top)) return `domain name "${domain}" invalid (top level domain "${top}" cannot be all-numeric)`;
  for (let i = 0; i < parts.length; i++) {
    const label = parts[i] ?? '';
    // A trailing dot (`istio.io.`) is allowed.
    if (i === parts.length - 1 && label === '') return null;
    if (!isDNS1123Label(label)) return `domain name "${domain}" invalid (label "${label}" invalid)`;
  }
  return null;
}

/** A fully-qualified (or short) DNS name without wildcards. */
export function checkFQDN(name: string): string | null {
  return checkDNS1123Preconditions(name) ?? checkDNS1123Labels(name);
}

/** A DNS name whose first label may be a wildcard (`*.example.com`, `*`). */
export function checkWildcardDomain(domain: string): string | null {
  const pre = checkDNS1123Preconditions(domain);
  if (pre !== null) return pre;
  const dot = domain.indexOf('.');
  const first = dot < 0 ? domain : domain.slice(0, dot);
  if (!isWildcardDNS1123Label(first)) return `domain name "${domain}" invalid (label "${first}" invalid)`;
  return dot < 0 ? null : checkDNS1123Labels(domain.slice(dot + 1));
}

/** `*` alone or `*.` as a prefix are the only wildcards Istio allows in these hosts. */
export function checkPartialWildcard(host: string): string | null {
  return host.includes('*') && host.length !== 1 && !host.startsWith('*.') ? `partial wildcard "${host}" not allowed` : null;
}

/** An IP address or a CIDR block. */
export function checkIPSubnet(s: string): string | null {
  const slash = s.indexOf('/');
  if (slash < 0) return isIPAddress(s) ? null : `${s} is not a valid IP`;
  const addr = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  const family = isIP(addr);
  const max = family === 4 ? 32 : 128;
  if (family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > max) return `${s} is not a valid CIDR block`;
  return null;
}

export function checkPort(port: number): string | null {
  return Number.isInteger(port) && port >= 1 && port <= 65535 ? null : `port number ${port} must be in the range 1..65535`;
}

/** Header names in matches and claim-to-header outputs. */
const JWT_CLAIM_ROUTE_PREFIX = '@request.auth.claims';

/**
 * The claim path a VirtualService header name routes on (Istio's `jwt.ToRoutingClaim`):
 * `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` → `['a', 'b']` (the prefix in
 * any case); null for any other header name.
 */
export function routingClaimPath(name: string): string[] | null {
  if (!name.toLowerCase().startsWith(JWT_CLAIM_ROUTE_PREFIX)) return null;
  const rest = name.slice(JWT_CLAIM_ROUTE_PREFIX.length);
  if (rest.length > 1 && rest.startsWith('.')) return rest.slice(1).split('.');
  if (rest.length > 2 && rest.startsWith('[') && rest.endsWith(']')) return rest.slice(1, -1).split('][');
  return null;
}

export function checkHeaderName(name: string): string | null {
  if (name === '') return 'header name cannot be empty';
  return HEADER_NAME.test(name) ? null : `header name "${name}" is not a valid header name`;
}

/** Label keys and values (Kubernetes rules, as Istio checks them). */
export function checkLabels(labels: Readonly<Record<string, unknown>>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    const m = LABEL_KEY.exec(k);
    if (m === null) out.push(`invalid label key: "${k}"`);
    else if ((m[1] ?? '').length - 1 > 253) out.push(`invalid label key: "${k}" (DNS prefix is too long)`);
    else if ((m[2] ?? '').length > DNS1123_LABEL_MAX_LENGTH) out.push(`invalid label key: "${k}" (name is too long)`);
    if (typeof v === 'string' && !LABEL_VALUE.test(v)) out.push(`invalid label value: "${v}"`);
  }
  return out;
}

/** Istio's `protocol.Parse`: the protocol names it knows, case-insensitive. */
const PROTOCOLS = new Map(
  ['HTTP', 'HTTPS', 'HTTP2', 'HTTP_PROXY', 'GRPC', 'GRPC-Web', 'TCP', 'TLS', 'UDP', 'Mongo', 'Redis', 'MySQL'].map(
    (p) => [p.toLowerCase(), p] as const,
  ),
);
export const PROTOCOL_NAMES: readonly string[] = [...PROTOCOLS.values()].map((p) => p.toUpperCase());

/** Canonical protocol name, or null when Istio does not know it. */
export function parseProtocol(s: string): string | null {
  return PROTOCOLS.get(s.toLowerCase()) ?? null;
}

export function isHTTPProtocol(p: string | null): boolean {
  return p === 'HTTP' || p === 'HTTP2' || p === 'HTTP_PROXY' || p === 'GRPC' || p === 'GRPC-Web';
}

export function isTLSProtocol(p: string | null): boolean {
  return p === 'HTTPS' || p === 'TLS';
}

/** Istio's `host.Name.Matches`: equal, or one wildcard covers the other. */
export function hostsOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  const aw = a.startsWith('*');
  const bw = b.startsWith('*');
  if (aw && bw) return a.length > b.length ? a.endsWith(b.slice(1)) : b.endsWith(a.slice(1));
  if (aw) return b.endsWith(a.slice(1));
  if (bw) return a.endsWith(b.slice(1));
  return false;
}

/** Istio's `host.Name.SubsetOf`: every name `a` matches is matched by `b`. */
export function hostSubsetOf(a: string, b: string): boolean {
  if (b === '*' || a === b) return true;
  if (b.startsWith('*')) return a.endsWith(b.slice(1)) && (!a.startsWith('*') || a.length >= b.length);
  return false;
}

/** A unix domain socket path after `unix://` (absolute, or abstract `@name`). */
export function checkUnixAddress(addr: string): string | null {
  if (addr === '') return 'unix address must not be empty';
  if (addr.startsWith('@')) return null;
  return addr.startsWith('/') && !addr.endsWith('/') ? null : `${addr} is not an absolute path to a file`;
}
