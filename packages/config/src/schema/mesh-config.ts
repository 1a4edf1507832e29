/**
 * Istio's MeshConfig, as the `mesh` key of the `istio` ConfigMap holds it (YAML, the proto's
 * JSON names), read into the part Remora uses: `rootNamespace`, `trustDomain`,
 * `trustDomainAliases`, the external authorizers of `extensionProviders`
 * (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`), `outboundTrafficPolicy`,
 * `protocolDetectionTimeout`, `enableAutoMtls`, `defaultHttpRetryPolicy`,
 * `localityLbSetting`, the access log fields and part of `defaultConfig`, each with Istio's
 * default. Other fields are accepted and not read; other provider kinds are kept by name
 * only (a CUSTOM policy naming one is refused by the authz builder, as istiod refuses it).
 *
 * A field of the wrong type is an error naming the file and the field; what istiod's builder
 * checks itself (port range, statusOnError, pathPrefix, wildcards) is checked there, where a
 * bad provider turns the CUSTOM policies that use it into deny rules.
 */
import { LineCounter, parseDocument, type Document } from 'yaml';
import type { ConfigIssue } from '../errors.ts';
import { parseDuration } from './duration.ts';
import { readMeshTelemetry, type MeshTelemetry } from './mesh-telemetry.ts';
import { checkJsonAccessLogFormat, parseAccessLogFormat } from '../access-log-format.ts';

/** `includeRequestBodyInCheck`: Envoy's ext_authz `with_request_body`. */
export interface ExtAuthzRequestBody {
  readonly maxRequestBytes: number;
  readonly allowPartialMessage: boolean;
  readonly packAsBytes: boolean;
}

/** What the HTTP and gRPC providers share. */
interface ExtAuthzProviderBase {
  /** `[<namespace>/]<hostname>` of a service in the registry. */
  readonly service: string;
  readonly port: number;
  /** Milliseconds; null: istiod's default (600 s). */
  readonly timeoutMs: number | null;
  readonly failOpen: boolean;
  /** The HTTP status as written (istiod parses it); '' when absent. */
  readonly statusOnError: string;
  readonly includeRequestBodyInCheck: ExtAuthzRequestBody | null;
}

export interface ExtAuthzHttpProvider extends ExtAuthzProviderBase {
  readonly pathPrefix: string;
  readonly includeRequestHeadersInCheck: readonly string[];
  /** Deprecated in Istio; used only when `includeRequestHeadersInCheck` is empty. */
  readonly includeHeadersInCheck: readonly string[];
  readonly includeAdditionalHeadersInCheck: Readonly<Record<string, string>>;
  readonly headersToUpstreamOnAllow: readonly string[];
  readonly headersToDownstreamOnDeny: readonly string[];
  readonly headersToDownstreamOnAllow: readonly string[];
}

export type ExtAuthzGrpcProvider = ExtAuthzProviderBase;

/** One `extensionProviders` entry. */
export type ExtensionProvider =
  | { readonly name: string; readonly kind: 'envoyExtAuthzHttp'; readonly http: ExtAuthzHttpProvider }
  | { readonly name: string; readonly kind: 'envoyExtAuthzGrpc'; readonly grpc: ExtAuthzGrpcProvider }
  /** A provider of a kind Remora does not read (tracing, logging, …): its key, or '' when none. */
  | { readonly name: string; readonly kind: 'other'; readonly type: string };

