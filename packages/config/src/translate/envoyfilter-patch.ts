/**
 * EnvoyFilter as istiod applies it: patches on Envoy's own resources (the exporter's
 * listeners, route configurations and clusters), by pilot/pkg/networking/core/envoyfilter
 * (listener_patch.go, rc_patch.go, cluster_patch.go). Every `applyTo` but EXTENSION_CONFIG,
 * BOOTSTRAP and LISTENER_FILTER; every operation where istiod has it; matches on context,
 * listener, filter chain, filters, route configuration, virtual host, route, cluster and proxy
 * metadata; EnvoyFilters in istiod's order (envoyfilter.ts). Patch values are read with Envoy's
 * descriptors, so the output is canonical proto3 JSON and a bad value is an error naming the
 * EnvoyFilter, the patch and the field.
 *
 * Istio's chain holds HTTP filters Remora does not run (metadata exchange, gRPC stats, ALPN,
 * stats); they stand in the chain while patches apply, so a `subFilter` naming one places a
 * filter where istiod would, and are dropped afterwards.
 */
import type { EnvoyResources } from '../envoy/from-model.ts';
import type { ClusterJson } from '../envoy/gen/envoy/config/cluster/v3/cluster_pb.ts';
import type { ListenerJson } from '../envoy/gen/envoy/config/listener/v3/listener_pb.ts';
import type { RouteConfigurationJson } from '../envoy/gen/envoy/config/route/v3/route_pb.ts';
import type { TranslateContext } from './context.ts';
import { canonicalFilterName, contextMatches, envoyFilterPatches, HTTP_CONNECTION_MANAGER, obj, type EnvoyFilterPatch, type Obj, type Patch, type Path, type PatchContext } from './envoyfilter.ts';
import {
  assignFrom,
  checkFilterChains,
  checkHttpFilter,
  checkMergedLimit,
  checkNetworkFilter,
  HCM_TYPE,
  HTTP_FILTERS,
  mergeMessages,
  mergeTypedConfig,
  readPatchValue,
  ROUTER,
  schemaOf,
  typeName,
  VALUE_TYPES,
} from './envoyfilter-patch-value.ts';
import { patchRouteConfigurations } from './envoyfilter-patch-routes.ts';
import { patchClusters } from './envoyfilter-patch-clusters.ts';
import { LOCAL_RATE_LIMIT_FILTER } from './local-ratelimit.ts';

