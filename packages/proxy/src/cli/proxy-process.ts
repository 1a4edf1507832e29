import { resolve } from 'node:path';
import { FileWatcher, formatIssue, hasErrors, MeshLoaderThread, type ConfigIssue, type ProxyConfig, type ThreadLoadResult } from '@remora/config';
import { AdminServer } from '../admin/admin-server.ts';
import { HealthServer, PrometheusServer } from '../admin/health-server.ts';
import { Loggers } from '../logger.ts';
import { Runtime, type RuntimeOptions } from '../runtime/runtime.ts';
import { AccessLog } from '../telemetry/access-log.ts';
import { IstioMetrics } from '../telemetry/istio-metrics.ts';
import type { ProxyOptions } from './options.ts';
import { IdentityStore } from '../tls/identity-store.ts';

/** Where output goes; stdout (access log) and stderr (own log) unless given. */
export interface ProcessSinks {
  readonly accessLog?: (chunk: string) => void;
  readonly log?: (line: string) => void;
  /** Peer identities for plaintext connections (tests of identity-based policy before mTLS). */
  readonly peerIdentity?: RuntimeOptions['peerIdentity'];
}

/** Thrown when the proxy cannot start; the message says why. */
export class StartError extends Error {
  override readonly name = 'StartError';
}

/**
 * A whole proxy process: config from files (watched), the runtime, admin/health/metrics
 * servers, and the lifecycle (SIGTERM drains, then exits 0).
 */
export class ProxyProcess {
  readonly opts: ProxyOptions;
  readonly loggers: Loggers;
  readonly runtime: Runtime;
  readonly admin: AdminServer;
  readonly health: HealthServer;
  readonly prometheus: PrometheusServer | null;
  readonly identity: IdentityStore | null;
  #watcher: FileWatcher | null = null;
  /** Reads, validates and translates the files off the event loop. */
  readonly #loader = new MeshLoaderThread();
  #lastError: string | null = null;
  /** The timings of the last successful load, logged once its config is applied. */
  #loadTimings: ThreadLoadResult['timings'] | null = null;
  #stopping: Promise<void> | null = null;
  #started = false;
  /** Reloads run one after another; the tail is held until start has applied the first config. */
  #reloadTail: Promise<unknown>;
  #startDone: () => void = () => undefined;
  /** A reload waiting its turn: later file events join it instead of queueing more. */
  #queued: Promise<boolean> | null = null;
  readonly #onExit: (code: number) => void;

  /**
   * Builds a process; the workload identity (if its files exist) is read first, so that the
   * first listeners and upstream pools already serve with it.
   */
  static async create(opts: ProxyOptions, onExit: (code: number) => void, sinks: ProcessSinks = {}): Promise<ProxyProcess> {
    const loggers = new Loggers(opts.logLevel, sinks.log);
    const identity = opts.command === 'validate' ? null : await IdentityStore.open(opts.identityPaths, loggers.get('secret'));
    return new ProxyProcess(opts, onExit, sinks, loggers, identity);
  }

  private constructor(opts: ProxyOptions, onExit: (code: number) => void, sinks: ProcessSinks, loggers: Loggers, identity: IdentityStore | null) {
    this.opts = opts;
    this.#onExit = onExit;
    this.loggers = loggers;
    this.identity = identity;
    this.runtime = new Runtime({
      identity,
      node: opts.node,
      loggers: this.loggers,
      accessLog: new AccessLog(opts.accessLogFormat, sinks.accessLog),
      metrics: new IstioMetrics(),
      trustedHops: opts.numTrustedProxies,
      overload: { maxConnections: opts.overloadMaxConnections, maxHeapBytes: opts.overloadMaxHeapMb * 1024 * 1024 },
      timeouts: { headersMs: opts.requestHeadersTimeoutMs, requestMs: opts.requestTimeoutMs },
      ...(sinks.peerIdentity ? { peerIdentity: sinks.peerIdentity } : {}),
    });
    this.admin = new AdminServer(this.runtime, this.loggers, {
      lastConfigError: () => this.#lastError,
      quit: () => void this.stop(0, 0),
      drainListeners: () => {
        for (const l of this.runtime.listeners.values()) l.stopAccepting();
      },
      setHealthFailed: (failed) => {
        this.health.healthFailed = failed;
      },
      startedAt: Date.now(),
      commandLine: process.argv.slice(2),
    });
    this.health = new HealthServer(this.runtime);
    this.prometheus = opts.prometheusPort > 0 ? new PrometheusServer(this.runtime) : null;
    this.#reloadTail = new Promise<void>((r) => (this.#startDone = r));
  }

