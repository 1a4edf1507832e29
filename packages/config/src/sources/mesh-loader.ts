/**
 * The whole way from Istio files to the runtime's compile input, as one proxy sees it: read,
 * parse and validate every resource, translate them into Envoy's resources as istiod would
 * (EnvoyFilters patching those), and read the Envoy resources into the model the snapshot
 * compiler takes — the same reading an xDS stream's resources get.
 *
 * Loads Envoy's descriptors (EnvoyFilter patches are Envoy messages), so it is exported from
 * `@remora/config/envoy` and runs on the loader thread, never on the proxy's main thread.
 */
import { hasErrors, type ConfigIssue } from '../errors.ts';
import { formatImportIssue, type ImportIssue } from '../envoy/import-context.ts';
import { proxyConfigFromEnvoy } from '../envoy/to-model.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { Resource } from '../resources/resource.ts';
import { isSupportedKind, validateResource } from '../schema/validator.ts';
import { readFileSync } from 'node:fs';
import { parseMeshConfig, parseProxyConfigAnnotation, PROXY_CONFIG_ANNOTATION } from '../schema/mesh-config.ts';
import type { ProxyConfigAnnotation, ProxySettings } from '../translate/proxy-settings.ts';
import { parseAnnotationsFile, parseAnnotationsJson, type PodAnnotationsResult } from './pod-annotations.ts';
import { DEFAULT_TRANSLATE_OPTIONS, type TranslateOptions } from '../translate/istio.ts';
import { translateIstioToEnvoy } from '../translate/istio-envoy.ts';
import { loadFiles } from './load-files.ts';
import type { LoadTimings } from './load-timings.ts';

export { hasErrors };
export type { LoadTimings };

/** What a load takes besides the resources' paths. */
export interface MeshLoadOptions extends TranslateOptions {
  /** Istio's MeshConfig (the `mesh` key of the `istio` ConfigMap, or that ConfigMap), read with the resources. */
  readonly meshConfigFile?: string;
  /**
   * The pod's annotations: a downward API file (`key="value"` lines), read with the
   * resources and watched; its `proxy.istio.io/config` is merged over the proxy settings last.
   */
  readonly annotationsFile?: string;
  /** The pod's annotations as Istio's agent passes them (`ISTIO_METAJSON_ANNOTATIONS`, a JSON object); the file wins. */
  readonly annotationsJson?: string;
}

export interface MeshLoadResult {
  /** The translated config; null when any error was found (nothing partial is ever returned). */
  readonly config: ProxyConfig | null;
  readonly issues: readonly ConfigIssue[];
  /** Files read, for the watcher. */
  readonly files: readonly string[];
  /** Resources that passed validation, for `remora validate` summaries. */
  readonly resources: readonly Resource[];
  /** How long each step took, for the log line a config change writes. */
  readonly timings: LoadTimings;
  /** The proxy settings for this workload (drain durations, ...); null when the config is. */
  readonly proxySettings: ProxySettings | null;
}

/**
 * The whole way from paths on disk to a proxy config: read, parse, validate every resource,
 * reject duplicates, translate. All problems are collected, so one run reports them all.
 */
