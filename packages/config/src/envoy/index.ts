/**
 * `@remora/config/envoy`: Envoy's v3 messages, the type registry and the codecs. The
 * generated types and schemas are imported from their own files,
 * `@remora/config/envoy/gen/<proto path>_pb.js` (for example
 * `envoy/config/listener/v3/listener_pb.js` exports `Listener` and `ListenerSchema`), since
 * Envoy reuses short names (`Filter`, `RBAC`, `Config`) across packages.
 *
 * A subpath of its own, not part of the package's main entry: loading the descriptors takes
 * about 0.3 s (protobuf-es 2.17 walks a generated file's whole import tree again as each file
 * loads, and Envoy's tree is deep), which code that never reads Envoy messages should not pay.
 */
export { EnvoyCodecError } from '../errors.ts';
export { envoyRegistry, envoyMessageType, typeUrlOf, TYPE_URL_PREFIX } from './registry.ts';
export {
  envoyFromJson,
  envoyToJson,
  envoyFromBinary,
  envoyToBinary,
  envoyPack,
  envoyUnpack,
  type EnvoyJsonReadOptions,
  type EnvoyJsonWriteOptions,
} from './codec.ts';
export {
  envoyResourcesFromModel,
  bootstrapJson,
  secretJson,
  HTTP_FILTER_TYPES,
  PER_ROUTE_FILTER_TYPES,
  WORKLOAD_SECRET,
  ROOT_SECRET,
  type EnvoyResources,
  type ResourceVersions,
  type SecretRef,
} from './from-model.ts';
export { translateIstioToEnvoy, type EnvoyTranslateResult } from '../translate/istio-envoy.ts';
export { applyEnvoyFilters } from '../translate/envoyfilter-patch.ts';
export { proxyConfigFromEnvoy, edsServiceName, rdsNamesOf, type ImportResult } from './to-model.ts';
export { ImportContext, formatImportIssue, type ImportIssue } from './import-context.ts';
export { loadMesh, type MeshLoadResult } from '../sources/mesh-loader.ts';
