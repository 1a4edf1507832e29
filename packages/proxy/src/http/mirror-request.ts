import type { Dispatcher } from 'undici';
import type { ClusterHost } from '../upstream/upstream-host.ts';

/**
 * A shadow request (Istio `mirror`): sent, its response read and dropped, its failure
 * ignored. It is never allowed to outlive its timeout, so a mirror that hangs cannot pile up
 * connections or hold anything of the exchange that spawned it.
 */
export class MirrorRequest implements Dispatcher.DispatchHandler {
  /** Envoy's default route timeout, used for mirrors of routes that set none. */
  static readonly DEFAULT_TIMEOUT_MS = 15_000;

  static send(host: ClusterHost, method: string, path: string, headers: string[], body: Buffer | null, timeoutMs: number): void {
    const m = new MirrorRequest(host, timeoutMs);
    host.host.active++;
    host.host.pool.dispatch({ path, method: method as Dispatcher.HttpMethod, headers, body, blocking: false, servername: host.host.servername } as Dispatcher.DispatchOptions, m);
  }

  readonly #host: ClusterHost;
  readonly #timer: NodeJS.Timeout;
  #controller: Dispatcher.DispatchController | null = null;
  #done = false;

  private constructor(host: ClusterHost, timeoutMs: number) {
    this.#host = host;
    this.#timer = setTimeout(() => this.#controller?.abort(new Error('mirror timeout')), timeoutMs);
    this.#timer.unref();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
  }
  onResponseStart(): void {}
  onResponseData(): void {}
  onResponseEnd(): void {
    this.#end();
  }
  onResponseError(): void {
    this.#end();
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#host.host.active--;
  }
}
