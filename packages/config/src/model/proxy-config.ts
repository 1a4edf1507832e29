import type { Cluster } from './cluster.ts';
import type { Listener } from './listener.ts';
import type { ProxyNode } from './node.ts';
import type { RouteConfiguration } from './route.ts';

/**
 * Everything one proxy needs, read from Envoy's resources and not yet compiled: the input to
 * the runtime's snapshot compiler. Plain data, JSON-safe. Envoy's resources are the model
 * every source produces (`envoy/to-model.ts` reads them into this form); `envoyJson` keeps
 * them as received, for `/config_dump`.
 */
/** One host of the name table (istio.networking.nds.v1.NameTable.NameInfo). */
export interface NameTableEntry {
  /** Fully qualified, `reviews.default.svc.cluster.local`. */
  readonly host: string;
  readonly addresses: readonly string[];
  /** Kubernetes services: the short name and namespace, so `reviews` and `reviews.default` resolve; '' for other hosts. */
  readonly shortName: string;
  readonly namespace: string;
}

export interface ProxyConfig {
  /** Content hash of the resources it came from; changes whenever they do. */
  readonly version: string;
  readonly node: ProxyNode;
  readonly listeners: readonly Listener[];
  readonly routeConfigs: readonly RouteConfiguration[];
  readonly clusters: readonly Cluster[];
  /**
   * istiod's NDS name table for a sidecar's DNS proxy (Istio's agent answers these names
   * itself, which is what makes `curl http://reviews:9080` work with captured DNS): each
   * service hostname with the addresses it answers with (its VIPs, else its endpoints' IPs).
   * Absent: the DNS proxy forwards every query.
   */
  readonly nameTable?: readonly NameTableEntry[];
  /**
   * The Envoy resources this config was read from (`EnvoyResources` as JSON text, parsed
   * only when `/config_dump` asks); absent for a config built directly (tests), which the
   * dump then exports.
   */
  readonly envoyJson?: string;
}
