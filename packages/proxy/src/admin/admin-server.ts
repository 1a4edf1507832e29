import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Regex } from '@remora/config';
import type { Logger, Loggers } from '../logger.ts';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../logger.ts';
import { mergeStats } from './worker-stats.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { certsJson } from './admin-certs.ts';
import { configDump, envoyNodeJson } from './admin-config-dump.ts';
import {
  collectStats,
  memoryFigures,
  REMORA_VERSION,
  serverPrometheus,
  serverState,
  STAT_TYPES,
  statsJson,
  statsText,
  StatsView,
  type ServerFacts,
  type StatEntry,
  type StatsQuery,
} from './admin-stats.ts';
import { UI_HTML, uiData } from './ui.ts';
import { LiveWindow, WINDOW_SLOTS, type LiveWindowState } from './ui-window.ts';
import { ExplainError, explainRequest, explanationText, type ExplainInput } from './explain.ts';
import { clustersJson, clustersText, commandLineOptions, listenersJson, listenersText, sumThreadCounts, threadCounts, type ThreadCounts } from './admin-views.ts';

/** What the admin API needs from the process beyond the runtime. */
export interface AdminHooks {
  /** Last config problem, shown in `/remora/config` until a good config lands. */
  lastConfigError(): string | null;
  /** The config source's own stats (an xDS client's), for `/stats`; absent: none. */
  sourceStats?(): Iterable<readonly [string, number, ...unknown[]]>;
  /** `POST /quitquitquit`: exit cleanly now. */
  quit(): void;
  /** `POST /drain_listeners`: stop accepting, keep serving what is in flight. */
  drainListeners(): void;
  /** Health check override: `/healthcheck/fail` and `/healthcheck/ok`. */
  setHealthFailed(failed: boolean): void;
  readonly startedAt: number;
  readonly commandLine: readonly string[];
  /** Worker threads serving (`--concurrency` above 1): their stats join the main thread's; absent: this loop serves. */
  readonly workers?: AdminWorkers | undefined;
}

/** What the admin API asks of the worker threads. */
export interface AdminWorkers {
  readonly count: number;
  stats(): Promise<(readonly StatEntry[])[]>;
  /** Each worker's per-host and circuit-breaker counters, for `/clusters` and `/explain`. */
  counts(): Promise<ThreadCounts[]>;
  /** Each worker's live window, for `/ui/data` (asking keeps their access log lines while the page watches). */
  liveWindows(): Promise<LiveWindowState[]>;
  resetCounters(): void;
  /** `/logging` changed levels: the workers take the same. */
  logLevels(levels: readonly (readonly [string, LogLevel])[]): void;
}

const HELP = `Remora admin API
  GET  /ready                 LIVE when serving
  GET  /server_info           version, state, uptime, command line options, node
  GET  /config_dump           the live config as Envoy's envoy.admin.v3.ConfigDump
                              (?resource=, ?mask=, ?name_regex=, ?include_eds)
  GET  /remora/config         Remora's own model of the live config, and the last config error
  GET  /clusters              endpoints per cluster (?format=json)
  GET  /listeners             listeners and their addresses (?format=json)
  GET  /certs                 certificates served and trusted, with expiry
  GET  /memory                memory figures (Envoy's names; Node's process.memoryUsage())
  GET  /runtime               runtime layers (none)
  GET  /hot_restart_version   disabled (no hot restart)
  GET  /stats                 counters and gauges as name: value (?filter=RE2, ?usedonly,
                              ?type=Counters|Gauges, ?format=json|prometheus)
  GET  /stats/prometheus      Prometheus metrics
  GET  /logging               log levels; POST /logging?level=debug or ?<component>=<level>
  POST /reset_counters        every counter to zero
  POST /drain_listeners       stop accepting new connections
  POST /healthcheck/fail|ok   fail or restore /healthz/ready
  POST /quitquitquit          exit
  GET  /ui                    a live view of this proxy: listeners → routes → clusters → endpoints
                              with request rate, errors, latency, flags; the access log
  GET  /ui/data               the view's data as JSON (?window=SECONDS, default 10)
  POST /explain               what the live config would do with a request, without sending it:
                              body {"method","url","headers",["listener"|"port"|"direction"],
                              "sourceIp","principal"} (?format=text for the text form)
`;

const MUTATING = new Set(['/quitquitquit', '/drain_listeners', '/logging', '/healthcheck/fail', '/healthcheck/ok', '/reset_counters', '/runtime_modify']);

