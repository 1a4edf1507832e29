/**
 * Host names as Istio reads them: short names expand into the resource's namespace, and
 * `*`-prefixed names are wildcards. All comparisons are on lower-case names.
 */

/**
 * Istio's ResolveShortnameToFQDN: a name without a dot is a Kubernetes service in the
 * resource's namespace (`reviews` → `reviews.default.svc.cluster.local`); anything with a
 * dot, and wildcards, are taken as written.
 */
export function resolveHost(host: string, namespace: string, clusterDomain: string): string {
  const h = host.toLowerCase();
  if (h === '*' || h.startsWith('*') || h.includes('.')) return h;
  return `${h}.${namespace}.svc.${clusterDomain}`;
}

export function isWildcard(host: string): boolean {
  return host.startsWith('*');
}

/**
 * Does `pattern` (possibly `*` or `*.suffix`) cover `host` (possibly a wildcard itself)?
 * `*.example.com` covers `a.example.com`, `a.b.example.com` and `*.a.example.com`.
 */
export function hostCovers(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (!pattern.startsWith('*')) return pattern === host;
  const suffix = pattern.slice(1); // `.example.com`
  if (host.startsWith('*')) return host.slice(1).endsWith(suffix);
  return host.endsWith(suffix) && host.length > suffix.length;
}

/**
 * Istio's host intersection for binding a VirtualService host to a Gateway server host:
 * the more specific of the two when one covers the other, else null.
 */
export function intersectHosts(a: string, b: string): string | null {
  if (hostCovers(a, b)) return b;
  if (hostCovers(b, a)) return a;
  return null;
}

/** Specificity for "most specific host wins": exact names first, then longer wildcards. */
export function hostSpecificity(host: string): number {
  if (host === '*') return 0;
  if (host.startsWith('*')) return host.length;
  return 1_000_000 + host.length;
}

/**
 * Names a client in `clientNamespace` may use for a Kubernetes-style service, as Istio puts
 * them in a sidecar's virtual host domains: the FQDN, `name.ns.svc`, `name.ns` and, from the
 * same namespace only, `name`. Hosts outside `.svc.<domain>` have only their own name.
 */
export function serviceHostAliases(fqdn: string, clusterDomain: string, clientNamespace: string): string[] {
  const suffix = `.svc.${clusterDomain}`;
  if (!fqdn.endsWith(suffix)) return [fqdn];
  const base = fqdn.slice(0, -suffix.length); // `reviews.default`
  const dot = base.lastIndexOf('.');
  if (dot < 0) return [fqdn];
  const name = base.slice(0, dot);
  const ns = base.slice(dot + 1);
  const out = [fqdn, `${base}.svc`, base];
  if (ns === clientNamespace) out.push(name);
  return out;
}

/** Splits `reviews.default.svc.cluster.local` into name and namespace; other hosts: the host and ''. */
export function serviceNameAndNamespace(fqdn: string, clusterDomain: string): { name: string; namespace: string } {
  const suffix = `.svc.${clusterDomain}`;
  if (fqdn.endsWith(suffix)) {
    const base = fqdn.slice(0, -suffix.length);
    const dot = base.lastIndexOf('.');
    if (dot > 0) return { name: base.slice(0, dot), namespace: base.slice(dot + 1) };
  }
  return { name: fqdn, namespace: '' };
}
