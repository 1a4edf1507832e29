import type { TranslateContext } from './context.ts';
import { labelsMatch } from './registry.ts';

export type MtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

interface PeerAuthSpec {
  selector?: { matchLabels?: Record<string, string> };
  mtls?: { mode?: string };
  portLevelMtls?: Record<string, { mode?: string }>;
}

/**
 * The mTLS mode of this workload's inbound traffic to `port`, as Istio resolves
 * PeerAuthentication: a policy selecting the workload (its `portLevelMtls` for the port
 * first), then the namespace-wide policy, then the mesh-wide one in the root namespace; UNSET
 * at one level defers to the next; PERMISSIVE when nothing says otherwise (Istio's default).
 * Several policies at one level: the oldest wins, as Istio picks it.
 */
export function inboundMtlsMode(ctx: TranslateContext, port: number): MtlsMode {
  const { node } = ctx;
  let workload: PeerAuthSpec | null = null;
  let namespace: PeerAuthSpec | null = null;
  let mesh: PeerAuthSpec | null = null;
  for (const r of ctx.resourcesOf('PeerAuthentication')) {
    const spec = (r.spec ?? {}) as PeerAuthSpec;
    const sel = spec.selector?.matchLabels;
    const hasSelector = sel !== undefined && Object.keys(sel).length > 0;
    if (r.metadata.namespace === node.namespace) {
      if (hasSelector) {
        if (workload === null && labelsMatch(sel, node.labels)) workload = spec;
      } else namespace ??= spec;
    } else if (r.metadata.namespace === node.rootNamespace && !hasSelector) {
      mesh ??= spec;
    }
  }
  const pick = (m: string | undefined): MtlsMode | null => (m === 'STRICT' || m === 'PERMISSIVE' || m === 'DISABLE' ? m : null);
  return (
    pick(workload?.portLevelMtls?.[String(port)]?.mode) ??
    pick(workload?.mtls?.mode) ??
    pick(namespace?.mtls?.mode) ??
    pick(mesh?.mtls?.mode) ??
    'PERMISSIVE'
  );
}