/** The MeshConfig fields Remora reads. */
export interface MeshConfig {
  /** null: not set (the proxy's `--root-namespace`, default istio-system, stands). */
  readonly rootNamespace: string | null;
  /** null: not set (the proxy's `--trust-domain`, default cluster.local, stands). */
  readonly trustDomain: string | null;
  /**
   * `trustDomainAliases`: other trust domains that count as this mesh's. Authorization
   * principals of any of them match peers of all (istiod's trust domain bundle). Absent: none.
   */
  readonly trustDomainAliases?: readonly string[];
  readonly extensionProviders: readonly ExtensionProvider[];
  /**
   * `outboundTrafficPolicy.mode`: what a sidecar does with traffic for destinations the
   * registry does not know (a Sidecar resource's own policy overrides it). Absent: Istio's
   * default, ALLOW_ANY.
   */
  readonly outboundTrafficPolicy?: OutboundTrafficMode;
  /**
   * `protocolDetectionTimeout` in milliseconds: how long a sidecar waits for a client's first
   * bytes on a port of unknown protocol before treating the connection as TCP. Absent: not
   * set (Istio's default is 0s, no timeout; the translator then uses 5 s, see
   * `PROTOCOL_DETECTION_TIMEOUT_MS`).
   */
  readonly protocolDetectionTimeoutMs?: number;
  /** `enableAutoMtls`: clients use Istio mTLS to endpoints labelled for it without a DestinationRule. Absent: Istio's default, true. */
  readonly enableAutoMtls?: boolean;
  /** `defaultHttpRetryPolicy`: what a route without `retries` gets instead of Istio's default retries. */
  readonly defaultHttpRetryPolicy?: MeshHttpRetry;
  /** `localityLbSetting`: the mesh-wide locality load balancing a DestinationRule without one gets. */
  readonly localityLbSetting?: MeshLocalityLbSetting;
  /** `accessLogFile`, `accessLogEncoding`, `accessLogFormat` (see `MeshAccessLog`). */
  readonly accessLog?: MeshAccessLog;
  /** `defaultConfig`: the proxy settings Remora reads (see `MeshProxyDefaults`). */
  readonly defaultConfig?: MeshProxyDefaults;
  /** Tracing and access log providers, `defaultProviders`, `enableTracing`, `defaultConfig.tracing` (see mesh-telemetry.ts). */
  readonly telemetry?: MeshTelemetry;
}

/** An HTTPRetry as a VirtualService writes it. */
export interface MeshHttpRetry {
  readonly attempts?: number;
  readonly perTryTimeout?: string;
  readonly retryOn?: string;
  readonly retryRemoteLocalities?: boolean;
}

/** A DestinationRule's `localityLbSetting` shape. */
export interface MeshLocalityLbSetting {
  readonly enabled?: boolean;
  readonly distribute?: { from?: string; to?: Record<string, number> }[];
  readonly failover?: { from?: string; to?: string }[];
  readonly failoverPriority?: string[];
}

/**
 * Istio's mesh access log: `accessLogFile` (empty: none, Istio's default; `/dev/stdout`),
 * `accessLogEncoding` TEXT or JSON (default TEXT), `accessLogFormat` (Envoy command
 * operators; empty: Istio's default format).
 */
export interface MeshAccessLog {
  readonly file: string;
  readonly encoding: 'TEXT' | 'JSON';
  readonly format: string;
}

/**
 * `defaultConfig` (ProxyConfig) fields a data plane applies: worker `concurrency` (Istio's
 * default 2; 0 means all cores), `drainDuration` (45s), `terminationDrainDuration` (5s) and
 * `holdApplicationUntilProxyStarts` (false).
 */
export interface MeshProxyDefaults {
  readonly concurrency: number;
  readonly drainDurationMs: number;
  readonly terminationDrainDurationMs: number;
  readonly holdApplicationUntilProxyStarts: boolean;
}

/** Istio's ProxyConfig defaults (pkg/config/mesh.DefaultProxyConfig). */
export const DEFAULT_PROXY_DEFAULTS: MeshProxyDefaults = { concurrency: 2, drainDurationMs: 45_000, terminationDrainDurationMs: 5_000, holdApplicationUntilProxyStarts: false };

/** Istio's outbound traffic policies: pass unknown destinations through, or close them. */
export type OutboundTrafficMode = 'ALLOW_ANY' | 'REGISTRY_ONLY';

/** A mesh without a MeshConfig file: Istio's defaults, no extension providers. */
export const DEFAULT_MESH_CONFIG: MeshConfig = { rootNamespace: null, trustDomain: null, extensionProviders: [] };

export interface MeshConfigParseResult {
  /** null when any error was found. */
  readonly mesh: MeshConfig | null;
  readonly issues: readonly ConfigIssue[];
}

const PROVIDER_KINDS = new Set(['envoyExtAuthzHttp', 'envoyExtAuthzGrpc']);

/** Envoy's retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on), as Istio's validation accepts them. */
const RETRY_ON = new Set([
  '5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'envoy-ratelimited', 'retriable-4xx', 'refused-stream',
  'retriable-status-codes', 'retriable-headers', 'http3-post-connect-failure',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
]);

