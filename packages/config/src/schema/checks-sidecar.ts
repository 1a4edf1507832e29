/** Sidecar rules: ingress and egress listeners. */
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
  port,
  portName,
  workloadSelector,
} from './checks-common.ts';
import { checkPort, checkUnixAddress, isIPAddress, parseProtocol } from './names.ts';
import { checkConnectionPool } from './checks-destination-rule.ts';
import { checkServerTLS, namespaceSlashHost } from './checks-gateway.ts';

export function checkSidecar(r: Report, at: Path, spec: Obj): void {
  workloadSelector(r, [...at, 'workloadSelector'], spec.workloadSelector, 'labels');
  const ingress = list(spec.ingress);
  const egress = list(spec.egress);
  if (ingress.length === 0 && egress.length === 0 && !isSet(spec.outboundTrafficPolicy) && !isSet(spec.inboundConnectionPool)) {
    r.error(at, 'sidecar: empty configuration provided');
    return;
  }
  const ingressPorts = new Set<number>();
  ingress.forEach((entry, i) => {
    const listener = obj(entry) ?? {};
    const path = [...at, 'ingress', i];
    const p = obj(listener.port);
    if (p === null) {
      r.error(path, 'sidecar: port is required for ingress listeners');
      return;
    }
    sidecarPort(r, [...path, 'port'], p, false);
    const bind = str(listener.bind);
    if (bind !== '' && !isIPAddress(bind)) r.error([...path, 'bind'], `${bind} is not a valid IP`);
    if (ingressPorts.has(num(p.number))) r.error([...path, 'port', 'number'], 'sidecar: ports on IP bound listeners must be unique');
    ingressPorts.add(num(p.number));
    const endpoint = str(listener.defaultEndpoint);
    if (endpoint.startsWith('unix://')) r.error([...path, 'defaultEndpoint'], checkUnixAddress(endpoint.slice('unix://'.length)));
    else if (endpoint !== '') r.error([...path, 'defaultEndpoint'], defaultEndpoint(endpoint));
    const tls = obj(listener.tls);
    if (tls !== null) {
      if (isSet(tls.subjectAltNames)) r.error([...path, 'tls'], 'sidecar: subjectAltNames is not supported in ingress tls');
      if (tls.httpsRedirect === true) r.error([...path, 'tls'], 'sidecar: httpsRedirect is not supported');
      if (str(tls.credentialName) !== '') r.error([...path, 'tls'], 'sidecar: credentialName is not currently supported');
      const mode = str(tls.mode);
      if (mode === 'ISTIO_MUTUAL' || mode === 'AUTO_PASSTHROUGH') r.error([...path, 'tls', 'mode'], `configuration is invalid: cannot set mode to ${mode} in sidecar ingress tls`);
      checkServerTLS(r, [...path, 'tls'], tls);
    }
    checkConnectionPool(r, [...path, 'connectionPool'], obj(listener.connectionPool));
  });
  checkConnectionPool(r, [...at, 'inboundConnectionPool'], obj(spec.inboundConnectionPool));

  const egressPorts = new Set<number>();
  egress.forEach((entry, i) => {
    const listener = obj(entry) ?? {};
    const path = [...at, 'egress', i];
    const p = obj(listener.port);
    if (p === null) {
      // One catch-all listener without a port, and it must come last.
      if (i !== egress.length - 1) r.error(path, 'sidecar: the egress listener with empty port should be the last listener in the list');
    } else {
      const bind = str(listener.bind);
      sidecarPort(r, [...path, 'port'], p, bind.startsWith('unix://'));
      if (num(p.number) === 0) {
        if (!bind.startsWith('unix://')) r.error([...path, 'bind'], 'sidecar: ports with 0 value must have a unix domain socket bind address');
        else r.error([...path, 'bind'], checkUnixAddress(bind.slice('unix://'.length)));
      } else {
        if (bind !== '' && !isIPAddress(bind)) r.error([...path, 'bind'], `${bind} is not a valid IP`);
        if (egressPorts.has(num(p.number))) r.error([...path, 'port', 'number'], 'sidecar: ports on IP bound listeners must be unique');
        egressPorts.add(num(p.number));
      }
    }
    const hosts = strings(listener.hosts);
    if (hosts.length === 0) r.error(path, 'sidecar: egress listener must contain at least one host');
    hosts.forEach((h, j) => {
      for (const msg of namespaceSlashHost(h, false)) r.error([...path, 'hosts', j], msg);
    });
  });
}

function sidecarPort(r: Report, at: Path, p: Obj, unixBind: boolean): void {
  const name = str(p.name);
  if (name !== '') r.error([...at, 'name'], portName(name));
  const protocol = str(p.protocol);
  if (protocol !== '' && parseProtocol(protocol) === null) r.error([...at, 'protocol'], `unsupported protocol: ${protocol}`);
  if (!(unixBind && num(p.number) === 0)) port(r, [...at, 'number'], p.number);
  if (num(p.targetPort) > 0) r.error([...at, 'targetPort'], 'targetPort has no impact on Sidecars');
}

function defaultEndpoint(endpoint: string): string | null {
  const colon = endpoint.lastIndexOf(':');
  if (colon < 0) return `sidecar: defaultEndpoint ${endpoint} must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://<path>`;
  const host = endpoint.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const portText = endpoint.slice(colon + 1);
  if (host !== '' && !['127.0.0.1', '0.0.0.0', '::1', '::'].includes(host)) {
    return 'sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset';
  }
  if (!/^\d+$/.test(portText)) return `sidecar: defaultEndpoint port (${portText}) is not a number`;
  return checkPort(Number(portText));
}