/** The seconds `/ui/data` sums over unless `?window=` says. */
const UI_WINDOW_SECONDS = 10;

/** `/explain` bodies are small request descriptions. */
const EXPLAIN_MAX_BODY = 1 << 20;

/**
 * Envoy's admin API on 127.0.0.1 (port 15000 by default). Mutating endpoints require POST,
 * as Envoy's do, so a stray GET from a browser changes nothing.
 */
export class AdminServer {
  readonly server: Server;
  readonly #runtime: Runtime;
  readonly #loggers: Loggers;
  readonly #hooks: AdminHooks;
  readonly #log: Logger;
  readonly #stats = new StatsView();
  readonly #facts: ServerFacts;
  /** The live view's per-edge counts and access log ring, fed by the access log. */
  readonly liveWindow = new LiveWindow();

  constructor(runtime: Runtime, loggers: Loggers, hooks: AdminHooks) {
    this.#runtime = runtime;
    this.#loggers = loggers;
    this.#hooks = hooks;
    this.#log = loggers.get('admin');
    // Envoy's worker count: one event loop serves, or the workers.
    this.#facts = {
      startedAt: hooks.startedAt,
      get concurrency() {
        return hooks.workers?.count ?? 1;
      },
    };
    // Envoy's server gauges and Node's process metrics on every Prometheus endpoint.
    runtime.metrics.addText(() => serverPrometheus(runtime, this.#facts));
    runtime.metrics.collectProcessMetrics();
    runtime.accessLog.tap = this.liveWindow;
    this.server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#log.error(`admin ${req.url}: ${(err as Error).message}`);
        if (!res.headersSent) send(res, 500, 'text/plain', `error: ${(err as Error).message}\n`);
      });
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    if (MUTATING.has(path) && req.method !== 'POST' && !(path === '/logging' && req.method === 'GET' && url.search === '')) {
      send(res, 405, 'text/plain', `Method ${req.method ?? 'GET'} not allowed, POST required.\n`);
      return;
    }
    const rt = this.#runtime;
    switch (path) {
      case '/':
      case '/help':
        return send(res, 200, 'text/plain', HELP);
      case '/ready': {
        const state = serverState(rt).name;
        return send(res, state === 'LIVE' ? 200 : 503, 'text/plain', `${state}\n`);
      }
      case '/server_info': {
        const address = this.server.address();
        const node = await envoyNodeJson(
          rt.node,
          typeof address === 'object' && address !== null ? address.address : '127.0.0.1',
          typeof address === 'object' && address !== null ? address.port : 0,
        );
        const uptime = `${Math.floor((Date.now() - this.#hooks.startedAt) / 1000)}s`;
        return sendJson(res, {
          version: `remora/${REMORA_VERSION}/node-${process.version}`,
          state: serverState(rt).name,
          hot_restart_version: 'disabled',
          command_line_options: commandLineOptions(this.#hooks.commandLine, this.#facts.concurrency),
          node,
          uptime_current_epoch: uptime,
          uptime_all_epochs: uptime,
        });
      }
      case '/hot_restart_version':
        return send(res, 200, 'text/plain', 'disabled\n');
      case '/listeners':
        if (url.searchParams.get('format') === 'json') return sendJson(res, listenersJson(rt));
        return send(res, 200, 'text/plain', listenersText(rt));
      case '/certs':
        return sendJson(res, certsJson(rt));
      case '/memory': {
        const m = memoryFigures();
        // Envoy's admin.v3.Memory: uint64 fields, strings in proto3 JSON.
        return sendJson(res, {
          allocated: String(m.allocated),
          heap_size: String(m.heapSize),
          pageheap_unmapped: String(m.pageheapUnmapped),
          pageheap_free: String(m.pageheapFree),
          total_thread_cache: String(m.totalThreadCache),
          total_physical_bytes: String(m.totalPhysicalBytes),
        });
      }
      case '/runtime':
        // No runtime layers are configured: Envoy's answer then.
        return sendJson(res, { entries: {}, layers: [] });
      case '/runtime_modify':
        return send(res, 503, 'text/plain', 'No admin layer specified\n');
      case '/reset_counters':
        this.#stats.resetCounters(rt, await this.#allStats([]));
        this.#hooks.workers?.resetCounters();
        return send(res, 200, 'text/plain', 'OK\n');
      case '/config_dump': {
        const address = this.server.address();
        const reply = await configDump(url.searchParams, {
          config: rt.snapshot?.config ?? null,
          node: rt.node,
          liveAt: rt.snapshotLiveAt,
          startedAt: this.#hooks.startedAt,
          identity: rt.identity?.current ?? null,
          adminAddress: typeof address === 'object' && address !== null ? address.address : '127.0.0.1',
          adminPort: typeof address === 'object' && address !== null ? address.port : 0,
          isEjected: (name, hostPort) => {
            const c = rt.clusterManager.clusters.get(name);
            const h = c?.hosts.find((x) => x.host.hostPort === hostPort);
            return c !== undefined && h !== undefined && c.isEjected(h);
          },
        });
        return send(res, reply.status, reply.type, reply.body);
      }
      case '/remora/config': {
        const snap = rt.snapshot;
        return sendJson(res, {
          version: snap?.config.version ?? null,
          live_since: snap === null ? null : new Date(rt.snapshotLiveAt).toISOString(),
          last_error: this.#hooks.lastConfigError(),
          // The model without the Envoy resources it was read from (those are /config_dump).
          config: snap === null ? null : { ...snap.config, envoyJson: undefined },
        });
      }
      case '/ui':
      case '/ui/':
        return send(res, 200, 'text/html; charset=utf-8', UI_HTML);
      case '/ui/data': {
        const w = Number(url.searchParams.get('window') ?? UI_WINDOW_SECONDS);
        if (!Number.isInteger(w) || w < 1 || w > WINDOW_SLOTS) return send(res, 400, 'text/plain', `ui/data: window must be 1 to ${WINDOW_SLOTS} seconds\n`);
        const workers = this.#hooks.workers;
        // With workers, theirs merged into one window (this thread serves nothing), built for this answer only.
        const win = workers === undefined ? this.liveWindow : LiveWindow.merged([this.liveWindow.state(), ...(await workers.liveWindows())]);
        return sendJson(res, uiData(rt, win, w));
      }
      case '/explain':
        return this.#explain(req, url, res);
      case '/clusters': {
        // The hosts' and breakers' counters summed over the workers; health is this thread's decision.
        const counts = await this.#counts();
        if (url.searchParams.get('format') === 'json') return sendJson(res, clustersJson(rt, counts));
        return send(res, 200, 'text/plain', clustersText(rt, counts));
      }
      case '/stats':
        return this.#statsPage(url, res);
      case '/stats/prometheus':
        return send(res, 200, rt.metrics.registry.contentType, await rt.metrics.render());
      case '/logging':
        return this.#logging(req, url, res);
      case '/quitquitquit':
        send(res, 200, 'text/plain', 'OK\n');
        this.#hooks.quit();
        return;
      case '/drain_listeners':
        this.#hooks.drainListeners();
        return send(res, 200, 'text/plain', 'OK\n');
      case '/healthcheck/fail':
        this.#hooks.setHealthFailed(true);
        return send(res, 200, 'text/plain', 'OK\n');
      case '/healthcheck/ok':
        this.#hooks.setHealthFailed(false);
        return send(res, 200, 'text/plain', 'OK\n');
      default:
        return send(res, 404, 'text/plain', `unknown admin path ${path}; GET / lists them\n`);
    }
  }

