/**
 * Envoy Listeners (proto3 JSON, canonical form) read into the runtime's listener model.
 *
 * What the model expresses, and so what is read:
 * - one HTTP connection manager per listener and port (every filter chain that carries one
 *   carries the same), routing through RDS `routeConfigName` or an inline `routeConfig`
 *   (returned, named, for the route importer);
 * - a gateway's TLS servers: filter chains selected by `serverNames`, each terminating TLS with
 *   a DownstreamTlsContext whose SDS secrets resolve to files, or passing it through to a
 *   `tcp_proxy`; a gateway TCP server: one `tcp_proxy` chain;
 * - a sidecar's ports as istiod builds them: HTTP chains, `tcp_proxy` chains (by SNI where they
 *   match names), or both under protocol detection (the HTTP chain matched on the application
 *   protocols http_inspector reports, the TCP chains and the default chain beside it); each
 *   port's Istio mTLS (PeerAuthentication) from its `tls` chains terminating it with the
 *   workload identity, PERMISSIVE where plaintext chains stand beside them;
 * - capture listeners (`useOriginalDst`, istiod's `virtualOutbound` and `virtualInbound`): the
 *   chain on the capture's own port (istiod's blackhole) serves connections made to it
 *   directly, each other destination port's chains become a listener of their own (not bound,
 *   `inbound_0.0.0.0_9080`), the unmatched chains the catch-all; per-port listeners not
 *   bound to their port (`0.0.0.0_9080`, `10.96.0.5_6379`) are listeners of their own too;
 * - Remora's older capture: per-port listeners its exporter marks as standing for a capture's
 *   `routeConfigsByPort` fold back into it.
 *
 * Still refused, naming the listener and the field: matching on destination addresses
 * (`prefixRanges`, but a listener's own address), source or server-name-less TLS matches the
 * model has no word for, HTTP filters on a capture's catch-all (Remora's catch-all is TCP),
 * several connection managers on one port, internal listeners and `filterChainMatcher`.

 * A field that changes behaviour Remora cannot honour is an error (the listener is not
 * imported); a field that tunes something Remora does not have is a warning. Only types are
 * imported from the generated code: this module loads on the proxy's main thread.
 */
import type { AccessLogConfig, IstioStatsConfig, Listener, ListenerTls, HttpConnectionManagerOptions, HttpFilterConfig, HttpTracing, Pipe, TcpRoute, TlsServer, TrafficDirection, ServerHeaderTransformation } from '../model/listener.ts';
import { readHcmTracing } from './to-model-tracing.ts';
import { readAccessLogs } from './to-model-access-log.ts';
import { httpStatPrefix } from '../model/listener.ts';
import type { ProxyNode } from '../model/node.ts';
import { HCM_TYPE, HTTP_FILTER_TYPES, istioStatsConfigJson, metadataExchangeConfig, readIstioStats, metadataExchangeIssues, REMORA_TYPE_PREFIX, SKIPPED_ISTIO_FILTERS, TYPED_STRUCT_TYPES } from './filter-types.ts';
import { joinPath, ResourceReport, type ImportContext } from './import-context.ts';
import type { ListenerJson } from './gen/envoy/config/listener/v3/listener_pb.ts';
import type { RouteConfigurationJson } from './gen/envoy/config/route/v3/route_pb.ts';

type Obj = Record<string, unknown>;

const TYPE = 'Listener';
const T = 'type.googleapis.com/';
const TCP_PROXY_TYPE = `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`;
const DOWNSTREAM_TLS_TYPE = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`;
const RAW_BUFFER_TYPE = `${T}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`;
const ROUTER = 'envoy.filters.http.router';
const BLACK_HOLE = 'BlackHoleCluster';

/** Listener filters whose job Remora's listeners do themselves, by name and by config type. */
const LISTENER_FILTERS: Readonly<Record<string, string>> = {
  'envoy.filters.listener.original_dst': `${T}envoy.extensions.filters.listener.original_dst.v3.OriginalDst`,
  'envoy.filters.listener.tls_inspector': `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`,
  'envoy.filters.listener.http_inspector': `${T}envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`,
};

/**
 * Istio's own HTTP filters istiod puts in every chain, accepted and not run (as the translator
 * and the filter registry skip them: peer metadata comes from the mTLS certificate, istio_*
 * metrics are the proxy's own, upstream ALPN is the cluster's TLS settings', no metric reads
 * per-method gRPC counters): by name, and by config type (the name is free-form in Envoy).
 */
const SKIPPED_ISTIO_TYPES: ReadonlySet<string> = new Set([
  `${T}io.istio.http.peer_metadata.Config`,
  `${T}envoy.tcp.metadataexchange.config.MetadataExchange`,
  `${T}istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`,
  `${T}stats.PluginConfig`,
  `${T}envoy.extensions.filters.http.grpc_stats.v3.FilterConfig`,
]);
/** Network filters of Istio's that Remora accepts and does not run (istio_* metrics are the proxy's own). */
const SKIPPED_NETWORK_FILTERS: ReadonlySet<string> = new Set(['istio.stats']);

const COMPRESSOR_TYPE = `${T}envoy.extensions.filters.http.compressor.v3.Compressor`;

const FILTER_BY_TYPE: ReadonlyMap<string, string> = new Map(Object.entries(HTTP_FILTER_TYPES).map(([name, type]) => [type, name]));

/** Where one listener's issues go. */
class At extends ResourceReport {
  constructor(ctx: ImportContext, name: string) {
    super(ctx, TYPE, name);
  }
}

function obj(v: unknown): Obj | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : null;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

const join = joinPath;

/** Seconds of a canonical Duration (`"1.5s"`); 0 when absent. */
function seconds(v: unknown): number {
  return typeof v === 'string' && v.endsWith('s') ? Number(v.slice(0, -1)) : 0;
}

/**
 * Checks a message's fields: `read` are handled by the caller, `warn` are accepted and
 * ignored (with the reason), every other field present is an error (Remora cannot honour it).
 */
function checkFields(at: At, path: string, o: Obj, read: readonly string[], warn: Readonly<Record<string, string>> = {}, what = 'not supported'): void {
  for (const key of Object.keys(o)) {
    if (read.includes(key)) continue;
    const reason = warn[key];
    if (reason !== undefined) at.warn(join(path, key), `ignored: ${reason}`);
    else at.error(join(path, key), what);
  }
}

/** Stable JSON for comparing two configs. */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
  const o = obj(v);
  if (o === null) return JSON.stringify(v) ?? 'null';
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stable(o[k])}`)
    .join(',')}}`;
}

export interface ImportedListeners {
  readonly listeners: Listener[];
  /** The HTTP connection managers' inline route configurations, each named (after its listener when it had no name). */
  readonly inlineRouteConfigs: RouteConfigurationJson[];
}

/**
 * Envoy Listeners → the model's listeners for `node`. A listener with an error is left out
 * (its issues name it). A capture listener's per-port chains (istiod's `virtualInbound`)
 * become listeners of their own; per-port listeners Remora's exporter wrote for an older
 * capture's `routeConfigsByPort` fold back into it.
 */
export function listenersFromEnvoy(listeners: readonly ListenerJson[], node: ProxyNode, ctx: ImportContext): ImportedListeners {
  const out: Listener[] = [];
  const inlineRouteConfigs: RouteConfigurationJson[] = [];
  const byPort: { listener: Listener; inline: RouteConfigurationJson | null; of: string }[] = [];
  for (const json of listeners) {
    const name = json.name ?? '';
    const at = new At(ctx, name);
    const read = readListener(json as unknown as Obj, node, at);
    if (read === null || ctx.hasErrors(TYPE, name)) continue;
    for (const r of read) {
      if (r.routeConfigsByPortOf !== undefined) byPort.push({ listener: r.listener, inline: r.inline, of: r.routeConfigsByPortOf });
      else {
        out.push(r.listener);
        if (r.inline !== null) inlineRouteConfigs.push(r.inline);
      }
    }
  }
  for (const p of byPort) {
    const at = new At(ctx, p.listener.name);
    const index = out.findIndex((l) => l.name === p.of);
    const capture = out[index];
    if (capture === undefined) {
      at.error('metadata.filterMetadata.remora.routeConfigsByPortOf', `it stands for a port of listener ${p.of}, which is not there`);
      continue;
    }
    const { name: _n, address: _a, port: _p, routeConfig: _r, bindToPort: _b, ...settings } = p.listener;
    // The capture's own fields (what it captures, its catch-all, its direct connections' port and detection) are no port's.
    const { name: _cn, address: _ca, port: _cp, routeConfig: _cr, routeConfigsByPort: _cb, useOriginalDst: _cu, catchAll: _cc, detectProtocol: _cd, destinationPort: _cdp, bindToPort: _cbp, ...captureSettings } = capture;
    if (stable(settings) !== stable(captureSettings)) {
      at.error('filterChains', `its HTTP settings differ from those of the capture listener ${capture.name}; Remora serves every port of the capture with that listener's filters and settings, routing by port`);
      continue;
    }
    out[index] = { ...capture, routeConfigsByPort: { ...(capture.routeConfigsByPort ?? {}), [String(p.listener.port)]: p.listener.routeConfig } };
    if (p.inline !== null) inlineRouteConfigs.push(p.inline);
  }
  return { listeners: out, inlineRouteConfigs };
}

