import type { HttpConnectionManagerOptions, TrafficDirection } from '../model/listener.ts';
import type { ProxyNode } from '../model/node.ts';

/**
 * Istio's HTTP connection manager settings for a listener of this proxy, as istiod sets them:
 * the `server` header is overwritten on every response, with `istio-envoy` on gateways and on
 * a sidecar's inbound side and Envoy's own default `envoy` on the outbound side (istiod keeps
 * that difference for compatibility); HTTP/1.0 is refused unless the node's `HTTP10` metadata
 * says so.
 */
export function connectionManagerFor(node: ProxyNode, direction: TrafficDirection): HttpConnectionManagerOptions {
  return {
    serverName: direction === 'outbound' ? 'envoy' : 'istio-envoy',
    serverHeaderTransformation: 'OVERWRITE',
    httpProtocolOptions: { acceptHttp10: node.http10 === true },
  };
}
