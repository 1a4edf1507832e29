import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { labelsMatch } from './registry.ts';

/** The resources of one kind that apply to this proxy, by Istio's three levels. */
export interface ScopedResources {
  /** In the workload's namespace, with a selector matching its labels. */
  readonly workload: Resource | null;
  /** In the workload's namespace, without a selector. */
  readonly namespace: Resource | null;
  /** In the root namespace, without a selector: mesh-wide. */
  readonly root: Resource | null;
}

/**
 * Istio's pick for kinds that apply one resource per level (PeerAuthentication, Sidecar): at
 * each level the oldest resource wins. `selectorOf` reads the kind's selector labels.
 */
export function scopedResources(ctx: TranslateContext, kind: string, selectorOf: (spec: unknown) => Readonly<Record<string, string>> | undefined): ScopedResources {
  const { node } = ctx;
  let workload: Resource | null = null;
  let namespace: Resource | null = null;
  let root: Resource | null = null;
  for (const r of ctx.resourcesOf(kind)) {
    const selector = selectorOf(r.spec ?? {});
    const hasSelector = selector !== undefined && Object.keys(selector).length > 0;
    if (r.metadata.namespace === node.namespace) {
      if (hasSelector) {
        if (workload === null && labelsMatch(selector, node.labels)) workload = r;
      } else namespace ??= r;
    } else if (r.metadata.namespace === node.rootNamespace && !hasSelector) {
      root ??= r;
    }
  }
  return { workload, namespace, root };
}
