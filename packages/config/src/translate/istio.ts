import { createHash } from 'node:crypto';
import { formatIssue, type ConfigIssue } from '../errors.ts';
import type { Cluster } from '../model/cluster.ts';
import type { HttpFilterConfig, Listener } from '../model/listener.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { RetryPolicy, Route, RouteConfiguration, VirtualHost } from '../model/route.ts';
import type { IstioGateway, IstioServer, IstioVirtualService } from '../resources/istio-networking.ts';
import type { Resource } from '../resources/resource.ts';
import { buildOutboundClusters, type ClusterOptions } from './clusters.ts';
import { TranslateContext } from './context.ts';
import { DEFAULT_CONNECTION_POOL, DestinationRuleIndex } from './destination-rule.ts';
import { FAULT_FILTER } from './fault.ts';
import { applyLocalRateLimitRoutes, localRateLimitFilter } from './local-ratelimit.ts';
import { authzFilter, jwtAuthnFilter } from './security.ts';
import { hostCovers, hostSpecificity, intersectHosts, resolveHost, serviceHostAliases } from './host.ts';
import { isHttpProtocol, labelsMatch, portProtocol, ServiceRegistry, type MeshService } from './registry.ts';
import {
  DEFAULT_RETRY_POLICY,
  gatewayRefs,
  MATCH_ALL,
  outboundClusterName,
  translateHttpRoutes,
  type MeshIndex,
} from './virtual-service.ts';

export interface TranslateOptions extends ClusterOptions {}

export const DEFAULT_TRANSLATE_OPTIONS: TranslateOptions = { dnsRefreshMs: 60_000 };

export interface TranslateResult {
  readonly config: ProxyConfig;
  /** Errors make the config unusable; warnings are worth printing but change nothing. */
  readonly issues: readonly ConfigIssue[];
}

/**
 * Istio resources → the proxy model for one node, as istiod would compute Envoy config for
 * that proxy. Resources must already be schema-valid. Never throws for bad input: problems
 * come back as issues.
 */
export function translateIstio(
  resources: readonly Resource[],
  node: ProxyNode,
  ports: ListenerPorts,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): TranslateResult {
  const ctx = new TranslateContext(resources, node, ports);
  const registry = new ServiceRegistry(ctx);
  const rules = new DestinationRuleIndex(ctx);
  const clusters = buildOutboundClusters(ctx, registry, rules, options);
  const listeners: Listener[] = [];
  const routeConfigs: RouteConfiguration[] = [];

  if (node.kind === 'sidecar') {
    const outbound = sidecarOutboundRoutes(ctx, { registry, rules });
    routeConfigs.push(outbound);
    listeners.push({
      name: 'virtualOutbound',
      address: ports.bindAddress,
      port: ports.outboundPort,
      direction: 'outbound',
      routeConfig: 'outbound',
      httpFilters: chain(localRateLimitFilter(ctx, 'SIDECAR_OUTBOUND', ports.outboundPort), faultFilterFor(outbound)),
    });
    if (ports.appPort !== null) {
      const inbound = sidecarInbound(ctx, registry, ports.appPort);
      routeConfigs.push(inbound.routeConfig);
      clusters.push(inbound.cluster);
      // Server-side policy runs where Istio runs it: the inbound side of the selected workload.
      listeners.push({
        ...inbound.listener,
        httpFilters: chain(jwtAuthnFilter(ctx), authzFilter(ctx), localRateLimitFilter(ctx, 'SIDECAR_INBOUND', ports.inboundPort)),
      });
    }
  } else {
    const gw = gatewayListeners(ctx, { registry, rules });
    listeners.push(...gw.listeners);
    routeConfigs.push(...gw.routeConfigs);
  }

  applyLocalRateLimitRoutes(ctx, listeners, routeConfigs);

  const version = createHash('sha256')
    .update(JSON.stringify(resources.map((r) => r.document)))
    .update(JSON.stringify(node))
    .update(JSON.stringify(ports))
    .digest('hex')
    .slice(0, 16);
  return { config: { version, node, listeners, routeConfigs, clusters }, issues: dedupe(ctx.issues) };
}

/**
 * The outbound route table: a virtual host per HTTP port of every service, answering every
 * name a client may use for it (`reviews`, `reviews:9080`, `reviews.default`, …, the FQDN,
 * the service's addresses). The routes come from the mesh VirtualService for the host (the
 * most specific, then the oldest), or a default route to the service.
 */
