import { validateHeaderValue } from 'node:http';
import type { HttpConnectionManagerOptions } from '@remora/config';

const OVERWRITE = 0;
const APPEND_IF_ABSENT = 1;
const PASS_THROUGH = 2;

/** Envoy's defaults, for listeners whose config names no connection manager settings. */
const ENVOY_DEFAULTS: HttpConnectionManagerOptions = {
  serverName: 'envoy',
  serverHeaderTransformation: 'OVERWRITE',
  httpProtocolOptions: { acceptHttp10: false },
};

/**
 * A listener's HTTP connection manager settings, compiled once per snapshot: whether
 * HTTP/1.0 and CONNECT are served, and the `server` header every response leaves with, proxied or local.
 */
export class ConnectionManagerConfig {
  readonly acceptHttp10: boolean;
  /** `upgrade_configs` enables CONNECT: routes that match one serve it unless they disable it. */
  readonly upgradeConnect: boolean;
  /** `server: NAME\r\n` for replies written as raw bytes; '' when none is added (PASS_THROUGH). */
  readonly serverLine: string;
  readonly #serverName: string;
  readonly #mode: number;

  /** Throws, naming the listener, when the server name cannot be a header value. */
  constructor(options: HttpConnectionManagerOptions | undefined, listenerName: string) {
    const o = options ?? ENVOY_DEFAULTS;
    try {
      validateHeaderValue('server', o.serverName);
    } catch (err) {
      throw new Error(`listener ${listenerName}: connectionManager.serverName: ${(err as Error).message}`);
    }
    this.acceptHttp10 = o.httpProtocolOptions.acceptHttp10;
    this.upgradeConnect = o.upgradeConnect === true;
    this.#serverName = o.serverName;
    this.#mode = o.serverHeaderTransformation === 'PASS_THROUGH' ? PASS_THROUGH : o.serverHeaderTransformation === 'APPEND_IF_ABSENT' ? APPEND_IF_ABSENT : OVERWRITE;
    this.serverLine = this.#mode === PASS_THROUGH ? '' : `server: ${o.serverName}\r\n`;
  }

  /**
   * Sets the `server` header of a response's flat header list, last of all edits, as Envoy
   * does when the response leaves the connection manager: so under OVERWRITE neither the
   * upstream's nor a route's own `server` survives. Allocation-free unless duplicates must go.
   */
  applyServer(headers: string[]): void {
    const mode = this.#mode;
    if (mode === PASS_THROUGH) return;
    let found = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      // Length first: most names are not six characters long.
      if (name.length !== 6 || name.toLowerCase() !== 'server') continue;
      if (mode === APPEND_IF_ABSENT) return;
      if (!found) {
        headers[i + 1] = this.#serverName;
        found = true;
      } else {
        headers.splice(i, 2);
        i -= 2;
      }
    }
    if (!found) headers.push('server', this.#serverName);
  }
}
