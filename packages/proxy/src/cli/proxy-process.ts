import type { ProxyConfig, ProxySettings } from '@remora/config';
import { AdminServer } from '../admin/admin-server.ts';
import { HealthServer, PrometheusServer } from '../admin/health-server.ts';
import { AppProbeServer, appProbeDestination, appProbersFromEnv } from '../admin/app-probes.ts';
import { Loggers } from '../logger.ts';
import { Runtime, type RuntimeOptions } from '../runtime/runtime.ts';
import { builtinFilters } from '../runtime/builtin-filters.ts';
import { registerFilterModules } from './filter-modules.ts';
import type { FilterRegistry } from '@remora/filters';
import { AccessLog, AccessLogFiles } from '../telemetry/access-log.ts';
import { IstioMetrics } from '../telemetry/istio-metrics.ts';
import { untaggedPrometheus } from '../telemetry/envoy-stats.ts';
import type { ProxyOptions } from './options.ts';
import { IdentityStore } from '../tls/identity-store.ts';
import type { SdsIdentity } from '../tls/sds-identity.ts';
import { FileConfigSource, type ConfigSource, type SourcedConfig } from './config-source.ts';
import type { DnsProxy } from '../dns/dns-proxy.ts';
import { captureLookup } from './capture.ts';
import { availableParallelism } from 'node:os';
import { SharedCells } from '@remora/filters/internal';
import { WorkerPool } from '../runtime/worker-pool.ts';
import type { IdentityParts } from '../runtime/worker-protocol.ts';
import { OutlierDetector } from '../upstream/outlier-detector.ts';
import type { AdminWorkers } from '../admin/admin-server.ts';
import { mergePrometheus } from '../admin/worker-stats.ts';

/** Where output goes; stdout (access log) and stderr (own log) unless given. */
export interface ProcessSinks {
  readonly accessLog?: (chunk: string) => void;
  readonly log?: (line: string) => void;
  /** Peer identities for plaintext connections (tests of identity-based policy before mTLS). */
  readonly peerIdentity?: RuntimeOptions['peerIdentity'];
  /** Original destinations of captured connections, in place of the lookup `--interception-mode` picks (tests of capture without iptables). */
  readonly originalDestination?: RuntimeOptions['originalDestination'];
  /**
   * The HTTP filters to serve with, in place of the built-in ones (`builtinFilters()`), e.g.
   * built on a clock the caller controls (Envoy's simulated time in its integration tests).
   * `--filter` modules are registered into it. One event loop only: workers build their own.
   */
  readonly filters?: FilterRegistry;
}

