import type { OutboundTrafficMode } from '../schema/mesh-config.ts';
import type { TranslateContext } from './context.ts';
import { hostCovers } from './host.ts';
import { scopedResources } from './workload-scope.ts';

interface IstioSidecarSpec {
  workloadSelector?: { labels?: Record<string, string> };
  egress?: { hosts?: string[]; port?: unknown; bind?: string; captureMode?: string }[];
  ingress?: unknown[];
  outboundTrafficPolicy?: { mode?: string };
}

/** One `namespace/host` entry of a Sidecar's egress hosts. */
interface EgressHost {
  /** `*` any namespace, `~` none, else one namespace (`.` already resolved). */
  readonly namespace: string;
  /** `*`, `*.suffix` or an exact name (lower case). */
  readonly host: string;
}

/**
 * What Istio's `Sidecar` resource says to this sidecar: which services and VirtualServices its
 * outbound side may see (`egress[].hosts`), and what happens to requests for anything else
 * (`outboundTrafficPolicy`). The Sidecar that applies is Istio's pick: one in the workload's
 * namespace whose `workloadSelector` matches, else the one there without a selector, else the
 * root namespace's (the oldest of each, as Istio picks). No Sidecar: everything is visible.
 */
export class SidecarScope {
  readonly origin: string;
  readonly #hosts: readonly EgressHost[];
  /** The Sidecar's `outboundTrafficPolicy` is REGISTRY_ONLY (see `outboundTrafficMode`). */
  readonly registryOnly: boolean;
  /** The Sidecar sets `outboundTrafficPolicy` (else the MeshConfig's applies). */
  readonly setsOutboundPolicy: boolean;

  constructor(origin: string, hosts: readonly EgressHost[], registryOnly: boolean, setsOutboundPolicy = registryOnly) {
    this.origin = origin;
    this.#hosts = hosts;
    this.registryOnly = registryOnly;
    this.setsOutboundPolicy = setsOutboundPolicy;
  }

  /** May the outbound side see `host` (a service's or a VirtualService's) from `namespace`? */
  allows(namespace: string, host: string): boolean {
    const h = host.toLowerCase();
    for (const e of this.#hosts) {
      if (e.namespace === '~') continue;
      if (e.namespace !== '*' && e.namespace !== namespace) continue;
      if (hostCovers(e.host, h)) return true;
    }
    return false;
  }
}

/** The Sidecar resource that applies to this proxy, as a scope; null when none does. */
export function sidecarScope(ctx: TranslateContext): SidecarScope | null {
  const { node } = ctx;
  const levels = scopedResources(ctx, 'Sidecar', (spec) => (spec as IstioSidecarSpec).workloadSelector?.labels);
  const r = levels.workload ?? levels.namespace ?? levels.root;
  if (r === null) return null;
  const spec = (r.spec ?? {}) as IstioSidecarSpec;
  if ((spec.ingress ?? []).length > 0) ctx.warn(r, ['spec', 'ingress'], 'ingress listeners are not applied; the inbound listener forwards to --app-port');
  // A Sidecar in the root namespace applies to every namespace: its `.` means the workload's.
  const own = r.metadata.namespace === node.rootNamespace ? node.namespace : r.metadata.namespace;
  const hosts: EgressHost[] = [];
  const egress = spec.egress ?? [];
  egress.forEach((e, i) => {
    if (e.port !== undefined || e.bind !== undefined || (e.captureMode !== undefined && e.captureMode !== 'DEFAULT')) {
      ctx.warn(r, ['spec', 'egress', i], 'per-port egress listeners (port, bind, captureMode) are not applied; their hosts apply to the outbound listener');
    }
    for (const raw of e.hosts ?? []) {
      const slash = raw.indexOf('/');
      const ns = slash < 0 ? '*' : raw.slice(0, slash);
      hosts.push({ namespace: ns === '.' ? own : ns, host: (slash < 0 ? raw : raw.slice(slash + 1)).toLowerCase() });
    }
  });
  // No egress section: Istio's default, every host of every namespace.
  if (egress.length === 0) hosts.push({ namespace: '*', host: '*' });
  // A Sidecar that sets `outboundTrafficPolicy` decides it; its mode's zero value is REGISTRY_ONLY.
  const registryOnly = spec.outboundTrafficPolicy !== undefined && spec.outboundTrafficPolicy !== null && (spec.outboundTrafficPolicy.mode ?? 'REGISTRY_ONLY') === 'REGISTRY_ONLY';
  return new SidecarScope(`${r.metadata.namespace}/${r.metadata.name}`, hosts, registryOnly, spec.outboundTrafficPolicy != null);
}

/**
 * The outbound traffic policy of this sidecar, as istiod's SidecarScope sets it: the applying
 * Sidecar resource's `outboundTrafficPolicy` when it has one, else the MeshConfig's, else
 * Istio's default ALLOW_ANY. ALLOW_ANY: traffic for a destination the registry does not know
 * goes where the app sent it (PassthroughCluster); REGISTRY_ONLY: it is refused
 * (BlackHoleCluster, HTTP's block_all 502).
 */
export function outboundTrafficMode(scope: SidecarScope | null, mesh: OutboundTrafficMode | undefined): OutboundTrafficMode {
  if (scope?.setsOutboundPolicy) return scope.registryOnly ? 'REGISTRY_ONLY' : 'ALLOW_ANY';
  return mesh ?? 'ALLOW_ANY';
}
