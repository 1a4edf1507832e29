import type { RouteConfiguration } from '@remora/config';
import type { CompiledVirtualHost, RouteTable, VirtualHostFinder } from './route-table.ts';

/**
 * A sidecar's outbound routing over istiod's per-port tables (`9080`, `80`, …): the table is
 * picked by the request's destination port, read from its authority, then the table picks
 * the virtual host. An authority without a port goes to the table that has a virtual host
 * for that bare name (a service's names answer without a port on its default port); any
 * other request goes to the fallback table, which like every table carries the hosts that
 * are not services. Two map lookups per request, however many ports.
 */
export class RouteTableByPort implements VirtualHostFinder {
  readonly #byPort = new Map<number, RouteTable>();
  readonly #byBareHost = new Map<string, RouteTable>();
  readonly #fallback: RouteTable | null;

  /** `tables`: the compiled tables with their configurations, by destination port. */
  constructor(tables: readonly { readonly port: number; readonly config: RouteConfiguration; readonly table: RouteTable }[], fallback: RouteTable | null) {
    for (const { port, config, table } of tables) {
      this.#byPort.set(port, table);
      for (const v of config.virtualHosts) {
        for (const raw of v.domains) {
          const d = raw.toLowerCase();
          if (d.includes('*') || portOf(d) !== NO_PORT) continue;
          if (!this.#byBareHost.has(d)) this.#byBareHost.set(d, table);
        }
      }
    }
    this.#fallback = fallback;
  }

  /** `authority` must already be lower case. */
  find(authority: string): CompiledVirtualHost | null {
    const port = portOf(authority);
    const table = (port === NO_PORT ? this.#byBareHost.get(authority) : this.#byPort.get(port)) ?? this.#fallback;
    return table === null ? null : table.find(authority);
  }
}

/** No `:port` in the authority. */
const NO_PORT = -1;
/** A `:port` that is not a number: no table is named after it. */
const BAD_PORT = -2;

/** The authority's port, parsed in place (no substring per request), as RouteTable splits it. */
function portOf(authority: string): number {
  const colon = authority.lastIndexOf(':');
  if (colon <= 0 || authority.charCodeAt(authority.length - 1) === 93 /* ] */ || authority.indexOf(']', colon) >= 0) return NO_PORT;
  if (colon === authority.length - 1) return BAD_PORT;
  let port = 0;
  for (let i = colon + 1; i < authority.length; i++) {
    const c = authority.charCodeAt(i) - 48;
    if (c < 0 || c > 9 || port > 65535) return BAD_PORT;
    port = port * 10 + c;
  }
  return port;
}
