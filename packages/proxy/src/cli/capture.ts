import type { Socket } from 'node:net';
import type { Logger } from '../logger.ts';
import { ConntrackTable, tproxyOriginalDestination, type OriginalDestination } from '../listener/original-dst.ts';
import { loadNativeOriginalDst } from '../listener/original-dst-native.ts';

/** Istio's interception modes (`sidecar.istio.io/interceptionMode`); NONE: no capture. */
export type CaptureMode = 'REDIRECT' | 'TPROXY' | 'NONE';

export const CAPTURE_MODES: readonly CaptureMode[] = ['REDIRECT', 'TPROXY', 'NONE'];

/**
 * How capture listeners find a connection's original destination, for `--interception-mode`:
 * REDIRECT asks the kernel with getsockopt(SO_ORIGINAL_DST) when the native addon is built,
 * else reads conntrack (the table opened once, on the first redirected connection, from
 * the inherited descriptor `conntrackFd` or the path), TPROXY the socket's local address;
 * NONE: undefined, every connection is served as made to the listener. When conntrack cannot
 * be opened, one warning says why and connections are treated as not redirected.
 */
export function captureLookup(
  mode: CaptureMode,
  conntrackFd: number | null,
  log: Logger,
): ((socket: Socket, listenerPort: number) => Promise<OriginalDestination | null>) | undefined {
  if (mode === 'NONE') return undefined;
  if (mode === 'TPROXY') return (socket, listenerPort) => Promise.resolve(tproxyOriginalDestination(socket, listenerPort));
  // getsockopt(SO_ORIGINAL_DST) when the addon is built (as Envoy: one system call, any UID);
  // REMORA_ORIGINAL_DST=conntrack reads the table even then (to compare the two).
  const native = process.env.REMORA_ORIGINAL_DST === 'conntrack' ? null : loadNativeOriginalDst();
  if (native !== null) {
    log.info('interception mode REDIRECT: original destinations by getsockopt(SO_ORIGINAL_DST)');
    return (socket) => {
      try {
        return Promise.resolve(native(socket));
      } catch (err) {
        log.debug(`original destination of ${socket.remoteAddress}:${socket.remotePort}: ${(err as Error).message}`);
        return Promise.resolve(null);
      }
    };
  }
  let table: Promise<ConntrackTable | null> | null = null;
  const open = (): Promise<ConntrackTable | null> =>
    (table ??= ConntrackTable.open(conntrackFd !== null ? { fd: conntrackFd } : {}).then(
      (t) => {
        log.info(`interception mode REDIRECT: original destinations from conntrack (${conntrackFd !== null ? `descriptor ${conntrackFd}` : '/proc/net/nf_conntrack'})`);
        return t;
      },
      (err: Error) => {
        log.warn(`interception mode REDIRECT: ${err.message}; redirected connections are served as if made to the capture listener (no original destination)`);
        return null;
      },
    ));
  return async (socket) => {
    const t = await open();
    return t === null ? null : t.lookup(socket);
  };
}
