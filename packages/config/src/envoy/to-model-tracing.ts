/**
 * Reads an HTTP connection manager's `tracing` (Envoy's v3 JSON, as istiod writes it) into
 * the model's `HttpTracing`: the provider (`envoy.tracers.opentelemetry` or
 * `envoy.tracers.zipkin`) with its collector cluster, the three sampling percentages, the
 * custom tags and `spawn_upstream_span`. A provider Remora cannot export to is an error (the
 * listener is refused, as Envoy refuses a tracer it was not built with); knobs that tune
 * what Remora does not have are warnings.
 */
import type { HttpTracing, TracingCustomTag, TracingProvider } from '../model/listener.ts';
import { durationJsonMs } from '../model/envoy-values.ts';
import { joinPath } from './import-context.ts';

type Obj = Record<string, unknown>;

/** Where problems go: the listener's report. */
export interface TracingReport {
  error(path: string, message: string): void;
  warn(path: string, message: string): void;
}

const T = 'type.googleapis.com/';
export const OTEL_TRACER_TYPE = `${T}envoy.config.trace.v3.OpenTelemetryConfig`;
export const ZIPKIN_TRACER_TYPE = `${T}envoy.config.trace.v3.ZipkinConfig`;
/** Envoy's default `max_path_tag_length`. */
export const DEFAULT_MAX_PATH_TAG_LENGTH = 256;

function obj(v: unknown): Obj | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : null;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function fields(at: TracingReport, path: string, o: Obj, read: readonly string[], warn: Readonly<Record<string, string>> = {}): void {
  for (const key of Object.keys(o)) {
    if (read.includes(key)) continue;
    const reason = warn[key];
    if (reason !== undefined) at.warn(joinPath(path, key), `ignored: ${reason}`);
    else at.error(joinPath(path, key), 'not supported');
  }
}

/** A `Percent` (`{value: 12.5}`), 0–100; `fallback` when absent. */
function percent(v: unknown, path: string, fallback: number, at: TracingReport): number {
  const o = obj(v);
  if (o === null) return fallback;
  const n = o.value === undefined ? 0 : o.value;
  if (typeof n !== 'number' || !(n >= 0 && n <= 100)) {
    at.error(joinPath(path, 'value'), `must be a percentage from 0 to 100, found ${JSON.stringify(n)}`);
    return fallback;
  }
  return n;
}

function timeout(v: unknown, path: string, at: TracingReport): number | null {
  if (v === undefined) return null;
  try {
    return durationJsonMs(v, path);
  } catch (err) {
    at.error(path, (err as Error).message);
    return null;
  }
}

/** `http://host:port/path` of an HttpUri: the authority and path (Envoy sends to the cluster, with that Host). */
function splitUri(uri: string): { authority: string; path: string } {
  const m = /^(?:[a-z]+:\/\/)?([^/]*)(\/.*)?$/i.exec(uri);
  return { authority: m?.[1] ?? '', path: m?.[2] ?? '/' };
}

function headerOptions(list: readonly unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of list) {
    const header = obj(obj(h)?.header) ?? obj(h);
    if (header !== null && typeof header.key === 'string') out[header.key.toLowerCase()] = str(header.value);
  }
  return out;
}

function provider(p: Obj, path: string, at: TracingReport): TracingProvider | null {
  fields(at, path, p, ['name', 'typedConfig']);
  const tc = obj(p.typedConfig);
  const type = str(tc?.['@type']);
  const tpath = joinPath(path, 'typedConfig');
  if (tc === null) {
    at.error(path, `tracer ${str(p.name)}: a typedConfig is needed`);
    return null;
  }
  if (type === OTEL_TRACER_TYPE) {
    fields(at, tpath, tc, ['@type', 'grpcService', 'httpService', 'serviceName'], {
      resourceDetectors: 'the resource has service.name only',
      sampler: "sampling is the connection manager's",
    });
    const serviceName = str(tc.serviceName);
    const grpc = obj(tc.grpcService);
    const http = obj(tc.httpService);
    if (http !== null) {
      const hpath = joinPath(tpath, 'httpService');
      fields(at, hpath, http, ['httpUri', 'requestHeadersToAdd']);
      const uri = obj(http.httpUri) ?? {};
      fields(at, joinPath(hpath, 'httpUri'), uri, ['uri', 'cluster', 'timeout']);
      const cluster = str(uri.cluster);
      if (cluster === '') {
        at.error(joinPath(hpath, 'httpUri.cluster'), 'the OTLP/HTTP collector needs a cluster');
        return null;
      }
      const { authority, path: p2 } = splitUri(str(uri.uri));
      return { kind: 'opentelemetry', cluster, authority, transport: 'http', path: p2, serviceName, timeoutMs: timeout(uri.timeout, joinPath(hpath, 'httpUri.timeout'), at), headers: headerOptions(arr(http.requestHeadersToAdd)) };
    }
    if (grpc !== null) {
      const gpath = joinPath(tpath, 'grpcService');
      fields(at, gpath, grpc, ['envoyGrpc', 'timeout', 'initialMetadata']);
      const eg = obj(grpc.envoyGrpc);
      const cluster = str(eg?.clusterName);
      if (cluster === '') {
        at.error(joinPath(gpath, 'envoyGrpc.clusterName'), 'the OTLP/gRPC collector needs envoyGrpc.clusterName (googleGrpc is not supported)');
        return null;
      }
      return { kind: 'opentelemetry', cluster, authority: str(eg?.authority), transport: 'grpc', path: '', serviceName, timeoutMs: timeout(grpc.timeout, joinPath(gpath, 'timeout'), at), headers: headerOptions(arr(grpc.initialMetadata)) };
    }
    at.error(tpath, 'the OpenTelemetry tracer needs grpcService or httpService');
    return null;
  }
  if (type === ZIPKIN_TRACER_TYPE) {
    fields(at, tpath, tc, ['@type', 'collectorCluster', 'collectorEndpoint', 'collectorEndpointVersion', 'collectorHostname', 'traceId128bit', 'sharedSpanContext', 'traceContextOption'], {
      splitSpansForRequest: 'spans are reported as the connection manager makes them',
    });
    const version = str(tc.collectorEndpointVersion);
    if (version !== '' && version !== 'HTTP_JSON') {
      at.error(joinPath(tpath, 'collectorEndpointVersion'), `${version} is not supported (HTTP_JSON only)`);
      return null;
    }
    const cluster = str(tc.collectorCluster);
    const authority = str(tc.collectorHostname);
    const path2 = str(tc.collectorEndpoint);
    if (cluster === '') {
      at.error(joinPath(tpath, 'collectorCluster'), 'the Zipkin tracer needs a collector cluster');
      return null;
    }
    if (str(tc.traceContextOption) === 'USE_B3_WITH_W3C_PROPAGATION') at.warn(joinPath(tpath, 'traceContextOption'), 'B3 headers only are injected; incoming W3C traceparent is still read');
    const shared = obj(tc.sharedSpanContext);
    return {
      kind: 'zipkin',
      cluster,
      authority,
      path: path2 === '' ? '/api/v2/spans' : path2,
      traceId128Bit: tc.traceId128bit === true,
      // BoolValue: Envoy's default is true.
      sharedSpanContext: shared === null ? (typeof tc.sharedSpanContext === 'boolean' ? tc.sharedSpanContext : true) : shared.value !== false,
    };
  }
  at.error(tpath, `tracer ${str(p.name)} (${type || 'no @type'}) is not supported: Remora exports to OpenTelemetry and Zipkin collectors`);
  return null;
}

