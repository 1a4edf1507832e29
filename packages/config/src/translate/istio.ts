import { createHash } from 'node:crypto';
import { formatIssue, type ConfigIssue } from '../errors.ts';
import type { Cluster } from '../model/cluster.ts';
import type { HttpFilterConfig, Listener, TcpRoute, TlsServer } from '../model/listener.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { Route, RouteConfiguration, VirtualHost } from '../model/route.ts';
import type { IstioGateway, IstioServer, IstioVirtualService } from '../resources/istio-networking.ts';
import type { Resource } from '../resources/resource.ts';
import { buildOutboundClusters, PASSTHROUGH_CLUSTER, sidecarPassthroughClusters, type ClusterOptions } from './clusters.ts';
import { credentialFiles, DEFAULT_CREDENTIALS_DIR } from './credentials.ts';
import { connectionManagerFor } from './connection-manager.ts';
import { TranslateContext } from './context.ts';
import { DestinationRuleIndex } from './destination-rule.ts';
import { FAULT_FILTER } from './fault.ts';
import { httpFilterChain } from './http-filter-chain.ts';
import { localRateLimitFilter } from './local-ratelimit.ts';
import { inboundMtlsMode } from './peer-authentication.ts';
import { boundListenerAddress, outboundTrafficMode, sidecarScope, type SidecarScope } from './sidecar-scope.ts';
import {
  defaultRoute,
  INBOUND_CATCH_ALL,
  inboundCluster,
  inboundFamily,
  inboundPorts,
  inboundTcpRoute,
  outboundCatchAll,
  PROTOCOL_DETECTION_TIMEOUT_MS,
  selectsWorkload,
  sidecarOutboundListeners,
  weightedTcpClusters,
} from './sidecar-listeners.ts';
import { authzFilters, NO_AUTHZ } from './security.ts';
import { proxySettings, type ProxyConfigAnnotation, type ProxySettings } from './proxy-settings.ts';
import { DEFAULT_MESH_CONFIG, type MeshConfig, type OutboundTrafficMode } from '../schema/mesh-config.ts';
import { jwtAuthnFilter } from './request-authentication.ts';
import { hostCovers, hostSpecificity, intersectHosts, resolveHost, serviceHostAliases } from './host.ts';
import { nameTable } from './name-table.ts';
import { applyTelemetry, meshFileAccessLog } from './telemetry.ts';
import { isHttpFamily, isHttpProtocol, labelsMatch, portProtocol, ServiceRegistry, type MeshService } from './registry.ts';
import {
  defaultRetryPolicy,
  gatewayRefs,
  MATCH_ALL,
  outboundClusterName,
  translateHttpRoutes,
  type MeshIndex,
} from './virtual-service.ts';

export interface TranslateOptions extends ClusterOptions {
  /** Istio's MeshConfig (the `mesh` ConfigMap): extension providers for CUSTOM policies; absent: Istio's defaults. */
  readonly mesh?: MeshConfig;
  /** The pod's `proxy.istio.io/config` annotation: merged over every other proxy settings source. */
  readonly proxyConfigAnnotation?: ProxyConfigAnnotation;
  /**
   * HTTP filters registered with the proxy beyond Envoy's it runs (`--filter <module>`): an
   * EnvoyFilter may insert them by name, with a TypedStruct typed_config whose `type_url` is
   * `type.googleapis.com/remora.<name>`.
   */
  readonly extensionFilters?: ReadonlySet<string>;
}

export const DEFAULT_TRANSLATE_OPTIONS: TranslateOptions = { dnsRefreshMs: 60_000 };

export interface TranslateResult {
  readonly config: ProxyConfig;
  /** Errors make the config unusable; warnings are worth printing but change nothing. */
  readonly issues: readonly ConfigIssue[];
  /** The proxy settings for this workload: MeshConfig defaultConfig merged with the ProxyConfig resources that apply. */
  readonly proxySettings: ProxySettings;
}

/**
 * Istio resources → the proxy model for one node, as istiod would compute Envoy config for
 * that proxy. Resources must already be schema-valid. Never throws for bad input: problems
 * come back as issues. EnvoyFilters are not applied here: they patch Envoy's resources, which
 * `translateIstioToEnvoy` (istio-envoy.ts) exports from this model; one given here is ignored.
 */