/** Istio's ProxyConfig `terminationDrainDuration` default. */
export const DEFAULT_TERMINATION_DRAIN_MS = 5_000;

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
  /** Istio's app probes on the status port; null without ISTIO_KUBE_APP_PROBERS. */
  #appProbes: AppProbeServer | null = null;
  readonly identity: IdentityStore | null;
  /** The SDS client the identity comes through (`--sds-address`, `remora envoy` under Istio's agent); null: files. */
  readonly sds: SdsIdentity | null;
  /** Where configs come from: the files by default. */
  readonly source: ConfigSource;
  #stopping: Promise<void> | null = null;
  #started = false;
  #dns: DnsProxy | null = null;
  /** The workload's proxy settings from the newest applied config; null: the source gives none. */
  #settings: ProxySettings | null = null;
  readonly #onExit: (code: number) => void;
  readonly #sinks: ProcessSinks;
  /** The worker threads (`--concurrency` above 1); null: this loop serves, as Envoy with one worker. */
  #pool: WorkerPool | null = null;

  /**
   * Builds a process; the workload identity (if its files exist) is read first, so that the
   * first listeners and upstream pools already serve with it.
   */
  static async create(
    opts: ProxyOptions,
    onExit: (code: number) => void,
    sinks: ProcessSinks = {},
    source?: (loggers: Loggers) => ConfigSource | Promise<ConfigSource>,
  ): Promise<ProxyProcess> {
    const loggers = new Loggers(opts.logLevel, sinks.log);
    let identity: IdentityStore | null = null;
    let sds: SdsIdentity | null = null;
    if (opts.command !== 'validate' && opts.sds !== undefined) {
      identity = IdentityStore.pushed(loggers.get('secret'));
      sds = await startSds(opts, identity, loggers);
    } else if (opts.command !== 'validate') {
      identity = await IdentityStore.open(opts.identityPaths, loggers.get('secret'));
    }
    // --filter modules: registered before any config is read, so chains and EnvoyFilters may name them.
    const filters = sinks.filters ?? builtinFilters();
    const extensionFilters = new Set(await registerFilterModules(filters, opts.filterModules));
    if (extensionFilters.size > 0) loggers.get('main').info(`HTTP filters loaded: ${[...extensionFilters].join(', ')}`);
    let from = await source?.(loggers);
    // Loaded only for xDS: the client and Envoy's descriptors are not a file-driven proxy's cost.
    if (from === undefined && opts.xds !== undefined) from = (await import('./xds-source.ts')).xdsSourceFromOptions(opts, loggers);
    return new ProxyProcess(opts, onExit, sinks, loggers, identity, sds, from ?? new FileConfigSource(opts, loggers, extensionFilters), filters);
  }

  private constructor(
    opts: ProxyOptions,
    onExit: (code: number) => void,
    sinks: ProcessSinks,
    loggers: Loggers,
    identity: IdentityStore | null,
    sds: SdsIdentity | null,
    source: ConfigSource,
    filters: FilterRegistry,
  ) {
    this.opts = opts;
    this.source = source;
    this.sds = sds;
    this.#onExit = onExit;
    this.#sinks = sinks;
    this.loggers = loggers;
    this.identity = identity;
    const originalDestination = sinks.originalDestination ?? captureLookup(opts.interceptionMode ?? 'NONE', opts.conntrackFd ?? null, loggers.get('main'));
    this.runtime = new Runtime({
      filters,
      ...(originalDestination !== undefined ? { originalDestination } : {}),
      identity,
      node: opts.node,
      ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}),
      loggers: this.loggers,
      accessLog: new AccessLog(opts.accessLogFormat ?? 'text', sinks.accessLog),
      // --access-log-format, when given, wins over the listeners' access logs (MeshConfig's accessLogFile).
      ...(opts.accessLogFormat === null ? { accessLogFiles: new AccessLogFiles(sinks.accessLog) } : {}),
      metrics: new IstioMetrics(),
      trustedHops: opts.numTrustedProxies,
      overload: { maxConnections: opts.overloadMaxConnections, maxHeapBytes: opts.overloadMaxHeapMb * 1024 * 1024 },
      timeouts: { headersMs: opts.requestHeadersTimeoutMs, requestMs: opts.requestTimeoutMs },
      ...(sinks.peerIdentity ? { peerIdentity: sinks.peerIdentity } : {}),
    });
    this.admin = new AdminServer(this.runtime, this.loggers, {
      lastConfigError: () => this.source.lastError,
      sourceStats: () => this.source.statEntries?.() ?? [],
      quit: () => void this.stop(0, 0),
      drainListeners: () => {
        for (const l of this.runtime.listeners.values()) l.stopAccepting();
        this.#pool?.broadcast({ t: 'stopAccepting' });
      },
      setHealthFailed: (failed) => {
        this.health.healthFailed = failed;
      },
      startedAt: Date.now(),
      commandLine: process.argv.slice(2),
      get workers(): AdminWorkers | undefined {
        return pool();
      },
    });
    const pool = (): AdminWorkers | undefined => {
      const p = this.#pool;
      if (p === null) return undefined;
      return {
        count: p.size,
        stats: () => p.stats(),
        counts: () => p.counts(),
        liveWindows: () => p.liveWindows(),
        resetCounters: () => p.broadcast({ t: 'resetCounters' }),
        logLevels: (levels) => {
          for (const [component, level] of levels) p.setLogLevel(component, level);
        },
      };
    };
    this.health = new HealthServer(this.runtime);
    this.prometheus = opts.prometheusPort > 0 ? new PrometheusServer(this.runtime) : null;
    // The control plane's stats, as Envoy exports them to Prometheus under Istio's bootstrap.
    this.runtime.metrics.addText(() => sourcePrometheus(this.source));
  }

  /** The DNS proxy (`--dns-capture`), once started; null without one. */
  get dns(): DnsProxy | null {
    return this.#dns;
  }

  /** Loads the config and opens every port; throws StartError with every reason to stop. */
  async start(): Promise<void> {
    const log = this.loggers.get('main');
    const loaded = await this.source.first();
    if (loaded === null) {
      this.source.close();
      throw new StartError('invalid configuration; nothing started');
    }
    try {
      const probers = this.opts.statusPort > 0 ? appProbersFromEnv(process.env) : null;
      if (probers) this.#appProbes = new AppProbeServer(probers, { destination: appProbeDestination(process.env), statusPort: this.opts.statusPort });
      await this.admin.listen('127.0.0.1', this.opts.adminPort);
      if (this.opts.healthPort > 0) await this.health.listen(this.opts.ports.bindAddress, this.opts.healthPort);
      if (this.prometheus) await this.prometheus.listen(this.opts.ports.bindAddress, this.opts.prometheusPort);
      if (this.#appProbes) await this.#appProbes.listen(this.opts.ports.bindAddress, this.opts.statusPort);
      const workers = this.#workerCount(loaded);
      if (workers > 1) await this.#prepareWorkers(workers);
      const compileStart = performance.now();
      await this.runtime.apply(loaded.config);
      if (this.#pool !== null) {
        await this.#pool.start(loaded.config, identityParts(this.identity));
        this.runtime.markWorkersServing();
        this.identity?.onChange(() => this.#pool?.setIdentity(identityParts(this.identity)));
        log.info(`${workers} workers serve the listeners (SO_REUSEPORT); circuit breakers, local rate limits and outlier ejections are shared`);
      }
      this.#takeSettings(loaded);
      this.#logTimings(loaded, performance.now() - compileStart);
      if (this.opts.dns !== undefined) this.#dns = await startDns(this.opts, loaded.config, this.loggers);
    } catch (err) {
      this.source.close();
      this.#closeServers();
      await this.#pool?.close();
      await this.runtime.close();
      this.sds?.close();
      this.identity?.close();
      throw new StartError((err as Error).message);
    }
    this.#started = true;
    this.source.watch((update) => this.#applyUpdate(update));
    const c = loaded.config;
    log.info(
      `remora ${this.opts.command} ready: config ${c.version} (${c.listeners.length} listeners, ${c.clusters.length} clusters); admin 127.0.0.1:${this.opts.adminPort}`,
    );
  }

  /** A new config from the source: compiled and swapped in, or refused with the reason (the running one stays). */
  async #applyUpdate(update: SourcedConfig): Promise<string | null> {
    const cfg = this.loggers.get('config');
    if (!this.#started || this.#stopping !== null) return 'the proxy is stopping';
    const config = update.config;
    try {
      const compileStart = performance.now();
      await this.runtime.apply(config);
      const refused = (await this.#pool?.apply(config)) ?? [];
      // The main thread compiled it: a worker refuses only what it cannot bind; it keeps serving the rest.
      for (const why of new Set(refused)) cfg.error(`a worker could not apply config ${config.version}: ${why}`);
      this.#takeSettings(update);
      this.#dns?.updateNameTable(config.nameTable);
      cfg.info(`config ${config.version} applied (${config.listeners.length} listeners, ${config.clusters.length} clusters)`);
      this.#logTimings(update, performance.now() - compileStart);
      return null;
    } catch (err) {
      cfg.error(`${(err as Error).message}; keeping config ${this.runtime.snapshot?.config.version ?? '(none)'}`);
      return (err as Error).message;
    }
  }

  /** One line per applied config: where the time from source to a live snapshot went. */
  #logTimings(update: SourcedConfig, compileMs: number): void {
    if (update.timings === null) return;
    const config: ProxyConfig = update.config;
    const routes = config.routeConfigs.reduce((n, rc) => n + rc.virtualHosts.reduce((m, vh) => m + vh.routes.length, 0), 0);
    this.loggers.get('config').info(`config ${config.version} timings (${routes} routes): ${update.timings.summary}; compile and apply ${Math.round(compileMs)} ms`);
  }

  /**
   * How long SIGTERM drains: `--drain-time` when given, else the workload's ProxyConfig
   * `terminationDrainDuration` (what Istio's agent waits after SIGTERM before stopping
   * Envoy; Istio's default 5 s). `drainDuration` is Envoy's `--drain-time-s`, which under
   * Istio's immediate drain strategy only bounds a hot restart, which Remora has not.
   */
  get drainTimeMs(): number {
    return this.opts.drainTimeMs ?? this.#settings?.terminationDrainDurationMs ?? DEFAULT_TERMINATION_DRAIN_MS;
  }

  #takeSettings(update: SourcedConfig): void {
    const s = update.proxySettings;
    if (s === undefined) return;
    const before = this.#settings;
    this.#settings = s;
    if (before !== null && before.terminationDrainDurationMs === s.terminationDrainDurationMs && before.holdApplicationUntilProxyStarts === s.holdApplicationUntilProxyStarts) return;
    const log = this.loggers.get('main');
    const from = s.from.length > 0 ? ` (from ${s.from.join(', ')})` : '';
    if (this.opts.drainTimeMs === null) log.info(`terminationDrainDuration ${s.terminationDrainDurationMs} ms${from}: the drain on SIGTERM`);
    if (s.holdApplicationUntilProxyStarts && !before?.holdApplicationUntilProxyStarts) {
      log.warn('holdApplicationUntilProxyStarts is applied when the pod is built (a native sidecar, or the injector\'s postStart hook), not by the running proxy');
    }
  }

  /** Drains for up to `drainMs`, closes everything, and exits with `code`. Idempotent. */
  stop(code: number, drainMs: number = this.drainTimeMs): Promise<void> {
    this.#stopping ??= (async () => {
      const log = this.loggers.get('main');
      log.info(`draining for up to ${drainMs} ms`);
      this.source.close();
      await Promise.all([this.runtime.drain(drainMs), this.#pool?.drain(drainMs)]);
      this.#closeServers();
      await this.#dns?.close();
      await this.#pool?.close();
      await this.runtime.close();
      this.sds?.close();
      this.identity?.close();
      log.info('exiting');
      this.#onExit(code);
    })();
    return this.#stopping;
  }

  /**
   * Envoy's `--concurrency`: the flag; else for a sidecar the ProxyConfig's (MeshConfig
   * defaultConfig, ProxyConfig resources, the pod's annotation: Istio's 2 by default), for a
   * gateway one per core. 0: one per core. Read at start, as Istio's agent passes it to
   * Envoy once; a later config's value is said to wait for the next start.
   */
  #workerCount(loaded: SourcedConfig): number {
    const configured = this.opts.concurrency ?? (this.opts.node.kind === 'sidecar' ? (loaded.proxySettings?.concurrency ?? 2) : 0);
    const n = configured === 0 ? availableParallelism() : configured;
    if (n > 1 && this.#sinks.peerIdentity !== undefined) {
      this.loggers.get('main').warn(`concurrency ${n}: a peer identity hook serves on one event loop only; serving with 1`);
      return 1;
    }
    if (n > 1 && this.#sinks.filters !== undefined) {
      this.loggers.get('main').warn(`concurrency ${n}: a given filter registry serves on one event loop only; serving with 1`);
      return 1;
    }
    return n;
  }

  /** Makes the main thread the one that loads config and decides for all; the workers start with the first config. */
  async #prepareWorkers(count: number): Promise<void> {
    const opts = this.opts;
    const cells = SharedCells.create();
    // The main thread compiles every config too (config_dump, explain): with the --filter modules, on the shared cells.
    const filters = builtinFilters(cells);
    await registerFilterModules(filters, opts.filterModules);
    const log = this.loggers.get('main');
    const runtime = this.runtime;
    const pool = new WorkerPool(
      count,
      {
        node: opts.node,
        ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}),
        logLevel: opts.logLevel,
        accessLogFormat: opts.accessLogFormat,
        accessLogToStdout: this.#sinks.accessLog === undefined,
        trustedHops: opts.numTrustedProxies,
        // The limit is the proxy's: each worker takes its share.
        overload: { maxConnections: Math.ceil(opts.overloadMaxConnections / count), maxHeapBytes: opts.overloadMaxHeapMb * 1024 * 1024 },
        timeouts: { headersMs: opts.requestHeadersTimeoutMs, requestMs: opts.requestTimeoutMs },
        interceptionMode: opts.interceptionMode ?? 'NONE',
        conntrackFd: opts.conntrackFd ?? null,
        cells: cells.init,
        filterModules: opts.filterModules,
        cwd: process.cwd(),
      },
      {
        log: this.#sinks.log ?? ((line) => void process.stderr.write(line)),
        accessLog: this.#sinks.accessLog ?? ((chunk) => void process.stdout.write(chunk)),
        outcome: (cluster, key, status) => {
          const o = runtime.clusterManager.clusters.get(cluster)?.outlier;
          if (o === null || o === undefined) return;
          if (status === 0) o.reportLocalFailure(key);
          else {
            o.reportLocalSuccess(key);
            o.reportStatus(key, status);
          }
        },
        dnsResolutions: function* () {
          for (const c of runtime.clusterManager.clusters.values()) {
            if (c.model.discovery === 'strict-dns' || c.model.discovery === 'logical-dns') yield [c.name, c.modelKey, c.resolvedEndpoints] as const;
          }
        },
        ejections: function* () {
          for (const c of runtime.clusterManager.clusters.values()) if (c.outlier !== null) yield [c.name, c.outlier.ejectedKeys()] as const;
        },
      },
      log,
    );
    this.#pool = pool;
    runtime.serveFromWorkers(
      {
        cells,
        // DNS resolved here, once, and each new result told to every worker (Envoy's main thread).
        dns: { lead: (cluster, modelKey, endpoints) => pool.broadcast({ t: 'dns', cluster, modelKey, endpoints }) },
        // Outlier detection decided here, once, from every worker's outcomes; each change is told to all.
        outlier: (model, onChange) => {
          const d: OutlierDetector = new OutlierDetector(model.outlierDetection!, () => {
            onChange();
            if (runtime.clusterManager.clusters.get(model.name)?.outlier === d) pool.broadcast({ t: 'ejected', cluster: model.name, keys: d.ejectedKeys() });
          });
          return d;
        },
      },
      filters,
    );
    runtime.metrics.mergeWith(async (own) => mergePrometheus([own, ...(await pool.prometheus())]));
  }

  #closeServers(): void {
    this.admin.close();
    this.health.close();
    this.prometheus?.close();
    this.#appProbes?.close();
  }
}

