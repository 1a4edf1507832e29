import type { ResourceOrigin } from '../errors.ts';

/** Kubernetes object metadata, the parts Remora reads. */
export interface ObjectMeta {
  readonly name: string;
  /** `default` when the document leaves it out, as kubectl does. */
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** Orders resources where Istio uses age (oldest first); '' when absent, then file order counts. */
  readonly creationTimestamp: string;
}

/**
 * One parsed resource document, before schema validation. `spec` is whatever the document
 * held; the schema validator decides whether it is usable.
 */
export interface Resource {
  /** `networking.istio.io/v1`, … */
  readonly apiVersion: string;
  /** API group without version: `networking.istio.io`. */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly metadata: ObjectMeta;
  readonly spec: unknown;
  /** The whole document as parsed, for validation of fields outside `spec`. */
  readonly document: Readonly<Record<string, unknown>>;
  readonly origin: ResourceOrigin;
  /** Position in load order (files sorted by path, documents in file order); breaks ties in Istio's "oldest wins". */
  readonly order: number;
  /** 1-based line of a field inside this document (path of keys and indexes); the resource's line if not found. */
  lineOf(path: readonly (string | number)[]): number;
}

/** `Kind namespace/name`, the way every message names a resource. */
export function resourceRef(r: Pick<Resource, 'kind' | 'metadata'>): string {
  return `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`;
}