export function translateIstio(
  resources: readonly Resource[],
  node: ProxyNode,
  ports: ListenerPorts,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): TranslateResult {
  const ctx = new TranslateContext(resources, node, ports, options.mesh ?? DEFAULT_MESH_CONFIG, options.extensionFilters);
  const registry = new ServiceRegistry(ctx);
  const rules = new DestinationRuleIndex(ctx, options.credentialsDir);
  const clusters = buildOutboundClusters(ctx, registry, rules, options);
  const listeners: Listener[] = [];
  const routeConfigs: RouteConfiguration[] = [];

  if (node.kind === 'sidecar') {
    const side = sidecarListeners(ctx, { registry, rules }, options);
    listeners.push(...side.listeners);
    routeConfigs.push(...side.routeConfigs);
    clusters.push(...side.clusters);
  } else {
    const gw = gatewayListeners(ctx, { registry, rules }, options);
    listeners.push(...gw.listeners);
    routeConfigs.push(...gw.routeConfigs);
  }

  // MeshConfig's accessLogFile: istiod's file logger on every connection manager and tcp_proxy.
  const accessLog = ctx.mesh.accessLog === undefined || ctx.mesh.accessLog.file === '' ? null : meshFileAccessLog(ctx.mesh.accessLog.file, ctx.mesh.accessLog);
  if (accessLog !== null) for (let i = 0; i < listeners.length; i++) listeners[i] = { ...listeners[i]!, accessLog };

  const version = createHash('sha256')
    .update(JSON.stringify(resources.map((r) => r.document)))
    .update(JSON.stringify(node))
    .update(JSON.stringify(ports))
    // The MeshConfig changes the config too (extension providers): a change to it alone is a new version.
    .update(JSON.stringify(options.mesh ?? null))
    .update(JSON.stringify(options.proxyConfigAnnotation?.settings ?? null))
    .digest('hex')
    .slice(0, 16);
  // istiod's NDS name table: what the sidecar's DNS proxy answers.
  const names = node.kind === 'sidecar' ? nameTable(ctx, registry) : [];
  const settings = proxySettings(ctx, options.proxyConfigAnnotation);
  // The Telemetry resources' tracing, access logging and metrics (istiod's configureTracing, AccessLogBuilder, telemetryFilters).
  const traced = applyTelemetry(ctx, registry, listeners, clusters);
  return { config: { version, node, listeners: traced, routeConfigs, clusters, ...(names.length > 0 ? { nameTable: names } : {}) }, issues: dedupe(ctx.issues), proxySettings: settings };
}


/**
 * A sidecar's listeners and clusters as istiod builds them for a captured pod:
 * - `virtualOutbound` on the outbound port (`useOriginalDst`): redirected connections go to
 *   the per-port listener of their destination, the rest to the outbound traffic policy's
 *   catch-all; a connection made to it directly is served by its own HTTP chain, routing by
 *   Host through the per-port tables.
 * - the per-port outbound listeners (sidecar-listeners.ts), not bound to their ports.
 * - `virtualInbound` on the inbound port (`useOriginalDst`), catch-all InboundPassthroughCluster,
 *   its own chain the `--app-port` chain for direct connections (without an app port: the
 *   catch-all). Built when the workload serves a port: `--app-port` or a port of a service
 *   selecting it.
 * - per inbound port, `inbound_0.0.0.0_<port>` (istiod's filter chain `0.0.0.0_<port>` of
 *   virtualInbound, named as its stat prefix, which is also the name the Envoy importer gives
 *   such a chain; it must differ from the outbound listener `0.0.0.0_<port>`):
 *   address 0.0.0.0, the inbound port, `destinationPort` the app's port; HTTP with the
 *   inbound filters, TCP to `inbound|<port>||`, sniffed for a port of unknown protocol, each
 *   with the port's PeerAuthentication mTLS mode.
 * - PassthroughCluster, BlackHoleCluster and InboundPassthroughCluster.
 */
