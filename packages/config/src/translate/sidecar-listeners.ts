/**
 * A sidecar's listeners as istiod builds them for a captured pod (pilot/pkg/networking/core:
 * listener.go buildSidecarOutboundListeners, tls.go, listener_inbound.go): the per-port
 * outbound listeners `virtualOutbound` hands redirected connections to, and the per-port
 * inbound chains of `virtualInbound`.
 *
 * Outbound, per service port in the sidecar's scope (istiod's protocol rules: the port's
 * `protocol`, else its name's prefix, else unknown and sniffed):
 * - HTTP family (HTTP, HTTP2, GRPC, GRPC-WEB): `0.0.0.0_<port>`, the HTTP connection manager
 *   with route table `<port>`. istiod puts an HTTP inspector in front of it and a
 *   PassthroughFilterChain behind it, so other bytes to that port reach the outbound
 *   policy's cluster: `detectProtocol` with that catch-all.
 * - unknown: the same HTTP chain plus the service's TCP route behind protocol detection, on
 *   `<vip>_<port>` with the service's own route table `<host>:<port>` when the service has
 *   an address, else on `0.0.0.0_<port>` with `<port>`.
 * - TCP family (TCP, MONGO, REDIS, MYSQL): `<vip>_<port>` per service with `tcpProxy` to
 *   `outbound|<port>||<host>` or the mesh VirtualService's `tcp` route; a service without an
 *   address: `0.0.0.0_<port>` (resolution NONE with endpoint IPs: `<ip>_<port>` per endpoint).
 * - TLS, HTTPS: as TCP, with the VirtualService's `tls` routes by SNI; a service without an
 *   address is told apart by SNI (its host) on `0.0.0.0_<port>`.
 * A listener whose routes all name SNI hosts ends with the outbound policy's catch-all
 * (PassthroughCluster under ALLOW_ANY, BlackHoleCluster under REGISTRY_ONLY), as istiod's
 * default PassthroughFilterChain. Services meeting on one listener merge as istiod merges
 * them: HTTP and TCP on one port become a sniffed listener, a TCP route with the same match
 * as an earlier one is dropped (first wins, with a warning), MONGO and MYSQL share a port
 * with nothing else.
 */
import type { Cluster } from '../model/cluster.ts';
import type { HttpFilterConfig, Listener, TcpRoute } from '../model/listener.ts';
import type { RetryPolicy, Route, RouteConfiguration } from '../model/route.ts';
import type { IstioVirtualService } from '../resources/istio-networking.ts';
import type { Resource } from '../resources/resource.ts';
import type { OutboundTrafficMode } from '../schema/mesh-config.ts';
import { BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, isIp, PASSTHROUGH_CLUSTER } from './clusters.ts';
import { connectionManagerFor } from './connection-manager.ts';
import type { TranslateContext } from './context.ts';
import { DEFAULT_CONNECTION_POOL } from './destination-rule.ts';
import { hostCovers, resolveHost } from './host.ts';
import { isHttpFamily, labelsMatch, normalizeProtocol, portProtocol, type MeshService, type ServiceProtocol, type ServiceRegistry } from './registry.ts';
import { boundListenerAddress, type SidecarIngress, type SidecarScope } from './sidecar-scope.ts';
import { policyApplies } from './security.ts';
import { gatewayRefs, MATCH_ALL, outboundClusterName, type MeshIndex } from './virtual-service.ts';

/**
 * How long protocol detection waits for a client's first bytes when the MeshConfig sets no
 * `protocolDetectionTimeout`. Istio's default is 0s, which Envoy reads as no timeout: a
 * server-first protocol (MySQL, SMTP) on a port of unknown protocol then hangs until the
 * server gives up. Remora waits 5 s and then treats the connection as TCP, as Istio did
 * before 1.10 made the default 0s. A MeshConfig that sets the field, 0s included, is followed.
 */
export const PROTOCOL_DETECTION_TIMEOUT_MS = 5_000;

type Family = 'http' | 'tcp' | 'tls' | 'auto';