/**
 * Reads a MeshConfig from YAML text: the MeshConfig itself, or an `istio` ConfigMap whose
 * `data.mesh` holds it. Problems name `file` and the field path.
 */
export function parseMeshConfig(text: string, file: string): MeshConfigParseResult {
  const reader = new MeshReader(file);
  const lines = new LineCounter();
  let doc: Document = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length > 0) {
    reader.error([], `not valid YAML: ${doc.errors[0]!.message}`, 0);
    return { mesh: null, issues: reader.issues };
  }
  let root: unknown = doc.toJS();
  let base: (string | number)[] = [];
  let docLines = lines;
  const cm = root as { kind?: unknown; data?: { mesh?: unknown } } | null;
  if (cm !== null && typeof cm === 'object' && cm.kind === 'ConfigMap') {
    if (typeof cm.data?.mesh !== 'string') {
      reader.error(['data', 'mesh'], 'a ConfigMap given as MeshConfig must hold it as the string `data.mesh`', 0);
      return { mesh: null, issues: reader.issues };
    }
    docLines = new LineCounter();
    doc = parseDocument(cm.data.mesh, { lineCounter: docLines });
    if (doc.errors.length > 0) {
      reader.error(['data', 'mesh'], `not valid YAML: ${doc.errors[0]!.message}`, 0);
      return { mesh: null, issues: reader.issues };
    }
    root = doc.toJS();
    base = ['data', 'mesh'];
  }
  reader.locate(doc, docLines, base);
  const mesh = reader.mesh(root ?? {});
  return { mesh: reader.issues.some((i) => i.severity === 'error') ? null : mesh, issues: reader.issues };
}

/** The pod annotation that overrides the proxy settings (a ProxyConfig as YAML or JSON). */
export const PROXY_CONFIG_ANNOTATION = 'proxy.istio.io/config';

export interface ProxyConfigAnnotationResult {
  /** The fields the annotation sets; null when it has errors. */
  readonly settings: Partial<MeshProxyDefaults> | null;
  readonly issues: readonly ConfigIssue[];
}

/**
 * Reads a pod's `proxy.istio.io/config` annotation: a ProxyConfig in YAML (or JSON), whose
 * fields the data plane applies are merged over every other source, as istiod merges it
 * last. Problems name `source` (the annotations file, or the environment variable) and
 * the field under the annotation.
 */
export function parseProxyConfigAnnotation(text: string, source: string): ProxyConfigAnnotationResult {
  const reader = new MeshReader(source, 'ProxyConfig', PROXY_CONFIG_ANNOTATION);
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    reader.error([], `not valid YAML: ${doc.errors[0]!.message}`, 0);
    return { settings: null, issues: reader.issues };
  }
  const root: unknown = doc.toJS() ?? {};
  if (!isObject(root)) {
    reader.error([], 'must be a ProxyConfig mapping', 0);
    return { settings: null, issues: reader.issues };
  }
  const settings = reader.proxyFields(root, []);
  return { settings: reader.issues.some((i) => i.severity === 'error') ? null : settings, issues: reader.issues };
}

type Path = readonly (string | number)[];

class MeshReader {
  readonly issues: ConfigIssue[] = [];
  readonly #file: string;
  readonly #kind: string;
  readonly #resource: string;
  #doc: Document | null = null;
  #lines: LineCounter | null = null;
  #base: Path = [];

  constructor(file: string, kind = 'MeshConfig', resource = 'mesh') {
    this.#file = file;
    this.#kind = kind;
    this.#resource = resource;
  }

  locate(doc: Document, lines: LineCounter, base: Path): void {
    this.#doc = doc;
    this.#lines = lines;
    this.#base = base;
  }

  #line(path: Path): number {
    // A field inside a ConfigMap's `data.mesh` string has no line of its own in the file.
    if (this.#doc === null || this.#base.length > 0) return 0;
    for (let p = path; ; p = p.slice(0, -1)) {
      const node = p.length === 0 ? this.#doc.contents : this.#doc.getIn(p, true);
      const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
      if (range !== undefined) return this.#lines!.linePos(range[0]).line;
      if (p.length === 0) return 0;
    }
  }

