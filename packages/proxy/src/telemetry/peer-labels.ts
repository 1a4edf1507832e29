import type { Cluster, Endpoint, ProxyNode, TrafficDirection } from '@remora/config';
import type { PeerLabels } from './istio-metrics.ts';

const UNKNOWN = 'unknown';
/** Istio's default cluster id when none is configured. */
const CLUSTER_ID = 'Kubernetes';

interface Workload {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
}

function canonicalService(w: Workload): string {
  return w.labels['service.istio.io/canonical-name'] ?? w.labels['app.kubernetes.io/name'] ?? w.labels.app ?? (w.name || UNKNOWN);
}

function canonicalRevision(w: Workload): string {
  return w.labels['service.istio.io/canonical-revision'] ?? w.labels['app.kubernetes.io/version'] ?? w.labels.version ?? 'latest';
}

/**
 * Istio's request labels for one (direction, cluster, endpoint), computed when a cluster is
 * built. Outbound and gateway listeners report as `source` (this proxy is the client);
 * inbound as `destination`. Without mTLS peer metadata, the far side's identity is
 * `unknown`, as Istio reports it.
 */
export function peerLabels(node: ProxyNode, direction: TrafficDirection, cluster: Cluster | null, endpoint: Endpoint | null): PeerLabels {
  const self: Workload = { name: node.workloadName, namespace: node.namespace, labels: node.labels };
  const peer: Workload | null = endpoint
    ? { name: endpoint.workloadName, namespace: endpoint.namespace, labels: endpoint.labels }
    : null;
  const svc = cluster?.service ?? null;
  const inbound = direction === 'inbound';
  const src: Workload | null = inbound ? null : self;
  const dst: Workload | null = inbound ? self : peer;
  return {
    reporter: inbound ? 'destination' : 'source',
    source_workload: src?.name || UNKNOWN,
    source_canonical_service: src ? canonicalService(src) : UNKNOWN,
    source_canonical_revision: src ? canonicalRevision(src) : 'latest',
    source_workload_namespace: src?.namespace || UNKNOWN,
    source_principal: UNKNOWN,
    source_app: src?.labels.app ?? UNKNOWN,
    source_version: src?.labels.version ?? UNKNOWN,
    source_cluster: src ? CLUSTER_ID : UNKNOWN,
    destination_workload: dst?.name || UNKNOWN,
    destination_workload_namespace: dst?.namespace || UNKNOWN,
    destination_principal: UNKNOWN,
    destination_app: dst?.labels.app ?? UNKNOWN,
    destination_version: dst?.labels.version ?? UNKNOWN,
    destination_service: svc?.host ?? UNKNOWN,
    destination_canonical_service: dst ? canonicalService(dst) : UNKNOWN,
    destination_canonical_revision: dst ? canonicalRevision(dst) : 'latest',
    destination_service_name: svc?.name ?? UNKNOWN,
    destination_service_namespace: svc?.namespace || UNKNOWN,
    destination_cluster: dst ? CLUSTER_ID : UNKNOWN,
    request_protocol: 'http',
    connection_security_policy: inbound ? 'none' : UNKNOWN,
  };
}
