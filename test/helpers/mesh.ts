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