interface ReadListener {
  readonly listener: Listener;
  readonly inline: RouteConfigurationJson | null;
  /** A per-port listener standing for this capture's `routeConfigsByPort` entry (Remora's own metadata). */
  readonly routeConfigsByPortOf?: string;
}

const LISTENER_WARN: Readonly<Record<string, string>> = {
  accessLog: 'connections no filter chain takes are not logged (the connection managers\' and tcp_proxies\' access logs are written)',
  perConnectionBufferLimitBytes: 'Remora has no per-connection buffer limit',
  connectionBalanceConfig: 'connections are balanced by the operating system',
  socketOptions: 'socket options are not set',
  drainType: 'listeners drain as a whole',
  enableReusePort: 'the runtime chooses port reuse itself',
  tcpBacklogSize: 'the backlog is the operating system default',
  statPrefix: 'listener stats use the listener name',
  maxConnectionsToAcceptPerSocketEvent: 'connections are accepted as Node.js does',
  ignoreGlobalConnLimit: 'Remora has no global connection limit',
  transparent: 'a redirected connection\'s original destination is looked up under REDIRECT and TPROXY alike',
};

/** Envoy's default `listener_filters_timeout`. */
const LISTENER_FILTERS_TIMEOUT_MS = 15_000;

interface ListenerContext {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly direction: TrafficDirection;
  /** Protocol detection's wait for the first bytes (`listenerFiltersTimeout`). */
  readonly timeoutMs: number;
  /** `remora.routeConfig`: the route table of a listener without a connection manager. */
  readonly metaRouteConfig: string | undefined;
}

function readListener(l: Obj, node: ProxyNode, at: At): ReadListener[] | null {
  const name = typeof l.name === 'string' ? l.name : '';
  if (name === '') at.error('name', 'a listener needs a name');
  checkFields(
    at,
    '',
    l,
    ['name', 'address', 'filterChains', 'defaultFilterChain', 'trafficDirection', 'listenerFilters', 'listenerFiltersTimeout', 'continueOnListenerFiltersTimeout', 'useOriginalDst', 'bindToPort', 'metadata', 'bypassOverloadManager'],
    LISTENER_WARN,
  );

  const read = listenerAddress(obj(l.address), at);
  if (read === null) return null;
  const { address, port, pipe } = read;

  const direction: TrafficDirection = node.kind === 'gateway' ? 'gateway' : l.trafficDirection === 'INBOUND' || name === 'virtualInbound' ? 'inbound' : 'outbound';

  arr(l.listenerFilters).forEach((f, i) => {
    const fo = obj(f) ?? {};
    const fname = typeof fo.name === 'string' ? fo.name : '';
    const type = obj(fo.typedConfig)?.['@type'];
    const known = LISTENER_FILTERS[fname] !== undefined || Object.values(LISTENER_FILTERS).includes(String(type));
    if (!known) at.warn(join('listenerFilters', i), `listener filter ${fname || String(type)} is not run (Remora runs original_dst, tls_inspector and http_inspector's work itself)`);
  });

  const chainJson = arr(l.filterChains);
  const defaultChain = obj(l.defaultFilterChain);
  if (chainJson.length === 0 && defaultChain === null) {
    at.error('filterChains', 'a listener needs at least one filter chain');
    return null;
  }
  // Envoy's default chain serves what no chain matches: read as the last, unmatched chain.
  const parsed = [...chainJson.map((c, i) => readChain(obj(c) ?? {}, `filterChains[${i}]`, at)), ...(defaultChain === null ? [] : [readChain(defaultChain, 'defaultFilterChain', at)])];
  if (parsed.some((c) => c === null)) return null;
  const cs = parsed as Chain[];
  for (const c of cs) {
    if (c.prefixRanges.some((r) => r !== `${address}/32` && r !== `${address}/128`)) {
      at.error(join(c.path, 'filterChainMatch.prefixRanges'), 'matching on destination addresses other than the listener\'s own is not supported (Remora matches destination port, SNI, transport and application protocol)');
      return null;
    }
  }

  const meta = obj(obj(obj(l.metadata)?.filterMetadata)?.remora);
  const timeout = l.listenerFiltersTimeout === undefined ? LISTENER_FILTERS_TIMEOUT_MS : Math.round(seconds(l.listenerFiltersTimeout) * 1000);
  const lc: ListenerContext = { name, address, port, direction, timeoutMs: timeout, metaRouteConfig: typeof meta?.routeConfig === 'string' ? meta.routeConfig : undefined };
  const base = {
    name,
    address,
    port,
    ...(pipe !== null ? { pipe } : {}),
    direction,
    ...(l.bypassOverloadManager === true ? { bypassOverloadManager: true } : {}),
    ...(l.bindToPort === false ? { bindToPort: false } : {}),
  };

  if (direction === 'gateway') {
    const read = gatewayListener(cs, base, lc, at);
    return read === null ? null : [read];
  }

  // A capture (istiod's virtualOutbound / virtualInbound): its own chain on its own port, the
  // chains of other destination ports as listeners of their own, the unmatched ones its catch-all.
  // istiod's virtualInbound says it with the original_dst listener filter alone (its ports are its own chains).
  const originalDst = arr(l.listenerFilters).some((f) => obj(f)?.name === 'envoy.filters.listener.original_dst' || obj(obj(f)?.typedConfig)?.['@type'] === LISTENER_FILTERS['envoy.filters.listener.original_dst']);
  if ((l.useOriginalDst === true || originalDst) && meta?.impliedOriginalDst !== true) return captureListeners(cs, base, lc, meta, at);

  // One destination port for the whole listener (Remora's older inbound listener), or none.
  const ports = new Set(cs.map((c) => c.destinationPort));
  if (ports.size > 1) {
    at.error('filterChains', 'filter chains match different destination ports; only a capture listener (useOriginalDst) serves several, each as a listener of its own');
    return null;
  }
  const destinationPort = cs[0]!.destinationPort;
  const body = sidecarBody(cs, lc, destinationPort, at);
  if (body === null) return null;
  // An older capture's routeConfigsByPort entries whose port has a listener of its own (no per-port listener stands for them).
  const shadowed = obj(meta?.routeConfigsByPort);
  const byPort = shadowed === null ? {} : { routeConfigsByPort: Object.fromEntries(Object.entries(shadowed).map(([k, v]) => [k, String(v)])) };
  const listener: Listener = { ...base, ...(destinationPort === undefined ? {} : { destinationPort }), ...body.fields, ...byPort };
  checkStatPrefix(listener, body, at);
  const of = meta?.routeConfigsByPortOf;
  return [{ listener, inline: body.inline, ...(typeof of === 'string' && l.bindToPort === false ? { routeConfigsByPortOf: of } : {}) }];
}

type ListenerBase = Pick<Listener, 'name' | 'address' | 'port' | 'pipe' | 'direction' | 'bypassOverloadManager' | 'bindToPort'>;

/**
 * A listener's `address`: a socketAddress (IP and port), or a pipe (a unix domain socket,
 * read as address `unix://<path>`, port 0, as istiod names such a listener).
 */
function listenerAddress(a: Obj | null, at: At): { address: string; port: number; pipe: Pipe | null } | null {
  const pipe = obj(a?.pipe);
  if (pipe !== null) {
    checkFields(at, 'address.pipe', pipe, ['path', 'mode'], {}, 'not supported');
    const path = typeof pipe.path === 'string' ? pipe.path : '';
    if (path === '') {
      at.error('address.pipe.path', 'a unix domain socket listener needs a path');
      return null;
    }
    const mode = typeof pipe.mode === 'number' ? pipe.mode : 0;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      at.error('address.pipe.mode', `must be permission bits 0–0777, got ${String(pipe.mode)}`);
      return null;
    }
    return { address: `unix://${path}`, port: 0, pipe: { path, mode } };
  }
  const sa = obj(a?.socketAddress);
  if (sa === null) {
    at.error('address', a === null ? 'a listener needs an address' : 'only a socketAddress (IP and port) or a pipe (unix domain socket) is supported');
    return null;
  }
  checkFields(at, 'address.socketAddress', sa, ['address', 'portValue', 'protocol', 'ipv4Compat'], {}, 'not supported (only an IP address and a port)');
  if (sa.protocol !== undefined && sa.protocol !== 'TCP') at.error('address.socketAddress.protocol', `${String(sa.protocol)} listeners are not supported (TCP only)`);
  const address = typeof sa.address === 'string' ? sa.address : '';
  const port = typeof sa.portValue === 'number' ? sa.portValue : 0;
  if (address === '') at.error('address.socketAddress.address', 'a listener needs an IP address');
  return { address, port, pipe: null };
}

