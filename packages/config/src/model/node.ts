/**
 * Who this proxy is: what Istio's agent tells Envoy in its node metadata. Translation is
 * per node, as in istiod: `sourceLabels`, `gateways` and namespace-relative short names are
 * resolved against it at compile time, never per request.
 */
export interface ProxyNode {
  /** `sidecar` beside an app, `gateway` at the edge (Istio calls it a router). */
  readonly kind: 'sidecar' | 'gateway';
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The workload's own labels: they select Gateways, `sourceLabels` and, later, policies. */
  readonly labels: Readonly<Record<string, string>>;
  /** The workload name used in metrics (`source_workload`). */
  readonly workloadName: string;
  /** Kubernetes cluster domain that short hosts expand into (`cluster.local`). */
  readonly clusterDomain: string;
  /** Namespace whose policies apply mesh-wide (`istio-system`). */
  readonly rootNamespace: string;
  /** SPIFFE trust domain (`cluster.local`). */
  readonly trustDomain: string;
  /** Where this proxy runs, `region/zone/subzone` ('' when unknown): the base of locality load balancing. */
  readonly locality: string;
  /** Istio's `HTTP10` node metadata (`ISTIO_META_HTTP10=1`): its HTTP listeners accept HTTP/1.0; absent: false. */
  readonly http10?: boolean;
  /** Envoy's node id (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>`), sent as `x-envoy-peer-metadata-id`; absent: made from the rest. */
  readonly id?: string;
  /** The pod (Istio's `NAME` node metadata); absent: unknown. */
  readonly podName?: string;
  /** Istio's `CLUSTER_ID` node metadata (`source_cluster`/`destination_cluster`); absent: `Kubernetes`, Istio's default. */
  readonly clusterId?: string;
  /** Istio's `MESH_ID` node metadata; absent: none. */
  readonly meshId?: string;
  /** Envoy's node `cluster` (`--service-cluster`): the local service cluster; absent: Istio's default, see `serviceClusterOf`. */
  readonly serviceCluster?: string;
}

/**
 * The node's local service cluster (Envoy's `--service-cluster`, the rate limit action
 * `source_cluster`, a span's `service.name`): `serviceCluster` when set, else what istio-agent's
 * bootstrap writes by default (APP_LABEL_AND_NAMESPACE): `<app>.<namespace>` (label `app`, else
 * `app.kubernetes.io/name`), else `<workload>.<namespace>`.
 */
export function serviceClusterOf(node: ProxyNode): string {
  if (node.serviceCluster !== undefined && node.serviceCluster !== '' && node.serviceCluster !== 'istio-proxy') return node.serviceCluster;
  const app = node.labels['app'] || node.labels['app.kubernetes.io/name'] || node.workloadName || 'istio-proxy';
  return `${app}.${node.namespace}`;
}

/** Ports and addresses the runtime listens on, chosen by flags; not part of any resource. */
export interface ListenerPorts {
  /** Address for data-plane listeners (`0.0.0.0` by default). */
  readonly bindAddress: string;
  readonly outboundPort: number;
  readonly inboundPort: number;
  /** Local application port that the inbound listener forwards to; null: no inbound listener. */
  readonly appPort: number | null;
  /** Address of the local application (`127.0.0.1`). */
  readonly appAddress: string;
}