function customTag(t: Obj, path: string, at: TracingReport): TracingCustomTag | null {
  const tag = str(t.tag);
  if (tag === '') {
    at.error(joinPath(path, 'tag'), 'a custom tag needs a name');
    return null;
  }
  const lit = obj(t.literal);
  if (lit !== null) return { tag, kind: 'literal', value: str(lit.value) };
  const h = obj(t.requestHeader);
  if (h !== null) return { tag, kind: 'requestHeader', name: str(h.name).toLowerCase(), defaultValue: str(h.defaultValue) };
  const env = obj(t.environment);
  if (env !== null) return { tag, kind: 'environment', name: str(env.name), defaultValue: str(env.defaultValue) };
  const md = obj(t.metadata);
  if (md !== null) {
    const key = obj(md.metadataKey);
    const filter = str(key?.key);
    const keyPath = arr(key?.path);
    const kind = obj(md.kind);
    if (kind !== null && obj(kind.request) === null) {
      at.warn(joinPath(path, 'metadata.kind'), `tag ${tag}: only request metadata is read; the tag is not set`);
      return null;
    }
    if (keyPath.length !== 1) {
      at.warn(joinPath(path, 'metadata.metadataKey.path'), `tag ${tag}: only a one-key path is read; the tag is not set`);
      return null;
    }
    return { tag, kind: 'metadata', filter, key: str(obj(keyPath[0])?.key), defaultValue: str(md.defaultValue) };
  }
  at.warn(path, `tag ${tag}: this kind of custom tag is not supported; the tag is not set`);
  return null;
}

/** The connection manager's `tracing`, or null (with errors reported) when it cannot be used. */
export function readHcmTracing(t: Obj, path: string, at: TracingReport): HttpTracing | null {
  fields(at, path, t, ['clientSampling', 'randomSampling', 'overallSampling', 'customTags', 'provider', 'spawnUpstreamSpan', 'maxPathTagLength'], {
    verbose: 'spans carry no per-stage events',
  });
  const p = obj(t.provider);
  if (p === null) {
    // istiod's legacy mesh-config tracing leaves the provider to Envoy's bootstrap tracer.
    at.warn(path, "ignored: no provider, and Remora has no bootstrap-wide tracer: requests are not traced");
    return null;
  }
  const prov = provider(p, joinPath(path, 'provider'), at);
  if (prov === null) return null;
  const customTags: TracingCustomTag[] = [];
  arr(t.customTags).forEach((c, i) => {
    const tag = customTag(obj(c) ?? {}, `${path}.customTags[${i}]`, at);
    if (tag !== null) customTags.push(tag);
  });
  const spawn = t.spawnUpstreamSpan;
  const max = t.maxPathTagLength;
  return {
    provider: prov,
    randomSamplingPercent: percent(t.randomSampling, joinPath(path, 'randomSampling'), 100, at),
    clientSamplingPercent: percent(t.clientSampling, joinPath(path, 'clientSampling'), 100, at),
    overallSamplingPercent: percent(t.overallSampling, joinPath(path, 'overallSampling'), 100, at),
    customTags,
    spawnUpstreamSpan: spawn === true || obj(spawn)?.value === true,
    maxPathTagLength: typeof max === 'number' && max > 0 ? max : typeof obj(max)?.value === 'number' ? (obj(max)!.value as number) : DEFAULT_MAX_PATH_TAG_LENGTH,
  };
}
