import type { Cluster } from './cluster.ts';
import type { Listener } from './listener.ts';
import type { ProxyNode } from './node.ts';
import type { RouteConfiguration } from './route.ts';

/**
 * Everything one proxy needs, translated from resources and not yet compiled: the input to
 * the runtime's snapshot compiler and the body of `/config_dump`. Plain data, JSON-safe.
 */
export interface ProxyConfig {
  /** Content hash of the resources it came from; changes whenever they do. */
  readonly version: string;
  readonly node: ProxyNode;
  readonly listeners: readonly Listener[];
  readonly routeConfigs: readonly RouteConfiguration[];
  readonly clusters: readonly Cluster[];
}
