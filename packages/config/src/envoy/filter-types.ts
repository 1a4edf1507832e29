/**
 * The config message of each Envoy HTTP filter Remora runs, by filter name: the exporter
 * writes them, the importers identify filters by them. No runtime imports: the importers
 * load on the proxy's main thread, where Envoy's descriptors must not be loaded.
 */
const T = 'type.googleapis.com/';
import { ISTIO_METRIC_NAMES, type IstioMetricConfig, type IstioStatsConfig } from '../model/listener.ts';

/** The listener-level config message of each Envoy HTTP filter Remora runs, by filter name. */
export const HTTP_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`,
  'envoy.filters.http.ext_authz': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.ratelimit': `${T}envoy.extensions.filters.http.ratelimit.v3.RateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.Cors`,
  'envoy.filters.http.router': `${T}envoy.extensions.filters.http.router.v3.Router`,
};

/** The route-level (`typed_per_filter_config`) message of each filter, by filter name. */
export const PER_ROUTE_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': `${T}envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`,
  'envoy.filters.http.rbac': `${T}envoy.extensions.filters.http.rbac.v3.RBACPerRoute`,
  'envoy.filters.http.local_ratelimit': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  'envoy.filters.http.fault': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  'envoy.filters.http.cors': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
};

/** The HTTP connection manager's config message. */
export const HCM_TYPE = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;

/** The `TypedStruct` a config private to Remora travels in (`type_url` `type.googleapis.com/remora.<filter name>`). */
export const TYPED_STRUCT_TYPES: ReadonlySet<string> = new Set([`${T}xds.type.v3.TypedStruct`, `${T}udpa.type.v1.TypedStruct`]);
export const REMORA_TYPE_PREFIX = `${T}remora.`;

/**
 * Filters istiod puts in every chain that Remora accepts and does not run, and why. A chain
 * from istiod (or an EnvoyFilter naming them) must not be refused for them: the importer,
 * the EnvoyFilter patcher and the filter registry all skip them.
 */
export const SKIPPED_ISTIO_FILTERS: ReadonlyMap<string, string> = new Map([
  // Peer workload labels for telemetry: Remora reads the peer's identity from its mTLS certificate instead.
  ['istio.metadata_exchange', 'peer metadata comes from the mTLS certificate'],
  // Istio's stats (a Wasm or native extension): Remora's telemetry emits the same istio_* metrics itself.
  ['istio.stats', 'istio_* metrics are emitted by the proxy itself'],
  // Sets upstream ALPN to istio-* for mTLS origination: Remora's upstream TLS chooses ALPN itself.
  ['istio.alpn', 'upstream ALPN is chosen by the cluster TLS settings'],
  // Per-method gRPC counters (emit_filter_state for istio.stats): no Remora metric reads them.
  ['envoy.filters.http.grpc_stats', 'no metric uses per-method gRPC counters'],
]);

/** Istio's TCP metadata exchange (istio/proxy's `istio.metadata_exchange` network and cluster filter). */
export const METADATA_EXCHANGE_NAME = 'istio.metadata_exchange';
export const METADATA_EXCHANGE_TYPE = `${T}envoy.tcp.metadataexchange.config.MetadataExchange`;
/** The ALPN the exchange runs under, the only `protocol` istiod configures. */
export const METADATA_EXCHANGE_ALPN = 'istio-peer-exchange';

/** The filter as istiod writes it (`TCPListenerMx`, `TCPClusterMx`): a udpa TypedStruct, discovery on. */
export function metadataExchangeFilterJson(): { name: string; typedConfig: { '@type': string; typeUrl: string; value: { protocol: string; enable_discovery: boolean } } } {
  return {
    name: METADATA_EXCHANGE_NAME,
    typedConfig: { '@type': `${T}udpa.type.v1.TypedStruct`, typeUrl: METADATA_EXCHANGE_TYPE, value: { protocol: METADATA_EXCHANGE_ALPN, enable_discovery: true } },
  };
}

/**
 * A network or cluster filter's MetadataExchange config (by its name when it has no config,
 * else by its type, bare or in a TypedStruct); null when the filter is another one. Field
 * names as the proto's (`enable_discovery`, in a TypedStruct) or their JSON names.
 */
export function metadataExchangeConfig(f: { readonly name?: string; readonly typedConfig?: unknown }): Record<string, unknown> | null {
  const tc = f.typedConfig !== null && typeof f.typedConfig === 'object' && !Array.isArray(f.typedConfig) ? (f.typedConfig as Record<string, unknown>) : null;
  if (tc === null) return f.name === METADATA_EXCHANGE_NAME ? {} : null;
  const type = String(tc['@type'] ?? '');
  if (type === METADATA_EXCHANGE_TYPE) {
    const { '@type': _, ...rest } = tc;
    return rest;
  }
  if (TYPED_STRUCT_TYPES.has(type) && tc.typeUrl === METADATA_EXCHANGE_TYPE) {
    const v = tc.value;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  }
  return null;
}

/**
 * What of a MetadataExchange config Remora cannot honour, by field: a protocol other than
 * `istio-peer-exchange` (an error: peers would not recognise the exchange), additional labels
 * (a warning: Istio's standard labels are the ones reported).
 */
export function metadataExchangeIssues(config: Record<string, unknown>): { readonly errors: [string, string][]; readonly warnings: [string, string][] } {
  const errors: [string, string][] = [];
  const warnings: [string, string][] = [];
  for (const [key, v] of Object.entries(config)) {
    if (key === 'protocol') {
      if (v !== METADATA_EXCHANGE_ALPN) errors.push([key, `only ${METADATA_EXCHANGE_ALPN} is supported (the ALPN Istio's proxies exchange metadata under)`]);
    } else if (key === 'enable_discovery' || key === 'enableDiscovery') {
      // Without the header, outbound peers fall back to endpoint labels: Remora's own discovery.
    } else if (key === 'additional_labels' || key === 'additionalLabels') {
      warnings.push([key, 'ignored: Istio\'s standard peer labels are the ones reported']);
    } else errors.push([key, 'not supported']);
  }
  if (config.protocol === undefined) errors.push(['protocol', `required: ${METADATA_EXCHANGE_ALPN}`]);
  return { errors, warnings };
}

