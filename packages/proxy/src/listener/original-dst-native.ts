/**
 * The original destination by getsockopt(SO_ORIGINAL_DST), as Envoy's original_dst listener
 * filter reads it: one system call on the accepted socket, at any UID, whatever the size of
 * the pod's conntrack table. It needs the small Node-API addon in `native/` (built by
 * `scripts/build-native.sh` where a C compiler is there); without it, null from
 * `loadNativeOriginalDst` and the conntrack table is read instead (original-dst.ts).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { OriginalDestination } from './original-dst.ts';

interface Addon {
  originalDestination(fd: number): { address: string; port: number } | null;
}

/** Where the addon is: `packages/proxy/native/`, beside `dist/` (and in the deployed package). */
const ADDON = fileURLToPath(new URL('../../native/original-dst.node', import.meta.url));

/**
 * The lookup through the addon, or null when it is not built (or cannot load here). Returns
 * null for a connection that was not redirected: no NAT entry, or an original destination
 * that is the socket's own local address.
 */
export function loadNativeOriginalDst(): ((socket: Socket) => OriginalDestination | null) | null {
  if (!existsSync(ADDON)) return null;
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(ADDON) as Addon;
  } catch {
    return null;
  }
  return (socket) => {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) return null;
    const dst = addon.originalDestination(fd);
    if (dst === null) return null;
    // A connection made to the proxy directly has a conntrack entry without NAT: its
    // "original" destination is where it is.
    if (dst.port === socket.localPort && sameAddress(dst.address, socket.localAddress)) return null;
    return { address: dst.address, port: dst.port, family: dst.address.includes(':') ? 'IPv6' : 'IPv4' };
  };
}

function sameAddress(a: string, b: string | undefined): boolean {
  if (b === undefined) return false;
  return a === b || `::ffff:${a}` === b;
}
