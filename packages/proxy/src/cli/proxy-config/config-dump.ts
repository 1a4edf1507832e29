/**
 * An Envoy admin `/config_dump` (`envoy.admin.v3.ConfigDump`) read from its JSON, with small
 * interfaces for the fields `proxy-config` prints. Each reader checks the shape of what it
 * reads and names the field path when it is wrong; fields it does not read are kept only in
 * `json` (for `-o json|yaml`). Absent fields read as protobuf's zero values, as Envoy and
 * istioctl treat them. The interfaces mirror Envoy's messages one to one, so generated
 * message types can take their place without touching the table printers.
 */

export type Json = { readonly [key: string]: unknown };

/** A dump that cannot be read: the message names the source and, where it can, the field. */
export class ConfigDumpError extends Error {
  override readonly name = 'ConfigDumpError';
}

const TYPE_PREFIX = 'type.googleapis.com/envoy.admin.v3.';

/** The `@type` of each section of `configs`, as Envoy writes it. */
export const SECTION_TYPES = {
  bootstrap: `${TYPE_PREFIX}BootstrapConfigDump`,
  clusters: `${TYPE_PREFIX}ClustersConfigDump`,
  endpoints: `${TYPE_PREFIX}EndpointsConfigDump`,
  listeners: `${TYPE_PREFIX}ListenersConfigDump`,
  routes: `${TYPE_PREFIX}RoutesConfigDump`,
  secrets: `${TYPE_PREFIX}SecretsConfigDump`,
} as const;

export type SectionKind = keyof typeof SECTION_TYPES;

/** A section of the dump and where it sits, for error messages. */
export interface Section {
  readonly json: Json;
  readonly path: string;
}

export class ConfigDump {
  readonly json: Json;
  readonly #configs: readonly Section[];

  private constructor(json: Json, configs: readonly Section[]) {
    this.json = json;
    this.#configs = configs;
  }

  /** Parses and checks the outer shape: an object with a `configs` list of `@type`d sections. */
  static parse(text: string, source: string): ConfigDump {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ConfigDumpError(`${source}: not JSON: ${(err as Error).message}`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new ConfigDumpError(`${source}: not an Envoy config dump: expected a JSON object with a "configs" list (envoy.admin.v3.ConfigDump), got ${kindOf(json)}`);
    }
    const top = json as Json;
    if (!('configs' in top)) {
      if ('config' in top && 'last_error' in top) {
        throw new ConfigDumpError(
          `${source}: not an Envoy config dump: this is Remora's own model (admin /remora/config), not Envoy's envoy.admin.v3.ConfigDump; ` +
            'save the proxy\'s /config_dump instead',
        );
      }
      throw new ConfigDumpError(`${source}: not an Envoy config dump: no "configs" list (envoy.admin.v3.ConfigDump); top-level fields: ${Object.keys(top).join(', ') || 'none'}`);
    }
    const configs = list(top.configs, 'configs').map((c, i) => {
      const path = `configs[${i}]`;
      const section = obj(c, path);
      if (section === null) throw new ConfigDumpError(`${path}: expected an object, got null`);
      if (typeof section['@type'] !== 'string') throw new ConfigDumpError(`${path}.@type: expected the section's type URL, got ${kindOf(section['@type'])}`);
      return { json: section, path };
    });
    return new ConfigDump(top, configs);
  }

  /** The section of this kind; the last one wins when a dump repeats it, as in istioctl. */
  section(kind: SectionKind): Section | null {
    let found: Section | null = null;
    for (const c of this.#configs) if (c.json['@type'] === SECTION_TYPES[kind]) found = c;
    return found;
  }

  /** The section of this kind, or istioctl's error when the dump has none. */
  requireSection(kind: SectionKind): Section {
    const s = this.section(kind);
    if (s === null) throw new ConfigDumpError(`config dump has no configuration type ${SECTION_TYPES[kind]}`);
    return s;
  }
}

// ---- field readers: zero values for absent fields, an error naming the path for wrong shapes ----

export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

function wrong(path: string, expected: string, v: unknown): ConfigDumpError {
  return new ConfigDumpError(`${path}: expected ${expected}, got ${kindOf(v)}`);
}

/**
 * A message field by its proto name (`port_value`, as Envoy's admin API writes it), or by its
 * lowerCamelCase JSON name (`portValue`, as protobuf JSON printers such as istioctl's and
 * go-control-plane's write it); protobuf's JSON parsing accepts both. Map keys (metadata,
 * Struct fields) are read as they are.
 */
export function field(o: Json, name: string): unknown {
  const v = o[name];
  return v !== undefined ? v : o[name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())];
}

