/**
 * Small builders for the Istio YAML that tests write. They produce plain YAML text, so a
 * test reads like the resources a user would write.
 */

export interface EndpointSpec {
  readonly port: number;
  readonly labels?: Record<string, string>;
  readonly address?: string;
}

const labelsYaml = (labels: Record<string, string> | undefined): string =>
  labels && Object.keys(labels).length > 0 ? `{ ${Object.entries(labels).map(([k, v]) => `${k}: "${v}"`).join(', ')} }` : '{}';

/** A STATIC ServiceEntry: `host` (short names expand into `namespace`), one HTTP port, local endpoints. */
export function serviceEntry(name: string, host: string, endpoints: EndpointSpec[], opts: { namespace?: string; port?: number; portName?: string } = {}): string {
  const portName = opts.portName ?? 'http';
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${name}
  namespace: ${opts.namespace ?? 'default'}
spec:
  hosts: ["${host}"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: ${opts.port ?? 80}, name: ${portName}, protocol: HTTP }
  endpoints:
${endpoints.map((e) => `  - { address: ${e.address ?? '127.0.0.1'}, ports: { ${portName}: ${e.port} }, labels: ${labelsYaml(e.labels)} }`).join('\n')}
`;
}

/** A Gateway selecting the default gateway labels, one HTTP server on `port` for `hosts`. */
export function gateway(name: string, port: number, hosts: string[] = ['*'], namespace = 'default'): string {
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: http, protocol: HTTP }
    hosts: [${hosts.map((h) => `"${h}"`).join(', ')}]
`;
}

/** A VirtualService bound to `gatewayName` sending every request to the service `host`. */
export function routeAll(gatewayName: string, host = 'web'): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${host} }
spec:
  hosts: ["*"]
  gateways: [${gatewayName}]
  http:
  - route: [{ destination: { host: ${host} } }]
`;
}

export const doc = (...parts: string[]): string => parts.join('---\n');

/** A DestinationRule for `host` with one subset per version (`labels: { version }`), named as the host. */
export function versionSubsets(host: string, versions: readonly string[]): string {
  const subsets = versions.map((v) => `  - { name: ${v}, labels: { version: ${v} } }\n`).join('');
  return `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: ${host} }\nspec:\n  host: ${host}\n  subsets:\n${subsets}`;
}

export interface GatewayLocalRateLimit {
  readonly maxTokens: number;
  /** Default: `maxTokens`. */
  readonly tokensPerFill?: number;
  /** Default: `60s`. */
  readonly fillInterval?: string;
  /** The patch operation (default `INSERT_BEFORE`) and the filter it is relative to (default the router; null: none). */
  readonly operation?: string;
  readonly subFilter?: string | null;
  /** Add Istio's example `x-local-rate-limit: true` to refused responses. */
  readonly responseHeader?: boolean;
}

/**
 * Istio's "Enabling Rate Limits using Envoy" EnvoyFilter: a local rate limit (TypedStruct, as
 * the istio.io page writes it) on the ingress gateway's HTTP chain, 100 % enabled and enforced.
 */
export function gatewayLocalRateLimit(o: GatewayLocalRateLimit): string {
  const subFilter = o.subFilter === undefined ? 'envoy.filters.http.router' : o.subFilter;
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: filter-local-ratelimit-gw, namespace: istio-system }
spec:
  workloadSelector:
    labels: { istio: ingressgateway }
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
${subFilter === null ? '' : `              subFilter:\n                name: "${subFilter}"\n`}      patch:
        operation: ${o.operation ?? 'INSERT_BEFORE'}
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket:
                max_tokens: ${o.maxTokens}
                tokens_per_fill: ${o.tokensPerFill ?? o.maxTokens}
                fill_interval: ${o.fillInterval ?? '60s'}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: { numerator: 100, denominator: HUNDRED }
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: { numerator: 100, denominator: HUNDRED }
${o.responseHeader === true ? `              response_headers_to_add:
                - append: false
                  header:
                    key: x-local-rate-limit
                    value: 'true'
` : ''}`;
}

/** A VirtualService with a misspelt field (`weigth`), on line 7 of its file: a config the proxy must refuse, naming file, resource and field. */
export const MISSPELT_VIRTUAL_SERVICE = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: broken }
spec:
  hosts: [x]
  http:
  - route: [{ destination: { host: x }, weigth: 10 }]
`;