function captureListeners(cs: readonly Chain[], base: ListenerBase, lc: ListenerContext, meta: Obj | null, at: At): ReadListener[] | null {
  const own = cs.filter((c) => c.destinationPort === lc.port);
  const catchAll = cs.filter((c) => c.destinationPort === undefined);
  const byPort = new Map<number, Chain[]>();
  for (const c of cs) {
    if (c.destinationPort === undefined || c.destinationPort === lc.port) continue;
    const list = byPort.get(c.destinationPort);
    if (list === undefined) byPort.set(c.destinationPort, [c]);
    else list.push(c);
  }
  const out: ReadListener[] = [];
  // Connections made to the capture directly: istiod's blackhole chain; none is the same.
  const body = own.length === 0 ? null : sidecarBody(own, lc, lc.port, at);
  if (own.length > 0 && body === null) return null;
  const routes = catchAllRoutes(catchAll, at);
  if (routes === null) return null;
  // Remora's own chain for direct connections: the port they count as addressed to (the
  // app's, on the inbound side) and its tables by port, which Envoy's terms do not say.
  const direct = typeof meta?.destinationPort === 'number' ? { destinationPort: meta.destinationPort } : {};
  const shadowed = obj(meta?.routeConfigsByPort);
  const tables = shadowed === null ? {} : { routeConfigsByPort: Object.fromEntries(Object.entries(shadowed).map(([k, v]) => [k, String(v)])) };
  const { metadataExchange: _mx, ...ownFields } = body?.fields ?? { routeConfig: lc.metaRouteConfig ?? `tcp.${lc.port}`, httpFilters: [], tls: null, tcpProxy: [] };
  const capture: Listener = {
    ...base,
    ...ownFields,
    // The capture's own chains and its catch-all (istiod's blackhole and passthrough chains) carry it alike.
    ...metadataExchangeOf([...own, ...catchAll.filter((c) => c.tls === null && c.hcm === null)], at),
    ...direct,
    ...tables,
    useOriginalDst: true,
    ...(routes.length === 0 && catchAll.length === 0 ? {} : { catchAll: routes }),
  };
  if (body !== null) checkStatPrefix(capture, body, at);
  out.push({ listener: capture, inline: body?.inline ?? null });
  for (const [port, chains] of byPort) {
    const first = chains[0]!;
    const remora = first.server ?? {};
    // istiod names a port's chains `<address>_<port>` (the model's listener, `inbound_<address>_<port>`, as its HTTP stats).
    const chainName = first.name !== '' ? first.name : `${lc.address}_${port}`;
    const address = chainName.endsWith(`_${port}`) ? chainName.slice(0, -`_${port}`.length) : lc.address;
    const name = typeof remora.listener === 'string' ? remora.listener : `${lc.direction}_${address}_${port}`;
    const listenerPort = typeof remora.port === 'number' ? remora.port : port;
    const timeoutMs = typeof remora.timeoutMs === 'number' ? remora.timeoutMs : lc.timeoutMs;
    const metaRouteConfig = typeof remora.routeConfig === 'string' ? remora.routeConfig : `tcp.${port}`;
    const b = sidecarBody(chains, { ...lc, name, port, timeoutMs, metaRouteConfig }, port, at);
    if (b === null) return null;
    const listener: Listener = { name, address, port: listenerPort, direction: lc.direction, ...b.fields, destinationPort: port, bindToPort: false };
    checkStatPrefix(listener, b, at);
    out.push({ listener, inline: b.inline });
  }
  return out;
}

/**
 * A capture's unmatched chains as its catch-all routes (TCP to PassthroughCluster,
 * InboundPassthroughCluster or BlackHoleCluster). istiod's inbound passthrough also has
 * chains terminating Istio mTLS and HTTP chains (`virtualInbound-catchall-http`); Remora's
 * catch-all is plain TCP: those are left out with a warning (mTLS connections to a port no
 * service declares are closed under STRICT and passed through undecrypted under PERMISSIVE),
 * and refused where their connection manager runs policy, which Remora could not apply.
 */
function catchAllRoutes(cs: readonly Chain[], at: At): TcpRoute[] | null {
  const routes: TcpRoute[] = [];
  const seen = new Set<string>();
  for (const c of cs) {
    if (c.tls !== null) {
      at.warn(c.path, 'ignored: the catch-all proxies TCP without terminating Istio mTLS; an mTLS connection to a port no listener serves is passed through as it came (PERMISSIVE) or closed (STRICT: no plaintext catch-all)');
      continue;
    }
    if (c.hcm !== null) {
      const filters = readHttpFilters(arr(c.hcm.httpFilters), `${c.path}.filters[${c.hcmIndex}].typedConfig.httpFilters`, at);
      const policy = filters.filter((f) => f.name !== ROUTER);
      if (policy.length > 0) {
        at.error(`${c.path}.filters[${c.hcmIndex}].typedConfig.httpFilters`, `HTTP filters (${policy.map((f) => f.name).join(', ')}) on traffic to ports no listener serves are not supported: Remora's catch-all proxies TCP`);
        return null;
      }
      at.warn(c.path, 'ignored: HTTP to ports no listener serves is proxied as TCP by the catch-all');
      continue;
    }
    const route = c.tcpWithBlackHole!;
    const key = stable(route);
    if (!seen.has(key)) routes.push(route);
    seen.add(key);
  }
  return routes;
}

function checkStatPrefix(listener: Listener, body: SidecarBody | GatewayBody, at: At): void {
  if (body.hcmPath === null) return;
  const expected = httpStatPrefix(listener);
  if (body.statPrefix !== expected && body.statPrefix !== `${expected};`) at.warn(`${body.hcmPath}.statPrefix`, `Remora's HTTP stats for this listener are under http.${expected}., not http.${body.statPrefix}.`);
}

type ListenerFields = Pick<Listener, 'routeConfig' | 'httpFilters' | 'tls' | 'connectionManager' | 'tracing' | 'tcpProxy' | 'detectProtocol' | 'accessLog' | 'metadataExchange' | 'istioStats'>;

/**
 * The listener's TCP metadata exchange: on when its chains carry the filter (istiod puts it in
 * every chain of an inbound port). The runtime runs it on every TCP connection of the
 * listener, so a chain without it beside one with it is warned of.
 */
function metadataExchangeOf(cs: readonly Chain[], at: At): Pick<Listener, 'metadataExchange'> {
  if (!cs.some((c) => c.mx)) return {};
  for (const c of cs) {
    if (!c.mx && c.tcpWithBlackHole !== null) at.warn(join(c.path, 'filters'), 'istio.metadata_exchange is on another chain of this port: Remora exchanges peer metadata on every TCP connection of the port over Istio mTLS');
  }
  return { metadataExchange: true };
}

/** The listener's Istio stats config: its chains' (the first that has one; istiod gives every chain the same). */
function istioStatsOf(cs: readonly Chain[]): Pick<Listener, 'istioStats'> {
  const found = cs.find((c) => c.stats !== null)?.stats;
  return found === undefined || found === null ? {} : { istioStats: found };
}

/** The listener's access logs: its chains' (the first that has some; istiod gives every chain the same). */
function accessLogOf(cs: readonly Chain[]): Pick<Listener, 'accessLog'> {
  const found = cs.find((c) => c.accessLog !== null)?.accessLog;
  return found === undefined || found === null ? {} : { accessLog: found };
}

interface SidecarBody {
  readonly fields: ListenerFields;
  readonly inline: RouteConfigurationJson | null;
  /** The connection manager's path and stat prefix, for the stats warning; null without one. */
  readonly hcmPath: string | null;
  readonly statPrefix: string;
}
type GatewayBody = SidecarBody;

/**
 * One sidecar port's chains as one listener (istiod's per-port listener, or one port's chains
 * in virtualInbound): HTTP chains (one connection manager), TCP chains (their routes, SNI
 * ones first as Envoy picks the most specific match), or both under protocol detection; Istio
 * mTLS when chains terminate it — PERMISSIVE when plaintext chains stand beside them.
 */
