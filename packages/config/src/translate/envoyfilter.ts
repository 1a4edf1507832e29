/**
 * EnvoyFilter, the parts every patch shares: which EnvoyFilters apply to this proxy and in
 * which order (istiod's pilot/pkg/model/push_context.go: `priority`, then the root namespace's
 * before the workload's, then age, then name), `match.context`, filter names, and Envoy's
 * descriptors to read the Envoy JSON a patch carries, so its errors name the EnvoyFilter, the
 * patch and the exact field. The patches themselves apply in envoyfilter-patch*.ts.
 */
// The runtime library alone is small; the descriptors are what costs, and they load lazily below.
import type { DescMessage, JsonValue } from '@bufbuild/protobuf';
import { EnvoyCodecError } from '../errors.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { labelsMatch } from './registry.ts';
import { envoyCodec } from '../envoy/lazy-codec.ts';

export { envoyCodec };

/** Where a listener sits, in EnvoyFilter `match.context` terms. */
export type PatchContext = 'SIDECAR_INBOUND' | 'SIDECAR_OUTBOUND' | 'GATEWAY';

export type Obj = Record<string, unknown>;
export type Path = (string | number)[];

export function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}

/** A proto field as YAML may spell it: `snake_case` or its JSON name `camelCase`. */
export function field(o: Obj, snake: string): { value: unknown; name: string } {
  if (snake in o) return { value: o[snake], name: snake };
  const camel = snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  return camel in o ? { value: o[camel], name: camel } : { value: undefined, name: snake };
}

/** `a.b[0].c` (the codec's field path) as path segments. */
export function splitPath(path: string): Path {
  const out: Path = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
  return out;
}

export const HTTP_CONNECTION_MANAGER = 'envoy.filters.network.http_connection_manager';

/**
 * Envoy's deprecated filter names, which istiod still accepts in a patch's match (with a
 * warning): pkg/config/xds/deprecated.go, for the filters Remora has.
 */
const DEPRECATED_FILTER_NAMES: Readonly<Record<string, string>> = {
  'envoy.cors': 'envoy.filters.http.cors',
  'envoy.fault': 'envoy.filters.http.fault',
  'envoy.router': 'envoy.filters.http.router',
  'envoy.rate_limit': 'envoy.filters.http.ratelimit',
  'envoy.http_connection_manager': HTTP_CONNECTION_MANAGER,
};

/** A filter name with its deprecated spelling replaced by the canonical one. */
export function canonicalFilterName(name: string): string {
  return DEPRECATED_FILTER_NAMES[name] ?? name;
}

export interface PatchMatch {
  context?: string;
  listener?: {
    portNumber?: number;
    name?: string;
    filterChain?: {
      name?: string;
      sni?: string;
      transportProtocol?: string;
      applicationProtocols?: string;
      destinationPort?: number;
      filter?: { name?: string; subFilter?: { name?: string } };
    };
  };
  routeConfiguration?: {
    portNumber?: number;
    portName?: string;
    name?: string;
    gateway?: string;
    vhost?: { name?: string; domainName?: string; route?: { name?: string; action?: string } };
  };
  cluster?: { portNumber?: number; service?: string; subset?: string; name?: string };
  proxy?: { proxyVersion?: string; metadata?: Record<string, string> };
}

export interface EnvoyFilterSpec {
  workloadSelector?: { labels?: Record<string, string> };
  targetRefs?: unknown[];
  priority?: number;
  configPatches?: {
    applyTo?: string;
    match?: PatchMatch;
    patch?: { operation?: string; value?: unknown };
  }[];
}

/** One patch of an EnvoyFilter that applies to this proxy. */
export interface EnvoyFilterPatch {
  readonly r: Resource;
  readonly index: number;
  /** Its place in istiod's order of all patches: lower applies first. */
  readonly rank: number;
  readonly applyTo: string;
  readonly operation: string;
  readonly match: PatchMatch;
  readonly value: unknown;
  /** `spec.configPatches[index]`, for messages. */
  readonly at: Path;
}

