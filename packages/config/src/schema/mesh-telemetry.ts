/**
 * The telemetry part of Istio's MeshConfig: the tracing providers of `extensionProviders`
 * (`opentelemetry`, `zipkin`), the file access log provider (`envoyFileAccessLog`),
 * `defaultProviders`, `enableTracing` and `defaultConfig.tracing` (`sampling`,
 * `customTags`, `maxPathTagLength`). Telemetry resources name these providers; the translator
 * (translate/telemetry.ts) writes them into each HTTP listener's tracing as istiod does.
 */
import { parseDuration } from './duration.ts';

type Path = readonly (string | number)[];

/** A custom tag as MeshConfig and the Telemetry resource write it: one of literal, environment, header. */
export type IstioCustomTag =
  | { readonly kind: 'literal'; readonly value: string }
  | { readonly kind: 'environment'; readonly name: string; readonly defaultValue: string }
  | { readonly kind: 'header'; readonly name: string; readonly defaultValue: string };

/** A tracing extension provider. `service` is `[<namespace>/]<hostname>` of a registry service. */
export type MeshTracingProvider =
  | {
      readonly name: string;
      readonly kind: 'opentelemetry';
      readonly service: string;
      readonly port: number;
      /** 0: Envoy's default (256). */
      readonly maxTagLength: number;
      /** OTLP/HTTP protobuf when set; else OTLP/gRPC (Istio's default transport). */
      readonly http: { readonly path: string; readonly timeoutMs: number | null; readonly headers: Readonly<Record<string, string>> } | null;
      readonly grpc: { readonly timeoutMs: number | null; readonly initialMetadata: Readonly<Record<string, string>> };
    }
  | {
      readonly name: string;
      readonly kind: 'zipkin';
      readonly service: string;
      readonly port: number;
      readonly maxTagLength: number;
      /** '' : `/api/v2/spans`. */
      readonly path: string;
      /** Istio's `enable64bitTraceId`: new traces get 64-bit ids (default false: 128-bit). */
      readonly enable64bitTraceId: boolean;
    };

/**
 * An `envoyFileAccessLog` provider: where the log goes (`/dev/stdout`) and its text format
 * ('' : Istio's), or its JSON `labels` (key → format string; empty: Istio's JSON format).
 * Neither given: `logFormat` is unset.
 */
export interface MeshFileAccessLogProvider {
  readonly name: string;
  readonly path: string;
  readonly format: string;
  readonly labels?: Readonly<Record<string, unknown>>;
  /** `logFormat` was given. */
  readonly hasLogFormat?: boolean;
}

export interface MeshTelemetry {
  readonly tracingProviders: readonly MeshTracingProvider[];
  readonly accessLogProviders: readonly MeshFileAccessLogProvider[];
  /** `defaultProviders.tracing` (istiod uses the first). */
  readonly defaultTracing: readonly string[];
  /** `defaultProviders.accessLogging`. */
  readonly defaultAccessLogging: readonly string[];
  /** `defaultProviders.metrics`; null: not set (Istio's default, `prometheus`). */
  readonly defaultMetrics: readonly string[] | null;
  /** `enableTracing`; Istio's default true (legacy tracing, with no provider here, traces nothing). */
  readonly enableTracing: boolean;
  /** `defaultConfig.tracing.sampling`, 0–100; null: istiod's default, 1%. */
  readonly sampling: number | null;
  /** `defaultConfig.tracing.customTags`, by tag name. */
  readonly customTags: Readonly<Record<string, IstioCustomTag>>;
  /** `defaultConfig.tracing.maxPathTagLength`; 0: not set. */
  readonly maxPathTagLength: number;
}

export interface MeshTelemetryReport {
  error(path: Path, message: string): void;
  warn(path: Path, message: string): void;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function describe(v: unknown): string {
  return Array.isArray(v) ? 'a list' : isObject(v) ? 'a mapping' : JSON.stringify(v);
}

class Fields {
  readonly at: MeshTelemetryReport;

  constructor(at: MeshTelemetryReport) {
    this.at = at;
  }

  str(o: Record<string, unknown>, key: string, path: Path): string {
    const v = o[key];
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    this.at.error([...path, key], `must be a string, found ${describe(v)}`);
    return '';
  }