function sidecarBody(cs: readonly Chain[], lc: ListenerContext, destinationPort: number | undefined, at: At): SidecarBody | null {
  const terminating = cs.filter((c) => c.tls !== null);
  let tls: ListenerTls | null = null;
  if (terminating.length > 0 && terminating.every((c) => typeof c.server?.server === 'string')) {
    // Chains of a named TLS server (a Sidecar ingress listener's SIMPLE/MUTUAL termination), not Istio mTLS.
    const read = gatewayTls(terminating, lc.name, at);
    if (read === undefined) return null;
    tls = read;
  } else if (terminating.length > 0) {
    for (const c of terminating) {
      if (c.transportProtocol !== 'tls') {
        at.error(join(c.path, 'filterChainMatch.transportProtocol'), 'a chain terminating Istio mTLS must match transportProtocol tls');
        return null;
      }
      if (c.serverNames.length > 0) {
        at.error(join(c.path, 'filterChainMatch.serverNames'), "SNI matches on a sidecar's Istio mTLS chains are not supported");
        return null;
      }
      if (!istioMtls(c, at)) return null;
    }
    const plaintext = cs.some((c) => c.tls === null && c.transportProtocol !== 'tls');
    for (const c of cs) {
      // istiod's PERMISSIVE TCP port passes TLS that is not Istio's (no Istio ALPN) through to the app.
      if (c.tls === null && c.transportProtocol === 'tls') at.warn(c.path, 'ignored: on a port with Istio mTLS every TLS connection is taken as Istio mTLS; TLS of the app\'s own is not passed through');
    }
    tls = { kind: 'mesh', mode: plaintext ? 'PERMISSIVE' : 'STRICT' };
  }
  const plainOrTls = (c: Chain): boolean => terminating.length === 0 || c.tls !== null || c.transportProtocol !== 'tls';
  const httpChains = cs.filter((c) => c.hcm !== null && plainOrTls(c));
  const tcpChains = cs.filter((c) => c.tcp !== null && plainOrTls(c));
  if (terminating.length === 0) {
    for (const c of httpChains) {
      if (c.transportProtocol === 'tls') {
        at.error(join(c.path, 'filterChainMatch.transportProtocol'), 'a tls chain without a DownstreamTlsContext would pass TLS bytes to the HTTP codec');
        return null;
      }
    }
  }
  // TCP routes in Envoy's order of preference: SNI matches before the rest. BlackHoleCluster
  // stays a route's cluster, as istiod and the translator name it (REGISTRY_ONLY's catch-all
  // behind detection, an inbound port a policy closes).
  const routes: TcpRoute[] = [];
  const seen = new Set<string>();
  for (const c of [...tcpChains.filter((x) => x.serverNames.length > 0), ...tcpChains.filter((x) => x.serverNames.length === 0)]) {
    const key = stable(c.tcpWithBlackHole);
    if (!seen.has(key)) routes.push(c.tcpWithBlackHole!);
    seen.add(key);
  }
  // A TCP listener whose one route is a bare blackhole (a capture's blackhole chain) has no TCP route.
  const lone = routes.length === 1 ? routes[0]! : null;
  const bare = lone !== null && lone.origin === '' && lone.sniHosts.length === 0 && lone.clusters.every((x) => x.cluster === BLACK_HOLE);
  const tcpProxy = bare ? [] : routes;

  if (httpChains.length === 0) {
    return { fields: { routeConfig: lc.metaRouteConfig ?? `tcp.${lc.port}`, httpFilters: [], tls, tcpProxy, ...accessLogOf(cs), ...istioStatsOf(cs), ...metadataExchangeOf(cs, at) }, inline: null, hcmPath: null, statPrefix: '' };
  }
  const first = httpChains[0]!;
  for (const c of httpChains.slice(1)) {
    if (stable(c.hcm) !== stable(first.hcm)) {
      at.error(`${c.path}.filters`, `an HTTP connection manager unlike the one of ${first.path}; Remora runs one per listener and port (one route configuration, one filter chain)`);
      return null;
    }
  }
  const hcmPath = `${first.path}.filters[${first.hcmIndex}].typedConfig`;
  const hcm = readHcm(first.hcm!, hcmPath, lc.name, lc.direction, at);
  if (hcm === null) return null;
  const fields: ListenerFields = {
    routeConfig: hcm.routeConfig,
    httpFilters: hcm.httpFilters,
    tls,
    ...(hcm.connectionManager === undefined ? {} : { connectionManager: hcm.connectionManager }),
    ...(hcm.tracing === null ? {} : { tracing: hcm.tracing }),
    ...(tcpChains.length === 0 ? {} : { detectProtocol: { tcp: routes, timeoutMs: lc.timeoutMs } }),
    ...accessLogOf(cs), ...istioStatsOf(cs),
    ...metadataExchangeOf(cs, at),
  };
  void destinationPort;
  return { fields, inline: hcm.inline, hcmPath, statPrefix: hcm.statPrefix };
}

function gatewayListener(cs: readonly Chain[], base: ListenerBase & { destinationPort?: number }, lc: ListenerContext, at: At): ReadListener | null {
  const { name, port } = lc;
  const ports = new Set(cs.map((c) => c.destinationPort));
  if (ports.size > 1) {
    at.error('filterChains', 'filter chains match different destination ports; Remora runs one destination port per gateway listener');
    return null;
  }
  const destinationPort = cs[0]!.destinationPort;
  if (destinationPort !== undefined) base = { ...base, destinationPort };
  const httpChains = cs.filter((c) => c.hcm !== null);
  if (httpChains.length === 0) {
    // Plain TCP: a gateway TCP server, or a gateway whose TLS servers all pass through.
    const routeConfig = lc.metaRouteConfig ?? `tcp.${port}`;
    if (cs.length === 1 && cs[0]!.serverNames.length === 0 && cs[0]!.tls === null) {
      // Nothing to forward to (istiod's BlackHoleCluster, no route): no TCP route.
      const route = cs[0]!.tcp!;
      const tcpProxy = route.clusters.length === 0 && route.origin === '' ? [] : [route];
      return { listener: { ...base, routeConfig, httpFilters: [], tls: null, tcpProxy, ...accessLogOf(cs), ...istioStatsOf(cs), ...metadataExchangeOf(cs, at) }, inline: null };
    }
    const tls = gatewayTls(cs, name, at);
    if (tls === undefined) return null;
    return { listener: { ...base, routeConfig, httpFilters: [], tls, ...accessLogOf(cs), ...istioStatsOf(cs), ...metadataExchangeOf(cs, at) }, inline: null };
  }

  const first = httpChains[0]!;
  // A gateway's HTTPS servers each route through their own table (istiod's per-server RDS):
  // their connection managers may differ in that name only.
  const sameHcm = (h: Obj | null): string => {
    if (h === null) return stable(h);
    const { rds: _, ...rest } = h;
    return stable(rest);
  };
  for (const c of httpChains.slice(1)) {
    if (sameHcm(c.hcm) !== sameHcm(first.hcm)) {
      at.error(`${c.path}.filters`, `an HTTP connection manager unlike the one of ${first.path}; Remora runs one per listener (one route configuration, one filter chain)`);
      return null;
    }
  }
  const hcmPath = `${first.path}.filters[${first.hcmIndex}].typedConfig`;
  const hcm = readHcm(first.hcm!, hcmPath, name, 'gateway', at);
  if (hcm === null) return null;
  const tls = cs.length === 1 && cs[0]!.tls === null && cs[0]!.serverNames.length === 0 ? null : gatewayTls(cs, name, at);
  if (tls === undefined) return null;
  const listener: Listener = {
    ...base,
    routeConfig: hcm.routeConfig,
    httpFilters: hcm.httpFilters,
    tls,
    ...(hcm.connectionManager === undefined ? {} : { connectionManager: hcm.connectionManager }),
    ...(hcm.tracing === null ? {} : { tracing: hcm.tracing }),
    ...accessLogOf(cs), ...istioStatsOf(cs),
    ...metadataExchangeOf(cs, at),
  };
  checkStatPrefix(listener, { fields: listener, inline: hcm.inline, hcmPath, statPrefix: hcm.statPrefix }, at);
  return { listener, inline: hcm.inline };
}

// ---- filter chains ----

interface Chain {
  readonly path: string;
  readonly destinationPort: number | undefined;
  readonly serverNames: readonly string[];
  readonly transportProtocol: string;
  readonly prefixRanges: readonly string[];
  /** The HTTP connection manager's config (with `@type`), or null for a tcp_proxy chain. */
  readonly hcm: Obj | null;
  readonly hcmIndex: number;
  /** The tcp_proxy's route (BlackHoleCluster: no cluster), or null for an HTTP chain. */
  readonly tcp: TcpRoute | null;
  /** The same route with BlackHoleCluster kept as its cluster (a catch-all's REGISTRY_ONLY). */
  readonly tcpWithBlackHole: TcpRoute | null;
  /** The DownstreamTlsContext, or null for plaintext. */
  readonly tls: Obj | null;
  /** `metadata.filterMetadata.remora`: what Remora's exporter says that Envoy's fields do not (absent from istiod). */
  readonly server: Obj | null;
  /** The connection manager's or tcp_proxy's `access_log`; null: none. */
  readonly accessLog: AccessLogConfig[] | null;
  /** Istio's stats filter config (network filter or, on an HTTP chain, HTTP filter); null: none. */
  readonly stats: IstioStatsConfig | null;
  readonly name: string;
  /** Istio's TCP metadata exchange (`istio.metadata_exchange`) is among its filters. */
  readonly mx: boolean;
}

