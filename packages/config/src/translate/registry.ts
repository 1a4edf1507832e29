import type { Endpoint } from '../model/cluster.ts';
import type { Resource } from '../resources/resource.ts';
import type { IstioServiceEntry, IstioWorkloadEntry } from '../resources/istio-networking.ts';
import { resolveHost, serviceNameAndNamespace } from './host.ts';
import type { TranslateContext } from './context.ts';

export type ServiceProtocol = 'HTTP' | 'HTTP2' | 'GRPC' | 'GRPC-WEB' | 'HTTPS' | 'TLS' | 'TCP' | 'MONGO' | 'REDIS' | 'MYSQL' | 'UDP' | 'UNKNOWN';

export interface ServicePort {
  readonly number: number;
  readonly name: string;
  readonly protocol: ServiceProtocol;
  readonly targetPort: number | null;
}

/** An endpoint before port selection: one address serving several named ports. */
export interface RegistryEndpoint {
  readonly address: string;
  readonly ports: Readonly<Record<string, number>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly locality: string;
  readonly weight: number;
  readonly serviceAccount: string;
  readonly workloadName: string;
  readonly namespace: string;
}

/** A service in the mesh registry: one host of a ServiceEntry. */
export interface MeshService {
  readonly host: string;
  readonly name: string;
  readonly namespace: string;
  readonly ports: readonly ServicePort[];
  readonly addresses: readonly string[];
  readonly resolution: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
  readonly location: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  readonly endpoints: readonly RegistryEndpoint[];
  /**
   * The identities its workloads present, as Istio collects a service's service accounts: the
   * entry's `subjectAltNames`, then `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` of every endpoint
   * (inline or WorkloadEntry) that names a `serviceAccount`. Sorted, no duplicates.
   */
  readonly serviceAccounts: readonly string[];
  readonly source: Resource;
}

/**
 * Istio's service registry without Kubernetes: every ServiceEntry host is a service, with
 * the entry's inline endpoints plus the WorkloadEntries its `workloadSelector` picks.
 */
export class ServiceRegistry {
  readonly #byHost = new Map<string, MeshService>();

  constructor(ctx: TranslateContext) {
    const workloadEntries = ctx.resourcesOf('WorkloadEntry');
    for (const se of ctx.resourcesOf('ServiceEntry')) {
      if (!ctx.isVisible(se)) continue;
      const spec = se.spec as IstioServiceEntry;
      const ns = se.metadata.namespace;
      const ports: ServicePort[] = (spec.ports ?? []).map((p) => ({
        number: p.number ?? 0,
        name: p.name ?? '',
        protocol: normalizeProtocol(p.protocol),
        targetPort: p.targetPort ?? null,
      }));
      const endpoints: RegistryEndpoint[] = (spec.endpoints ?? []).map((we) => toEndpoint(we, ns, ''));
      // Only a serviceAccount written down counts (Istio leaves the others without one).
      const accounts = new Set<string>(spec.subjectAltNames ?? []);
      for (const we of spec.endpoints ?? []) if (we.serviceAccount) accounts.add(spiffeUri(ctx.node.trustDomain, ns, we.serviceAccount));
      const selector = spec.workloadSelector?.labels;
      if (selector) {
        for (const wle of workloadEntries) {
          if (wle.metadata.namespace !== ns) continue;
          const we = wle.spec as IstioWorkloadEntry;
          if (!labelsMatch(selector, we.labels ?? {})) continue;
          endpoints.push(toEndpoint(we, ns, wle.metadata.name));
          if (we.serviceAccount) accounts.add(spiffeUri(ctx.node.trustDomain, ns, we.serviceAccount));
        }
      }
      const serviceAccounts = [...accounts].sort();
      const resolution = spec.resolution ?? 'NONE';
      for (const rawHost of spec.hosts ?? []) {
        const host = resolveHost(rawHost, ns, ctx.node.clusterDomain);
        if (this.#byHost.has(host)) {
          const first = this.#byHost.get(host)!;
          ctx.warn(se, ['spec', 'hosts'], `host ${host} is already defined by ServiceEntry ${first.source.metadata.namespace}/${first.source.metadata.name}; the older definition is used`);
          continue;
        }
        const named = serviceNameAndNamespace(host, ctx.node.clusterDomain);
        // DNS entries without endpoints resolve the host itself, as Istio does; so do NONE
        // (passthrough) entries, since the original destination is not known here.
        const eps =
          endpoints.length === 0 && resolution !== 'STATIC' && !host.startsWith('*')
            ? [toEndpoint({ address: host }, ns, '')]
            : endpoints;
        this.#byHost.set(host, {
          host,
          name: named.namespace === '' ? host : named.name,
          namespace: ns,
          ports,
          addresses: spec.addresses ?? [],
          resolution,
          location: spec.location ?? 'MESH_EXTERNAL',
          endpoints: eps,
          serviceAccounts,
          source: se,
        });
      }
    }
  }

  get(host: string): MeshService | undefined {
    return this.#byHost.get(host);
  }

  /** Every service, in load order. */
  services(): IterableIterator<MeshService> {
    return this.#byHost.values();
  }

  /** Services whose host is covered by `pattern` (exact name, `*.suffix` or `*`). */
  *matching(pattern: string): Generator<MeshService> {
    if (!pattern.startsWith('*')) {
      const s = this.#byHost.get(pattern);
      if (s) yield s;
      return;
    }
    const suffix = pattern.slice(1);
    for (const s of this.#byHost.values()) if (pattern === '*' || s.host.endsWith(suffix)) yield s;
  }
}

