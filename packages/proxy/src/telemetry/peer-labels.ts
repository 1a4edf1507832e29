import type { Cluster, Endpoint, ProxyNode, TrafficDirection } from '@remora/config';
import { canonicalRevisionOf, canonicalServiceOf, DEFAULT_CLUSTER_ID, type PeerWorkload } from './peer-metadata.ts';

/** The labels fixed for a request before its outcome is known, in Istio's order. */
export interface PeerLabels {
  readonly reporter: 'source' | 'destination';
  readonly source_workload: string;
  readonly source_canonical_service: string;
  readonly source_canonical_revision: string;
  readonly source_workload_namespace: string;
  readonly source_principal: string;
  readonly source_app: string;
  readonly source_version: string;
  readonly source_cluster: string;
  readonly destination_workload: string;
  readonly destination_workload_namespace: string;
  readonly destination_principal: string;
  readonly destination_app: string;
  readonly destination_version: string;
  readonly destination_service: string;
  readonly destination_canonical_service: string;
  readonly destination_canonical_revision: string;
  readonly destination_service_name: string;
  readonly destination_service_namespace: string;
  readonly destination_cluster: string;
  readonly request_protocol: string;
  readonly connection_security_policy: string;
}

const UNKNOWN = 'unknown';

/**
 * Istio's request labels for one (direction, cluster, endpoint), computed when a cluster is
 * built. Outbound and gateway listeners report as `source` (this proxy is the client);
 * inbound as `destination`. What only a request tells (the peer's metadata and certificate,
 * gRPC or not) is added by `refineLabels`; until then, as Istio without a peer: the far
 * side's workload is `unknown` inbound, and taken from the endpoint's labels outbound
 * (Istio's endpoint metadata fallback).
 */
export function peerLabels(node: ProxyNode, direction: TrafficDirection, cluster: Cluster | null, endpoint: Endpoint | null): PeerLabels {
  const inbound = direction === 'inbound';
  const clusterId = node.clusterId ?? DEFAULT_CLUSTER_ID;
  const selfService = canonicalServiceOf(node.labels, node.workloadName) || UNKNOWN;
  const selfRevision = canonicalRevisionOf(node.labels);
  const svc = cluster?.service ?? null;
  if (inbound) {
    return {
      reporter: 'destination',
      source_workload: UNKNOWN,
      source_canonical_service: UNKNOWN,
      source_canonical_revision: 'latest',
      source_workload_namespace: UNKNOWN,
      source_principal: UNKNOWN,
      source_app: UNKNOWN,
      source_version: UNKNOWN,
      source_cluster: UNKNOWN,
      destination_workload: node.workloadName || UNKNOWN,
      destination_workload_namespace: node.namespace || UNKNOWN,
      destination_principal: UNKNOWN,
      destination_app: node.labels.app ?? UNKNOWN,
      destination_version: node.labels.version ?? UNKNOWN,
      // Istio's inbound reporter does not read the Host header: the cluster's service, else this workload's canonical service.
      destination_service: svc?.host ?? selfService,
      destination_canonical_service: selfService,
      destination_canonical_revision: selfRevision,
      destination_service_name: svc?.name ?? selfService,
      destination_service_namespace: node.namespace || UNKNOWN,
      destination_cluster: clusterId,
      request_protocol: 'http',
      connection_security_policy: 'none',
    };
  }
  const peer = endpoint;
  return {
    reporter: 'source',
    source_workload: node.workloadName || UNKNOWN,
    source_canonical_service: selfService,
    source_canonical_revision: selfRevision,
    source_workload_namespace: node.namespace || UNKNOWN,
    source_principal: UNKNOWN,
    source_app: node.labels.app ?? UNKNOWN,
    source_version: node.labels.version ?? UNKNOWN,
    source_cluster: clusterId,
    destination_workload: peer?.workloadName || UNKNOWN,
    destination_workload_namespace: peer?.namespace || UNKNOWN,
    destination_principal: UNKNOWN,
    destination_app: peer?.labels.app ?? UNKNOWN,
    destination_version: peer?.labels.version ?? UNKNOWN,
    destination_service: svc?.host ?? UNKNOWN,
    destination_canonical_service: peer ? canonicalServiceOf(peer.labels, peer.workloadName) || UNKNOWN : UNKNOWN,
    destination_canonical_revision: peer ? canonicalRevisionOf(peer.labels) : 'latest',
    destination_service_name: svc?.name ?? UNKNOWN,
    destination_service_namespace: svc?.namespace || UNKNOWN,
    destination_cluster: peer ? clusterId : UNKNOWN,
    request_protocol: 'http',
    connection_security_policy: UNKNOWN,
  };
}