  /** This thread's counters, with the workers' added up when workers serve (Envoy: one admin view for all workers). */
  async #counts(): Promise<ThreadCounts> {
    const own = threadCounts(this.#runtime);
    const workers = this.#hooks.workers;
    return workers === undefined ? own : sumThreadCounts([own, ...(await workers.counts())]);
  }

  /** `POST /explain`: the request in the JSON body, the explanation as JSON (or text with `?format=text`). */
  async #explain(req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') return send(res, 405, 'text/plain', 'POST a JSON request description: {"method":"GET","url":"http://reviews:9080/","headers":{}}\n');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > EXPLAIN_MAX_BODY) return send(res, 413, 'text/plain', `explain: body over ${EXPLAIN_MAX_BODY} bytes\n`);
      chunks.push(c);
    }
    let input: ExplainInput;
    try {
      input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ExplainInput;
    } catch (err) {
      return send(res, 400, 'text/plain', `explain: the body is not JSON: ${(err as Error).message}\n`);
    }
    const snap = this.#runtime.snapshot;
    if (snap === null) return send(res, 503, 'text/plain', 'explain: no config is being served yet\n');
    try {
      const e = await explainRequest(snap, this.#runtime.clusterManager.clusters, input, (await this.#counts()).breakers);
      if (url.searchParams.get('format') === 'text') return send(res, 200, 'text/plain', explanationText(e));
      return sendJson(res, e);
    } catch (err) {
      if (err instanceof ExplainError) return send(res, 400, 'text/plain', `explain: ${err.message}\n`);
      throw err;
    }
  }

  /** Envoy's `/stats`: text, `?format=json` or `?format=prometheus`, with `filter`, `usedonly` and `type`. */
  async #statsPage(url: URL, res: ServerResponse): Promise<void> {
    const q = url.searchParams;
    const format = q.get('format') ?? 'text';
    if (format !== 'text' && format !== 'json' && format !== 'prometheus') {
      return send(res, 400, 'text/plain', `usage: /stats?format=(text|json|prometheus): unknown format ${format}\n`);
    }
    const type = q.get('type') ?? 'All';
    if (!STAT_TYPES.has(type)) return send(res, 400, 'text/plain', `invalid &type= param: ${type} (Counters, Gauges, Histograms, TextReadouts or All)\n`);
    if (format === 'prometheus') return send(res, 200, this.#runtime.metrics.registry.contentType, await this.#runtime.metrics.render());
    const filter = q.get('filter');
    // RE2, as Envoy's admin: a filter cannot hold the event loop that serves traffic.
    let re: Regex | null = null;
    if (filter) {
      try {
        re = new Regex(filter);
      } catch (err) {
        return send(res, 400, 'text/plain', `invalid filter regex: ${(err as Error).message}\n`);
      }
    }
    const query: StatsQuery = { filter: re, usedOnly: q.has('usedonly'), type: type as StatsQuery['type'] };
    const entries = this.#stats.select(await this.#allStats(this.#hooks.sourceStats?.() ?? []), query);
    if (format === 'json') return send(res, 200, 'application/json', statsJson(entries));
    return send(res, 200, 'text/plain', statsText(entries));
  }

  /** The main thread's stats, with the workers' added up when workers serve. */
  async #allStats(extra: Iterable<readonly [string, number, ...unknown[]]>): Promise<StatEntry[]> {
    const own = collectStats(this.#runtime, this.#facts, extra);
    const workers = this.#hooks.workers;
    return workers === undefined ? own : mergeStats(own, await workers.stats());
  }

  /** Envoy's `/logging`: `?level=L` sets all, `?<component>=L` one, `?paths=a:L,b:L` several. */
  #logging(req: IncomingMessage, url: URL, res: ServerResponse): void {
    if (req.method === 'POST') {
      const problems: string[] = [];
      for (const [key, value] of url.searchParams) {
        if (key === 'level') {
          if (isLogLevel(value)) this.#loggers.setAll(value);
          else problems.push(`unknown level ${value}`);
        } else if (key === 'paths') {
          for (const pair of value.split(',')) {
            const [name, level] = pair.split(':');
            const logger = this.#loggers.byName(name ?? '');
            if (logger && level && isLogLevel(level)) logger.level = level;
            else problems.push(`bad path ${pair}`);
          }
        } else {
          const logger = this.#loggers.byName(key);
          if (logger && isLogLevel(value)) logger.level = value;
          else problems.push(`unknown logger or level ${key}=${value}`);
        }
      }
      this.#hooks.workers?.logLevels([...this.#loggers.all()].map((l) => [l.component, l.level] as const));
      if (problems.length > 0) {
        send(res, 400, 'text/plain', `${problems.join('\n')}\nlevels: ${LOG_LEVELS.join(', ')}\n`);
        return;
      }
    }
    let out = 'active loggers:\n';
    for (const l of this.#loggers.all()) out += `  ${l.component}: ${l.level}\n`;
    send(res, 200, 'text/plain', out);
  }

  listen(host: string, port: number): Promise<void> {
    return listenOrExplain(this.server, host, port, 'admin');
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

export function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-cache' });
  res.end(body);
}

function sendJson(res: ServerResponse, value: unknown): void {
  send(res, 200, 'application/json', JSON.stringify(value, null, 2) + '\n');
}

/** Binds a server, failing with a message that names what could not start and why. */
export function listenOrExplain(server: Server, host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
      reject(new Error(`cannot listen on ${host}:${port} (${what}): ${why}`));
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
