import {
  ConfigDumpError,
  HTTP_CONNECTION_MANAGER,
  readListeners,
  TCP_PROXY,
  type ConfigDump,
  type FilterChainMatch,
  type Json,
  type Listener,
  type NetworkFilter,
  type RouteConfiguration,
  type RouteMatch,
  type VirtualHost,
} from './config-dump.ts';
import { goSortSlice } from './go-sort.ts';
import { tabWrite } from './tab-writer.ts';

/** istioctl's listener filters: address (any of the listener's), port, type (HTTP, TCP, HTTP+TCP). */
export interface ListenerFilter {
  readonly address: string;
  readonly port: number;
  readonly type: string;
  /** One row per filter chain with its match and destination, instead of one per listener. */
  readonly verbose: boolean;
}

/** The catch-all cluster istiod sends unmatched TCP to; a TCP proxy to it does not make a listener "TCP". */
const BLACK_HOLE_CLUSTER = 'BlackHoleCluster';

function address(l: Listener): string {
  if (l.address === null) return '';
  if (l.address.isSocket) return l.address.socketAddress;
  return l.address.pipePath ?? '';
}

function port(l: Listener): number {
  return l.address?.portValue ?? 0;
}

const eqFold = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

function matches(f: ListenerFilter, l: Listener): boolean {
  if (f.address !== '' && ![...l.additionalAddresses, address(l)].some((a) => eqFold(a, f.address))) return false;
  if (f.port !== 0 && port(l) !== f.port) return false;
  if (f.type !== '' && !eqFold(listenerType(l), f.type)) return false;
  return true;
}

/** istioctl classifies a listener by its filters: HTTP, TCP, HTTP+TCP or UNKNOWN. */
function listenerType(l: Listener): string {
  let http = 0;
  let tcp = 0;
  for (const chain of l.filterChains) {
    for (const f of chain.filters) {
      if (f.name === HTTP_CONNECTION_MANAGER) http++;
      else if (f.name === TCP_PROXY && !f.typedConfigText.includes(BLACK_HOLE_CLUSTER)) tcp++;
    }
  }
  if (http > 0) return tcp === 0 ? 'HTTP' : 'HTTP+TCP';
  return tcp > 0 ? 'TCP' : 'UNKNOWN';
}

function readAll(dump: ConfigDump): Listener[] {
  const section = dump.section('listeners');
  if (section === null) throw new ConfigDumpError('listener dump: config dump has no configuration type type.googleapis.com/envoy.admin.v3.ListenersConfigDump');
  const listeners = readListeners(section);
  if (listeners.length === 0) throw new ConfigDumpError('no listeners found');
  return listeners;
}

/** Application protocol lists istiod sets, and the names istioctl gives them. */
const PROTOCOL_DESCRIPTIONS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['App: HTTP TLS', ['http/1.0', 'http/1.1', 'h2c', 'istio-http/1.0', 'istio-http/1.1', 'istio-h2']],
  ['App: Istio HTTP Plain', ['istio', 'istio-http/1.0', 'istio-http/1.1', 'istio-h2']],
  ['App: TCP TLS', ['istio-peer-exchange', 'istio']],
  ['App: HTTP', ['http/1.0', 'http/1.1', 'h2c']],
];

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** istioctl's MATCH column: SNI, transport, application protocols, destination address/port. */
function describeChainMatch(m: FilterChainMatch | null): string {
  if (m === null) return 'ALL';
  const descrs: string[] = [];
  if (m.serverNames.length > 0) descrs.push(`SNI: ${m.serverNames.join(',')}`);
  if (m.transportProtocol !== '') descrs.push(`Trans: ${m.transportProtocol}`);
  if (m.applicationProtocols.length > 0) {
    const known = PROTOCOL_DESCRIPTIONS.find(([, protocols]) => sameList(m.applicationProtocols, protocols));
    descrs.push(known ? known[0] : `App: ${m.applicationProtocols.join(',')}`);
  }
  const portText = m.destinationPort === null ? '' : `:${m.destinationPort}`;
  if (m.prefixRanges.length > 0) descrs.push(`Addr: ${m.prefixRanges.map((r) => `${r.addressPrefix}/${r.prefixLen}`).join(',')}${portText}`);
  else if (portText !== '') descrs.push(`Addr: *${portText}`);
  return descrs.length === 0 ? 'ALL' : descrs.join('; ');
}

