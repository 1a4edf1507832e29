/**
 * Requests filters send to the snapshot's clusters (ext_authz's checks), as Envoy's async
 * client sends them: a host picked by the cluster's load balancer, through its pool (so TLS
 * origination and HTTP/2 are the cluster's), the whole response read, bounded by a timeout.
 */
import type { Dispatcher } from 'undici';
import type { FilterUpstream, FilterUpstreamFailure, FilterUpstreamRequest, FilterUpstreamResponse } from '@remora/filters';
import type { HashSource } from '../upstream/load-balancer.ts';
import type { UpstreamCluster } from './upstream-cluster.ts';
import type { ClusterHost } from './upstream-host.ts';

/** A side call hashes on nothing of the request that caused it. */
const NO_HASH: HashSource = {
  requestHeader: () => null,
  cookie: () => null,
  queryParam: () => null,
  sourceIp: '',
  setResponseCookie: () => undefined,
};

type Done = (failure: FilterUpstreamFailure | null, response: FilterUpstreamResponse | null, detail: string) => void;

export class ClusterCaller implements FilterUpstream {
  readonly #clusters: ReadonlyMap<string, UpstreamCluster>;

  constructor(clusters: ReadonlyMap<string, UpstreamCluster>) {
    this.#clusters = clusters;
  }

  send(cluster: string, request: FilterUpstreamRequest, done: Done): () => void {
    const c = this.#clusters.get(cluster);
    if (c === undefined) {
      queueMicrotask(() => done('no_cluster', null, `cluster ${cluster} is not in this config`));
      return () => undefined;
    }
    const host = c.pick(NO_HASH);
    if (host === null) {
      queueMicrotask(() => done('no_healthy_upstream', null, `cluster ${cluster} has no healthy host`));
      return () => undefined;
    }
    const call = new UpstreamCall(host, request.timeoutMs, done);
    host.host.active++;
    host.host.pool.dispatch(
      {
        path: request.path,
        method: request.method as Dispatcher.HttpMethod,
        headers: request.headers as string[],
        body: request.body === null ? null : Buffer.from(request.body.buffer, request.body.byteOffset, request.body.byteLength),
        blocking: false,
        servername: host.host.servername,
      } as Dispatcher.DispatchOptions,
      call,
    );
    return () => call.cancel();
  }
}

class UpstreamCall implements Dispatcher.DispatchHandler {
  readonly #host: ClusterHost;
  readonly #timer: NodeJS.Timeout;
  #done: Done | null;
  #ended = false;
  #controller: Dispatcher.DispatchController | null = null;
  #status = 0;
  #headers: string[] = [];
  readonly #chunks: Buffer[] = [];

  constructor(host: ClusterHost, timeoutMs: number, done: Done) {
    this.#host = host;
    this.#done = done;
    this.#timer = setTimeout(() => {
      this.#finish('timeout', null, `no response within ${timeoutMs} ms`);
      this.#controller?.abort(new Error('timeout'));
    }, timeoutMs);
  }

  cancel(): void {
    this.#done = null;
    this.#finish(null, null, '');
    this.#controller?.abort(new Error('cancelled'));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    this.#status = statusCode;
    this.#headers = flat(headers);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#chunks.push(chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.#finish(null, { status: this.#status, headers: this.#headers, body: Buffer.concat(this.#chunks), trailers: flat(trailers ?? {}) }, '');
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#finish('connect_failure', null, err.message);
  }

  /** Ends the call once: the timer and the host's active count released, `done` told (unless cancelled). */
  #finish(failure: FilterUpstreamFailure | null, response: FilterUpstreamResponse | null, detail: string): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#host.host.active--;
    const done = this.#done;
    this.#done = null;
    done?.(failure, response, detail);
  }
}

function flat(headers: Record<string, string | string[] | undefined>): string[] {
  const out: string[] = [];
  for (const [name, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    const lower = name.toLowerCase();
    if (Array.isArray(v)) for (const x of v) out.push(lower, x);
    else out.push(lower, v);
  }
  return out;
}