  uint(o: Record<string, unknown>, key: string, path: Path, max = 0xffffffff): number {
    const v = o[key];
    if (v === undefined || v === null) return 0;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max) return v;
    this.at.error([...path, key], `must be an integer from 0 to ${max}, found ${describe(v)}`);
    return 0;
  }

  bool(o: Record<string, unknown>, key: string, path: Path, fallback: boolean): boolean {
    const v = o[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'boolean') return v;
    this.at.error([...path, key], `must be true or false, found ${describe(v)}`);
    return fallback;
  }

  duration(o: Record<string, unknown>, key: string, path: Path): number | null {
    const v = o[key];
    if (v === undefined || v === null) return null;
    const ms = typeof v === 'string' ? parseDuration(v) : null;
    if (ms === null || ms < 0) {
      this.at.error([...path, key], `must be a duration such as "10s" or "200ms", found ${describe(v)}`);
      return null;
    }
    return ms;
  }

  strings(o: Record<string, unknown>, key: string, path: Path): string[] {
    const v = o[key];
    if (v === undefined || v === null) return [];
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    this.at.error([...path, key], `must be a list of strings, found ${describe(v)}`);
    return [];
  }

  mapping(o: Record<string, unknown>, key: string, path: Path): Record<string, unknown> | null {
    const v = o[key];
    if (v === undefined || v === null) return null;
    if (isObject(v)) return v;
    this.at.error([...path, key], `must be a mapping, found ${describe(v)}`);
    return null;
  }

  /** Istio's `HttpHeader` list: `{name, value}` (or `envName`, istiod's own environment, which a proxy cannot read). */
  headers(o: Record<string, unknown>, key: string, path: Path): Record<string, string> {
    const v = o[key];
    const out: Record<string, string> = {};
    if (v === undefined || v === null) return out;
    if (!Array.isArray(v)) {
      this.at.error([...path, key], `must be a list, found ${describe(v)}`);
      return out;
    }
    v.forEach((h, i) => {
      const hp = [...path, key, i];
      if (!isObject(h)) return this.at.error(hp, 'must be a mapping');
      const name = this.str(h, 'name', hp);
      if (name === '') return this.at.error([...hp, 'name'], 'a header needs a name');
      if (h['envName'] !== undefined && h['value'] === undefined) return this.at.warn([...hp, 'envName'], `header ${name}: ignored, envName is read from istiod's environment`);
      out[name.toLowerCase()] = this.str(h, 'value', hp);
    });
    return out;
  }
}

/** A custom tag (`literal`, `environment` or `header`); null with an error when it is none of them. */
export function readCustomTag(f: { str: Fields['str'] }, at: MeshTelemetryReport, raw: unknown, path: Path): IstioCustomTag | null {
  if (!isObject(raw)) {
    at.error(path, `must be a mapping, found ${describe(raw)}`);
    return null;
  }
  const lit = raw['literal'];
  if (isObject(lit)) return { kind: 'literal', value: f.str(lit, 'value', [...path, 'literal']) };
  const env = raw['environment'];
  if (isObject(env)) return { kind: 'environment', name: f.str(env, 'name', [...path, 'environment']), defaultValue: f.str(env, 'defaultValue', [...path, 'environment']) };
  const h = raw['header'];
  if (isObject(h)) return { kind: 'header', name: f.str(h, 'name', [...path, 'header']), defaultValue: f.str(h, 'defaultValue', [...path, 'header']) };
  at.error(path, 'a custom tag is one of literal, environment, header');
  return null;
}

const TRACING_KINDS = new Set(['opentelemetry', 'zipkin']);