/** istioctl's route match text: `prefix*`, `PathPrefix:p`, the exact path, `regex r` (headers not shown). */
export function describeMatch(m: RouteMatch): string {
  const conds: string[] = [];
  if (m.prefix !== '') conds.push(`${m.prefix}*`);
  if (m.pathSeparatedPrefix !== '') conds.push(`PathPrefix:${m.pathSeparatedPrefix}`);
  if (m.path !== '') conds.push(m.path);
  if (m.safeRegex !== null) conds.push(`regex ${m.safeRegex}`);
  return conds.join(' ');
}

/** A cluster name that is itself a description (PassthroughCluster, BlackHoleCluster) is shown bare. */
function clusterText(cluster: string): string {
  return cluster.includes('Cluster') ? cluster : `Cluster: ${cluster}`;
}

/** A route table with one catch-all route to one cluster is shown as that cluster. */
function matchAllCluster(rc: RouteConfiguration): string {
  if (rc.virtualHosts.length !== 1) return '';
  const vh = rc.virtualHosts[0]!;
  if (!sameList(vh.domains, ['*']) || vh.routes.length !== 1) return '';
  const r = vh.routes[0]!;
  if (r.match.prefix !== '/' || r.cluster === null) return '';
  return clusterText(r.cluster);
}

function describeDomains(vh: VirtualHost): string {
  if (vh.domains.length === 1 && vh.domains[0] === '*') return '';
  return vh.domains.join('/');
}

function describeRouteConfig(rc: RouteConfiguration): string {
  const all = matchAllCluster(rc);
  if (all !== '') return all;
  const vhosts = rc.virtualHosts.map((vh) => {
    const routes = vh.routes.map((r) => describeMatch(r.match)).join(', ');
    const domains = describeDomains(vh);
    return domains === '' ? routes : `${domains} ${routes}`;
  });
  return `Inline Route: ${vhosts.join('; ')}`;
}

/** istioctl's DESTINATION column: the HTTP route (inline or RDS name) or the TCP cluster of a chain. */
function describeDestination(filters: readonly NetworkFilter[]): string {
  for (const f of filters) {
    if (f.name === HTTP_CONNECTION_MANAGER) {
      if (f.routeConfig !== null) return describeRouteConfig(f.routeConfig);
      if (f.rdsRouteConfigName !== '') return `Route: ${f.rdsRouteConfigName}`;
      return 'HTTP';
    }
    if (f.name === TCP_PROXY && !f.typedConfigText.includes(BLACK_HOLE_CLUSTER)) return clusterText(f.tcpCluster);
  }
  return 'Non-HTTP/Non-TCP';
}

/** `istioctl proxy-config listeners` (and the LISTENER part of `all`, with a NAME column). */
export function listenerSummary(dump: ConfigDump, filter: ListenerFilter, withNames: boolean): string {
  const listeners = readAll(dump).filter((l) => matches(filter, l));
  // By port, then address, then type.
  goSortSlice(listeners, (a, b) => {
    if (port(a) !== port(b)) return port(a) < port(b);
    if (address(a) !== address(b)) return address(a) < address(b);
    return listenerType(a) < listenerType(b);
  });
  let text = `${withNames ? 'NAME\t' : ''}ADDRESSES\tPORT${filter.verbose ? '\tMATCH\tDESTINATION' : '\tTYPE'}\n`;
  for (const l of listeners) {
    const lead = `${withNames ? `listener/${l.name}\t` : ''}${[address(l), ...l.additionalAddresses].join(',')}\t${port(l)}`;
    if (!filter.verbose) {
      text += `${lead}\t${listenerType(l)}\n`;
      continue;
    }
    const chains = l.filterChains.map((c) => ({ match: describeChainMatch(c.match), destination: describeDestination(c.filters) }));
    goSortSlice(chains, (a, b) => a.destination > b.destination);
    for (const c of chains) text += `${lead}\t${c.match}\t${c.destination}\n`;
  }
  return tabWrite(text, { minWidth: 0, padding: 1 });
}

/** The listeners `-o json|yaml` prints: filtered, in the dump's order (istioctl does not sort them). */
export function listenerResources(dump: ConfigDump, filter: ListenerFilter): Json[] {
  return readAll(dump)
    .filter((l) => matches(filter, l))
    .map((l) => l.json);
}