function sidecarListeners(
  ctx: TranslateContext,
  mesh: MeshIndex,
  options: TranslateOptions,
): { listeners: Listener[]; routeConfigs: RouteConfiguration[]; clusters: Cluster[] } {
  const { node, ports } = ctx;
  const meshConfig = options.mesh ?? DEFAULT_MESH_CONFIG;
  const scope = sidecarScope(ctx);
  const mode = outboundTrafficMode(scope, meshConfig.outboundTrafficPolicy);
  const detectionTimeoutMs = meshConfig.protocolDetectionTimeoutMs ?? PROTOCOL_DETECTION_TIMEOUT_MS;
  const listeners: Listener[] = [];
  const routeConfigs: RouteConfiguration[] = [];
  const clusters: Cluster[] = [];

  const outbound = sidecarOutboundRoutes(ctx, mesh, scope, mode);
  // A Sidecar's per-port egress listener decides what its port's table holds: its own hosts (istiod's shared table `<port>`).
  // A unix domain socket listener's table is its bind (istiod's RDS name for port 0): its hosts on every HTTP port.
  const httpEgress = (scope?.egressListeners ?? []).filter((e) => isHttpFamily(e.protocol));
  const pipeTables: RouteConfiguration[] = [];
  for (const e of httpEgress) {
    const tables = sidecarOutboundRoutes(ctx, mesh, e.scope, mode, e.port === 0 ? undefined : e.port);
    if (e.port === 0) {
      pipeTables.push(mergedTable(e.bound!.address, tables));
      continue;
    }
    const name = String(e.port);
    const table = tables.find((rc) => rc.name === name)!;
    const at = outbound.findIndex((rc) => rc.name === name);
    if (at >= 0) outbound[at] = table;
    else outbound.push(table);
  }
  routeConfigs.push(...outbound, ...pipeTables);
  const byPort: Record<string, string> = {};
  for (const rc of outbound) byPort[rc.name] = rc.name;
  const outboundFilters = (port: number, tables: readonly RouteConfiguration[]): HttpFilterConfig[] =>
    httpFilterChain('SIDECAR_OUTBOUND', {
      jwtAuthn: null,
      authz: NO_AUTHZ,
      localRateLimit: localRateLimitFilter(ctx, 'SIDECAR_OUTBOUND', port),
      fault: tables.some(hasFault) ? FAULT_FILTER_CONFIG : null,
    });
  const catchAll = outboundCatchAll(mode);
  listeners.push({
    name: 'virtualOutbound',
    address: ports.bindAddress,
    port: ports.outboundPort,
    connectionManager: connectionManagerFor(node, 'outbound'),
    direction: 'outbound',
    // Every table holds the hosts that are not services, so any one serves unlisted ports.
    routeConfig: outbound[0]!.name,
    routeConfigsByPort: byPort,
    httpFilters: outboundFilters(ports.outboundPort, outbound),
    tls: null,
    useOriginalDst: true,
    catchAll: [catchAll],
  });
  const perPort = sidecarOutboundListeners({
    ctx,
    mesh,
    scope,
    mode,
    tables: outbound,
    detectionTimeoutMs,
    httpFilters: (port, table) => outboundFilters(port, table === undefined ? [] : [table]),
  });
  listeners.push(...perPort.listeners);
  routeConfigs.push(...perPort.routeConfigs);
  // captureMode NONE, a bind address or a unix domain socket: the app talks to `bind:port` (or the socket) itself.
  for (const e of httpEgress) {
    if (e.bound === null) continue;
    const table = e.port === 0 ? pipeTables.find((rc) => rc.name === e.bound!.address)! : outbound.find((rc) => rc.name === String(e.port))!;
    listeners.push({
      ...boundListenerAddress(e.bound.address, e.port),
      connectionManager: connectionManagerFor(node, 'outbound'),
      direction: 'outbound',
      routeConfig: table.name,
      httpFilters: outboundFilters(e.port, [table]),
      tls: null,
    });
  }

  // A Sidecar with ingress listeners names the inbound ports itself (istiod: instead of the services').
  const inbound = inboundPorts(ctx, mesh.registry, scope);
  if (inbound.length > 0) {
    const own = [...mesh.registry.services()].find((svc) => !svc.host.startsWith('*') && selectsWorkload(ctx, svc)) ?? null;
    const jwtAuthn = jwtAuthnFilter(ctx);
    const authz = authzFilters(ctx, meshConfig, mesh.registry);
    const inboundListeners: Listener[] = [];
    for (const p of inbound) {
      const cluster = inboundCluster(ctx, p, own);
      clusters.push(cluster);
      // Server-side policy runs where Istio runs it: the inbound side of the selected workload.
      const mtls = inboundMtlsMode(ctx, p.port);
      // A Sidecar ingress listener's `tls` terminates with its own files instead of Istio mTLS.
      const ingressTls = p.ingress?.tls ?? null;
      const tls = ingressTls !== null ? { kind: 'gateway' as const, servers: [ingressTls] } : mtls === 'DISABLE' ? null : { kind: 'mesh' as const, mode: mtls };
      const bound = p.ingress?.bound ?? null;
      const base = bound !== null
        ? // captureMode NONE: the listener binds the port itself; clients reach it directly.
          { name: `${bound.address}_${p.port}`, address: bound.address, port: p.port, direction: 'inbound' as const, tls }
        : {
            name: `inbound_0.0.0.0_${p.port}`,
            address: '0.0.0.0',
            port: ports.inboundPort,
            direction: 'inbound' as const,
            tls,
            // Captured traffic was addressed to the app's port: AuthorizationPolicy `ports` and
            // `destination.port` see that, as Envoy sees the original destination.
            destinationPort: p.port,
            bindToPort: false,
          };
      const family = inboundFamily(p);
      if (family === 'tcp') {
        // istiod's metadata exchange (PILOT_ENABLE_METADATA_EXCHANGE, on by default): the client's workload labels istio_tcp_*.
        inboundListeners.push({ ...base, routeConfig: `tcp.${p.port}`, httpFilters: [], tcpProxy: [inboundTcpRoute(ctx, p, cluster.name)], metadataExchange: true });
        continue;
      }
      // istiod names the inbound route configuration after the cluster it routes to; Istio does not retry inbound.
      routeConfigs.push({
        name: cluster.name,
        virtualHosts: [{ name: `inbound|http|${p.port}`, domains: ['*'], routes: [defaultRoute(cluster.name, null)], requireTls: false }],
        ignorePortInHostMatching: true,
      });
      inboundListeners.push({
        ...base,
        connectionManager: connectionManagerFor(node, 'inbound'),
        routeConfig: cluster.name,
        httpFilters: httpFilterChain('SIDECAR_INBOUND', {
          jwtAuthn,
          authz,
          localRateLimit: localRateLimitFilter(ctx, 'SIDECAR_INBOUND', p.port === ports.appPort ? ports.inboundPort : p.port),
          fault: null,
        }),
        ...(family === 'auto' ? { detectProtocol: { tcp: [inboundTcpRoute(ctx, p, cluster.name)], timeoutMs: detectionTimeoutMs } } : {}),
      });
    }
    // virtualInbound's own chain serves connections made to the inbound port directly: the
    // `--app-port` chain (as before capture), else the catch-all.
    const app = inboundListeners.find((l) => l.destinationPort !== undefined && l.destinationPort === ports.appPort);
    const capture = { name: 'virtualInbound', address: ports.bindAddress, port: ports.inboundPort, useOriginalDst: true, catchAll: [INBOUND_CATCH_ALL] };
    if (app !== undefined) {
      const { bindToPort: _, ...chain } = app;
      listeners.push({ ...chain, ...capture });
    } else {
      listeners.push({ ...capture, direction: 'inbound', routeConfig: `tcp.${ports.inboundPort}`, httpFilters: [], tls: null, tcpProxy: [INBOUND_CATCH_ALL] });
    }
    listeners.push(...inboundListeners);
  }
  clusters.push(...sidecarPassthroughClusters());
  return { listeners, routeConfigs, clusters };
}