/** Reads the telemetry fields of a MeshConfig mapping; null when it sets none of them. */
export function readMeshTelemetry(raw: Record<string, unknown>, at: MeshTelemetryReport): MeshTelemetry | null {
  const f = new Fields(at);
  const tracingProviders: MeshTracingProvider[] = [];
  const accessLogProviders: MeshFileAccessLogProvider[] = [];
  const list = raw['extensionProviders'];
  if (Array.isArray(list)) {
    list.forEach((p, i) => {
      if (!isObject(p)) return;
      const name = typeof p['name'] === 'string' ? p['name'] : '';
      const base = ['extensionProviders', i];
      for (const kind of Object.keys(p)) {
        if (kind === 'envoyFileAccessLog') {
          const a = f.mapping(p, kind, base) ?? {};
          const ap = [...base, kind];
          const fmt = f.mapping(a, 'logFormat', ap);
          const labels = fmt === null || fmt['labels'] === undefined ? null : f.mapping(fmt, 'labels', [...ap, 'logFormat']);
          accessLogProviders.push({
            name,
            path: f.str(a, 'path', ap),
            format: fmt === null ? '' : f.str(fmt, 'text', [...ap, 'logFormat']),
            ...(labels === null ? {} : { labels }),
            ...(fmt === null ? {} : { hasLogFormat: true }),
          });
        }
        if (!TRACING_KINDS.has(kind)) continue;
        const pp = [...base, kind];
        const c = f.mapping(p, kind, base);
        if (c === null) return;
        const service = f.str(c, 'service', pp);
        const port = f.uint(c, 'port', pp, 65535);
        const maxTagLength = f.uint(c, 'maxTagLength', pp);
        if (kind === 'zipkin') {
          if (f.str(c, 'traceContextOption', pp) === 'USE_B3_WITH_W3C_PROPAGATION') at.warn([...pp, 'traceContextOption'], 'B3 headers only are injected; incoming W3C traceparent is still read');
          tracingProviders.push({ name, kind, service, port, maxTagLength, path: f.str(c, 'path', pp), enable64bitTraceId: f.bool(c, 'enable64bitTraceId', pp, false) });
          continue;
        }
        for (const ignored of ['resourceDetectors', 'dynatraceSampler', 'serviceAttributeEnrichment']) {
          if (c[ignored] !== undefined) at.warn([...pp, ignored], 'ignored: spans carry service.name only and are sampled by the connection manager');
        }
        const http = f.mapping(c, 'http', pp);
        const grpc = f.mapping(c, 'grpc', pp) ?? {};
        tracingProviders.push({
          name,
          kind: 'opentelemetry',
          service,
          port,
          maxTagLength,
          http: http === null ? null : { path: f.str(http, 'path', [...pp, 'http']), timeoutMs: f.duration(http, 'timeout', [...pp, 'http']), headers: f.headers(http, 'headers', [...pp, 'http']) },
          grpc: { timeoutMs: f.duration(grpc, 'timeout', [...pp, 'grpc']), initialMetadata: f.headers(grpc, 'initialMetadata', [...pp, 'grpc']) },
        });
      }
    });
  }
  const defaults = f.mapping(raw, 'defaultProviders', []) ?? {};
  const defaultTracing = f.strings(defaults, 'tracing', ['defaultProviders']);
  const defaultAccessLogging = f.strings(defaults, 'accessLogging', ['defaultProviders']);
  const defaultMetrics = defaults['metrics'] === undefined ? null : f.strings(defaults, 'metrics', ['defaultProviders']);
  const enableTracing = f.bool(raw, 'enableTracing', [], true);
  // A defaultConfig that is not a mapping is mesh-config.ts's error, not reported twice.
  const dc = isObject(raw['defaultConfig']) ? raw['defaultConfig'] : {};
  const tr = f.mapping(dc, 'tracing', ['defaultConfig']) ?? {};
  const tp = ['defaultConfig', 'tracing'];
  let sampling: number | null = null;
  const s = tr['sampling'];
  if (s !== undefined && s !== null) {
    if (typeof s === 'number' && s >= 0) sampling = s;
    else at.error([...tp, 'sampling'], `must be a percentage, found ${describe(s)}`);
  }
  const customTags: Record<string, IstioCustomTag> = {};
  const tags = f.mapping(tr, 'customTags', tp);
  if (tags !== null) {
    for (const [tag, v] of Object.entries(tags)) {
      const got = readCustomTag(f, at, v, [...tp, 'customTags', tag]);
      if (got !== null) customTags[tag] = got;
    }
  }
  const maxPathTagLength = f.uint(tr, 'maxPathTagLength', tp);
  if (tracingProviders.length === 0 && accessLogProviders.length === 0 && defaultTracing.length === 0 && defaultAccessLogging.length === 0 && defaultMetrics === null && raw['enableTracing'] === undefined && Object.keys(tr).length === 0) return null;
  return { tracingProviders, accessLogProviders, defaultTracing, defaultAccessLogging, defaultMetrics, enableTracing, sampling, customTags, maxPathTagLength };
}
