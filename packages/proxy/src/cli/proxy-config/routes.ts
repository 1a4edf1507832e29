import { ConfigDumpError, readRouteConfigurations, type ConfigDump, type Json, type RouteConfiguration } from './config-dump.ts';
import { describeManagement } from './clusters.ts';
import { goSortSlice } from './go-sort.ts';
import { describeMatch } from './listeners.ts';
import { tabWrite } from './tab-writer.ts';

/** istioctl's route filter: the route configuration's name. */
export interface RouteFilter {
  readonly name: string;
  /** One row per route (virtual host, domains, match, VirtualService) instead of one per table. */
  readonly verbose: boolean;
}

/** The cluster istiod sends traffic for unknown destinations to; istioctl leaves such routes out. */
const PASSTHROUGH_CLUSTER = 'PassthroughCluster';

function sortedRoutes(dump: ConfigDump): RouteConfiguration[] {
  const routes = readRouteConfigurations(dump.requireSection('routes'));
  if (routes.length === 0) throw new ConfigDumpError('no routes found');
  // istioctl orders numeric names (ports) numerically; any other name compares false both ways,
  // so where those land is up to Go's sort, which goSortSlice follows step for step.
  goSortSlice(routes, (a, b) => {
    const i = numericName(a.name);
    const j = numericName(b.name);
    return i !== null && j !== null && i < j;
  });
  return routes;
}

/** Go's `strconv.Atoi` on a route name; null where it fails. */
function numericName(name: string): number | null {
  return /^[+-]?\d+$/.test(name) ? Number(name) : null;
}

/** istioctl's DOMAINS column: the one domain, else the shortest names without ports, at most two and a count. */
export function describeRouteDomains(domains: readonly string[]): string {
  if (domains.length === 0) return '';
  if (domains.length === 1) return domains[0]!;
  const withoutPort = domains.filter((d) => !d.includes(':') || ((d.match(/:/g)?.length ?? 0) > 2 && d.endsWith(']')));
  const shown = unexpandDomains(withoutPort);
  const maximum = 2;
  if (shown.length > maximum) return `${shown.slice(0, maximum).join(', ')} + ${shown.length - maximum} more...`;
  return shown.join(', ');
}

/** Drops `x.svc.cluster.local` and `x.svc` when `x` is also listed, keeping the order. */
function unexpandDomains(domains: readonly string[]): string[] {
  const unique = new Set(domains);
  const drop = new Set<string>();
  for (const h of domains) {
    for (const suffix of ['.svc.cluster.local', '.svc']) {
      if (h.endsWith(suffix) && unique.has(h.slice(0, -suffix.length))) drop.add(h);
    }
  }
  return domains.filter((h) => !drop.has(h));
}

/** `istioctl proxy-config routes` (and the ROUTE part of `all`, names prefixed with `route/`). */
export function routeSummary(dump: ConfigDump, filter: RouteFilter, withNames: boolean): string {
  let text = filter.verbose ? 'NAME\tVHOST NAME\tDOMAINS\tMATCH\tVIRTUAL SERVICE\n' : 'NAME\tVIRTUAL HOSTS\n';
  for (const rc of sortedRoutes(dump)) {
    if (filter.name !== '' && filter.name !== rc.name) continue;
    const name = withNames ? `route/${rc.name}` : rc.name;
    if (!filter.verbose) {
      text += `${name}\t${rc.virtualHosts.length}\n`;
      continue;
    }
    for (const vh of rc.virtualHosts) {
      const domains = describeRouteDomains(vh.domains);
      for (const r of vh.routes) {
        if (r.cluster === PASSTHROUGH_CLUSTER) continue;
        text += `${name}\t${vh.name}\t${domains}\t${describeMatch(r.match)}\t${describeManagement(r.istioConfig)}\n`;
      }
      if (vh.routes.length === 0) text += `${name}\t${vh.name}\t${domains}\t/*\t404\n`;
    }
  }
  return tabWrite(text, { minWidth: 0, padding: 5 });
}

/** The route configurations `-o json|yaml` prints: filtered, in the table's order. */
export function routeResources(dump: ConfigDump, filter: RouteFilter): Json[] {
  return sortedRoutes(dump)
    .filter((rc) => filter.name === '' || filter.name === rc.name)
    .map((rc) => rc.json);
}