/**
 * The DNS proxy of `--dns-capture`, with the first config's name table: its resolvers and
 * search path from the resolv.conf, read once at start as Istio's agent reads it.
 */
async function startDns(opts: ProxyOptions, config: ProxyConfig, loggers: Loggers): Promise<DnsProxy> {
  const dnsOpts = opts.dns!;
  const log = loggers.get('dns');
  // Loaded only with DNS capture on.
  const [{ DnsProxy }, { readResolvConf }] = await Promise.all([import('../dns/dns-proxy.ts'), import('../dns/resolv-conf.ts')]);
  const resolvConf = readResolvConf(dnsOpts.resolvConf);
  const dns = await DnsProxy.listen({ address: dnsOpts.address, port: dnsOpts.port, resolvConf, namespace: opts.node.namespace, clusterDomain: opts.node.clusterDomain, logger: log });
  dns.updateNameTable(config.nameTable);
  const { address, port } = dns.address;
  const upstreams = dns.upstreams;
  log.info(
    `DNS proxy on ${address.includes(':') ? `[${address}]` : address}:${port} (udp, tcp): ${config.nameTable?.length ?? 0} mesh hosts answered locally; ` +
      `forwarding to ${upstreams.length > 0 ? upstreams.join(', ') : 'no resolver (none in the file: other names get SERVFAIL)'} from ${dnsOpts.resolvConf}` +
      (resolvConf.search.length > 0 ? `, search ${resolvConf.search.join(' ')}` : ''),
  );
  return dns;
}