/** Istio's stats filter (istio/proxy's `istio.stats`, HTTP and network), its config type. */
export const ISTIO_STATS_NAME = 'istio.stats';
export const ISTIO_STATS_TYPE = `${T}stats.PluginConfig`;

/**
 * The filter with a listener's stats config, as a TypedStruct of stats.PluginConfig (proto
 * field names, as Istio's docs and EnvoyFilters write it).
 */
export function istioStatsFilterJson(s: IstioStatsConfig): { name: string; typedConfig: { '@type': string; typeUrl: string; value: Record<string, unknown> } } {
  const value: Record<string, unknown> = {
    metrics: s.metrics.map((m) => ({
      ...(m.name === '' ? {} : { name: m.name }),
      ...(Object.keys(m.dimensions).length === 0 ? {} : { dimensions: { ...m.dimensions } }),
      ...(m.tagsToRemove.length === 0 ? {} : { tags_to_remove: [...m.tagsToRemove] }),
      ...(m.drop ? { drop: true } : {}),
    })),
  };
  if (s.disableHostHeaderFallback) value.disable_host_header_fallback = true;
  if (s.tcpReportingDurationMs !== null) value.tcp_reporting_duration = `${s.tcpReportingDurationMs / 1000}s`;
  return { name: ISTIO_STATS_NAME, typedConfig: { '@type': `${T}udpa.type.v1.TypedStruct`, typeUrl: ISTIO_STATS_TYPE, value } };
}

/** A filter's stats.PluginConfig (bare or in a TypedStruct, with no config by its name: {}); null when the filter is another one. */
export function istioStatsConfigJson(f: { readonly name?: string; readonly typedConfig?: unknown }): Record<string, unknown> | null {
  const tc = f.typedConfig !== null && typeof f.typedConfig === 'object' && !Array.isArray(f.typedConfig) ? (f.typedConfig as Record<string, unknown>) : null;
  if (tc === null) return f.name === ISTIO_STATS_NAME ? {} : null;
  const type = String(tc['@type'] ?? '');
  if (type === ISTIO_STATS_TYPE) {
    const { '@type': _, ...rest } = tc;
    return rest;
  }
  if (TYPED_STRUCT_TYPES.has(type) && tc.typeUrl === ISTIO_STATS_TYPE) {
    const v = tc.value;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  }
  return null;
}

