export { Runtime, type RuntimeOptions } from './runtime/runtime.ts';
export { Snapshot, ListenerSnapshot } from './runtime/snapshot.ts';
export { ProxyProcess, StartError, type ProcessSinks } from './cli/proxy-process.ts';
export { parseOptions, helpText, UsageError, type ProxyOptions, type Command } from './cli/options.ts';
export { main } from './cli/main.ts';
export { AccessLog, formatText, formatJson, type AccessLogRecord, type AccessLogFormat } from './telemetry/access-log.ts';
export { IstioMetrics, RequestStats, ENVOY_DEFAULT_BUCKETS, type PeerLabels } from './telemetry/istio-metrics.ts';
export { encodeStruct, decodeStruct, workloadFromStruct, localPeerMetadata, PeerMetadataCache, type PeerWorkload, type StructFields } from './telemetry/peer-metadata.ts';
export { GrpcMessageCounter } from './http/grpc.ts';
export { Loggers, Logger, type LogLevel } from './logger.ts';
export { ResponseFlag, formatResponseFlags } from './telemetry/response-flags.ts';
export { RouteTable } from './router/route-table.ts';
export { RouteTableByPort } from './router/route-table-by-port.ts';
export { StringMatcher } from './router/string-matcher.ts';
export { redirectLocation } from './http/redirect.ts';
export { hash32, RingHashLoadBalancer } from './upstream/load-balancer-ring-hash.ts';
export { RoundRobinLoadBalancer } from './upstream/load-balancer-round-robin.ts';
export { LeastRequestLoadBalancer } from './upstream/load-balancer-least-request.ts';
export { RandomLoadBalancer } from './upstream/load-balancer-random.ts';
export {
  GrpcStatus,
  GRPC_LOCAL_REPLY_HTTP_STATUS,
  isGrpcRequest,
  parseGrpcTimeout,
  grpcRequestTimeoutMs,
  httpToGrpcStatus,
  grpcToHttpStatus,
  localReplyGrpcStatus,
  grpcLocalReplyHeaders,
  encodeGrpcMessage,
  type GrpcStatusName,
} from './http/grpc.ts';
export { normalizePath } from './http/path-normalize.ts';
export { plainRouteContext, type RouteCompileContext } from './router/compiled-route.ts';
export { findRoute } from './router/route-table.ts';
export { builtinFilters } from './runtime/builtin-filters.ts';
export { CircuitBreaker, ADMITTED, QUEUED, OVERFLOW, type Admission, type BreakerWaiter } from './upstream/circuit-breaker.ts';
export { OutlierDetector, HostOutlierState } from './upstream/outlier-detector.ts';
export { LocalityPlan } from './upstream/locality-plan.ts';
export { UpstreamCluster } from './upstream/upstream-cluster.ts';
export { UpstreamHost, type ClusterHost, type PoolSettings } from './upstream/upstream-host.ts';
export {
  IdentityStore,
  DEFAULT_IDENTITY_DIRS,
  spiffeIdOf,
  peerIdentityFromSpiffe,
  type IdentityPaths,
  type IdentityStoreOptions,
  type PushedIdentity,
  type PushedNames,
  type WorkloadIdentity,
} from './tls/identity-store.ts';
export {
  WORKLOAD_FILES,
  splitPemCertificates,
  parseCertificates,
  parseSubjectAltNames,
  spiffeIdsOf,
  parseSpiffeId,
  certificateInfo,
  keyMatchesCertificate,
  verifyCertificateChain,
  type SpiffeIdParts,
  type CertificateInfo,
} from './tls/certificates.ts';
export {
  DevCa,
  DevCaError,
  CA_FILES,
  SERVER_FILES,
  DEFAULT_TRUST_DOMAIN,
  DEFAULT_WORKLOAD_TTL_MS,
  DEFAULT_SERVER_TTL_MS,
  trustDomainOfCa,
  writeWorkloadFiles,
  writeServerFiles,
  writeFileAtomic,
  type IssuedCertificate,
  type CreateCaOptions,
  type IssueWorkloadOptions,
  type IssueServerOptions,
} from './tls/dev-ca.ts';
export { runCa, caHelpText } from './cli/ca.ts';
export { parseClientHello, pickByServerName, type ClientHello } from './listener/client-hello.ts';
export {
  ConntrackTable,
  ConntrackUnavailableError,
  CONNTRACK_PATH,
  expandIPv6,
  originalDestination,
  tproxyOriginalDestination,
  type ConnectionAddresses,
  type InterceptionMode,
  type OriginalDestination,
} from './listener/original-dst.ts';
export { tabWrite, type TabWriterOptions } from './cli/proxy-config/tab-writer.ts';
export { goSortSlice } from './cli/proxy-config/go-sort.ts';
export { detectProtocol } from './listener/http-listener.ts';
export { captureLookup, CAPTURE_MODES, type CaptureMode } from './cli/capture.ts';
export { OriginalDstHosts, ORIGINAL_DST_CLEANUP_MS, ORIGINAL_DST_MAX_HOSTS } from './upstream/original-dst-hosts.ts';