/** One table of every port's virtual hosts (each named `<host>:<port>`), the hosts that are no service once. */
function mergedTable(name: string, tables: readonly RouteConfiguration[]): RouteConfiguration {
  const seen = new Set<string>();
  const virtualHosts: VirtualHost[] = [];
  for (const t of tables) {
    for (const vh of t.virtualHosts) {
      if (seen.has(vh.name)) continue;
      seen.add(vh.name);
      virtualHosts.push(vh);
    }
  }
  // The catch-all (`*`) virtual host last, whichever table it came from.
  virtualHosts.sort((a, b) => Number(a.domains.includes('*')) - Number(b.domains.includes('*')));
  return { name, virtualHosts, ignorePortInHostMatching: false };
}

/**
 * The outbound route tables, one per HTTP service port and named after it as istiod names
 * them (`9080`): a virtual host per service on that port, answering every name a client may
 * use for it (`reviews:9080`, `reviews.default:9080`, …, the FQDN, the service's addresses,
 * and the names without a port on the service's default port). The routes come from the mesh
 * VirtualService for the host (the most specific, then the oldest), or a default route to
 * the service. Hosts that are no service (VirtualService-only names, REGISTRY_ONLY's
 * block_all) answer on any port, so every table carries them.
 */
function sidecarOutboundRoutes(ctx: TranslateContext, mesh: MeshIndex, scope: SidecarScope | null, mode: OutboundTrafficMode, withPort?: number): RouteConfiguration[] {
  const { registry } = mesh;
  const { node } = ctx;
  // `scope`: Istio's Sidecar resource, whose egress hosts limit what this sidecar's outbound side sees.
  const hostsOf = (vs: Resource): string[] =>
    ((vs.spec as IstioVirtualService).hosts ?? [])
      .map((h) => resolveHost(h, vs.metadata.namespace, node.clusterDomain))
      .filter((h) => scope === null || scope.allows(vs.metadata.namespace, h));
  const meshServices = ctx
    .resourcesOf('VirtualService')
    .filter((vs) => ctx.isVisible(vs) && gatewayRefs(vs, (vs.spec as IstioVirtualService).gateways).has('mesh') && hostsOf(vs).length > 0);

  const byPort = new Map<number, VirtualHost[]>();
  const routed: MeshService[] = [];
  for (const svc of registry.services()) {
    if (svc.host.startsWith('*')) continue;
    if (scope !== null && !scope.allows(svc.namespace, svc.host)) continue;
    const httpPorts = svc.ports.filter((p) => isHttpProtocol(portProtocol(p)));
    if (httpPorts.length === 0) continue;
    let best: { vs: Resource; score: number } | null = null;
    for (const vs of meshServices) {
      for (const h of hostsOf(vs)) {
        if (!hostCovers(h, svc.host)) continue;
        const score = hostSpecificity(h);
        if (best === null || score > best.score) best = { vs, score };
      }
    }
    routed.push(svc);
    const defaultPort = defaultServicePort(svc);
    const aliases = serviceHostAliases(svc.host, node.clusterDomain, node.namespace);
    for (const port of httpPorts) {
      const domains: string[] = [];
      for (const a of [...aliases, ...svc.addresses]) {
        domains.push(`${a}:${port.number}`);
        if (port.number === defaultPort) domains.push(a);
      }
      const vsRoutes = best
        ? translateHttpRoutes(ctx, mesh, best.vs, { gateway: 'mesh', port: port.number, servicePortHost: svc.host })
        : [];
      // A VirtualService that yields no route for this port (every match block is for another
      // port or other sources) leaves the service its default route, as in Istio.
      const routes = vsRoutes.length > 0 ? vsRoutes : [defaultRoute(outboundClusterName(port.number, '', svc.host), defaultRetryPolicy(ctx))];
      let vhosts = byPort.get(port.number);
      if (vhosts === undefined) byPort.set(port.number, (vhosts = []));
      vhosts.push({ name: `${svc.host}:${port.number}`, domains, routes, requireTls: false });
    }
  }
  // VirtualService hosts that name no routed service still route (e.g. a name routed to a
  // service), even when the same VirtualService also names services (Istio's
  // separateVSHostsAndServices); the oldest VirtualService wins a host named twice.
  const anyPort: VirtualHost[] = [];
  const hostsDone = new Set<string>();
  for (const vs of meshServices) {
    for (const h of hostsOf(vs)) {
      if (hostsDone.has(h) || routed.some((svc) => hostCovers(h, svc.host))) continue;
      hostsDone.add(h);
      const routes = translateHttpRoutes(ctx, mesh, vs, { gateway: 'mesh', port: 80, servicePortHost: null });
      if (routes.length === 0) continue;
      anyPort.push({ name: h, domains: h === '*' ? ['*'] : [h, `${h}:*`], routes, requireTls: false });
    }
  }
  // Any other host: istiod's catch-all virtual host by the outbound traffic policy, allow_any
  // to PassthroughCluster (the request goes where the app sent it) or block_all's 502.
  if (!anyPort.some((v) => v.domains.includes('*'))) {
    anyPort.push(mode === 'REGISTRY_ONLY'
      ? { name: 'block_all', domains: ['*'], routes: [blockAllRoute()], requireTls: false }
      : { name: 'allow_any', domains: ['*'], routes: [allowAnyRoute()], requireTls: false });
  }
  // No HTTP service port at all: one table on HTTP's port still answers the other hosts.
  if (withPort !== undefined && !byPort.has(withPort)) byPort.set(withPort, []);
  if (byPort.size === 0) byPort.set(80, []);
  return [...byPort].map(([port, vhosts]) => ({ name: String(port), virtualHosts: [...vhosts, ...anyPort], ignorePortInHostMatching: false }));
}