/**
 * A stats.PluginConfig (proto or JSON field names) → the model's, with what Remora cannot
 * honour: errors (a metric it does not know, a value of the wrong type) and warnings (fields
 * for other reporters), each by field path relative to the config.
 */
export function readIstioStats(c: Record<string, unknown>): { readonly config: IstioStatsConfig; readonly errors: [string, string][]; readonly warnings: [string, string][] } {
  const errors: [string, string][] = [];
  const warnings: [string, string][] = [];
  const get = (o: Record<string, unknown>, snake: string, camel: string): unknown => (o[snake] !== undefined ? o[snake] : o[camel]);
  const metrics: IstioMetricConfig[] = [];
  const list = c.metrics ?? [];
  if (!Array.isArray(list)) errors.push(['metrics', 'must be a list']);
  else list.forEach((raw, i) => {
    const at = `metrics[${i}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      errors.push([at, 'must be an object']);
      return;
    }
    const m = raw as Record<string, unknown>;
    const name = typeof m.name === 'string' ? m.name.replace(/^istio_/, '') : '';
    if (name !== '' && !ISTIO_METRIC_NAMES.includes(name)) {
      errors.push([`${at}.name`, `unknown metric ${name}: custom metrics are not supported (${ISTIO_METRIC_NAMES.join(', ')})`]);
      return;
    }
    const dimensions: Record<string, string> = {};
    const d = m.dimensions ?? {};
    if (d === null || typeof d !== 'object' || Array.isArray(d)) errors.push([`${at}.dimensions`, 'must be a map of tag to CEL expression']);
    else for (const [tag, v] of Object.entries(d)) {
      if (typeof v !== 'string') errors.push([`${at}.dimensions.${tag}`, 'must be a CEL expression']);
      else dimensions[tag] = v;
    }
    const rm = get(m, 'tags_to_remove', 'tagsToRemove') ?? [];
    const tagsToRemove = Array.isArray(rm) ? rm.map(String) : [];
    if (!Array.isArray(rm)) errors.push([`${at}.tags_to_remove`, 'must be a list of tag names']);
    for (const key of Object.keys(m)) {
      if (!['name', 'dimensions', 'tags_to_remove', 'tagsToRemove', 'drop'].includes(key)) errors.push([`${at}.${key}`, 'not supported']);
    }
    metrics.push({ name, dimensions, tagsToRemove, drop: m.drop === true });
  });
  const fallback = get(c, 'disable_host_header_fallback', 'disableHostHeaderFallback');
  const duration = get(c, 'tcp_reporting_duration', 'tcpReportingDuration');
  let tcpReportingDurationMs: number | null = null;
  if (duration !== undefined) {
    const secs = typeof duration === 'string' && duration.endsWith('s') ? Number(duration.slice(0, -1)) : NaN;
    if (!(secs > 0)) errors.push(['tcp_reporting_duration', `must be a positive duration such as "15s", found ${JSON.stringify(duration)}`]);
    else tcpReportingDurationMs = Math.round(secs * 1000);
  }
  for (const key of Object.keys(c)) {
    if (['metrics', 'disable_host_header_fallback', 'disableHostHeaderFallback', 'tcp_reporting_duration', 'tcpReportingDuration'].includes(key)) continue;
    if (key === 'reporter' || key === 'rotation_interval' || key === 'rotationInterval' || key === 'graceful_deletion_interval' || key === 'gracefulDeletionInterval') warnings.push([key, 'ignored: Remora reports as a sidecar or gateway and keeps every series']);
    else errors.push([key, 'not supported']);
  }
  return { config: { metrics, disableHostHeaderFallback: fallback === true, tcpReportingDurationMs }, errors, warnings };
}
