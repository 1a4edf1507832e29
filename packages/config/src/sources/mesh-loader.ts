import type { ConfigIssue } from '../errors.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { Resource } from '../resources/resource.ts';
import { isSupportedKind, validateResource } from '../schema/validator.ts';
import { DEFAULT_TRANSLATE_OPTIONS, translateIstio, type TranslateOptions } from '../translate/istio.ts';
import { loadFiles } from './load-files.ts';

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
}

/** Milliseconds spent reading and parsing the files, validating the resources, translating them. */
export interface LoadTimings {
  readonly readMs: number;
  readonly validateMs: number;
  readonly translateMs: number;
}

export function hasErrors(issues: readonly ConfigIssue[]): boolean {
  return issues.some((i) => i.severity === 'error');
}

/**
 * The whole way from paths on disk to a proxy config: read, parse, validate every resource,
 * reject duplicates, translate. All problems are collected, so one run reports them all.
 */
export function loadMesh(
  paths: readonly string[],
  node: ProxyNode,
  ports: ListenerPorts,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): MeshLoadResult {
  const t0 = performance.now();
  const loaded = loadFiles(paths);
  const t1 = performance.now();
  const issues: ConfigIssue[] = [...loaded.issues];
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
  if (hasErrors(issues)) return { config: null, issues, files: loaded.files, resources: valid, timings: { readMs: t1 - t0, validateMs: t2 - t1, translateMs: 0 } };
  const translated = translateIstio(valid, node, ports, options);
  issues.push(...translated.issues);
  const timings = { readMs: t1 - t0, validateMs: t2 - t1, translateMs: performance.now() - t2 };
  return { config: hasErrors(issues) ? null : translated.config, issues, files: loaded.files, resources: valid, timings };
}
