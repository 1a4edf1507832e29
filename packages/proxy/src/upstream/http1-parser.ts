/**
 * Node's own HTTP/1 parser (the llhttp binding node:http's client uses), reached
 * through `_http_common`. It parses in native code and hands header names and values over
 * as strings, which is what makes the HTTP/1.1 pool cheaper than undici's wasm parser.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

export interface HTTPParser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenient?: number): void;
  /** Bytes parsed, or the parse error (`code` HPE_*, `reason`). */
  execute(data: Buffer): number | (Error & { code?: string; reason?: string });
  /** Ends a read-until-close body; the parse error if the message was incomplete. */
  finish(): undefined | (Error & { code?: string; reason?: string });
  close(): void;
  free(): void;
  remove(): void;
  /** Reads a stream handle straight into the parser, in native code; `kOnExecute` gets the result of each read. */
  consume(handle: object): void;
  unconsume(): void;
  /** A copy of the bytes of the read being parsed (only while `kOnExecute` runs). */
  getCurrentBuffer(): Buffer;
  [callback: number]: unknown;
}

interface HTTPParserClass {
  new (): HTTPParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnMessageBegin: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
}

const common = createRequire(import.meta.url)('node:_http_common') as { HTTPParser: HTTPParserClass; methods: readonly string[] };

export const HTTPParser = common.HTTPParser;

/** llhttp's method names by the number a request parser reports. */
export const HTTP_METHODS: readonly string[] = common.methods;

/** `onHeadersComplete` of a response: (major, minor, headers | undefined, method, url, status, statusMessage, upgrade, shouldKeepAlive). */
export type OnHeadersComplete = (
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: undefined,
  url: undefined,
  statusCode: number,
  statusMessage: string,
  upgrade: boolean,
  shouldKeepAlive: boolean,
) => number;

/** The native stream under a socket (`TCPWrap`, `TLSWrap`), as node:net keeps it. */
interface StreamHandle {
  readonly isStreamBase?: boolean;
  reading: boolean;
  readStart(): number;
  readStop(): number;
  _consumed?: boolean;
}

function handleOf(socket: Socket): StreamHandle | null {
  return ((socket as unknown as { _handle?: StreamHandle | null })._handle) ?? null;
}

/**
 * Has `parser` read the socket itself, as node:http's server does: each read goes from libuv
 * into llhttp without a `Buffer` event through the stream machinery (one JS call per read,
 * `kOnExecute`, instead of `onStreamRead` → `push` → `'data'`). End of stream and read errors
 * still reach the socket (`'end'`, `'error'`). Only when nothing is buffered in the socket's
 * stream already (those bytes would be skipped); false when it cannot (the caller reads
 * `'data'` instead). Reading is paused and resumed with `pauseReading` and `resumeReading`,
 * which know either way.
 */
export function consumeSocket(parser: HTTPParser, socket: Socket): boolean {
  const handle = handleOf(socket);
  if (handle === null || handle.isStreamBase !== true || handle._consumed === true || socket.readableLength > 0) return false;
  parser.consume(handle);
  handle._consumed = true;
  return true;
}

/** Gives the socket's reads back to its stream (before a hand-over or freeing the parser). */
export function unconsumeSocket(parser: HTTPParser, socket: Socket): void {
  parser.unconsume();
  const handle = handleOf(socket);
  if (handle !== null) handle._consumed = false;
}

/**
 * Stops reading a socket (back-pressure): a consumed one's handle reads nothing from the kernel
 * until `resumeReading`; one fed by `'data'` is paused as a stream.
 */
export function pauseReading(socket: Socket, consumed: boolean): void {
  if (!consumed) {
    socket.pause();
    return;
  }
  const handle = handleOf(socket);
  if (handle !== null && handle.reading) {
    handle.reading = false;
    handle.readStop();
  }
}

export function resumeReading(socket: Socket, consumed: boolean): void {
  if (!consumed) {
    socket.resume();
    return;
  }
  const handle = handleOf(socket);
  if (handle !== null && !handle.reading && !socket.destroyed) {
    handle.reading = true;
    handle.readStart();
  }
}
