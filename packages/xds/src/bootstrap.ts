/**
 * Reads an Envoy bootstrap, such as the one Istio's agent writes for its proxy, for what
 * Remora needs to start under a control plane: the node, the ADS server (the address of the
 * static cluster `dynamic_resources.ads_config` names, usually the agent's Unix socket
 * `./etc/istio/proxy/XDS`, and its TLS if any), the admin address and the static clusters.
 *
 * Unknown fields are rejected, as Envoy rejects them in static config, unless
 * `allowUnknownStaticFields` (Envoy's `--allow-unknown-static-fields`) turns each into a
 * warning. Anything else this reader cannot honour is an issue naming the field.
 */
import { readFileSync } from 'node:fs';
import type { JsonObject, JsonValue } from '@bufbuild/protobuf';
import { envoyFromJson, envoyUnpack, EnvoyCodecError } from '@remora/config/envoy';
import { BootstrapSchema, type Bootstrap } from '@remora/config/envoy/gen/envoy/config/bootstrap/v3/bootstrap_pb.js';
import type { Cluster } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ApiConfigSource_ApiType, type ConfigSource } from '@remora/config/envoy/gen/envoy/config/core/v3/config_source_pb.js';
import type { Address } from '@remora/config/envoy/gen/envoy/config/core/v3/address_pb.js';
import type { DataSource, Node } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import { UpstreamTlsContextSchema } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/tls_pb.js';
import { grpcTarget, PLAINTEXT, type AdsTransport, type PemSource } from './ads-transport.ts';
import { TypeUrl } from './type-urls.ts';

export interface BootstrapIssue {
  readonly severity: 'error' | 'warning';
  /** Field path in the bootstrap, in the names the file used: `static_resources.clusters[3].load_assignment`. */
  readonly path: string;
  readonly message: string;
}

export type SocketAddress = { readonly pipe: string } | { readonly host: string; readonly port: number };

export interface AdsBootstrap {
  /** gRPC target for {@link AdsClient}: `unix:./etc/istio/proxy/XDS`, `istiod:15012`. */
  readonly target: string;
  readonly apiType: 'GRPC' | 'DELTA_GRPC';
  readonly transport: AdsTransport;
  /** The static cluster the ADS config names; empty for a `google_grpc` target. */
  readonly cluster: string;
  readonly setNodeOnFirstMessageOnly: boolean;
  /** The types `lds_config` / `cds_config` ask for over ADS: asked for whole. */
  readonly wildcard: readonly string[];
}

export interface BootstrapInfo {
  readonly node: Node;
  /** Null when the bootstrap has no usable `dynamic_resources.ads_config` (an issue says why). */
  readonly ads: AdsBootstrap | null;
  readonly admin: SocketAddress | null;
  readonly staticClusters: readonly Cluster[];
  readonly bootstrap: Bootstrap;
  readonly issues: readonly BootstrapIssue[];
}

export interface ReadBootstrapOptions {
  /** Envoy's `--allow-unknown-static-fields`: unknown fields are warned about and ignored instead of rejected. */
  readonly allowUnknownStaticFields?: boolean;
}

/** Thrown when a bootstrap cannot be used at all: unreadable, not JSON, or a field Envoy would reject. */
export class BootstrapError extends Error {
  readonly issues: readonly BootstrapIssue[];
  constructor(source: string, issues: readonly BootstrapIssue[]) {
    super(`bootstrap ${source}: ${issues.map((i) => (i.path === '' ? i.message : `${i.path}: ${i.message}`)).join('; ')}`);
    this.name = 'BootstrapError';
    this.issues = issues;
  }
}

const MAX_UNKNOWN_FIELDS = 1000;

/** Reads a bootstrap from a file path (JSON, as Istio's agent writes it) or from parsed JSON. */
export function readBootstrap(input: string | JsonObject, options: ReadBootstrapOptions = {}): BootstrapInfo {
  const source = typeof input === 'string' ? input : '(json)';
  let json: JsonValue;
  if (typeof input === 'string') {
    try {
      json = JSON.parse(readFileSync(input, 'utf8')) as JsonValue;
    } catch (e) {
      throw new BootstrapError(source, [{ severity: 'error', path: '', message: e instanceof Error ? e.message : String(e) }]);
    }
  } else {
    json = structuredClone(input);
  }
  const issues: BootstrapIssue[] = [];
  const bootstrap = decode(source, json, options.allowUnknownStaticFields === true, issues);
  const staticClusters = bootstrap.staticResources?.clusters ?? [];
  const ads = readAds(bootstrap, staticClusters, issues);
  const adminAddress = bootstrap.admin?.address;
  return {
    node: bootstrap.node ?? ({} as Node),
    ads,
    admin: adminAddress === undefined ? null : socketAddress(adminAddress),
    staticClusters,
    bootstrap,
    issues,
  };
}