/** Istio's SPIFFE identity of a service account: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`. */
export function spiffeUri(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** The port a request to `port` of `service` reaches on `ep`: named port, else targetPort, else the same number. */
export function endpointPort(ep: RegistryEndpoint, port: ServicePort): number {
  return ep.ports[port.name] ?? port.targetPort ?? port.number;
}

/** Model endpoints of a service port, optionally narrowed to a subset's labels. */
export function endpointsFor(service: MeshService, port: ServicePort, subsetLabels: Readonly<Record<string, string>> | null): Endpoint[] {
  const out: Endpoint[] = [];
  for (const ep of service.endpoints) {
    if (subsetLabels !== null && !labelsMatch(subsetLabels, ep.labels)) continue;
    out.push({
      address: ep.address,
      port: endpointPort(ep, port),
      labels: ep.labels,
      weight: ep.weight,
      locality: ep.locality,
      workloadName: ep.workloadName,
      namespace: ep.namespace,
      serviceAccount: ep.serviceAccount,
    });
  }
  return out;
}

/** Every key of `selector` is in `labels` with the same value (an empty selector matches all). */
export function labelsMatch(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

function toEndpoint(we: IstioWorkloadEntry, namespace: string, workloadName: string): RegistryEndpoint {
  const labels = we.labels ?? {};
  return {
    address: we.address ?? '',
    ports: we.ports ?? {},
    labels,
    locality: we.locality ?? '',
    weight: we.weight && we.weight > 0 ? we.weight : 1,
    serviceAccount: we.serviceAccount ?? 'default',
    // Istio names a workload after its owner; without one, the app label is the best guess.
    workloadName: workloadName || (labels.app ? (labels.version ? `${labels.app}-${labels.version}` : labels.app) : ''),
    namespace,
  };
}

/** Istio protocol names, case-insensitive, with the `name` prefix convention left to callers. */
export function normalizeProtocol(p: string | undefined): ServiceProtocol {
  const up = (p ?? '').toUpperCase();
  switch (up) {
    case 'HTTP':
    case 'HTTP2':
    case 'GRPC':
    case 'GRPC-WEB':
    case 'HTTPS':
    case 'TLS':
    case 'TCP':
    case 'MONGO':
    case 'REDIS':
    case 'MYSQL':
    case 'UDP':
      return up;
    default:
      return 'UNKNOWN';
  }
}

/**
 * Istio's protocol selection for a port: the declared protocol, else the port name's prefix
 * (`http-web`, `grpc`, `http2-foo`), else unknown (sniffed by Istio; treated as HTTP/1 here).
 */
export function portProtocol(port: ServicePort): ServiceProtocol {
  if (port.protocol !== 'UNKNOWN') return port.protocol;
  const name = port.name.toLowerCase();
  const prefix = name.split('-')[0] ?? '';
  const byName = normalizeProtocol(prefix);
  return byName;
}

/** Protocols istiod builds an HTTP listener for, without sniffing (HTTP, HTTP2, GRPC, GRPC-WEB). */
export function isHttpFamily(p: ServiceProtocol): boolean {
  return p === 'HTTP' || p === 'HTTP2' || p === 'GRPC' || p === 'GRPC-WEB';
}

/** Ports that carry HTTP and so get HTTP routes (Istio: HTTP, HTTP2, GRPC, GRPC-WEB; unknown is sniffed). */
export function isHttpProtocol(p: ServiceProtocol): boolean {
  return p === 'HTTP' || p === 'HTTP2' || p === 'GRPC' || p === 'GRPC-WEB' || p === 'UNKNOWN';
}
