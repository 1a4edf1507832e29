/** Where the proxy accepts connections and which route table serves them. */

/**
 * Traffic direction, as Envoy's: it sets the metrics reporter (`source` for outbound and
 * gateways, `destination` for inbound) and which policies apply (server-side policy runs on
 * inbound listeners and gateways).
 */
export type TrafficDirection = 'outbound' | 'inbound' | 'gateway';

/** An HTTP filter in a listener's chain: a registered name and its config, checked at compile time. */
export interface HttpFilterConfig {
  readonly name: string;
  readonly config: unknown;
}

export interface Listener {
  /** Envoy-style name: `virtualOutbound`, `virtualInbound`, `0.0.0.0_8080`. */
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly direction: TrafficDirection;
  /** Name of the RouteConfiguration that routes this listener's requests. */
  readonly routeConfig: string;
  /** Filters run before the router, in order. */
  readonly httpFilters: readonly HttpFilterConfig[];
}