const CHAIN_WARN: Readonly<Record<string, string>> = {
  transportSocketConnectTimeout: 'the TLS handshake timeout is fixed',
};

function readChain(c: Obj, path: string, at: At): Chain | null {
  checkFields(at, path, c, ['filterChainMatch', 'filters', 'transportSocket', 'metadata', 'name'], CHAIN_WARN);
  const m = obj(c.filterChainMatch) ?? {};
  checkFields(
    at,
    join(path, 'filterChainMatch'),
    m,
    ['destinationPort', 'serverNames', 'transportProtocol', 'applicationProtocols', 'prefixRanges'],
    {},
    'matching on this is not supported (Remora matches destination port, SNI, transport and application protocol)',
  );
  const transportProtocol = typeof m.transportProtocol === 'string' ? m.transportProtocol : '';
  if (transportProtocol !== '' && transportProtocol !== 'tls' && transportProtocol !== 'raw_buffer') {
    at.error(join(path, 'filterChainMatch.transportProtocol'), `transport protocol ${transportProtocol} is not supported (tls or raw_buffer)`);
  }
  const prefixRanges = arr(m.prefixRanges).map((r) => {
    const ro = obj(r) ?? {};
    return `${String(ro.addressPrefix ?? '')}/${typeof ro.prefixLen === 'number' ? ro.prefixLen : 0}`;
  });

  let hcm: Obj | null = null;
  let hcmIndex = -1;
  let tcp: TcpRoute | null = null;
  let tcpWithBlackHole: TcpRoute | null = null;
  let accessLog: AccessLogConfig[] | null = null;
  let mx = false;
  let stats: IstioStatsConfig | null = null;
  const readStats = (config: Record<string, unknown>, cpath: string): void => {
    const got = readIstioStats(config);
    for (const [k, m] of got.errors) at.error(join(cpath, k), m);
    for (const [k, m] of got.warnings) at.warn(join(cpath, k), m);
    // istiod's filter with no overrides is Istio's default reporting: the model leaves it out.
    if (got.config.metrics.length > 0 || got.config.tcpReportingDurationMs !== null) stats = got.config;
  };
  const filters = arr(c.filters);
  filters.forEach((f, i) => {
    const fo = obj(f) ?? {};
    const fpath = `${path}.filters[${i}]`;
    const tc = obj(fo.typedConfig);
    const type = String(tc?.['@type'] ?? '');
    const fname = typeof fo.name === 'string' ? fo.name : '';
    const mxConfig = metadataExchangeConfig(fo);
    const statsConfig = istioStatsConfigJson(fo);
    if (statsConfig !== null) {
      readStats(statsConfig, join(fpath, TYPED_STRUCT_TYPES.has(type) ? 'typedConfig.value' : 'typedConfig'));
    } else if (mxConfig !== null) {
      const cpath = join(fpath, TYPED_STRUCT_TYPES.has(type) ? 'typedConfig.value' : 'typedConfig');
      const issues = metadataExchangeIssues(mxConfig);
      for (const [k, m] of issues.errors) at.error(join(cpath, k), m);
      for (const [k, m] of issues.warnings) at.warn(join(cpath, k), m);
      mx = true;
    } else if (type === HCM_TYPE || (tc === null && fname === 'envoy.filters.network.http_connection_manager')) {
      if (i !== filters.length - 1) at.error(fpath, 'the HTTP connection manager is terminal and must be the last network filter');
      hcm = tc ?? { '@type': HCM_TYPE };
      hcmIndex = i;
      arr(hcm.httpFilters).forEach((hf, j) => {
        const hfo = obj(hf) ?? {};
        const sc = istioStatsConfigJson(hfo);
        const htype = String(obj(hfo.typedConfig)?.['@type'] ?? '');
        if (sc !== null) readStats(sc, join(`${fpath}.typedConfig.httpFilters[${j}]`, TYPED_STRUCT_TYPES.has(htype) ? 'typedConfig.value' : 'typedConfig'));
      });
      accessLog = readAccessLogs(tc?.accessLog, join(join(fpath, 'typedConfig'), 'accessLog'), at);
    } else if (type === TCP_PROXY_TYPE || (tc === null && fname === 'envoy.filters.network.tcp_proxy')) {
      if (i !== filters.length - 1) at.error(fpath, 'tcp_proxy is terminal and must be the last network filter');
      tcpWithBlackHole = readTcpProxy(tc ?? {}, join(fpath, 'typedConfig'), c, at);
      accessLog = readAccessLogs(tc?.accessLog, join(join(fpath, 'typedConfig'), 'accessLog'), at);
      tcp = tcpWithBlackHole === null ? null : { ...tcpWithBlackHole, clusters: tcpWithBlackHole.clusters.filter((x) => x.cluster !== BLACK_HOLE) };
    } else if (SKIPPED_NETWORK_FILTERS.has(fname) || SKIPPED_ISTIO_TYPES.has(type) || (TYPED_STRUCT_TYPES.has(type) && SKIPPED_ISTIO_TYPES.has(String(tc?.typeUrl)))) {
      // Istio's peer metadata exchange and stats: Remora does that work itself.
    } else {
      at.error(fpath, `network filter ${fname || type} is not supported (Remora runs the HTTP connection manager and tcp_proxy)`);
    }
  });
  if (hcm === null && tcp === null) {
    at.error(join(path, 'filters'), 'a filter chain needs an HTTP connection manager or a tcp_proxy');
    return null;
  }

  let tls: Obj | null = null;
  const ts = obj(c.transportSocket);
  if (ts !== null) {
    const tc = obj(ts.typedConfig);
    const type = String(tc?.['@type'] ?? '');
    if (type === DOWNSTREAM_TLS_TYPE) tls = tc;
    else if (type !== RAW_BUFFER_TYPE && !(tc === null && ts.name === 'envoy.transport_sockets.raw_buffer')) {
      at.error(join(path, 'transportSocket'), `transport socket ${type || String(ts.name)} is not supported (DownstreamTlsContext or raw_buffer)`);
      return null;
    }
  }
  if (tls !== null && transportProtocol === 'raw_buffer') at.error(join(path, 'filterChainMatch.transportProtocol'), 'raw_buffer chains cannot terminate TLS');
  const fm = obj(obj(c.metadata)?.filterMetadata);
  return {
    path,
    destinationPort: typeof m.destinationPort === 'number' ? m.destinationPort : undefined,
    serverNames: arr(m.serverNames).map(String),
    transportProtocol,
    prefixRanges,
    hcm,
    hcmIndex,
    tcp,
    tcpWithBlackHole,
    tls,
    server: obj(fm?.remora),
    accessLog,
    stats,
    name: typeof c.name === 'string' ? c.name : '',
    mx,
  };
}

const TCP_WARN: Readonly<Record<string, string>> = {
  idleTimeout: 'TCP connections are not closed for idleness',
  maxConnectAttempts: 'one connection attempt is made',
  downstreamIdleTimeout: 'TCP connections are not closed for idleness',
  upstreamIdleTimeout: 'TCP connections are not closed for idleness',
  accessLogOptions: 'access logs are written when a connection ends',
};

/** istiod's config reference (`/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`) as `<ns>/<name>`. */
function configOrigin(metadata: unknown): string {
  const config = obj(obj(obj(metadata)?.filterMetadata)?.istio)?.config;
  const m = typeof config === 'string' ? /\/namespaces\/([^/]+)\/[^/]+\/([^/]+)$/.exec(config) : null;
  return m === null ? '' : `${m[1]}/${m[2]}`;
}

/** A tcp_proxy's route; BlackHoleCluster is kept as a cluster here (the caller drops it where no route means the same). */
function readTcpProxy(tp: Obj, path: string, chain: Obj, at: At): TcpRoute | null {
  checkFields(at, path, tp, ['@type', 'statPrefix', 'cluster', 'weightedClusters', 'accessLog'], TCP_WARN);
  let clusters: { cluster: string; weight: number }[];
  if (typeof tp.cluster === 'string') {
    clusters = [{ cluster: tp.cluster, weight: 100 }];
  } else {
    const wc = obj(tp.weightedClusters);
    if (wc === null) {
      at.error(path, 'tcp_proxy needs a cluster or weightedClusters');
      return null;
    }
    checkFields(at, join(path, 'weightedClusters'), wc, ['clusters']);
    clusters = arr(wc.clusters).map((c, i) => {
      const co = obj(c) ?? {};
      checkFields(at, `${path}.weightedClusters.clusters[${i}]`, co, ['name', 'weight']);
      return { cluster: String(co.name ?? ''), weight: typeof co.weight === 'number' ? co.weight : 0 };
    });
  }
  const m = obj(chain.filterChainMatch) ?? {};
  const remora = obj(obj(obj(chain.metadata)?.filterMetadata)?.remora);
  const sniHosts = Array.isArray(remora?.sniHosts) ? remora.sniHosts.map(String) : arr(m.serverNames).map(String);
  return { sniHosts, clusters, origin: configOrigin(chain.metadata) };
}

