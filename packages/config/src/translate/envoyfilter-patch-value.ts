/**
 * EnvoyFilter patch values read as the Envoy message their `applyTo` names (istiod's
 * xds.BuildXDSObjectFromStruct): snake_case or lowerCamelCase in, canonical proto3 JSON out,
 * unknown fields refused with the exact field path. A `TypedStruct` whose `type_url` is a
 * message Remora knows becomes that message (Envoy reads it so), the local rate limit keeps
 * Envoy's validation rules the descriptors do not carry, and filters Remora does not run are
 * refused unless optional. Also the merge istiod uses (pkg/proto/merge: proto merge, with a
 * Duration replaced whole) and `MergeAnyWithAny` for typed configs.
 */
import { SKIPPED_ISTIO_FILTERS } from '../envoy/filter-types.ts';
import type { DescMessage, JsonValue } from '@bufbuild/protobuf';
import { reflect, type ReflectMessage } from '@bufbuild/protobuf/reflect';
import { EnvoyCodecError } from '../errors.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { canonicalFilterName, envoyCodec, field, HTTP_CONNECTION_MANAGER, obj, splitPath, type EnvoyFilterPatch, type Obj, type Path } from './envoyfilter.ts';
import { decodeLimit } from './envoyfilter-local-ratelimit.ts';
import { LOCAL_RATE_LIMIT_FILTER, LOCAL_RATE_LIMIT_TYPE } from './local-ratelimit.ts';

export const T = 'type.googleapis.com/';
export const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const ROUTER = 'envoy.filters.http.router';
export const TCP_PROXY = 'envoy.filters.network.tcp_proxy';
const TYPED_STRUCTS: ReadonlySet<string> = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);
/** The form the exporter gives a config private to Remora (a local rate limit with its own rate_limits). */
const PRIVATE_TYPED_STRUCT = 'xds.type.v3.TypedStruct';

/** The HTTP filters Remora runs and the message of each one's typed_config (from-model.ts's HTTP_FILTER_TYPES, without the prefix). */
export const HTTP_FILTERS: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': 'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
  'envoy.filters.http.rbac': 'envoy.extensions.filters.http.rbac.v3.RBAC',
  [LOCAL_RATE_LIMIT_FILTER]: LOCAL_RATE_LIMIT_TYPE,
  'envoy.filters.http.ratelimit': 'envoy.extensions.filters.http.ratelimit.v3.RateLimit',
  'envoy.filters.http.fault': 'envoy.extensions.filters.http.fault.v3.HTTPFault',
  'envoy.filters.http.cors': 'envoy.extensions.filters.http.cors.v3.Cors',
  [ROUTER]: 'envoy.extensions.filters.http.router.v3.Router',
};


/** The network filters Remora runs, and Istio's it accepts and skips. */
export const NETWORK_FILTERS: Readonly<Record<string, string>> = {
  [HTTP_CONNECTION_MANAGER]: HCM_TYPE,
  [TCP_PROXY]: 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
};
export const ISTIO_NETWORK_FILTERS: ReadonlySet<string> = new Set(['istio.metadata_exchange', 'envoy.filters.network.metadata_exchange', 'istio.stats']);

/** The Envoy message each `applyTo` patches. */
export const VALUE_TYPES: Readonly<Record<string, string>> = {
  LISTENER: 'envoy.config.listener.v3.Listener',
  FILTER_CHAIN: 'envoy.config.listener.v3.FilterChain',
  NETWORK_FILTER: 'envoy.config.listener.v3.Filter',
  HTTP_FILTER: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter',
  ROUTE_CONFIGURATION: 'envoy.config.route.v3.RouteConfiguration',
  VIRTUAL_HOST: 'envoy.config.route.v3.VirtualHost',
  HTTP_ROUTE: 'envoy.config.route.v3.Route',
  CLUSTER: 'envoy.config.cluster.v3.Cluster',
};

export function typeName(url: unknown): string {
  const s = typeof url === 'string' ? url : '';
  return s.slice(s.lastIndexOf('/') + 1);
}

export function schemaOf(typeName: string): DescMessage {
  const schema = envoyCodec().messageType(typeName);
  if (schema === undefined) throw new Error(`no descriptor for ${typeName}`);
  return schema;
}

/** Canonical proto3 JSON of a message known to be valid (the exporter's output, a patch value already read). */
export function canonical(schema: DescMessage, json: unknown): Obj {
  const { envoyFromJson, envoyToJson } = envoyCodec();
  return envoyToJson(schema, envoyFromJson(schema, json as JsonValue)) as Obj;
}

/**
 * Reads a patch value as `schema`; null when it is not a valid Envoy message (reported at the
 * patch value and the field path as written).
 */
