/** DestinationRule rules: traffic policies, subsets, load balancing, client TLS. */
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
  labels,
  subsetName,
  workloadSelector,
} from './checks-common.ts';
import { checkFQDN, checkPort, checkWildcardDomain, isIPAddress } from './names.ts';

export function checkDestinationRule(r: Report, at: Path, spec: Obj): void {
  r.error([...at, 'host'], checkWildcardDomain(str(spec.host)));
  checkTrafficPolicy(r, [...at, 'trafficPolicy'], obj(spec.trafficPolicy));
  const seen = new Set<string>();
  list(spec.subsets).forEach((entry, i) => {
    const subset = obj(entry) ?? {};
    const path = [...at, 'subsets', i];
    const name = str(subset.name);
    if (seen.has(name)) r.error([...path, 'name'], `duplicate subset names: ${name}`);
    seen.add(name);
    r.error([...path, 'name'], subsetName(name));
    labels(r, [...path, 'labels'], subset.labels);
    checkTrafficPolicy(r, [...path, 'trafficPolicy'], obj(subset.trafficPolicy));
  });
  workloadSelector(r, [...at, 'workloadSelector'], spec.workloadSelector, 'matchLabels');
}

function checkTrafficPolicy(r: Report, at: Path, tp: Obj | null): void {
  if (tp === null) return;
  const fields = ['outlierDetection', 'connectionPool', 'loadBalancer', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol', 'retryBudget'];
  if (!fields.some((f) => isSet(tp[f]))) {
    r.error(at, 'traffic policy must have at least one field');
    return;
  }
  if (isSet(tp.tunnel) && isSet(tp.proxyProtocol)) {
    r.error(at, 'tunnel and proxyProtocol must not be set together');
    return;
  }
  const outlier = obj(tp.outlierDetection);
  checkOutlierDetection(r, [...at, 'outlierDetection'], outlier);
  checkConnectionPool(r, [...at, 'connectionPool'], obj(tp.connectionPool));
  checkLoadBalancer(r, [...at, 'loadBalancer'], obj(tp.loadBalancer), outlier);
  checkClientTLS(r, [...at, 'tls'], obj(tp.tls));
  list(tp.portLevelSettings).forEach((entry, i) => {
    const pls = obj(entry) ?? {};
    const path = [...at, 'portLevelSettings', i];
    if (!isSet(pls.port)) r.error(path, 'portTrafficPolicy must have valid port');
    if (!['outlierDetection', 'connectionPool', 'loadBalancer', 'tls'].some((f) => isSet(pls[f]))) {
      r.error(path, 'port traffic policy must have at least one field');
      return;
    }
    const portOutlier = obj(pls.outlierDetection);
    checkOutlierDetection(r, [...path, 'outlierDetection'], portOutlier);
    checkConnectionPool(r, [...path, 'connectionPool'], obj(pls.connectionPool));
    checkLoadBalancer(r, [...path, 'loadBalancer'], obj(pls.loadBalancer), portOutlier);
    checkClientTLS(r, [...path, 'tls'], obj(pls.tls));
  });
  const tunnel = obj(tp.tunnel);
  if (tunnel !== null) {
    const protocol = str(tunnel.protocol);
    if (protocol !== '' && protocol !== 'CONNECT' && protocol !== 'POST') r.error([...at, 'tunnel', 'protocol'], 'tunnel protocol must be "CONNECT" or "POST"');
    const target = str(tunnel.targetHost);
    const fqdnErr = checkFQDN(target);
    if (fqdnErr !== null && !isIPAddress(target)) r.error([...at, 'tunnel', 'targetHost'], `tunnel target host must be valid FQDN or IP address: ${fqdnErr}`);
    const portErr = checkPort(num(tunnel.targetPort));
    if (portErr !== null) r.error([...at, 'tunnel', 'targetPort'], `tunnel target port is invalid: ${portErr}`);
  }
}

function checkOutlierDetection(r: Report, at: Path, od: Obj | null): void {
  if (od === null) return;
  if (isSet(od.baseEjectionTime)) duration(r, [...at, 'baseEjectionTime'], od.baseEjectionTime, true);
  if (isSet(od.interval)) duration(r, [...at, 'interval'], od.interval, true);
  if (num(od.consecutiveErrors) !== 0) {
    r.warn([...at, 'consecutiveErrors'], 'outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead');
  }
  if (od.splitExternalLocalOriginErrors !== true && num(od.consecutiveLocalOriginFailures) > 0) {
    r.error(
      [...at, 'consecutiveLocalOriginFailures'],
      'outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false',
    );
  }
  percent(r, [...at, 'maxEjectionPercent'], od.maxEjectionPercent);
  percent(r, [...at, 'minHealthPercent'], od.minHealthPercent);
}

export function checkConnectionPool(r: Report, at: Path, pool: Obj | null): void {
  if (pool === null) return;
  const http = obj(pool.http);
  const tcp = obj(pool.tcp);
  if (http === null && tcp === null) {
    r.error(at, 'connection pool must have at least one field');
    return;
  }
  if (http !== null) {
    for (const f of ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'maxConcurrentStreams']) {
      if (num(http[f]) < 0) r.error([...at, 'http', f], `${f} must be non-negative`);
    }
    if (isSet(http.idleTimeout)) duration(r, [...at, 'http', 'idleTimeout'], http.idleTimeout, true);
    if (http.h2UpgradePolicy === 'UPGRADE' && http.useClientProtocol === true) {
      r.error([...at, 'http', 'useClientProtocol'], 'use client protocol must not be true when H2UpgradePolicy is UPGRADE');
    }
  }
  if (tcp !== null) {
    if (num(tcp.maxConnections) < 0) r.error([...at, 'tcp', 'maxConnections'], 'max connections must be non-negative');
    for (const f of ['connectTimeout', 'maxConnectionDuration', 'idleTimeout']) {
      if (isSet(tcp[f])) duration(r, [...at, 'tcp', f], tcp[f], true);
    }
    const ka = obj(tcp.tcpKeepalive);
    if (ka !== null) {
      for (const f of ['time', 'interval']) if (isSet(ka[f])) duration(r, [...at, 'tcp', 'tcpKeepalive', f], ka[f], true);
    }
  }
}

