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
 *
 * `accessLogging` (istiod's Telemetries.AccessLogging, mergeLogs, buildAccessLogFromTelemetry):
 * for each side, the providers named last (a Telemetry whose entries name none inherits its
 * parent's; the mesh's `defaultProviders.accessLogging` start it), each disabled or with the
 * filter expression of the entry that named it; every `envoyFileAccessLog` provider that is
 * not disabled is a file access log on the side's listeners (HTTP and TCP), with its CEL
 * filter. No Telemetry logging and no default provider: MeshConfig `accessLogFile` (set by
 * istio.ts); otherwise the Telemetry result replaces it, and a side whose providers are all
 * disabled logs nothing. The built-in provider `envoy` (`/dev/stdout`) without a `logFormat`
 * is formatted as MeshConfig `accessLogEncoding`/`accessLogFormat` say.
 *
 * `metrics` (istiod's mergeMetrics, generateStatsConfig): the providers named last (the mesh's
 * `defaultProviders.metrics`, Istio's `prometheus` by default, start it); for the Prometheus
 * provider, each side's overrides in order (`match.metric`, ALL_METRICS when absent;
 * `match.mode`), later ones over earlier: `disabled`, `tagOverrides` UPSERT (a CEL value) or
 * REMOVE. The result is each listener's `istioStats` (istiod's `istio.stats` filter config),
 * the CLIENT side's on gateway and sidecar outbound listeners, the SERVER side's on sidecar
 * inbound ones; ALL_METRICS disabled on a side (or no Prometheus provider) drops every metric
 * there. `customMetric` overrides and providers other than Prometheus are warned of.
 */
import type { ConfigIssue } from '../errors.ts';
import { ISTIO_JSON_ACCESS_LOG_FORMAT, ISTIO_TEXT_ACCESS_LOG_FORMAT } from '../access-log-format.ts';
import { compileCel } from '../cel.ts';
import type { Cluster } from '../model/cluster.ts';
import { ISTIO_METRIC_NAMES, type AccessLogConfig, type HttpTracing, type IstioMetricConfig, type IstioStatsConfig, type Listener, type TracingCustomTag, type TracingProvider } from '../model/listener.ts';
import { serviceClusterOf } from '../model/node.ts';
import type { MeshAccessLog } from '../schema/mesh-config.ts';
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
  accessLogging?: IstioAccessLogging[] | null;
  metrics?: IstioMetrics[] | null;
}

interface IstioTracing {
  match?: { mode?: 'CLIENT' | 'SERVER' | 'CLIENT_AND_SERVER' | null } | null;
  providers?: { name?: string }[] | null;
  customTags?: Record<string, { literal?: { value?: string }; environment?: { name?: string; defaultValue?: string }; header?: { name?: string; defaultValue?: string } }> | null;
  disableSpanReporting?: boolean | null;
  randomSamplingPercentage?: number | null;
  enableIstioTags?: boolean | null;
}

interface IstioMetrics {
  providers?: { name?: string }[] | null;
  overrides?: IstioMetricsOverride[] | null;
  reportingInterval?: string | null;
}

interface IstioMetricsOverride {
  match?: { metric?: string | null; customMetric?: string | null; mode?: 'CLIENT' | 'SERVER' | 'CLIENT_AND_SERVER' | null } | null;
  disabled?: boolean | null;
  tagOverrides?: Record<string, { operation?: 'UPSERT' | 'REMOVE' | null; value?: string | null } | null> | null;
}

