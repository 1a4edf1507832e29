import { isIP } from 'node:net';
import type { NameTableEntry } from '@remora/config';
import { encode, type Answer } from 'dns-packet';
import { HEADER_BYTES, TYPE_A, TYPE_AAAA } from './dns-wire.ts';

/** Istio's TTL for every answer from the name table: low, so clients soon see a new address. */
export const NAME_TABLE_TTL_SECONDS = 30;

/** The answers for one name, as encoded records; a leading CNAME (search-path names) is not shuffled. */
export interface NameAnswers {
  readonly a: readonly Buffer[];
  readonly aaaa: readonly Buffer[];
  /** 1 when the records start with a CNAME, else 0. */
  readonly fixed: number;
}

/** Where the proxy runs: its namespace and the pod's search path decide the extra names. */
export interface LookupTableScope {
  readonly namespace: string;
  readonly clusterDomain: string;
  /** resolv.conf's search domains (lower case, no trailing dot). */
  readonly search: readonly string[];
}

const NO_RECORDS: readonly Buffer[] = [];

/**
 * Istio's agent LookupTable (pkg/dns/client/dns.go), compiled from a name table: every name
 * the proxy answers itself, lower case without the trailing dot, with its A and AAAA answers
 * encoded once. For a Kubernetes-style host, the names a pod's resolver asks for: the FQDN,
 * `name.ns`, `name.ns.svc` and, in the proxy's own namespace, `name`. For every name not
 * already under the first search domain, that name with the first search domain appended
 * (what a resolver asks first when `ndots` makes it try the search path) answers with a
 * CNAME to the name, so the client needs no further lookups.
 */
export class DnsLookupTable {
  /** Number of names the table answers (search-path names included). */
  readonly size: number;
  readonly #names: ReadonlyMap<string, NameAnswers>;

  private constructor(names: ReadonlyMap<string, NameAnswers>) {
    this.#names = names;
    this.size = names.size;
  }

  static readonly EMPTY = new DnsLookupTable(new Map());

  static build(entries: readonly NameTableEntry[], scope: LookupTableScope): DnsLookupTable {
    const v4 = new Map<string, string[]>();
    const v6 = new Map<string, string[]>();
    const cname = new Map<string, string>();
    const all = new Set<string>();
    // Istio's agent takes the proxy's DNS domain `<ns>.svc.<domain>` without the namespace.
    const proxyDomain = `svc.${scope.clusterDomain}`.toLowerCase();
    const search0 = scope.search[0] ?? null;
    for (const entry of entries) {
      const ips4 = entry.addresses.filter((a) => isIP(a) === 4);
      const ips6 = entry.addresses.filter((a) => isIP(a) === 6);
      if (ips4.length === 0 && ips6.length === 0) continue;
      const alt = altHosts(entry, scope.namespace, proxyDomain);
      for (const h of alt) {
        all.add(h);
        // A later entry for the same name replaces an earlier one, as in the agent's maps.
        if (ips4.length > 0) v4.set(h, ips4);
        if (ips6.length > 0) v6.set(h, ips6);
        if (search0 !== null && !h.endsWith(search0)) {
          const expanded = `${h}.${search0}`;
          if (!alt.has(expanded)) {
            cname.set(expanded, h);
            all.add(expanded);
          }
        }
      }
    }
    const names = new Map<string, NameAnswers>();
    for (const name of all) {
      const target = cname.get(name);
      if (target === undefined) {
        names.set(name, { a: records(name, 'A', v4.get(name)), aaaa: records(name, 'AAAA', v6.get(name)), fixed: 0 });
        continue;
      }
      // A chained answer, CNAME then the target's addresses: some clients never follow a CNAME.
      const link = encodeRecord({ name, type: 'CNAME', class: 'IN', ttl: NAME_TABLE_TTL_SECONDS, data: target });
      const a = records(target, 'A', v4.get(target));
      const aaaa = records(target, 'AAAA', v6.get(target));
      // No address of the asked type: no CNAME either (NOERROR with no answer), as the agent does.
      names.set(name, { a: a.length > 0 ? [link, ...a] : NO_RECORDS, aaaa: aaaa.length > 0 ? [link, ...aaaa] : NO_RECORDS, fixed: 1 });
    }
    return new DnsLookupTable(names);
  }

  /**
   * The answers for `name` (lower case, no trailing dot) and `qtype`: null when the table does
   * not answer it (not a table name, or a type other than A and AAAA: the upstream resolvers
   * answer those); an empty list for a table name without addresses of that type.
   */
  lookup(name: string, qtype: number): { readonly records: readonly Buffer[]; readonly fixed: number } | null {
    if (qtype !== TYPE_A && qtype !== TYPE_AAAA) return null;
    const n = this.#names.get(name);
    if (n === undefined) return null;
    return { records: qtype === TYPE_A ? n.a : n.aaaa, fixed: n.fixed };
  }

  /** The names the table answers, sorted (for logs and tests). */
  names(): string[] {
    return [...this.#names.keys()].sort();
  }
}

/** Istio's generateAltHosts for Kubernetes hosts; any other host is only its own name. */
function altHosts(entry: NameTableEntry, proxyNamespace: string, proxyDomain: string): Set<string> {
  const host = entry.host.toLowerCase().replace(/\.$/, '');
  const out = new Set<string>([host]);
  // A service in another domain (cluster) than the proxy gets no short names: `name.ns`
  // could not be told apart across domains.
  if (entry.shortName === '' || !host.endsWith(proxyDomain)) return out;
  const short = entry.shortName.toLowerCase();
  const ns = entry.namespace.toLowerCase();
  out.add(`${short}.${ns}`);
  if (ns === proxyNamespace.toLowerCase()) out.add(short);
  out.add(`${short}.${ns}.${proxyDomain.split('.')[0]!}`);
  return out;
}

function records(name: string, type: 'A' | 'AAAA', ips: readonly string[] | undefined): readonly Buffer[] {
  if (ips === undefined || ips.length === 0) return NO_RECORDS;
  return ips.map((ip) => encodeRecord({ name, type, class: 'IN', ttl: NAME_TABLE_TTL_SECONDS, data: ip }));
}

/** One resource record in wire form (dns-packet writes no compression pointers, so it can go anywhere). */
function encodeRecord(record: Answer): Buffer {
  return encode({ answers: [record] }).subarray(HEADER_BYTES);
}