/** istiod's listener protocol for a service port's protocol; null: no listener (UDP). */
function familyOf(p: ServiceProtocol): Family | null {
  switch (p) {
    case 'HTTP':
    case 'HTTP2':
    case 'GRPC':
    case 'GRPC-WEB':
      return 'http';
    case 'TCP':
    case 'MONGO':
    case 'REDIS':
    case 'MYSQL':
      return 'tcp';
    case 'HTTPS':
    case 'TLS':
      return 'tls';
    case 'UNKNOWN':
      return 'auto';
    default:
      return null;
  }
}

/** The route every listener of a capture ends in, by the outbound traffic policy. */
export function outboundCatchAll(mode: OutboundTrafficMode): TcpRoute {
  return { sniHosts: [], clusters: [{ cluster: mode === 'ALLOW_ANY' ? PASSTHROUGH_CLUSTER : BLACKHOLE_CLUSTER, weight: 100 }], origin: '' };
}

/** A route matching any SNI (none named, or `*`): istiod's isMatchAll. */
function matchesAll(r: TcpRoute): boolean {
  return r.sniHosts.length === 0 || r.sniHosts.includes('*');
}

/** istiod's conflictsWith for two TCP chains: the same SNI names, `*` aside, in any order. */
function sameMatch(a: TcpRoute, b: TcpRoute): boolean {
  const key = (r: TcpRoute): string => [...new Set(r.sniHosts.filter((h) => h !== '*'))].sort().join(',');
  return key(a) === key(b);
}

interface OutboundEntry {
  readonly name: string;
  readonly bind: string;
  readonly port: number;
  /** A Sidecar egress listener's own socket (captureMode NONE, a bind, a unix socket); else reached by capture. */
  readonly bound: boolean;
  /** The entry's protocol as istiod tracks it: UNKNOWN once HTTP is sniffed from TCP. */
  protocol: ServiceProtocol;
  /** The HTTP chain's route table; null: TCP only. */
  http: string | null;
  tcp: TcpRoute[];
  readonly service: MeshService;
}

export interface SidecarOutboundInput {
  readonly ctx: TranslateContext;
  readonly mesh: MeshIndex;
  readonly scope: SidecarScope | null;
  readonly mode: OutboundTrafficMode;
  /** The per-port route tables (`9080`), whose virtual hosts are named `<host>:<port>`. */
  readonly tables: readonly RouteConfiguration[];
  readonly detectionTimeoutMs: number;
  /** The outbound HTTP filters of a listener on `port` using `table`. */
  readonly httpFilters: (port: number, table: RouteConfiguration | undefined) => HttpFilterConfig[];
}

/**
 * The per-port outbound listeners (bindToPort false) and the route tables of sniffed
 * services with an address (`<host>:<port>`: that service's virtual host, answering any
 * name, as istiod's getVirtualHostsForSniffedServicePort leaves it).
 */
