/**
 * Envoy's route and virtual host `rate_limits` (config.route.v3.RateLimit), compiled once per
 * route: each entry's actions, in order, make one descriptor of a request (Envoy's "composing
 * actions"), which the global rate limit filter sends to its service and the local rate limit
 * filter looks up in its buckets. An action Remora lacks is refused at compile time, naming it.
 *
 * Supported: `request_headers`, `remote_address`, `masked_remote_address`, `generic_key`,
 * `header_value_match`, `query_parameter_value_match`, `query_parameters`, `source_cluster`,
 * `destination_cluster` (a route to one cluster), `metadata` (dynamic metadata by filter and one
 * key; the route entry's, resolved at compile time) and the deprecated `dynamic_metadata`.
 * Not: `extension`, `limit` overrides.
 */
import type { QueryParameterMatcherJson, RateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import type { MetadataKeyJson } from '@remora/config/envoy/gen/envoy/type/metadata/v3/metadata_pb.js';
import type { FilterRequest } from '../filter.ts';
import { parseRequestIp, scratchMaskedText } from '../rbac/rbac-cidr.ts';
import { HeaderRule } from '../rbac/rbac-matcher.ts';
import { StringMatch } from '../rbac/rbac-string.ts';

/** One descriptor entry a request yields: a fixed value, a header's value, the client address, or a fixed value when headers match. */
export type DescriptorAction =
  | { readonly kind: 'header'; readonly key: string; readonly header: string; readonly skipIfAbsent: boolean }
  | { readonly kind: 'generic'; readonly key: string; readonly value: string }
  | { readonly kind: 'remote'; readonly key: string }
  | { readonly kind: 'header-match'; readonly key: string; readonly value: string; readonly expectMatch: boolean; readonly headers: readonly HeaderRule[] }
  /** The client address with its host bits cleared, as a CIDR range. */
  | { readonly kind: 'masked-remote'; readonly v4PrefixLength: number; readonly v6PrefixLength: number }
  /** A query parameter's (first, decoded) value. */
  | { readonly kind: 'query'; readonly key: string; readonly param: string; readonly skipIfAbsent: boolean }
  | { readonly kind: 'query-match'; readonly key: string; readonly value: string; readonly expectMatch: boolean; readonly params: readonly QueryParamRule[] }
  /** A string of the request's dynamic metadata (namespace `filter`, field `field`), else `fallback` ('' for none). */
  | { readonly kind: 'dynamic-metadata'; readonly key: string; readonly filter: string; readonly field: string; readonly fallback: string; readonly skipIfAbsent: boolean }
  /** An action that yields no entry but lets the descriptor go on (route metadata absent with `skip_if_absent`). */
  | { readonly kind: 'skip' }
  /** An action that yields nothing for this route (destination_cluster of a weighted route): the descriptor is skipped. */
  | { readonly kind: 'none' };

/** One compiled RateLimit entry: the stage it belongs to and its actions. */
export interface RateLimitEntry {
  readonly stage: number;
  readonly actions: readonly DescriptorAction[];
}

/** What an entry needs to know of its route and its proxy. */
export interface RateLimitRoute {
  /** The route's cluster when it forwards to exactly one; null otherwise. */
  readonly cluster: string | null;
  /** The route's `metadata.filter_metadata` (the `metadata` action's ROUTE_ENTRY source); absent: none. */
  readonly metadata?: Readonly<Record<string, unknown>> | null;
  /** The local service cluster (Envoy's `--service-cluster`, the `source_cluster` action); absent: ''. */
  readonly serviceCluster?: string;
}

/** A query parameter rule (Envoy's QueryParameterMatcher): present, or present with a value that matches. */
export class QueryParamRule {
  readonly #name: string;
  readonly #match: StringMatch | null;

  constructor(json: QueryParameterMatcherJson, at: string) {
    if (!json.name) throw new Error(`${at}.name is required`);
    this.#name = json.name;
    this.#match = json.stringMatch !== undefined ? new StringMatch(json.stringMatch, `${at}.stringMatch`) : null;
  }

  matches(req: FilterRequest): boolean {
    const v = req.queryParam(this.#name);
    if (v === null) return false;
    return this.#match === null || this.#match.matches(v);
  }
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
  if (a.sourceCluster !== undefined) return { kind: 'generic', key: 'source_cluster', value: route.serviceCluster ?? '' };
  if (a.maskedRemoteAddress !== undefined) {
    const m = a.maskedRemoteAddress;
    const v4 = prefixLength(m.v4PrefixMaskLen, 32, `${at}.maskedRemoteAddress.v4PrefixMaskLen`);
    const v6 = prefixLength(m.v6PrefixMaskLen, 128, `${at}.maskedRemoteAddress.v6PrefixMaskLen`);
    return { kind: 'masked-remote', v4PrefixLength: v4, v6PrefixLength: v6 };
  }
  if (a.queryParameterValueMatch !== undefined) {
    const q = a.queryParameterValueMatch;
    if (!q.descriptorValue) throw new Error(`${at}.queryParameterValueMatch needs descriptorValue`);
    const params = (q.queryParameters ?? []).map((m, j) => new QueryParamRule(m, `${at}.queryParameterValueMatch.queryParameters[${j}]`));
    if (params.length === 0) throw new Error(`${at}.queryParameterValueMatch.queryParameters must not be empty`);
    return { kind: 'query-match', key: q.descriptorKey || 'query_match', value: q.descriptorValue, expectMatch: q.expectMatch !== false, params };
  }
  // Envoy's `query_parameters` action (field 12), newer than the descriptors Remora's codec knows:
  // it reaches here from JSON the codec has not parsed (a translator's output).
  const qp = (a as { queryParameters?: { queryParameterName?: string; descriptorKey?: string; skipIfAbsent?: boolean } }).queryParameters;
  if (qp !== undefined) {
    if (!qp.queryParameterName || !qp.descriptorKey) throw new Error(`${at}.queryParameters needs queryParameterName and descriptorKey`);
    return { kind: 'query', key: qp.descriptorKey, param: qp.queryParameterName, skipIfAbsent: qp.skipIfAbsent === true };
  }
  if (a.metadata !== undefined) {
    const m = a.metadata;
    return metadataAction(m.descriptorKey, m.metadataKey, m.defaultValue ?? '', m.skipIfAbsent === true, m.source === 'ROUTE_ENTRY', `${at}.metadata`, route);
  }
  if (a.dynamicMetadata !== undefined) {
    const m = a.dynamicMetadata;
    return metadataAction(m.descriptorKey, m.metadataKey, m.defaultValue ?? '', false, false, `${at}.dynamicMetadata`, route);
  }
  const kind = Object.keys(a)[0] ?? '(none)';
  throw new Error(
    `${at}.${kind}: not supported; Remora supports requestHeaders, remoteAddress, maskedRemoteAddress, genericKey, headerValueMatch, queryParameterValueMatch, queryParameters, sourceCluster, destinationCluster, metadata and dynamicMetadata actions`,
  );
}

function prefixLength(v: unknown, max: number, at: string): number {
  if (v === undefined || v === null) return max;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`${at} must be 0 to ${max}, got ${String(v)}`);
  return n;
}

/**
 * The `metadata` action. Dynamic metadata is read per request (Remora's holds strings by filter
 * and field: the key's path must be one field); the route entry's never changes, so its value
 * (a string at the path, else the default) is fixed here, as Envoy's `string_value()` reads it.
 */
function metadataAction(
  descriptorKey: string | undefined,
  key: MetadataKeyJson | undefined,
  fallback: string,
  skipIfAbsent: boolean,
  routeEntry: boolean,
  at: string,
  route: RateLimitRoute,
): DescriptorAction {
  if (!descriptorKey) throw new Error(`${at}.descriptorKey is required`);
  if (!key?.key) throw new Error(`${at}.metadataKey.key is required`);
  const path = (key.path ?? []).map((p, j) => {
    if (!p.key) throw new Error(`${at}.metadataKey.path[${j}].key is required`);
    return p.key;
  });
  if (routeEntry) {
    let v: unknown = route.metadata?.[key.key];
    for (const p of path) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[p] : undefined;
    const value = typeof v === 'string' && v !== '' ? v : fallback;
    if (value !== '') return { kind: 'generic', key: descriptorKey, value };
    return skipIfAbsent ? { kind: 'skip' } : { kind: 'none' };
  }
  if (path.length !== 1) throw new Error(`${at}.metadataKey.path: dynamic metadata is read by filter and one field; give a path of one key (got ${path.length})`);
  return { kind: 'dynamic-metadata', key: descriptorKey, filter: key.key, field: path[0]!, fallback, skipIfAbsent };
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
        if (allMatch(act.headers, req) !== act.expectMatch) return false;
        keys.push(act.key);
        values.push(act.value);
        break;
      }
      case 'masked-remote': {
        const family = parseRequestIp(req.remoteIp);
        if (family === 0) return false;
        keys.push('masked_remote_address');
        values.push(scratchMaskedText(family, family === 4 ? act.v4PrefixLength : act.v6PrefixLength));
        break;
      }
      case 'query': {
        const v = req.queryParam(act.param);
        if (v === null) {
          if (act.skipIfAbsent) continue;
          return false;
        }
        keys.push(act.key);
        values.push(v);
        break;
      }
      case 'query-match': {
        if (allMatch(act.params, req) !== act.expectMatch) return false;
        keys.push(act.key);
        values.push(act.value);
        break;
      }
      case 'dynamic-metadata': {
        const v = req.dynamicMetadata(act.filter, act.field);
        const value = v !== null && v !== '' ? v : act.fallback;
        if (value === '') {
          if (act.skipIfAbsent) continue;
          return false;
        }
        keys.push(act.key);
        values.push(value);
        break;
      }
      case 'skip':
        continue;
      case 'none':
        return false;
    }
  }
  return keys.length > 0;
}

/** Every matcher matches the request (Envoy's header_value_match and query_parameter_value_match). */
function allMatch(matchers: readonly { matches(req: FilterRequest): boolean }[], req: FilterRequest): boolean {
  for (let i = 0; i < matchers.length; i++) if (!matchers[i]!.matches(req)) return false;
  return true;
}
