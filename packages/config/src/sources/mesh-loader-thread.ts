import { Worker } from 'node:worker_threads';
import type { ConfigIssue } from '../errors.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { RouteConfiguration, VirtualHost } from '../model/route.ts';
import { DEFAULT_TRANSLATE_OPTIONS } from '../translate/istio.ts';
import type { MeshLoadOptions } from './mesh-loader.ts';
import type { LoadTimings } from './load-timings.ts';
import type { ProxySettings } from '../translate/proxy-settings.ts';
import type { FromLoader, ToLoader } from './mesh-loader-protocol.ts';

export interface MeshLoaderThreadOptions {
  /** The worker is stopped after this long without a load, giving its memory back (default 30 s). */
  readonly idleMs?: number;
}

export interface ThreadLoadResult {
  /** The translated config; null when any error was found. */
  readonly config: ProxyConfig | null;
  readonly issues: readonly ConfigIssue[];
  readonly files: readonly string[];
  /** The loader thread's steps, and `handoverMs`: the rest of the wall time (starting the thread, taking the result in piece by piece). */
  readonly timings: LoadTimings & { readonly handoverMs: number };
  /** The proxy settings for this workload (drain durations, ...); null when the config is. */
  readonly proxySettings: ProxySettings | null;
}

/**
 * `loadMesh` on a worker thread, so that reading, validating and translating a large mesh
 * never holds up requests. The result comes back in pieces, each taken in after the event
 * loop had a turn. Loads run one at a time, in order.
 */
export class MeshLoaderThread {
  readonly #idleMs: number;
  #worker: Worker | null = null;
  #idle: NodeJS.Timeout | null = null;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #onMessage: ((m: FromLoader) => void) | null = null;
  #onExit: ((err: Error) => void) | null = null;
  #closed = false;

  constructor(opts: MeshLoaderThreadOptions = {}) {
    this.#idleMs = opts.idleMs ?? 30_000;
  }

  load(paths: readonly string[], node: ProxyNode, ports: ListenerPorts, options: MeshLoadOptions = DEFAULT_TRANSLATE_OPTIONS): Promise<ThreadLoadResult> {
    const run = this.#queue.then(() => this.#load({ type: 'load', id: this.#nextId++, paths, node, ports, options }));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.#closed = true;
    if (this.#idle) clearTimeout(this.#idle);
    void this.#worker?.terminate();
    this.#worker = null;
  }

  #start(): Worker {
    if (this.#worker !== null) return this.#worker;
    const self = import.meta.url.endsWith('.ts') ? './mesh-loader-worker.ts' : './mesh-loader-worker.js';
    const w = new Worker(new URL(self, import.meta.url));
    w.unref();
    w.on('message', (m: FromLoader) => this.#onMessage?.(m));
    // A worker stopped for idleness is no longer `#worker`: its exit concerns no load.
    w.on('error', (err) => {
      if (this.#worker === w) this.#onExit?.(err);
    });
    w.on('exit', (code) => {
      if (this.#worker !== w) return;
      this.#worker = null;
      this.#onExit?.(new Error(`the config loader thread exited (code ${code})`));
    });
    this.#worker = w;
    return w;
  }

  #load(request: Extract<ToLoader, { type: 'load' }>): Promise<ThreadLoadResult> {
    if (this.#closed) return Promise.reject(new Error('the config loader is closed'));
    if (this.#idle) clearTimeout(this.#idle);
    const worker = this.#start();
    return new Promise<ThreadLoadResult>((resolve, reject) => {
      let head: Extract<FromLoader, { type: 'head' }> | null = null;
      let routeConfigs: { name: string; virtualHosts: VirtualHost[]; ignorePortInHostMatching: boolean }[] = [];
      let left = 0;
      const done = (err: Error | null, result?: ThreadLoadResult): void => {
        this.#onMessage = null;
        this.#onExit = null;
        this.#armIdle();
        if (err !== null) reject(err);
        else resolve(result!);
      };
      const finish = (): void => {
        const config = head!.config === null ? null : { ...head!.config, routeConfigs: routeConfigs as RouteConfiguration[] };
        const workMs = head!.timings.readMs + head!.timings.validateMs + head!.timings.translateMs;
        done(null, { config, issues: head!.issues, files: head!.files, proxySettings: head!.proxySettings, timings: { ...head!.timings, handoverMs: Math.max(0, performance.now() - asked - workMs) } });
      };
      // Each piece is asked for on the next turn of the event loop, so requests run in between.
      const askNext = (): void => void setImmediate(() => worker.postMessage({ type: 'next', id: request.id } satisfies ToLoader));
      this.#onMessage = (m) => {
        if (m.id !== request.id) return;
        if (m.type === 'failed') return done(new Error(m.message));
        if (m.type === 'head') {
          head = m;
          routeConfigs = (m.config?.routeConfigs ?? []).map((rc) => ({ ...rc, virtualHosts: [] }));
          left = m.pieces;
          if (left === 0) return finish();
          return askNext();
        }
        for (const v of m.virtualHosts) routeConfigs[m.routeConfig]!.virtualHosts.push(v);
        if (--left === 0) return finish();
        askNext();
      };
      this.#onExit = (err) => done(err);
      const asked = performance.now();
      worker.postMessage(request);
    });
  }

  #armIdle(): void {
    if (this.#closed || this.#idleMs <= 0) return;
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      this.#idle = null;
      const w = this.#worker;
      this.#worker = null;
      void w?.terminate();
    }, this.#idleMs);
    this.#idle.unref();
  }
}