export function sidecarOutboundListeners(input: SidecarOutboundInput): { listeners: Listener[]; routeConfigs: RouteConfiguration[] } {
  const { ctx, mesh, scope } = input;
  const { node, ports } = ctx;
  const entries = new Map<string, OutboundEntry>();
  const virtualServices = meshVirtualServices(ctx, scope);
  const sniffedTables = new Map<string, RouteConfiguration>();
  const vsOf = (svc: MeshService): MeshVirtualService[] => virtualServices.filter((v) => v.hosts.some((h) => hostCovers(h, svc.host)));
  /** One service port on the listeners of `binds` (`bound`: sockets of their own), spoken as `protocol`. */
  const add = (svc: MeshService, port: number, protocol: ServiceProtocol, portIndex: number, binds: readonly string[], bound: boolean, vss: readonly MeshVirtualService[]): void => {
    const family = familyOf(protocol)!;
    for (const bind of binds) {
      const incoming = incomingChains(ctx, mesh, svc, port, family, bind, vss);
      let http: string | null = null;
      if (family === 'http' || family === 'auto') {
        http = family === 'auto' && bind !== '0.0.0.0' ? `${svc.host}:${port}` : String(port);
        if (http !== String(port)) sniffedTables.set(http, sniffedTable(http, `${svc.host}:${port}`, input.tables.find((t) => t.name === String(port))));
      }
      merge(ctx, entries, { name: `${bind}_${port}`, bind, port, bound, protocol: family === 'http' ? 'UNKNOWN' : protocol, http, tcp: incoming, service: svc }, protocol, portIndex);
    }
  };

  // A Sidecar's egress listeners on a port that is not HTTP (the HTTP ones are the port's route
  // table): as istiod builds them first, for the services of their own hosts that have that
  // port (every port, on a unix socket), spoken as the listener's port declares; on their
  // `bind` (a socket of their own) or the services' addresses. The listeners they make take
  // nothing of the other hosts (istiod's locked entries).
  const locked = new Set<string>();
  for (const e of scope?.egressListeners ?? []) {
    if (isHttpFamily(e.protocol)) continue;
    const at = ['spec', 'egress', e.index, 'port'];
    if (familyOf(e.protocol) === null) {
      if (scope!.resource !== null) ctx.warn(scope!.resource, [...at, 'protocol'], `${e.protocol} egress listeners are not built (no ${e.protocol} proxying); port ${e.port} takes its hosts into the outbound listener`);
      continue;
    }
    if (e.port === 0 && e.protocol === 'UNKNOWN') {
      if (scope!.resource !== null) ctx.warn(scope!.resource, [...at, 'protocol'], 'a unix domain socket egress listener without a protocol (sniffed) is not built; declare HTTP or TCP');
      continue;
    }
    for (const svc of mesh.registry.services()) {
      if (svc.host.startsWith('*') || !e.scope.allows(svc.namespace, svc.host)) continue;
      const vss = virtualServices.filter((v) => v.hosts.some((h) => hostCovers(h, svc.host) && e.scope.allows(v.resource.metadata.namespace, h)));
      svc.ports.forEach((sp, portIndex) => {
        if (e.port !== 0 && sp.number !== e.port) return;
        const binds = e.bound !== null ? [e.bound.address] : outboundBinds(ctx, svc, familyOf(e.protocol)!, portIndex);
        add(svc, e.port, e.protocol, portIndex, binds, e.bound !== null, vss);
      });
    }
  }
  for (const name of entries.keys()) locked.add(name);

  for (const svc of mesh.registry.services()) {
    if (svc.host.startsWith('*')) continue;
    if (scope !== null && !scope.allows(svc.namespace, svc.host)) continue;
    const vsForHost = vsOf(svc);
    for (const [portIndex, sp] of svc.ports.entries()) {
      const protocol = portProtocol(sp);
      if (familyOf(protocol) === null) continue;
      const port = sp.number;
      if (port === ports.outboundPort || port === ports.inboundPort) {
        ctx.warn(svc.source, ['spec', 'ports', portIndex], `port ${port} is the proxy's own ${port === ports.outboundPort ? 'outbound' : 'inbound'} port; no outbound listener is built for it`);
        continue;
      }
      const binds = outboundBinds(ctx, svc, familyOf(protocol)!, portIndex).filter((bind) => !locked.has(`${bind}_${port}`));
      add(svc, port, protocol, portIndex, binds, false, vsForHost);
    }
  }

  const catchAll = outboundCatchAll(input.mode);
  const listeners: Listener[] = [];
  const usedTables = new Set<string>();
  for (const e of entries.values()) {
    // Routes naming SNI hosts first (Envoy picks a chain by SNI before the default chain).
    const tcp = [...e.tcp.filter((r) => !matchesAll(r)), ...e.tcp.filter(matchesAll)];
    if (!tcp.some(matchesAll)) tcp.push(catchAll);
    const base = { ...(e.bound ? boundListenerAddress(e.bind, e.port) : { name: e.name, address: e.bind, port: e.port, bindToPort: false }), direction: 'outbound' as const, tls: null };
    if (e.http === null) {
      listeners.push({ ...base, routeConfig: `tcp.${e.port}`, httpFilters: [], tcpProxy: tcp });
      continue;
    }
    usedTables.add(e.http);
    const table = input.tables.find((t) => t.name === e.http) ?? sniffedTables.get(e.http);
    listeners.push({
      ...base,
      connectionManager: connectionManagerFor(node, 'outbound'),
      routeConfig: e.http,
      httpFilters: input.httpFilters(e.port, table),
      detectProtocol: { tcp, timeoutMs: input.detectionTimeoutMs },
    });
  }
  return { listeners, routeConfigs: [...sniffedTables.values()].filter((t) => usedTables.has(t.name)) };
}

