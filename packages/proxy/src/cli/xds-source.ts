/**
 * Config from an xDS control plane over one ADS stream, as Envoy takes it from istiod (through
 * Istio's agent): listeners and clusters by wildcard, then the route configurations the
 * listeners name and the load assignments of the EDS clusters. Every update is read into the
 * runtime's model together with everything held (Envoy's resources are the one model, so the
 * same importers read them as read translated Istio files); an update that does not read, or
 * does not compile, is NACKed with the reason and the running config stays.
 *
 * Warming, as Envoy: the first config goes live once listeners and clusters have arrived and
 * every route configuration and load assignment they name has too (or `initialFetchTimeoutMs`
 * passed, when set; Istio's bootstrap sets none). Later updates apply as they come, except
 * one that names a route configuration or load assignment not yet received: that waits (the
 * running config keeps serving) and goes live with what completes it. Envoy warms each
 * listener and cluster on its own; here the config warms as a whole.
 *
 * Loaded only when a proxy is told to use xDS: the client and Envoy's descriptors cost about
 * 0.3 s to load, which a file-driven proxy should not pay.
 */
import { createHash } from 'node:crypto';
import type { ProxyNode } from '@remora/config';
import type { EnvoyResources, SecretRef } from '@remora/config/envoy';
import { bootstrapJson, edsServiceName, envoyMessageType, envoyToJson, proxyConfigFromEnvoy, formatImportIssue, rdsNamesOf } from '@remora/config/envoy';
import type { ClusterJson } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import type { ClusterLoadAssignmentJson } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import type { ListenerJson } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import type { RouteConfigurationJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_pb.js';
import type { NodeJson } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import { AdsClient, TypeUrl, XdsStats, type AdsTransport, type XdsResource, type XdsVerdict } from '@remora/xds';
import type { Loggers } from '../logger.ts';
import type { ApplyConfig, ConfigSource, SourcedConfig, SourceStat } from './config-source.ts';
import type { ProxyOptions } from './options.ts';

export interface XdsSourceOptions {
  /** gRPC target: `unix:./etc/istio/proxy/XDS`, `127.0.0.1:15010`. */
  readonly target: string;
  readonly apiType: 'GRPC' | 'DELTA_GRPC';
  readonly transport?: AdsTransport;
  readonly setNodeOnFirstMessageOnly?: boolean;
  /** The node sent to the control plane (istiod decides what to push by it). */
  readonly node: NodeJson;
  /** Who the proxy is, for the runtime (metrics, locality). */
  readonly proxyNode: ProxyNode;
  /** Resources that do not come over the stream (a bootstrap's `static_resources`). */
  readonly staticResources?: EnvoyResources;
  /** Give up waiting for the first complete config after this; 0: wait as long as it takes. */
  readonly initialFetchTimeoutMs?: number;
  /** Reconnect backoff (tests shorten it). */
  readonly backoff?: { readonly baseMs: number; readonly maxMs: number };
}

const EMPTY: EnvoyResources = { listeners: [], routeConfigs: [], clusters: [], endpoints: [], secrets: [] };


export class XdsConfigSource implements ConfigSource {
  readonly client: AdsClient;
  readonly xdsStats = new XdsStats();
  readonly #opts: XdsSourceOptions;
  readonly #loggers: Loggers;
  readonly #listeners = new Map<string, ListenerJson>();
  readonly #routes = new Map<string, RouteConfigurationJson>();
  readonly #clusters = new Map<string, ClusterJson>();
  readonly #endpoints = new Map<string, ClusterLoadAssignmentJson>();
  readonly #versions = new Map<string, string>();
  /** Per type short name: when the type was last accepted, and each resource's version and arrival. */
  readonly #meta = new Map<string, { version: string; lastUpdated: string; resources: Map<string, { version: string; lastUpdated: string }> }>();
  readonly #seen = new Set<string>();
  #apply: ApplyConfig | null = null;
  #lastError: string | null = null;
  #firstDone = false;
  #resolveFirst: ((c: SourcedConfig | null) => void) | null = null;
  #firstTimer: NodeJS.Timeout | null = null;

  constructor(opts: XdsSourceOptions, loggers: Loggers) {
    this.#opts = opts;
    this.#loggers = loggers;
    const log = loggers.get('config');
    this.client = new AdsClient({
      target: opts.target,
      apiType: opts.apiType,
      ...(opts.transport ? { transport: opts.transport } : {}),
      node: opts.node,
      setNodeOnFirstMessageOnly: opts.setNodeOnFirstMessageOnly ?? true,
      onResources: (typeUrl, resources, removed, version) => this.#onResources(typeUrl, resources, removed, version),
      logger: { debug: (m) => log.debug(`xds: ${m}`), info: (m) => log.info(`xds: ${m}`), warn: (m) => log.warn(`xds: ${m}`) },
      stats: this.xdsStats,
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
    });
  }

  get lastError(): string | null {
    return this.#lastError;
  }

  /** Envoy's control-plane stats: `control_plane.connected_state`, `cluster_manager.cds.update_success`, ... */
  *statEntries(): Iterable<SourceStat> {
    for (const [name, value] of this.xdsStats.counters) yield [name, value, 'counter'];
    for (const [name, value] of this.xdsStats.gauges) yield [name, value, 'gauge'];
  }

  first(): Promise<SourcedConfig | null> {
    return new Promise((resolve) => {
      this.#resolveFirst = resolve;
      const timeout = this.#opts.initialFetchTimeoutMs ?? 0;
      if (timeout > 0) {
        this.#firstTimer = setTimeout(() => {
          this.#loggers.get('config').warn(`xds: no complete config within ${timeout} ms; starting with what has arrived`);
          this.#finishFirst(true);
        }, timeout);
        this.#firstTimer.unref();
      }
      this.client.start();
    });
  }

  watch(apply: ApplyConfig): void {
    this.#apply = apply;
  }

  close(): void {
    if (this.#firstTimer) clearTimeout(this.#firstTimer);
    this.client.close();
    if (!this.#firstDone) {
      this.#firstDone = true;
      this.#resolveFirst?.(null);
    }
  }

  async #onResources(typeUrl: string, resources: readonly XdsResource[], removed: readonly string[], version: string): Promise<XdsVerdict> {
    const map = this.#mapOf(typeUrl);
    if (map === null) return { ok: false, message: `${typeUrl}: not a resource type this proxy takes over ADS` };
    const schema = envoyMessageType(typeUrl);
    if (schema === undefined) return { ok: false, message: `${typeUrl}: no schema` };
    const before = new Map(map);
    const short = typeUrl.slice(typeUrl.lastIndexOf('.') + 1);
    const metaBefore = this.#meta.get(short);
    const now = new Date().toISOString();
    const meta = { version, lastUpdated: now, resources: new Map(metaBefore?.resources ?? []) };
    for (const name of removed) {
      map.delete(name);
      meta.resources.delete(name);
    }
    for (const r of resources) {
      map.set(r.name, envoyToJson(schema, r.message as never) as never);
      meta.resources.set(r.name, { version: r.version, lastUpdated: now });
    }
    // A state-of-the-world Listener or Cluster response is the whole set: what it left out is gone.
    for (const name of [...meta.resources.keys()]) if (!map.has(name)) meta.resources.delete(name);
    this.#meta.set(short, meta);
    this.#seen.add(typeUrl);
    const previousVersion = this.#versions.get(typeUrl);
    this.#versions.set(typeUrl, version);
    const undo = (): void => {
      map.clear();
      for (const [k, v] of before) map.set(k, v);
      if (previousVersion === undefined) this.#versions.delete(typeUrl);
      else this.#versions.set(typeUrl, previousVersion);
      if (metaBefore === undefined) this.#meta.delete(short);
      else this.#meta.set(short, metaBefore);
    };

    const imported = this.#import();
    const errors = imported.issues.filter((i) => i.severity === 'error');
    if (errors.length > 0) {
      undo();
      const message = errors.map(formatImportIssue).join('; ');
      this.#lastError = message;
      this.#loggers.get('config').error(`xds: rejected ${typeUrl.slice(typeUrl.lastIndexOf('.') + 1)} version ${version}: ${message}`);
      return { ok: false, message };
    }
    for (const w of imported.issues) this.#loggers.get('config').warn(`xds: ${formatImportIssue(w)}`);
    this.#follow();

    if (!this.#firstDone) {
      this.#finishFirst(false, imported);
      return { ok: true };
    }
    const apply = this.#apply;
    if (apply === null) return { ok: true };
    if (!this.#warm()) {
      // Envoy warms: a listener waits for its route configuration, a cluster for its endpoints.
      // The update is taken (ACKed) and goes live with the rest; the running config serves meanwhile.
      this.#loggers.get('config').debug(`xds: ${short} version ${version} waits for the route configurations and endpoints it names`);
      return { ok: true };
    }
    const problem = await apply({ config: imported.config, timings: null });
    if (problem !== null) {
      undo();
      this.#lastError = problem;
      return { ok: false, message: problem };
    }
    this.#lastError = null;
    return { ok: true };
  }

  /** Asks for what the listeners and clusters held now refer to, and stops asking for the rest. */
  #follow(): void {
    const routeNames = this.#subscribed(TypeUrl.RouteConfiguration);
    const edsNames = this.#subscribed(TypeUrl.ClusterLoadAssignment);
    this.client.setSubscription(TypeUrl.RouteConfiguration, routeNames);
    this.client.setSubscription(TypeUrl.ClusterLoadAssignment, edsNames);
    for (const name of [...this.#routes.keys()]) if (!routeNames.has(name)) this.#routes.delete(name);
    for (const name of [...this.#endpoints.keys()]) if (!edsNames.has(name)) this.#endpoints.delete(name);
  }

  /** Whether the first config may go live: listeners and clusters in, and all they name. */
  #warm(): boolean {
    if (!this.#seen.has(TypeUrl.Listener) || !this.#seen.has(TypeUrl.Cluster)) return false;
    const wantRoutes = this.#subscribed(TypeUrl.RouteConfiguration);
    const wantEndpoints = this.#subscribed(TypeUrl.ClusterLoadAssignment);
    return [...wantRoutes].every((n) => this.#routes.has(n)) && [...wantEndpoints].every((n) => this.#endpoints.has(n));
  }

  /** The route configurations the listeners name, or the load assignments of the EDS clusters (static ones included). */
  #subscribed(typeUrl: string): Set<string> {
    const s = this.#opts.staticResources ?? EMPTY;
    const names = new Set<string>();
    if (typeUrl === TypeUrl.RouteConfiguration) {
      for (const l of [...s.listeners, ...this.#listeners.values()]) for (const n of rdsNamesOf(l)) names.add(n);
      for (const rc of s.routeConfigs) names.delete(rc.name ?? '');
    } else {
      for (const c of [...s.clusters, ...this.#clusters.values()]) {
        const service = edsServiceName(c);
        if (service !== null) names.add(service);
      }
    }
    return names;
  }

  /** Hands over the first config once warm (or when `force`d by the timeout); `imported`: what the caller just imported, if anything. */
  #finishFirst(force: boolean, just?: ReturnType<typeof proxyConfigFromEnvoy>): void {
    if (this.#firstDone || (!force && !this.#warm())) return;
    const imported = just ?? this.#import();
    if (imported.issues.some((i) => i.severity === 'error')) return;
    this.#firstDone = true;
    if (this.#firstTimer) clearTimeout(this.#firstTimer);
    this.#resolveFirst?.({ config: imported.config, timings: null });
  }

  #import(): ReturnType<typeof proxyConfigFromEnvoy> {
    const s = this.#opts.staticResources ?? EMPTY;
    const resources: EnvoyResources = {
      listeners: [...s.listeners, ...this.#listeners.values()],
      routeConfigs: [...s.routeConfigs, ...this.#routes.values()],
      clusters: [...s.clusters, ...this.#clusters.values()],
      endpoints: [...s.endpoints, ...[...this.#endpoints.values()].map((assignment) => ({ assignment, eds: true }))],
      secrets: s.secrets as SecretRef[],
      versions: Object.fromEntries(
        [...this.#meta].map(([type, m]) => [type, { version: m.version, lastUpdated: m.lastUpdated, resources: Object.fromEntries(m.resources) }]),
      ),
    };
    const version = createHash('sha256')
      .update([...this.#versions].sort().map(([t, v]) => `${t}=${v}`).join('\n'))
      .digest('hex')
      .slice(0, 16);
    return proxyConfigFromEnvoy(resources, this.#opts.proxyNode, version);
  }

  #mapOf(typeUrl: string): Map<string, unknown> | null {
    switch (typeUrl) {
      case TypeUrl.Listener:
        return this.#listeners;
      case TypeUrl.RouteConfiguration:
        return this.#routes;
      case TypeUrl.Cluster:
        return this.#clusters;
      case TypeUrl.ClusterLoadAssignment:
        return this.#endpoints;
      default:
        return null;
    }
  }
}


/** `--xds-address`: the config from an ADS server, with the node built from the flags as Istio's agent builds it. */
export function xdsSourceFromOptions(opts: ProxyOptions, loggers: Loggers): XdsConfigSource {
  const xds = opts.xds!;
  const node = bootstrapJson(opts.node, { ip: process.env.INSTANCE_IP ?? '127.0.0.1', adminAddress: '127.0.0.1', adminPort: opts.adminPort }).node ?? {};
  return new XdsConfigSource({ target: xds.address, apiType: xds.delta ? 'DELTA_GRPC' : 'GRPC', node, proxyNode: opts.node, setNodeOnFirstMessageOnly: true }, loggers);
}
