/**
 * A listener's HTTP filter chain, in the order istiod builds it (listener_builder.go), with
 * EnvoyFilter `HTTP_FILTER` patches applied by istiod's rules (envoyfilter/listener_patch.go):
 * inserts, REPLACE and REMOVE in the order of the patches, then MERGEs. Istio's chain also
 * holds filters Remora does not run (metadata exchange, gRPC stats, ALPN, stats); they are
 * kept as named slots while patches apply, so a patch whose `subFilter` names one lands where
 * istiod would put it, and are dropped afterwards. CORS (an empty Cors, as istiod's) and the
 * router (Envoy's terminal filter, kept last) stay in the chain.
 */
import type { HttpFilterConfig } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { FAULT_FILTER } from './fault.ts';

/** The EnvoyFilter patch operations that insert an HTTP filter. */
export type InsertOperation = 'INSERT_BEFORE' | 'INSERT_AFTER' | 'INSERT_FIRST' | 'ADD';

/** Where an inserted filter goes: a patch's operation and `subFilter` name (null: none given). */
export interface FilterPlace {
  readonly operation: InsertOperation;
  readonly subFilter: string | null;
  /** The EnvoyFilter and the path of its patch, for messages; null for Remora's own placements. */
  readonly r: Resource | null;
  readonly at: readonly (string | number)[];
  /** Its place in istiod's order of EnvoyFilter patches (lower first); Remora's own placements come before every patch. */
  readonly rank: number;
}

export interface FilterInsert {
  readonly filter: HttpFilterConfig;
  readonly place: FilterPlace;
}

const METADATA_EXCHANGE = 'istio.metadata_exchange';
const GRPC_STATS = 'envoy.filters.http.grpc_stats';
const ALPN = 'istio.alpn';
const CORS = 'envoy.filters.http.cors';
const STATS = 'istio.stats';
const ROUTER = 'envoy.filters.http.router';
/** istiod's filters: an empty Cors (the policy is per route) and a Router with its defaults. */
const CORS_FILTER: HttpFilterConfig = { name: CORS, config: {} };
const ROUTER_FILTER: HttpFilterConfig = { name: ROUTER, config: {} };

/**
 * Right after authentication and authorization: gRPC stats is the filter that follows them
 * in Istio's chain. Where Remora's own LocalRateLimit resource puts the limit.
 */
export const AFTER_AUTHORIZATION: FilterPlace = { operation: 'INSERT_BEFORE', subFilter: GRPC_STATS, r: null, at: [], rank: -1 };

/** Where a listener sits, in EnvoyFilter `match.context` terms. */
type ChainContext = 'SIDECAR_INBOUND' | 'SIDECAR_OUTBOUND' | 'GATEWAY';

/**
 * An EnvoyFilter HTTP_FILTER patch other than an insert, read and checked by the translator:
 * REPLACE and REMOVE the first (REPLACE) or every (REMOVE) filter named `subFilter`; MERGE
 * rewrites the config of each filter it matches (`merge` returns null where it does not
 * apply, e.g. another filter type). MERGEs run after every other patch, as istiod's.
 */
export type FilterPatch =
  | { readonly kind: 'insert'; readonly insert: FilterInsert }
  | { readonly kind: 'replace'; readonly subFilter: string; readonly filter: HttpFilterConfig; readonly r: Resource; readonly at: readonly (string | number)[]; readonly rank: number }
  | { readonly kind: 'remove'; readonly subFilter: string; readonly r: Resource; readonly at: readonly (string | number)[]; readonly rank: number }
  | {
      readonly kind: 'merge';
      readonly subFilter: string | null;
      readonly merge: (filter: HttpFilterConfig) => HttpFilterConfig | null;
      readonly r: Resource;
      readonly at: readonly (string | number)[];
      readonly rank: number;
    };

function rankOf(p: FilterPatch): number {
  return p.kind === 'insert' ? p.insert.place.rank : p.rank;
}

interface Slot {
  readonly name: string;
  /** Null: a filter of Istio's chain that Remora does not run as a filter. */
  readonly filter: HttpFilterConfig | null;
}

/**
 * The filters a listener runs, in order. `jwtAuthn` and the `authz` filters are in Istio's chain only
 * where policies select the proxy (and never on the outbound side); the fault filter's
 * place is always there, whether or not a route uses it.
 */
