import { Transform, type Readable } from 'node:stream';
import { FilterStatus, type FilterCallbacks, type FilterRequest, type HttpFilter } from '@remora/filters';
import type { Logger } from '../logger.ts';
import { ResponseView } from './filter-response.ts';
import { LocalReplies, type LocalReply } from './local-reply.ts';

/** What `runResponse` found: go on, hold the head for the body, or a filter answered (the request is over). */
export const RESPONSE_CONTINUE = 0;
export const RESPONSE_HOLD = 1;
export const RESPONSE_REPLIED = 2;

const HAS_REQUEST_DATA = 1;
const HAS_RESPONSE = 2;
const HAS_RESPONSE_DATA = 4;
const NO_BYTES = Buffer.alloc(0);

/** A filter factory of the listener's chain (one filter per request). */
export interface FilterFactory {
  create(): HttpFilter;
}

/** The stream a filter manager runs for: what filters see, and how the manager answers or goes on. */
export interface FilterManagerStream extends FilterRequest, FilterCallbacks {
  /** True once the request has ended (answered, or the client went away). */
  readonly aborted: boolean;
  /** The status of the response about to be written; the response phase may change it. */
  responseCode: number;
  /** The chain let the request through: route it. */
  afterFilters(): void;
  /** Answers the request from the proxy (a filter's reply, or 500 when a filter threw). */
  replyLocally(reply: LocalReply): void;
}

/**
 * Envoy's FilterManager: one request's HTTP filters, made from the listener's chain, run in
 * order over the request (decode) and in reverse over the response (encode); a filter may
 * stop the iteration and resume it later (`continueRequest`), answer locally, or transform
 * the bodies. A filter that throws is answered with a 500, never with a crash.
 */
export class FilterManager {
  readonly #stream: FilterManagerStream;
  readonly #log: Logger;
  readonly #filters: HttpFilter[];
  /** Which optional phases the filters have (HAS_*). */
  readonly #phases: number;
  /** Filters whose `onRequest` has been called; the response and body phases run over these. */
  #index = 0;
  #iterating = false;
  #resumeRequested = false;
  /** In the response phase: a local reply made now does not run it again. */
  #inResponsePhase = false;
  /** The request body as the data filters left it; null until asked for. */
  #filteredBody: Readable | null = null;

  constructor(factories: readonly FilterFactory[], stream: FilterManagerStream, log: Logger) {
    this.#stream = stream;
    this.#log = log;
    const filters: HttpFilter[] = new Array(factories.length);
    let phases = 0;
    for (let i = 0; i < factories.length; i++) {
      const f = factories[i]!.create();
      filters[i] = f;
      if (f.onRequestData !== undefined) phases |= HAS_REQUEST_DATA;
      if (f.onResponse !== undefined) phases |= HAS_RESPONSE;
      if (f.onResponseData !== undefined) phases |= HAS_RESPONSE_DATA;
    }
    this.#filters = filters;
    this.#phases = phases;
  }

  /** The request phase from the first filter; `afterFilters` when every filter let it through. */
  start(): void {
    this.#iterate();
  }