function sidecarOutboundRoutes(ctx: TranslateContext, mesh: MeshIndex): RouteConfiguration {
  const { registry } = mesh;
  const { node } = ctx;
  const meshServices = ctx
    .resourcesOf('VirtualService')
    .filter((vs) => ctx.isVisible(vs) && gatewayRefs(vs, (vs.spec as IstioVirtualService).gateways).has('mesh'));
  const hostsOf = (vs: Resource): string[] =>
    ((vs.spec as IstioVirtualService).hosts ?? []).map((h) => resolveHost(h, vs.metadata.namespace, node.clusterDomain));

  const virtualHosts: VirtualHost[] = [];
  const routed: MeshService[] = [];
  for (const svc of registry.services()) {
    if (svc.host.startsWith('*')) continue;
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
      const routes = vsRoutes.length > 0 ? vsRoutes : [defaultRoute(outboundClusterName(port.number, '', svc.host), DEFAULT_RETRY_POLICY)];
      virtualHosts.push({ name: `${svc.host}:${port.number}`, domains, routes });
    }
  }
  // VirtualService hosts that name no routed service still route (e.g. a name routed to a
  // service), even when the same VirtualService also names services (Istio's
  // separateVSHostsAndServices); the oldest VirtualService wins a host named twice.
  const hostsDone = new Set<string>();
  for (const vs of meshServices) {
    for (const h of hostsOf(vs)) {
      if (hostsDone.has(h) || routed.some((svc) => hostCovers(h, svc.host))) continue;
      hostsDone.add(h);
      const routes = translateHttpRoutes(ctx, mesh, vs, { gateway: 'mesh', port: 80, servicePortHost: null });
      if (routes.length === 0) continue;
      virtualHosts.push({ name: h, domains: h === '*' ? ['*'] : [h, `${h}:*`], routes });
    }
  }
  return { name: 'outbound', virtualHosts, ignorePortInHostMatching: false };
}

/** The port a Host header without `:port` means: 80 if the service has it, else its first HTTP port. */
function defaultServicePort(svc: MeshService): number {
  const http = svc.ports.filter((p) => isHttpProtocol(portProtocol(p)));
  return http.some((p) => p.number === 80) ? 80 : (http[0]?.number ?? 80);
}

/** A catch-all route to one cluster: a service's default route, or the inbound route to the app. */
function defaultRoute(cluster: string, retry: RetryPolicy | null): Route {
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
      cors: null,
    },
    requestHeaders: null,
    responseHeaders: null,
    filterConfigs: {},
    origin: '',
  };
}

/**
 * The inbound side: everything that reaches the inbound port goes to the local app. The
 * cluster carries the sidecar's own service (a ServiceEntry selecting its labels) for metrics.
 */
function sidecarInbound(
  ctx: TranslateContext,
  registry: ServiceRegistry,
  appPort: number,
): { listener: Listener; routeConfig: RouteConfiguration; cluster: Cluster } {
  const { node, ports } = ctx;
  const name = `inbound|${appPort}||`;
  let own: MeshService | null = null;
  for (const svc of registry.services()) {
    const sel = (svc.source.spec as { workloadSelector?: { labels?: Record<string, string> } }).workloadSelector?.labels;
    const selected = sel ? labelsMatch(sel, node.labels) : svc.endpoints.some((e) => Object.keys(e.labels).length > 0 && labelsMatch(e.labels, node.labels));
    if (selected && svc.namespace === node.namespace) {
      own = svc;
      break;
    }
  }
  const cluster: Cluster = {
    name,
    service: own ? { host: own.host, name: own.name, namespace: own.namespace, port: own.ports[0]?.number ?? appPort } : null,
    subset: '',
    discovery: 'static',
    endpoints: [
      {
        address: ports.appAddress,
        port: appPort,
        labels: node.labels,
        weight: 1,
        locality: '',
        workloadName: node.workloadName,
        namespace: node.namespace,
        serviceAccount: node.serviceAccount,
      },
    ],
    dnsRefreshMs: 0,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: DEFAULT_CONNECTION_POOL,
    outlierDetection: null,
    tls: null,
    localityLb: null,
    warmupMs: 0,
  };
  // Istio does not retry on the inbound side.
  const route = defaultRoute(name, null);
  return {
    listener: {
      name: 'virtualInbound',
      address: ports.bindAddress,
      port: ports.inboundPort,
      direction: 'inbound',
      routeConfig: `inbound|${appPort}`,
      httpFilters: [],
    },
    routeConfig: {
      name: `inbound|${appPort}`,
      virtualHosts: [{ name: `inbound|http|${appPort}`, domains: ['*'], routes: [route] }],
      ignorePortInHostMatching: true,
    },
    cluster,
  };
}

interface BoundServer {
  readonly gateway: Resource;
  readonly ref: string;
  readonly server: IstioServer;
  readonly index: number;
}

const HTTP_SERVER_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);

