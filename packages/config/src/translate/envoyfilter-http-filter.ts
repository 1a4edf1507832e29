/**
 * EnvoyFilter `applyTo: HTTP_FILTER` for the filters Remora runs: ADD, INSERT_BEFORE,
 * INSERT_AFTER, INSERT_FIRST, REPLACE, REMOVE and MERGE, read per istiod's
 * envoyfilter/listener_patch.go and handed to {@link httpFilterChain} in istiod's order. A
 * filter's `typed_config` is read with Envoy's descriptors (errors name the EnvoyFilter, the
 * patch and the exact field); MERGE follows proto merge rules. Inserts of the local rate
 * limit are placed by local-ratelimit.ts, which also reads Remora's own LocalRateLimit.
 */
import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import type { DescMessage } from '@bufbuild/protobuf';
import {
  canonicalFilterName,
  decode,
  envoyFilterPatches,
  field,
  listenerMatches,
  mergeJson,
  messageTypeOf,
  obj,
  patchFilterName,
  subFilterOf,
  type EnvoyFilterPatch,
  type Obj,
  type Path,
  type PatchListener,
} from './envoyfilter.ts';
import type { FilterPatch, InsertOperation } from './http-filter-chain.ts';
import { decodeLimit, isInsert, LOCAL_RATE_LIMIT_FILTER, LOCAL_RATE_LIMIT_TYPE, typedLocalRateLimit } from './local-ratelimit.ts';

/** The HTTP filters Remora runs, and the Envoy message each one's typed_config must be. */
const FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.jwt_authn': 'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
  'envoy.filters.http.rbac': 'envoy.extensions.filters.http.rbac.v3.RBAC',
  [LOCAL_RATE_LIMIT_FILTER]: LOCAL_RATE_LIMIT_TYPE,
  'envoy.filters.http.fault': 'envoy.extensions.filters.http.fault.v3.HTTPFault',
  'envoy.filters.http.cors': 'envoy.extensions.filters.http.cors.v3.Cors',
  'envoy.filters.http.router': 'envoy.extensions.filters.http.router.v3.Router',
};

/** Filters of Istio's chain that Remora accepts and skips (see SKIPPED_ISTIO_FILTERS in @remora/filters). */
const ISTIO_FILTERS: ReadonlySet<string> = new Set(['istio.metadata_exchange', 'istio.stats', 'istio.alpn', 'envoy.filters.http.grpc_stats']);

const TYPED_STRUCTS: ReadonlySet<string> = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);

const OPERATIONS: ReadonlySet<string> = new Set(['ADD', 'INSERT_BEFORE', 'INSERT_AFTER', 'INSERT_FIRST', 'REPLACE', 'REMOVE', 'MERGE']);

function typeName(url: unknown): string {
  const s = String(url ?? '');
  return s.slice(s.lastIndexOf('/') + 1);
}

/** A typed_config as its message type and its fields (a TypedStruct's `value`); null when malformed (reported). */
function typedMessage(ctx: TranslateContext, r: Resource, tc: unknown, at: Path): { type: string; value: Obj; at: Path } | null {
  const t = obj(tc);
  if (t === null) {
    ctx.error(r, at, 'typed_config must be an object with @type');
    return null;
  }
  const type = typeName(t['@type']);
  if (TYPED_STRUCTS.has(type)) {
    const url = field(t, 'type_url');
    const value = obj(t.value);
    if (value === null) {
      ctx.error(r, [...at, 'value'], 'value must be the filter config');
      return null;
    }
    return { type: typeName(url.value), value, at: [...at, 'value'] };
  }
  if (type === '') {
    ctx.error(r, [...at, '@type'], 'typed_config needs an @type');
    return null;
  }
  const { '@type': _, ...value } = t;
  return { type, value, at };
}

/**
 * A filter value of an insert or a REPLACE (`{name, typed_config}`) as the model's filter;
 * null when it is not Remora's (reported by {@link checkPatchedHttpFilters}), one of Istio's
 * skipped filters, or invalid (reported).
 */