/** The port a Host header without `:port` means: 80 if the service has it, else its first HTTP port. */
function defaultServicePort(svc: MeshService): number {
  const http = svc.ports.filter((p) => isHttpProtocol(portProtocol(p)));
  return http.some((p) => p.number === 80) ? 80 : (http[0]?.number ?? 80);
}

/** Istio's allow_any route (ALLOW_ANY): to PassthroughCluster, no timeout, no retries. */
function allowAnyRoute(): Route {
  const route = defaultRoute(PASSTHROUGH_CLUSTER, null);
  return { ...route, name: 'allow_any' };
}

/** Istio's block_all route (REGISTRY_ONLY): a 502 for hosts the registry does not know. */
function blockAllRoute(): Route {
  return {
    name: 'block_all',
    match: MATCH_ALL,
    action: { kind: 'direct-response', status: 502, body: null },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
    origin: '',
  };
}

interface BoundServer {
  readonly gateway: Resource;
  readonly ref: string;
  readonly server: IstioServer;
  readonly index: number;
  /** `plain` HTTP, `tls` terminated HTTPS, `passthrough` TLS routed by SNI, `tcp` raw TCP. */
  readonly kind: 'plain' | 'tls' | 'passthrough' | 'tcp';
}

const HTTP_SERVER_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);
const TCP_SERVER_PROTOCOLS = new Set(['TCP', 'MONGO', 'MYSQL', 'REDIS']);

/** What a port speaks: servers of different classes cannot share it. */
function portClass(kind: BoundServer['kind']): string {
  return kind === 'plain' ? 'plaintext HTTP' : kind === 'tcp' ? 'TCP' : 'TLS';
}

interface IstioServerTls {
  httpsRedirect?: boolean;
  mode?: string;
  serverCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  minProtocolVersion?: string;
  maxProtocolVersion?: string;
  cipherSuites?: string[];
}

interface IstioTlsRoute {
  match?: { sniHosts?: string[]; port?: number; gateways?: string[] }[];
  route?: { destination?: { host?: string; subset?: string; port?: { number?: number } }; weight?: number }[];
}

/** Which kind of listener a Gateway server needs; null (with a warning) when Remora cannot serve it. */
function serverKind(ctx: TranslateContext, gw: Resource, server: IstioServer, index: number): BoundServer['kind'] | null {
  const protocol = (server.port?.protocol ?? '').toUpperCase();
  const mode = ((server.tls as IstioServerTls | undefined)?.mode ?? '').toUpperCase();
  if (HTTP_SERVER_PROTOCOLS.has(protocol)) return 'plain';
  if (protocol === 'HTTPS') return mode === 'PASSTHROUGH' || mode === 'AUTO_PASSTHROUGH' ? 'passthrough' : 'tls';
  if (protocol === 'TLS' && (mode === 'PASSTHROUGH' || mode === 'AUTO_PASSTHROUGH')) return 'passthrough';
  // Istio's TCP-based protocols: proxied as opaque TCP with the VirtualServices' `tcp` routes.
  if (TCP_SERVER_PROTOCOLS.has(protocol)) return 'tcp';
  ctx.warn(gw, ['spec', 'servers', index, 'port', 'protocol'], `${protocol}${mode ? ` (${mode})` : ''} servers are not served yet; server skipped`);
  return null;
}