interface IstioAccessLogging {
  match?: { mode?: 'CLIENT' | 'SERVER' | 'CLIENT_AND_SERVER' | null } | null;
  providers?: { name?: string }[] | null;
  disabled?: boolean | null;
  filter?: { expression?: string } | null;
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
export function applyTelemetry(ctx: TranslateContext, registry: ServiceRegistry, input: readonly Listener[], clusters: readonly Cluster[]): Listener[] {
  const telemetries = applicableTelemetries(ctx);
  const listeners = applyMetrics(ctx, telemetries, applyAccessLogging(ctx, telemetries, input));
  const specs = tracingSpecs(ctx, telemetries);
  if (specs === null) return listeners;
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

/**
 * MeshConfig's access log as istiod builds it (FileAccessLogFromMeshConfig) into `path`: TEXT
 * with `accessLogFormat` (a newline added when missing) or Istio's text format; JSON with
 * `accessLogFormat` read as a JSON object, or Istio's JSON.
 */
export function meshFileAccessLog(path: string, m: MeshAccessLog | undefined): AccessLogConfig[] {
  if (m?.encoding === 'JSON') {
    const json = m.format === '' ? ISTIO_JSON_ACCESS_LOG_FORMAT : (JSON.parse(m.format) as Record<string, unknown>);
    return [{ path, format: { json } }];
  }
  const format = m?.format ?? '';
  const text = format === '' ? ISTIO_TEXT_ACCESS_LOG_FORMAT : format.endsWith('\n') ? format : `${format}\n`;
  return [{ path, format: { text } }];
}

/** One provider's merged access logging (istiod's loggingSpec). */
interface LoggingSpec {
  disabled: boolean;
  filter: string | null;
  /** Where the filter was given, for messages. */
  from: { r: Resource; path: (string | number)[] } | null;
}

type Mode = 'CLIENT' | 'SERVER';

function modeMatches(m: IstioAccessLogging['match'], mode: Mode): boolean {
  const want = m?.mode ?? 'CLIENT_AND_SERVER';
  return want === 'CLIENT_AND_SERVER' || want === mode;
}

const providerNames = (ps: IstioAccessLogging['providers']): string[] => (ps ?? []).map((p) => p.name ?? '');

/** istiod's mergeLogs: the providers that log on this side, by name, each disabled or with its filter. */
function mergeLogs(ctx: TranslateContext, telemetries: readonly Resource[], mode: Mode): Map<string, LoggingSpec> {
  const defaults = ctx.mesh.telemetry?.defaultAccessLogging ?? [];
  const groups = telemetries.map((r) => ({ r, logging: (r.spec as TelemetrySpec | null)?.accessLogging ?? [] })).filter((g) => g.logging.length > 0);
  const out = new Map<string, LoggingSpec>();
  if (groups.length === 0) {
    for (const d of defaults) out.set(d, { disabled: false, filter: null, from: null });
    return out;
  }
  let names: readonly string[] = defaults;
  const filters = new Map<string, LoggingSpec>();
  for (const { r, logging } of groups) {
    const named = new Set<string>();
    logging.forEach((l, i) => {
      if (!modeMatches(l.match, mode)) return;
      for (const p of providerNames(l.providers)) {
        named.add(p);
        const expression = l.filter?.expression;
        filters.set(p, { disabled: false, filter: expression ?? null, from: expression === undefined ? null : { r, path: ['spec', 'accessLogging', i, 'filter', 'expression'] } });
      }
    });
    if (named.size > 0) names = [...named];
  }
  const inScope = new Set(names);
  let parent: readonly string[] = defaults;
  for (const { logging } of groups) {
    for (const l of logging) {
      let ps: readonly string[] = providerNames(l.providers);
      if (ps.length === 0) ps = parent;
      parent = ps;
      for (const p of ps) {
        if (!inScope.has(p) || !modeMatches(l.match, mode)) continue;
        out.set(p, l.disabled === true ? { disabled: true, filter: null, from: null } : (filters.get(p) ?? { disabled: false, filter: null, from: null }));
      }
    }
  }
  return out;
}

/** A provider's file access log (istiod's telemetryAccessLog for `envoyFileAccessLog`), or why there is none. */
function providerAccessLog(ctx: TranslateContext, name: string): AccessLogConfig | string {
  const wanted = name.toLowerCase();
  const p = ctx.mesh.telemetry?.accessLogProviders.find((a) => a.name.toLowerCase() === wanted);
  if (p === undefined) {
    // istiod's built-in providers, there unless the MeshConfig defines its own of that name.
    if (wanted === 'envoy') return meshFileAccessLog('/dev/stdout', ctx.mesh.accessLog)[0]!;
    const other = ctx.mesh.extensionProviders.find((e) => e.name.toLowerCase() === wanted);
    if (other !== undefined || wanted === 'prometheus' || wanted === 'stackdriver') return `provider ${name} does not write access logs (only envoyFileAccessLog providers are applied)`;
    return `access log provider ${name} is not among the MeshConfig's extensionProviders: not logged`;
  }
  const path = p.path === '' ? '/dev/stdout' : p.path;
  if (p.name === 'envoy' && p.hasLogFormat !== true) return meshFileAccessLog(path, ctx.mesh.accessLog)[0]!;
  if (p.labels !== undefined) return { path, format: { json: Object.keys(p.labels).length === 0 ? ISTIO_JSON_ACCESS_LOG_FORMAT : p.labels } };
  const text = p.format === '' ? ISTIO_TEXT_ACCESS_LOG_FORMAT : p.format.endsWith('\n') ? p.format : `${p.format}\n`;
  return { path, format: { text } };
}

/**
 * One side's access logs from the Telemetry API, sorted by provider name; null: the Telemetry
 * API configures none here (the MeshConfig's `accessLogFile` applies).
 */
function sideAccessLogs(ctx: TranslateContext, telemetries: readonly Resource[], mode: Mode, reported: Set<string>): AccessLogConfig[] | null {
  const merged = mergeLogs(ctx, telemetries, mode);
  const found: { name: string; log: AccessLogConfig | null }[] = [];
  for (const [name, spec] of merged) {
    const base = providerAccessLog(ctx, name);
    if (typeof base === 'string') {
      if (!reported.has(base)) {
        reported.add(base);
        const at = telemetries.find((r) => ((r.spec as TelemetrySpec | null)?.accessLogging ?? []).some((l) => providerNames(l.providers).includes(name)));
        if (at !== undefined) ctx.warn(at, ['spec', 'accessLogging'], base);
        else ctx.issues.push({ severity: 'warning', file: '', line: 0, kind: 'MeshConfig', resource: 'mesh', path: 'defaultProviders.accessLogging', message: base });
      }
      continue;
    }
    if (spec.disabled) {
      found.push({ name, log: null });
      continue;
    }
    if (spec.filter !== null) {
      try {
        compileCel(spec.filter);
      } catch (err) {
        const key = `${spec.filter}`;
        if (!reported.has(key)) {
          reported.add(key);
          ctx.error(spec.from!.r, spec.from!.path, (err as Error).message);
        }
        continue;
      }
    }
    found.push({ name, log: spec.filter === null ? base : { ...base, filter: spec.filter } });
  }
  if (found.length === 0) return null;
  found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return found.flatMap((f) => (f.log === null ? [] : [f.log]));
}

/** The Telemetry API's access logs on each listener: SERVER on sidecar inbound ones, CLIENT on the rest. */
function applyAccessLogging(ctx: TranslateContext, telemetries: readonly Resource[], listeners: readonly Listener[]): Listener[] {
  const anyLogging = telemetries.some((r) => ((r.spec as TelemetrySpec | null)?.accessLogging ?? []).length > 0);
  if (!anyLogging && (ctx.mesh.telemetry?.defaultAccessLogging ?? []).length === 0) return [...listeners];
  const reported = new Set<string>();
  const client = sideAccessLogs(ctx, telemetries, 'CLIENT', reported);
  const server = sideAccessLogs(ctx, telemetries, 'SERVER', reported);
  return listeners.map((l) => {
    const logs = l.direction === 'inbound' ? server : client;
    if (logs === null) return l;
    return { ...l, accessLog: logs };
  });
}

/** Telemetry `match.metric` → the istio_* metric (istiod's metricToPrometheusMetric). */
const METRIC_BY_SELECTOR: Readonly<Record<string, string>> = {
  REQUEST_COUNT: 'requests_total',
  REQUEST_DURATION: 'request_duration_milliseconds',
  REQUEST_SIZE: 'request_bytes',
  RESPONSE_SIZE: 'response_bytes',
  TCP_OPENED_CONNECTIONS: 'tcp_connections_opened_total',
  TCP_CLOSED_CONNECTIONS: 'tcp_connections_closed_total',
  TCP_SENT_BYTES: 'tcp_sent_bytes_total',
  TCP_RECEIVED_BYTES: 'tcp_received_bytes_total',
  GRPC_REQUEST_MESSAGES: 'request_messages_total',
  GRPC_RESPONSE_MESSAGES: 'response_messages_total',
};

/** One metric's merged override on one side (istiod's metricOverride). */
interface MetricOverride {
  disabled: boolean | null;
  /** Tag → its value (a CEL expression) or null (REMOVE). */
  tags: Map<string, string | null>;
}

/** One side's merged metrics config for the Prometheus provider. */
interface MetricsSide {
  allDisabled: boolean;
  byMetric: Map<string, MetricOverride>;
}

/** Telemetry `reportingInterval` (`15s`, `500ms`, `1m`) in milliseconds; null when it does not parse. */
function intervalMs(v: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
  if (m === null) return null;
  const n = Number(m[1]);
  return Math.round(n * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : m[2] === 'm' ? 60000 : 3600000));
}

const isPrometheus = (ctx: TranslateContext, name: string): boolean => {
  const p = ctx.mesh.extensionProviders.find((e) => e.name === name);
  // istiod's built-in `prometheus` provider stands unless the MeshConfig redefines that name.
  return p === undefined ? name === 'prometheus' : p.kind === 'other' && p.type === 'prometheus';
};

/**
 * istiod's mergeMetrics for the Prometheus provider: each side's overrides, or null when the
 * Telemetry resources configure no metrics here (the default reporting stands).
 */
function mergeMetrics(ctx: TranslateContext, telemetries: readonly Resource[]): { client: MetricsSide; server: MetricsSide; intervalMs: number | null; prometheus: boolean } | null {
  const groups = telemetries.map((r) => ({ r, metrics: (r.spec as TelemetrySpec | null)?.metrics ?? [] })).filter((g) => g.metrics.length > 0);
  if (groups.length === 0) return null;
  const defaults = ctx.mesh.telemetry?.defaultMetrics ?? ['prometheus'];
  let inScope: readonly string[] = defaults;
  for (const { metrics } of groups) for (const m of metrics) {
    const names = providerNames(m.providers);
    if (names.length > 0) inScope = names;
  }
  const warned = new Set<string>();
  for (const { r, metrics } of groups) metrics.forEach((m, i) => {
    for (const name of providerNames(m.providers)) {
      if (isPrometheus(ctx, name) || warned.has(name)) continue;
      warned.add(name);
      ctx.warn(r, ['spec', 'metrics', i, 'providers'], `provider ${name} is not applied: only Prometheus metrics are reported`);
    }
  });
  const prometheus = inScope.find((n) => isPrometheus(ctx, n));
  const client: MetricsSide = { allDisabled: false, byMetric: new Map() };
  const server: MetricsSide = { allDisabled: false, byMetric: new Map() };
  let interval: number | null = null;
  if (prometheus === undefined) return { client, server, intervalMs: null, prometheus: false };
  let parent: readonly string[] = defaults;
  for (const { r, metrics } of groups) {
    metrics.forEach((m, i) => {
      let names: readonly string[] = providerNames(m.providers);
      if (names.length === 0) names = parent;
      parent = names;
      if (!names.includes(prometheus)) return;
      if (m.reportingInterval != null) {
        const ms = intervalMs(m.reportingInterval);
        if (ms === null || ms <= 0) ctx.error(r, ['spec', 'metrics', i, 'reportingInterval'], `must be a positive duration (such as 15s), found ${JSON.stringify(m.reportingInterval)}`);
        else interval = ms;
      }
      (m.overrides ?? []).forEach((o, j) => {
        const at = ['spec', 'metrics', i, 'overrides', j];
        const sides = o.match?.mode === 'CLIENT' ? [client] : o.match?.mode === 'SERVER' ? [server] : [client, server];
        if (o.match?.customMetric != null && o.match.customMetric !== '') {
          ctx.warn(r, [...at, 'match', 'customMetric'], `custom metric ${o.match.customMetric} is not applied: only Istio's standard metrics are reported`);
          return;
        }
        const selector = o.match?.metric ?? 'ALL_METRICS';
        const all = selector === 'ALL_METRICS';
        const one = all ? undefined : METRIC_BY_SELECTOR[selector];
        if (!all && one === undefined) {
          ctx.error(r, [...at, 'match', 'metric'], `unknown metric ${selector} (ALL_METRICS, ${Object.keys(METRIC_BY_SELECTOR).join(', ')})`);
          return;
        }
        if (all && o.disabled === true) {
          for (const s of sides) s.allDisabled = true;
          return;
        }
        for (const [tag, t] of Object.entries(o.tagOverrides ?? {})) {
          if ((t?.operation ?? 'UPSERT') !== 'UPSERT') continue;
          const value = t?.value ?? '';
          try {
            compileCel(value);
          } catch (err) {
            ctx.error(r, [...at, 'tagOverrides', tag, 'value'], (err as Error).message);
          }
        }
        for (const s of sides) {
          s.allDisabled = false;
          for (const metric of all ? ISTIO_METRIC_NAMES : [one!]) {
            let mo = s.byMetric.get(metric);
            if (mo === undefined) s.byMetric.set(metric, (mo = { disabled: null, tags: new Map() }));
            if (o.disabled != null) mo.disabled = o.disabled;
            for (const [tag, t] of Object.entries(o.tagOverrides ?? {})) mo.tags.set(tag, t?.operation === 'REMOVE' ? null : (t?.value ?? ''));
          }
        }
      });
    });
  }
  return { client, server, intervalMs: interval, prometheus: true };
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** One side's `istio.stats` config (istiod's generateStatsConfig); null: nothing differs from the default reporting. */
function statsConfig(side: MetricsSide, prometheus: boolean, intervalMs: number | null, inboundOrGateway: boolean): IstioStatsConfig | null {
  const base = { disableHostHeaderFallback: inboundOrGateway, tcpReportingDurationMs: intervalMs };
  if (!prometheus || side.allDisabled) return { ...base, metrics: ISTIO_METRIC_NAMES.map((name) => ({ name, dimensions: {}, tagsToRemove: [], drop: true })) };
  const metrics: IstioMetricConfig[] = [];
  for (const name of [...side.byMetric.keys()].sort(byName)) {
    const mo = side.byMetric.get(name)!;
    const dimensions: Record<string, string> = {};
    const tagsToRemove: string[] = [];
    for (const tag of [...mo.tags.keys()].sort(byName)) {
      const v = mo.tags.get(tag)!;
      if (v === null) tagsToRemove.push(tag);
      else dimensions[tag] = v;
    }
    metrics.push({ name, dimensions, tagsToRemove, drop: mo.disabled === true });
  }
  if (metrics.length === 0 && intervalMs === null) return null;
  return { ...base, metrics };
}

/** The Telemetry API's metrics on each listener: SERVER on sidecar inbound ones, CLIENT on the rest. */
function applyMetrics(ctx: TranslateContext, telemetries: readonly Resource[], listeners: readonly Listener[]): Listener[] {
  const merged = mergeMetrics(ctx, telemetries);
  if (merged === null) return [...listeners];
  const outbound = statsConfig(merged.client, merged.prometheus, merged.intervalMs, false);
  const gateway = statsConfig(merged.client, merged.prometheus, merged.intervalMs, true);
  const inbound = statsConfig(merged.server, merged.prometheus, merged.intervalMs, true);
  return listeners.map((l) => {
    const s = l.direction === 'inbound' ? inbound : l.direction === 'gateway' ? gateway : outbound;
    return s === null ? l : { ...l, istioStats: s };
  });
}