// ---- TLS ----

/** Whether a chain's DownstreamTlsContext is a sidecar's Istio mTLS (PeerAuthentication): the workload identity, the mesh roots, a client certificate required. */
function istioMtls(c: Chain, at: At): boolean {
  const path = `${c.path}.transportSocket.typedConfig`;
  const d = readDownstreamTls(c.tls!, path, at, true);
  if (d === null) return false;
  if (d.cert?.kind !== 'workload' || d.validation?.kind !== 'roots' || !d.requireClientCertificate) {
    at.error(path, "a sidecar's inbound TLS must be Istio mTLS: the workload certificate (SDS default), the mesh roots (SDS ROOTCA) and a client certificate required");
    return false;
  }
  if (d.subjectAltNames.length > 0) {
    at.error(`${path}.commonTlsContext.combinedValidationContext.defaultValidationContext.matchSubjectAltNames`, "peer SAN checks on a sidecar's inbound side are not supported (AuthorizationPolicy principals do that)");
    return false;
  }
  if (d.minVersion !== null || d.maxVersion !== null || d.cipherSuites.length > 0) {
    at.error(`${path}.commonTlsContext.tlsParams`, "TLS parameters of a sidecar's inbound mTLS are not supported");
    return false;
  }
  return true;
}

interface DownstreamTls {
  readonly cert: ResolvedSecret | null;
  readonly validation: ResolvedSecret | null;
  readonly requireClientCertificate: boolean;
  readonly subjectAltNames: string[];
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  readonly maxVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  readonly cipherSuites: string[];
}

type ResolvedSecret = NonNullable<ReturnType<ImportContext['secret']>>;

const DOWNSTREAM_WARN: Readonly<Record<string, string>> = {
  sessionTicketKeys: 'session tickets use Node.js defaults',
  sessionTicketKeysSdsSecretConfig: 'session tickets use Node.js defaults',
  disableStatelessSessionResumption: 'session tickets use Node.js defaults',
  disableStatefulSessionResumption: 'session resumption uses Node.js defaults',
  sessionTimeout: 'session resumption uses Node.js defaults',
  preferClientCiphers: "the server's cipher order is used",
  fullScanCertsOnSniMismatch: 'one certificate per chain',
};

const COMMON_WARN: Readonly<Record<string, string>> = {
  keyLog: 'TLS key logging is not supported',
};

const VERSIONS: Readonly<Record<string, 'TLSv1.2' | 'TLSv1.3' | null>> = { TLS_AUTO: null, TLSv1_2: 'TLSv1.2', TLSv1_3: 'TLSv1.3' };

/** `mesh`: a sidecar's Istio mTLS, whose ALPN is Istio's (the runtime's Istio mTLS offers its own). */
function readDownstreamTls(d: Obj, path: string, at: At, mesh = false): DownstreamTls | null {
  checkFields(at, path, d, ['@type', 'commonTlsContext', 'requireClientCertificate', 'ocspStaplePolicy'], DOWNSTREAM_WARN);
  if (d.ocspStaplePolicy !== undefined && d.ocspStaplePolicy !== 'LENIENT_STAPLING') at.error(join(path, 'ocspStaplePolicy'), 'OCSP stapling is not supported');
  const c = obj(d.commonTlsContext) ?? {};
  const cpath = join(path, 'commonTlsContext');
  checkFields(at, cpath, c, ['tlsParams', 'tlsCertificateSdsSecretConfigs', 'combinedValidationContext', 'validationContextSdsSecretConfig', 'alpnProtocols'], COMMON_WARN, 'not supported (certificates and roots come from SDS secrets)');

  const p = obj(c.tlsParams) ?? {};
  const ppath = join(cpath, 'tlsParams');
  checkFields(at, ppath, p, ['tlsMinimumProtocolVersion', 'tlsMaximumProtocolVersion', 'cipherSuites'], {}, 'not supported (TLS versions and cipher suites only); Remora cannot restrict it');
  const version = (key: string): 'TLSv1.2' | 'TLSv1.3' | null => {
    const v = p[key];
    if (v === undefined) return null;
    const mapped = VERSIONS[String(v)];
    if (mapped === undefined) at.error(join(ppath, key), `${String(v)} is not supported (TLS 1.2 and 1.3 only)`);
    return mapped ?? null;
  };
  const minVersion = version('tlsMinimumProtocolVersion');
  const maxVersion = version('tlsMaximumProtocolVersion');

  const alpn = arr(c.alpnProtocols).map(String);
  if (!mesh && alpn.length > 0 && stable(alpn) !== stable(['h2', 'http/1.1'])) at.warn(join(cpath, 'alpnProtocols'), 'ignored: Remora offers h2 and http/1.1');

  const certs = arr(c.tlsCertificateSdsSecretConfigs);
  if (certs.length > 1) at.error(join(cpath, 'tlsCertificateSdsSecretConfigs'), 'one certificate per filter chain is supported');
  const cert = certs.length === 0 ? null : secret(obj(certs[0]) ?? {}, `${cpath}.tlsCertificateSdsSecretConfigs[0]`, at, ['workload', 'certificate']);
  if (certs.length === 0) at.error(cpath, 'a TLS filter chain needs a certificate (tlsCertificateSdsSecretConfigs)');

  let validation: ResolvedSecret | null = null;
  let subjectAltNames: string[] = [];
  const cv = obj(c.combinedValidationContext);
  if (cv !== null) {
    const vpath = join(cpath, 'combinedValidationContext');
    checkFields(at, vpath, cv, ['defaultValidationContext', 'validationContextSdsSecretConfig']);
    const dv = obj(cv.defaultValidationContext) ?? {};
    const dpath = join(vpath, 'defaultValidationContext');
    checkFields(at, dpath, dv, ['matchSubjectAltNames'], {}, 'not supported (client certificates are checked against the roots and SAN names only); Remora cannot enforce it');
    subjectAltNames = arr(dv.matchSubjectAltNames).flatMap((m, i) => {
      const mo = obj(m) ?? {};
      if (typeof mo.exact === 'string' && Object.keys(mo).length === 1) return [mo.exact];
      at.error(`${dpath}.matchSubjectAltNames[${i}]`, 'only exact SAN matches are supported');
      return [];
    });
    const vs = obj(cv.validationContextSdsSecretConfig);
    if (vs === null) at.error(join(vpath, 'validationContextSdsSecretConfig'), 'client certificate roots must come from an SDS secret');
    else validation = secret(vs, join(vpath, 'validationContextSdsSecretConfig'), at, ['roots', 'validation']);
  } else if (c.validationContextSdsSecretConfig !== undefined) {
    validation = secret(obj(c.validationContextSdsSecretConfig) ?? {}, join(cpath, 'validationContextSdsSecretConfig'), at, ['roots', 'validation']);
  }
  const requireClientCertificate = d.requireClientCertificate === true;
  if (requireClientCertificate && validation === null) at.error(join(path, 'requireClientCertificate'), 'requiring a client certificate needs roots to verify it (a validation context)');
  return { cert, validation, requireClientCertificate, subjectAltNames, minVersion, maxVersion, cipherSuites: arr(p.cipherSuites).map(String) };
}

function secret(s: Obj, path: string, at: At, kinds: readonly ResolvedSecret['kind'][]): ResolvedSecret | null {
  const name = typeof s.name === 'string' ? s.name : '';
  if (name === '') {
    at.error(path, 'an SDS secret needs a name (inline secrets are not supported)');
    return null;
  }
  const found = at.ctx.secret(name);
  if (found === undefined) {
    at.error(join(path, 'name'), `SDS secret ${name} is unknown`);
    return null;
  }
  if (!kinds.includes(found.kind)) {
    at.error(join(path, 'name'), `SDS secret ${name} is a ${found.kind} secret, not what this field takes (${kinds.join(' or ')})`);
    return null;
  }
  return found;
}

const KUBERNETES = 'kubernetes://';