/** TLS version names as Istio writes them → Node's. */
function tlsVersion(v: string | undefined): 'TLSv1.2' | 'TLSv1.3' | null {
  if (v === 'TLSV1_2') return 'TLSv1.2';
  if (v === 'TLSV1_3') return 'TLSv1.3';
  return null;
}

/**
 * Gateway listeners: one per port of the servers of every Gateway whose selector matches
 * this proxy. VirtualServices bound to those gateways fill each port's route table with a
 * virtual host per (VS host ∩ server host); VirtualServices for the same host merge, oldest
 * first, as Istio merges them on gateways. HTTPS servers terminate TLS (certificates picked
 * by SNI); PASSTHROUGH servers route the TLS bytes by SNI with the VirtualServices' `tls`
 * routes; `httpsRedirect` turns a plaintext server's hosts into redirects to https.
 */
function gatewayListeners(ctx: TranslateContext, mesh: MeshIndex, options: TranslateOptions): { listeners: Listener[]; routeConfigs: RouteConfiguration[] } {
  const { node } = ctx;
  const byPort = new Map<number, BoundServer[]>();
  for (const gw of ctx.resourcesOf('Gateway')) {
    const spec = gw.spec as IstioGateway;
    if (!labelsMatch(spec.selector ?? {}, node.labels)) continue;
    const ref = `${gw.metadata.namespace}/${gw.metadata.name}`;
    (spec.servers ?? []).forEach((server, index) => {
      const kind = serverKind(ctx, gw, server, index);
      if (kind === null) return;
      const port = server.port?.number ?? 0;
      let list = byPort.get(port);
      if (list === undefined) byPort.set(port, (list = []));
      if (list.length > 0 && portClass(list[0]!.kind) !== portClass(kind)) {
        // One port speaks one protocol; Istio keeps the first server's.
        ctx.warn(gw, ['spec', 'servers', index, 'port'], `port ${port} already serves ${portClass(list[0]!.kind)}; this server is skipped`);
        return;
      }
      list.push({ gateway: gw, ref, server, index, kind });
    });
  }

  const listeners: Listener[] = [];
  const routeConfigs: RouteConfiguration[] = [];
  const virtualServices = ctx.resourcesOf('VirtualService');
  const jwtAuthn = jwtAuthnFilter(ctx);
  const authz = authzFilters(ctx, options.mesh ?? DEFAULT_MESH_CONFIG, mesh.registry);
  const credentials = options.credentialsDir ?? DEFAULT_CREDENTIALS_DIR;
  for (const [port, servers] of [...byPort].sort((a, b) => a[0] - b[0])) {
    const bindAddress = servers.find((s) => s.server.bind)?.server.bind ?? ctx.ports.bindAddress;
    if (servers[0]!.kind === 'tcp') {
      listeners.push({
        name: `${bindAddress}_${port}`,
        address: bindAddress,
        port,
        direction: 'gateway',
        routeConfig: `tcp.${port}`,
        httpFilters: [],
        tls: null,
        tcpProxy: gatewayTcpRoutes(ctx, mesh, servers, port, virtualServices),
      });
      continue;
    }
    const refs = new Set(servers.map((s) => s.ref));
    // istiod's route tables for the port: one for its plaintext servers (`http.<port>`), one per
    // terminated HTTPS server (`https.<port>.<port name>.<gateway>.<namespace>`), each holding
    // the hosts of that server only, so a connection routes within the server it shook hands with.
    const tables = new Map<string, { servers: BoundServer[]; hosts: Map<string, { routes: Route[]; requireTls: boolean }> }>();
    for (const s of servers) {
      if (s.kind === 'passthrough') continue;
      const tableName = gatewayRouteConfigName(s, port);
      let table = tables.get(tableName);
      if (table === undefined) tables.set(tableName, (table = { servers: [], hosts: new Map() }));
      table.servers.push(s);
    }
    for (const table of tables.values()) {
      const hosts = table.hosts;
      for (const vs of virtualServices) {
        if (!ctx.isVisible(vs)) continue;
        const spec = vs.spec as IstioVirtualService;
        const bound = gatewayRefs(vs, spec.gateways);
        const matchGateways = (spec.http ?? []).flatMap((h) => (h.match ?? []).flatMap((m) => m.gateways ?? []));
        for (const g of matchGateways) bound.add(g.includes('/') ? g : `${vs.metadata.namespace}/${g}`);
        const done = new Set<string>();
        for (const s of table.servers) {
          if (!bound.has(s.ref)) continue;
          const redirect = s.kind === 'plain' && (s.server.tls as IstioServerTls | undefined)?.httpsRedirect === true;
          for (const rawVsHost of spec.hosts ?? []) {
            const vsHost = resolveHost(rawVsHost, vs.metadata.namespace, node.clusterDomain);
            for (const rawServerHost of s.server.hosts ?? []) {
              const { namespace: allowedNs, host: serverHost } = splitServerHost(rawServerHost);
              const gwNs = s.gateway.metadata.namespace;
              if (allowedNs !== '*' && (allowedNs === '.' ? gwNs : allowedNs) !== vs.metadata.namespace) continue;
              const domain = intersectHosts(vsHost, serverHost.toLowerCase());
              if (domain === null) continue;
              const key = `${s.ref} ${domain}`;
              if (done.has(key)) continue;
              done.add(key);
              let vh = hosts.get(domain);
              if (vh === undefined) hosts.set(domain, (vh = { routes: [], requireTls: false }));
              if (redirect) vh.requireTls = true;
              vh.routes.push(...untilCatchAll(translateHttpRoutes(ctx, mesh, vs, { gateway: s.ref, port, servicePortHost: null })));
            }
          }
        }
      }
    }
    const portTables: RouteConfiguration[] = [...tables].map(([tableName, table]) => ({
      name: tableName,
      virtualHosts: [...table.hosts].map(([domain, vh]) => ({ name: `${domain}:${port}`, domains: [domain], routes: catchAllsLast(vh.routes), requireTls: vh.requireTls })),
      ignorePortInHostMatching: true,
    }));
    // A port of passthrough servers only routes no HTTP: an empty table keeps the listener's name.
    if (portTables.length === 0) portTables.push({ name: gatewayRouteConfigName(servers[0]!, port), virtualHosts: [], ignorePortInHostMatching: true });
    routeConfigs.push(...portTables);
    const name = portTables[0]!.name;
    const rc = portTables.find(hasFault) ?? portTables[0]!;
    const plain = servers[0]!.kind === 'plain';
    listeners.push({
      name: `${bindAddress}_${port}`,
      address: bindAddress,
      port,
      connectionManager: connectionManagerFor(node, 'gateway'),
      direction: 'gateway',
      routeConfig: name,
      // The gateway is where edge policy runs: authn, authz, a rate limit, faults.
      httpFilters: httpFilterChain('GATEWAY', { jwtAuthn, authz, localRateLimit: localRateLimitFilter(ctx, 'GATEWAY', port), fault: faultFilterFor(rc) }),
      tls: plain
        ? null
        : {
            kind: 'gateway',
            servers: servers.map((s) => {
              const server = tlsServer(ctx, mesh, s, port, credentials, virtualServices);
              return s.kind === 'passthrough' ? server : { ...server, routeConfig: gatewayRouteConfigName(s, port) };
            }),
          },
    });
    if (refs.size > 1) {
      // Several gateways sharing a port is legal in Istio; say so, since hosts then mix.
      const first = servers[0]!;
      ctx.warn(first.gateway, ['spec', 'servers', first.index, 'port'], `port ${port} is shared by gateways ${[...refs].join(', ')}`);
    }
  }
  return { listeners, routeConfigs };
}

