/**
 * Where a proxy's config comes from: files (watched, read off the event loop) or a control
 * plane. A source hands the process whole configs, ready to compile; the process applies
 * them, and tells the source whether each went live (under xDS that is the ACK or NACK).
 */
import { resolve } from 'node:path';
import { FileWatcher, formatIssue, hasErrors, MeshLoaderThread, type ConfigIssue, type ProxyConfig, type ProxySettings, type ThreadLoadResult } from '@remora/config';
import type { Loggers } from '../logger.ts';
import type { ProxyOptions } from './options.ts';

/** What went into making a config ready, for the one log line each applied config writes. */
export interface SourceTimings {
  /** `read 12 ms, validate 3 ms, translate 40 ms on the loader thread; handover 2 ms`. */
  readonly summary: string;
}

export interface SourcedConfig {
  readonly config: ProxyConfig;
  readonly timings: SourceTimings | null;
  /** The workload's proxy settings (MeshConfig defaultConfig, ProxyConfig, annotation); absent: the source has none (xDS). */
  readonly proxySettings?: ProxySettings;
}

/** Applies a config; resolves with null when it went live, else why not. */
export type ApplyConfig = (update: SourcedConfig) => Promise<string | null>;

/** A counter or gauge of the source's, by Envoy's stat name. */
export type SourceStat = readonly [name: string, value: number, kind: 'counter' | 'gauge'];

export interface ConfigSource {
  /** The first config; null when there is none that can serve (the problems are logged). */
  first(): Promise<SourcedConfig | null>;
  /** From now on, offers each new config to `apply`. */
  watch(apply: ApplyConfig): void;
  /** The problem with the newest config the source could not use, until a good one lands. */
  readonly lastError: string | null;
  /** The source's own counters and gauges for `/stats` (a control plane's `control_plane.*`, `*.cds.*`, ...). */
  statEntries?(): Iterable<SourceStat>;
  close(): void;
}

/**
 * Istio resources from files and directories: watched (a change, a rename, a ConfigMap's
 * `..data` swap), read, validated and translated on a worker thread. A broken change is
 * logged and the running config stays. Reloads never overlap (an older read must not land
 * after a newer one), and a burst of changes while one runs makes one more reload.
 */
export class FileConfigSource implements ConfigSource {
  readonly #opts: ProxyOptions;
  readonly #loggers: Loggers;
  readonly #loader = new MeshLoaderThread();
  #watcher: FileWatcher | null = null;
  #apply: ApplyConfig | null = null;
  #lastError: string | null = null;
  #closed = false;
  /** Reloads run one after another; the tail is held until `watch` is called. */
  #reloadTail: Promise<unknown>;
  #watching: () => void = () => undefined;
  /** A reload waiting its turn: later file events join it instead of queueing more. */
  #queued: Promise<boolean> | null = null;
  /** The version last handed over, so that a change that translates the same is not applied again. */
  #current: string | null = null;

  /** HTTP filters registered from `--filter` modules, which EnvoyFilters may insert. */
  readonly #extensionFilters: ReadonlySet<string>;

  constructor(opts: ProxyOptions, loggers: Loggers, extensionFilters: ReadonlySet<string> = new Set()) {
    this.#extensionFilters = extensionFilters;
    this.#opts = opts;
    this.#loggers = loggers;
    this.#reloadTail = new Promise<void>((r) => (this.#watching = r));
  }

  get lastError(): string | null {
    return this.#lastError;
  }

  async first(): Promise<SourcedConfig | null> {
    // Watching starts before the first read, so a change made while it loads is not missed.
    const extra = [this.#opts.meshConfigFile, this.#opts.annotationsFile].filter((f) => f !== undefined);
    this.#watcher = new FileWatcher([...this.#opts.configPaths, ...extra], () => void this.reload());
    await this.#watcher.ready;
    const loaded = await this.#load();
    if (loaded !== null) this.#current = loaded.config.version;
    return loaded;
  }

  watch(apply: ApplyConfig): void {
    this.#apply = apply;
    this.#watching();
  }

  reload(): Promise<boolean> {
    if (this.#queued !== null) return this.#queued;
    const run = this.#reloadTail.then(() => {
      this.#queued = null;
      return this.#reloadOnce();
    });
    this.#queued = run;
    this.#reloadTail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#loader.close();
    this.#watching();
  }

  async #reloadOnce(): Promise<boolean> {
    const apply = this.#apply;
    if (apply === null || this.#closed) return false;
    const cfg = this.#loggers.get('config');
    let loaded: SourcedConfig | null;
    try {
      loaded = await this.#load();
    } catch (err) {
      this.#lastError = (err as Error).message;
      cfg.error(`reading the config failed: ${(err as Error).message}; keeping config ${this.#current ?? '(none)'}`);
      return false;
    }
    if (loaded === null) {
      cfg.error(`keeping config ${this.#current ?? '(none)'}`);
      return false;
    }
    if (loaded.config.version === this.#current || this.#closed) return true;
    const problem = await apply(loaded);
    this.#lastError = problem;
    if (problem !== null) return false;
    this.#current = loaded.config.version;
    return true;
  }

  async #load(): Promise<SourcedConfig | null> {
    const cfg = this.#loggers.get('config');
    const result = await this.#loader.load(this.#opts.configPaths, this.#opts.node, this.#opts.ports, {
      dnsRefreshMs: this.#opts.dnsRefreshMs,
      ...(this.#extensionFilters.size > 0 ? { extensionFilters: this.#extensionFilters } : {}),
      ...(this.#opts.credentialsDir !== null ? { credentialsDir: resolve(this.#opts.credentialsDir) } : {}),
      ...(this.#opts.meshConfigFile !== undefined ? { meshConfigFile: this.#opts.meshConfigFile } : {}),
      ...(this.#opts.annotationsFile !== undefined ? { annotationsFile: this.#opts.annotationsFile } : {}),
      ...(this.#opts.annotationsJson !== undefined ? { annotationsJson: this.#opts.annotationsJson } : {}),
    });
    for (const issue of result.issues) cfg.log(issue.severity === 'error' ? 'error' : 'warning', formatIssue(issue));
    if (hasErrors(result.issues) || result.config === null) {
      this.#lastError = summarize(result.issues);
      return null;
    }
    return { config: result.config, timings: { summary: timingSummary(result.timings) }, ...(result.proxySettings !== null ? { proxySettings: result.proxySettings } : {}) };
  }
}

function timingSummary(t: ThreadLoadResult['timings']): string {
  const ms = (x: number): string => `${Math.round(x)} ms`;
  return `read ${ms(t.readMs)}, validate ${ms(t.validateMs)}, translate ${ms(t.translateMs)} on the loader thread; handover ${ms(t.handoverMs)}`;
}

export function summarize(issues: readonly ConfigIssue[]): string {
  return issues
    .filter((i) => i.severity === 'error')
    .map(formatIssue)
    .join('\n');
}
