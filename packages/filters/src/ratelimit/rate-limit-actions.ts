/**
 * Envoy's route and virtual host `rate_limits` (config.route.v3.RateLimit), compiled once per
 * route: each entry's actions, in order, make one descriptor of a request (Envoy's "composing
 * actions"), which the global rate limit filter sends to its service and the local rate limit
 * filter looks up in its buckets. An action Remora lacks is refused at compile time, naming it.
 *
 * Supported: `request_headers`, `remote_address`, `generic_key`, `header_value_match`,
 * `destination_cluster` (a route to one cluster). Not: `source_cluster`, `masked_remote_address`,
 * `query_parameter_value_match`, `metadata`, `dynamic_metadata`, `extension`, `limit` overrides.
 */
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import type { FilterRequest } from '../filter.ts';
import { HeaderRule } from '../rbac/rbac-matcher.ts';

/** One descriptor entry a request yields: a fixed value, a header's value, the client address, or a fixed value when headers match. */
export type DescriptorAction =
  | { readonly kind: 'header'; readonly key: string; readonly header: string; readonly skipIfAbsent: boolean }
  | { readonly kind: 'generic'; readonly key: string; readonly value: string }
  | { readonly kind: 'remote'; readonly key: string }
  | { readonly kind: 'header-match'; readonly key: string; readonly value: string; readonly expectMatch: boolean; readonly headers: readonly HeaderRule[] }
  /** An action that yields nothing for this route (destination_cluster of a weighted route): the descriptor is skipped. */
  | { readonly kind: 'none' };

/** One compiled RateLimit entry: the stage it belongs to and its actions. */
export interface RateLimitEntry {
  readonly stage: number;
  readonly actions: readonly DescriptorAction[];
}

/** What an entry needs to know of its route. */
export interface RateLimitRoute {
  /** The route's cluster when it forwards to exactly one; null otherwise. */
  readonly cluster: string | null;
}

/** Compiles `rate_limits`; throws naming `where[i].actions[k]` for what cannot be honoured. */
export function compileRateLimits(rateLimits: readonly RateLimitJson[], where: string, route: RateLimitRoute): RateLimitEntry[] {
  return rateLimits.map((rl, i) => {
    const at = `${where}[${i}]`;
    if (rl.limit !== undefined) throw new Error(`${at}.limit: overriding the limit from metadata is not supported`);
    const stage = rl.stage ?? 0;
    if (!Number.isInteger(stage) || stage < 0 || stage > 10) throw new Error(`${at}.stage must be 0 to 10, got ${String(stage)}`);
    const actions = rl.actions ?? [];
    if (actions.length === 0) throw new Error(`${at}.actions must not be empty`);
    return { stage, actions: actions.map((a, k) => compileAction(a, `${at}.actions[${k}]`, route)) };
  });
}

function compileAction(a: NonNullable<RateLimitJson['actions']>[number], at: string, route: RateLimitRoute): DescriptorAction {
  if (a.requestHeaders !== undefined) {
    const { headerName, descriptorKey } = a.requestHeaders;
    if (!headerName || !descriptorKey) throw new Error(`${at}.requestHeaders needs headerName and descriptorKey`);
    return { kind: 'header', key: descriptorKey, header: headerName.toLowerCase(), skipIfAbsent: a.requestHeaders.skipIfAbsent === true };
  }
  if (a.genericKey !== undefined) {
    const value = a.genericKey.descriptorValue;
    if (!value) throw new Error(`${at}.genericKey needs descriptorValue`);
    return { kind: 'generic', key: a.genericKey.descriptorKey || 'generic_key', value };
  }
  if (a.remoteAddress !== undefined) return { kind: 'remote', key: 'remote_address' };
  if (a.destinationCluster !== undefined) {
    // Envoy's value is the cluster the route picked; a weighted pick happens after the filters here.
    return route.cluster === null ? { kind: 'none' } : { kind: 'generic', key: 'destination_cluster', value: route.cluster };
  }
  if (a.headerValueMatch !== undefined) {
    const h = a.headerValueMatch;
    if (!h.descriptorValue) throw new Error(`${at}.headerValueMatch needs descriptorValue`);
    const headers = (h.headers ?? []).map((m, j) => new HeaderRule(m, `${at}.headerValueMatch.headers[${j}]`));
    if (headers.length === 0) throw new Error(`${at}.headerValueMatch.headers must not be empty`);
    return { kind: 'header-match', key: h.descriptorKey || 'header_match', value: h.descriptorValue, expectMatch: h.expectMatch !== false, headers };
  }
  const kind = Object.keys(a)[0] ?? '(none)';
  throw new Error(`${at}.${kind}: not supported; Remora supports requestHeaders, remoteAddress, genericKey, headerValueMatch and destinationCluster actions`);
}

/**
 * Fills `keys`/`values` (cleared first) with the descriptor `actions` make of `req`; false when
 * an action yields nothing (Envoy then sends no descriptor for this entry).
 */
export function populateDescriptor(req: FilterRequest, actions: readonly DescriptorAction[], keys: string[], values: string[]): boolean {
  keys.length = 0;
  values.length = 0;
  for (let a = 0; a < actions.length; a++) {
    const act = actions[a]!;
    switch (act.kind) {
      case 'header': {
        const v = req.requestHeader(act.header);
        if (v === null) {
          if (act.skipIfAbsent) continue;
          return false;
        }
        keys.push(act.key);
        values.push(v);
        break;
      }
      case 'generic':
        keys.push(act.key);
        values.push(act.value);
        break;
      case 'remote':
        if (req.remoteIp === '') return false;
        keys.push(act.key);
        values.push(req.remoteIp);
        break;
      case 'header-match': {
        let all = true;
        for (let h = 0; h < act.headers.length; h++) {
          if (!act.headers[h]!.matches(req)) {
            all = false;
            break;
          }
        }
        if (all !== act.expectMatch) return false;
        keys.push(act.key);
        values.push(act.value);
        break;
      }
      case 'none':
        return false;
    }
  }
  return keys.length > 0;
}
