import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

/** One upstream resolver: an address and port (53 unless given otherwise). */
export interface Nameserver {
  readonly address: string;
  readonly port: number;
}

/** What the DNS proxy takes from a resolv.conf: where to forward, and the pod's search path. */
export interface ResolvConf {
  readonly nameservers: readonly Nameserver[];
  /** The search domains, lower case and without a trailing dot, in order. */
  readonly search: readonly string[];
}

/** The pod's resolver configuration (Istio's agent reads it once, at start). */
export const RESOLV_CONF_PATH = '/etc/resolv.conf';

/**
 * resolv.conf(5) as Istio's agent reads it (miekg/dns ClientConfigFromFile): every
 * `nameserver` (IPv4 or IPv6, an IPv6 zone is dropped), and the last `search` or `domain`
 * line (a later one replaces an earlier one). Other lines and comments are ignored;
 * addresses that are not IPs are skipped, as the resolver library skips them.
 */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: Nameserver[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...values] = line.split(/\s+/);
    switch (key) {
      case 'nameserver': {
        const address = (values[0] ?? '').replace(/%.*$/, '');
        if (isIP(address) !== 0) nameservers.push({ address, port: 53 });
        break;
      }
      case 'search':
      case 'domain':
        search = values.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
        if (key === 'domain') search = search.slice(0, 1);
        break;
      default:
        break;
    }
  }
  return { nameservers, search };
}

/** Reads and parses `path`; throws with the path in the message when it cannot be read. */
export function readResolvConf(path: string): ResolvConf {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the resolver configuration ${path}: ${(err as Error).message}`);
  }
  return parseResolvConf(text);
}