/**
 * istiod's listenerMap merge (buildSidecarOutboundListener's conflict handling): `raw` is
 * the incoming port's declared protocol. HTTP meeting HTTP adds nothing (the port's table
 * holds every service); TCP routes merge unless their match is taken; a listener with both
 * an HTTP chain and TCP routes is sniffed.
 */
function merge(ctx: TranslateContext, entries: Map<string, OutboundEntry>, incoming: OutboundEntry, raw: ServiceProtocol, portIndex: number): void {
  const cur = entries.get(incoming.name);
  if (cur === undefined) {
    entries.set(incoming.name, incoming);
    return;
  }
  if (familyOf(raw) === 'http' && cur.http !== null) return;
  // MONGO and MYSQL are server-first: nothing sniffed or else may share their port (isConflictWithWellKnownPort).
  const serverFirst = (p: ServiceProtocol): boolean => p === 'MONGO' || p === 'MYSQL';
  if ((serverFirst(raw) || serverFirst(cur.protocol)) && raw !== cur.protocol) {
    const name = (p: ServiceProtocol): string => (p === 'UNKNOWN' ? 'unknown protocol' : p);
    ctx.warn(incoming.service.source, ['spec', 'ports', portIndex], `port ${incoming.port} of ${incoming.service.host} (${name(raw)}) conflicts with ${cur.service.host} (${name(cur.protocol)}) on listener ${cur.name}; the first is kept`);
    return;
  }
  for (const r of incoming.tcp) {
    if (cur.tcp.some((c) => sameMatch(c, r))) {
      const what = r.sniHosts.length > 0 ? `SNI ${r.sniHosts.join(', ')}` : 'every connection';
      ctx.warn(incoming.service.source, ['spec', 'ports', portIndex], `listener ${cur.name} already routes ${what} for ${cur.service.host}; the route of ${incoming.service.host} port ${incoming.port} is dropped (the first wins, as in istiod)`);
      continue;
    }
    cur.tcp.push(r);
  }
  if (cur.http === null && incoming.http !== null) cur.http = incoming.http;
  if (cur.http !== null) cur.protocol = 'UNKNOWN';
}

/** Where a service port's outbound listener binds: its address, the wildcard, or its endpoints' IPs. */
function outboundBinds(ctx: TranslateContext, svc: MeshService, family: Family, portIndex: number): string[] {
  if (family === 'http') return ['0.0.0.0'];
  const address = svc.addresses[0];
  if (address !== undefined && address.includes('/')) {
    // istiod matches a CIDR in a filter chain of 0.0.0.0_<port>; Remora's TCP routes match SNI only.
    ctx.warn(svc.source, ['spec', 'addresses'], `${svc.host}: a CIDR address (${address}) is not routed on TCP port ${svc.ports[portIndex]!.number}; its connections take the outbound traffic policy`);
    return [];
  }
  if (address !== undefined && address !== '') return [address];
  // Resolution NONE without an address (a headless service): one listener per endpoint IP.
  if (svc.resolution === 'NONE') {
    const real = svc.endpoints.filter((e) => e.address !== svc.host);
    const ips = [...new Set(real.map((e) => e.address).filter(isIp))];
    if (ips.length > 0) return ips;
    // A workloadSelector that selects nothing yet: istiod waits for endpoints.
    if (real.length > 0 || (svc.source.spec as { workloadSelector?: unknown }).workloadSelector !== undefined) return [];
  }
  return ['0.0.0.0'];
}

