import { Readable } from 'node:stream';

/**
 * Envoy's per-request buffer limit for retries and shadowing (its default connection buffer
 * limit, 1 MiB): a body that grows beyond it is still streamed, but no longer replayable.
 */
export const REQUEST_BUFFER_LIMIT = 1024 * 1024;

/**
 * A downstream request body that several upstream attempts (retries) and a mirror may read.
 * Chunks are kept while the total stays within the buffer limit, so a retry starts from the
 * first byte; beyond it the copy is dropped and only the current attempt keeps streaming.
 * Backpressure comes from the current attempt: when it is full, the client is paused.
 */
export class ReplayableBody {
  readonly #source: Readable;
  readonly #limit: number;
  #chunks: Buffer[] | null = [];
  #size = 0;
  #ended = false;
  #error: Error | null = null;
  #current: BodyReader | null = null;
  readonly #onComplete: (() => void)[] = [];
  /** A filter reading the body ahead (`readAhead`): its byte count and callback. */
  #ahead: { readonly maxBytes: number; readonly done: (body: Buffer, complete: boolean) => void } | null = null;

  constructor(source: Readable, limit = REQUEST_BUFFER_LIMIT) {
    this.#source = source;
    this.#limit = limit;
    source.on('data', (chunk: Buffer) => this.#onData(chunk));
    source.on('end', () => {
      this.#ended = true;
      this.#finishAhead(true);
      this.#current?.push(null);
      for (const f of this.#onComplete.splice(0)) f();
    });
    source.on('error', (err: Error) => {
      this.#error = err;
      this.#current?.destroy(err);
    });
    // Nothing flows until an attempt asks for it.
    source.pause();
  }

  /** True while every byte read so far is still held, so a new attempt can start over. */
  get replayable(): boolean {
    return this.#chunks !== null;
  }

  get complete(): boolean {
    return this.#ended;
  }

  /** Bytes read from the client so far. */
  get size(): number {
    return this.#size;
  }

  /** The whole body, when it ended within the limit (for mirrors); null otherwise. */
  buffered(): Buffer | null {
    return this.#ended && this.#chunks !== null ? Buffer.concat(this.#chunks, this.#size) : null;
  }

  /** Calls `f` once the client has sent the whole body (now, if it has). */
  whenComplete(f: () => void): void {
    if (this.#ended) f();
    else this.#onComplete.push(f);
  }

  /**
   * A stream for a new attempt: the buffered bytes, then what the client sends next. The
   * previous attempt's stream stops receiving. Throws if the body is no longer replayable.
   */
  open(): Readable {
    if (this.#chunks === null && this.#size > 0) throw new Error('request body is no longer replayable');
    const previous = this.#current;
    const reader = new BodyReader(this);
    this.#current = reader;
    if (previous !== null) previous.detach();
    for (const c of this.#chunks ?? []) reader.push(c);
    if (this.#error !== null) reader.destroy(this.#error);
    else if (this.#ended) reader.push(null);
    return reader;
  }

  /**
   * Reads the body ahead of any attempt, for a filter (ext_authz's `with_request_body`):
   * `done` gets the whole body when it ends within `maxBytes`, else its first `maxBytes`
   * (`complete` false) and the client is paused. What was read is kept for the attempts.
   */
  readAhead(maxBytes: number, done: (body: Buffer, complete: boolean) => void): void {
    if (this.#ended || this.#size >= maxBytes) {
      this.#ahead = { maxBytes, done };
      this.#finishAhead(this.#ended);
      return;
    }
    this.#ahead = { maxBytes, done };
    this.#source.resume();
  }

  #finishAhead(ended: boolean): void {
    const ahead = this.#ahead;
    if (ahead === null) return;
    this.#ahead = null;
    const all = Buffer.concat(this.#chunks ?? [], this.#size);
    const complete = ended && all.length <= ahead.maxBytes;
    ahead.done(complete ? all : all.subarray(0, ahead.maxBytes), complete);
  }

  /** Called by the current reader when it wants more. */
  resume(): void {
    if (!this.#ended) this.#source.resume();
  }

  #onData(chunk: Buffer): void {
    this.#size += chunk.length;
    if (this.#chunks !== null) {
      // Bytes read ahead for a filter are all kept: the attempts must send them.
      if (this.#size <= this.#limit || this.#ahead !== null) this.#chunks.push(chunk);
      else this.#chunks = null;
    }
    if (this.#ahead !== null) {
      if (this.#size >= this.#ahead.maxBytes) {
        this.#source.pause();
        this.#finishAhead(false);
      }
      return;
    }
    const reader = this.#current;
    if (reader === null || !reader.push(chunk)) this.#source.pause();
  }
}

class BodyReader extends Readable {
  #owner: ReplayableBody | null;
  constructor(owner: ReplayableBody) {
    super();
    this.#owner = owner;
  }
  override _read(): void {
    this.#owner?.resume();
  }
  /** A newer attempt took over: this stream gets nothing more and ends quietly. */
  detach(): void {
    this.#owner = null;
    this.destroy();
  }
}
