/** Unix domain sockets as Envoy names them (its `pipe` address), for listeners and upstream connections. */
import { lstatSync, unlinkSync } from 'node:fs';

/** Envoy's pipe path as Node takes it: `@name` is Linux's abstract namespace, a leading NUL byte. */
export function socketPath(path: string): string {
  return path.startsWith('@') ? `\0${path.slice(1)}` : path;
}

/**
 * A socket file left by a proxy that did not close (a crash, a kill): removed so the path can
 * be bound again, as Envoy does. Anything else at the path (a file, a directory) is left and
 * the listen fails naming it.
 */
export function removeStaleSocket(path: string): void {
  if (path.startsWith('@')) return;
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (isSocket) unlinkSync(path);
}