/**
 * istiod's RDS name for a gateway server: `http.<port>` for plaintext HTTP servers and
 * `https.<port>.<port name>.<gateway>.<namespace>` for a terminated HTTPS server, with
 * `.<bind>` when the server binds an address.
 */
function gatewayRouteConfigName(s: BoundServer, port: number): string {
  const bind = s.server.bind ? `.${s.server.bind}` : '';
  if (s.kind === 'plain') return `http.${port}${bind}`;
  return `https.${port}.${s.server.port?.name ?? ''}.${s.gateway.metadata.name}.${s.gateway.metadata.namespace}${bind}`;
}

interface IstioTcpRoute {
  match?: { port?: number; gateways?: string[] }[];
  route?: { destination?: { host?: string; subset?: string; port?: { number?: number } }; weight?: number }[];
}

/**
 * A TCP port's routes: the `tcp` routes of VirtualServices bound to its gateways whose
 * match names this port (or no port), in order; the first is used, as Envoy's tcp_proxy has
 * one destination set per filter chain.
 */
function gatewayTcpRoutes(ctx: TranslateContext, mesh: MeshIndex, servers: readonly BoundServer[], port: number, virtualServices: readonly Resource[]): TcpRoute[] {
  const refs = new Set(servers.map((s) => s.ref));
  const out: TcpRoute[] = [];
  for (const vs of virtualServices) {
    if (!ctx.isVisible(vs)) continue;
    const spec = vs.spec as Omit<IstioVirtualService, 'tcp'> & { tcp?: IstioTcpRoute[] };
    const bound = gatewayRefs(vs, spec.gateways);
    if (![...refs].some((r) => bound.has(r))) continue;
    (spec.tcp ?? []).forEach((route, i) => {
      const matches = route.match ?? [{}];
      if (!matches.some((m) => m.port === undefined || m.port === port)) return;
      out.push({ sniHosts: [], clusters: weightedTcpClusters(ctx, mesh, vs, route.route ?? [], ['spec', 'tcp', i], port), origin: `${vs.metadata.namespace}/${vs.metadata.name}` });
    });
  }
  if (out.length === 0) {
    const first = servers[0]!;
    ctx.warn(first.gateway, ['spec', 'servers', first.index], `no VirtualService has a tcp route for port ${port}; connections to it are closed`);
  }
  return out;
}