export function readPatchValue(ctx: TranslateContext, p: EnvoyFilterPatch, schema: DescMessage): Obj | null {
  const at: Path = [...p.at, 'patch', 'value'];
  if (obj(p.value) === null) {
    ctx.error(p.r, at, `${p.operation} of ${p.applyTo} needs a value (a ${schema.typeName})`);
    return null;
  }
  const unwrapped = unwrapTyped(ctx, p.r, p.value, at, { partial: p.operation === 'MERGE', where: 'other' });
  if (unwrapped === FAILED) return null;
  try {
    return canonicalValue(schema, unwrapped);
  } catch (e) {
    if (!(e instanceof EnvoyCodecError)) throw e;
    ctx.error(p.r, [...at, ...splitPath(e.path)], e.reason);
    return null;
  }
}

function canonicalValue(schema: DescMessage, json: unknown): Obj {
  const { envoyFromJson, envoyToJson } = envoyCodec();
  return envoyToJson(schema, envoyFromJson(schema, json as JsonValue, { ignoreUnknownFields: false })) as Obj;
}

const FAILED = Symbol('failed');

/**
 * The value with every typed config in the form Remora reads: a `TypedStruct` of a message
 * Remora knows becomes that message (its fields checked at `…value.<field>`), and a local rate
 * limit is checked with Envoy's rules (one with its own `rate_limits`, which Envoy's bundled
 * descriptors lack, goes in the exporter's private TypedStruct). FAILED: errors were reported.
 */
/**
 * Where a value sits: `tpfc` a typed_per_filter_config map, `per-route` one of its entries (a
 * route's whole filter config), `partial` a MERGE's fields (Envoy's rules hold for the merged
 * result, checked there).
 */
type Mode = { readonly partial: boolean; readonly where: 'other' | 'tpfc' | 'per-route' };

function unwrapTyped(ctx: TranslateContext, r: Resource, v: unknown, at: Path, mode: Mode): unknown {
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    let failed = false;
    v.forEach((item, i) => {
      const u = unwrapTyped(ctx, r, item, [...at, i], { partial: mode.partial, where: 'other' });
      if (u === FAILED) failed = true;
      out.push(u);
    });
    return failed ? FAILED : out;
  }
  const o = obj(v);
  if (o === null) return v;
  const perRoute = mode.where === 'per-route';
  const rules = perRoute || !mode.partial;
  const type = typeName(o['@type']);
  if (TYPED_STRUCTS.has(type)) {
    const url = field(o, 'type_url');
    const inner = typeName(url.value);
    if (inner === LOCAL_RATE_LIMIT_TYPE || (inner !== '' && envoyCodec().messageType(inner) !== undefined)) {
      const value = obj(o.value);
      if (value === null) {
        ctx.error(r, [...at, 'value'], `value must be the ${inner} config`);
        return FAILED;
      }
      return typedBody(ctx, r, inner, value, [...at, 'value'], perRoute, rules);
    }
    return o;
  }
  if (type === LOCAL_RATE_LIMIT_TYPE) {
    const { '@type': _, ...value } = o;
    return typedBody(ctx, r, type, value, at, perRoute, rules);
  }
  const out: Obj = {};
  let failed = false;
  for (const [k, item] of Object.entries(o)) {
    const where = k === 'typed_per_filter_config' || k === 'typedPerFilterConfig' ? 'tpfc' : mode.where === 'tpfc' ? 'per-route' : 'other';
    const u = unwrapTyped(ctx, r, item, [...at, k], { partial: mode.partial, where });
    if (u === FAILED) failed = true;
    out[k] = u;
  }
  return failed ? FAILED : out;
}

/** A typed config's fields as `{@type, …}`, checked: the message's codec errors, the local rate limit's rules. */
function typedBody(ctx: TranslateContext, r: Resource, type: string, value: Obj, at: Path, perRoute: boolean, rules: boolean): unknown {
  if (type === LOCAL_RATE_LIMIT_TYPE && rules) {
    const config = decodeLimit(ctx, r, value, at, perRoute);
    if (config === null) return FAILED;
    if (config.rateLimits !== undefined) return { '@type': T + PRIVATE_TYPED_STRUCT, typeUrl: `${T}remora.${LOCAL_RATE_LIMIT_FILTER}`, value: config };
    return { '@type': T + type, ...config };
  }
  const inner = unwrapTyped(ctx, r, value, at, { partial: !rules, where: 'other' });
  if (inner === FAILED) return FAILED;
  try {
    canonicalValue(schemaOf(type), inner);
  } catch (e) {
    if (!(e instanceof EnvoyCodecError)) throw e;
    ctx.error(r, [...at, ...splitPath(e.path)], e.reason);
    return FAILED;
  }
  return { '@type': T + type, ...(inner as Obj) };
}

