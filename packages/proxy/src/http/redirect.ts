import type { RedirectAction } from '@remora/config';

interface RedirectRequest {
  readonly scheme: string;
  readonly authority: string;
  readonly path: string;
}

const DEFAULT_PORT: Record<string, string> = { http: '80', https: '443' };

/**
 * The `Location` of an Istio HTTPRedirect: scheme, authority and port replaced as asked, the
 * whole path replaced by `uri` (the request's query kept unless `uri` has its own), a port
 * equal to the scheme's default left out; `stripQuery` drops the request's query (not one
 * `uri` carries, as Envoy's strip_query).
 */
export function redirectLocation(r: RedirectAction, req: RedirectRequest): string {
  const scheme = r.scheme ?? req.scheme;
  let host = req.authority;
  let port: string | null = null;
  const colon = host.lastIndexOf(':');
  if (colon > 0 && !host.endsWith(']')) {
    port = host.slice(colon + 1);
    host = host.slice(0, colon);
  }
  if (r.authority !== null) {
    host = r.authority;
    // A new authority without a port drops the request's port, as Envoy's host_redirect.
    port = null;
  }
  if (r.port !== null) port = String(r.port);
  else if (r.derivePortFromScheme) port = null;
  else if (r.scheme !== null && r.scheme !== req.scheme) port = null;
  if (port !== null && DEFAULT_PORT[scheme] === port) port = null;
  let path = req.path;
  if (r.path !== null) {
    const q = req.path.indexOf('?');
    path = r.path.includes('?') || q < 0 || r.stripQuery === true ? r.path : r.path + req.path.slice(q);
  } else if (r.stripQuery === true) {
    const q = req.path.indexOf('?');
    if (q >= 0) path = req.path.slice(0, q);
  }
  return `${scheme}://${host}${port === null ? '' : `:${port}`}${path}`;
}