export function loadMesh(
  paths: readonly string[],
  node: ProxyNode,
  ports: ListenerPorts,
  options: MeshLoadOptions = DEFAULT_TRANSLATE_OPTIONS,
): MeshLoadResult {
  const t0 = performance.now();
  const loaded = loadFiles(paths);
  const issues: ConfigIssue[] = [...loaded.issues];
  const files = [...loaded.files];
  if (options.meshConfigFile !== undefined) {
    const file = options.meshConfigFile;
    files.push(file);
    let text: string | null = null;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      issues.push({ severity: 'error', file, line: 0, kind: 'MeshConfig', resource: 'mesh', path: '', message: `cannot read: ${(err as Error).message}` });
    }
    if (text !== null) {
      const parsed = parseMeshConfig(text, file);
      issues.push(...parsed.issues);
      if (parsed.mesh !== null) {
        const mesh = parsed.mesh;
        options = { ...options, mesh };
        // The MeshConfig's rootNamespace and trustDomain are the mesh's, over the proxy's defaults.
        if (mesh.rootNamespace !== null || mesh.trustDomain !== null) {
          node = { ...node, rootNamespace: mesh.rootNamespace ?? node.rootNamespace, trustDomain: mesh.trustDomain ?? node.trustDomain };
        }
      }
    }
  }
  const annotation = proxyConfigAnnotation(options, files, issues);
  if (annotation !== null) options = { ...options, proxyConfigAnnotation: annotation };
  const t1 = performance.now();
  const valid: Resource[] = [];
  const seen = new Map<string, Resource>();
  for (const r of loaded.resources) {
    const problems = validateResource(r);
    issues.push(...problems);
    if (hasErrors(problems) || !isSupportedKind(r)) continue;
    const key = `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`;
    const first = seen.get(key);
    if (first) {
      issues.push({
        severity: 'error',
        file: r.origin.file,
        line: r.origin.line,
        kind: r.kind,
        resource: `${r.metadata.namespace}/${r.metadata.name}`,
        path: '',
        message: `defined twice (first at ${first.origin.file}:${first.origin.line})`,
      });
      continue;
    }
    seen.set(key, r);
    valid.push(r);
  }
  const t2 = performance.now();
  if (hasErrors(issues)) return { config: null, issues, files, resources: valid, timings: { readMs: t1 - t0, validateMs: t2 - t1, translateMs: 0 }, proxySettings: null };
  const translated = translateIstioToEnvoy(valid, node, ports, options);
  issues.push(...translated.issues);
  if (hasErrors(issues)) return { config: null, issues, files, resources: valid, timings: { readMs: t1 - t0, validateMs: t2 - t1, translateMs: performance.now() - t2 }, proxySettings: null };
  const imported = proxyConfigFromEnvoy(translated.envoy, node, translated.version);
  issues.push(...imported.issues.map(importIssue));
  const timings = { readMs: t1 - t0, validateMs: t2 - t1, translateMs: performance.now() - t2 };
  const ok = !hasErrors(issues);
  return { config: ok ? imported.config : null, issues, files, resources: valid, timings, proxySettings: ok ? translated.proxySettings : null };
}

/** The pod's `proxy.istio.io/config` annotation, from the annotations file or else the agent's JSON; null when none. */
function proxyConfigAnnotation(options: MeshLoadOptions, files: string[], issues: ConfigIssue[]): ProxyConfigAnnotation | null {
  let read: PodAnnotationsResult | null = null;
  let source = '';
  if (options.annotationsFile !== undefined) {
    source = options.annotationsFile;
    files.push(source);
    try {
      read = parseAnnotationsFile(readFileSync(source, 'utf8'), source);
    } catch (err) {
      issues.push({ severity: 'error', file: source, line: 0, kind: 'Annotations', resource: 'pod', path: '', message: `cannot read: ${(err as Error).message}` });
      return null;
    }
  } else if (options.annotationsJson !== undefined) {
    source = 'ISTIO_METAJSON_ANNOTATIONS';
    read = parseAnnotationsJson(options.annotationsJson, source);
  }
  if (read === null) return null;
  issues.push(...read.issues);
  const text = read.annotations.get(PROXY_CONFIG_ANNOTATION);
  if (text === undefined) return null;
  const parsed = parseProxyConfigAnnotation(text, source);
  issues.push(...parsed.issues);
  return parsed.settings === null ? null : { settings: parsed.settings, source: `${source} (${PROXY_CONFIG_ANNOTATION})` };
}

/**
 * A problem reading the translated (and EnvoyFilter-patched) Envoy resources: what istiod
 * built that Remora cannot run. It names the Envoy resource and field; an EnvoyFilter patch
 * is the usual cause, and its own problems were reported against it already.
 */
function importIssue(i: ImportIssue): ConfigIssue {
  return { severity: i.severity, file: '(envoy resources)', line: 0, kind: i.type, resource: i.resource, path: i.path, message: i.message };
}

export { formatImportIssue };