interface MeshVirtualService {
  readonly resource: Resource;
  readonly spec: IstioVirtualService;
  /** Its hosts, resolved, within the sidecar's scope. */
  readonly hosts: readonly string[];
}

/** VirtualServices for the mesh this sidecar sees, oldest first. */
function meshVirtualServices(ctx: TranslateContext, scope: SidecarScope | null): MeshVirtualService[] {
  const out: MeshVirtualService[] = [];
  for (const vs of ctx.resourcesOf('VirtualService')) {
    if (!ctx.isVisible(vs)) continue;
    const spec = vs.spec as IstioVirtualService;
    if (!gatewayRefs(vs, spec.gateways).has('mesh')) continue;
    const hosts = (spec.hosts ?? [])
      .map((h) => resolveHost(h, vs.metadata.namespace, ctx.node.clusterDomain))
      .filter((h) => scope === null || scope.allows(vs.metadata.namespace, h));
    if (hosts.length > 0) out.push({ resource: vs, spec, hosts });
  }
  return out;
}

interface L4Match {
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
  sourceNamespace?: string;
  destinationSubnets?: string[];
  sniHosts?: string[];
}

interface L4Route {
  match?: L4Match[];
  route?: { destination?: { host?: string; subset?: string; port?: { number?: number } }; weight?: number }[];
}

/** istiod's matchTCP / matchTLS: what can be decided for this proxy when building its config. */
function staticMatch(ctx: TranslateContext, m: L4Match, port: number): boolean {
  const gatewayOk = (m.gateways ?? []).length === 0 || m.gateways!.includes('mesh');
  const portOk = m.port === undefined || m.port === 0 || m.port === port;
  const nsOk = (m.sourceNamespace ?? '') === '' || m.sourceNamespace === ctx.node.namespace;
  return gatewayOk && portOk && nsOk && labelsMatch(m.sourceLabels ?? {}, ctx.node.labels);
}

/** The TCP routes of one service port (buildSidecarOutboundTLSFilterChainOpts / TCPFilterChainOpts). */
function incomingChains(
  ctx: TranslateContext,
  mesh: MeshIndex,
  svc: MeshService,
  port: number,
  family: Family,
  bind: string,
  vss: readonly MeshVirtualService[],
): TcpRoute[] {
  if (family === 'http') return [];
  const out: TcpRoute[] = [];
  // A Sidecar egress port other than the service's: its only port, else the listener's (istiod's rule).
  const target = svc.ports.length === 1 ? svc.ports[0]!.number : port;
  const single = (sni: string[]): TcpRoute => ({ sniHosts: sni, clusters: [{ cluster: outboundClusterName(target, '', svc.host), weight: 100 }], origin: '' });
  if (family === 'tls') {
    const seen = new Set<string>();
    for (const vs of vss) {
      const routes = (vs.spec as { tls?: L4Route[] }).tls ?? [];
      routes.forEach((r, i) => {
        if ((r.route ?? []).length === 0) return;
        for (const m of r.match ?? []) {
          if (!staticMatch(ctx, m, port)) continue;
          if ((m.destinationSubnets ?? []).length > 0) {
            ctx.warn(vs.resource, ['spec', 'tls', i, 'match'], 'destinationSubnets are not matched on a sidecar; this match is skipped');
            continue;
          }
          const sni = (m.sniHosts ?? []).map((h) => h.toLowerCase());
          const key = [...sni].sort().join(',');
          if (seen.has(key)) continue;
          seen.add(key);
          out.push({ sniHosts: sni, clusters: weightedTcpClusters(ctx, mesh, vs.resource, r.route!, ['spec', 'tls', i], port), origin: origin(vs.resource) });
        }
      });
    }
    // No VirtualService: the service itself; by SNI when nothing else tells it apart.
    if (out.length === 0) out.push(single(bind === '0.0.0.0' ? [svc.host] : []));
    return out;
  }
  for (const vs of vss) {
    const routes = (vs.spec as { tcp?: L4Route[] }).tcp ?? [];
    for (const [i, r] of routes.entries()) {
      if ((r.route ?? []).length === 0) continue;
      const matches = r.match ?? [];
      const hit = matches.length === 0 || matches.some((m) => staticMatch(ctx, m, port) && (m.destinationSubnets ?? []).length === 0);
      if (matches.some((m) => (m.destinationSubnets ?? []).length > 0)) {
        ctx.warn(vs.resource, ['spec', 'tcp', i, 'match'], 'destinationSubnets are not matched on a sidecar; such a match is skipped');
      }
      if (!hit) continue;
      // The first route matching every connection ends the list (Envoy's one tcp_proxy per chain).
      return [{ sniHosts: [], clusters: weightedTcpClusters(ctx, mesh, vs.resource, r.route!, ['spec', 'tcp', i], port), origin: origin(vs.resource) }];
    }
  }
  return [single([])];
}