/** A gateway's TLS servers: terminating chains by `serverNames`, and PASSTHROUGH tcp_proxy chains grouped by server. */
function gatewayTls(cs: readonly Chain[], listenerName: string, at: At): ListenerTls | undefined {
  const servers: TlsServer[] = [];
  const passthrough = new Map<string, { hosts: string[]; routes: TcpRoute[]; index: number }>();
  let failed = false;
  cs.forEach((c, i) => {
    const origin = typeof c.server?.server === 'string' ? c.server.server : c.name !== '' ? c.name : `${listenerName}#${i}`;
    const metaHosts = Array.isArray(c.server?.hosts) ? c.server.hosts.map(String) : null;
    if (c.transportProtocol === 'raw_buffer' || (c.tls === null && c.tcp === null)) {
      at.error(c.path, "a gateway TLS listener's chains terminate TLS or pass it through by SNI; a plaintext chain beside them is not supported");
      failed = true;
      return;
    }
    if (c.tcp !== null) {
      if (c.tls !== null) {
        at.error(`${c.path}.transportSocket`, 'terminating TLS in front of tcp_proxy is not supported (TLS is passed through)');
        failed = true;
        return;
      }
      let group = passthrough.get(origin);
      if (group === undefined) {
        group = { hosts: metaHosts ?? (c.serverNames.length > 0 ? [...c.serverNames] : ['*']), routes: [], index: servers.length };
        passthrough.set(origin, group);
        servers.push(null as unknown as TlsServer); // placed below, in the order of first appearance
      }
      group.routes.push(c.tcp);
      return;
    }
    const path = `${c.path}.transportSocket.typedConfig`;
    const d = readDownstreamTls(c.tls!, path, at);
    if (d === null || d.cert === null) {
      failed = true;
      return;
    }
    let mode: TlsServer['mode'];
    let certFile: string | null = null;
    let keyFile: string | null = null;
    let caFile: string | null = null;
    let credentialName: string | undefined;
    if (d.cert.kind === 'workload') {
      if (d.validation?.kind !== 'roots' || !d.requireClientCertificate) {
        at.error(path, 'the workload certificate (SDS default) is served for ISTIO_MUTUAL only: with the mesh roots (SDS ROOTCA) and a client certificate required');
        failed = true;
        return;
      }
      mode = 'ISTIO_MUTUAL';
    } else if (d.cert.kind === 'certificate') {
      certFile = d.cert.certFile;
      keyFile = d.cert.keyFile;
      if (d.cert.name.startsWith(KUBERNETES)) credentialName = d.cert.name.slice(KUBERNETES.length);
      if (d.validation === null) mode = 'SIMPLE';
      else if (d.validation.kind !== 'validation') {
        at.error(`${path}.commonTlsContext.combinedValidationContext`, 'client certificates of a gateway server are verified against its own CA (a validation secret), not the mesh roots');
        failed = true;
        return;
      } else {
        caFile = d.validation.caFile;
        mode = d.requireClientCertificate ? 'MUTUAL' : 'OPTIONAL_MUTUAL';
      }
    } else {
      failed = true;
      return;
    }
    const rds = obj(c.hcm?.rds)?.routeConfigName;
    servers.push({
      hosts: metaHosts ?? (c.serverNames.length > 0 ? [...c.serverNames] : ['*']),
      mode,
      certFile,
      keyFile,
      ...(credentialName === undefined ? {} : { credentialName }),
      caFile,
      subjectAltNames: d.subjectAltNames,
      minVersion: d.minVersion,
      maxVersion: d.maxVersion,
      cipherSuites: d.cipherSuites,
      tcpRoutes: [],
      origin,
      ...(typeof rds === 'string' && rds !== '' ? { routeConfig: rds } : {}),
    });
  });
  if (failed) return undefined;
  for (const [origin, g] of passthrough) {
    servers[g.index] = {
      hosts: g.hosts,
      mode: 'PASSTHROUGH',
      certFile: null,
      keyFile: null,
      caFile: null,
      subjectAltNames: [],
      minVersion: null,
      maxVersion: null,
      cipherSuites: [],
      tcpRoutes: g.routes,
      origin,
    };
  }
  return { kind: 'gateway', servers };
}

// ---- HTTP connection manager ----

interface Hcm {
  readonly routeConfig: string;
  readonly inline: RouteConfigurationJson | null;
  readonly statPrefix: string;
  readonly httpFilters: HttpFilterConfig[];
  readonly connectionManager: HttpConnectionManagerOptions | undefined;
  readonly tracing: HttpTracing | null;
}

const HCM_WARN: Readonly<Record<string, string>> = {
  accessLogOptions: 'access logs are written when a request ends',
  http2ProtocolOptions: "HTTP/2 settings are Node.js's",
  http3ProtocolOptions: 'HTTP/3 is not served',
  commonHttpProtocolOptions: "downstream connections close after Envoy's default idle time (1 h)",
  delayedCloseTimeout: 'connections close as Node.js closes them',
  drainTimeout: 'draining follows the proxy drain time',
  generateRequestId: 'a request without x-request-id always gets one',
  preserveExternalRequestId: 'an x-request-id sent by the client is kept',
  alwaysSetRequestIdInResponse: 'x-request-id is not added to responses',
  internalAddressConfig: 'internal addresses are not classified',
  via: 'no via header is added',
  addUserAgent: 'user agent headers are not added',
  maxRequestHeadersKb: "the header size limit is Node.js's",
  stripMatchingHostPort: 'the port in host is kept; routes match hosts with and without it where the route configuration says so',
  stripAnyHostPort: 'the port in host is kept; routes match hosts with and without it where the route configuration says so',
  proxy100Continue: '100-continue is answered by the proxy',
  codecType: 'HTTP/1.1, HTTP/2 and h2c are detected on each connection',
  localReplyConfig: "local replies use Envoy's default bodies",
  requestHeadersTimeout: 'the header timeout is fixed',
  maxConnectionDuration: 'downstream connections are not closed by age',
};

/** What each direction does with `x-forwarded-client-cert` in Remora's runtime, as Istio sets it. */
const XFCC: Readonly<Record<TrafficDirection, string>> = { gateway: 'SANITIZE_SET', inbound: 'APPEND_FORWARD', outbound: 'SANITIZE' };

const SERVER_HEADER: ReadonlySet<string> = new Set(['OVERWRITE', 'APPEND_IF_ABSENT', 'PASS_THROUGH']);

