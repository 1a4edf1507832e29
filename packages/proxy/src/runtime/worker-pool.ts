import { Worker } from 'node:worker_threads';
import type { Endpoint, ProxyConfig } from '@remora/config';
import type { StatEntry } from '../admin/admin-stats.ts';
import type { ThreadCounts } from '../admin/admin-views.ts';
import type { LiveWindowState } from '../admin/ui-window.ts';
import type { Logger, LogLevel } from '../logger.ts';
import type { FromWorker, IdentityParts, ToWorker, WorkerInit } from './worker-protocol.ts';

/** A worker that dies sooner than this after its start is restarted after this long, not at once. */
const RESTART_BACKOFF_MS = 1_000;

/** What the pool hands back to the main thread. */
export interface WorkerPoolSinks {
  readonly log: (line: string) => void;
  readonly accessLog: (chunk: string) => void;
  /** An upstream outcome a worker saw, for the main thread's outlier detection (status 0: local failure). */
  readonly outcome: (cluster: string, hostKey: string, status: number) => void;
  /** Sent to a worker that (re)starts, after its config: the ejections in force. */
  readonly ejections: () => Iterable<readonly [string, readonly string[]]>;
  /** Sent to a worker that (re)starts, before its config: the DNS clusters' addresses as resolved. */
  readonly dnsResolutions: () => Iterable<readonly [string, string, readonly Endpoint[]]>;
}

interface Slot {
  worker: Worker | null;
  startedAt: number;
}

/** The worker module: its build output beside this file (`.ts` when run from source). */
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './proxy-worker.ts' : './proxy-worker.js', import.meta.url);

/**
 * The worker threads of a proxy run with `--concurrency N` (N > 1). Each serves every
 * listener (SO_REUSEPORT); the main thread keeps the config, the identity, admin and
 * metrics, and sends each worker what it needs. A worker that dies is logged and started
 * again with the current config (Envoy would abort the whole process; a proxy in a pod
 * keeps serving on its other workers instead).
 */
export class WorkerPool {
  readonly size: number;
  readonly #init: Omit<WorkerInit, 'index'>;
  readonly #sinks: WorkerPoolSinks;
  readonly #log: Logger;
  readonly #slots: Slot[] = [];
  readonly #pending = new Map<number, { resolve: (m: Extract<FromWorker, { t: 'reply' }>) => void }>();
  #nextId = 1;
  #config: ProxyConfig | null = null;
  #identity: IdentityParts = null;
  #closing = false;

  constructor(size: number, init: Omit<WorkerInit, 'index'>, sinks: WorkerPoolSinks, log: Logger) {
    this.size = size;
    this.#init = init;
    this.#sinks = sinks;
    this.#log = log;
    for (let i = 0; i < size; i++) this.#slots.push({ worker: null, startedAt: 0 });
  }

