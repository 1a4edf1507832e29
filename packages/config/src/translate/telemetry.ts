/**
 * Istio's Telemetry resource (telemetry.istio.io) and the mesh's tracing providers → each HTTP
 * listener's `tracing`, as istiod computes it (pilot/pkg/model/telemetry.go `Tracing`,
 * pilot/pkg/networking/core/tracing.go):
 *
 * - the Telemetry resources that apply: the root namespace's without a selector (mesh-wide),
 *   then the workload namespace's without a selector, then every one there whose
 *   `selector.matchLabels` match the workload, oldest first; later ones override earlier;
 * - two specs, CLIENT (sidecar outbound and gateway listeners) and SERVER (sidecar inbound),
 *   both starting from MeshConfig `defaultProviders.tracing[0]`; each `tracing[]` entry
 *   (`match.mode` picks the specs it changes) sets the provider (its first), then
 *   `disableSpanReporting`, `customTags`, `randomSamplingPercentage`, `enableIstioTags`;
 *   a spec left without a provider traces nothing;
 * - no Telemetry tracing and no default provider: istiod's legacy tracing, which names no
 *   provider (Envoy's bootstrap tracer); Remora has none, so nothing is traced;
 * - the provider's collector is the outbound cluster of its `service` and `port` (istiod's
 *   LookupCluster: `[<namespace>/]<hostname>` of a registry service); sampling is the spec's
 *   percentage, else `defaultConfig.tracing.sampling`, else 1%; tags are istiod's `istio.*`
 *   service tags and dry-run policy tags, plus the spec's custom tags (else the mesh's).
 *
 * `accessLogging` and `metrics` of the Telemetry resources are not applied (a warning says so).
 */
import type { ConfigIssue } from '../errors.ts';
import type { Cluster } from '../model/cluster.ts';
import type { HttpTracing, Listener, TracingCustomTag, TracingProvider } from '../model/listener.ts';
import { serviceClusterOf } from '../model/node.ts';
import type { Resource } from '../resources/resource.ts';
import type { IstioCustomTag, MeshTelemetry, MeshTracingProvider } from '../schema/mesh-telemetry.ts';
import type { TranslateContext } from './context.ts';
import { labelsMatch, type ServiceRegistry } from './registry.ts';
import { outboundClusterName } from './virtual-service.ts';
import { scopedResources } from './workload-scope.ts';

interface TelemetrySpec {
  selector?: { matchLabels?: Record<string, string> } | null;
  targetRef?: unknown;
  targetRefs?: unknown[] | null;
  tracing?: IstioTracing[] | null;
  accessLogging?: unknown[] | null;
  metrics?: unknown[] | null;
}

interface IstioTracing {
  match?: { mode?: 'CLIENT' | 'SERVER' | 'CLIENT_AND_SERVER' | null } | null;
  providers?: { name?: string }[] | null;
  customTags?: Record<string, { literal?: { value?: string }; environment?: { name?: string; defaultValue?: string }; header?: { name?: string; defaultValue?: string } }> | null;
  disableSpanReporting?: boolean | null;
  randomSamplingPercentage?: number | null;
  enableIstioTags?: boolean | null;
}

/** One side's merged tracing (istiod's TracingSpec). */
interface TracingSpec {
  providerName: string | null;
  /** The Telemetry resource that named the provider (null: the mesh default), for messages. */
  providerFrom: { r: Resource; path: (string | number)[] } | null;
  disabled: boolean;
  customTags: Record<string, IstioCustomTag> | null;
  randomSamplingPercentage: number | null;
  enableIstioTags: boolean;
}