/**
 * Gateway listeners: one per port of the servers of every Gateway whose selector matches
 * this proxy. VirtualServices bound to those gateways fill each port's route table with a
 * virtual host per (VS host ∩ server host); VirtualServices for the same host merge, oldest
 * first, as Istio merges them on gateways.
 */
function gatewayListeners(ctx: TranslateContext, mesh: MeshIndex): { listeners: Listener[]; routeConfigs: RouteConfiguration[] } {
  const { node } = ctx;
  const byPort = new Map<number, BoundServer[]>();
  for (const gw of ctx.resourcesOf('Gateway')) {
    const spec = gw.spec as IstioGateway;
    if (!labelsMatch(spec.selector ?? {}, node.labels)) continue;
    const ref = `${gw.metadata.namespace}/${gw.metadata.name}`;
    (spec.servers ?? []).forEach((server, index) => {
      const port = server.port?.number ?? 0;
      const protocol = (server.port?.protocol ?? '').toUpperCase();
      if (!HTTP_SERVER_PROTOCOLS.has(protocol)) {
        ctx.warn(gw, ['spec', 'servers', index, 'port', 'protocol'], `${protocol} servers are not served yet; server skipped`);
        return;
      }
      if (server.tls?.httpsRedirect) {
        ctx.warn(gw, ['spec', 'servers', index, 'tls', 'httpsRedirect'], 'httpsRedirect is not applied yet');
      }
      let list = byPort.get(port);
      if (list === undefined) byPort.set(port, (list = []));
      list.push({ gateway: gw, ref, server, index });
    });
  }

  const listeners: Listener[] = [];
  const routeConfigs: RouteConfiguration[] = [];
  const virtualServices = ctx.resourcesOf('VirtualService');
  const jwtAuthn = jwtAuthnFilter(ctx);
  const authz = authzFilter(ctx);
  for (const [port, servers] of [...byPort].sort((a, b) => a[0] - b[0])) {
    const hosts = new Map<string, Route[]>();
    const refs = new Set(servers.map((s) => s.ref));
    for (const vs of virtualServices) {
      if (!ctx.isVisible(vs)) continue;
      const spec = vs.spec as IstioVirtualService;
      const bound = gatewayRefs(vs, spec.gateways);
      const matchGateways = (spec.http ?? []).flatMap((h) => (h.match ?? []).flatMap((m) => m.gateways ?? []));
      for (const g of matchGateways) bound.add(g.includes('/') ? g : `${vs.metadata.namespace}/${g}`);
      const done = new Set<string>();
      for (const s of servers) {
        if (!bound.has(s.ref)) continue;
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
            let routes = hosts.get(domain);
            if (routes === undefined) hosts.set(domain, (routes = []));
            routes.push(...untilCatchAll(translateHttpRoutes(ctx, mesh, vs, { gateway: s.ref, port, servicePortHost: null })));
          }
        }
      }
    }
    const bind = servers.find((s) => s.server.bind)?.server.bind ?? ctx.ports.bindAddress;
    const name = `http.${port}`;
    routeConfigs.push({
      name,
      virtualHosts: [...hosts].map(([domain, routes]) => ({ name: `${domain}:${port}`, domains: [domain], routes: catchAllsLast(routes) })),
      ignorePortInHostMatching: true,
    });
    const rc = routeConfigs[routeConfigs.length - 1]!;
    listeners.push({
      name: `${bind}_${port}`,
      address: bind,
      port,
      direction: 'gateway',
      routeConfig: name,
      // The gateway is where edge policy runs: authn, authz, rate limit, then faults.
      httpFilters: chain(jwtAuthn, authz, localRateLimitFilter(ctx, 'GATEWAY', port), faultFilterFor(rc)),
    });
    if (refs.size > 1) {
      // Several gateways sharing a port is legal in Istio; say so, since hosts then mix.
      const first = servers[0]!;
      ctx.warn(first.gateway, ['spec', 'servers', first.index, 'port'], `port ${port} is shared by gateways ${[...refs].join(', ')}`);
    }
  }
  return { listeners, routeConfigs };
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

/** The filters present, in order (Istio's: jwt-authn, authz, rate limit, fault). */
function chain(...filters: (HttpFilterConfig | null)[]): HttpFilterConfig[] {
  return filters.filter((f): f is HttpFilterConfig => f !== null);
}

/** The fault filter runs only where a route asks for it (its config is per route). */
function faultFilterFor(rc: RouteConfiguration): HttpFilterConfig | null {
  const any = rc.virtualHosts.some((v) => v.routes.some((r) => FAULT_FILTER in r.filterConfigs));
  return any ? { name: FAULT_FILTER, config: {} } : null;
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