function origin(r: Resource): string {
  return `${r.metadata.namespace}/${r.metadata.name}`;
}

/** A sniffed service's own route table: its virtual host from the port's table, for any name. */
function sniffedTable(name: string, vhostName: string, portTable: RouteConfiguration | undefined): RouteConfiguration {
  const vh = portTable?.virtualHosts.find((v) => v.name === vhostName);
  return { name, virtualHosts: vh === undefined ? [] : [{ ...vh, domains: ['*'] }], ignorePortInHostMatching: true };
}

/** A TCP or TLS route's destinations as weighted clusters (one destination: weight 100). */
export function weightedTcpClusters(
  ctx: TranslateContext,
  mesh: MeshIndex,
  vs: Resource,
  route: readonly { destination?: { host?: string; subset?: string; port?: { number?: number } }; weight?: number }[],
  at: readonly (string | number)[],
  port: number,
): { cluster: string; weight: number }[] {
  return route
    .map((d, k) => {
      const host = resolveHost(d.destination?.host ?? '', vs.metadata.namespace, ctx.node.clusterDomain);
      const svc = mesh.registry.get(host);
      const p = d.destination?.port?.number ?? (svc?.ports.length === 1 ? svc.ports[0]!.number : port);
      if (!svc) ctx.warn(vs, [...at, 'route', k, 'destination', 'host'], `host ${host} is not in the registry (no ServiceEntry)`);
      return { cluster: outboundClusterName(p, d.destination?.subset ?? '', host), weight: route.length === 1 ? 100 : (d.weight ?? 0) };
    })
    .filter((c) => c.weight > 0);
}

/** A catch-all route to one cluster: a service's default route, or the inbound route to the app. */
export function defaultRoute(cluster: string, retry: RetryPolicy | null): Route {
  return {
    name: 'default',
    match: MATCH_ALL,
    action: {
      kind: 'forward',
      clusters: [{ cluster, weight: 100, requestHeaders: null, responseHeaders: null }],
      timeoutMs: 0,
      retry,
      rewrite: null,
      authorityRewrite: null,
      mirrors: [],
    },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
    origin: '',
  };
}

/** One port the workload serves: istiod's inbound chain config. */
export interface InboundPort {
  /** The workload's port (a service port's `targetPort`, else its number; or `--app-port`). */
  readonly port: number;
  readonly protocol: ServiceProtocol;
  /** The service that declares it (the oldest, when several do); null: `--app-port` alone. */
  readonly service: MeshService | null;
  readonly servicePort: number;
  /** The Sidecar's ingress listener this port comes from (its endpoint, TLS, bind); absent: a service's port. */
  readonly ingress?: SidecarIngress;
}

/** Does this service select the proxy's workload (its workloadSelector, else its endpoints' labels)? */
export function selectsWorkload(ctx: TranslateContext, svc: MeshService): boolean {
  const { node } = ctx;
  if (svc.namespace !== node.namespace) return false;
  const sel = (svc.source.spec as { workloadSelector?: { labels?: Record<string, string> } }).workloadSelector?.labels;
  return sel ? labelsMatch(sel, node.labels) : svc.endpoints.some((e) => Object.keys(e.labels).length > 0 && labelsMatch(e.labels, node.labels));
}

