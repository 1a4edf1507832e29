/** Gateway rules: servers, ports, hosts, server TLS. */
import { Report, type Path, type Obj, obj, list, str, num, strings } from './checks-common.ts';
import {
  checkPartialWildcard,
  checkPort,
  checkUnixAddress,
  checkWildcardDomain,
  isDNS1123Label,
  isHTTPProtocol,
  isIPAddress,
  isTLSProtocol,
  parseProtocol,
  PROTOCOL_NAMES,
} from './names.ts';

export function checkGateway(r: Report, at: Path, spec: Obj): void {
  const servers = list(spec.servers);
  if (servers.length === 0) r.error(at, 'gateway must have at least one server');
  const portNames = new Set<string>();
  servers.forEach((entry, i) => {
    const server = obj(entry) ?? {};
    const path = [...at, 'servers', i];
    checkServer(r, path, server);
    const p = obj(server.port);
    if (p !== null) {
      const name = str(p.name);
      if (portNames.has(name)) r.error([...path, 'port', 'name'], `port names in servers must be unique: duplicate name ${name}`);
      portNames.add(name);
      if (!isHTTPProtocol(parseProtocol(str(p.protocol))) && obj(server.tls)?.httpsRedirect === true) {
        r.warn([...path, 'tls', 'httpsRedirect'], 'tls.httpsRedirect should only be used with http servers');
      }
    }
  });
}

function checkServer(r: Report, at: Path, server: Obj): void {
  const hosts = strings(server.hosts);
  if (hosts.length === 0) r.error([...at, 'hosts'], 'server config must contain at least one host');
  hosts.forEach((h, i) => {
    for (const msg of namespaceSlashHost(h, true)) r.error([...at, 'hosts', i], msg);
  });
  const bind = str(server.bind);
  const p = obj(server.port);
  let portOk = true;
  if (p === null) {
    r.error(at, 'port is required');
    portOk = false;
  } else {
    const protocol = str(p.protocol);
    if (parseProtocol(protocol) === null) {
      r.error([...at, 'port', 'protocol'], `invalid protocol "${protocol}", supported protocols are ${PROTOCOL_NAMES.join(', ')}`);
      portOk = false;
    }
    if (num(p.number) > 0 || !bind.startsWith('unix://')) {
      const err = checkPort(num(p.number));
      if (err !== null) {
        r.error([...at, 'port', 'number'], err);
        portOk = false;
      }
    }
    if (num(p.targetPort) > 0) r.error([...at, 'port', 'targetPort'], 'targetPort has no impact on Gateways');
    if (str(p.name) === '') {
      r.error([...at, 'port'], 'port name must be set');
      portOk = false;
    }
  }
  if (bind.startsWith('unix://')) {
    r.error([...at, 'bind'], checkUnixAddress(bind.slice('unix://'.length)));
    if (p !== null && num(p.number) !== 0) r.error([...at, 'port', 'number'], 'port number must be 0 for unix domain socket');
  } else if (bind !== '' && !isIPAddress(bind)) {
    r.error([...at, 'bind'], `${bind} is not a valid IP`);
  }
  const tls = obj(server.tls);
  checkServerTLS(r, [...at, 'tls'], tls);
  if (portOk && p !== null) {
    const protocol = parseProtocol(str(p.protocol));
    if (isTLSProtocol(protocol) && tls === null) {
      r.error(at, 'server must have TLS settings for HTTPS/TLS protocols');
    } else if (!isTLSProtocol(protocol) && tls !== null) {
      if (isHTTPProtocol(protocol)) {
        // Plain-text HTTP servers may only carry httpsRedirect.
        if (['serverCertificate', 'privateKey', 'caCertificates', 'credentialName'].some((f) => str(tls[f]) !== '')) {
          r.error([...at, 'tls'], 'server cannot have TLS settings for plain text HTTP ports');
        }
      } else {
        r.error([...at, 'tls'], 'server cannot have TLS settings for non HTTPS/TLS ports');
      }
    }
  }
}

/** `ns/host` (or a bare host on Gateways): Istio's ValidateNamespaceSlashWildcardHostname. */
export function namespaceSlashHost(hostname: string, isGateway: boolean): string[] {
  const slash = hostname.indexOf('/');
  if (slash < 0) {
    return isGateway ? gatewayOrSidecarHostPart(hostname, true) : ['host must be of form namespace/dnsName'];
  }
  const out: string[] = [];
  const ns = hostname.slice(0, slash);
  const host = hostname.slice(slash + 1);
  if (ns === '' || host === '') out.push('config namespace and dnsName in host entry cannot be empty');
  const nsOk = ns === '*' || ns === '.' || (!isGateway && ns === '~') || isDNS1123Label(ns);
  if (!nsOk) out.push(`invalid namespace value "${ns}" in ${isGateway ? 'gateway' : 'sidecar'}`);
  out.push(...gatewayOrSidecarHostPart(host, isGateway));
  return out;
}

function gatewayOrSidecarHostPart(host: string, isGateway: boolean): string[] {
  const out: string[] = [];
  if (host !== '*' && !host.includes('.')) out.push('short names (non FQDN) are not allowed');
  const err = checkWildcardDomain(host);
  // Gateways also accept an IP address as the host.
  if (err !== null && (!isGateway || !isIPAddress(host))) out.push(err);
  const partial = checkPartialWildcard(host);
  if (partial !== null) out.push(partial);
  return out;
}

export function checkServerTLS(r: Report, at: Path, tls: Obj | null): void {
  if (tls === null) return;
  const mode = str(tls.mode);
  const has = (f: string): boolean => str(tls[f]) !== '';
  if (mode === 'ISTIO_MUTUAL') {
    if (has('serverCertificate')) r.error(at, 'ISTIO_MUTUAL TLS cannot have associated server certificate');
    if (has('privateKey')) r.error(at, 'ISTIO_MUTUAL TLS cannot have associated private key');
    if (has('caCertificates')) r.error(at, 'ISTIO_MUTUAL TLS cannot have associated CA bundle');
    if (has('credentialName')) r.error(at, 'ISTIO_MUTUAL TLS cannot have associated credentialName');
    return;
  }
  if (mode === 'PASSTHROUGH' || mode === 'AUTO_PASSTHROUGH') {
    if (['caCrl', 'serverCertificate', 'privateKey', 'caCertificates', 'credentialName'].some(has)) {
      r.warn(at, `${mode} mode does not use certificates, they will be ignored`);
    }
  }
  const remoteCredentials = has('credentialName') || list(tls.credentialNames).length > 0 || list(tls.tlsCertificates).length > 0;
  if ((mode === 'SIMPLE' || mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') && remoteCredentials) return;
  if (mode === 'SIMPLE') {
    if (!has('serverCertificate')) r.error(at, 'SIMPLE TLS requires a server certificate');
    if (!has('privateKey')) r.error(at, 'SIMPLE TLS requires a private key');
  } else if (mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') {
    if (!has('serverCertificate')) r.error(at, 'MUTUAL TLS requires a server certificate');
    if (!has('privateKey')) r.error(at, 'MUTUAL TLS requires a private key');
    if (!has('caCertificates')) r.error(at, 'MUTUAL TLS requires a client CA bundle');
  }
  if (has('caCrl') && mode === 'SIMPLE') r.error([...at, 'caCrl'], 'CRL is not supported with SIMPLE TLS');
}
