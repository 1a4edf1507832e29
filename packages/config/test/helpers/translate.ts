// Shared set-up for the Istio translator tests: a sidecar and a gateway node, YAML in,
// validated resources and the translated model out, and small accessors that fail loudly
// when the model lacks what a test looks for.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  formatIssue,
  parseResources,
  translateIstio,
  validateResource,
  type Cluster,
  type ConfigIssue,
  type ForwardAction,
  type ListenerPorts,
  type ProxyConfig,
  type ProxyNode,
  type Resource,
  type Route,
  type RouteConfiguration,
  type VirtualHost,
} from '@remora/config';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root: `packages/config/test/helpers` is four levels down. */
export const REPO_ROOT = resolve(here, '../../../..');
/** Istio's bookinfo networking samples, beside the repository (shared/corpus). */
export const BOOKINFO_DIR = resolve(REPO_ROOT, '../shared/corpus/istio-samples/bookinfo/networking');

/** A bookinfo `productpage` sidecar in `default`, as Istio's agent would describe it. */
export const SIDECAR: ProxyNode = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'bookinfo-productpage',
  labels: { app: 'productpage', version: 'v1' },
  workloadName: 'productpage-v1',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};

/** The default ingress gateway (`istio: ingressgateway` in `istio-system`). */
export const INGRESS: ProxyNode = {
  ...SIDECAR,
  kind: 'gateway',
  namespace: 'istio-system',
  serviceAccount: 'istio-ingressgateway-service-account',
  labels: { istio: 'ingressgateway', app: 'istio-ingressgateway' },
  workloadName: 'istio-ingressgateway',
};

export const PORTS: ListenerPorts = {
  bindAddress: '0.0.0.0',
  outboundPort: 15001,
  inboundPort: 15006,
  appPort: null,
  appAddress: '127.0.0.1',
};

/** What istiod sets on a sidecar's outbound connection manager: Envoy's own server name, HTTP/1.0 refused. */
export const OUTBOUND_HCM = { serverName: 'envoy', serverHeaderTransformation: 'OVERWRITE', httpProtocolOptions: { acceptHttp10: false } } as const;
/** And on gateways and a sidecar's inbound side: `istio-envoy`. */
export const ISTIO_ENVOY_HCM = { ...OUTBOUND_HCM, serverName: 'istio-envoy' } as const;

/** The filters istiod ends every HTTP chain with: an empty Cors, then the Router. */
export const CHAIN_TAIL = [
  { name: 'envoy.filters.http.cors', config: {} },
  { name: 'envoy.filters.http.router', config: {} },
] as const;

/** A node like `base` with some fields replaced. */
export function nodeWith(base: ProxyNode, over: Partial<ProxyNode>): ProxyNode {
  return { ...base, ...over };
}

/**
 * Parses YAML and schema-validates every document: a test must only feed the translator
 * what `loadMesh` would (validation errors throw; validation warnings are returned).
 */
export function load(yaml: string, file = 'test.yaml', firstOrder = 0): { resources: Resource[]; warnings: string[] } {
  const parsed = parseResources(yaml, file, firstOrder);
  if (parsed.issues.length > 0) throw new Error(`parse failed: ${parsed.issues.map(formatIssue).join('; ')}`);
  const problems = parsed.resources.flatMap(validateResource);
  const errors = problems.filter((i) => i.severity === 'error');
  if (errors.length > 0) throw new Error(`invalid test resources:\n${errors.map(formatIssue).join('\n')}`);
  return { resources: parsed.resources, warnings: problems.map(formatIssue) };
}

export interface Translated {
  readonly config: ProxyConfig;
  readonly issues: readonly ConfigIssue[];
  /** `severity Kind ns/name path: message`, one per issue, for compact assertions. */
  readonly brief: string[];
}

/** YAML (one or several texts, later texts are younger) → the model for `node`. */
export function translate(yaml: string | readonly string[], node: ProxyNode = SIDECAR, ports: ListenerPorts = PORTS): Translated {
  const texts = typeof yaml === 'string' ? [yaml] : yaml;
  const resources: Resource[] = [];
  texts.forEach((text, i) => resources.push(...load(text, `test-${i}.yaml`, resources.length).resources));
  return translateResources(resources, node, ports);
}

export function translateResources(resources: readonly Resource[], node: ProxyNode = SIDECAR, ports: ListenerPorts = PORTS): Translated {
  const { config, issues } = translateIstio(resources, node, ports);
  const out = { config, issues, brief: issues.map(briefIssue) };
  translationRecorder?.(out);
  return out;
}

let translationRecorder: ((t: Translated) => void) | null = null;

/**
 * Calls `record` with every translation the translator tests make from now on: the importer
 * tests read each of those meshes back from Envoy's form.
 */
export function recordTranslations(record: ((t: Translated) => void) | null): void {
  translationRecorder = record;
}