/** Decodes strictly; with unknown fields allowed, drops each unknown one (with a warning) and tries again. */
function decode(source: string, json: JsonValue, allowUnknown: boolean, issues: BootstrapIssue[]): Bootstrap {
  for (let i = 0; i < MAX_UNKNOWN_FIELDS; i++) {
    try {
      return envoyFromJson(BootstrapSchema, json);
    } catch (e) {
      if (!(e instanceof EnvoyCodecError)) throw e;
      const unknown = e.reason.startsWith('unknown field ');
      if (!unknown || !allowUnknown || !deleteAt(json, e.path)) {
        throw new BootstrapError(source, [...issues, { severity: 'error', path: e.path, message: e.reason }]);
      }
      issues.push({ severity: 'warning', path: e.path, message: `${e.reason}: ignored` });
    }
  }
  throw new BootstrapError(source, [...issues, { severity: 'error', path: '', message: `more than ${MAX_UNKNOWN_FIELDS} unknown fields` }]);
}

function readAds(bootstrap: Bootstrap, clusters: readonly Cluster[], issues: BootstrapIssue[]): AdsBootstrap | null {
  const dynamic = bootstrap.dynamicResources;
  const config = dynamic?.adsConfig;
  const at = 'dynamic_resources.ads_config';
  if (config === undefined) {
    // A static bootstrap (no dynamic_resources at all) is a whole config, as in Envoy.
    if (dynamic === undefined) return null;
    issues.push({ severity: 'error', path: 'dynamic_resources', message: 'no ads_config: dynamic resources come over ADS only' });
    return null;
  }
  let apiType: 'GRPC' | 'DELTA_GRPC';
  if (config.apiType === ApiConfigSource_ApiType.GRPC) apiType = 'GRPC';
  else if (config.apiType === ApiConfigSource_ApiType.DELTA_GRPC) apiType = 'DELTA_GRPC';
  else {
    issues.push({ severity: 'error', path: `${at}.api_type`, message: 'must be GRPC or DELTA_GRPC for ADS' });
    return null;
  }
  const wildcard: string[] = [];
  adsType(dynamic?.cdsConfig, 'dynamic_resources.cds_config', TypeUrl.Cluster, wildcard, issues);
  adsType(dynamic?.ldsConfig, 'dynamic_resources.lds_config', TypeUrl.Listener, wildcard, issues);
  const service = config.grpcServices[0];
  if (config.grpcServices.length > 1) issues.push({ severity: 'warning', path: `${at}.grpc_services`, message: 'only the first is used, as Envoy does' });
  const common = { apiType, setNodeOnFirstMessageOnly: config.setNodeOnFirstMessageOnly, wildcard };
  if (service?.targetSpecifier.case === 'envoyGrpc') {
    const name = service.targetSpecifier.value.clusterName;
    const index = clusters.findIndex((c) => c.name === name);
    const cluster = clusters[index];
    if (cluster === undefined) {
      issues.push({ severity: 'error', path: `${at}.grpc_services[0].envoy_grpc.cluster_name`, message: `no static cluster "${name}"` });
      return null;
    }
    const clusterAt = `static_resources.clusters[${index}]`;
    const address = cluster.loadAssignment?.endpoints[0]?.lbEndpoints[0]?.hostIdentifier;
    const target = address?.case === 'endpoint' && address.value.address !== undefined ? socketAddress(address.value.address) : null;
    if (target === null) {
      issues.push({ severity: 'error', path: `${clusterAt}.load_assignment`, message: `cluster "${name}" has no endpoint address (a pipe or socket address)` });
      return null;
    }
    const transport = clusterTransport(cluster, clusterAt, issues);
    if (transport === null) return null;
    return { target: grpcTarget(target), transport, cluster: name, ...common };
  }
  if (service?.targetSpecifier.case === 'googleGrpc') {
    const google = service.targetSpecifier.value;
    const ssl = google.channelCredentials?.credentialSpecifier;
    let transport: AdsTransport = PLAINTEXT;
    if (ssl?.case === 'sslCredentials') {
      transport = { kind: 'tls', ...pemField('ca', ssl.value.rootCerts), ...pemField('cert', ssl.value.certChain), ...pemField('key', ssl.value.privateKey) };
    }
    return { target: google.targetUri, transport, cluster: '', ...common };
  }
  issues.push({ severity: 'error', path: `${at}.grpc_services`, message: 'needs an envoy_grpc cluster or a google_grpc target' });
  return null;
}

