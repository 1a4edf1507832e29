import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { statSync } from 'node:fs';

/**
 * Watches the `-c` paths and calls `onChange` once a burst of file events has settled.
 * Directories are watched recursively; a file is watched through its directory, so editors
 * that save by writing a new file and renaming it over the old one are seen too.
 */
export class FileWatcher {
  readonly #watchers: FSWatcher[] = [];
  readonly #debounceMs: number;
  readonly #onChange: () => void;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(paths: readonly string[], onChange: () => void, debounceMs = 150) {
    this.#onChange = onChange;
    this.#debounceMs = debounceMs;
    const filesByDir = new Map<string, Set<string> | null>();
    for (const p of paths) {
      const abs = resolve(p);
      const st = statSync(abs, { throwIfNoEntry: false });
      if (st?.isDirectory()) filesByDir.set(abs, null);
      else {
        const dir = dirname(abs);
        const existing = filesByDir.get(dir);
        if (existing === null) continue; // whole directory already watched
        const set = existing ?? new Set<string>();
        set.add(basename(abs));
        filesByDir.set(dir, set);
      }
    }
    for (const [dir, names] of filesByDir) {
      try {
        const w = watch(dir, { recursive: names === null, persistent: false }, (_event, filename) => {
          if (names !== null && filename !== null && !names.has(basename(String(filename)))) return;
          this.#schedule();
        });
        w.on('error', () => this.#schedule());
        this.#watchers.push(w);
      } catch {
        // A path that vanished is reported by the next load; nothing to watch meanwhile.
      }
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) this.#timer.refresh();
    else
      this.#timer = setTimeout(() => {
        this.#timer = null;
        if (!this.#closed) this.#onChange();
      }, this.#debounceMs);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
  }
}