/** Envoy's primality test for maglev table sizes. */
function isPrime(x: number): boolean {
  if (x !== 0 && x < 4) return true;
  if (x % 2 === 0) return false;
  const limit = Math.floor(Math.sqrt(x));
  for (let f = 3; f <= limit; f += 2) if (x % f === 0) return false;
  return true;
}

const TOPOLOGY_LABELS = new Set(['topology.kubernetes.io/region', 'topology.kubernetes.io/zone', 'topology.istio.io/subzone']);

function checkLoadBalancer(r: Report, at: Path, lb: Obj | null, outlier: Obj | null): void {
  if (lb === null) return;
  const ch = obj(lb.consistentHash);
  if (ch !== null) {
    const path = [...at, 'consistentHash'];
    const cookie = obj(ch.httpCookie);
    if (cookie !== null) {
      if (str(cookie.name) === '') r.error([...path, 'httpCookie'], 'name required for HttpCookie');
      if (isSet(cookie.ttl)) duration(r, [...path, 'httpCookie', 'ttl'], cookie.ttl, false);
    }
    if (num(ch.minimumRingSize) !== 0) {
      r.warn([...path, 'minimumRingSize'], "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead");
      if (isSet(ch.ringHash) || isSet(ch.maglev)) r.error(path, 'only one of MinimumRingSize or Maglev/Ringhash can be specified');
    }
    const maglev = obj(ch.maglev);
    if (maglev !== null) {
      const size = num(maglev.tableSize);
      const mp = [...path, 'maglev', 'tableSize'];
      if (size === 0) r.error(mp, 'tableSize must be set for maglev');
      if (size >= 5000011) r.error(mp, 'tableSize must be less than 5000011 for maglev');
      if (!isPrime(size)) r.error(mp, 'tableSize must be a prime number for maglev');
    }
  }
  const locality = obj(lb.localityLbSetting);
  if (locality !== null) checkLocalityLb(r, [...at, 'localityLbSetting'], locality, outlier);
  if (isSet(lb.warmupDurationSecs)) duration(r, [...at, 'warmupDurationSecs'], lb.warmupDurationSecs, true);
  const warmup = obj(lb.warmup);
  if (warmup !== null) duration(r, [...at, 'warmup', 'duration'], warmup.duration, false);
}

