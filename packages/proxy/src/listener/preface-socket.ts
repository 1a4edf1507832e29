import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/**
 * A socket whose first bytes were already read (to tell HTTP/2 from HTTP/1), replayed in
 * front of the rest. Node's HTTP/2 server reads a plain socket's handle natively, where
 * bytes put back with `unshift` are never seen, so it is given this stream instead.
 */
export class PrefaceSocket extends Duplex {
  readonly #socket: Socket;

  constructor(socket: Socket, head: Buffer) {
    super({ allowHalfOpen: false });
    this.#socket = socket;
    this.push(head);
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  get remoteAddress(): string | undefined {
    return this.#socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.#socket.remotePort;
  }
  get localAddress(): string | undefined {
    return this.#socket.localAddress;
  }
  get localPort(): number | undefined {
    return this.#socket.localPort;
  }

  setNoDelay(noDelay?: boolean): this {
    this.#socket.setNoDelay(noDelay);
    return this;
  }

  setTimeout(ms: number, cb?: () => void): this {
    this.#socket.setTimeout(ms, cb);
    return this;
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#socket.write(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#socket.end(cb);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#socket.destroy(err ?? undefined);
    cb(err);
  }
}