/** Envoy's default `initial_fetch_timeout`: how long the first listeners wait for the identity from SDS. */
export const SDS_INITIAL_FETCH_MS = 15_000;

/**
 * Starts the SDS client and waits for the first identity, so that the first listeners and
 * pools serve with it, as Envoy's warm on their secrets. Past the wait the proxy starts
 * anyway (admin and plaintext serve; mTLS is refused) and takes the identity when it comes.
 */
async function startSds(opts: ProxyOptions, store: IdentityStore, loggers: Loggers): Promise<SdsIdentity> {
  const sdsOpts = opts.sds!;
  const log = loggers.get('secret');
  // Loaded only for SDS: the client and Envoy's descriptors are not a file-driven proxy's cost.
  const [{ SdsIdentity }, { bootstrapJson }] = await Promise.all([import('../tls/sds-identity.ts'), import('@remora/config/envoy')]);
  const node = sdsOpts.node ?? bootstrapJson(opts.node, { ip: process.env.INSTANCE_IP ?? '127.0.0.1', adminAddress: '127.0.0.1', adminPort: opts.adminPort }).node ?? {};
  const sds = new SdsIdentity(store, { target: sdsOpts.address, node, ...(sdsOpts.backoff ? { backoff: sdsOpts.backoff } : {}) }, log);
  sds.start();
  const waitMs = sdsOpts.initialFetchTimeoutMs ?? SDS_INITIAL_FETCH_MS;
  if (!(await sds.ready(waitMs))) {
    log.warn(`no workload identity from SDS ${sdsOpts.address} within ${waitMs} ms; starting without it (mTLS is refused until it arrives)`);
  }
  return sds;
}

/**
 * The source's own stats in Prometheus text (`envoy_control_plane_connected_state`,
 * `envoy_cluster_manager_cds_update_success`, ...). Stats named after one resource
 * (`cluster.<name>.update_success` of EDS) stay on `/stats`: Envoy's tag extraction would
 * make labels of them, and a name per resource is no metric name.
 */
function sourcePrometheus(source: ConfigSource): string {
  if (source.statEntries === undefined) return '';
  const entries = [...source.statEntries()].filter(([name]) => /^(control_plane|cluster_manager|listener_manager)\./.test(name)).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return untaggedPrometheus(entries);
}

/** The identity the workers are sent: the main thread's, as PEM. */
function identityParts(store: IdentityStore | null): IdentityParts {
  const id = store?.current ?? null;
  return id === null ? null : { certChainPem: id.certChainPem, keyPem: id.keyPem, rootsPem: id.rootsPem };
}