function filterValue(ctx: TranslateContext, p: EnvoyFilterPatch): HttpFilterConfig | null {
  const at: Path = [...p.at, 'patch', 'value'];
  const value = obj(p.value);
  if (value === null || typeof value.name !== 'string') {
    ctx.error(p.r, [...at, 'name'], 'an HTTP filter needs a name');
    return null;
  }
  const name = patchFilterName(ctx, p.r, [...at, 'name'], value.name);
  const expected = FILTER_TYPES[name];
  if (expected === undefined) return null;
  const tc = field(value, 'typed_config');
  if (tc.value === undefined) {
    ctx.error(p.r, [...at, tc.name], `${name} needs a typed_config (${expected})`);
    return null;
  }
  if (name === LOCAL_RATE_LIMIT_FILTER) {
    const typed = typedLocalRateLimit(ctx, p.r, tc.value, [...at, tc.name]);
    const config = typed === null ? null : decodeLimit(ctx, p.r, typed.value, typed.at, false);
    return config === null ? null : { name, config };
  }
  const typed = typedMessage(ctx, p.r, tc.value, [...at, tc.name]);
  if (typed === null) return null;
  if (typed.type !== expected) {
    ctx.error(p.r, [...at, tc.name, '@type'], `${name} takes type.googleapis.com/${expected}, got ${JSON.stringify(typed.type)}`);
    return null;
  }
  const schema = messageTypeOf(ctx, p.r, expected, [...at, tc.name]);
  const config = schema === null ? null : decode<unknown>(ctx, p.r, schema, typed.value, typed.at);
  return config === null ? null : { name, config };
}

/** A MERGE patch's config fields and type; null: nothing to merge (a patch with no typed_config), or invalid (reported). */
function mergeValue(ctx: TranslateContext, p: EnvoyFilterPatch): { type: string; schema: DescMessage; value: Obj } | null {
  const at: Path = [...p.at, 'patch', 'value'];
  const value = obj(p.value);
  if (value === null) {
    ctx.error(p.r, at, 'a MERGE patch needs a value');
    return null;
  }
  if (typeof value.name === 'string') {
    const name = patchFilterName(ctx, p.r, [...at, 'name'], value.name);
    const sub = subFilterOf(p);
    if (sub !== null && name !== sub) ctx.warn(p.r, [...at, 'name'], `renaming a filter (${sub} to ${name}) is not supported by Remora; the name is kept`);
  }
  const tc = field(value, 'typed_config');
  if (tc.value === undefined) return null;
  const typed = typedMessage(ctx, p.r, tc.value, [...at, tc.name]);
  if (typed === null) return null;
  const schema = messageTypeOf(ctx, p.r, typed.type, [...at, tc.name, '@type']);
  // Checked once here, so a bad patch is reported once however many filters it matches.
  if (schema === null || decode<unknown>(ctx, p.r, schema, typed.value, typed.at) === null) return null;
  return { type: typed.type, schema, value: typed.value };
}

/** The patches, read once per translation (a patch matching several listeners is reported once). */
const readPatches = new WeakMap<EnvoyFilterPatch, FilterPatch | null>();

function readPatch(ctx: TranslateContext, p: EnvoyFilterPatch): FilterPatch | null {
  if (readPatches.has(p)) return readPatches.get(p)!;
  const out = readPatchOnce(ctx, p);
  readPatches.set(p, out);
  return out;
}