/**
 * The ports this workload serves (istiod's getFilterChainsByServicePort): each port of every
 * service selecting it, by `targetPort` ?? `number`, the oldest service first (a later one
 * declaring another protocol is reported), then `--app-port` if no service declares it (as
 * HTTP, which is what the app port has always served).
 */
export function inboundPorts(ctx: TranslateContext, registry: ServiceRegistry, scope: SidecarScope | null = null): InboundPort[] {
  const { ports } = ctx;
  if (scope !== null && scope.ingress.length > 0) return ingressPorts(ctx, registry, scope.ingress);
  const byPort = new Map<number, InboundPort>();
  for (const svc of registry.services()) {
    if (svc.host.startsWith('*') || !selectsWorkload(ctx, svc)) continue;
    for (const [i, sp] of svc.ports.entries()) {
      const port = sp.targetPort ?? sp.number;
      const protocol = portProtocol(sp);
      if (familyOf(protocol) === null) continue;
      if (port === ports.outboundPort || port === ports.inboundPort) {
        ctx.warn(svc.source, ['spec', 'ports', i], `port ${port} is the proxy's own ${port === ports.outboundPort ? 'outbound' : 'inbound'} port; no inbound chain is built for it`);
        continue;
      }
      const old = byPort.get(port);
      if (old !== undefined) {
        if (old.protocol !== protocol && old.service !== null && old.service.host !== svc.host) {
          ctx.warn(svc.source, ['spec', 'ports', i], `inbound port ${port} is already served as ${old.protocol === 'UNKNOWN' ? 'unknown protocol' : old.protocol} for ${old.service.host}; ${svc.host}'s ${protocol === 'UNKNOWN' ? 'unknown protocol' : protocol} is ignored`);
        }
        continue;
      }
      byPort.set(port, { port, protocol, service: svc, servicePort: sp.number });
    }
  }
  if (ports.appPort !== null && !byPort.has(ports.appPort)) {
    byPort.set(ports.appPort, { port: ports.appPort, protocol: 'HTTP', service: null, servicePort: ports.appPort });
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

/**
 * A Sidecar's ingress listeners as the inbound ports (istiod: they replace the services'
 * ports). The protocol is the listener's own (by name when unset); TLS the sidecar
 * terminates leaves HTTP (HTTPS) or TCP (TLS) behind it. The service selecting the workload
 * on that port (by `targetPort`, else number), if any, names the cluster's service.
 */
function ingressPorts(ctx: TranslateContext, registry: ServiceRegistry, ingress: readonly SidecarIngress[]): InboundPort[] {
  const out: InboundPort[] = [];
  for (const ing of ingress) {
    let protocol = portProtocol({ number: ing.port, name: ing.name, protocol: normalizeProtocol(ing.protocol), targetPort: null });
    if (ing.tls !== null) protocol = protocol === 'HTTPS' ? 'HTTP' : protocol === 'TLS' ? 'TCP' : protocol;
    if (familyOf(protocol) === null) continue;
    let service: MeshService | null = null;
    let servicePort = ing.port;
    for (const svc of registry.services()) {
      if (svc.host.startsWith('*') || !selectsWorkload(ctx, svc)) continue;
      const sp = svc.ports.find((x) => (x.targetPort ?? x.number) === ing.port);
      if (sp !== undefined) {
        service = svc;
        servicePort = sp.number;
        break;
      }
    }
    out.push({ port: ing.port, protocol, service, servicePort, ingress: ing });
  }
  return out.sort((a, b) => a.port - b.port);
}

/** istiod's inbound cluster for a port: `inbound|<port>||`, the app at its address on that port (a Sidecar ingress listener's `defaultEndpoint`). */
export function inboundCluster(ctx: TranslateContext, p: InboundPort, own: MeshService | null): Cluster {
  const { node, ports } = ctx;
  const svc = p.service ?? own;
  const family = familyOf(p.protocol);
  return {
    name: `inbound|${p.port}||`,
    service: svc ? { host: svc.host, name: svc.name, namespace: svc.namespace, port: p.service ? p.servicePort : (svc.ports[0]?.number ?? p.port) } : null,
    subset: '',
    discovery: 'static',
    endpoints: [
      {
        address: p.ingress?.endpoint.address ?? ports.appAddress,
        port: p.ingress?.endpoint.port ?? p.port,
        ...(p.ingress?.endpoint.pipe !== undefined ? { pipe: p.ingress.endpoint.pipe } : {}),
        labels: node.labels,
        weight: 1,
        locality: '',
        workloadName: node.workloadName,
        namespace: node.namespace,
        serviceAccount: node.serviceAccount,
      },
    ],
    dnsRefreshMs: 0,
    protocol: family === 'tcp' || family === 'tls' ? 'tcp' : p.protocol === 'HTTP2' || p.protocol === 'GRPC' ? 'http2' : 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: DEFAULT_CONNECTION_POOL,
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
  };
}

/** Is this inbound port spoken as HTTP (with or without sniffing), TCP only, or sniffed? */
export function inboundFamily(p: InboundPort): 'http' | 'tcp' | 'auto' {
  const f = familyOf(p.protocol);
  return f === 'http' ? 'http' : f === 'auto' ? 'auto' : 'tcp';
}

interface AuthzRule {
  to?: { operation?: { ports?: string[]; notPorts?: string[] } }[];
}

/**
 * The AuthorizationPolicy that a TCP connection to inbound `port` would have to pass and
 * that Remora cannot check there (no network RBAC filter yet), or null when none applies.
 * istiod enforces policies on TCP with Envoy's network RBAC filter, where HTTP-only
 * conditions (paths, methods, headers, JWT claims) cannot be seen: an ALLOW rule using them
 * allows nothing, a DENY rule drops them and denies more. Remora cannot check the L4
 * conditions either (principals, namespaces, ipBlocks), so such a port is closed rather than
 * left open: an ALLOW or CUSTOM policy applying to the workload, or a DENY policy with a rule
 * that can match the port. AUDIT and dry-run policies decide nothing.
 */
export function unenforceableTcpPolicy(ctx: TranslateContext, port: number): Resource | null {
  for (const r of ctx.resourcesOf('AuthorizationPolicy')) {
    if (!policyApplies(ctx, r)) continue;
    if (r.metadata.annotations['istio.io/dry-run'] === 'true') continue;
    const spec = (r.spec ?? {}) as { action?: string; rules?: AuthzRule[] };
    const action = spec.action ?? 'ALLOW';
    if (action === 'AUDIT') continue;
    if (action === 'ALLOW') return r;
    // DENY and CUSTOM act only through rules that can match this port.
    const canMatch = (rule: AuthzRule): boolean =>
      (rule.to ?? []).length === 0 ||
      rule.to!.some((t) => {
        const op = t.operation ?? {};
        if (op.ports !== undefined && op.ports.length > 0 && !op.ports.includes(String(port))) return false;
        return !(op.notPorts ?? []).includes(String(port));
      });
    if ((spec.rules ?? []).some(canMatch)) return r;
  }
  return null;
}

/** The route of inbound TCP bytes: to the app, or closed (BlackHoleCluster) when a policy cannot be enforced. */
export function inboundTcpRoute(ctx: TranslateContext, p: InboundPort, cluster: string): TcpRoute {
  const policy = unenforceableTcpPolicy(ctx, p.port);
  if (policy === null) return { sniHosts: [], clusters: [{ cluster, weight: 100 }], origin: '' };
  ctx.warn(policy, ['spec'], `AuthorizationPolicy is not enforced on TCP traffic yet; TCP connections to port ${p.port} are refused rather than let through unchecked`);
  return { sniHosts: [], clusters: [{ cluster: BLACKHOLE_CLUSTER, weight: 100 }], origin: origin(policy) };
}

/** virtualInbound's catch-all: ports no service declares go to the app as they came (InboundPassthroughCluster). */
export const INBOUND_CATCH_ALL: TcpRoute = { sniHosts: [], clusters: [{ cluster: INBOUND_PASSTHROUGH_CLUSTER, weight: 100 }], origin: '' };
