/**
 * Istio resources → Envoy's resources for one proxy, as istiod computes them: the Istio
 * translator builds the config, the exporter writes it as Envoy's v3 resources, and the
 * EnvoyFilters that select the proxy patch those resources (envoyfilter-patch.ts). It loads
 * Envoy's descriptors, so it belongs on the loader thread; it is exported from
 * `@remora/config/envoy` only.
 */
import { createHash } from 'node:crypto';
import { formatIssue, type ConfigIssue } from '../errors.ts';
import { envoyResourcesFromModel, type EnvoyResources } from '../envoy/from-model.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { Resource } from '../resources/resource.ts';
import { TranslateContext } from './context.ts';
import { applyEnvoyFilters } from './envoyfilter-patch.ts';
import { DEFAULT_TRANSLATE_OPTIONS, translateIstio, type TranslateOptions } from './istio.ts';
import type { ProxySettings } from './proxy-settings.ts';

export interface EnvoyTranslateResult {
  readonly envoy: EnvoyResources;
  /** Content hash of the resources, node and ports: changes whenever they do. */
  readonly version: string;
  /** Errors make the config unusable; warnings are worth printing but change nothing. */
  readonly issues: ConfigIssue[];
  /** The proxy settings for this workload (drain durations, ...), for the proxy's process. */
  readonly proxySettings: ProxySettings;
}

export function translateIstioToEnvoy(
  resources: readonly Resource[],
  node: ProxyNode,
  ports: ListenerPorts,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): EnvoyTranslateResult {
  // EnvoyFilters patch the Envoy resources, not the model: the translator does not see them.
  const { config, issues, proxySettings } = translateIstio(
    resources.filter((r) => r.kind !== 'EnvoyFilter'),
    node,
    ports,
    options,
  );
  const ctx = new TranslateContext(resources, node, ports, options.mesh, options.extensionFilters);
  const envoy = applyEnvoyFilters(envoyResourcesFromModel(config), ctx);
  const seen = new Set<string>();
  const all: ConfigIssue[] = [];
  for (const i of [...issues, ...ctx.issues]) {
    const key = formatIssue(i);
    if (seen.has(key)) continue;
    seen.add(key);
    all.push(i);
  }
  // The translator saw no EnvoyFilter: the version must change when only they do.
  const filters = resources.filter((r) => r.kind === 'EnvoyFilter');
  const version = filters.length === 0 ? config.version : createHash('sha256').update(config.version).update(JSON.stringify(filters.map((r) => r.document))).digest('hex').slice(0, 16);
  return { envoy, version, issues: all, proxySettings };
}