/**
 * An HTTP filter a patch inserts or puts in place of another: Remora must run it (HTTP_FILTERS)
 * with its message as typed_config. Null: not inserted; an error, or, for an optional filter
 * or one of Istio's own, a warning or nothing.
 */
export function checkHttpFilter(ctx: TranslateContext, r: Resource, f: Obj, at: Path, written: Obj | null): Obj | null {
  const name = typeof f.name === 'string' ? f.name : '';
  if (name === '') {
    ctx.error(r, [...at, 'name'], 'an HTTP filter needs a name');
    return null;
  }
  const canonicalName = canonicalFilterName(name);
  if (canonicalName !== name) ctx.warn(r, [...at, 'name'], `using deprecated filter name ${JSON.stringify(name)}; use ${JSON.stringify(canonicalName)} instead`);
  if (SKIPPED_ISTIO_FILTERS.has(canonicalName)) return null;
  if (ctx.extensionFilters.has(canonicalName)) return checkExtensionFilter(ctx, r, f, canonicalName, at, written);
  const expected = HTTP_FILTERS[canonicalName];
  if (expected === undefined) {
    const optional = field(written ?? {}, 'is_optional').name;
    if (f.isOptional === true) ctx.warn(r, [...at, optional], `Remora has no HTTP filter ${name}; it is optional, so it is skipped, as Envoy does`);
    else ctx.error(r, [...at, 'name'], `Remora has no HTTP filter ${name}; Envoy refuses an unknown filter too unless the patch sets is_optional: true`);
    return null;
  }
  const tcName = field(written ?? {}, 'typed_config').name;
  const tc = obj(f.typedConfig);
  if (tc === null) {
    ctx.error(r, [...at, tcName], `${canonicalName} needs a typed_config (${T}${expected})`);
    return null;
  }
  const got = typeName(tc['@type']);
  const privateLimit = canonicalName === LOCAL_RATE_LIMIT_FILTER && got === PRIVATE_TYPED_STRUCT && tc.typeUrl === `${T}remora.${LOCAL_RATE_LIMIT_FILTER}`;
  if (got !== expected && !privateLimit) {
    const writtenTc = obj(field(written ?? {}, 'typed_config').value);
    const typedStruct = writtenTc !== null && TYPED_STRUCTS.has(typeName(writtenTc['@type']));
    const shown = typedStruct ? field(writtenTc, 'type_url') : { name: '@type', value: tc['@type'] };
    ctx.error(r, [...at, tcName, shown.name], `${canonicalName} takes ${T}${expected}, got ${JSON.stringify(shown.value)}`);
    return null;
  }
  return { ...f, name: canonicalName };
}

/**
 * A filter registered with the proxy (`--filter`): its config travels as a TypedStruct whose
 * `type_url` is `type.googleapis.com/remora.<name>` (the form the importer reads), its
 * `value` checked by the filter itself when the proxy compiles the chain.
 */
function checkExtensionFilter(ctx: TranslateContext, r: Resource, f: Obj, name: string, at: Path, written: Obj | null): Obj | null {
  const tcName = field(written ?? {}, 'typed_config').name;
  const wanted = `${T}remora.${name}`;
  const tc = obj(f.typedConfig);
  if (tc === null) {
    ctx.error(r, [...at, tcName], `${name} needs a typed_config: a ${T}${PRIVATE_TYPED_STRUCT} with type_url ${wanted} and its config as value`);
    return null;
  }
  const type = typeName(tc['@type']);
  const url = TYPED_STRUCTS.has(type) ? field(tc, 'type_url') : null;
  if (url === null || url.value !== wanted) {
    const writtenTc = obj(field(written ?? {}, 'typed_config').value) ?? {};
    const shown = url === null ? { name: '@type', value: tc['@type'] } : field(writtenTc, 'type_url');
    ctx.error(r, [...at, tcName, shown.name], `${name} takes a TypedStruct with type_url ${wanted}, got ${JSON.stringify(shown.value)}`);
    return null;
  }
  return { ...f, name, typedConfig: { '@type': `${T}${PRIVATE_TYPED_STRUCT}`, typeUrl: wanted, value: obj(tc.value) ?? {} } };
}

/** A network filter a patch inserts or puts in place of another: one Remora runs, or null (reported, or one of Istio's, skipped). */
export function checkNetworkFilter(ctx: TranslateContext, r: Resource, f: Obj, at: Path): Obj | null {
  const name = typeof f.name === 'string' ? canonicalFilterName(f.name) : '';
  if (ISTIO_NETWORK_FILTERS.has(name)) return null;
  if (NETWORK_FILTERS[name] === undefined) {
    ctx.error(r, [...at, 'name'], `Remora has no network filter ${JSON.stringify(f.name ?? '')}; it runs ${Object.keys(NETWORK_FILTERS).join(' and ')}`);
    return null;
  }
  const hcm = obj(f.typedConfig);
  if (name === HTTP_CONNECTION_MANAGER && hcm !== null && !checkHttpFilters(ctx, r, hcm, [...at, 'typed_config'])) return null;
  return { ...f, name };
}