function readPatchOnce(ctx: TranslateContext, p: EnvoyFilterPatch): FilterPatch | null {
  const { r, at, rank } = p;
  const subFilter = subFilterOf(p);
  if (!OPERATIONS.has(p.operation)) {
    ctx.error(r, [...at, 'patch', 'operation'], `operation ${JSON.stringify(p.operation)} is not one of ${[...OPERATIONS].join(', ')}`);
    return null;
  }
  if (isInsert(p.operation)) {
    // The local rate limit's inserts are placed with Remora's own LocalRateLimit (one per chain).
    if (obj(p.value)?.name === LOCAL_RATE_LIMIT_FILTER) return null;
    const filter = filterValue(ctx, p);
    if (filter === null) return null;
    return { kind: 'insert', insert: { filter, place: { operation: p.operation as InsertOperation, subFilter, r, at, rank } } };
  }
  if (p.operation === 'MERGE') {
    const m = mergeValue(ctx, p);
    if (m === null) return null;
    const mergeAt: Path = [...at, 'patch', 'value'];
    return {
      kind: 'merge',
      subFilter,
      r,
      at,
      rank,
      // istiod merges only into a filter whose config has the patch's type (MergeAnyWithAny).
      merge: (f) => {
        const type = FILTER_TYPES[f.name];
        if (type !== m.type) return null;
        const config = mergeJson<unknown>(ctx, r, m.schema, f.config, m.value, mergeAt);
        if (config === null) return null;
        // Envoy's rules for the local rate limit that its descriptors do not carry hold for the merged result too.
        if (f.name === LOCAL_RATE_LIMIT_FILTER) {
          const checked = decodeLimit(ctx, r, config as Obj, [...mergeAt, 'typed_config'], false);
          return checked === null ? null : { ...f, config: checked };
        }
        return { ...f, config };
      },
    };
  }
  // REPLACE and REMOVE need a subFilter; without one istiod does nothing.
  if (subFilter === null) {
    ctx.warn(r, [...at, 'match', 'listener', 'filterChain', 'filter', 'subFilter'], `${p.operation} of an HTTP filter needs match.listener.filterChain.filter.subFilter.name; this patch does nothing, as in istiod`);
    return null;
  }
  if (p.operation === 'REMOVE') return { kind: 'remove', subFilter, r, at, rank };
  const filter = filterValue(ctx, p);
  return filter === null ? null : { kind: 'replace', subFilter, filter, r, at, rank };
}

/** The EnvoyFilter HTTP_FILTER patches (other than the local rate limit's inserts) that apply to this listener, in istiod's order. */
export function httpFilterPatches(ctx: TranslateContext, listener: PatchListener): FilterPatch[] {
  const out: FilterPatch[] = [];
  for (const p of envoyFilterPatches(ctx)) {
    if (p.applyTo !== 'HTTP_FILTER' || !listenerMatches(ctx, p, listener)) continue;
    const read = readPatch(ctx, p);
    if (read !== null) out.push(read);
  }
  return out;
}

/**
 * EnvoyFilter `HTTP_FILTER` patches that insert (or REPLACE with) a filter Remora does not
 * have: an error naming the EnvoyFilter, the patch and the filter (the config is refused, the
 * last good one keeps serving), unless the filter is `is_optional`, which Envoy skips, and so
 * does Remora, with a warning. Checked once per translation, whichever listeners the patch
 * would match.
 */
export function checkPatchedHttpFilters(ctx: TranslateContext): void {
  for (const p of envoyFilterPatches(ctx)) {
    if (p.applyTo !== 'HTTP_FILTER' || !(isInsert(p.operation) || p.operation === 'REPLACE')) continue;
    const value = obj(p.value);
    const name = value?.name;
    if (typeof name !== 'string') continue;
    const canonical = canonicalFilterName(name);
    if (FILTER_TYPES[canonical] !== undefined || ISTIO_FILTERS.has(canonical)) continue;
    const optional = field(value!, 'is_optional');
    const at = [...p.at, 'patch', 'value'];
    if (optional.value === true) ctx.warn(p.r, [...at, optional.name], `Remora has no HTTP filter ${name}; it is optional, so it is skipped, as Envoy does`);
    else ctx.error(p.r, [...at, 'name'], `Remora has no HTTP filter ${name}; Envoy refuses an unknown filter too unless the patch sets is_optional: true`);
  }
}
