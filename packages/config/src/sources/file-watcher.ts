import { watch, type FSWatcher } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { isResourceFileName } from './load-files.ts';

export interface FileWatcherOptions {
  /** Events are coalesced for this long before `onChange` (default 150 ms). */
  readonly debounceMs?: number;
  /**
   * The safety net: every this often the watched files are looked at again (inode, size,
   * times) and a difference counts as a change even if no event came (default 5 s; 0: never).
   */
  readonly recheckMs?: number;
  /** Which files found in a watched directory are stamped by the re-check (default: YAML and JSON, as the loader reads). */
  readonly isWatchedFile?: (name: string) => boolean;
}

/** One watched directory: any event in it counts (`names` null), or only events on these names. */
interface DirWatch {
  readonly ino: bigint;
  readonly watcher: FSWatcher;
  names: ReadonlySet<string> | null;
}

interface Plan {
  /** Real path of each directory to watch → its inode and the names that matter (null: all). */
  readonly dirs: Map<string, { ino: bigint; names: Set<string> | null }>;
  /** Identity and times of every file read, to notice a change no event told of. */
  readonly stamp: string;
}

/**
 * Watches files and directory trees and calls `onChange` once a burst of changes has settled.
 *
 * Each directory is watched on its own, without `recursive` (on Linux a recursive watch stops
 * reporting a file once it was replaced by rename, the way editors save and Kubernetes
 * updates a mounted ConfigMap or Secret). Event file names are not trusted: after every burst
 * the set of directories is worked out again from what is on disk, so a directory that
 * appears later, a directory deleted and made again, and a symlink that now points elsewhere
 * (Kubernetes swaps `..data`) are all followed. A path that does not exist yet is watched
 * through its nearest existing parent. The periodic re-check covers what inotify cannot see
 * (a network filesystem, a watch limit reached).
 */
export class FileWatcher {
  readonly #targets: readonly string[];
  readonly #onChange: () => void;
  readonly #debounceMs: number;
  readonly #isWatchedFile: (name: string) => boolean;
  readonly #dirs = new Map<string, DirWatch>();
  #timer: NodeJS.Timeout | null = null;
  #recheck: NodeJS.Timeout | null = null;
  #stamp = '';
  /** A re-plan is running; `#again` asks for another when it ends. */
  #busy = false;
  #again: 'event' | 'recheck' | null = null;
  #closed = false;
  /** Resolves once the first plan is in place (events before it are not lost: they re-plan). */
  readonly ready: Promise<void>;

  constructor(paths: readonly string[], onChange: () => void, opts: FileWatcherOptions = {}) {
    this.#targets = [...new Set(paths.map((p) => resolve(p)))];
    this.#onChange = onChange;
    this.#debounceMs = opts.debounceMs ?? 150;
    this.#isWatchedFile = opts.isWatchedFile ?? isResourceFileName;
    this.ready = this.#settle('start');
    const recheckMs = opts.recheckMs ?? 5_000;
    if (recheckMs > 0) {
      this.#recheck = setInterval(() => void this.#settle('recheck'), recheckMs);
      this.#recheck.unref();
    }
  }

  /** Directories watched now (real paths), for tests and diagnostics. */
  get watchedDirectories(): string[] {
    return [...this.#dirs.keys()].sort();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#recheck) clearInterval(this.#recheck);
    for (const d of this.#dirs.values()) d.watcher.close();
    this.#dirs.clear();
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) this.#timer.refresh();
    else
      this.#timer = setTimeout(() => {
        this.#timer = null;
        void this.#settle('event');
      }, this.#debounceMs);
  }

