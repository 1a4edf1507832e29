/**
 * One gateway, configured three ways from the same Istio YAML: from files (Remora translates
 * them itself), or over ADS, state of the world or incremental, from a control plane that
 * serves what istiod would push for that YAML (Remora's own translator playing istiod). The
 * node the control plane translates for is the node the proxy's own flags describe, so both
 * ways see the same proxy.
 */
import { parseResources, validateResource, type ListenerPorts, type ProxyNode } from '@remora/config';
import { translateIstioToEnvoy, type EnvoyResources } from '@remora/config/envoy';
import { parseOptions } from '@remora/proxy';
import { ControlPlane } from './control-plane.ts';
import { doc, gateway, serviceEntry } from './mesh.ts';
import { MeshDir, startRemora, type InProcessRemora } from './remora.ts';

export type ConfigMode = 'files' | 'sotw' | 'delta';
export const MODES: readonly ConfigMode[] = ['files', 'sotw', 'delta'];

/** The gateway's node and listener ports, as `remora gateway` builds them from its default flags. */
export function gatewayNode(): { node: ProxyNode; ports: ListenerPorts } {
  const opts = parseOptions('gateway', ['--xds-address', '127.0.0.1:1', '--bind', '127.0.0.1'], {});
  if (opts === 'help') throw new Error('unexpected --help');
  return { node: opts.node, ports: opts.ports };
}

/** What istiod would push to the gateway for this Istio YAML; throws on any error. */
export function envoyFor(yaml: string, who = gatewayNode()): EnvoyResources {
  const parsed = parseResources(yaml, 'mesh.yaml');
  const issues = [...parsed.issues, ...parsed.resources.flatMap(validateResource)].filter((i) => i.severity === 'error');
  if (issues.length > 0) throw new Error(JSON.stringify(issues));
  const r = translateIstioToEnvoy(parsed.resources, who.node, who.ports);
  if (r.issues.some((i) => i.severity === 'error')) throw new Error(JSON.stringify(r.issues));
  return r.envoy;
}

/** A gateway running from `yaml` in one of the modes; `update` changes its config the same way. */
export interface ModedGateway {
  readonly mode: ConfigMode;
  readonly remora: InProcessRemora;
  /** The control plane (xDS modes). */
  readonly cp: ControlPlane | null;
  /** Replaces the config: rewrites the file, or pushes a new snapshot (returns its version). */
  update(yaml: string): string;
  stop(): Promise<void>;
}

export async function startGateway(mode: ConfigMode, yaml: string): Promise<ModedGateway> {
  if (mode === 'files') {
    const dir = new MeshDir({ 'mesh.yaml': yaml });
    const remora = await startRemora('gateway', [dir.dir]);
    return {
      mode,
      remora,
      cp: null,
      update: (y) => {
        dir.write('mesh.yaml', y);
        return '';
      },
      stop: async () => {
        await remora.stop();
        dir.cleanup();
      },
    };
  }
  const cp = new ControlPlane();
  await cp.start();
  cp.set(envoyFor(yaml));
  let remora: InProcessRemora;
  try {
    remora = await startRemora('gateway', [], ['--xds-address', cp.target, ...(mode === 'delta' ? ['--xds-delta'] : [])]);
  } catch (e) {
    cp.kill();
    throw e;
  }
  return {
    mode,
    remora,
    cp,
    update: (y) => cp.set(envoyFor(y)),
    stop: async () => {
      await remora.stop();
      cp.kill();
    },
  };
}

/**
 * A gateway on `port` sending every request to `web.example`, split between subsets v1 and v2
 * (backends on ports `v1` and `v2`) with `weightV2` percent to v2; `spare`: one more service.
 */
export function weighted(port: number, v1: number, v2: number, weightV2: number, spare: number | null = null): string {
  return doc(
    gateway('gw', port),
    serviceEntry('web', 'web.example', [
      { port: v1, labels: { version: 'v1' } },
      { port: v2, labels: { version: 'v2' } },
    ]),
    ...(spare === null ? [] : [serviceEntry('spare', 'spare.example', [{ port: spare }])]),
    `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web }
spec:
  host: web.example
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
`,
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - { destination: { host: web.example, subset: v1 }, weight: ${100 - weightV2} }
    - { destination: { host: web.example, subset: v2 }, weight: ${weightV2} }
`,
  );
}