/** The namespace in a SPIFFE principal (`<td>/ns/<ns>/sa/<sa>`), as istio/proxy's stats read it; '' if none. */
export function namespaceOfPrincipal(principal: string): string {
  const i = principal.indexOf('/ns/');
  if (i < 0) return '';
  const start = i + 4;
  const end = principal.indexOf('/', start);
  return end < 0 ? principal.slice(start) : principal.slice(start, end);
}

/** What a request adds to its base labels: the peer's own metadata, the certificates on the connection, gRPC. */
export interface PeerFacts {
  /** What the peer said of itself (`x-envoy-peer-metadata`); null: nothing. */
  readonly peer: PeerWorkload | null;
  /** The peer certificate's SPIFFE ID (`spiffe://…`); null without mTLS. */
  readonly peerPrincipal: string | null;
  /** This proxy's own SPIFFE ID on the connection; null without mTLS. */
  readonly localPrincipal: string | null;
  readonly grpc: boolean;
  /** `request_protocol` when it is not http/grpc (`tcp`). */
  readonly protocol?: string;
}

/**
 * istio/proxy's stats filter for one request: the peer fills the far side's workload, app,
 * version, canonical service and revision and cluster; principals come from certificates
 * only; the far side's namespace from its certificate first, then from its metadata.
 */
export function refineLabels(base: PeerLabels, f: PeerFacts): PeerLabels {
  const out: { -readonly [K in keyof PeerLabels]: PeerLabels[K] } = { ...base };
  const p = f.peer;
  const sanNs = f.peerPrincipal !== null ? namespaceOfPrincipal(f.peerPrincipal) : '';
  out.request_protocol = f.protocol ?? (f.grpc ? 'grpc' : 'http');
  if (base.reporter === 'destination') {
    if (p !== null) {
      out.source_workload = p.workloadName || UNKNOWN;
      out.source_canonical_service = p.canonicalService || UNKNOWN;
      out.source_canonical_revision = p.canonicalRevision || 'latest';
      out.source_app = p.app || UNKNOWN;
      out.source_version = p.version || UNKNOWN;
      out.source_cluster = p.cluster || UNKNOWN;
    }
    out.source_workload_namespace = sanNs || p?.namespace || UNKNOWN;
    out.source_principal = f.peerPrincipal ?? UNKNOWN;
    out.destination_principal = f.localPrincipal ?? UNKNOWN;
    out.connection_security_policy = f.peerPrincipal !== null && f.localPrincipal !== null ? 'mutual_tls' : 'none';
    return out;
  }
  if (p !== null) {
    out.destination_workload = p.workloadName || UNKNOWN;
    out.destination_canonical_service = p.canonicalService || UNKNOWN;
    out.destination_canonical_revision = p.canonicalRevision || 'latest';
    out.destination_app = p.app || UNKNOWN;
    out.destination_version = p.version || UNKNOWN;
    out.destination_cluster = p.cluster || UNKNOWN;
  }
  out.destination_workload_namespace = sanNs || p?.namespace || base.destination_workload_namespace;
  out.destination_principal = f.peerPrincipal ?? UNKNOWN;
  out.source_principal = f.peerPrincipal !== null ? (f.localPrincipal ?? UNKNOWN) : UNKNOWN;
  return out;
}