/** istiod's features.TraceSampling default (PILOT_TRACE_SAMPLING). */
export const DEFAULT_TRACE_SAMPLING = 1;
const RBAC_FILTER = 'envoy.filters.http.rbac';
/** istiod's optionalPolicyTags: what the RBAC filter's dry-run decided. */
const POLICY_TAGS: readonly TracingCustomTag[] = [
  { tag: 'istio.authorization.dry_run.allow_policy.name', kind: 'metadata', filter: RBAC_FILTER, key: 'istio_dry_run_allow_shadow_effective_policy_id', defaultValue: '' },
  { tag: 'istio.authorization.dry_run.allow_policy.result', kind: 'metadata', filter: RBAC_FILTER, key: 'istio_dry_run_allow_shadow_engine_result', defaultValue: '' },
  { tag: 'istio.authorization.dry_run.deny_policy.name', kind: 'metadata', filter: RBAC_FILTER, key: 'istio_dry_run_deny_shadow_effective_policy_id', defaultValue: '' },
  { tag: 'istio.authorization.dry_run.deny_policy.result', kind: 'metadata', filter: RBAC_FILTER, key: 'istio_dry_run_deny_shadow_engine_result', defaultValue: '' },
];

/** The Telemetry resources that apply to this proxy, lowest precedence first. */
export function applicableTelemetries(ctx: TranslateContext): Resource[] {
  const selectorOf = (spec: unknown) => (spec as TelemetrySpec).selector?.matchLabels ?? undefined;
  const levels = scopedResources(ctx, 'Telemetry', selectorOf);
  const out: Resource[] = [];
  // A proxy in the root namespace (a gateway in istio-system) finds the mesh-wide one as its namespace's.
  if (levels.root !== null) out.push(levels.root);
  if (levels.namespace !== null) out.push(levels.namespace);
  for (const r of ctx.resourcesOf('Telemetry')) {
    if (r.metadata.namespace !== ctx.node.namespace) continue;
    const spec = (r.spec ?? {}) as TelemetrySpec;
    const sel = spec.selector?.matchLabels ?? {};
    if (spec.targetRef != null || (spec.targetRefs ?? []).length > 0) {
      ctx.warn(r, ['spec', spec.targetRef != null ? 'targetRef' : 'targetRefs'], 'ignored: a Telemetry attached to a Gateway or Service by targetRef is not applied');
      continue;
    }
    if (Object.keys(sel).length > 0 && labelsMatch(sel, ctx.node.labels)) out.push(r);
  }
  return out;
}

function telemetryTags(raw: NonNullable<IstioTracing['customTags']>): Record<string, IstioCustomTag> {
  const out: Record<string, IstioCustomTag> = {};
  for (const [tag, v] of Object.entries(raw)) {
    if (v.literal != null) out[tag] = { kind: 'literal', value: v.literal.value ?? '' };
    else if (v.environment != null) out[tag] = { kind: 'environment', name: v.environment.name ?? '', defaultValue: v.environment.defaultValue ?? '' };
    else if (v.header != null) out[tag] = { kind: 'header', name: v.header.name ?? '', defaultValue: v.header.defaultValue ?? '' };
  }
  return out;
}

/** istiod's Telemetries.Tracing: the CLIENT and SERVER specs, or null when nothing configures tracing. */
export function tracingSpecs(ctx: TranslateContext, telemetries: readonly Resource[]): { client: TracingSpec; server: TracingSpec } | null {
  const defaults = ctx.mesh.telemetry?.defaultTracing ?? [];
  const entries: { r: Resource; i: number; t: IstioTracing }[] = [];
  for (const r of telemetries) ((r.spec as TelemetrySpec | null)?.tracing ?? []).forEach((t, i) => entries.push({ r, i, t }));
  if (entries.length === 0 && defaults.length === 0) return null;
  const fresh = (): TracingSpec => ({ providerName: defaults[0] ?? null, providerFrom: null, disabled: false, customTags: null, randomSamplingPercentage: null, enableIstioTags: true });
  const client = fresh();
  const server = fresh();
  for (const { r, i, t } of entries) {
    const mode = t.match?.mode ?? 'CLIENT_AND_SERVER';
    const specs = mode === 'CLIENT' ? [client] : mode === 'SERVER' ? [server] : [client, server];
    const name = (t.providers ?? []).map((p) => p.name ?? '').find((n) => n !== '');
    for (const s of specs) {
      if (name !== undefined) {
        s.providerName = name;
        s.providerFrom = { r, path: ['spec', 'tracing', i, 'providers', 0, 'name'] };
      }
      if (t.disableSpanReporting != null) s.disabled = t.disableSpanReporting;
      if (t.customTags != null) s.customTags = telemetryTags(t.customTags);
      if (t.randomSamplingPercentage != null) s.randomSamplingPercentage = t.randomSamplingPercentage;
      if (t.enableIstioTags != null) s.enableIstioTags = t.enableIstioTags;
    }
  }
  return { client, server };
}