const APPLY_TO: ReadonlySet<string> = new Set(Object.keys(VALUE_TYPES));
const NOT_APPLIED: ReadonlySet<string> = new Set(['EXTENSION_CONFIG', 'BOOTSTRAP', 'LISTENER_FILTER']);
/** The operations istiod applies for each `applyTo` (after INSERT_* became ADD where it does that). */
const OPERATIONS: Readonly<Record<string, readonly string[]>> = {
  LISTENER: ['ADD', 'REMOVE', 'MERGE'],
  FILTER_CHAIN: ['ADD', 'REMOVE', 'MERGE'],
  NETWORK_FILTER: ['ADD', 'REMOVE', 'MERGE', 'INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'REPLACE'],
  HTTP_FILTER: ['ADD', 'REMOVE', 'MERGE', 'INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'REPLACE'],
  ROUTE_CONFIGURATION: ['MERGE'],
  VIRTUAL_HOST: ['ADD', 'REMOVE', 'MERGE', 'REPLACE'],
  HTTP_ROUTE: ['ADD', 'REMOVE', 'MERGE', 'INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST'],
  CLUSTER: ['ADD', 'REMOVE', 'MERGE'],
};
const KEEPS_INSERTS: ReadonlySet<string> = new Set(['HTTP_FILTER', 'NETWORK_FILTER', 'HTTP_ROUTE', 'LISTENER_FILTER']);
const INSERTS: ReadonlySet<string> = new Set(['INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST']);

export const VIRTUAL_INBOUND = 'virtualInbound';
export const VIRTUAL_OUTBOUND = 'virtualOutbound';

/**
 * The proxy's Envoy resources with the EnvoyFilters that select it applied, in istiod's order.
 * Problems go to `ctx` (errors: the config must not be used). The input is not changed.
 */
export function applyEnvoyFilters(resources: EnvoyResources, ctx: TranslateContext): EnvoyResources {
  const patches = readPatches(ctx);
  if (patches.length === 0) return resources;
  const contexts = proxyContexts(ctx);
  const listeners = structuredClone(resources.listeners) as Obj[];
  // A route configuration is patched in the context of the listeners that route through it.
  const rcContext = new Map<string, PatchContext>();
  for (const l of listeners) {
    const context = listenerContext(ctx, l);
    for (const hcm of connectionManagers(l)) {
      const name = obj(hcm.rds)?.routeConfigName;
      if (typeof name === 'string' && !rcContext.has(name)) rcContext.set(name, context);
    }
  }
  const patchedListeners = patchListeners(ctx, patches, listeners, contexts);
  warnLimitsWithoutFilter(ctx, patches, patchedListeners, contexts);
  const routeConfigs = patchRouteConfigurations(ctx, patches, structuredClone(resources.routeConfigs) as Obj[], (name) => rcContext.get(name) ?? contexts[0]!);
  const clusters = patchClusters(ctx, patches, structuredClone(resources.clusters) as Obj[], contexts);
  const byName = new Map(resources.endpoints.map((e) => [e.assignment.clusterName ?? '', e]));
  const endpoints = clusters.map((c) => {
    const name = String(c.name ?? '');
    const eds = c.type === 'EDS';
    const old = byName.get(name);
    if (eds && old !== undefined) return old;
    return { assignment: (obj(c.loadAssignment) ?? { clusterName: name }) as EnvoyResources['endpoints'][number]['assignment'], eds };
  });
  return {
    // What EnvoyFilters do not patch (the name table, resource versions) stays as it was.
    ...resources,
    listeners: patchedListeners as ListenerJson[],
    routeConfigs: routeConfigs as RouteConfigurationJson[],
    clusters: clusters as ClusterJson[],
    endpoints,
    secrets: resources.secrets,
  };
}

/** The contexts this proxy's resources are built in: a sidecar's outbound side first, as istiod adds resources there for `ANY`. */
function proxyContexts(ctx: TranslateContext): PatchContext[] {
  return ctx.node.kind === 'gateway' ? ['GATEWAY'] : ['SIDECAR_OUTBOUND', 'SIDECAR_INBOUND'];
}

function listenerContext(ctx: TranslateContext, l: Obj): PatchContext {
  if (ctx.node.kind === 'gateway') return 'GATEWAY';
  return l.trafficDirection === 'INBOUND' ? 'SIDECAR_INBOUND' : 'SIDECAR_OUTBOUND';
}

/**
 * A route's (or virtual host's, or table's) local rate limit takes effect only where the
 * filter is in the chain, which Envoy does not check: a patch that brings one where no
 * listener of its context runs the filter is reported, once per context.
 */
function warnLimitsWithoutFilter(ctx: TranslateContext, patches: readonly Patch[], listeners: readonly Obj[], contexts: readonly PatchContext[]): void {
  const limited = patches.filter((rp) => ROUTE_LEVEL.has(rp.applyTo) && obj(rp.value?.typedPerFilterConfig)?.[LOCAL_RATE_LIMIT_FILTER] !== undefined);
  if (limited.length === 0) return;
  const running = new Set<PatchContext>();
  for (const l of listeners) {
    const chains = connectionManagers(l).map((hcm) => (hcm.httpFilters as Obj[] | undefined) ?? []);
    if (chains.some((filters) => filters.some((f) => f.name === LOCAL_RATE_LIMIT_FILTER))) running.add(listenerContext(ctx, l));
  }
  for (const rp of limited) {
    for (const context of contexts) {
      if (!contextMatches(rp.p.match.context, context) || running.has(context)) continue;
      ctx.warn(rp.p.r, rp.p.at, `no ${context} listener runs ${LOCAL_RATE_LIMIT_FILTER} (no HTTP_FILTER patch inserts it there), so this patch's local rate limit has no effect there`);
    }
  }
}

const ROUTE_LEVEL: ReadonlySet<string> = new Set(['ROUTE_CONFIGURATION', 'VIRTUAL_HOST', 'HTTP_ROUTE']);

/** The connection managers' configs of a listener (every filter chain's). */
function connectionManagers(l: Obj): Obj[] {
  const out: Obj[] = [];
  for (const fc of (l.filterChains as Obj[] | undefined) ?? []) {
    for (const f of (fc.filters as Obj[] | undefined) ?? []) {
      const tc = obj(f.typedConfig);
      if (f.name === HTTP_CONNECTION_MANAGER && tc !== null && typeName(tc['@type']) === HCM_TYPE) out.push(tc);
    }
  }
  return out;
}

/** Node metadata as Istio's agent sends it, the keys `match.proxy.metadata` compares (bootstrapJson's). */
function nodeMetadata(ctx: TranslateContext): Record<string, string> {
  const n = ctx.node;
  return {
    NAMESPACE: n.namespace,
    SERVICE_ACCOUNT: n.serviceAccount,
    WORKLOAD_NAME: n.workloadName,
    MESH_ID: n.trustDomain,
    CLUSTER_ID: 'Kubernetes',
    ...(n.http10 === true ? { HTTP10: '1' } : {}),
  };
}

function readPatches(ctx: TranslateContext): Patch[] {
  const out: Patch[] = [];
  const metadata = nodeMetadata(ctx);
  for (const p of envoyFilterPatches(ctx)) {
    if (NOT_APPLIED.has(p.applyTo)) {
      ctx.warn(p.r, [...p.at, 'applyTo'], `applyTo ${p.applyTo} is not supported by Remora; this patch is ignored`);
      continue;
    }
    if (!APPLY_TO.has(p.applyTo)) {
      ctx.error(p.r, [...p.at, 'applyTo'], `applyTo ${JSON.stringify(p.applyTo)} is not one of ${[...APPLY_TO, ...NOT_APPLIED].join(', ')}`);
      continue;
    }
    const proxy = p.match.proxy;
    if (proxy !== undefined) {
      if (typeof proxy.proxyVersion === 'string' && proxy.proxyVersion !== '') {
        // istiod: a proxy that reports no ISTIO_VERSION matches no version.
        ctx.warn(p.r, [...p.at, 'match', 'proxy', 'proxyVersion'], 'Remora reports no Istio proxy version, so a proxyVersion match selects it nowhere, as istiod does for a proxy without one');
        continue;
      }
      if (Object.entries(proxy.metadata ?? {}).some(([k, v]) => metadata[k] !== v)) continue;
    }
    const operation = INSERTS.has(p.operation) && !KEEPS_INSERTS.has(p.applyTo) ? 'ADD' : p.operation;
    if (!OPERATIONS[p.applyTo]!.includes(operation)) {
      const known = ['MERGE', 'ADD', 'REMOVE', 'INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'REPLACE'];
      if (known.includes(operation)) ctx.warn(p.r, [...p.at, 'patch', 'operation'], `istiod does not apply ${operation} to ${p.applyTo}; this patch is ignored`);
      else ctx.error(p.r, [...p.at, 'patch', 'operation'], `operation ${JSON.stringify(p.operation)} is not one of ${known.join(', ')}`);
      continue;
    }
    const filter = p.match.listener?.filterChain?.filter;
    const filterName = filter === undefined ? undefined : canonicalFilterName(filter.name ?? '');
    const subFilter = filter?.subFilter === undefined ? undefined : canonicalFilterName(filter.subFilter.name ?? '');
    if (p.applyTo === 'HTTP_FILTER' && (operation === 'REMOVE' || operation === 'REPLACE') && subFilter === undefined) {
      ctx.warn(p.r, [...p.at, 'match', 'listener', 'filterChain', 'filter', 'subFilter'], `${operation} of an HTTP filter needs match.listener.filterChain.filter.subFilter.name; this patch does nothing, as in istiod`);
      continue;
    }
    let value: Obj | null = null;
    if (operation !== 'REMOVE') {
      value = readPatchValue(ctx, p, schemaOf(VALUE_TYPES[p.applyTo]!));
      if (value === null) continue;
      value = checkValue(ctx, p, operation, value);
      if (value === null) continue;
    }
    out.push({ p, applyTo: p.applyTo, operation, value, filterName, subFilter });
  }
  return out;
}

/** Filters a value brings must be ones Remora runs; null when not (reported) or when the patch inserts one of Istio's own (skipped). */
function checkValue(ctx: TranslateContext, p: EnvoyFilterPatch, operation: string, value: Obj): Obj | null {
  const at: Path = [...p.at, 'patch', 'value'];
  const written = obj(p.value);
  switch (p.applyTo) {
    case 'HTTP_FILTER':
      if (operation === 'MERGE') {
        return typeof value.name === 'string' && value.name !== '' ? checkMergeName(ctx, p, value) : value;
      }
      return checkHttpFilter(ctx, p.r, value, at, written);
    case 'NETWORK_FILTER':
      if (operation === 'MERGE') return value;
      return checkNetworkFilter(ctx, p.r, value, at);
    case 'FILTER_CHAIN':
      return checkFilterChains(ctx, p.r, [value], [...p.at, 'patch']) ? value : null;
    case 'LISTENER': {
      const chains = (value.filterChains as Obj[] | undefined) ?? [];
      const ok = checkFilterChains(ctx, p.r, chains, [...at, 'filter_chains']);
      const dfc = obj(value.defaultFilterChain);
      return ok && (dfc === null || checkFilterChains(ctx, p.r, [dfc], [...at, 'default_filter_chain'])) ? value : null;
    }
    default:
      return value;
  }
}

/** A MERGE that renames an HTTP filter (istiod lets it) must name one Remora runs. */
function checkMergeName(ctx: TranslateContext, p: EnvoyFilterPatch, value: Obj): Obj | null {
  const written = String(value.name);
  const name = canonicalFilterName(written);
  const at: Path = [...p.at, 'patch', 'value', 'name'];
  if (name !== written) ctx.warn(p.r, at, `using deprecated filter name ${JSON.stringify(written)}; use ${JSON.stringify(name)} instead`);
  if (HTTP_FILTERS[name] === undefined) {
    ctx.error(p.r, at, `Remora has no HTTP filter ${written}; a MERGE may only rename a filter to one Remora runs`);
    return null;
  }
  return { ...value, name };
}


// ---- listeners (listener_patch.go) ----

function patchListeners(ctx: TranslateContext, patches: readonly Patch[], listeners: Obj[], contexts: readonly PatchContext[]): Obj[] {
  const removed = new Set<Obj>();
  for (const l of listeners) {
    if (patchListener(ctx, patches, l, listenerContext(ctx, l))) removed.add(l);
  }
  const out = listeners.filter((l) => !removed.has(l));
  for (const context of contexts) {
    for (const lp of patches) {
      if (lp.applyTo !== 'LISTENER' || lp.operation !== 'ADD') continue;
      // istiod: an ADD for ANY adds on a sidecar's outbound side and at gateways only.
      if ((lp.p.match.context ?? 'ANY') === 'ANY' && context === 'SIDECAR_INBOUND') continue;
      if (contextMatches(lp.p.match.context, context)) out.push(structuredClone(lp.value!));
    }
  }
  return out;
}

/** True when a patch removes the listener. */
function patchListener(ctx: TranslateContext, patches: readonly Patch[], l: Obj, context: PatchContext): boolean {
  for (const lp of patches) {
    if (lp.applyTo !== 'LISTENER' || !contextMatches(lp.p.match.context, context) || !listenerMatch(l, lp)) continue;
    if (lp.operation === 'REMOVE') return true;
    if (lp.operation === 'MERGE') assignFrom(l, mergeMessages(schemaOf(VALUE_TYPES.LISTENER!), l, lp.value!));
  }
  const chains = (l.filterChains as Obj[] | undefined) ?? [];
  const kept: Obj[] = [];
  for (const fc of chains) if (!patchFilterChain(ctx, patches, l, fc, context)) kept.push(fc);
  const dfc = obj(l.defaultFilterChain);
  if (dfc !== null && patchFilterChain(ctx, patches, l, dfc, context)) delete l.defaultFilterChain;
  for (const lp of patches) {
    if (lp.applyTo === 'FILTER_CHAIN' && lp.operation === 'ADD' && contextMatches(lp.p.match.context, context) && listenerMatch(l, lp)) kept.push(structuredClone(lp.value!));
  }
  if (chains.length > 0 || kept.length > 0) l.filterChains = kept;
  return false;
}



function listenerMatch(l: Obj, lp: Patch): boolean {
  const m = lp.p.match.listener;
  if (m === undefined) return true;
  if (m.name !== undefined && m.name !== '' && m.name !== l.name) return false;
  // The virtual listeners take a port in their filter chains (filterChainMatch.destinationPort).
  if (lp.applyTo !== 'LISTENER' && (l.name === VIRTUAL_INBOUND || l.name === VIRTUAL_OUTBOUND)) return true;
  if (m.portNumber !== undefined && m.portNumber !== 0) {
    const port = obj(obj(l.address)?.socketAddress)?.portValue;
    if (port !== m.portNumber) return false;
  }
  return true;
}

interface FilterChainMatchSpec {
  name?: string;
  sni?: string;
  transportProtocol?: string;
  applicationProtocols?: string;
  destinationPort?: number;
}

/**
 * The destination port a chain serves. A capture's chain on its own port serves connections
 * made to it directly, which count as addressed to the port its `remora` metadata names (the
 * app's, `--app-port`): a patch for that port applies to them as to its redirected ones.
 */
function chainPort(l: Obj, fcm: Obj | null): unknown {
  const port = fcm?.destinationPort;
  if (port === undefined || port !== obj(obj(l.address)?.socketAddress)?.portValue) return port;
  const direct = obj(obj(obj(l.metadata)?.filterMetadata)?.remora)?.destinationPort;
  return typeof direct === 'number' ? direct : port;
}

function filterChainMatch(l: Obj, fc: Obj, lp: Patch): boolean {
  const m = lp.p.match.listener;
  if (m === undefined) return true;
  const fcm = obj(fc.filterChainMatch);
  const port = chainPort(l, fcm);
  const virtual = l.name === VIRTUAL_INBOUND || l.name === VIRTUAL_OUTBOUND;
  if (virtual && m.portNumber !== undefined && m.portNumber > 0 && port !== m.portNumber) return false;
  const want = m.filterChain as FilterChainMatchSpec | undefined;
  if (want === undefined) return true;
  if (want.name !== undefined && want.name !== '' && want.name !== (fc.name ?? '')) return false;
  if (want.sni !== undefined && want.sni !== '') {
    const names = (fcm?.serverNames as string[] | undefined) ?? [];
    if (!names.includes(want.sni)) return false;
  }
  if (want.transportProtocol !== undefined && want.transportProtocol !== '' && fcm?.transportProtocol !== want.transportProtocol) return false;
  if (want.applicationProtocols !== undefined && want.applicationProtocols !== '') {
    if (fcm === null) return false;
    const have = (fcm.applicationProtocols as string[] | undefined) ?? [];
    if (!want.applicationProtocols.split(',').every((p) => have.includes(p))) return false;
  }
  if (want.destinationPort !== undefined && want.destinationPort > 0 && port !== want.destinationPort) return false;
  return true;
}

/** True when a patch removes the filter chain. */
function patchFilterChain(ctx: TranslateContext, patches: readonly Patch[], l: Obj, fc: Obj, context: PatchContext): boolean {
  for (const lp of patches) {
    if (lp.applyTo !== 'FILTER_CHAIN' || !contextMatches(lp.p.match.context, context) || !listenerMatch(l, lp) || !filterChainMatch(l, fc, lp)) continue;
    if (lp.operation === 'REMOVE') return true;
    if (lp.operation === 'MERGE' && !mergeTransportSocket(fc, lp.value!)) assignFrom(fc, mergeMessages(schemaOf(VALUE_TYPES.FILTER_CHAIN!), fc, lp.value!));
  }
  patchNetworkFilters(ctx, patches, l, fc, context);
  return false;
}

/**
 * istiod's mergeTransportSocketListener: a patch carrying a transport socket of the name the
 * chain's has merges into its typed config (same type only) and nothing else of the patch
 * applies; otherwise the whole patch merges.
 */
function mergeTransportSocket(fc: Obj, value: Obj): boolean {
  const patchTs = obj(value.transportSocket);
  const ts = obj(fc.transportSocket);
  if (patchTs === null || ts === null || patchTs.name !== ts.name) return false;
  const base = obj(ts.typedConfig);
  const patch = obj(patchTs.typedConfig);
  if (base !== null && patch !== null) {
    const merged = mergeTypedConfig(base, patch);
    if (merged !== null) ts.typedConfig = merged;
  }
  return true;
}

function hasNetworkFilterMatch(lp: Patch): boolean {
  return lp.filterName !== undefined;
}

function networkFilterMatch(f: Obj, lp: Patch): boolean {
  return lp.filterName === undefined || lp.filterName === f.name;
}

function patchNetworkFilters(ctx: TranslateContext, patches: readonly Patch[], l: Obj, fc: Obj, context: PatchContext): void {
  let filters = ((fc.filters as Obj[] | undefined) ?? []).slice();
  for (const lp of patches) {
    if (lp.applyTo !== 'NETWORK_FILTER' || !contextMatches(lp.p.match.context, context) || !listenerMatch(l, lp) || !filterChainMatch(l, fc, lp)) continue;
    const value = (): Obj => structuredClone(lp.value!);
    const i = filters.findIndex((f) => networkFilterMatch(f, lp));
    switch (lp.operation) {
      case 'ADD':
        filters.push(value());
        break;
      case 'INSERT_FIRST':
        filters.unshift(value());
        break;
      case 'INSERT_AFTER':
        if (!hasNetworkFilterMatch(lp)) filters.push(value());
        else if (i >= 0) filters.splice(i + 1, 0, value());
        break;
      case 'INSERT_BEFORE':
        if (!hasNetworkFilterMatch(lp)) filters.unshift(value());
        else if (i >= 0) filters.splice(i, 0, value());
        break;
      case 'REPLACE':
        if (hasNetworkFilterMatch(lp) && i >= 0) filters[i] = value();
        break;
      case 'REMOVE':
        if (hasNetworkFilterMatch(lp)) filters = filters.filter((f) => !networkFilterMatch(f, lp));
        break;
    }
  }
  if (filters.length > 0 || fc.filters !== undefined) fc.filters = filters;
  for (const f of filters) patchNetworkFilter(ctx, patches, l, fc, f, context);
}

function patchNetworkFilter(ctx: TranslateContext, patches: readonly Patch[], l: Obj, fc: Obj, f: Obj, context: PatchContext): void {
  for (const lp of patches) {
    if (lp.applyTo !== 'NETWORK_FILTER' || lp.operation !== 'MERGE') continue;
    if (!contextMatches(lp.p.match.context, context) || !listenerMatch(l, lp) || !filterChainMatch(l, fc, lp) || !networkFilterMatch(f, lp)) continue;
    const tc = obj(f.typedConfig);
    if (tc === null) continue;
    const patchTc = obj(lp.value!.typedConfig);
    if (patchTc !== null) {
      const merged = mergeTypedConfig(tc, patchTc);
      if (merged !== null) f.typedConfig = merged;
    }
    if (typeof lp.value!.name === 'string' && lp.value!.name !== '') f.name = lp.value!.name;
  }
  const hcm = obj(f.typedConfig);
  if (f.name === HTTP_CONNECTION_MANAGER && hcm !== null && typeName(hcm['@type']) === HCM_TYPE) patchHttpFilters(ctx, patches, l, fc, f, hcm, context);
}

// ---- HTTP filters ----

const METADATA_EXCHANGE = 'istio.metadata_exchange';
const GRPC_STATS = 'envoy.filters.http.grpc_stats';
const ALPN = 'istio.alpn';
const STATS = 'istio.stats';
/** The first filters of Istio's chain after authentication and authorization, before which gRPC stats and ALPN stand. */
const AFTER_POLICY: ReadonlySet<string> = new Set(['envoy.filters.http.fault', 'envoy.filters.http.cors', ROUTER]);

interface Slot {
  readonly name: string;
  /** Null: one of Istio's filters Remora does not run, standing where istiod has it. */
  json: Obj | null;
}

/** The chain as istiod builds it: the exporter's filters with Istio's own in their places. */
function istioChain(filters: readonly Obj[], context: PatchContext): Slot[] {
  const slots: Slot[] = [{ name: METADATA_EXCHANGE, json: null }];
  let statsPlaced = false;
  for (const f of filters) {
    const name = String(f.name ?? '');
    if (!statsPlaced && AFTER_POLICY.has(name)) {
      slots.push({ name: GRPC_STATS, json: null });
      if (context !== 'SIDECAR_INBOUND') slots.push({ name: ALPN, json: null });
      statsPlaced = true;
    }
    // The exporter writes the stats filter itself when a Telemetry resource configures it.
    if (name === ROUTER && !filters.some((x) => x.name === STATS)) slots.push({ name: STATS, json: null });
    slots.push({ name, json: f });
  }
  return slots;
}

function chainNames(slots: readonly Slot[]): string {
  return slots.map((s) => s.name).join(', ');
}

const SUB_FILTER_AT = ['match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'];

function patchHttpFilters(ctx: TranslateContext, patches: readonly Patch[], l: Obj, fc: Obj, f: Obj, hcm: Obj, context: PatchContext): void {
  const applies = (lp: Patch): boolean =>
    lp.applyTo === 'HTTP_FILTER' && contextMatches(lp.p.match.context, context) && listenerMatch(l, lp) && filterChainMatch(l, fc, lp) && networkFilterMatch(f, lp);
  const mine = patches.filter(applies);
  if (mine.length === 0) return;
  const slots = istioChain((hcm.httpFilters as Obj[] | undefined) ?? [], context);
  // Only Remora's LocalRateLimit resource puts a local rate limit in the exported chain.
  const ownLimit = slots.some((s) => s.name === LOCAL_RATE_LIMIT_FILTER);
  const touchedRouter: Patch[] = [];
  for (const lp of mine) {
    if (lp.operation === 'MERGE') continue;
    const sub = lp.subFilter;
    // A subFilter only counts with a network filter named (istiod's hasHTTPFilterMatch).
    const hasSub = sub !== undefined && lp.filterName !== undefined;
    const slot = (): Slot => ({ name: String(lp.value!.name), json: structuredClone(lp.value!) });
    const i = hasSub ? slots.findIndex((s) => s.name === sub) : -1;
    const missing = (what: string): void =>
      ctx.warn(lp.p.r, [...lp.p.at, ...SUB_FILTER_AT], `${sub} is not in the ${context} listener's HTTP filter chain (${chainNames(slots)}), so ${what}, as istiod does`);
    switch (lp.operation) {
      case 'INSERT_FIRST':
        slots.unshift(slot());
        break;
      case 'INSERT_BEFORE':
        if (!hasSub) slots.unshift(slot());
        else if (i < 0) missing(`${String(lp.value!.name)} is not inserted there`);
        else slots.splice(i, 0, slot());
        break;
      case 'ADD':
      case 'INSERT_AFTER': {
        if (lp.operation === 'INSERT_AFTER' && hasSub && sub !== ROUTER) {
          if (i < 0) missing(`${String(lp.value!.name)} is not inserted there`);
          else slots.splice(i + 1, 0, slot());
          break;
        }
        if (lp.operation === 'INSERT_AFTER' && sub === ROUTER) {
          ctx.warn(lp.p.r, [...lp.p.at, ...SUB_FILTER_AT], `Envoy refuses HTTP filters after ${ROUTER} (it must be last); ${String(lp.value!.name)} is placed just before it`);
        }
        // "The end of the chain" is just before the router, which Envoy requires last.
        const router = slots.findIndex((s) => s.name === ROUTER);
        slots.splice(router < 0 ? slots.length : router, 0, slot());
        break;
      }
      case 'REPLACE':
        if (!hasSub) break;
        if (i < 0) missing('nothing is replaced there');
        else {
          if (sub === ROUTER) touchedRouter.push(lp);
          slots[i] = slot();
        }
        break;
      case 'REMOVE': {
        if (!hasSub) break;
        const before = slots.length;
        for (let k = slots.length - 1; k >= 0; k--) if (slots[k]!.name === sub) slots.splice(k, 1);
        if (slots.length === before) missing('nothing is removed there');
        else if (sub === ROUTER) touchedRouter.push(lp);
        break;
      }
    }
  }
  for (const s of slots) {
    if (s.json === null) continue;
    for (const lp of mine) {
      if (lp.operation !== 'MERGE' || (lp.subFilter !== undefined && lp.filterName !== undefined && lp.subFilter !== s.name)) continue;
      mergeHttpFilter(ctx, lp, s);
    }
  }
  const out = slots.flatMap((s) => (s.json === null ? [] : [s.json]));
  if (ownLimit && out.filter((x) => x.name === LOCAL_RATE_LIMIT_FILTER).length > 1) {
    for (const lp of mine) {
      if (lp.operation === 'MERGE' || lp.operation === 'REMOVE' || lp.value?.name !== LOCAL_RATE_LIMIT_FILTER) continue;
      ctx.warn(lp.p.r, [...lp.p.at, 'patch', 'value'], `the ${context} listener ${String(l.name)} already has the local rate limit of a LocalRateLimit resource; both limits apply`);
    }
  }
  if (out[out.length - 1]?.name !== ROUTER) {
    for (const lp of touchedRouter) ctx.error(lp.p.r, [...lp.p.at, ...SUB_FILTER_AT], `Envoy refuses an HTTP filter chain that does not end with ${ROUTER}`);
  }
  hcm.httpFilters = out;
}

/** istiod's mergeHTTPFilter: the patch's name replaces the filter's, its typed_config merges into one of the same type. */
function mergeHttpFilter(ctx: TranslateContext, lp: Patch, s: Slot): void {
  const f = s.json!;
  const tc = obj(f.typedConfig);
  if (tc === null) return;
  const patchTc = obj(lp.value!.typedConfig);
  if (patchTc !== null) {
    const merged = mergeTypedConfig(tc, patchTc);
    if (merged === null) return;
    if (!checkMergedLimit(ctx, lp.p.r, merged, [...lp.p.at, 'patch', 'value', 'typed_config'], false)) return;
    f.typedConfig = merged;
  }
  const name = lp.value!.name;
  if (typeof name === 'string' && name !== '' && name !== f.name) f.name = name;
}

