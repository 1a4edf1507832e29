import type { TranslateContext } from './context.ts';
import type { Resource } from '../resources/resource.ts';
import { scopedResources } from './workload-scope.ts';

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
  const levels = scopedResources(ctx, 'PeerAuthentication', (spec) => (spec as PeerAuthSpec).selector?.matchLabels);
  const specOf = (r: Resource | null): PeerAuthSpec | null => (r === null ? null : ((r.spec ?? {}) as PeerAuthSpec));
  const workload = specOf(levels.workload);
  const namespace = specOf(levels.namespace);
  const mesh = specOf(levels.root);
  const pick = (m: string | undefined): MtlsMode | null => (m === 'STRICT' || m === 'PERMISSIVE' || m === 'DISABLE' ? m : null);
  return (
    pick(workload?.portLevelMtls?.[String(port)]?.mode) ??
    pick(workload?.mtls?.mode) ??
    pick(namespace?.mtls?.mode) ??
    pick(mesh?.mtls?.mode) ??
    'PERMISSIVE'
  );
}