  /** Starts every worker with `config`; rejects with the first worker's reason if one cannot serve it. */
  async start(config: ProxyConfig, identity: IdentityParts): Promise<void> {
    this.#config = config;
    this.#identity = identity;
    const results = await Promise.all(this.#slots.map((_, i) => this.#spawn(i)));
    const failed = results.find((r) => r !== null);
    if (failed !== undefined && failed !== null) throw new Error(failed);
  }

  #spawn(index: number): Promise<string | null> {
    const worker = new Worker(WORKER_URL, { workerData: { ...this.#init, index } satisfies WorkerInit, stdout: false, stderr: false });
    const slot = this.#slots[index]!;
    slot.worker = worker;
    slot.startedAt = Date.now();
    worker.on('message', (m: FromWorker) => this.#onMessage(m));
    worker.on('error', (err) => this.#log.error(`worker ${index}: ${err.stack ?? err.message}`));
    worker.on('exit', (code) => {
      if (slot.worker !== worker) return;
      slot.worker = null;
      if (this.#closing) return;
      const soon = Date.now() - slot.startedAt < RESTART_BACKOFF_MS;
      this.#log.error(`worker ${index} exited (code ${code}); starting it again${soon ? ` in ${RESTART_BACKOFF_MS} ms` : ''}`);
      setTimeout(() => {
        if (this.#closing || slot.worker !== null) return;
        void this.#spawn(index).then((problem) => {
          if (problem !== null) this.#log.error(`worker ${index}: ${problem}`);
        });
      }, soon ? RESTART_BACKOFF_MS : 0).unref();
    });
    if (this.#identity !== null) this.#post(worker, { t: 'identity', parts: this.#identity });
    const config = this.#config!;
    for (const [cluster, modelKey, endpoints] of this.#sinks.dnsResolutions()) this.#post(worker, { t: 'dns', cluster, modelKey, endpoints });
    return this.#ask(worker, (id) => ({ t: 'apply', id, config })).then((r) => {
      for (const [cluster, keys] of this.#sinks.ejections()) this.#post(worker, { t: 'ejected', cluster, keys });
      return r.error;
    });
  }

  /** The workers, running now. */
  get workers(): Worker[] {
    return this.#slots.flatMap((s) => (s.worker !== null ? [s.worker] : []));
  }

  /** Every worker compiles and serves `config`; resolves with the workers' reasons when some refused it. */
  async apply(config: ProxyConfig): Promise<string[]> {
    this.#config = config;
    const replies = await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'apply', id, config }))));
    return replies.flatMap((r) => (r.error !== null ? [r.error] : []));
  }

  setIdentity(parts: IdentityParts): void {
    this.#identity = parts;
    this.broadcast({ t: 'identity', parts });
  }

  broadcast(m: ToWorker): void {
    for (const w of this.workers) this.#post(w, m);
  }

  /** Each worker's stats (`/stats`). */
  async stats(): Promise<StatEntry[][]> {
    const replies = await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'stats', id }))));
    return replies.map((r) => (Array.isArray(r.value) ? (r.value as StatEntry[]) : []));
  }

  /** Each worker's per-host and circuit-breaker counters (`/clusters`, `/explain`). */
  async counts(): Promise<ThreadCounts[]> {
    const replies = await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'counts', id }))));
    return replies.map((r) =>
      typeof r.value === 'object' && r.value !== null && 'hosts' in r.value ? r.value : { hosts: new Map(), breakers: new Map() },
    );
  }

  /** Each worker's live window (`/ui/data`); asking marks it watched, so its access log lines are kept. */
  async liveWindows(): Promise<LiveWindowState[]> {
    const replies = await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'liveWindow', id }))));
    return replies.flatMap((r) => (r.error === null && typeof r.value === 'object' && r.value !== null && 'log' in r.value ? [r.value] : []));
  }

  /** Each worker's Prometheus text. */
  async prometheus(): Promise<string[]> {
    const replies = await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'prometheus', id }))));
    return replies.map((r) => (typeof r.value === 'string' ? r.value : ''));
  }

  setLogLevel(component: string | null, level: LogLevel): void {
    this.broadcast({ t: 'logLevel', component, level });
  }

  /** Every worker drains (stops accepting, lets requests finish) for up to `ms`. */
  async drain(ms: number): Promise<void> {
    await Promise.all(this.workers.map((w) => this.#ask(w, (id) => ({ t: 'drain', id, ms }))));
  }

  /** Closes every worker's runtime and ends the threads. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all(
      this.workers.map(async (w) => {
        const done = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        await Promise.race([this.#ask(w, (id) => ({ t: 'close', id })), done]);
        // Whatever is left (a socket that would keep the thread alive) ends with the thread.
        await Promise.race([done, new Promise((r) => setTimeout(r, 1_000).unref())]);
        await w.terminate();
      }),
    );
  }

  #post(w: Worker, m: ToWorker): void {
    w.postMessage(m);
  }

  #ask(w: Worker, make: (id: number) => ToWorker): Promise<Extract<FromWorker, { t: 'reply' }>> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const onExit = (): void => {
        this.#pending.delete(id);
        resolve({ t: 'reply', id, error: 'the worker exited' });
      };
      w.once('exit', onExit);
      this.#pending.set(id, {
        resolve: (m) => {
          w.off('exit', onExit);
          resolve(m);
        },
      });
      this.#post(w, make(id));
    });
  }

  #onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'reply': {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        p?.resolve(m);
        return;
      }
      case 'log':
        this.#sinks.log(m.line);
        return;
      case 'access':
        this.#sinks.accessLog(m.chunk);
        return;
      case 'outcomes': {
        const items = m.items;
        for (let i = 0; i + 2 < items.length; i += 3) this.#sinks.outcome(items[i] as string, items[i + 1] as string, items[i + 2] as number);
        return;
      }
    }
  }
}