export function httpFilterChain(
  ctx: TranslateContext,
  context: ChainContext,
  parts: { readonly jwtAuthn: HttpFilterConfig | null; readonly authz: readonly HttpFilterConfig[]; readonly fault: HttpFilterConfig | null },
  inserts: readonly (FilterInsert | null)[],
  patches: readonly FilterPatch[] = [],
): HttpFilterConfig[] {
  const slots: Slot[] = [{ name: METADATA_EXCHANGE, filter: null }];
  if (context !== 'SIDECAR_OUTBOUND') {
    if (parts.jwtAuthn !== null) slots.push({ name: parts.jwtAuthn.name, filter: parts.jwtAuthn });
    // istiod's RBAC filters (AUDIT, DENY, ALLOW) share one name; a subFilter naming it finds the first.
    for (const authz of parts.authz) slots.push({ name: authz.name, filter: authz });
  }
  slots.push({ name: GRPC_STATS, filter: null });
  if (context !== 'SIDECAR_INBOUND') slots.push({ name: ALPN, filter: null });
  slots.push({ name: FAULT_FILTER, filter: parts.fault }, { name: CORS, filter: CORS_FILTER }, { name: STATS, filter: null });
  slots.push({ name: ROUTER, filter: ROUTER_FILTER });
  // One sequence in istiod's order: Remora's own placements, then the patches by rank; MERGEs last.
  const ordered: FilterPatch[] = [];
  for (const insert of inserts) if (insert !== null) ordered.push({ kind: 'insert', insert });
  for (const p of patches) if (p.kind !== 'merge') ordered.push(p);
  ordered.sort((a, b) => rankOf(a) - rankOf(b));
  for (const p of ordered) {
    if (p.kind === 'insert') place(ctx, context, slots, p.insert);
    else if (p.kind === 'replace') replace(ctx, context, slots, p);
    else if (p.kind === 'remove') remove(ctx, context, slots, p);
  }
  for (const p of patches) {
    if (p.kind !== 'merge') continue;
    for (const [i, s] of slots.entries()) {
      if (s.filter === null || (p.subFilter !== null && s.name !== p.subFilter)) continue;
      const merged = p.merge(s.filter);
      if (merged !== null) slots[i] = { name: s.name, filter: merged };
    }
  }
  const out: HttpFilterConfig[] = [];
  for (const s of slots) if (s.filter !== null) out.push(s.filter);
  if (out[out.length - 1]?.name !== ROUTER) {
    for (const p of patches) {
      if (p.kind === 'remove' && p.subFilter === ROUTER) ctx.error(p.r, [...p.at, 'match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'], `Envoy refuses an HTTP filter chain that does not end with ${ROUTER}`);
    }
  }
  return out;
}

/** The chain as a list of names, for messages. */
function chainNames(slots: readonly Slot[]): string {
  return slots.map((s) => s.name).join(', ');
}

function replace(ctx: TranslateContext, context: ChainContext, slots: Slot[], p: Extract<FilterPatch, { kind: 'replace' }>): void {
  const i = slots.findIndex((s) => s.name === p.subFilter);
  if (i < 0) {
    ctx.warn(p.r, [...p.at, 'match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'], `${p.subFilter} is not in the ${context} listener's HTTP filter chain (${chainNames(slots)}), so nothing is replaced there, as istiod does`);
    return;
  }
  slots[i] = { name: p.filter.name, filter: p.filter };
}

function remove(ctx: TranslateContext, context: ChainContext, slots: Slot[], p: Extract<FilterPatch, { kind: 'remove' }>): void {
  const before = slots.length;
  for (let i = slots.length - 1; i >= 0; i--) if (slots[i]!.name === p.subFilter) slots.splice(i, 1);
  if (slots.length === before) {
    ctx.warn(p.r, [...p.at, 'match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'], `${p.subFilter} is not in the ${context} listener's HTTP filter chain (${chainNames(slots)}), so nothing is removed there, as istiod does`);
  }
}

/** istiod's placement of one inserted filter. */
function place(ctx: TranslateContext, context: ChainContext, slots: Slot[], insert: FilterInsert): void {
  const { operation, subFilter, r, at } = insert.place;
  const slot: Slot = { name: insert.filter.name, filter: insert.filter };
  // INSERT_BEFORE without a subFilter is "insert at the beginning"; INSERT_AFTER without one is ADD.
  if (operation === 'INSERT_FIRST' || (operation === 'INSERT_BEFORE' && subFilter === null)) {
    slots.unshift(slot);
    return;
  }
  if (operation === 'ADD' || subFilter === null || subFilter === ROUTER) {
    if (operation === 'INSERT_AFTER' && subFilter === ROUTER && r !== null) {
      ctx.warn(r, [...at, 'match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'], `Envoy refuses HTTP filters after ${ROUTER} (it must be last); ${slot.name} is placed just before it`);
    }
    // "The end of the chain" is just before the router, which Envoy requires last.
    const router = slots.findIndex((s) => s.name === ROUTER);
    slots.splice(router < 0 ? slots.length : router, 0, slot);
    return;
  }
  const i = slots.findIndex((s) => s.name === subFilter);
  if (i < 0) {
    if (r !== null) {
      ctx.warn(r, [...at, 'match', 'listener', 'filterChain', 'filter', 'subFilter', 'name'], `${subFilter} is not in the ${context} listener's HTTP filter chain (${chainNames(slots)}), so ${slot.name} is not inserted there, as istiod does`);
    }
    return;
  }
  slots.splice(operation === 'INSERT_BEFORE' ? i : i + 1, 0, slot);
}