/** The `outbound|<port>||<host>` collector cluster of a provider (istiod's LookupCluster), or why there is none. */
function lookupCluster(registry: ServiceRegistry, service: string, port: number): { hostname: string; cluster: string } | string {
  if (service === '') return 'service must not be empty';
  const slash = service.indexOf('/');
  const ns = slash < 0 ? null : service.slice(0, slash);
  const host = slash < 0 ? service : service.slice(slash + 1);
  const svc = registry.get(host);
  if (svc === undefined || (ns !== null && svc.namespace !== ns)) return `could not find service ${service} in Istio service registry`;
  return { hostname: svc.host, cluster: outboundClusterName(port, '', svc.host) };
}

function serviceTags(ctx: TranslateContext): TracingCustomTag[] {
  const { node } = ctx;
  const lit = (tag: string, value: string): TracingCustomTag => ({ tag, kind: 'literal', value });
  return [
    lit('istio.canonical_revision', node.labels['service.istio.io/canonical-revision'] || 'latest'),
    lit('istio.canonical_service', node.labels['service.istio.io/canonical-name'] || 'unknown'),
    lit('istio.mesh_id', node.meshId || 'unknown'),
    lit('istio.namespace', node.namespace || 'default'),
    lit('istio.cluster_id', node.clusterId || 'unknown'),
  ];
}

function customTag(tag: string, c: IstioCustomTag): TracingCustomTag {
  if (c.kind === 'literal') return { tag, kind: 'literal', value: c.value };
  if (c.kind === 'environment') return { tag, kind: 'environment', name: c.name, defaultValue: c.defaultValue };
  return { tag, kind: 'requestHeader', name: c.name.toLowerCase(), defaultValue: c.defaultValue };
}

function providerJson(p: MeshTracingProvider, hostname: string, cluster: string, serviceName: string): TracingProvider {
  if (p.kind === 'zipkin') return { kind: 'zipkin', cluster, authority: hostname, path: p.path === '' ? '/api/v2/spans' : p.path, traceId128Bit: !p.enable64bitTraceId, sharedSpanContext: false };
  if (p.http !== null) {
    return { kind: 'opentelemetry', cluster, authority: hostname, transport: 'http', path: `/${p.http.path.replace(/^\/+/, '')}`, serviceName, timeoutMs: p.http.timeoutMs, headers: p.http.headers };
  }
  return { kind: 'opentelemetry', cluster, authority: hostname, transport: 'grpc', path: '', serviceName, timeoutMs: p.grpc.timeoutMs, headers: p.grpc.initialMetadata };
}

