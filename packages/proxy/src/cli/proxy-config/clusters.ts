import { ConfigDumpError, readClusters, type Cluster, type ConfigDump, type Json } from './config-dump.ts';
import { goSortSlice } from './go-sort.ts';
import { tabWrite } from './tab-writer.ts';

/** istioctl's cluster filters: substrings of the cluster name, and `|port|`. */
export interface ClusterFilter {
  readonly fqdn: string;
  readonly port: number;
  readonly subset: string;
  readonly direction: string;
}

export function clusterMatches(f: ClusterFilter, name: string): boolean {
  if (f.fqdn !== '' && !name.includes(f.fqdn)) return false;
  if (f.direction !== '' && !name.includes(f.direction)) return false;
  if (f.subset !== '' && !name.includes(f.subset)) return false;
  if (f.port !== 0 && !name.includes(`|${f.port}|`)) return false;
  return true;
}

/** Istio's subset key `direction|port|subset|host` (or the DNS SRV form `outbound_.port_.subset_.host`). */
export interface SubsetKey {
  readonly direction: string;
  readonly port: number;
  readonly subset: string;
  readonly host: string;
}

/** Go's `strconv.Atoi`, 0 on error. */
function atoi(s: string): number {
  return /^[+-]?\d+$/.test(s) ? Number(s) : 0;
}

/** Istio's `model.ParseSubsetKey`: the parts read so far when the name does not have all four. */
export function parseSubsetKey(name: string): SubsetKey {
  const sep = name.startsWith('outbound_') || name.startsWith('inbound_') ? '_.' : '|';
  const out = { direction: '', port: 0, subset: '', host: '' };
  const cut = (s: string): [string, string] | null => {
    const i = s.indexOf(sep);
    return i < 0 ? null : [s.slice(0, i), s.slice(i + sep.length)];
  };
  let rest = name;
  const dir = cut(rest);
  if (dir === null) return out;
  [out.direction, rest] = dir;
  const port = cut(rest);
  if (port === null) return out;
  out.port = atoi(port[0]);
  rest = port[1];
  const subset = cut(rest);
  if (subset === null) return out;
  [out.subset, rest] = subset;
  if (!rest.includes(sep)) out.host = rest;
  return out;
}

/** Whether istioctl reads the name as a subset key (more than three `|`-separated parts). */
export function isSubsetKey(name: string): boolean {
  return name.split('|').length > 3;
}

/** istioctl's `safelyParseSubsetKey`: a name that is not a subset key sorts as a host of its own. */
function sortKey(name: string): SubsetKey {
  return isSubsetKey(name) ? parseSubsetKey(name) : { direction: '', port: 0, subset: '', host: name };
}

/** istioctl's cluster and endpoint order: host, then subset, port, direction. */
export function subsetKeyLess(a: string, b: string): boolean {
  const i = sortKey(a);
  const j = sortKey(b);
  if (i.host !== j.host) return i.host < j.host;
  if (i.subset !== j.subset) return i.subset < j.subset;
  if (i.port !== j.port) return i.port < j.port;
  return i.direction < j.direction;
}

function sortedClusters(dump: ConfigDump): Cluster[] {
  const clusters = readClusters(dump.requireSection('clusters'));
  if (clusters.length === 0) throw new ConfigDumpError('no clusters found');
  goSortSlice(clusters, (a, b) => subsetKeyLess(a.name, b.name));
  return clusters;
}

/** The Istio resource behind a cluster or route, as `name.namespace` (istioctl's DESTINATION RULE / VIRTUAL SERVICE column). */
export function describeManagement(configPath: string | null): string {
  if (configPath === null) return '';
  if (!configPath.startsWith('/apis/networking.istio.io/')) return '<unknown>';
  const pieces = configPath.split('/');
  return pieces.length === 8 ? `${pieces[7]}.${pieces[5]}` : '';
}

/** `istioctl proxy-config clusters` (and the CLUSTER part of `all`, with a NAME column). */
export function clusterSummary(dump: ConfigDump, filter: ClusterFilter, withNames: boolean): string {
  const clusters = sortedClusters(dump);
  let text = withNames ? 'NAME\tSERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE\n' : 'SERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE\n';
  for (const c of clusters) {
    if (!clusterMatches(filter, c.name)) continue;
    const dr = describeManagement(c.istioConfig);
    if (isSubsetKey(c.name)) {
      const k = parseSubsetKey(c.name);
      const cells = [k.host, String(k.port), k.subset === '' ? '-' : k.subset, k.direction, c.type, dr];
      text += `${(withNames ? [`cluster/${c.name}`, ...cells] : cells).join('\t')}\n`;
    } else if (withNames && c.name !== '') {
      text += `cluster/${c.name}\tcluster/${c.name}\t-\t-\t-\t${c.type}\t${dr}\n`;
    } else {
      text += `${c.name}\t-\t-\t-\t${c.type}\t${dr}\n`;
    }
  }
  return tabWrite(text, { minWidth: 0, padding: 5 });
}

/** The clusters `-o json|yaml` prints: filtered, in the table's order. */
export function clusterResources(dump: ConfigDump, filter: ClusterFilter): Json[] {
  return sortedClusters(dump)
    .filter((c) => clusterMatches(filter, c.name))
    .map((c) => c.json);
}
