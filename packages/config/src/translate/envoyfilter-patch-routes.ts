/**
 * EnvoyFilter ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE patches on Envoy route
 * configurations, by istiod's rc_patch.go: a route configuration is matched by name and by the
 * port its name carries (`9080`, `inbound|9080||`; at gateways `http.8080`,
 * `https.443.<port name>.<gateway>.<namespace>`, with the port name and gateway), a virtual
 * host by name and domain, a route by name and action kind.
 */
import type { TranslateContext } from './context.ts';
import type { Obj, PatchContext } from './envoyfilter.ts';
import { contextMatches, obj } from './envoyfilter.ts';
import type { Patch } from './envoyfilter.ts';
import { assignFrom, checkMergedLimit, mergeMessages, schemaOf, VALUE_TYPES } from './envoyfilter-patch-value.ts';
import { LOCAL_RATE_LIMIT_FILTER } from './local-ratelimit.ts';

interface RouteConfigurationMatch {
  portNumber?: number;
  portName?: string;
  gateway?: string;
  name?: string;
  vhost?: { name?: string; domainName?: string; route?: { name?: string; action?: string } };
}

function rcMatchOf(rp: Patch): RouteConfigurationMatch | undefined {
  return rp.p.match.routeConfiguration as RouteConfigurationMatch | undefined;
}


export function patchRouteConfigurations(ctx: TranslateContext, patches: readonly Patch[], routeConfigs: Obj[], contextOf: (name: string) => PatchContext): Obj[] {
  if (!patches.some((p) => p.applyTo === 'ROUTE_CONFIGURATION' || p.applyTo === 'VIRTUAL_HOST' || p.applyTo === 'HTTP_ROUTE')) return routeConfigs;
  for (const rc of routeConfigs) patchRouteConfiguration(ctx, patches, rc, contextOf(String(rc.name ?? '')));
  return routeConfigs;
}

function patchRouteConfiguration(ctx: TranslateContext, patches: readonly Patch[], rc: Obj, context: PatchContext): void {
  const applies = (rp: Patch): boolean => contextMatches(rp.p.match.context, context) && routeConfigurationMatch(rc, rp, context);
  for (const rp of patches) {
    if (rp.applyTo === 'ROUTE_CONFIGURATION' && rp.operation === 'MERGE' && applies(rp)) {
      const merged = mergeMessages(schemaOf(VALUE_TYPES.ROUTE_CONFIGURATION!), rc, rp.value!);
      if (checkPerFilterLimits(ctx, rp, merged.typedPerFilterConfig)) assignFrom(rc, merged);
    }
  }
  const vhosts = ((rc.virtualHosts as Obj[] | undefined) ?? []).slice();
  const removed = new Set<number>();
  vhosts.forEach((_, i) => {
    for (const rp of patches) {
      if (rp.applyTo !== 'VIRTUAL_HOST' || !applies(rp) || !virtualHostMatch(vhosts[i]!, rp)) continue;
      if (rp.operation === 'REMOVE') {
        removed.add(i);
        return;
      }
      if (rp.operation === 'MERGE') {
        const merged = mergeMessages(schemaOf(VALUE_TYPES.VIRTUAL_HOST!), vhosts[i]!, rp.value!);
        if (checkPerFilterLimits(ctx, rp, merged.typedPerFilterConfig)) vhosts[i] = merged;
      } else if (rp.operation === 'REPLACE') {
        vhosts[i] = structuredClone(rp.value!);
      }
    }
    patchHttpRoutes(ctx, patches, vhosts[i]!, applies);
  });
  const out = vhosts.filter((_, i) => !removed.has(i));
  for (const rp of patches) {
    if (rp.applyTo === 'VIRTUAL_HOST' && rp.operation === 'ADD' && applies(rp)) out.push(structuredClone(rp.value!));
  }
  if (rc.virtualHosts !== undefined || out.length > 0) rc.virtualHosts = out;
}

function routeConfigurationMatch(rc: Obj, rp: Patch, context: PatchContext): boolean {
  const m = rcMatchOf(rp);
  if (m === undefined) return true;
  const name = String(rc.name ?? '');
  if (m.name !== undefined && m.name !== '' && m.name !== name) return false;
  if (context !== 'GATEWAY') {
    return m.portNumber === undefined || m.portNumber === 0 || m.portNumber === portFromName(name);
  }
  const g = parseGatewayRouteName(name);
  if (m.portName !== undefined && m.portName !== '' && m.portName !== g.portName) return false;
  if (m.gateway !== undefined && m.gateway !== '' && m.gateway !== g.gateway) return false;
  return m.portNumber === undefined || m.portNumber === 0 || m.portNumber === g.port;
}

