/** ServiceEntry and WorkloadEntry rules: hosts, ports, resolution, endpoint addresses. */
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
  port,
  labels,
  portName,
  workloadSelector,
} from './checks-common.ts';
import {
  checkFQDN,
  checkIPSubnet,
  checkPartialWildcard,
  checkUnixAddress,
  checkWildcardDomain,
  isHTTPProtocol,
  isIPAddress,
  isTLSProtocol,
  parseProtocol,
} from './names.ts';

export function checkServiceEntry(r: Report, at: Path, spec: Obj): void {
  const hosts = strings(spec.hosts);
  const resolution = str(spec.resolution) || 'NONE';
  const endpoints = list(spec.endpoints);
  workloadSelector(r, [...at, 'workloadSelector'], spec.workloadSelector, 'labels');
  if (isSet(spec.workloadSelector) && isSet(spec.endpoints)) r.error(at, 'only one of WorkloadSelector or Endpoints is allowed in Service Entry');
  if (hosts.length === 0) r.error([...at, 'hosts'], 'service entry must have at least one host');
  hosts.forEach((h, i) => {
    if (h === '*') {
      r.error([...at, 'hosts', i], `invalid host ${h}`);
      return;
    }
    r.error([...at, 'hosts', i], checkWildcardDomain(h));
    r.warn([...at, 'hosts', i], checkPartialWildcard(h));
  });
  let cidrFound = false;
  strings(spec.addresses).forEach((a, i) => {
    cidrFound ||= a.includes('/');
    r.error([...at, 'addresses', i], checkIPSubnet(a));
  });
  if (cidrFound && resolution !== 'NONE' && resolution !== 'STATIC') r.error([...at, 'addresses'], 'CIDR addresses are allowed only for NONE/STATIC resolution types');

  const portNames = new Set<string>();
  const portNumbers = new Set<number>();
  list(spec.ports).forEach((entry, i) => {
    const p = obj(entry) ?? {};
    const path = [...at, 'ports', i];
    const name = str(p.name);
    const number = num(p.number);
    if (portNames.has(name)) r.error([...path, 'name'], `service entry port name "${name}" already defined`);
    if (portNumbers.has(number)) r.error([...path, 'number'], `service entry port ${number} already defined`);
    portNames.add(name);
    portNumbers.add(number);
    if (num(p.targetPort) !== 0) port(r, [...path, 'targetPort'], p.targetPort);
    r.error([...path, 'name'], portName(name));
    const protocol = str(p.protocol);
    if (protocol !== '' && parseProtocol(protocol) === null) r.error([...path, 'protocol'], `unsupported protocol: ${protocol}`);
    port(r, [...path, 'number'], p.number);
  });

  switch (resolution) {
    case 'NONE':
      if (endpoints.length > 0) r.error([...at, 'endpoints'], 'no endpoints should be provided for resolution type none');
      if (isSet(spec.workloadSelector)) r.warn([...at, 'workloadSelector'], 'workloadSelector should not be set when resolution mode is NONE');
      break;
    case 'STATIC':
      // STATIC endpoints are used as given: addresses must be IPs (or unix sockets), not names.
      endpoints.forEach((e, i) => checkWorkloadEntry(r, [...at, 'endpoints', i], obj(e) ?? {}, portNames, false));
      break;
    case 'DNS':
    case 'DNS_ROUND_ROBIN':
      if (endpoints.length === 0) {
        hosts.forEach((h, i) => {
          if (checkFQDN(h) !== null) r.error([...at, 'hosts', i], `hosts must be FQDN if no endpoints are provided for resolution mode ${resolution}`);
        });
      }
      if (resolution === 'DNS_ROUND_ROBIN' && endpoints.length > 1) {
        r.error([...at, 'endpoints'], `there must only be 0 or 1 endpoint for resolution mode ${resolution}`);
      }
      endpoints.forEach((entry, i) => {
        const e = obj(entry) ?? {};
        const path = [...at, 'endpoints', i];
        const address = str(e.address);
        if (!isIPAddress(address) && checkFQDN(address) !== null) {
          r.error([...path, 'address'], `endpoint address "${address}" is not a valid FQDN or an IP address`);
        }
        labels(r, [...path, 'labels'], e.labels);
        endpointPorts(r, [...path, 'ports'], e.ports, portNames);
      });
      if (isSet(spec.workloadSelector)) r.warn([...at, 'workloadSelector'], `workloadSelector should not be set when resolution mode is ${resolution}`);
      break;
    default:
      r.error([...at, 'resolution'], `unsupported resolution type ${resolution}`);
  }

  // Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports.
  if (resolution !== 'NONE' && hosts.length > 1) {
    const badPort = list(spec.ports).findIndex((entry) => {
      const p = parseProtocol(str(obj(entry)?.protocol));
      return !isHTTPProtocol(p) && !isTLSProtocol(p);
    });
    if (badPort >= 0) r.error([...at, 'ports', badPort], 'multiple hosts provided with non-HTTP, non-TLS ports');
  }
}

function endpointPorts(r: Report, at: Path, ports: unknown, servicePorts: ReadonlySet<string> | null): void {
  for (const [name, value] of entries(ports)) {
    const path = [...at, name];
    if (servicePorts !== null && !servicePorts.has(name)) r.error(path, `endpoint port ${num(value)} is not defined by the service entry`);
    r.error(path, portName(name));
    port(r, path, value);
  }
}

/**
 * A WorkloadEntry, or a ServiceEntry endpoint (`servicePorts` set). Names are allowed as
 * addresses only where DNS resolution will turn them into IPs (`allowNames`).
 */
export function checkWorkloadEntry(r: Report, at: Path, we: Obj, servicePorts: ReadonlySet<string> | null, allowNames: boolean): void {
  const address = str(we.address);
  if (address === '') {
    if (str(we.network) === '') {
      r.error(at, 'address is required');
      return;
    }
    r.warn([...at, 'network'], `address is unset with network "${str(we.network)}"`);
  }
  const unix = address.startsWith('unix://');
  if (unix) {
    r.error([...at, 'address'], checkUnixAddress(address.slice('unix://'.length)));
    if (entries(we.ports).length > 0) r.error([...at, 'ports'], `unix endpoint ${address} must not include ports`);
  } else if (address !== '' && !isIPAddress(address)) {
    if (!allowNames) r.error([...at, 'address'], `endpoint address "${address}" is not a valid IP address`);
    else if (checkFQDN(address) !== null) r.error([...at, 'address'], `endpoint address "${address}" is not a valid FQDN or an IP address`);
  }
  endpointPorts(r, [...at, 'ports'], we.ports, servicePorts);
  labels(r, [...at, 'labels'], we.labels);
  if (unix && servicePorts !== null && servicePorts.size !== 1) r.error(at, 'exactly 1 service port required for unix endpoints');
}