  error(path: Path, message: string, line?: number): void {
    this.issues.push({ severity: 'error', file: this.#file, line: line ?? this.#line(path), kind: this.#kind, resource: this.#resource, path: fieldPath([...this.#base, ...path]), message });
  }

  warn(path: Path, message: string): void {
    this.issues.push({ severity: 'warning', file: this.#file, line: this.#line(path), kind: this.#kind, resource: this.#resource, path: fieldPath([...this.#base, ...path]), message });
  }

  mesh(raw: unknown): MeshConfig {
    if (!isObject(raw)) {
      this.error([], 'MeshConfig must be a mapping');
      return DEFAULT_MESH_CONFIG;
    }
    const rootNamespace = this.#string(raw, 'rootNamespace', []);
    const trustDomain = this.#string(raw, 'trustDomain', []);
    const aliases = this.#strings(raw, 'trustDomainAliases', []);
    const providers: ExtensionProvider[] = [];
    const list = raw['extensionProviders'];
    if (list !== undefined && list !== null) {
      if (!Array.isArray(list)) this.error(['extensionProviders'], 'must be a list');
      else list.forEach((p, i) => {
        const got = this.#provider(p, ['extensionProviders', i]);
        if (got !== null) providers.push(got);
      });
    }
    const outbound = this.#outboundTrafficPolicy(raw);
    const detection = this.#duration(raw, 'protocolDetectionTimeout', []);
    const autoMtls = raw['enableAutoMtls'] === undefined || raw['enableAutoMtls'] === null ? null : this.#bool(raw, 'enableAutoMtls', []);
    const retry = this.#retry(raw);
    const locality = this.#locality(raw);
    const accessLog = this.#accessLog(raw);
    const defaults = this.#defaultConfig(raw);
    const telemetry = readMeshTelemetry(raw, { error: (p, m) => this.error(p, m), warn: (p, m) => this.warn(p, m) });
    return {
      rootNamespace: rootNamespace === '' ? null : rootNamespace,
      trustDomain: trustDomain === '' ? null : trustDomain,
      ...(aliases.length === 0 ? {} : { trustDomainAliases: aliases }),
      extensionProviders: providers,
      ...(outbound === null ? {} : { outboundTrafficPolicy: outbound }),
      ...(detection === null ? {} : { protocolDetectionTimeoutMs: detection }),
      ...(autoMtls === null ? {} : { enableAutoMtls: autoMtls }),
      ...(retry === null ? {} : { defaultHttpRetryPolicy: retry }),
      ...(locality === null ? {} : { localityLbSetting: locality }),
      ...(accessLog === null ? {} : { accessLog }),
      ...(defaults === null ? {} : { defaultConfig: defaults }),
      ...(telemetry === null ? {} : { telemetry }),
    };
  }

  #mapping(raw: Record<string, unknown>, key: string, at: Path): Record<string, unknown> | null {
    const v = raw[key];
    if (v === undefined || v === null) return null;
    if (isObject(v)) return v;
    this.error([...at, key], `must be a mapping, found ${describe(v)}`);
    return null;
  }

  /** `defaultHttpRetryPolicy`: an HTTPRetry (attempts ≥ 0, a perTryTimeout of at least 1ms, retryOn a list of conditions). */
  #retry(raw: Record<string, unknown>): MeshHttpRetry | null {
    const r = this.#mapping(raw, 'defaultHttpRetryPolicy', []);
    if (r === null) return null;
    const at = ['defaultHttpRetryPolicy'];
    const out: { attempts?: number; perTryTimeout?: string; retryOn?: string; retryRemoteLocalities?: boolean } = {};
    if (r['attempts'] !== undefined) {
      const a = r['attempts'];
      if (typeof a === 'number' && Number.isInteger(a) && a >= 0) out.attempts = a;
      else this.error([...at, 'attempts'], `must be a non-negative integer, found ${describe(a)}`);
    }
    if (r['perTryTimeout'] !== undefined) {
      const ms = this.#duration(r, 'perTryTimeout', at);
      if (ms !== null && ms < 1) this.error([...at, 'perTryTimeout'], 'must be at least 1ms');
      else if (ms !== null) out.perTryTimeout = r['perTryTimeout'] as string;
    }
    const on = this.#string(r, 'retryOn', at);
    if (on !== '') {
      const bad = on.split(',').map((x) => x.trim()).find((x) => !RETRY_ON.has(x) && !/^\d{3}$/.test(x));
      if (bad !== undefined) this.error([...at, 'retryOn'], `${JSON.stringify(bad)} is not a retry condition (Envoy's x-envoy-retry-on, x-envoy-retry-grpc-on, or an HTTP status)`);
      else out.retryOn = on;
    }
    if (r['retryRemoteLocalities'] !== undefined) out.retryRemoteLocalities = this.#bool(r, 'retryRemoteLocalities', at);
    return out;
  }

  /** `localityLbSetting`: enabled, distribute (weights per source summing to 100), failover, failoverPriority. */
  #locality(raw: Record<string, unknown>): MeshLocalityLbSetting | null {
    const l = this.#mapping(raw, 'localityLbSetting', []);
    if (l === null) return null;
    const at = ['localityLbSetting'];
    const out: { enabled?: boolean; distribute?: { from?: string; to?: Record<string, number> }[]; failover?: { from?: string; to?: string }[]; failoverPriority?: string[] } = {};
    if (l['enabled'] !== undefined && l['enabled'] !== null) out.enabled = this.#bool(l, 'enabled', at);
    const dist = l['distribute'];
    if (dist !== undefined && dist !== null) {
      if (!Array.isArray(dist)) this.error([...at, 'distribute'], 'must be a list');
      else {
        out.distribute = [];
        dist.forEach((d, i) => {
          const dat = [...at, 'distribute', i];
          if (!isObject(d)) return this.error(dat, 'must be a mapping');
          const to = d['to'];
          if (!isObject(to) || !Object.values(to).every((w) => typeof w === 'number' && Number.isInteger(w) && w >= 0)) return this.error([...dat, 'to'], 'must map localities to integer weights');
          const sum = Object.values(to as Record<string, number>).reduce((a, b) => a + b, 0);
          if (sum !== 100) return this.error([...dat, 'to'], `weights must total 100, found ${sum}`);
          out.distribute!.push({ from: this.#string(d, 'from', dat), to: to as Record<string, number> });
        });
      }
    }
    const fo = l['failover'];
    if (fo !== undefined && fo !== null) {
      if (!Array.isArray(fo)) this.error([...at, 'failover'], 'must be a list');
      else {
        out.failover = [];
        fo.forEach((f, i) => {
          const fat = [...at, 'failover', i];
          if (!isObject(f)) return this.error(fat, 'must be a mapping');
          const from = this.#string(f, 'from', fat);
          const to = this.#string(f, 'to', fat);
          if (from !== '' && from === to) return this.error(fat, `failover from and to must differ, both are ${JSON.stringify(from)}`);
          out.failover!.push({ from, to });
        });
      }
    }
    const prio = this.#strings(l, 'failoverPriority', at);
    if (prio.length > 0) out.failoverPriority = prio;
    if (out.distribute !== undefined && out.distribute.length > 0 && out.failover !== undefined && out.failover.length > 0) {
      this.error(at, 'distribute and failover cannot both be set');
    }
    return out;
  }

  /** `accessLogFile`, `accessLogEncoding`, `accessLogFormat`. */
  #accessLog(raw: Record<string, unknown>): MeshAccessLog | null {
    if (raw['accessLogFile'] === undefined && raw['accessLogEncoding'] === undefined && raw['accessLogFormat'] === undefined) return null;
    const file = this.#string(raw, 'accessLogFile', []);
    const encoding = this.#string(raw, 'accessLogEncoding', []);
    const format = this.#string(raw, 'accessLogFormat', []);
    if (encoding !== '' && encoding !== 'TEXT' && encoding !== 'JSON') {
      this.error(['accessLogEncoding'], `must be TEXT or JSON, found ${JSON.stringify(encoding)}`);
      return null;
    }
    // istiod writes the format into Envoy's file logger: an operator Envoy would refuse is an error here.
    if (format !== '') {
      try {
        if (encoding === 'JSON') {
          let parsed: unknown;
          try {
            parsed = JSON.parse(format);
          } catch (err) {
            throw new Error(`with accessLogEncoding JSON, must be a JSON object of keys to format strings: ${(err as Error).message}`);
          }
          if (!isObject(parsed)) throw new Error('with accessLogEncoding JSON, must be a JSON object of keys to format strings');
          checkJsonAccessLogFormat(parsed);
        } else parseAccessLogFormat(format);
      } catch (err) {
        this.error(['accessLogFormat'], (err as Error).message);
        return null;
      }
    }
    return { file, encoding: encoding === 'JSON' ? 'JSON' : 'TEXT', format };
  }

  /** `defaultConfig`: the ProxyConfig fields a data plane applies, Istio's defaults for the rest. */
  #defaultConfig(raw: Record<string, unknown>): MeshProxyDefaults | null {
    const d = this.#mapping(raw, 'defaultConfig', []);
    if (d === null) return null;
    return { ...DEFAULT_PROXY_DEFAULTS, ...this.proxyFields(d, ['defaultConfig']) };
  }

  /**
   * The ProxyConfig fields a data plane applies, only those set (`defaultConfig`, or the
   * `proxy.istio.io/config` annotation). `concurrency` is the proxy's worker count at start
   * (0: one per core), as Istio's agent passes it to Envoy's `--concurrency`.
   */
  proxyFields(d: Record<string, unknown>, at: Path): Partial<MeshProxyDefaults> {
    const out: { -readonly [K in keyof MeshProxyDefaults]?: MeshProxyDefaults[K] } = {};
    if (d['concurrency'] !== undefined && d['concurrency'] !== null) {
      const c = d['concurrency'];
      if (typeof c === 'number' && Number.isInteger(c) && c >= 0) {
        out.concurrency = c;
      } else this.error([...at, 'concurrency'], `must be a non-negative integer (0: all cores), found ${describe(c)}`);
    }
    const drain = this.#duration(d, 'drainDuration', at);
    if (drain !== null && drain < 1_000) this.error([...at, 'drainDuration'], 'must be at least 1s');
    if (drain !== null) out.drainDurationMs = drain;
    const termination = this.#duration(d, 'terminationDrainDuration', at);
    if (termination !== null) out.terminationDrainDurationMs = termination;
    if (d['holdApplicationUntilProxyStarts'] !== undefined && d['holdApplicationUntilProxyStarts'] !== null) {
      out.holdApplicationUntilProxyStarts = this.#bool(d, 'holdApplicationUntilProxyStarts', at);
    }
    return out;
  }

  #outboundTrafficPolicy(raw: Record<string, unknown>): OutboundTrafficMode | null {
    const p = raw['outboundTrafficPolicy'];
    if (p === undefined || p === null) return null;
    if (!isObject(p)) {
      this.error(['outboundTrafficPolicy'], 'must be a mapping');
      return null;
    }
    const mode = this.#string(p, 'mode', ['outboundTrafficPolicy']);
    if (mode === '') return null;
    if (mode === 'ALLOW_ANY' || mode === 'REGISTRY_ONLY') return mode;
    if (mode === 'ALLOW_ANY_DYNAMIC_DNS') {
      this.warn(['outboundTrafficPolicy', 'mode'], 'ALLOW_ANY_DYNAMIC_DNS is not supported; ALLOW_ANY is used');
      return 'ALLOW_ANY';
    }
    this.error(['outboundTrafficPolicy', 'mode'], `must be ALLOW_ANY or REGISTRY_ONLY, found ${describe(mode)}`);
    return null;
  }

