import { isIP } from 'node:net';
import type { NameTableEntry } from '../model/proxy-config.ts';
import type { TranslateContext } from './context.ts';
import { serviceNameAndNamespace } from './host.ts';
import type { ServiceRegistry } from './registry.ts';
import { sidecarScope } from './sidecar-scope.ts';

/**
 * istiod's NDS name table for this proxy (pkg/dns/server/name_table.go, BuildNameTable): the
 * hosts the DNS proxy answers itself, each with the addresses it answers with.
 *
 * - Every service this proxy sees (the Sidecar's egress hosts narrow a sidecar's view, as
 *   istiod walks the sidecar scope's services); wildcard hosts are left out.
 * - A service's addresses are its VIPs (`addresses`; CIDRs are no answer and are dropped).
 * - Without a VIP, a `resolution: NONE` service with ports (istiod's Passthrough, a headless
 *   service) answers with its endpoints' IPs, each once. Any other resolution without a VIP
 *   (STATIC, DNS) has no entry: istiod cannot say which address the name stands for, so the
 *   query goes to the pod's resolvers.
 * - Kubernetes-style hosts (`<name>.<ns>.svc.<clusterDomain>`) carry their short name and
 *   namespace, so the DNS proxy answers `name`, `name.ns` and `name.ns.svc` too.
 */
export function nameTable(ctx: TranslateContext, registry: ServiceRegistry): NameTableEntry[] {
  const { node } = ctx;
  const scope = node.kind === 'sidecar' ? sidecarScope(ctx) : null;
  const out: NameTableEntry[] = [];
  for (const svc of registry.services()) {
    if (svc.host.startsWith('*')) continue;
    if (scope !== null && !scope.allows(svc.namespace, svc.host)) continue;
    let addresses = svc.addresses.filter((a) => isIP(a) !== 0);
    if (addresses.length === 0 && svc.resolution === 'NONE' && svc.ports.length > 0) {
      const seen = new Set<string>();
      for (const ep of svc.endpoints) if (isIP(ep.address) !== 0) seen.add(ep.address);
      addresses = [...seen];
    }
    if (addresses.length === 0) continue;
    const named = serviceNameAndNamespace(svc.host, node.clusterDomain);
    out.push({ host: svc.host, addresses, shortName: named.namespace === '' ? '' : named.name, namespace: named.namespace });
  }
  return out;
}
