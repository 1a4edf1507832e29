/**
 * `@remora/xds`: Remora's xDS client. {@link AdsClient} speaks Envoy's v3 aggregated
 * discovery (state of the world and incremental) over gRPC; {@link readBootstrap} reads the
 * Envoy bootstrap Istio's agent writes, for the node and the ADS server to use.
 */
export { AdsClient, ACCEPT, USER_AGENT_NAME, USER_AGENT_VERSION, type AdsClientOptions, type OnResources, type XdsLogger, type XdsVerdict } from './ads-client.ts';
export { methodPath, type DiscoveryService } from './ads-protocol.ts';
export { grpcTarget, PLAINTEXT, type AdsTransport, type PemSource } from './ads-transport.ts';
export { JitteredBackoff, XDS_BACKOFF_BASE_MS, XDS_BACKOFF_MAX_MS, type BackoffOptions } from './backoff.ts';
export {
  readBootstrap,
  staticClusterTarget,
  BootstrapError,
  type AdsBootstrap,
  type BootstrapInfo,
  type BootstrapIssue,
  type ReadBootstrapOptions,
  type SocketAddress,
} from './bootstrap.ts';
export { TypeUrl, ADS_ORDER, isFullStateType, shortTypeName } from './type-urls.ts';
export { XdsStats, versionHash } from './xds-stats.ts';
export { decodeResource, nameOf, type XdsResource } from './xds-resource.ts';
