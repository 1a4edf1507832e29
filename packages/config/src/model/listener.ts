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

/** One TCP route (a TLS-passthrough server's by SNI, or a TCP server's): weighted clusters. */
export interface TcpRoute {
  /** SNI names (`*` and `*.suffix` wildcards); empty: any (always empty for plain TCP). */
  readonly sniHosts: readonly string[];
  readonly clusters: readonly { readonly cluster: string; readonly weight: number }[];
  /** `<namespace>/<name>` of the VirtualService. */
  readonly origin: string;
}

/** A Gateway server that speaks TLS, selected by SNI among the servers on its port. */
export interface TlsServer {
  /** SNI names this server answers: `*`, `*.suffix` or exact (from the server's `hosts`). */
  readonly hosts: readonly string[];
  readonly mode: 'SIMPLE' | 'MUTUAL' | 'OPTIONAL_MUTUAL' | 'ISTIO_MUTUAL' | 'PASSTHROUGH';
  /** PEM files; null for PASSTHROUGH and ISTIO_MUTUAL (the workload identity is used). */
  readonly certFile: string | null;
  readonly keyFile: string | null;
  /** Roots to verify client certificates (MUTUAL). */
  readonly caFile: string | null;
  /** Client certificate SANs accepted (MUTUAL); empty: any that chains to the CA. */
  readonly subjectAltNames: readonly string[];
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  readonly maxVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  /** OpenSSL cipher names; empty: the defaults. */
  readonly cipherSuites: readonly string[];
  /** PASSTHROUGH: where the TLS bytes go. */
  readonly tcpRoutes: readonly TcpRoute[];
  /** `namespace/name#index` of the Gateway server, for messages. */
  readonly origin: string;
}

/**
 * How a listener's connections are secured. `gateway`: TLS servers picked by SNI (terminated
 * ones route HTTP with the listener's route table). `mesh`: Istio mTLS with the workload
 * identity on a sidecar's inbound side (PeerAuthentication): STRICT demands it, PERMISSIVE
 * also accepts plaintext on the same port.
 */
export type ListenerTls =
  | { readonly kind: 'gateway'; readonly servers: readonly TlsServer[] }
  | { readonly kind: 'mesh'; readonly mode: 'STRICT' | 'PERMISSIVE' };

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
  /** Null: plaintext HTTP. */
  readonly tls: ListenerTls | null;
  /**
   * A Gateway TCP server: the listener proxies raw TCP (Envoy's tcp_proxy) to the first of
   * these routes, with no HTTP; absent for HTTP listeners.
   */
  readonly tcpProxy?: readonly TcpRoute[];
  /**
   * The port requests on this listener were addressed to, when the listener receives traffic
   * redirected to it (a sidecar's inbound side: the app's port, as Envoy sees it as the
   * original destination); absent: the port the connection was accepted on.
   */
  readonly destinationPort?: number;
}