  /**
   * Works out the directories again, re-watches, and tells of a change: always after events
   * (a rewrite within one timestamp tick leaves the stamp as it was), after a re-check only
   * when the stamp moved.
   */
  async #settle(why: 'start' | 'event' | 'recheck'): Promise<void> {
    if (this.#closed) return;
    if (this.#busy) {
      if (this.#again !== 'event') this.#again = why === 'start' ? 'event' : why;
      return;
    }
    this.#busy = true;
    try {
      let reason: 'start' | 'event' | 'recheck' | null = why;
      while (reason !== null && !this.#closed) {
        this.#again = null;
        const plan = await this.#plan();
        if (this.#closed) return;
        this.#reconcile(plan);
        const moved = plan.stamp !== this.#stamp;
        this.#stamp = plan.stamp;
        if (reason === 'event' || (reason === 'recheck' && moved)) this.#onChange();
        reason = this.#again;
      }
    } finally {
      this.#busy = false;
    }
  }

  #reconcile(plan: Plan): void {
    for (const [dir, d] of this.#dirs) {
      const want = plan.dirs.get(dir);
      if (want === undefined || want.ino !== d.ino) {
        d.watcher.close();
        this.#dirs.delete(dir);
      }
    }
    for (const [dir, want] of plan.dirs) {
      const have = this.#dirs.get(dir);
      if (have !== undefined) {
        have.names = want.names;
        continue;
      }
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: false }, (_event, filename) => {
          const names = entry.names;
          if (names !== null && filename !== null && !names.has(String(filename))) return;
          this.#schedule();
        });
      } catch {
        continue; // gone since the plan: the parent's event brings a new plan
      }
      const entry: DirWatch = { ino: want.ino, watcher, names: want.names };
      // The directory was removed or cannot be watched any longer: plan again.
      watcher.on('error', () => {
        watcher.close();
        if (this.#dirs.get(dir) === entry) this.#dirs.delete(dir);
        this.#schedule();
      });
      this.#dirs.set(dir, entry);
    }
  }

  async #plan(): Promise<Plan> {
    const dirs = new Map<string, { ino: bigint; names: Set<string> | null }>();
    const stamp: string[] = [];
    const add = async (dir: string, name: string | null): Promise<void> => {
      const real = await realpath(dir).catch(() => null);
      const st = real === null ? undefined : await stat(real, { bigint: true }).catch(() => undefined);
      if (real === null || st === undefined || !st.isDirectory()) return;
      const have = dirs.get(real);
      if (have === undefined) dirs.set(real, { ino: st.ino, names: name === null ? null : new Set([name]) });
      else if (have.names !== null) {
        if (name === null) have.names = null;
        else have.names.add(name);
      }
    };
    const stampFile = async (file: string): Promise<void> => {
      const st = await stat(file, { bigint: true }).catch(() => undefined);
      stamp.push(st === undefined ? `${file}:-` : `${file}:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`);
      // A file reached through a symlink is written in its real directory.
      const real = await realpath(file).catch(() => null);
      if (real !== null && real !== file) await add(dirname(real), null);
    };
    const walk = async (dir: string, seen: Set<string>): Promise<void> => {
      const real = await realpath(dir).catch(() => null);
      if (real === null || seen.has(real)) return;
      seen.add(real);
      await add(real, null);
      const entries = await readdir(dir).catch(() => [] as string[]);
      for (const name of entries.sort()) {
        if (name.startsWith('.')) continue; // as the loader: Kubernetes' `..data` is reached through the file symlinks
        const full = join(dir, name);
        const st = await stat(full).catch(() => undefined);
        if (st?.isDirectory()) await walk(full, seen);
        else if (st?.isFile() && this.#isWatchedFile(name)) await stampFile(full);
      }
    };
    for (const target of this.#targets) {
      // The nearest existing parent sees the target (or a directory on its way) appear, go, or be swapped.
      let child = target;
      for (let parent = dirname(child); ; child = parent, parent = dirname(parent)) {
        const st = await stat(parent).catch(() => undefined);
        if (st?.isDirectory()) {
          await add(parent, basename(child));
          break;
        }
        if (parent === dirname(parent)) break;
      }
      const st = await stat(target).catch(() => undefined);
      if (st === undefined) stamp.push(`${target}:-`);
      else if (st.isDirectory()) await walk(target, new Set());
      else {
        // A file named on its own: any event beside it counts (a Kubernetes swap renames `..data`, not the file).
        await add(dirname(target), null);
        await stampFile(target);
      }
    }
    return { dirs, stamp: stamp.join('\n') };
  }
}