function adsType(source: ConfigSource | undefined, at: string, typeUrl: string, wildcard: string[], issues: BootstrapIssue[]): void {
  if (source === undefined) return;
  if (source.configSourceSpecifier.case === 'ads') wildcard.push(typeUrl);
  else issues.push({ severity: 'error', path: at, message: `only "ads" is supported, not "${source.configSourceSpecifier.case ?? 'none'}"` });
}

/** Plaintext, or TLS from an `envoy.transport_sockets.tls` socket with file or inline certificates. */
function clusterTransport(cluster: Cluster, at: string, issues: BootstrapIssue[]): AdsTransport | null {
  const socket = cluster.transportSocket;
  if (socket === undefined) return PLAINTEXT;
  const typed = socket.configType.case === 'typedConfig' ? socket.configType.value : undefined;
  if (typed === undefined || typed.typeUrl !== `type.googleapis.com/${UpstreamTlsContextSchema.typeName}`) {
    issues.push({ severity: 'error', path: `${at}.transport_socket`, message: 'only envoy.transport_sockets.tls with an UpstreamTlsContext is supported' });
    return null;
  }
  const tls = envoyUnpack(typed, UpstreamTlsContextSchema);
  const common = tls.commonTlsContext;
  if ((common?.tlsCertificateSdsSecretConfigs.length ?? 0) > 0 || common?.validationContextType.case === 'validationContextSdsSecretConfig') {
    issues.push({ severity: 'error', path: `${at}.transport_socket`, message: 'certificates from SDS cannot secure the ADS connection itself; give them as files' });
    return null;
  }
  const validation = common?.validationContextType.case === 'validationContext' ? common.validationContextType.value : undefined;
  const certificate = common?.tlsCertificates[0];
  return {
    kind: 'tls',
    ...pemField('ca', validation?.trustedCa),
    ...pemField('cert', certificate?.certificateChain),
    ...pemField('key', certificate?.privateKey),
    ...(tls.sni === '' ? {} : { serverName: tls.sni }),
  };
}

function pemField<K extends string>(key: K, source: DataSource | undefined): Partial<Record<K, PemSource>> {
  const s = source?.specifier;
  if (s === undefined || s.case === undefined) return {};
  let pem: PemSource;
  if (s.case === 'filename') pem = { filename: s.value };
  else if (s.case === 'environmentVariable') pem = { pem: process.env[s.value] ?? '' };
  else pem = { pem: s.value };
  return { [key]: pem } as Partial<Record<K, PemSource>>;
}

/**
 * The gRPC target of a static cluster's first endpoint (`unix:./var/run/secrets/workload-spiffe-uds/socket`
 * for Istio's `sds-grpc`), or null when there is no such cluster or it has no plain address.
 */
export function staticClusterTarget(clusters: readonly Cluster[], name: string): string | null {
  const cluster = clusters.find((c) => c.name === name);
  const endpoint = cluster?.loadAssignment?.endpoints[0]?.lbEndpoints[0]?.hostIdentifier;
  if (endpoint?.case !== 'endpoint' || endpoint.value.address === undefined) return null;
  const address = socketAddress(endpoint.value.address);
  return address === null ? null : grpcTarget(address);
}

function socketAddress(address: Address): SocketAddress | null {
  const a = address.address;
  if (a.case === 'pipe') return { pipe: a.value.path };
  if (a.case === 'socketAddress' && a.value.portSpecifier.case === 'portValue') return { host: a.value.address, port: a.value.portSpecifier.value };
  return null;
}

/** Deletes the field at a codec path (`a.b[2]["k"].c`) from parsed JSON; false when the path does not lead anywhere. */
function deleteAt(json: JsonValue, path: string): boolean {
  const parts: (string | number)[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/g;
  for (const m of path.matchAll(re)) {
    if (m[1] !== undefined) parts.push(m[1]);
    else if (m[2] !== undefined) parts.push(Number(m[2]));
    else if (m[3] !== undefined) parts.push(JSON.parse(m[3]) as string);
  }
  const last = parts.pop();
  if (last === undefined) return false;
  let node: JsonValue | undefined = json;
  for (const p of parts) {
    if (node === null || typeof node !== 'object') return false;
    node = Array.isArray(node) ? node[p as number] : (node as JsonObject)[p as string];
  }
  if (node === null || typeof node !== 'object' || Array.isArray(node) || typeof last !== 'string' || !(last in node)) return false;
  delete (node as JsonObject)[last];
  return true;
}