export function briefIssue(i: ConfigIssue): string {
  return `${i.severity} ${i.kind} ${i.resource} ${i.path}: ${i.message}`;
}

export function routeTable(config: ProxyConfig, name: string): RouteConfiguration {
  const rc = config.routeConfigs.find((r) => r.name === name);
  if (!rc) throw new Error(`no route configuration ${name}; have ${config.routeConfigs.map((r) => r.name).join(', ')}`);
  return rc;
}

/**
 * The sidecar's outbound route table that serves `vhostName`: istiod's per-port table for a
 * `<host>:<port>` virtual host, else the one serving unlisted ports (every table carries the
 * hosts that are not services).
 */
export function outboundTable(config: ProxyConfig, vhostName = ''): string {
  const l = config.listeners.find((x) => x.name === 'virtualOutbound');
  if (!l) throw new Error('no virtualOutbound listener');
  const port = /:(\d+)$/.exec(vhostName)?.[1];
  return port !== undefined && l.routeConfigsByPort?.[port] !== undefined ? l.routeConfigsByPort[port] : l.routeConfig;
}

/** A virtual host by name (`reviews.default.svc.cluster.local:9080`) in a route table (default: the sidecar's outbound table for it). */
export function vhost(config: ProxyConfig, name: string, table = outboundTable(config, name)): VirtualHost {
  const rc = routeTable(config, table);
  const found = rc.virtualHosts.filter((v) => v.name === name);
  if (found.length !== 1) {
    throw new Error(`${found.length} virtual hosts named ${name} in ${table}; have ${rc.virtualHosts.map((v) => v.name).join(', ')}`);
  }
  return found[0]!;
}

/** The virtual hosts of a route table; default: of all the sidecar's outbound tables, each name once, by port table. */
export function vhostNames(config: ProxyConfig, table?: string): string[] {
  if (table !== undefined) return routeTable(config, table).virtualHosts.map((v) => v.name);
  const l = config.listeners.find((x) => x.name === 'virtualOutbound');
  const names = new Set<string>();
  for (const t of Object.values(l?.routeConfigsByPort ?? {})) for (const v of routeTable(config, t).virtualHosts) names.add(v.name);
  return [...names];
}

export function cluster(config: ProxyConfig, name: string): Cluster {
  const c = config.clusters.find((x) => x.name === name);
  if (!c) throw new Error(`no cluster ${name}; have ${config.clusters.map((x) => x.name).join(', ')}`);
  return c;
}

/** istiod's catch-all clusters, on every sidecar (translate-sidecar-listeners.test.ts checks them). */
export const CATCH_ALL_CLUSTERS = ['BlackHoleCluster', 'PassthroughCluster', 'InboundPassthroughCluster'];

/** The names of the service clusters (`outbound|…`, `inbound|…`), without istiod's catch-all clusters. */
export function clusterNames(config: ProxyConfig): string[] {
  return config.clusters.map((c) => c.name).filter((n) => !CATCH_ALL_CLUSTERS.includes(n));
}

export function forward(route: Route): ForwardAction {
  if (route.action.kind !== 'forward') throw new Error(`route ${route.name} is a ${route.action.kind}, not a forward`);
  return route.action;
}

/** `[cluster, weight]` pairs of a forwarding route. */
export function targets(route: Route): [string, number][] {
  return forward(route).clusters.map((c) => [c.cluster, c.weight]);
}

/** The text of a bookinfo sample, or null when the shared corpus is not there. */
export function bookinfo(file: string): string | null {
  const path = resolve(BOOKINFO_DIR, file);
  return existsSync(path) ? readFileSync(path, 'utf8') : null;
}

export const BOOKINFO_MISSING = `shared corpus not found at ${BOOKINFO_DIR} (it lives beside the repository, in shared/corpus)`;

/**
 * The bookinfo services as ServiceEntries, standing in for the Kubernetes Services of
 * Istio's samples: short hosts expand into the entry's namespace (Remora's convention), and
 * each version is one endpoint labelled `app`/`version` as the bookinfo pods are.
 */
export const BOOKINFO_SERVICES = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage}
spec:
  hosts: [productpage]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.10, labels: {app: productpage, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.1.1, labels: {app: reviews, version: v1}}
  - {address: 10.0.1.2, labels: {app: reviews, version: v2}}
  - {address: 10.0.1.3, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.2.1, labels: {app: ratings, version: v1}}
  - {address: 10.0.2.2, labels: {app: ratings, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details}
spec:
  hosts: [details]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.3.1, labels: {app: details, version: v1}}
  - {address: 10.0.3.2, labels: {app: details, version: v2}}
---
`;

/** `outbound|9080|<subset>|<name>.default.svc.cluster.local`, the bookinfo cluster names. */
export function bk(name: string, subset = '', port = 9080): string {
  return `outbound|${port}|${subset}|${name}.default.svc.cluster.local`;
}