/** The HTTP filters of a connection manager a patch brings along (a listener or filter chain it adds); false when one is not Remora's (reported). */
function checkHttpFilters(ctx: TranslateContext, r: Resource, hcm: Obj, at: Path): boolean {
  const filters = Array.isArray(hcm.httpFilters) ? (hcm.httpFilters as Obj[]) : [];
  let ok = true;
  filters.forEach((f, i) => {
    if (checkHttpFilter(ctx, r, f, [...at, 'http_filters', i], f) === null && !SKIPPED_ISTIO_FILTERS.has(canonicalFilterName(String(f.name)))) ok = false;
  });
  if (ok) hcm.httpFilters = filters.filter((f) => !SKIPPED_ISTIO_FILTERS.has(canonicalFilterName(String(f.name))));
  return ok;
}

/** The filter chains of a listener or the chain a patch adds or merges: every network and HTTP filter must be Remora's. */
export function checkFilterChains(ctx: TranslateContext, r: Resource, chains: Obj[], at: Path): boolean {
  let ok = true;
  chains.forEach((fc, i) => {
    const filters = Array.isArray(fc.filters) ? (fc.filters as Obj[]) : [];
    const kept: Obj[] = [];
    filters.forEach((f, k) => {
      const checked = checkNetworkFilter(ctx, r, f, [...at, i, 'filters', k]);
      if (checked !== null) kept.push(checked);
      else if (!ISTIO_NETWORK_FILTERS.has(canonicalFilterName(String(f.name)))) ok = false;
    });
    if (filters.length > 0) fc.filters = kept;
  });
  return ok;
}

/**
 * istiod's proto merge (pkg/proto/merge): scalars and enums replaced, messages merged field by
 * field, lists appended, map entries replaced, and a Duration replaced whole.
 */
export function mergeMessages(schema: DescMessage, base: Obj, patch: Obj): Obj {
  const { envoyFromJson, envoyToJson } = envoyCodec();
  const target = envoyFromJson(schema, base as JsonValue);
  const source = envoyFromJson(schema, patch as JsonValue);
  mergeReflect(reflect(schema, target), reflect(schema, source));
  return envoyToJson(schema, target) as Obj;
}

function mergeReflect(target: ReflectMessage, source: ReflectMessage): void {
  for (const f of target.fields) {
    if (!source.isSet(f)) continue;
    switch (f.fieldKind) {
      case 'scalar':
      case 'enum':
        target.set(f, source.get(f));
        break;
      case 'message':
        // A Duration is replaced whole (istiod's custom merge). A wrapper's reflection is a
        // copy of the unboxed value: merged, then set back.
        if (target.isSet(f) && f.message.typeName !== 'google.protobuf.Duration') {
          const merged = target.get(f);
          mergeReflect(merged, source.get(f));
          target.set(f, merged);
        } else {
          target.set(f, source.get(f));
        }
        break;
      case 'list': {
        const list = target.get(f);
        for (const e of source.get(f)) list.add(e);
        break;
      }
      case 'map': {
        const map = target.get(f);
        for (const [k, v] of source.get(f)) map.set(k, v);
        break;
      }
    }
  }
}

/**
 * istiod's MergeAnyWithAny: a typed config merged into one of the same message type; null when
 * the types differ (istiod merges only the same type) or the type is not a message Remora knows.
 */
export function mergeTypedConfig(base: Obj, patch: Obj): Obj | null {
  const type = typeName(base['@type']);
  if (type === '' || type !== typeName(patch['@type'])) return null;
  const schema = envoyCodec().messageType(type);
  if (schema === undefined) return null;
  const { '@type': _b, ...b } = base;
  const { '@type': _p, ...p } = patch;
  return { '@type': base['@type'], ...mergeMessages(schema, b, p) };
}

/** The local rate limit's rules, which a merge must keep too: null when the merged config breaks one (reported at `at`). */
export function checkMergedLimit(ctx: TranslateContext, r: Resource, typedConfig: Obj, at: Path, perRoute: boolean): boolean {
  if (typeName(typedConfig['@type']) !== LOCAL_RATE_LIMIT_TYPE) return true;
  const { '@type': _, ...value } = typedConfig;
  return decodeLimit(ctx, r, value, at, perRoute) !== null;
}

/** Gives `o` exactly the fields of `from` (a merge's result), in place, so that references to `o` see it. */
export function assignFrom(o: Obj, from: Obj): void {
  for (const k of Object.keys(o)) delete o[k];
  Object.assign(o, from);
}
