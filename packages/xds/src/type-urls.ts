/**
 * The resource types Remora asks an ADS server for, by their xDS type URLs, with what the
 * protocol says about each: whether a state-of-the-world response carries the whole set
 * (Listener and Cluster do: a resource left out is removed), and the order Envoy sends
 * subscriptions in over one aggregated stream (clusters before their endpoints, listeners
 * before their routes), so that a server sees the requests Envoy would send.
 */
export const TypeUrl = {
  Listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  RouteConfiguration: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  Cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  ClusterLoadAssignment: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  Secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
} as const;
export type TypeUrl = (typeof TypeUrl)[keyof typeof TypeUrl];

/** Envoy's ADS order: CDS, EDS, LDS, RDS, then SDS. */
export const ADS_ORDER: readonly TypeUrl[] = [
  TypeUrl.Cluster,
  TypeUrl.ClusterLoadAssignment,
  TypeUrl.Listener,
  TypeUrl.RouteConfiguration,
  TypeUrl.Secret,
];

/** Whether a state-of-the-world response of this type is the complete set (LDS, CDS). */
export function isFullStateType(typeUrl: string): boolean {
  return typeUrl === TypeUrl.Listener || typeUrl === TypeUrl.Cluster;
}

/** `Cluster` for Envoy's cluster type URL: the short name error messages use. */
export function shortTypeName(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('.') + 1);
}

/** Position in {@link ADS_ORDER}; types outside it go last, in the order they were subscribed. */
export function adsRank(typeUrl: string): number {
  const i = ADS_ORDER.indexOf(typeUrl as TypeUrl);
  return i < 0 ? ADS_ORDER.length : i;
}