/** istiod's getListenerPortFromName: `inbound|9080||` or `9080`. */
function portFromName(name: string): number {
  if (name.startsWith('inbound')) return Number(name.split('|')[1] ?? 0) || 0;
  return /^\d+$/.test(name) ? Number(name) : 0;
}

/** istiod's ParseGatewayRDSRouteName: `http.<port>`, or `https.<port>.<port name>.<gateway>.<namespace>` (gateway `namespace/name`). */
function parseGatewayRouteName(name: string): { port: number; portName: string; gateway: string } {
  if (name.startsWith('http.')) return { port: Number(name.slice(5)) || 0, portName: '', gateway: '' };
  const parts = name.split('.');
  if (parts[0] === 'https' && parts.length === 5) return { port: Number(parts[1]) || 0, portName: parts[2]!, gateway: `${parts[4]}/${parts[3]}` };
  return { port: 0, portName: '', gateway: '' };
}

function virtualHostMatch(vh: Obj, rp: Patch): boolean {
  const m = rcMatchOf(rp)?.vhost;
  if (m === undefined) return true;
  if (m.name !== undefined && m.name !== '' && m.name !== vh.name) return false;
  return m.domainName === undefined || m.domainName === '' || ((vh.domains as string[] | undefined) ?? []).includes(m.domainName);
}

function hasRouteMatch(rp: Patch): boolean {
  return rcMatchOf(rp)?.vhost?.route !== undefined;
}

function routeMatch(route: Obj, rp: Patch): boolean {
  const m = rcMatchOf(rp)?.vhost?.route;
  if (m === undefined) return true;
  if (m.name !== undefined && m.name !== '' && m.name !== route.name) return false;
  const action = m.action ?? 'ANY';
  if (action === 'ANY') return true;
  if (route.route !== undefined) return action === 'ROUTE';
  if (route.redirect !== undefined) return action === 'REDIRECT';
  if (route.directResponse !== undefined) return action === 'DIRECT_RESPONSE';
  return true;
}

function patchHttpRoutes(ctx: TranslateContext, patches: readonly Patch[], vh: Obj, applies: (rp: Patch) => boolean): void {
  const mine = patches.filter((rp) => rp.applyTo === 'HTTP_ROUTE' && applies(rp) && virtualHostMatch(vh, rp));
  if (mine.length === 0) return;
  const routes: (Obj | null)[] = ((vh.routes as Obj[] | undefined) ?? []).slice();
  routes.forEach((_, i) => {
    for (const rp of mine) {
      if (!routeMatch(routes[i]!, rp)) continue;
      if (rp.operation === 'REMOVE') {
        routes[i] = null;
        return;
      }
      if (rp.operation === 'MERGE') {
        const merged = mergeMessages(schemaOf(VALUE_TYPES.HTTP_ROUTE!), routes[i]!, rp.value!);
        if (checkPerFilterLimits(ctx, rp, merged.typedPerFilterConfig)) routes[i] = merged;
      }
    }
  });
  let out = routes.filter((r): r is Obj => r !== null);
  for (const rp of mine) {
    const value = (): Obj => structuredClone(rp.value!);
    const i = out.findIndex((r) => routeMatch(r, rp));
    switch (rp.operation) {
      case 'ADD':
        out.push(value());
        break;
      case 'INSERT_AFTER':
        if (!hasRouteMatch(rp)) out.push(value());
        else if (i >= 0) out.splice(i + 1, 0, value());
        break;
      case 'INSERT_BEFORE':
        if (!hasRouteMatch(rp)) out.unshift(value());
        else if (i >= 0) out.splice(i, 0, value());
        break;
      case 'INSERT_FIRST':
        // With a route match, only when some route matches; then still first.
        if (!hasRouteMatch(rp) || i >= 0) out = [value(), ...out];
        break;
    }
  }
  vh.routes = out;
}

/** A merged per-filter local rate limit keeps Envoy's rules (a route's needs its token bucket). */
function checkPerFilterLimits(ctx: TranslateContext, rp: Patch, tpfc: unknown): boolean {
  const limit = obj(obj(tpfc)?.[LOCAL_RATE_LIMIT_FILTER]);
  if (limit === null) return true;
  return checkMergedLimit(ctx, rp.p.r, limit, [...rp.p.at, 'patch', 'value', 'typed_per_filter_config', LOCAL_RATE_LIMIT_FILTER], true);
}
