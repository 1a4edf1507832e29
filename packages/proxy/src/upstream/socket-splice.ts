import type { Socket } from 'node:net';

/** Envoy's delayed_close_timeout default: after one side is gone and the other is ended, how long to wait for its FIN. */
export const DELAYED_CLOSE_MS = 1_000;

export interface SpliceSettings {
  /** No byte either way for this long closes both sides (Envoy's tcp_proxy idle_timeout); 0: never. */
  readonly idleTimeoutMs: number;
  /** Once one side is closed, how long the other, already ended, gets to close before it is destroyed. */
  readonly delayedCloseMs: number;
}

/** What the owner of a splice hears: the end, once both sockets are closed. */
export interface SpliceOwner {
  onSpliceClosed(splice: SocketSplice): void;
}

/**
 * Two connected sockets, bytes copied both ways with back-pressure (a side that cannot take
 * more pauses the other), as Envoy's tcp_proxy and upgraded HTTP/1 streams do:
 *
 * - half-close passes through: a FIN from one side ends the other's sending direction, and
 *   the other may still answer until it ends too;
 * - when one side closes after an orderly end, the other is ended (its pending bytes flushed)
 *   and destroyed if it has not closed within the delayed-close time; a side that is reset,
 *   or closes without a FIN, takes the other down at once;
 * - no byte either way for the idle time closes both;
 * - bytes are counted each way.
 *
 * Both sockets should have `allowHalfOpen` set, so that a FIN does not end the receiving side
 * on its own. The owner hears once, when both sockets are closed, and reads the facts below.
 */
export class SocketSplice {
  readonly downstream: Socket;
  readonly upstream: Socket;
  /** Bytes read from the downstream and passed upstream. */
  bytesFromDownstream = 0;
  /** Bytes read from the upstream (or handed to `start`) and passed downstream. */
  bytesFromUpstream = 0;
  /** The downstream's FIN came while the upstream was still sending. */
  downstreamEndedFirst = false;
  /** The downstream closed without an orderly end (reset, or gone without FIN). */
  downstreamReset = false;
  /** The upstream's socket error, if it failed. */
  upstreamError: Error | null = null;
  /** Closed for idleness. */
  idleTimedOut = false;
  /** Cut by `close()` (shutdown). */
  closedLocally = false;
  /** `start` was called: bytes flow, and the owner will hear the end. */
  started = false;

  readonly #owner: SpliceOwner;
  readonly #settings: SpliceSettings;
  #downEnded = false;
  #upEnded = false;
  #downClosed = false;
  #upClosed = false;
  #done = false;
  #lastActive = 0;
  #idleTimer: NodeJS.Timeout | null = null;
  #lingerTimer: NodeJS.Timeout | null = null;

  constructor(downstream: Socket, upstream: Socket, settings: SpliceSettings, owner: SpliceOwner) {
    this.downstream = downstream;
    this.upstream = upstream;
    this.#settings = settings;
    this.#owner = owner;
  }

  /**
   * Starts copying. `first`: bytes already read from the upstream that belong to the
   * downstream (what followed an HTTP response head in the same read).
   */
  start(first: Buffer | null = null): void {
    this.started = true;
    const down = this.downstream;
    const up = this.upstream;
    this.#downClosed = down.destroyed;
    this.#upClosed = up.destroyed;
    this.#downEnded = down.readableEnded;
    this.#upEnded = up.readableEnded;
    down.on('data', this.#onDownData);
    up.on('data', this.#onUpData);
    down.on('drain', this.#onDownDrain);
    up.on('drain', this.#onUpDrain);
    down.on('end', this.#onDownEnd);
    up.on('end', this.#onUpEnd);
    down.on('error', noop);
    up.on('error', this.#onUpError);
    down.on('close', this.#onDownClose);
    up.on('close', this.#onUpClose);
    if (this.#settings.idleTimeoutMs > 0) {
      this.#lastActive = performance.now();
      this.#idleTimer = setTimeout(this.#onIdleTimer, this.#settings.idleTimeoutMs);
    }
    if (first !== null && first.length > 0) this.#onUpData(first);
    if (!this.#downEnded) down.resume();
    if (!this.#upEnded) up.resume();
    if (this.#downClosed || this.#upClosed) this.#afterClose();
  }

  /** Cuts both sides now (listener shutdown); the owner still hears when both have closed. */
  close(): void {
    if (this.#done) return;
    this.closedLocally = true;
    this.upstream.destroy();
    this.downstream.destroy();
  }

  readonly #onDownData = (chunk: Buffer): void => {
    this.bytesFromDownstream += chunk.length;
    if (this.#idleTimer !== null) this.#lastActive = performance.now();
    const up = this.upstream;
    if (!up.writable) return;
    if (!up.write(chunk)) this.downstream.pause();
  };

  readonly #onUpData = (chunk: Buffer): void => {
    this.bytesFromUpstream += chunk.length;
    if (this.#idleTimer !== null) this.#lastActive = performance.now();
    const down = this.downstream;
    if (!down.writable) return;
    if (!down.write(chunk)) this.upstream.pause();
  };

  readonly #onDownDrain = (): void => {
    if (!this.#upEnded) this.upstream.resume();
  };

  readonly #onUpDrain = (): void => {
    if (!this.#downEnded) this.downstream.resume();
  };

  readonly #onDownEnd = (): void => {
    this.#downEnded = true;
    if (!this.#upEnded) this.downstreamEndedFirst = true;
    if (this.upstream.writable) this.upstream.end();
  };

  readonly #onUpEnd = (): void => {
    this.#upEnded = true;
    if (this.downstream.writable) this.downstream.end();
  };

  readonly #onUpError = (err: Error): void => {
    this.upstreamError ??= err;
  };

  readonly #onDownClose = (hadError: boolean): void => {
    this.#downClosed = true;
    if (hadError || !this.#downEnded) this.downstreamReset = true;
    if (!this.#upClosed) this.#closeOther(this.upstream, hadError || !this.#downEnded);
    this.#afterClose();
  };

  readonly #onUpClose = (hadError: boolean): void => {
    this.#upClosed = true;
    if (!this.#downClosed) this.#closeOther(this.downstream, hadError || !this.#upEnded);
    this.#afterClose();
  };

  /** One side is closed: the other is reset with it, or ended and given the delayed-close time. */
  #closeOther(other: Socket, reset: boolean): void {
    if (reset) {
      other.destroy();
      return;
    }
    other.end();
    if (this.#lingerTimer === null) this.#lingerTimer = setTimeout(() => other.destroy(), this.#settings.delayedCloseMs).unref();
  }

  readonly #onIdleTimer = (): void => {
    this.#idleTimer = null;
    if (this.#done) return;
    const idleFor = performance.now() - this.#lastActive;
    const limit = this.#settings.idleTimeoutMs;
    if (idleFor < limit) {
      this.#idleTimer = setTimeout(this.#onIdleTimer, limit - idleFor);
      return;
    }
    this.idleTimedOut = true;
    this.upstream.destroy();
    this.downstream.destroy();
  };

  #afterClose(): void {
    if (!this.#downClosed || !this.#upClosed || this.#done) return;
    this.#done = true;
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    if (this.#lingerTimer !== null) clearTimeout(this.#lingerTimer);
    this.#idleTimer = null;
    this.#lingerTimer = null;
    this.#owner.onSpliceClosed(this);
  }
}

function noop(): void {}
