import { statSync } from 'node:fs';

/**
 * What tells a rewritten file from the one read before: device, inode, size and both times
 * (through symlinks). The inode catches a file renamed over or swapped in by Kubernetes; the
 * change time catches a copy that kept the old modification time (a restore, `cp -p`,
 * `rsync -a`). null when the file cannot be stat'ed.
 */
export function fileStamp(path: string): string | null {
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  return st === undefined ? null : `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}
