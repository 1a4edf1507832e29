/**
 * The proxy settings that apply to this workload, as istiod's EffectiveProxyConfig merges
 * them: MeshConfig `defaultConfig`, then the root namespace's ProxyConfig, then the
 * workload namespace's, then one whose selector matches the workload (the oldest at each
 * level), then the pod's `proxy.istio.io/config` annotation (given to the proxy as its
 * annotations file or Istio's agent's `ISTIO_METAJSON_ANNOTATIONS`), last.
 *
 * The drain durations and holdApplicationUntilProxyStarts are for the proxy's process to
 * apply, `concurrency` too (the worker count, taken when the proxy starts); `image` and
 * `environmentVariables` are settings of the proxy's container (the injector's), so a
 * ProxyConfig that sets them is told they are not applied.
 */
import type { Resource } from '../resources/resource.ts';
import { DEFAULT_PROXY_DEFAULTS, type MeshProxyDefaults } from '../schema/mesh-config.ts';
import type { TranslateContext } from './context.ts';
import { scopedResources } from './workload-scope.ts';

interface IstioProxyConfigSpec {
  selector?: { matchLabels?: Record<string, string> };
  concurrency?: number | null;
  environmentVariables?: Record<string, string> | null;
  image?: { imageType?: string } | null;
}

export interface ProxySettings extends MeshProxyDefaults {
  readonly environmentVariables: Readonly<Record<string, string>>;
  /** `image.imageType`; '' when none says. */
  readonly imageType: string;
  /** `namespace/name` of the ProxyConfig resources merged in, lowest precedence first. */
  readonly from: readonly string[];
}

/** The `proxy.istio.io/config` annotation, read (schema/mesh-config.ts `parseProxyConfigAnnotation`). */
export interface ProxyConfigAnnotation {
  readonly settings: Partial<MeshProxyDefaults>;
  /** Where it came from, for `from`. */
  readonly source: string;
}

export function proxySettings(ctx: TranslateContext, annotation?: ProxyConfigAnnotation): ProxySettings {
  const base = ctx.mesh.defaultConfig ?? DEFAULT_PROXY_DEFAULTS;
  let settings: ProxySettings = { ...base, environmentVariables: {}, imageType: '', from: [] };
  const levels = scopedResources(ctx, 'ProxyConfig', (spec) => (spec as IstioProxyConfigSpec).selector?.matchLabels);
  for (const r of [levels.root, levels.namespace, levels.workload]) {
    if (r === null) continue;
    settings = merge(ctx, settings, r);
  }
  if (annotation !== undefined) settings = { ...settings, ...annotation.settings, from: [...settings.from, annotation.source] };
  return settings;
}

function merge(ctx: TranslateContext, s: ProxySettings, r: Resource): ProxySettings {
  const spec = (r.spec ?? {}) as IstioProxyConfigSpec;
  const env = spec.environmentVariables ?? {};
  const notApplied = (field: string, why: string) => ctx.warn(r, ['spec', field], `not applied: ${why}`);
  if (Object.keys(env).length > 0) notApplied('environmentVariables', 'the proxy container\'s environment is set when the pod is injected, not by the running proxy');
  if (spec.image?.imageType) notApplied('image', 'the proxy image is chosen when the pod is injected, not by the running proxy');
  return {
    ...s,
    ...(spec.concurrency !== undefined && spec.concurrency !== null ? { concurrency: spec.concurrency } : {}),
    environmentVariables: { ...s.environmentVariables, ...env },
    imageType: spec.image?.imageType || s.imageType,
    from: [...s.from, `${r.metadata.namespace}/${r.metadata.name}`],
  };
}