  /** A filter that stopped the iteration resumes it. */
  continueRequest(): void {
    if (this.#stream.aborted) return;
    if (this.#iterating) {
      // Called from inside a filter's onRequest: the loop goes on when it returns.
      this.#resumeRequested = true;
      return;
    }
    this.#iterate();
  }

  #iterate(): void {
    const filters = this.#filters;
    const stream = this.#stream;
    this.#iterating = true;
    while (this.#index < filters.length) {
      const f = filters[this.#index++]!;
      let status: number;
      try {
        status = f.onRequest(stream, stream);
      } catch (err) {
        this.#iterating = false;
        this.#failed('', err);
        return;
      }
      if (stream.aborted) {
        this.#iterating = false;
        return;
      }
      if (status === FilterStatus.StopIteration) {
        if (this.#resumeRequested) {
          this.#resumeRequested = false;
          continue;
        }
        this.#iterating = false;
        return;
      }
    }
    this.#iterating = false;
    stream.afterFilters();
  }

  /** A filter transforms or observes the response body. */
  get hasResponseData(): boolean {
    return (this.#phases & HAS_RESPONSE_DATA) !== 0;
  }

  /** A filter transforms or observes the request body. */
  get hasRequestData(): boolean {
    return (this.#phases & HAS_REQUEST_DATA) !== 0;
  }

  /**
   * The response phase (Envoy's encodeHeaders): `onResponse` of each filter whose `onRequest`
   * ran, last first, over the head about to be written: `headers` is edited in place and the
   * stream's `responseCode` is the status, which a filter may change. Not run again for a
   * local reply a filter makes in this phase.
   */
  runResponse(headers: string[], local: boolean): number {
    if ((this.#phases & HAS_RESPONSE) === 0 || this.#inResponsePhase) return RESPONSE_CONTINUE;
    const stream = this.#stream;
    const filters = this.#filters;
    const view = new ResponseView(stream.responseCode, headers, local);
    let result = RESPONSE_CONTINUE;
    this.#inResponsePhase = true;
    try {
      for (let i = Math.min(this.#index, filters.length) - 1; i >= 0; i--) {
        const f = filters[i]!;
        if (f.onResponse === undefined) continue;
        const status = f.onResponse(view, stream);
        if (stream.aborted) return RESPONSE_REPLIED;
        if (status === FilterStatus.StopIteration) result = RESPONSE_HOLD;
      }
    } catch (err) {
      this.#inResponsePhase = false;
      this.#failed('the response to ', err);
      return RESPONSE_REPLIED;
    } finally {
      this.#inResponsePhase = false;
    }
    stream.responseCode = view.status;
    return result;
  }

  /**
   * A response body chunk through the filters' `onResponseData`, last filter first; what
   * comes out goes to the client. After a filter's local reply (or a throw, answered with a
   * 500 or a reset) the rest is dropped: check the stream's `aborted`.
   */
  responseData(chunk: Buffer, end: boolean): Buffer {
    const filters = this.#filters;
    const stream = this.#stream;
    for (let i = Math.min(this.#index, filters.length) - 1; i >= 0; i--) {
      const f = filters[i]!;
      if (f.onResponseData === undefined) continue;
      try {
        chunk = f.onResponseData(chunk, end, stream);
      } catch (err) {
        this.#failed('the response body of ', err);
        return NO_BYTES;
      }
      if (stream.aborted) return NO_BYTES;
    }
    return chunk;
  }

  /**
   * The request body as upstream gets it: `source` itself, or, when a filter has
   * `onRequestData`, a stream of what the filters let through (back-pressure flows through it).
   */
  requestBody(source: Readable): Readable {
    if ((this.#phases & HAS_REQUEST_DATA) === 0) return source;
    if (this.#filteredBody !== null) return this.#filteredBody;
    const transform = new Transform({
      transform: (chunk: Buffer, _enc, cb) => cb(null, this.#requestData(chunk, false)),
      flush: (cb) => cb(null, this.#requestData(NO_BYTES, true)),
    });
    source.on('error', (err) => transform.destroy(err));
    source.on('aborted', () => transform.destroy(new Error('request aborted')));
    source.pipe(transform);
    this.#filteredBody = transform;
    return transform;
  }

  #requestData(chunk: Buffer, end: boolean): Buffer {
    const filters = this.#filters;
    const stream = this.#stream;
    const n = Math.min(this.#index, filters.length);
    for (let i = 0; i < n; i++) {
      if (stream.aborted) return NO_BYTES;
      const f = filters[i]!;
      if (f.onRequestData === undefined) continue;
      try {
        chunk = f.onRequestData(chunk, end, stream);
      } catch (err) {
        this.#failed('the request body of ', err);
        return NO_BYTES;
      }
    }
    return stream.aborted ? NO_BYTES : chunk;
  }

  /** Lets filters release timers and waits; called once when the request ends. */
  destroy(): void {
    for (const f of this.#filters) {
      try {
        f.onDestroy?.();
      } catch (err) {
        this.#log.error(`filter onDestroy failed: ${(err as Error).message}`);
      }
    }
  }

  /** A filter threw: logged, and the request answered with a 500 (or reset when its head is out). */
  #failed(what: string, err: unknown): void {
    const s = this.#stream;
    this.#log.error(`filter failed on ${what}${s.method} ${s.path}: ${(err as Error).stack ?? String(err)}`);
    s.replyLocally(LocalReplies.filterError);
  }
}