function checkLocalityLb(r: Report, at: Path, lb: Obj, outlier: Obj | null): void {
  const distribute = list(lb.distribute);
  const failover = list(lb.failover);
  const priority = strings(lb.failoverPriority);
  if (distribute.length > 0 && failover.length > 0) {
    r.error(at, "can not simultaneously specify 'distribute' and 'failover'");
    return;
  }
  if (failover.length > 0) {
    const topo = priority.find((p) => TOPOLOGY_LABELS.has(p));
    if (topo !== undefined) {
      r.error([...at, 'failoverPriority'], `can not simultaneously set 'failover' and topology label '${topo}' in 'failover_priority'`);
      return;
    }
  }
  distribute.forEach((entry, i) => {
    const d = obj(entry) ?? {};
    let total = 0;
    for (const [loc, w] of entries(d.to)) {
      const weight = num(w);
      if (weight <= 0 || weight > 100) {
        r.error([...at, 'distribute', i, 'to', loc], 'locality weight must be in range [1, 100]');
        return;
      }
      total += weight;
    }
    if (total !== 100) r.error([...at, 'distribute', i, 'to'], `total locality weight ${total} != 100`);
  });
  if ((failover.length > 0 || priority.length > 0) && outlier === null) r.warn(at, 'outlier detection policy must be provided for failover');
  // Under Kubernetes, readiness takes a drained endpoint out of its locality; Remora sees no
  // readiness, so only ejections move traffic on, and Envoy's default cap allows few of them.
  if ((failover.length > 0 || priority.length > 0) && outlier !== null && !(num(outlier.maxEjectionPercent) > 0)) {
    r.warn(
      at,
      'outlierDetection.maxEjectionPercent is unset: at its default (10%) outlier detection ejects at most one endpoint in ten (always at least one), so once that many are out traffic stays on a failed locality; Kubernetes readiness would take drained endpoints out, without it only ejections move traffic on: set maxEjectionPercent (100 lets traffic fail over through every locality)',
    );
  }
  failover.forEach((entry, i) => {
    const f = obj(entry) ?? {};
    const from = str(f.from);
    const to = str(f.to);
    const path = [...at, 'failover', i];
    if (from === to) r.error(path, 'locality lb failover settings must specify different regions');
    if (from.includes('/') || to.includes('/')) r.error(path, 'locality lb failover only specify region');
    if (from.includes('*') || to.includes('*')) r.error(path, "locality lb failover region should not contain '*' wildcard");
  });
}

function checkClientTLS(r: Report, at: Path, tls: Obj | null): void {
  if (tls === null) return;
  const mode = str(tls.mode);
  const credentialName = str(tls.credentialName);
  if (tls.insecureSkipVerify === true) {
    if (mode === 'SIMPLE' && (str(tls.caCertificates) !== '' || credentialName !== '' || isSet(tls.subjectAltNames))) {
      r.error(at, 'cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true');
    }
    if (mode === 'MUTUAL' && (str(tls.caCertificates) !== '' || isSet(tls.subjectAltNames))) {
      r.error(at, 'cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true');
    }
  }
  if ((mode === 'SIMPLE' || mode === 'MUTUAL') && credentialName !== '') {
    if (['clientCertificate', 'caCertificates', 'privateKey', 'caCrl'].some((f) => str(tls[f]) !== '')) {
      r.error(at, 'cannot specify client certificates or CA certificate or CA CRL If credentialName is set');
    }
    return;
  }
  if (mode === 'MUTUAL') {
    if (str(tls.clientCertificate) === '') r.error(at, 'client certificate required for mutual tls');
    if (str(tls.privateKey) === '') r.error(at, 'private key required for mutual tls');
  }
}