/** One spec as the connection manager's tracing (istiod's configureFromProviderConfig + sampling + tags), or null. */
function hcmTracing(ctx: TranslateContext, registry: ServiceRegistry, clusters: ReadonlySet<string>, spec: TracingSpec, report: (spec: TracingSpec, message: string) => void): HttpTracing | null {
  if (spec.disabled || spec.providerName === null) return null;
  const mesh: MeshTelemetry | undefined = ctx.mesh.telemetry;
  const wanted = spec.providerName.toLowerCase();
  const provider = mesh?.tracingProviders.find((p) => p.name.toLowerCase() === wanted);
  if (provider === undefined) {
    const other = ctx.mesh.extensionProviders.find((p) => p.name.toLowerCase() === wanted);
    report(spec, other === undefined ? `tracing provider ${spec.providerName} is not among the MeshConfig's extensionProviders: not traced` : `provider ${spec.providerName} does not support tracing: not traced`);
    return null;
  }
  const found = lookupCluster(registry, provider.service, provider.port);
  if (typeof found === 'string') {
    report(spec, `could not find cluster for tracing provider ${provider.name}: ${found}: not traced`);
    return null;
  }
  if (!clusters.has(found.cluster)) report(spec, `tracing provider ${provider.name}: this proxy has no cluster ${found.cluster} (its Sidecar egress does not import ${found.hostname}): spans are not exported`);
  let sampling = spec.randomSamplingPercentage;
  if (sampling === null) {
    const meshSampling = mesh?.sampling ?? 0;
    sampling = meshSampling !== 0 ? (meshSampling > 100 ? 1 : meshSampling) : DEFAULT_TRACE_SAMPLING;
  }
  const tags: TracingCustomTag[] = spec.enableIstioTags ? [...serviceTags(ctx), ...POLICY_TAGS] : [];
  const own = spec.customTags !== null && Object.keys(spec.customTags).length > 0 ? spec.customTags : (mesh?.customTags ?? {});
  for (const [tag, c] of Object.entries(own)) tags.push(customTag(tag, c));
  tags.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  return {
    provider: providerJson(provider, found.hostname, found.cluster, serviceClusterOf(ctx.node)),
    randomSamplingPercent: sampling,
    clientSamplingPercent: 100,
    overallSamplingPercent: 100,
    customTags: tags,
    spawnUpstreamSpan: ctx.node.kind === 'gateway',
    maxPathTagLength: provider.maxTagLength || mesh?.maxPathTagLength || 256,
  };
}

/**
 * Sets `tracing` on this proxy's HTTP listeners as the Telemetry resources and the mesh's
 * providers say: the CLIENT spec on gateway and sidecar outbound listeners, the SERVER spec on
 * sidecar inbound ones. TCP listeners are left alone.
 */
export function applyTelemetry(ctx: TranslateContext, registry: ServiceRegistry, listeners: readonly Listener[], clusters: readonly Cluster[]): Listener[] {
  const telemetries = applicableTelemetries(ctx);
  for (const r of telemetries) {
    const spec = (r.spec ?? {}) as TelemetrySpec;
    if ((spec.accessLogging ?? []).length > 0) ctx.warn(r, ['spec', 'accessLogging'], 'not applied: the access log is set by the MeshConfig (accessLogFile) and --access-log-format');
    if ((spec.metrics ?? []).length > 0) ctx.warn(r, ['spec', 'metrics'], 'not applied: the istio_* metrics are always reported, with their default tags');
  }
  const specs = tracingSpecs(ctx, telemetries);
  if (specs === null) return [...listeners];
  const names = new Set(clusters.map((c) => c.name));
  const reported = new Set<string>();
  const report = (spec: TracingSpec, message: string): void => {
    if (reported.has(message)) return;
    reported.add(message);
    if (spec.providerFrom !== null) ctx.warn(spec.providerFrom.r, spec.providerFrom.path, message);
    else ctx.issues.push(meshIssue(message));
  };
  const client = hcmTracing(ctx, registry, names, specs.client, report);
  const server = hcmTracing(ctx, registry, names, specs.server, report);
  return listeners.map((l) => {
    if (l.tcpProxy !== undefined) return l;
    const t = l.direction === 'inbound' ? server : client;
    if (t === null) return l;
    return { ...l, tracing: t };
  });
}

function meshIssue(message: string): ConfigIssue {
  return { severity: 'warning', file: '', line: 0, kind: 'MeshConfig', resource: 'mesh', path: 'defaultProviders.tracing', message };
}