  #provider(raw: unknown, at: Path): ExtensionProvider | null {
    if (!isObject(raw)) {
      this.error(at, 'an extension provider must be a mapping');
      return null;
    }
    const name = this.#string(raw, 'name', at);
    const kinds = Object.keys(raw).filter((k) => k !== 'name');
    if (kinds.length > 1) {
      this.error(at, `an extension provider is one kind, found ${kinds.join(', ')}`);
      return null;
    }
    const kind = kinds[0] ?? '';
    if (!PROVIDER_KINDS.has(kind)) return { name, kind: 'other', type: kind };
    const p = raw[kind];
    const pat = [...at, kind];
    if (!isObject(p)) {
      this.error(pat, 'must be a mapping');
      return null;
    }
    const base: ExtAuthzProviderBase = {
      service: this.#string(p, 'service', pat),
      port: this.#uint(p, 'port', pat),
      timeoutMs: this.#duration(p, 'timeout', pat),
      failOpen: this.#bool(p, 'failOpen', pat),
      statusOnError: this.#string(p, 'statusOnError', pat),
      includeRequestBodyInCheck: this.#body(p, pat),
    };
    if (kind === 'envoyExtAuthzGrpc') return { name, kind, grpc: base };
    const http: ExtAuthzHttpProvider = {
      ...base,
      pathPrefix: this.#string(p, 'pathPrefix', pat),
      includeRequestHeadersInCheck: this.#strings(p, 'includeRequestHeadersInCheck', pat),
      includeHeadersInCheck: this.#strings(p, 'includeHeadersInCheck', pat),
      includeAdditionalHeadersInCheck: this.#stringMap(p, 'includeAdditionalHeadersInCheck', pat),
      headersToUpstreamOnAllow: this.#strings(p, 'headersToUpstreamOnAllow', pat),
      headersToDownstreamOnDeny: this.#strings(p, 'headersToDownstreamOnDeny', pat),
      headersToDownstreamOnAllow: this.#strings(p, 'headersToDownstreamOnAllow', pat),
    };
    return { name, kind: 'envoyExtAuthzHttp', http };
  }

  #body(p: Record<string, unknown>, at: Path): ExtAuthzRequestBody | null {
    const v = p['includeRequestBodyInCheck'];
    if (v === undefined || v === null) return null;
    const bat = [...at, 'includeRequestBodyInCheck'];
    if (!isObject(v)) {
      this.error(bat, 'must be a mapping');
      return null;
    }
    const max = this.#uint(v, 'maxRequestBytes', bat);
    // Envoy's with_request_body.max_request_bytes must be greater than 0: istiod would write a config Envoy refuses.
    if (max === 0) this.error([...bat, 'maxRequestBytes'], 'must be greater than 0: how much of the body the check carries');
    return { maxRequestBytes: max, allowPartialMessage: this.#bool(v, 'allowPartialMessage', bat), packAsBytes: this.#bool(v, 'packAsBytes', bat) };
  }

  #string(o: Record<string, unknown>, key: string, at: Path): string {
    const v = o[key];
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    // The proto's JSON reading takes a number for a string field only as a string.
    if (key === 'statusOnError' && typeof v === 'number') return String(v);
    this.error([...at, key], `must be a string, found ${describe(v)}`);
    return '';
  }

  #uint(o: Record<string, unknown>, key: string, at: Path): number {
    const v = o[key];
    if (v === undefined || v === null) return 0;
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff) return n;
    this.error([...at, key], `must be an unsigned integer, found ${describe(v)}`);
    return 0;
  }

  #bool(o: Record<string, unknown>, key: string, at: Path): boolean {
    const v = o[key];
    if (v === undefined || v === null) return false;
    if (typeof v === 'boolean') return v;
    this.error([...at, key], `must be true or false, found ${describe(v)}`);
    return false;
  }

  #duration(o: Record<string, unknown>, key: string, at: Path): number | null {
    const v = o[key];
    if (v === undefined || v === null) return null;
    const ms = typeof v === 'string' ? parseDuration(v) : null;
    if (ms === null || ms < 0) {
      this.error([...at, key], `must be a duration such as "10s" or "200ms", found ${describe(v)}`);
      return null;
    }
    return ms;
  }

  #strings(o: Record<string, unknown>, key: string, at: Path): string[] {
    const v = o[key];
    if (v === undefined || v === null) return [];
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    this.error([...at, key], `must be a list of strings, found ${describe(v)}`);
    return [];
  }

  #stringMap(o: Record<string, unknown>, key: string, at: Path): Record<string, string> {
    const v = o[key];
    if (v === undefined || v === null) return {};
    if (isObject(v) && Object.values(v).every((x) => typeof x === 'string')) return v as Record<string, string>;
    this.error([...at, key], `must be a map of strings to strings, found ${describe(v)}`);
    return {};
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (isObject(v)) return 'a mapping';
  return JSON.stringify(v);
}

function fieldPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}
