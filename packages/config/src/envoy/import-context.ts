/**
 * What reading Envoy's resources into the runtime's compile input needs around it: where to
 * report a field Remora cannot honour, and what an SDS secret name stands for.
 *
 * Envoy's resources are the model between every source and the runtime (Istio files
 * translated, EnvoyFilter-patched, or delivered by xDS). The importers (`to-model-*.ts`) read
 * them into `ProxyConfig`, the form the snapshot compiler takes. A resource with an error is
 * not imported (the caller rejects it and keeps the last good one: a NACK under xDS); a
 * warning is a field Remora accepts and ignores, said once.
 */
import type { SecretRef } from './secret-ref.ts';

/** A problem with one field of one resource. */
export interface ImportIssue {
  readonly severity: 'error' | 'warning';
  /** Envoy's resource type, short: `Listener`, `RouteConfiguration`, `Cluster`, `ClusterLoadAssignment`, `Secret`. */
  readonly type: string;
  /** The resource's name. */
  readonly resource: string;
  /** Field path inside the resource in proto3 JSON names: `virtualHosts[0].routes[3].match.safeRegex`. */
  readonly path: string;
  readonly message: string;
}

export class ImportContext {
  readonly issues: ImportIssue[] = [];
  readonly #secrets: ReadonlyMap<string, SecretRef>;

  /** `secrets`: the SDS names the resources may refer to and where their content comes from. */
  constructor(secrets: Iterable<SecretRef> = []) {
    this.#secrets = new Map([...secrets].map((s) => [s.name, s]));
  }

  /** A named SDS secret; `default` and `ROOTCA` (the workload identity and the mesh roots) always resolve. */
  secret(name: string): SecretRef | undefined {
    const known = this.#secrets.get(name);
    if (known !== undefined) return known;
    if (name === 'default') return { name, kind: 'workload' };
    if (name === 'ROOTCA') return { name, kind: 'roots' };
    return undefined;
  }

  error(type: string, resource: string, path: string, message: string): void {
    this.issues.push({ severity: 'error', type, resource, path, message });
  }

  warn(type: string, resource: string, path: string, message: string): void {
    this.issues.push({ severity: 'warning', type, resource, path, message });
  }

  /** Whether the resource has an error reported so far (it is then not imported). */
  hasErrors(type: string, resource: string): boolean {
    return this.issues.some((i) => i.severity === 'error' && i.type === type && i.resource === resource);
  }
}

/** Where one resource's issues go, under its type and name. */
export class ResourceReport {
  readonly ctx: ImportContext;
  readonly type: string;
  readonly name: string;
  constructor(ctx: ImportContext, type: string, name: string) {
    this.ctx = ctx;
    this.type = type;
    this.name = name;
  }
  error(path: string, message: string): void {
    this.ctx.error(this.type, this.name, path, message);
  }
  warn(path: string, message: string): void {
    this.ctx.warn(this.type, this.name, path, message);
  }
}

/** A field path one step further: `a.b`, `a[3]`. */
export function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return base === '' ? key : `${base}.${key}`;
}

/** `RouteConfiguration 9080: virtualHosts[0].routes[1].match: message`. */
export function formatImportIssue(i: ImportIssue): string {
  return `${i.severity === 'warning' ? 'warning: ' : ''}${i.type} ${i.resource}: ${i.path === '' ? '' : `${i.path}: `}${i.message}`;
}
