import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Regex } from '@remora/config';
import type { Logger, Loggers } from '../logger.ts';
import { isLogLevel, LOG_LEVELS } from '../logger.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { configDump } from './admin-config-dump.ts';
import { clustersJson, clustersText, statsText } from './admin-views.ts';

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
}

const HELP = `Remora admin API
  GET  /ready                 LIVE when serving
  GET  /server_info           version, state, uptime, node
  GET  /config_dump           the live config as Envoy's envoy.admin.v3.ConfigDump
                              (?resource=, ?mask=, ?name_regex=, ?include_eds)
  GET  /remora/config         Remora's own model of the live config, and the last config error
  GET  /clusters              endpoints per cluster (?format=json)
  GET  /stats                 counters as name: value (?filter=regex)
  GET  /stats/prometheus      Prometheus metrics
  GET  /logging               log levels; POST /logging?level=debug or ?<component>=<level>
  POST /drain_listeners       stop accepting new connections
  POST /healthcheck/fail|ok   fail or restore /healthz/ready
  POST /quitquitquit          exit
`;

const MUTATING = new Set(['/quitquitquit', '/drain_listeners', '/logging', '/healthcheck/fail', '/healthcheck/ok']);

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

  constructor(runtime: Runtime, loggers: Loggers, hooks: AdminHooks) {
    this.#runtime = runtime;
    this.#loggers = loggers;
    this.#hooks = hooks;
    this.#log = loggers.get('admin');
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
      send(res, 405, 'text/plain', 'This endpoint requires POST.\n');
      return;
    }
    const rt = this.#runtime;
    switch (path) {
      case '/':
      case '/help':
        return send(res, 200, 'text/plain', HELP);
      case '/ready': {
        const state = rt.draining ? 'DRAINING' : rt.ready ? 'LIVE' : 'PRE_INITIALIZING';
        return send(res, state === 'LIVE' ? 200 : 503, 'text/plain', `${state}\n`);
      }
      case '/server_info':
        return sendJson(res, {
          version: 'remora/0.1.0',
          state: rt.draining ? 'DRAINING' : rt.ready ? 'LIVE' : 'PRE_INITIALIZING',
          uptime_current_epoch: `${Math.floor((Date.now() - this.#hooks.startedAt) / 1000)}s`,
          node: rt.node,
          command_line_options: this.#hooks.commandLine,
          node_version: process.version,
        });
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
      case '/clusters':
        if (url.searchParams.get('format') === 'json') return sendJson(res, clustersJson(rt));
        return send(res, 200, 'text/plain', clustersText(rt));
      case '/stats': {
        const filter = url.searchParams.get('filter');
        // RE2, as Envoy's admin: a filter cannot hold the event loop that serves traffic.
        let re: Regex | null = null;
        if (filter) {
          try {
            re = new Regex(filter);
          } catch (err) {
            return send(res, 400, 'text/plain', `invalid filter regex: ${(err as Error).message}\n`);
          }
        }
        return send(res, 200, 'text/plain', statsText(rt, re, this.#hooks.sourceStats?.() ?? []));
      }
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