/** An object field; null when absent. */
export function obj(v: unknown, path: string): Json | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw wrong(path, 'an object', v);
  return v as Json;
}

/** A repeated field; empty when absent. */
export function list(v: unknown, path: string): readonly unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw wrong(path, 'a list', v);
  return v;
}

/** A string field; '' when absent. */
export function str(v: unknown, path: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw wrong(path, 'a string', v);
  return v;
}

/** A number field (64-bit integers arrive as strings in proto JSON); 0 when absent. */
export function num(v: unknown, path: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return Number(v);
  throw wrong(path, 'a number', v);
}

/** An enum field: its name, or the name of its number; the first name when absent. */
export function enumName(v: unknown, path: string, names: readonly string[]): string {
  if (v === undefined || v === null) return names[0]!;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return names[v] ?? String(v);
  throw wrong(path, 'an enum name', v);
}

/** A `google.protobuf.Value` read as `GetStringValue()`: '' unless it is a string. */
export function stringValue(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

/** A proto `bytes` field (base64 in JSON), decoded as text; '' when absent. */
export function bytesText(v: unknown, path: string): string {
  return Buffer.from(str(v, path), 'base64').toString('utf8');
}

/** The resource inside an Any, without its `@type`, as istioctl prints typed messages. */
export function withoutType(json: Json): Json {
  if (!('@type' in json)) return json;
  const { '@type': _type, ...rest } = json;
  return rest;
}

// ---- the messages read: one interface per Envoy message, fields named as in Envoy ----

/** `envoy.config.core.v3.Address`, flattened to what the tables show. */
export interface Address {
  /** `socket_address.address`, '' for other kinds. */
  readonly socketAddress: string;
  readonly portValue: number;
  readonly isSocket: boolean;
  /** `pipe.path`, or null. */
  readonly pipePath: string | null;
  /** `envoy_internal_address` as `[server_listener_name, endpoint_id]`, or null. */
  readonly internal: readonly [string, string] | null;
}

export function readAddress(v: unknown, path: string): Address | null {
  const a = obj(v, path);
  if (a === null) return null;
  const socket = obj(field(a, 'socket_address'), `${path}.socket_address`);
  const pipe = obj(a.pipe, `${path}.pipe`);
  const internal = obj(field(a, 'envoy_internal_address'), `${path}.envoy_internal_address`);
  return {
    socketAddress: socket === null ? '' : str(socket.address, `${path}.socket_address.address`),
    portValue: socket === null ? 0 : num(field(socket, 'port_value'), `${path}.socket_address.port_value`),
    isSocket: socket !== null,
    pipePath: pipe === null ? null : str(pipe.path, `${path}.pipe.path`),
    internal:
      internal === null || field(internal, 'server_listener_name') === undefined
        ? null
        : [str(field(internal, 'server_listener_name'), `${path}.envoy_internal_address.server_listener_name`), str(field(internal, 'endpoint_id'), `${path}.envoy_internal_address.endpoint_id`)],
  };
}

/** `metadata.filter_metadata.istio.config`: the Istio resource a cluster or route came from. */
export function istioConfigPath(v: unknown, path: string): string | null {
  const md = obj(v, path);
  if (md === null) return null;
  const fm = obj(field(md, 'filter_metadata'), `${path}.filter_metadata`);
  const istio = fm === null ? null : obj(fm.istio, `${path}.filter_metadata.istio`);
  if (istio === null || !('config' in istio)) return null;
  return stringValue(istio.config);
}

export interface Cluster {
  readonly name: string;
  /** `type` (the discovery type), STATIC when absent. */
  readonly type: string;
  readonly istioConfig: string | null;
  readonly json: Json;
}

const CLUSTER_TYPES = ['STATIC', 'STRICT_DNS', 'LOGICAL_DNS', 'EDS', 'ORIGINAL_DST'];

/** Static and dynamic active clusters, dynamic first (istioctl's order before sorting). */
export function readClusters(section: Section): Cluster[] {
  const out: Cluster[] = [];
  const read = (kind: string, i: number, entry: unknown): void => {
    const path = `${section.path}.${kind}[${i}]`;
    const e = obj(entry, path);
    const c = e === null ? null : obj(e.cluster, `${path}.cluster`);
    if (c === null) return;
    out.push({
      name: str(c.name, `${path}.cluster.name`),
      type: enumName(c.type, `${path}.cluster.type`, CLUSTER_TYPES),
      istioConfig: istioConfigPath(c.metadata, `${path}.cluster.metadata`),
      json: withoutType(c),
    });
  };
  list(field(section.json, 'dynamic_active_clusters'), `${section.path}.dynamic_active_clusters`).forEach((e, i) => read('dynamic_active_clusters', i, e));
  list(field(section.json, 'static_clusters'), `${section.path}.static_clusters`).forEach((e, i) => read('static_clusters', i, e));
  return out;
}

export interface RouteMatch {
  readonly prefix: string;
  readonly path: string;
  readonly pathSeparatedPrefix: string;
  /** `safe_regex.regex`, or null without one. */
  readonly safeRegex: string | null;
}

export interface Route {
  readonly match: RouteMatch;
  /** `route.cluster` when the action is a route to one cluster, else null. */
  readonly cluster: string | null;
  readonly istioConfig: string | null;
}

export interface VirtualHost {
  readonly name: string;
  readonly domains: readonly string[];
  readonly routes: readonly Route[];
}

export interface RouteConfiguration {
  readonly name: string;
  readonly virtualHosts: readonly VirtualHost[];
  readonly json: Json;
}

export function readRouteConfiguration(v: unknown, path: string): RouteConfiguration | null {
  const rc = obj(v, path);
  if (rc === null) return null;
  return {
    name: str(rc.name, `${path}.name`),
    virtualHosts: list(field(rc, 'virtual_hosts'), `${path}.virtual_hosts`).map((vh, i) => readVirtualHost(vh, `${path}.virtual_hosts[${i}]`)),
    json: withoutType(rc),
  };
}

function readVirtualHost(v: unknown, path: string): VirtualHost {
  const vh = obj(v, path) ?? {};
  return {
    name: str(vh.name, `${path}.name`),
    domains: list(vh.domains, `${path}.domains`).map((d, i) => str(d, `${path}.domains[${i}]`)),
    routes: list(vh.routes, `${path}.routes`).map((r, i) => readRoute(r, `${path}.routes[${i}]`)),
  };
}

function readRoute(v: unknown, path: string): Route {
  const r = obj(v, path) ?? {};
  const m = obj(r.match, `${path}.match`) ?? {};
  const regex = obj(field(m, 'safe_regex'), `${path}.match.safe_regex`);
  const action = obj(r.route, `${path}.route`);
  return {
    match: {
      prefix: str(m.prefix, `${path}.match.prefix`),
      path: str(m.path, `${path}.match.path`),
      pathSeparatedPrefix: str(field(m, 'path_separated_prefix'), `${path}.match.path_separated_prefix`),
      safeRegex: regex === null ? null : str(regex.regex, `${path}.match.safe_regex.regex`),
    },
    cluster: action === null || action.cluster === undefined ? null : str(action.cluster, `${path}.route.cluster`),
    istioConfig: istioConfigPath(r.metadata, `${path}.metadata`),
  };
}

/** Dynamic then static route configurations (istioctl's order before sorting). */
export function readRouteConfigurations(section: Section): RouteConfiguration[] {
  const out: RouteConfiguration[] = [];
  for (const kind of ['dynamic_route_configs', 'static_route_configs']) {
    list(field(section.json, kind), `${section.path}.${kind}`).forEach((e, i) => {
      const path = `${section.path}.${kind}[${i}]`;
      const rc = readRouteConfiguration(field(obj(e, path) ?? {}, 'route_config'), `${path}.route_config`);
      if (rc !== null) out.push(rc);
    });
  }
  return out;
}

export const HTTP_CONNECTION_MANAGER = 'envoy.filters.network.http_connection_manager';
export const TCP_PROXY = 'envoy.filters.network.tcp_proxy';

/** A network filter; the two istioctl looks into are read, the rest kept opaque. */
export interface NetworkFilter {
  readonly name: string;
  /** `typed_config` as JSON text, for istioctl's "mentions BlackHoleCluster" test. */
  readonly typedConfigText: string;
  /** HttpConnectionManager: its inline `route_config`, or null. */
  readonly routeConfig: RouteConfiguration | null;
  /** HttpConnectionManager: `rds.route_config_name`, or ''. */
  readonly rdsRouteConfigName: string;
  /** TcpProxy: `cluster`, or ''. */
  readonly tcpCluster: string;
}

export interface FilterChainMatch {
  readonly serverNames: readonly string[];
  readonly transportProtocol: string;
  readonly applicationProtocols: readonly string[];
  /** `destination_port`, or null when not set. */
  readonly destinationPort: number | null;
  readonly prefixRanges: ReadonlyArray<{ readonly addressPrefix: string; readonly prefixLen: number }>;
}

export interface FilterChain {
  readonly name: string;
  readonly match: FilterChainMatch | null;
  readonly filters: readonly NetworkFilter[];
}

export interface Listener {
  readonly name: string;
  readonly address: Address | null;
  readonly additionalAddresses: readonly string[];
  /** `filter_chains`, then `default_filter_chain` when set. */
  readonly filterChains: readonly FilterChain[];
  readonly json: Json;
}

/** Dynamic (active state) then static listeners, in the dump's order, as istioctl reads them. */
export function readListeners(section: Section): Listener[] {
  const out: Listener[] = [];
  list(field(section.json, 'dynamic_listeners'), `${section.path}.dynamic_listeners`).forEach((e, i) => {
    const path = `${section.path}.dynamic_listeners[${i}]`;
    const active = obj(field(obj(e, path) ?? {}, 'active_state'), `${path}.active_state`);
    const l = active === null ? null : readListener(active.listener, `${path}.active_state.listener`);
    if (l !== null) out.push(l);
  });
  list(field(section.json, 'static_listeners'), `${section.path}.static_listeners`).forEach((e, i) => {
    const path = `${section.path}.static_listeners[${i}]`;
    const l = readListener((obj(e, path) ?? {}).listener, `${path}.listener`);
    if (l !== null) out.push(l);
  });
  return out;
}

function readListener(v: unknown, path: string): Listener | null {
  const l = obj(v, path);
  if (l === null) return null;
  const chains = list(field(l, 'filter_chains'), `${path}.filter_chains`).map((c, i) => readFilterChain(c, `${path}.filter_chains[${i}]`));
  const dflt = obj(field(l, 'default_filter_chain'), `${path}.default_filter_chain`);
  if (dflt !== null) chains.push(readFilterChain(dflt, `${path}.default_filter_chain`));
  return {
    name: str(l.name, `${path}.name`),
    address: readAddress(l.address, `${path}.address`),
    additionalAddresses: list(field(l, 'additional_addresses'), `${path}.additional_addresses`).map(
      (a, i) => readAddress((obj(a, `${path}.additional_addresses[${i}]`) ?? {}).address, `${path}.additional_addresses[${i}].address`)?.socketAddress ?? '',
    ),
    filterChains: chains,
    json: withoutType(l),
  };
}

function readFilterChain(v: unknown, path: string): FilterChain {
  const fc = obj(v, path) ?? {};
  const m = obj(field(fc, 'filter_chain_match'), `${path}.filter_chain_match`);
  const mp = `${path}.filter_chain_match`;
  return {
    name: str(fc.name, `${path}.name`),
    match:
      m === null
        ? null
        : {
            serverNames: list(field(m, 'server_names'), `${mp}.server_names`).map((s, i) => str(s, `${mp}.server_names[${i}]`)),
            transportProtocol: str(field(m, 'transport_protocol'), `${mp}.transport_protocol`),
            applicationProtocols: list(field(m, 'application_protocols'), `${mp}.application_protocols`).map((s, i) => str(s, `${mp}.application_protocols[${i}]`)),
            destinationPort: field(m, 'destination_port') === undefined || field(m, 'destination_port') === null ? null : num(field(m, 'destination_port'), `${mp}.destination_port`),
            prefixRanges: list(field(m, 'prefix_ranges'), `${mp}.prefix_ranges`).map((r, i) => {
              const rp = `${mp}.prefix_ranges[${i}]`;
              const range = obj(r, rp) ?? {};
              return { addressPrefix: str(field(range, 'address_prefix'), `${rp}.address_prefix`), prefixLen: num(field(range, 'prefix_len'), `${rp}.prefix_len`) };
            }),
          },
    filters: list(fc.filters, `${path}.filters`).map((f, i) => readNetworkFilter(f, `${path}.filters[${i}]`)),
  };
}

function readNetworkFilter(v: unknown, path: string): NetworkFilter {
  const f = obj(v, path) ?? {};
  const name = str(f.name, `${path}.name`);
  const tc = obj(field(f, 'typed_config'), `${path}.typed_config`) ?? {};
  const tp = `${path}.typed_config`;
  const hcm = name === HTTP_CONNECTION_MANAGER;
  const rds = hcm ? obj(tc.rds, `${tp}.rds`) : null;
  return {
    name,
    typedConfigText: JSON.stringify(tc),
    routeConfig: hcm ? readRouteConfiguration(field(tc, 'route_config'), `${tp}.route_config`) : null,
    rdsRouteConfigName: rds === null ? '' : str(field(rds, 'route_config_name'), `${tp}.rds.route_config_name`),
    tcpCluster: name === TCP_PROXY ? str(tc.cluster, `${tp}.cluster`) : '',
  };
}

const HEALTH_STATUSES = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'];

export interface LbEndpoint {
  /** The endpoint's address, then its additional addresses. */
  readonly addresses: ReadonlyArray<Address | null>;
  readonly healthStatus: string;
  readonly json: Json;
}

export interface LocalityLbEndpoints {
  /** `region/zone/sub_zone`, shortened as Istio prints it. */
  readonly locality: string;
  readonly lbEndpoints: readonly LbEndpoint[];
  readonly json: Json;
}

export interface ClusterLoadAssignment {
  readonly clusterName: string;
  readonly endpoints: readonly LocalityLbEndpoints[];
  readonly json: Json;
}

const CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';

/** Dynamic then static load assignments; entries of another type are skipped, as istioctl skips them. */
export function readLoadAssignments(section: Section): ClusterLoadAssignment[] {
  const out: ClusterLoadAssignment[] = [];
  for (const kind of ['dynamic_endpoint_configs', 'static_endpoint_configs']) {
    list(field(section.json, kind), `${section.path}.${kind}`).forEach((e, i) => {
      const path = `${section.path}.${kind}[${i}].endpoint_config`;
      const cla = obj(field(obj(e, `${section.path}.${kind}[${i}]`) ?? {}, 'endpoint_config'), path);
      if (cla === null || (cla['@type'] !== undefined && cla['@type'] !== CLA_TYPE)) return;
      out.push({
        clusterName: str(field(cla, 'cluster_name'), `${path}.cluster_name`),
        endpoints: list(cla.endpoints, `${path}.endpoints`).map((l, j) => readLocalityLbEndpoints(l, `${path}.endpoints[${j}]`)),
        json: withoutType(cla),
      });
    });
  }
  return out;
}

function readLocalityLbEndpoints(v: unknown, path: string): LocalityLbEndpoints {
  const l = obj(v, path) ?? {};
  const loc = obj(l.locality, `${path}.locality`);
  let locality = '';
  if (loc !== null) {
    const region = str(loc.region, `${path}.locality.region`);
    const zone = str(loc.zone, `${path}.locality.zone`);
    const subZone = str(field(loc, 'sub_zone'), `${path}.locality.sub_zone`);
    locality = zone === '' ? region : subZone === '' ? `${region}/${zone}` : `${region}/${zone}/${subZone}`;
  }
  return {
    locality,
    lbEndpoints: list(field(l, 'lb_endpoints'), `${path}.lb_endpoints`).map((e, i) => {
      const ep = `${path}.lb_endpoints[${i}]`;
      const lb = obj(e, ep) ?? {};
      const endpoint = obj(lb.endpoint, `${ep}.endpoint`) ?? {};
      const additional = list(field(endpoint, 'additional_addresses'), `${ep}.endpoint.additional_addresses`).map((a, j) =>
        readAddress((obj(a, `${ep}.endpoint.additional_addresses[${j}]`) ?? {}).address, `${ep}.endpoint.additional_addresses[${j}].address`),
      );
      return {
        addresses: [readAddress(endpoint.address, `${ep}.endpoint.address`), ...additional],
        healthStatus: enumName(field(lb, 'health_status'), `${ep}.health_status`, HEALTH_STATUSES),
        json: lb,
      };
    }),
    json: l,
  };
}

/** One SDS secret as the secrets table reads it. */
export interface DynamicSecret {
  readonly name: string;
  /** `tls_certificate.certificate_chain` (inline), or ''. */
  readonly certificateChain: string;
  /** `validation_context.trusted_ca` (inline), or ''. */
  readonly trustedCa: string;
  /** SPIFFE validator trust bundles (`[trust domain, PEM]`), or null when the secret has no SPIFFE validator. */
  readonly spiffeBundles: ReadonlyArray<readonly [string, string]> | null;
}

export interface SecretsDump {
  readonly active: readonly DynamicSecret[];
  readonly warming: readonly DynamicSecret[];
}

const SPIFFE_VALIDATOR = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';

export function readSecrets(section: Section): SecretsDump {
  const read = (kind: string): DynamicSecret[] =>
    list(field(section.json, kind), `${section.path}.${kind}`).map((e, i) => readDynamicSecret(e, `${section.path}.${kind}[${i}]`));
  return { active: read('dynamic_active_secrets'), warming: read('dynamic_warming_secrets') };
}

/** A `DataSource` with inline data: `inline_bytes` (as Envoy and SDS carry PEM), or `inline_string`. */
function inlineData(v: unknown, path: string): string {
  const ds = obj(v, path);
  if (ds === null) return '';
  if (field(ds, 'inline_bytes') !== undefined) return bytesText(field(ds, 'inline_bytes'), `${path}.inline_bytes`);
  return str(field(ds, 'inline_string'), `${path}.inline_string`);
}

function readDynamicSecret(v: unknown, path: string): DynamicSecret {
  const d = obj(v, path) ?? {};
  const s = obj(d.secret, `${path}.secret`) ?? {};
  const sp = `${path}.secret`;
  const tls = obj(field(s, 'tls_certificate'), `${sp}.tls_certificate`);
  const vc = obj(field(s, 'validation_context'), `${sp}.validation_context`);
  const custom = vc === null ? null : obj(field(vc, 'custom_validator_config'), `${sp}.validation_context.custom_validator_config`);
  const typed = custom === null ? null : obj(field(custom, 'typed_config'), `${sp}.validation_context.custom_validator_config.typed_config`);
  let spiffeBundles: Array<readonly [string, string]> | null = null;
  if (typed !== null && typed['@type'] === SPIFFE_VALIDATOR) {
    const tp = `${sp}.validation_context.custom_validator_config.typed_config`;
    spiffeBundles = list(field(typed, 'trust_domains'), `${tp}.trust_domains`).map((t, i) => {
      const td = obj(t, `${tp}.trust_domains[${i}]`) ?? {};
      return [str(td.name, `${tp}.trust_domains[${i}].name`), inlineData(field(td, 'trust_bundle'), `${tp}.trust_domains[${i}].trust_bundle`)] as const;
    });
  }
  return {
    name: str(d.name, `${path}.name`),
    certificateChain: tls === null ? '' : inlineData(field(tls, 'certificate_chain'), `${sp}.tls_certificate.certificate_chain`),
    trustedCa: vc === null ? '' : inlineData(field(vc, 'trusted_ca'), `${sp}.validation_context.trusted_ca`),
    spiffeBundles,
  };
}

/** What the bootstrap summary reads: the node's Istio metadata and Envoy's build version. */
export interface BootstrapNode {
  readonly metadata: Json;
  readonly version: { readonly major: number; readonly minor: number; readonly patch: number };
  readonly buildMetadata: Json;
}

export function readBootstrapNode(section: Section): BootstrapNode {
  const p = `${section.path}.bootstrap`;
  const bootstrap = obj(section.json.bootstrap, p) ?? {};
  const node = obj(bootstrap.node, `${p}.node`) ?? {};
  const ua = obj(field(node, 'user_agent_build_version'), `${p}.node.user_agent_build_version`) ?? {};
  const up = `${p}.node.user_agent_build_version`;
  const v = obj(ua.version, `${up}.version`) ?? {};
  return {
    metadata: obj(node.metadata, `${p}.node.metadata`) ?? {},
    version: { major: num(field(v, 'major_number'), `${up}.version.major_number`), minor: num(field(v, 'minor_number'), `${up}.version.minor_number`), patch: num(v.patch, `${up}.version.patch`) },
    buildMetadata: obj(ua.metadata, `${up}.metadata`) ?? {},
  };
}