  /** Loads the config and opens every port; throws StartError with every reason to stop. */
  async start(): Promise<void> {
    const log = this.loggers.get('main');
    // Watching starts before the first read, so a change made while it loads is not missed.
    this.#watcher = new FileWatcher(this.opts.configPaths, () => void this.reload());
    await this.#watcher.ready;
    const loaded = await this.#load();
    if (loaded === null) {
      this.#watcher.close();
      this.#loader.close();
      this.#startDone();
      throw new StartError('invalid configuration; nothing started');
    }
    try {
      await this.admin.listen('127.0.0.1', this.opts.adminPort);
      await this.health.listen(this.opts.ports.bindAddress, this.opts.healthPort);
      if (this.prometheus) await this.prometheus.listen(this.opts.ports.bindAddress, this.opts.prometheusPort);
      const compileStart = performance.now();
      await this.runtime.apply(loaded);
      this.#logTimings(loaded, performance.now() - compileStart);
    } catch (err) {
      this.#watcher.close();
      this.#loader.close();
      this.#closeServers();
      await this.runtime.close();
      this.identity?.close();
      this.#startDone();
      throw new StartError((err as Error).message);
    }
    this.#started = true;
    this.#startDone();
    const c = loaded;
    log.info(
      `remora ${this.opts.command} ready: config ${c.version} (${c.listeners.length} listeners, ${c.clusters.length} clusters); admin 127.0.0.1:${this.opts.adminPort}`,
    );
  }

  /**
   * Re-reads the files; a broken change is logged and the running config stays. Reloads never
   * overlap (an older read must not land after a newer one), and a burst of calls while one
   * runs makes one more reload, not many.
   */
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

  async #reloadOnce(): Promise<boolean> {
    if (!this.#started || this.#stopping !== null) return false;
    const cfg = this.loggers.get('config');
    let loaded: ProxyConfig | null;
    try {
      loaded = await this.#load();
    } catch (err) {
      this.#lastError = (err as Error).message;
      cfg.error(`reading the config failed: ${(err as Error).message}; keeping config ${this.runtime.snapshot?.config.version ?? '(none)'}`);
      return false;
    }
    if (loaded === null) {
      cfg.error(`keeping config ${this.runtime.snapshot?.config.version ?? '(none)'}`);
      return false;
    }
    if (loaded.version === this.runtime.snapshot?.config.version) return true;
    try {
      const compileStart = performance.now();
      await this.runtime.apply(loaded);
      this.#lastError = null;
      cfg.info(`config ${loaded.version} applied (${loaded.listeners.length} listeners, ${loaded.clusters.length} clusters)`);
      this.#logTimings(loaded, performance.now() - compileStart);
      return true;
    } catch (err) {
      this.#lastError = (err as Error).message;
      cfg.error(`${(err as Error).message}; keeping config ${this.runtime.snapshot?.config.version ?? '(none)'}`);
      return false;
    }
  }

  async #load(): Promise<ProxyConfig | null> {
    const cfg = this.loggers.get('config');
    const result = await this.#loader.load(this.opts.configPaths, this.opts.node, this.opts.ports, {
      dnsRefreshMs: this.opts.dnsRefreshMs,
      ...(this.opts.credentialsDir !== null ? { credentialsDir: resolve(this.opts.credentialsDir) } : {}),
    });
    for (const issue of result.issues) cfg.log(issue.severity === 'error' ? 'error' : 'warning', formatIssue(issue));
    if (hasErrors(result.issues) || result.config === null) {
      this.#lastError = summarize(result.issues);
      return null;
    }
    this.#loadTimings = result.timings;
    return result.config;
  }

  /** One line per applied config: where the time from files to a live snapshot went. */
  #logTimings(config: ProxyConfig, compileMs: number): void {
    const t = this.#loadTimings;
    if (t === null) return;
    const ms = (x: number): string => `${Math.round(x)} ms`;
    const routes = config.routeConfigs.reduce((n, rc) => n + rc.virtualHosts.reduce((m, vh) => m + vh.routes.length, 0), 0);
    this.loggers
      .get('config')
      .info(
        `config ${config.version} timings (${routes} routes): read ${ms(t.readMs)}, validate ${ms(t.validateMs)}, translate ${ms(t.translateMs)} on the loader thread; ` +
          `handover ${ms(t.handoverMs)}; compile and apply ${ms(compileMs)}`,
      );
  }

  /** Drains for up to `drainMs`, closes everything, and exits with `code`. Idempotent. */
  stop(code: number, drainMs: number = this.opts.drainTimeMs): Promise<void> {
    this.#stopping ??= (async () => {
      const log = this.loggers.get('main');
      log.info(`draining for up to ${drainMs} ms`);
      this.#watcher?.close();
      this.#loader.close();
      await this.runtime.drain(drainMs);
      this.#closeServers();
      await this.runtime.close();
      this.identity?.close();
      log.info('exiting');
      this.#onExit(code);
    })();
    return this.#stopping;
  }

  #closeServers(): void {
    this.admin.close();
    this.health.close();
    this.prometheus?.close();
  }
}

function summarize(issues: readonly ConfigIssue[]): string {
  return issues
    .filter((i) => i.severity === 'error')
    .map(formatIssue)
    .join('\n');
}