function readHcm(h: Obj, path: string, listenerName: string, direction: TrafficDirection, at: At): Hcm | null {
  const read = [
    '@type',
    'statPrefix',
    'rds',
    'routeConfig',
    'httpFilters',
    'serverName',
    'serverHeaderTransformation',
    'httpProtocolOptions',
    'useRemoteAddress',
    'xffNumTrustedHops',
    'normalizePath',
    'mergeSlashes',
    'pathWithEscapedSlashesAction',
    'streamIdleTimeout',
    'requestTimeout',
    'upgradeConfigs',
    'forwardClientCertDetails',
    'requestIdExtension',
    'setCurrentClientCertDetails',
    'tracing',
    'accessLog',
  ];
  checkFields(at, path, h, read, HCM_WARN);

  // Routes: RDS by name, or inline (named so the route importer reads it).
  let routeConfig = '';
  let inline: RouteConfigurationJson | null = null;
  const rds = obj(h.rds);
  if (rds !== null) {
    checkFields(at, join(path, 'rds'), rds, ['configSource', 'routeConfigName']);
    const source = obj(rds.configSource);
    if (source !== null && source.ads === undefined) at.warn(join(path, 'rds.configSource'), 'ignored: the route configuration is looked up by name among those Remora has (from the same stream or files)');
    routeConfig = typeof rds.routeConfigName === 'string' ? rds.routeConfigName : '';
    if (routeConfig === '') at.error(join(path, 'rds.routeConfigName'), 'RDS needs a route configuration name');
  } else if (obj(h.routeConfig) !== null) {
    const rc = obj(h.routeConfig)!;
    routeConfig = typeof rc.name === 'string' && rc.name !== '' ? rc.name : listenerName;
    inline = { ...rc, name: routeConfig } as RouteConfigurationJson;
  } else {
    at.error(path, 'the HTTP connection manager needs rds or routeConfig (scoped routes are not supported)');
  }

  const httpFilters = readHttpFilters(arr(h.httpFilters), join(path, 'httpFilters'), at);

  // Server header and HTTP/1.0: the model's connection manager options.
  let connectionManager: HttpConnectionManagerOptions | undefined;
  const hpo = obj(h.httpProtocolOptions);
  if (hpo !== null) {
    checkFields(at, join(path, 'httpProtocolOptions'), hpo, ['acceptHttp10'], {
      allowAbsoluteUrl: 'absolute-form request targets are always accepted',
      defaultHostForHttp10: 'an HTTP/1.0 request without host is routed by an empty authority',
      enableTrailers: 'trailers are forwarded as Node.js does',
      allowChunkedLength: 'a request with both Transfer-Encoding and Content-Length is refused by Node.js',
      headerKeyFormat: 'header names are sent as Node.js writes them',
    });
  }
  const sht = h.serverHeaderTransformation;
  if (sht !== undefined && !SERVER_HEADER.has(String(sht))) at.error(join(path, 'serverHeaderTransformation'), `unknown value ${String(sht)}`);

  // Client address and trusted headers: the runtime's behaviour per direction. Where the
  // config asks to trust more than Remora does, Remora's stricter way is kept with a warning;
  // where it asks to trust less, the listener is refused: policy would see what it must not.
  const edge = direction === 'gateway';
  if ((h.useRemoteAddress === true) !== edge) {
    if (edge) {
      at.warn(join(path, 'useRemoteAddress'), 'a gateway is the edge in Remora: it uses the peer address as the client address and appends it to x-forwarded-for (useRemoteAddress true), trusting no x-forwarded-for it did not add');
    } else {
      at.error(join(path, 'useRemoteAddress'), 'a sidecar takes the client address from x-forwarded-for and does not append to it (useRemoteAddress false)');
    }
  }
  if (typeof h.xffNumTrustedHops === 'number' && h.xffNumTrustedHops > 0) {
    at.warn(join(path, 'xffNumTrustedHops'), "ignored: trusted x-forwarded-for hops are the proxy's --num-trusted-proxies (Istio's numTrustedProxies)");
  }
  const xfcc = typeof h.forwardClientCertDetails === 'string' ? h.forwardClientCertDetails : 'SANITIZE';
  if (xfcc !== XFCC[direction]) {
    const strips = (mode: string): boolean => mode === 'SANITIZE' || mode === 'SANITIZE_SET';
    const where = direction === 'gateway' ? 'a gateway' : `a sidecar's ${direction} side`;
    // Remora strips what the client sent, or the config would forward it anyway: nothing untrusted gets further.
    if (strips(XFCC[direction]!) || !strips(xfcc)) at.warn(join(path, 'forwardClientCertDetails'), `${xfcc}: Remora does ${XFCC[direction]} on ${where}, as Istio`);
    else at.error(join(path, 'forwardClientCertDetails'), `${xfcc} is not supported on ${where}: Remora does ${XFCC[direction]} there, as Istio, and would forward the x-forwarded-client-cert a client sent`);
  }
  const details = obj(h.setCurrentClientCertDetails);
  if (details !== null && Object.keys(details).some((k) => !['subject', 'uri', 'dns'].includes(k))) {
    at.warn(join(path, 'setCurrentClientCertDetails'), "ignored: the x-forwarded-client-cert element Remora adds has the client certificate's hash, subject and URI SAN");
  }
  const rid = obj(obj(h.requestIdExtension)?.typedConfig);
  if (rid !== null && rid['@type'] !== `${T}envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig`) {
    at.error(join(path, 'requestIdExtension'), `request ID extension ${String(rid['@type'])} is not supported (UUIDs only)`);
  }

  // Path normalization: Remora always runs Envoy's normalize_path and never merges or unescapes slashes.
  if (h.normalizePath !== true) at.warn(join(path, 'normalizePath'), "Remora always normalizes request paths (Istio's pathNormalization BASE)");
  if (h.mergeSlashes === true) at.error(join(path, 'mergeSlashes'), 'merging slashes is not supported; routes and policies would see paths Envoy would not');
  const escaped = h.pathWithEscapedSlashesAction;
  if (escaped !== undefined && escaped !== 'KEEP_UNCHANGED' && escaped !== 'IMPLEMENTATION_SPECIFIC_DEFAULT') {
    at.error(join(path, 'pathWithEscapedSlashesAction'), `${String(escaped)} is not supported: Remora keeps escaped slashes unchanged`);
  }

  if (seconds(h.streamIdleTimeout) > 0) at.warn(join(path, 'streamIdleTimeout'), 'ignored: Remora has no stream idle timeout');
  if (seconds(h.requestTimeout) > 0) at.warn(join(path, 'requestTimeout'), "ignored: the request timeout is the proxy's own");

  // Upgrades: Remora tunnels WebSocket (every HTTP/1.1 Upgrade but h2c), as Istio configures;
  // CONNECT only where an upgrade config (here or on the route) enables it, as Envoy.
  const upgrades = arr(h.upgradeConfigs);
  let upgradeConnect = false;
  if (!upgrades.some((u) => String(obj(u)?.upgradeType).toLowerCase() === 'websocket')) {
    at.warn(join(path, 'upgradeConfigs'), 'Remora tunnels WebSocket upgrades even without an upgrade config');
  }
  upgrades.forEach((u, i) => {
    const uo = obj(u) ?? {};
    const upath = `${path}.upgradeConfigs[${i}]`;
    checkFields(at, upath, uo, ['upgradeType', 'enabled']);
    // Envoy matches upgrade types case-insensitively; CONNECT is the method's name.
    const type = String(uo.upgradeType).toLowerCase();
    if (type === 'connect') upgradeConnect = uo.enabled !== false;
    else if (type !== 'websocket') at.error(join(upath, 'upgradeType'), `upgrade ${String(uo.upgradeType)} is not supported (websocket and CONNECT only)`);
    else if (uo.enabled === false) at.error(join(upath, 'enabled'), 'Remora cannot turn WebSocket upgrades off');
  });

  if (h.serverName !== undefined || sht !== undefined || hpo !== null || upgradeConnect) {
    connectionManager = {
      serverName: typeof h.serverName === 'string' && h.serverName !== '' ? h.serverName : 'envoy',
      serverHeaderTransformation: (sht ?? 'OVERWRITE') as ServerHeaderTransformation,
      httpProtocolOptions: { acceptHttp10: hpo?.acceptHttp10 === true },
      ...(upgradeConnect ? { upgradeConnect: true } : {}),
    };
  }

  const tracingJson = obj(h.tracing);
  const tracing = tracingJson === null ? null : readHcmTracing(tracingJson, join(path, 'tracing'), at);

  return { routeConfig, inline, statPrefix: typeof h.statPrefix === 'string' ? h.statPrefix : '', httpFilters, connectionManager, tracing };
}

/** The HCM's chain: each filter identified by its config's type, Istio's own skipped, the router last. */
function readHttpFilters(filters: readonly unknown[], path: string, at: At): HttpFilterConfig[] {
  const out: HttpFilterConfig[] = [];
  let routerAt = -1;
  filters.forEach((f, i) => {
    const fo = obj(f) ?? {};
    const fpath = `${path}[${i}]`;
    checkFields(at, fpath, fo, ['name', 'typedConfig', 'isOptional', 'disabled', 'configDiscovery']);
    const name = typeof fo.name === 'string' ? fo.name : '';
    const isOptional = fo.isOptional === true;
    if (fo.configDiscovery !== undefined) {
      at.error(join(fpath, 'configDiscovery'), `filter ${name}: filter configs by discovery (ECDS) are not supported`);
      return;
    }
    const tc = obj(fo.typedConfig);
    const type = String(tc?.['@type'] ?? '');
    const structType = TYPED_STRUCT_TYPES.has(type) ? String(tc?.typeUrl ?? '') : '';
    if (SKIPPED_ISTIO_FILTERS.has(name) || SKIPPED_ISTIO_TYPES.has(type) || SKIPPED_ISTIO_TYPES.has(structType)) return;
    if (type === COMPRESSOR_TYPE) {
      // Istio's bootstrap compresses the Prometheus listener's responses; every client takes them uncompressed.
      at.warn(fpath, `filter ${name}: responses are not compressed (Remora has no compressor filter yet); clients get them uncompressed, as they accept`);
      return;
    }
    if (fo.disabled === true) {
      at.error(join(fpath, 'disabled'), `filter ${name}: a filter disabled on the listener and enabled per route is not supported`);
      return;
    }
    let filterName: string;
    let config: unknown;
    if (tc === null) {
      filterName = name;
      config = {};
    } else if (structType.startsWith(REMORA_TYPE_PREFIX)) {
      filterName = structType.slice(REMORA_TYPE_PREFIX.length);
      config = tc.value ?? {};
    } else {
      const { '@type': _, ...body } = tc;
      filterName = FILTER_BY_TYPE.get(type) ?? name;
      config = structType !== '' ? (tc.value ?? {}) : body;
    }
    const known = Object.hasOwn(HTTP_FILTER_TYPES, filterName) && (tc === null || structType.startsWith(REMORA_TYPE_PREFIX) || FILTER_BY_TYPE.has(type));
    if (!known && !isOptional && !structType.startsWith(REMORA_TYPE_PREFIX)) {
      at.error(fpath, `unknown HTTP filter ${name} (${structType || type || 'no typedConfig'}); Envoy refuses it too unless it is marked isOptional`);
      return;
    }
    if (filterName === ROUTER) routerAt = i;
    else if (routerAt >= 0) at.error(fpath, `filter ${name} after the router, which ends the chain`);
    out.push({ name: filterName, config, ...(isOptional ? { isOptional: true } : {}) });
  });
  if (routerAt < 0) at.error(path, `the chain must end with ${ROUTER}`);
  return out;
}