/** A TLS Gateway server in the model: certificates resolved to files, passthrough routes gathered. */
function tlsServer(ctx: TranslateContext, mesh: MeshIndex, s: BoundServer, port: number, credentialsDir: string, virtualServices: readonly Resource[]): TlsServer {
  const t = (s.server.tls ?? {}) as IstioServerTls;
  const at = ['spec', 'servers', s.index, 'tls'];
  const mode = s.kind === 'passthrough' ? 'PASSTHROUGH' : ((t.mode ?? 'SIMPLE').toUpperCase() as TlsServer['mode']);
  let certFile: string | null = null;
  let keyFile: string | null = null;
  let caFile: string | null = t.caCertificates ?? null;
  if (mode !== 'PASSTHROUGH' && mode !== 'ISTIO_MUTUAL') {
    if (t.credentialName) {
      const files = credentialFiles(credentialsDir, t.credentialName);
      certFile = files.cert;
      keyFile = files.key;
      if (mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') caFile ??= files.ca;
    } else {
      certFile = t.serverCertificate ?? null;
      keyFile = t.privateKey ?? null;
    }
    if (certFile === null || keyFile === null) ctx.error(s.gateway, at, `${mode} needs credentialName, or serverCertificate and privateKey`);
    if ((mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') && caFile === null) ctx.error(s.gateway, at, `${mode} needs caCertificates (or a credential with ca.crt)`);
  }
  const serverHosts = (s.server.hosts ?? []).map((h) => splitServerHost(h).host.toLowerCase());
  const tcpRoutes: TcpRoute[] = [];
  if (mode === 'PASSTHROUGH') {
    for (const vs of virtualServices) {
      if (!ctx.isVisible(vs)) continue;
      const spec = vs.spec as Omit<IstioVirtualService, 'tls'> & { tls?: IstioTlsRoute[] };
      if (!gatewayRefs(vs, spec.gateways).has(s.ref)) continue;
      (spec.tls ?? []).forEach((route, i) => {
        for (const m of route.match ?? [{}]) {
          if (m.port !== undefined && m.port !== port) continue;
          // SNI names must fall within the server's hosts.
          const sni = (m.sniHosts ?? spec.hosts ?? []).map((h) => h.toLowerCase()).filter((h) => serverHosts.some((sh) => intersectHosts(sh, h) !== null));
          if (sni.length === 0) continue;
          const clusters = weightedTcpClusters(ctx, mesh, vs, route.route ?? [], ['spec', 'tls', i], port);
          tcpRoutes.push({ sniHosts: sni, clusters, origin: `${vs.metadata.namespace}/${vs.metadata.name}` });
        }
      });
    }
  }
  return {
    hosts: serverHosts,
    mode,
    certFile,
    keyFile,
    caFile,
    ...(t.credentialName && mode !== 'PASSTHROUGH' && mode !== 'ISTIO_MUTUAL' ? { credentialName: t.credentialName } : {}),
    subjectAltNames: t.subjectAltNames ?? [],
    minVersion: tlsVersion(t.minProtocolVersion),
    maxVersion: tlsVersion(t.maxProtocolVersion),
    cipherSuites: t.cipherSuites ?? [],
    tcpRoutes,
    origin: `${s.ref}#${s.index}`,
  };
}

/** Istio's IsCatchAllRoute: every path (no uri, or prefix `/`) and no header or query condition. */
function isCatchAll(r: Route): boolean {
  const p = r.match.path.match;
  return (p.kind === 'any' || (p.kind === 'prefix' && p.value === '/')) && r.match.headers.length === 0 && r.match.queryParams.length === 0;
}

/** A VirtualService's routes up to its first catch-all; Istio drops the unreachable rest (BuildHTTPRoutesForVirtualService). */
function untilCatchAll(routes: Route[]): Route[] {
  const i = routes.findIndex(isCatchAll);
  return i < 0 ? routes : routes.slice(0, i + 1);
}

/**
 * Istio's CombineVHostRoutes for VirtualServices merged on a gateway host: routes keep their
 * order (oldest VirtualService first) but catch-alls move to the end, so one VirtualService's
 * default route does not hide another's specific routes.
 */
function catchAllsLast(routes: Route[]): Route[] {
  return [...routes.filter((r) => !isCatchAll(r)), ...routes.filter(isCatchAll)];
}

const FAULT_FILTER_CONFIG: HttpFilterConfig = { name: FAULT_FILTER, config: {} };

function hasFault(rc: RouteConfiguration): boolean {
  return rc.virtualHosts.some((v) => v.routes.some((r) => FAULT_FILTER in r.filterConfigs));
}

/** The fault filter runs only where a route asks for it (its config is per route). */
function faultFilterFor(rc: RouteConfiguration): HttpFilterConfig | null {
  return hasFault(rc) ? FAULT_FILTER_CONFIG : null;
}

// Gateway server hosts may carry a namespace: `ns/host`, `./host` (the Gateway's), or any (`*` then a slash).
function splitServerHost(h: string): { namespace: string; host: string } {
  const slash = h.indexOf('/');
  if (slash < 0) return { namespace: '*', host: h };
  return { namespace: h.slice(0, slash), host: h.slice(slash + 1) };
}

function dedupe(issues: readonly ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  const out: ConfigIssue[] = [];
  for (const i of issues) {
    const key = formatIssue(i);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(i);
  }
  return out;
}
