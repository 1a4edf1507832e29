/**
 * Envoy's resources → the runtime's compile input (`ProxyConfig`): the one door every
 * source goes through. Istio files arrive here translated and EnvoyFilter-patched; an xDS
 * stream delivers the same resources. A resource with an error is left out and reported
 * (under xDS: a NACK naming it); the caller decides whether the rest can serve.
 *
 * Cheap to load: type-only imports of the generated messages, no descriptors.
 */
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { ProxyNode } from '../model/node.ts';
import type { RouteConfiguration } from '../model/route.ts';
import type { Cluster } from '../model/cluster.ts';
import type { EnvoyResources, NameTableJson } from './from-model.ts';
import type { NameTableEntry } from '../model/proxy-config.ts';
import type { ClusterLoadAssignmentJson } from './gen/envoy/config/endpoint/v3/endpoint_pb.ts';
import type { ListenerJson } from './gen/envoy/config/listener/v3/listener_pb.ts';
import { HCM_TYPE } from './filter-types.ts';
import { ImportContext, type ImportIssue } from './import-context.ts';
import { clusterFromEnvoy, edsServiceName } from './to-model-clusters.ts';

export { edsServiceName };
import { listenersFromEnvoy } from './to-model-listeners.ts';
import { hashKeysFromRoutes, routeConfigFromEnvoy } from './to-model-routes.ts';

export interface ImportResult {
  /** Everything that imported; resources with errors are left out. */
  readonly config: ProxyConfig;
  readonly issues: readonly ImportIssue[];
}

/**
 * Reads one proxy's Envoy resources. `version` identifies the set (the content hash of the
 * files, or the xDS versions); the JSON text of the resources is kept on the config so
 * `/config_dump` prints what was received, not what Remora made of it.
 */
export function proxyConfigFromEnvoy(resources: EnvoyResources, node: ProxyNode, version: string, keepJson = true): ImportResult {
  const ctx = new ImportContext(resources.secrets);
  const { listeners, inlineRouteConfigs } = listenersFromEnvoy(resources.listeners, node, ctx);
  const routeJson = [...resources.routeConfigs, ...inlineRouteConfigs];
  const routeConfigs: RouteConfiguration[] = [];
  for (const rc of routeJson) {
    const imported = routeConfigFromEnvoy(rc, ctx);
    if (imported !== null) routeConfigs.push(imported);
  }
  const hashKeys = hashKeysFromRoutes(routeJson);
  const assignments = new Map<string, ClusterLoadAssignmentJson>();
  for (const e of resources.endpoints) assignments.set(e.assignment.clusterName ?? '', e.assignment);
  const clusters: Cluster[] = [];
  for (const c of resources.clusters) {
    const name = c.name ?? '';
    const service = edsServiceName(c);
    const cla = service === null ? undefined : assignments.get(service);
    const imported = clusterFromEnvoy(c, cla, ctx, hashKeys.get(name));
    if (imported !== null) clusters.push(imported);
  }
  const nameTable = resources.nameTable === undefined ? undefined : nameTableFromNds(resources.nameTable, ctx);
  const config: ProxyConfig = {
    version,
    node,
    listeners,
    routeConfigs,
    clusters,
    ...(nameTable === undefined ? {} : { nameTable }),
    ...(keepJson ? { envoyJson: JSON.stringify(resources) } : {}),
  };
  return { config, issues: ctx.issues };
}


/** The route configurations a listener's connection managers ask for over RDS. */
export function rdsNamesOf(l: ListenerJson): string[] {
  const out: string[] = [];
  for (const chain of [...(l.filterChains ?? []), ...(l.defaultFilterChain ? [l.defaultFilterChain] : [])]) {
    for (const f of chain.filters ?? []) {
      const tc = f.typedConfig as { '@type'?: string; rds?: { routeConfigName?: string } } | undefined;
      if (tc?.['@type'] === HCM_TYPE && tc.rds?.routeConfigName) out.push(tc.rds.routeConfigName);
    }
  }
  return out;
}

/**
 * istiod's NDS name table (`istio.networking.nds.v1.NameTable`, proto3 JSON) as the model's
 * entries, in the table's order. `altHosts` (names istiod answers besides the short ones) are
 * not served, said as a warning.
 */
export function nameTableFromNds(json: NameTableJson, ctx: ImportContext): NameTableEntry[] {
  const out: NameTableEntry[] = [];
  for (const [host, info] of Object.entries(json.table ?? {})) {
    const addresses = [...(info.ips ?? [])];
    if ((info.altHosts ?? []).length > 0) ctx.warn('NameTable', host, 'altHosts', 'ignored: only the host, its short name and <name>.<namespace> are answered');
    out.push({ host, addresses, shortName: info.shortname ?? '', namespace: info.namespace ?? '' });
  }
  return out;
}
