// Istio's endpoint metadata and cluster names as labels and ports: shared by the exporter and the cluster importer.
export const TLS_MODE_LABEL = 'security.istio.io/tlsMode';
export const CANONICAL_NAME = 'service.istio.io/canonical-name';
export const CANONICAL_REVISION = 'service.istio.io/canonical-revision';

/**
 * Endpoint labels as istiod's endpoint metadata tells them: `tlsMode` from the transport
 * socket match metadata, the canonical service and revision from `istio.workload`
 * (`<workload>;<ns>;<canonical name>;<revision>;<cluster>`), also as `app`/`version`, which
 * the metrics read (a revision of `latest` is Istio's stand-in for no version label).
 */
export function endpointLabelsFromIstio(workload: string | undefined, tlsMode: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (tlsMode !== undefined) labels[TLS_MODE_LABEL] = tlsMode;
  if (workload !== undefined) {
    const [, , canonical = '', revision = ''] = workload.split(';');
    if (canonical !== '') {
      labels[CANONICAL_NAME] = canonical;
      labels.app = canonical;
    }
    if (revision !== '') {
      labels[CANONICAL_REVISION] = revision;
      if (revision !== 'latest') labels.version = revision;
    }
  }
  return labels;
}

/** `outbound|9080|v1|reviews.default.svc.cluster.local` → 9080; `inbound|8080||` → 8080; else 0. */
export function portOfClusterName(name: string): number {
  const parts = name.split('|');
  const port = parts.length === 4 ? Number(parts[1]) : NaN;
  return Number.isInteger(port) && port > 0 ? port : 0;
}
