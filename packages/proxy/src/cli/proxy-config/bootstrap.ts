import { readBootstrapNode, stringValue, type ConfigDump } from './config-dump.ts';
import { tabWrite } from './tab-writer.ts';

/**
 * istioctl's version lines: Istio's version and proxy SHA from the node metadata Istio's agent
 * writes into the bootstrap (`ISTIO_VERSION`, `ISTIO_PROXY_SHA`), and Envoy's build version.
 */
export function bootstrapSummary(dump: ConfigDump): string {
  const node = readBootstrapNode(dump.requireSection('bootstrap'));
  const istioVersion = stringValue(node.metadata.ISTIO_VERSION);
  let proxySha = stringValue(node.metadata.ISTIO_PROXY_SHA);
  // Istio writes it as `istio-proxy:<sha>`.
  const parts = proxySha.split(':');
  if (parts.length > 1) proxySha = parts[1]!;

  const md = node.buildMetadata;
  let envoyVersion = `${node.version.major}.${node.version.minor}.${node.version.patch}`;
  if ('build.label' in md) envoyVersion += `-${stringValue(md['build.label'])}`;
  if ('revision.status' in md) envoyVersion += `/${stringValue(md['revision.status'])}`;
  if ('build.type' in md) envoyVersion += `/${stringValue(md['build.type'])}`;
  if ('ssl.version' in md) envoyVersion += `/${stringValue(md['ssl.version'])}`;

  let text = '';
  if (istioVersion !== '') text += `Istio Version:\t${istioVersion}\n`;
  if (proxySha !== '') text += `Istio Proxy Version:\t${proxySha}\n`;
  text += `Envoy Version:\t${envoyVersion}\n`;
  return tabWrite(text, { minWidth: 0, padding: 1 });
}
