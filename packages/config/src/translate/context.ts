import type { ConfigIssue } from '../errors.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { Resource } from '../resources/resource.ts';
import { parseDuration } from '../schema/duration.ts';
import { DEFAULT_MESH_CONFIG, type MeshConfig } from '../schema/mesh-config.ts';

/**
 * What a translation sees: the valid resources, the proxy it translates for, and a sink
 * for problems found while translating (missing hosts, conflicting resources). Problems are
 * collected, never thrown, so one run reports them all.
 */
export class TranslateContext {
  readonly node: ProxyNode;
  readonly ports: ListenerPorts;
  /** The mesh's MeshConfig (Istio's defaults when none was given). */
  readonly mesh: MeshConfig;
  readonly issues: ConfigIssue[] = [];
  /** HTTP filters the proxy has registered beyond the ones it runs from Envoy (TranslateOptions.extensionFilters). */
  readonly extensionFilters: ReadonlySet<string>;
  readonly #byKind = new Map<string, Resource[]>();

  constructor(resources: readonly Resource[], node: ProxyNode, ports: ListenerPorts, mesh: MeshConfig = DEFAULT_MESH_CONFIG, extensionFilters: ReadonlySet<string> = new Set()) {
    this.extensionFilters = extensionFilters;
    this.node = node;
    this.ports = ports;
    this.mesh = mesh;
    // Istio resolves conflicts by age, oldest first; file order stands in for age when
    // resources carry no creationTimestamp.
    const sorted = [...resources].sort((a, b) => {
      const ta = a.metadata.creationTimestamp;
      const tb = b.metadata.creationTimestamp;
      if (ta !== tb && ta !== '' && tb !== '') return ta < tb ? -1 : 1;
      return a.order - b.order;
    });
    for (const r of sorted) {
      let list = this.#byKind.get(r.kind);
      if (list === undefined) this.#byKind.set(r.kind, (list = []));
      list.push(r);
    }
  }

  resourcesOf(kind: string): readonly Resource[] {
    return this.#byKind.get(kind) ?? [];
  }

  /** Istio `exportTo`: `*` (default) everyone, `.` the resource's namespace, `~` no one, or namespace names. */
  isVisible(r: Resource): boolean {
    const exportTo = (r.spec as { exportTo?: string[] } | null)?.exportTo;
    if (!exportTo || exportTo.length === 0) return true;
    const ns = this.node.namespace;
    for (const e of exportTo) {
      if (e === '*' || e === ns || (e === '.' && r.metadata.namespace === ns)) return true;
    }
    return false;
  }

  warn(r: Resource, path: readonly (string | number)[], message: string): void {
    this.#add('warning', r, path, message);
  }

  error(r: Resource, path: readonly (string | number)[], message: string): void {
    this.#add('error', r, path, message);
  }

  /** A protobuf Duration in milliseconds; schema validation has already checked the syntax. */
  durationMs(value: string | undefined, fallback: number): number {
    if (value === undefined) return fallback;
    return parseDuration(value) ?? fallback;
  }

  #add(severity: ConfigIssue['severity'], r: Resource, path: readonly (string | number)[], message: string): void {
    this.issues.push({
      severity,
      file: r.origin.file,
      line: r.lineOf(path),
      kind: r.kind,
      resource: `${r.metadata.namespace}/${r.metadata.name}`,
      path: fieldPath(path),
      message,
    });
  }
}

/** `['spec', 'http', 0, 'route']` → `spec.http[0].route`. */
export function fieldPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}