const patchesByContext = new WeakMap<TranslateContext, readonly EnvoyFilterPatch[]>();

/**
 * Every patch of the EnvoyFilters that select this proxy, in istiod's order: by `priority`,
 * root namespace before the workload's, then oldest first (file order standing in for age),
 * patches of one EnvoyFilter in their order. Computed once per translation.
 */
export function envoyFilterPatches(ctx: TranslateContext): readonly EnvoyFilterPatch[] {
  const cached = patchesByContext.get(ctx);
  if (cached !== undefined) return cached;
  const root = ctx.node.rootNamespace;
  const selected: { r: Resource; spec: EnvoyFilterSpec }[] = [];
  for (const r of ctx.resourcesOf('EnvoyFilter')) {
    const spec = (r.spec ?? {}) as EnvoyFilterSpec;
    if (!selects(ctx, r, spec.workloadSelector?.labels)) continue;
    if (Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0) {
      ctx.warn(r, ['spec', 'targetRefs'], 'targetRefs is not supported by Remora; this EnvoyFilter is not applied');
      continue;
    }
    selected.push({ r, spec });
  }
  // Array.prototype.sort is stable: ties keep resourcesOf's oldest-first order.
  selected.sort((a, b) => {
    const pa = a.spec.priority ?? 0;
    const pb = b.spec.priority ?? 0;
    if (pa !== pb) return pa - pb;
    const ra = a.r.metadata.namespace === root;
    const rb = b.r.metadata.namespace === root;
    return ra === rb ? 0 : ra ? -1 : 1;
  });
  const out: EnvoyFilterPatch[] = [];
  for (const { r, spec } of selected) {
    for (const [index, p] of (spec.configPatches ?? []).entries()) {
      if (p.patch === undefined) continue;
      out.push({
        r,
        index,
        rank: out.length,
        applyTo: p.applyTo ?? '',
        operation: p.patch.operation ?? '',
        match: p.match ?? {},
        value: p.patch.value,
        at: ['spec', 'configPatches', index],
      });
    }
  }
  patchesByContext.set(ctx, out);
  return out;
}

/** Does an EnvoyFilter (or a resource with a selector) apply to this proxy (root namespace: everywhere; else its namespace; selector labels)? */
export function selects(ctx: TranslateContext, r: Resource, labels: Readonly<Record<string, string>> | undefined): boolean {
  const ns = r.metadata.namespace;
  if (ns !== ctx.node.rootNamespace && ns !== ctx.node.namespace) return false;
  return labels === undefined || labelsMatch(labels, ctx.node.labels);
}

/** EnvoyFilter `match.context` against the listener's; absent or ANY matches every listener. */
export function contextMatches(want: unknown, context: PatchContext): boolean {
  return want === undefined || want === null || want === 'ANY' || want === context;
}

/** Reads `json` as Envoy message `schema` and writes it back in canonical proto3 JSON; codec errors go to `ctx` at `at` plus the field path. */
export function decode<T>(ctx: TranslateContext, r: Resource, schema: DescMessage, json: unknown, at: Path): T | null {
  try {
    const { envoyFromJson, envoyToJson } = envoyCodec();
    return envoyToJson(schema, envoyFromJson(schema, json as JsonValue)) as T;
  } catch (e) {
    if (!(e instanceof EnvoyCodecError)) throw e;
    ctx.error(r, [...at, ...splitPath(e.path)], e.reason);
    return null;
  }
}

/** One patch that applies to this proxy, read and checked once. */
export interface Patch {
  readonly p: EnvoyFilterPatch;
  readonly applyTo: string;
  /** istiod's: INSERT_* become ADD except for filters and routes. */
  readonly operation: string;
  /** The value as canonical proto3 JSON of the `applyTo`'s message; null for REMOVE. */
  readonly value: Obj | null;
  /** `match.listener.filterChain.filter.name`, canonical; undefined when the match has no `filter`. */
  readonly filterName: string | undefined;
  /** `…filter.subFilter.name`, canonical; undefined when the match has no `subFilter`. */
  readonly subFilter: string | undefined;
}
