import {
  enumName,
  field,
  list,
  obj,
  readAddress,
  readLoadAssignments,
  str,
  type Address,
  type ClusterLoadAssignment,
  type ConfigDump,
  type Json,
  type LbEndpoint,
} from './config-dump.ts';
import { subsetKeyLess } from './clusters.ts';
import { goSortSlice } from './go-sort.ts';
import { tabWrite } from './tab-writer.ts';

/** istioctl's endpoint filters; each is off when empty (or 0). */
export interface EndpointFilter {
  readonly address: string;
  readonly port: number;
  readonly cluster: string;
  readonly status: string;
}

const eqFold = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** An address as the EDS table shows it: `ip:port`, a pipe path, or `envoy://listener/id`. */
function edsAddress(a: Address | null): string {
  if (a === null) return 'unknown';
  if (a.isSocket) return `${a.socketAddress}:${a.portValue}`;
  if (a.pipePath !== null) return a.pipePath;
  if (a.internal !== null) return `envoy://${a.internal[0]}/${a.internal[1]}`;
  return 'unknown';
}

function edsMatches(f: EndpointFilter, ep: LbEndpoint, cluster: string): boolean {
  if (f.address !== '' && !ep.addresses.some((a) => eqFold(edsAddress(a), f.address))) return false;
  if (f.port !== 0 && (ep.addresses[0]?.portValue ?? 0) !== f.port) return false;
  if (f.cluster !== '' && !eqFold(cluster, f.cluster)) return false;
  if (f.status !== '' && !eqFold(ep.healthStatus, f.status)) return false;
  return true;
}

interface FilteredAssignment {
  readonly cla: ClusterLoadAssignment;
  /** Per locality, the endpoints that pass the filter. */
  readonly kept: ReadonlyArray<readonly LbEndpoint[]>;
}

/** Load assignments with at least one endpoint left by the filter, in istioctl's cluster order. */
function filteredAssignments(dump: ConfigDump, filter: EndpointFilter): FilteredAssignment[] {
  const section = dump.section('endpoints');
  if (section === null) return [];
  const out: FilteredAssignment[] = [];
  for (const cla of readLoadAssignments(section)) {
    const kept = cla.endpoints.map((l) => l.lbEndpoints.filter((ep) => edsMatches(filter, ep, cla.clusterName)));
    if (kept.some((k) => k.length > 0)) out.push({ cla, kept });
  }
  goSortSlice(out, (a, b) => subsetKeyLess(a.cla.clusterName, b.cla.clusterName));
  return out;
}

/** The EDS table (`istioctl proxy-config eds`, and the ENDPOINT part of `all` with `endpoint/` names). */
export function endpointSummary(dump: ConfigDump, filter: EndpointFilter, withNames: boolean): string {
  let text = 'NAME\tSTATUS\tLOCALITY\tCLUSTER\n';
  for (const { cla, kept } of filteredAssignments(dump, filter)) {
    cla.endpoints.forEach((l, i) => {
      for (const ep of kept[i]!) {
        const addr = ep.addresses.map(edsAddress).join(',');
        text += `${withNames ? `endpoint/${addr}` : addr}\t${ep.healthStatus}\t${l.locality}\t${cla.clusterName}\n`;
      }
    });
  }
  return tabWrite(text, { minWidth: 0, padding: 5 });
}

/** The load assignments `-o json|yaml` prints: each with only the endpoints the filter kept. */
export function endpointResources(dump: ConfigDump, filter: EndpointFilter): Json[] {
  return filteredAssignments(dump, filter).map(({ cla, kept }) => ({
    ...cla.json,
    endpoints: cla.endpoints.map((l, i) => ({ ...l.json, [lbEndpointsKey(l.json)]: kept[i]!.map((ep) => ep.json) })),
  }));
}

