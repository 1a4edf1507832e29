// Where a gateway's and a DestinationRule's credentialName files are: the keys of a Kubernetes TLS secret.
import { join } from 'node:path';

export const DEFAULT_CREDENTIALS_DIR = '/etc/remora/credentials';

/** The files of credential `name` under `dir`: the keys of a Kubernetes TLS secret. */
export function credentialFiles(dir: string, name: string): { readonly cert: string; readonly key: string; readonly ca: string } {
  const base = join(dir, name);
  return { cert: join(base, 'tls.crt'), key: join(base, 'tls.key'), ca: join(base, 'ca.crt') };
}