/** The name the dump itself uses for `lb_endpoints`, so a filtered copy replaces it rather than adding a second. */
function lbEndpointsKey(locality: Json): string {
  return locality.lb_endpoints === undefined && locality.lbEndpoints !== undefined ? 'lbEndpoints' : 'lb_endpoints';
}

// ---- Envoy's `/clusters?format=json` (what `istioctl proxy-config endpoints` reads) ----

/** Whether a JSON document is Envoy's `/clusters?format=json` output rather than a config dump. */
export function isClustersJson(json: unknown): json is Json {
  return json !== null && typeof json === 'object' && !Array.isArray(json) && field(json as Json, 'cluster_statuses') !== undefined && !('configs' in json);
}

const HEALTH_STATUSES = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'];

interface HostRow {
  readonly address: string;
  readonly port: number;
  readonly cluster: string;
  readonly status: string;
  readonly failedOutlierCheck: boolean;
}

interface ClusterStatus {
  readonly name: string;
  readonly hosts: readonly HostRow[];
  readonly json: Json;
}

function hostAddress(a: Address | null): string {
  if (a === null) return 'unknown';
  if (a.isSocket) return a.socketAddress;
  if (a.pipePath !== null) return `unix://${a.pipePath}`;
  if (a.internal !== null) return `envoy://${a.internal[0]}/${a.internal[1]}`;
  return 'unknown';
}

function readClusterStatuses(json: Json): ClusterStatus[] {
  return list(field(json, 'cluster_statuses'), 'cluster_statuses').map((c, i) => {
    const path = `cluster_statuses[${i}]`;
    const cs = obj(c, path) ?? {};
    const name = str(cs.name, `${path}.name`);
    const hosts = list(field(cs, 'host_statuses'), `${path}.host_statuses`).map((h, j) => {
      const hp = `${path}.host_statuses[${j}]`;
      const host = obj(h, hp) ?? {};
      const address = readAddress(host.address, `${hp}.address`);
      const health = obj(field(host, 'health_status'), `${hp}.health_status`) ?? {};
      return {
        address: hostAddress(address),
        port: address?.isSocket ? address.portValue : 0,
        cluster: name,
        status: enumName(field(health, 'eds_health_status'), `${hp}.health_status.eds_health_status`, HEALTH_STATUSES),
        failedOutlierCheck: field(health, 'failed_outlier_check') === true,
      };
    });
    return { name, hosts, json: cs };
  });
}

function hostMatches(f: EndpointFilter, h: HostRow): boolean {
  if (f.address !== '' && !eqFold(h.address, f.address)) return false;
  if (f.port !== 0 && h.port !== f.port) return false;
  if (f.cluster !== '' && !eqFold(h.cluster, f.cluster)) return false;
  if (f.status !== '' && !eqFold(h.status, f.status)) return false;
  return true;
}

/** `istioctl proxy-config endpoints` from `/clusters?format=json`: live health and outlier state per host. */
export function hostSummary(json: Json, filter: EndpointFilter): string {
  const rows = readClusterStatuses(json).flatMap((c) => c.hosts.filter((h) => hostMatches(filter, h)));
  goSortSlice(rows, (a, b) => {
    if (a.address !== b.address) return a.address < b.address;
    if (a.port !== b.port) return a.port < b.port;
    return a.cluster < b.cluster;
  });
  let text = 'ENDPOINT\tSTATUS\tOUTLIER CHECK\tCLUSTER\n';
  for (const r of rows) {
    text += `${r.port !== 0 ? `${r.address}:${r.port}` : r.address}\t${r.status}\t${r.failedOutlierCheck ? 'FAILED' : 'OK'}\t${r.cluster}\n`;
  }
  return tabWrite(text, { minWidth: 0, padding: 5 });
}

/** The cluster statuses `-o json|yaml` prints: those with a host the filter keeps, whole. */
export function hostResources(json: Json, filter: EndpointFilter): Json[] {
  return readClusterStatuses(json)
    .filter((c) => c.hosts.some((h) => hostMatches(filter, h)))
    .map((c) => c.json);
}
