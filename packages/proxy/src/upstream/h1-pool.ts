/**
 * A lean HTTP/1.1 keep-alive connection pool for one upstream address, with the part of
 * undici's Dispatcher API the proxy uses (`dispatch` with a controller-style handler, the
 * `'connect'` event, `close`, `destroy`, `stats.connected`), so callers do not know which
 * pool they have. Responses are parsed by Node's native llhttp binding; a request costs one
 * object (the request, which is also its controller), its head string and the response
 * header object. Parser and socket callbacks are set once per connection.
 *
 * Semantics follow undici where Remora relied on them (error classes and codes, so
 * connect failures, resets and timeouts classify as before) and Envoy's HTTP/1 codec where
 * the two differ: a connection is kept after HEAD, 1xx responses are dropped, the server's
 * `Keep-Alive: timeout=` shortens the idle time, and a connect failure fails the requests
 * waiting for a connection (Envoy purges its pending streams).
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { buildConnector, errors, type Dispatcher } from 'undici';
import { consumeSocket, HTTPParser, pauseReading, resumeReading, unconsumeSocket, type OnHeadersComplete } from './http1-parser.ts';

/** Envoy's default limit on a header block (`max_request_headers_kb`: 60 KiB), applied to responses too. */
export const MAX_RESPONSE_HEADER_BYTES = 60 * 1024;
/** The server's `Keep-Alive: timeout=` is trusted less this much (undici's threshold), for the race with its close. */
const KEEP_ALIVE_THRESHOLD_MS = 2_000;

export interface H1PoolOptions {
  /** Most connections at once; null: no limit. Requests beyond it wait in FIFO order. */
  readonly connections: number | null;
  readonly connectTimeout: number;
  /** How long an idle connection is kept. */
  readonly keepAliveTimeout: number;
  readonly localAddress?: string;
  /** Requests per connection, then it is closed; 0 or absent: no limit. */
  readonly maxRequestsPerClient?: number;
  /** Connections this old take no new request; 0 or absent: never. */
  readonly clientTtl?: number;
  /** An undici-style connector (TLS origination); absent: plaintext TCP. */
  readonly connect?: buildConnector.connector;
  /** TCP keepalive idle time of plaintext connections (ms); 0 or absent: 60 s. */
  readonly keepAliveInitialDelay?: number;
  /** Largest response head accepted; default Envoy's 60 KiB. */
  readonly maxHeaderSize?: number;
  /** A unix domain socket to dial instead of the origin's host and port (Envoy's `pipe` endpoint). */
  readonly socketPath?: string;
}

export interface H1DispatchOptions {
  readonly path: string;
  readonly method: string;
  /** Flat [name, value, ...] list; names as they go on the wire. */
  readonly headers?: readonly string[] | null;
  readonly body?: Buffer | Uint8Array | Readable | AsyncIterable<Uint8Array> | NodeJS.ReadableStream | null;
}

type Handler = Dispatcher.DispatchHandler;
type Headers = Record<string, string | string[]>;

const EMPTY_TRAILERS: Headers = Object.freeze({}) as Headers;
/** CR, LF or NUL in a header value would split the head (request smuggling). */
const INVALID_VALUE = /[\r\n\0]/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';

// Body kinds.
const BODY_NONE = 0;
const BODY_BUFFER = 1;
const BODY_STREAM = 2;
const BODY_ITERABLE = 3;

/** One request: its wire head, its body, and the controller its handler is given. */
class H1Request implements Dispatcher.DispatchController {
  readonly handler: Handler;
  readonly method: string;
  readonly head: string;
  readonly body: Buffer | Uint8Array | Readable | AsyncIterable<Uint8Array> | null;
  readonly bodyKind: number;
  readonly chunked: boolean;
  /** Declared content-length of a streamed body; -1 when chunked or none. */
  readonly contentLength: number;
  /** The caller asked for `Connection: close`. */
  readonly close: boolean;
  conn: H1Connection | null = null;
  pool: H1Pool;
  queued = false;
  /** A terminal callback (end or error) has been delivered. */
  done = false;
  rawHeaders: null = null;
  rawTrailers: null = null;
  #aborted = false;
  #paused = false;
  #reason: Error | null = null;

  constructor(pool: H1Pool, handler: Handler, method: string, head: string, body: H1Request['body'], bodyKind: number, chunked: boolean, contentLength: number, close: boolean) {
    this.pool = pool;
    this.handler = handler;
    this.method = method;
    this.head = head;
    this.body = body;
    this.bodyKind = bodyKind;
    this.chunked = chunked;
    this.contentLength = contentLength;
    this.close = close;
  }

  get aborted(): boolean {
    return this.#aborted;
  }
  get paused(): boolean {
    return this.#paused;
  }
  get reason(): Error | null {
    return this.#reason;
  }

  abort(reason: Error): void {
    if (this.#aborted || this.done) return;
    this.#aborted = true;
    this.#reason = reason;
    const conn = this.conn;
    if (conn !== null) conn.abort(this, reason);
    else {
      if (this.queued) this.pool.dequeued(this);
      this.fail(reason);
    }
  }

  pause(): void {
    if (this.#paused || this.done) return;
    this.#paused = true;
    const conn = this.conn;
    if (conn !== null) pauseReading(conn.socket, conn.consumed);
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const conn = this.conn;
    if (conn !== null && conn.req === this) resumeReading(conn.socket, conn.consumed);
  }

  /** Delivers the error, once. */
  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.conn = null;
    try {
      this.handler.onResponseError?.(this, err);
    } catch {
      // A handler that throws on error has nothing left to tell.
    }
  }
}

/** One TCP (or TLS) connection carrying one request at a time. */
class H1Connection {
  readonly pool: H1Pool;
  socket!: Socket;
  readonly parser = new HTTPParser();
  readonly createdAt = Date.now();
  req: H1Request | null = null;
  connected = false;
  /** The parser reads the socket's handle itself (`consumeSocket`); false: it is fed `'data'` events. */
  consumed = false;
  /** No new request goes on this connection (close asked for or received, limits reached). */
  closing = false;
  /** The request body is still being written. */
  writing = false;
  /** The response finished inside the parser; the connection is handed back once `execute` returns. */
  releasePending = false;
  served = 0;
  idleTimer: NodeJS.Timeout | null = null;
  idleTimerMs = 0;
  unreferenced = false;
  /** How long this connection may idle (the server's keep-alive hint can shorten it). */
  keepAliveMs: number;
  error: Error | null = null;
  /** The server's last `Keep-Alive` header and the idle time it allows (less the margin). */
  hint = '';
  hintMs = Infinity;
  // The response being parsed.
  statusCode = 0;
  informational = false;
  keepAlive = true;
  headerAcc: string[] | null = null;
  trailers: Headers | null = null;
  // A streamed request body being written.
  bodySource: Readable | null = null;
  bodyWritten = 0;

  constructor(pool: H1Pool, keepAliveMs: number, maxHeaderSize: number) {
    this.pool = pool;
    this.keepAliveMs = keepAliveMs;
    const p = this.parser;
    p.initialize(HTTPParser.RESPONSE, {}, maxHeaderSize);
    p[HTTPParser.kOnHeaders] = this.onParserHeaders;
    p[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete;
    p[HTTPParser.kOnBody] = this.onBody;
    p[HTTPParser.kOnMessageComplete] = this.onMessageComplete;
    p[HTTPParser.kOnExecute] = this.onExecute;
  }

  attach(socket: Socket): void {
    this.socket = socket;
    this.connected = true;
    this.consumed = consumeSocket(this.parser, socket);
    if (!this.consumed) socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
  }

  /** Idle, open, and young enough for another request. */
  usable(now: number, ttl: number): boolean {
    return !this.closing && !this.socket.destroyed && this.socket.readable && (ttl <= 0 || now - this.createdAt < ttl);
  }

  // --- writing ---------------------------------------------------------------------------

  write(req: H1Request): void {
    const socket = this.socket;
    if (this.unreferenced) {
      this.unreferenced = false;
      socket.ref();
    }
    req.conn = this;
    this.req = req;
    this.served++;
    const max = this.pool.maxRequests;
    if ((max > 0 && this.served >= max) || req.close) this.closing = true;
    switch (req.bodyKind) {
      case BODY_NONE:
        socket.write(req.head, 'latin1');
        this.#sent(req);
        return;
      case BODY_BUFFER: {
        const body = req.body as Uint8Array;
        socket.cork();
        socket.write(req.head, 'latin1');
        socket.write(body);
        socket.uncork();
        this.#bodySent(req, body);
        this.#sent(req);
        return;
      }
      case BODY_STREAM: {
        const body = req.body as Readable;
        socket.write(req.head, 'latin1');
        this.writing = true;
        this.bodyWritten = 0;
        if (body.readableEnded) {
          this.onBodyEnd();
          return;
        }
        if (body.destroyed) {
          this.onBodyError((body as { errored?: Error | null }).errored ?? new errors.RequestAbortedError('request body closed'));
          return;
        }
        this.bodySource = body;
        body.on('data', this.onBodyData);
        body.on('end', this.onBodyEnd);
        body.on('error', this.onBodyError);
        body.on('close', this.onBodyClose);
        if (body.isPaused()) body.resume();
        return;
      }
      default:
        socket.write(req.head, 'latin1');
        this.writing = true;
        this.bodyWritten = 0;
        void this.#writeIterable(req, req.body as AsyncIterable<Uint8Array>);
    }
  }

  #bodySent(req: H1Request, chunk: Uint8Array): void {
    if (req.handler.onBodySent !== undefined) {
      try {
        req.handler.onBodySent(chunk as Buffer);
      } catch (err) {
        req.abort(err as Error);
      }
    }
  }

  #sent(req: H1Request): void {
    if (req.handler.onRequestSent !== undefined && !req.done) {
      try {
        req.handler.onRequestSent();
      } catch (err) {
        req.abort(err as Error);
      }
    }
  }

  /** One chunk of a streamed body; false when the socket wants a pause. */
  #writeChunk(req: H1Request, chunk: Uint8Array): boolean {
    const socket = this.socket;
    const n = chunk.length;
    if (n === 0) return true;
    this.bodyWritten += n;
    let ok: boolean;
    if (req.chunked) {
      socket.cork();
      socket.write(n.toString(16) + CRLF, 'latin1');
      socket.write(chunk);
      ok = socket.write(CRLF, 'latin1');
      socket.uncork();
    } else {
      if (this.bodyWritten > req.contentLength) {
        req.abort(new errors.RequestContentLengthMismatchError('request body is longer than its content-length'));
        return false;
      }
      ok = socket.write(chunk);
    }
    this.#bodySent(req, chunk);
    return ok;
  }

  /** The end of a streamed body: the last chunk, then the request is sent. */
  #endBody(req: H1Request): void {
    this.writing = false;
    if (req.chunked) this.socket.write(LAST_CHUNK, 'latin1');
    else if (this.bodyWritten !== req.contentLength) {
      req.abort(new errors.RequestContentLengthMismatchError('request body is shorter than its content-length'));
      return;
    }
    this.#sent(req);
  }

  #detachBody(): void {
    const body = this.bodySource;
    if (body === null) return;
    this.bodySource = null;
    body.off('data', this.onBodyData);
    body.off('end', this.onBodyEnd);
    body.off('error', this.onBodyError);
    body.off('close', this.onBodyClose);
  }

  readonly onBodyData = (chunk: Buffer): void => {
    const req = this.req;
    if (req === null || !this.writing) return;
    if (!this.#writeChunk(req, chunk) && this.bodySource !== null) this.bodySource.pause();
  };

  readonly onBodyEnd = (): void => {
    this.#detachBody();
    const req = this.req;
    if (req !== null && this.writing) this.#endBody(req);
  };

  readonly onBodyError = (err: Error): void => {
    this.#detachBody();
    const req = this.req;
    if (req !== null && this.writing) req.abort(err);
  };

  readonly onBodyClose = (): void => {
    // 'close' without 'end': the body was cut off (the client went away).
    if (this.bodySource !== null && !this.bodySource.readableEnded) this.onBodyError(new errors.RequestAbortedError('request body closed before its end'));
  };

  readonly onDrain = (): void => {
    const body = this.bodySource;
    if (body !== null && this.writing && body.isPaused()) body.resume();
  };

  async #writeIterable(req: H1Request, body: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of body) {
        if (this.req !== req || !this.writing) return;
        if (!this.#writeChunk(req, chunk)) {
          if (this.req !== req || this.socket.destroyed) return;
          await new Promise<void>((resolve) => {
            this.socket.once('drain', resolve);
            this.socket.once('close', resolve);
          });
        }
      }
      if (this.req === req && this.writing) this.#endBody(req);
    } catch (err) {
      if (this.req === req && this.writing) req.abort(err as Error);
    }
  }

  // --- reading -----------------------------------------------------------------------------

  readonly onData = (chunk: Buffer): void => {
    this.onExecute(this.parser.execute(chunk));
  };

  /** A read is parsed (by `onData`, or by the parser itself on a consumed socket). */
  readonly onExecute = (ret: number | (Error & { code?: string; reason?: string })): void => {
    if (typeof ret !== 'number') this.#parseError(ret);
    if (this.releasePending) {
      this.releasePending = false;
      this.pool.released(this);
    }
  };

  #parseError(err: Error & { code?: string; reason?: string }): void {
    if (this.socket.destroyed) return;
    const code = err.code ?? 'HPE_INVALID';
    const e =
      code === 'HPE_HEADER_OVERFLOW'
        ? new errors.HeadersOverflowError('response headers larger than the limit')
        : parserError(`invalid response: ${err.reason ?? err.message}`, code);
    this.destroy(e);
  }

  readonly onParserHeaders = (headers: string[]): void => {
    // More than 32 header pairs (the rest come with onHeadersComplete), or trailers.
    if (this.statusCode === 0) {
      if (this.headerAcc === null) this.headerAcc = headers;
      else for (const h of headers) this.headerAcc.push(h);
      return;
    }
    const t = this.trailers ?? (this.trailers = {});
    addHeaders(t, headers);
  };

  readonly onHeadersComplete: OnHeadersComplete = (major, minor, rawHeaders, _m, _u, statusCode, statusMessage, upgrade, shouldKeepAlive) => {
    const req = this.req;
    let list = rawHeaders;
    if (this.headerAcc !== null) {
      list = rawHeaders === undefined ? this.headerAcc : this.headerAcc.concat(rawHeaders);
      this.headerAcc = null;
    }
    if (req === null || req.done) {
      this.destroy(socketError('bad response: no request is waiting for it', this.socket));
      return -1;
    }
    if (upgrade || statusCode === 101) {
      this.destroy(socketError('bad upgrade', this.socket));
      return -1;
    }
    if (statusCode < 200) {
      // 1xx: informational, dropped (Envoy proxies none of them by default).
      this.informational = true;
      return 1;
    }
    this.statusCode = statusCode;
    const headers: Headers = {};
    let connection: string | undefined;
    let keepAliveHint: string | undefined;
    let contentLength = -1;
    let hasTransferEncoding = false;
    if (list !== undefined) {
      for (let i = 0; i < list.length; i += 2) {
        const name = lower(list[i]!);
        const value = list[i + 1]!;
        const prev = headers[name];
        if (prev === undefined) headers[name] = value;
        else if (typeof prev === 'string') headers[name] = [prev, value];
        else prev.push(value);
        switch (name.length) {
          case 10:
            if (name === 'connection') connection = connection === undefined ? value : `${connection},${value}`;
            else if (name === 'keep-alive') keepAliveHint = value;
            break;
          case 14:
            if (name === 'content-length') contentLength = Number(value);
            break;
          case 17:
            if (name === 'transfer-encoding') hasTransferEncoding = true;
            break;
        }
      }
    }
    const noBody = req.method === 'HEAD' || statusCode === 204 || statusCode === 304;
    let keepAlive = shouldKeepAlive;
    if (noBody) {
      const c = connection === undefined ? '' : connection.toLowerCase();
      keepAlive = !c.includes('close') && ((major === 1 && minor >= 1) || c.includes('keep-alive'));
      // A 204/304 that announces content may be followed by it: the connection is not reused.
      if (req.method !== 'HEAD' && (contentLength > 0 || hasTransferEncoding)) keepAlive = false;
    }
    this.keepAlive = keepAlive;
    if (!keepAlive) this.closing = true;
    else if (keepAliveHint !== undefined) {
      // Servers repeat the same hint on every response (node:http: `timeout=5`): parsed once.
      if (keepAliveHint !== this.hint) {
        this.hint = keepAliveHint;
        const m = /timeout=(\d+)/i.exec(keepAliveHint);
        this.hintMs = m !== null ? Number(m[1]) * 1000 - KEEP_ALIVE_THRESHOLD_MS : Infinity;
      }
      if (this.hintMs <= 0) this.closing = true;
      else if (this.hintMs !== Infinity) this.keepAliveMs = Math.min(this.hintMs, this.pool.keepAliveTimeout);
    }
    try {
      req.handler.onResponseStart?.(req, statusCode, headers, statusMessage);
    } catch (err) {
      req.abort(err as Error);
    }
    if (req.done || req.aborted) return -1;
    return noBody ? 1 : 0;
  };

  readonly onBody = (chunk: Buffer): void => {
    const req = this.req;
    if (req === null || req.done) return;
    try {
      req.handler.onResponseData?.(req, chunk);
    } catch (err) {
      req.abort(err as Error);
    }
  };

  readonly onMessageComplete = (): void => {
    if (this.informational) {
      this.informational = false;
      this.headerAcc = null;
      return;
    }
    const req = this.req;
    const trailers = this.trailers ?? EMPTY_TRAILERS;
    this.statusCode = 0;
    this.trailers = null;
    if (req === null || req.done) return;
    req.done = true;
    req.conn = null;
    this.req = null;
    // A handler that paused on the last chunk never resumes this request: the connection
    // reads again, for the next response and to see the server's close while idle.
    if (req.paused) resumeReading(this.socket, this.consumed);
    if (this.writing) {
      // The response is whole before the request: the rest of the body is not sent, and the
      // connection (mid-request) cannot carry another.
      this.writing = false;
      this.#detachBody();
      this.closing = true;
    }
    this.releasePending = true;
    try {
      req.handler.onResponseEnd?.(req, trailers);
    } catch {
      // The response is delivered; a handler's failure after it is its own.
    }
  };

  // --- the socket ending -----------------------------------------------------------------

  readonly onEnd = (): void => {
    this.closing = true;
    // A body delimited by the connection's close ends here.
    if (this.statusCode !== 0 && !this.keepAlive) {
      const err = this.parser.finish();
      if (err !== undefined) this.#parseError(err);
      if (this.releasePending) this.releasePending = false;
    }
    this.destroy(this.req !== null ? socketError('other side closed', this.socket) : null);
  };

  readonly onError = (err: Error): void => {
    this.error ??= err;
  };

  readonly onClose = (): void => {
    this.closing = true;
    this.connected = false;
    this.#detachBody();
    this.writing = false;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    const req = this.req;
    this.req = null;
    if (this.consumed) {
      this.consumed = false;
      unconsumeSocket(this.parser, this.socket);
    }
    this.parser.close();
    this.pool.connectionClosed(this);
    if (req !== null && !req.done) req.fail(this.error ?? socketError('closed', this.socket));
  };

  /** Ends the connection; `err` is what its request (if any) fails with. */
  destroy(err: Error | null): void {
    this.closing = true;
    if (err !== null) this.error ??= err;
    if (!this.socket.destroyed) this.socket.destroy();
  }

  /** The request's handler aborted it: it gets the reason, the connection is dropped. */
  abort(req: H1Request, reason: Error): void {
    if (this.req === req) {
      this.req = null;
      this.#detachBody();
      const body = req.body;
      // As undici: a body source that was being sent is destroyed with the request.
      if (this.writing && body !== null && typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
      this.writing = false;
      this.destroy(new errors.InformationalError('aborted'));
    }
    req.fail(reason);
  }

  /** Back in the pool: unreferenced (an idle pool never keeps the process up), closed after keepAliveMs. */
  idle(): void {
    if (this.idleTimer === null || this.idleTimerMs !== this.keepAliveMs) {
      if (this.idleTimer !== null) clearTimeout(this.idleTimer);
      this.idleTimerMs = this.keepAliveMs;
      this.idleTimer = setTimeout(this.onIdleTimeout, this.keepAliveMs);
      this.idleTimer.unref();
    } else this.idleTimer.refresh();
    this.socket.unref();
    this.unreferenced = true;
  }

  readonly onIdleTimeout = (): void => {
    if (this.req === null) this.destroy(null);
  };
}

/** An HTTP/1.1 connection pool to one address. */
export class H1Pool extends EventEmitter {
  readonly keepAliveTimeout: number;
  readonly maxRequests: number;
  readonly #origin: string;
  readonly #hostname: string;
  readonly #host: string;
  readonly #protocol: string;
  readonly #port: string;
  readonly #limit: number;
  readonly #ttl: number;
  readonly #localAddress: string | null;
  readonly #maxHeaderSize: number;
  readonly #connector: buildConnector.connector;
  readonly #all = new Set<H1Connection>();
  readonly #idle: H1Connection[] = [];
  #queue: (H1Request | null)[] = [];
  #queueHead = 0;
  #pending = 0;
  #connecting = 0;
  #connected = 0;
  #closed = false;
  #destroyed = false;
  #closeWaiters: (() => void)[] = [];
  readonly stats: { readonly connected: number; readonly pending: number; readonly size: number };

  /** `origin`: `http://host:port` or `https://host:port` (IPv6 in brackets). */
  constructor(origin: string, opts: H1PoolOptions) {
    super();
    const url = new URL(origin);
    this.#origin = origin;
    this.#protocol = url.protocol;
    this.#host = url.host;
    this.#hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.#port = url.port || (url.protocol === 'https:' ? '443' : '80');
    this.#limit = opts.connections !== null && opts.connections > 0 ? opts.connections : Infinity;
    this.keepAliveTimeout = opts.keepAliveTimeout;
    this.maxRequests = opts.maxRequestsPerClient ?? 0;
    this.#ttl = opts.clientTtl ?? 0;
    this.#localAddress = opts.localAddress ?? null;
    this.#maxHeaderSize = opts.maxHeaderSize ?? MAX_RESPONSE_HEADER_BYTES;
    this.#connector =
      opts.connect ??
      buildConnector({
        timeout: opts.connectTimeout,
        keepAlive: true,
        ...(opts.socketPath !== undefined ? { socketPath: opts.socketPath } : {}),
        ...(opts.keepAliveInitialDelay ? { keepAliveInitialDelay: opts.keepAliveInitialDelay } : {}),
      });
    const self = this;
    this.stats = {
      get connected() {
        return self.#connected;
      },
      get pending() {
        return self.#pending;
      },
      get size() {
        return self.#all.size;
      },
    };
  }

  get closed(): boolean {
    return this.#closed;
  }
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Sends a request. The handler's `onRequestStart` is called at once with the controller;
   * it then gets either `onResponseStart`, `onResponseData` (any number), `onResponseEnd` or one
   * `onResponseError`. Returns false when the request was refused at once.
   */
  dispatch(opts: H1DispatchOptions | Dispatcher.DispatchOptions, handler: Handler): boolean {
    const req = this.#request(opts as H1DispatchOptions, handler);
    if (req instanceof Error) {
      queueMicrotask(() => failUnstarted(handler, req));
      return false;
    }
    if (this.#destroyed || this.#closed) {
      const err = this.#destroyed ? new errors.ClientDestroyedError('the pool is destroyed') : new errors.ClientClosedError('the pool is closed');
      queueMicrotask(() => req.fail(err));
      return false;
    }
    try {
      handler.onRequestStart?.(req, null);
    } catch (err) {
      req.abort(err as Error);
    }
    if (req.done) return false;
    const conn = this.#takeIdle();
    if (conn !== null) conn.write(req);
    else {
      req.queued = true;
      this.#queue.push(req);
      this.#pending++;
      this.#connectIfNeeded();
    }
    return true;
  }

  /** Stops taking requests; resolves when those in flight and queued are done and every connection is closed. */
  close(): Promise<void> {
    this.#closed = true;
    return new Promise((resolve) => {
      this.#closeWaiters.push(resolve);
      this.#checkClosed();
    });
  }

  /** Closes every connection now; what is in flight or queued fails. */
  destroy(err?: Error): Promise<void> {
    this.#closed = true;
    this.#destroyed = true;
    const reason = err ?? new errors.ClientDestroyedError('the pool is destroyed');
    this.#failQueue(reason);
    const open: Promise<void>[] = [];
    for (const c of this.#all) {
      if (c.connected) {
        open.push(new Promise((resolve) => c.socket.once('close', () => resolve())));
        c.destroy(reason);
      }
    }
    this.#idle.length = 0;
    return Promise.all(open).then(() => undefined);
  }

  // --- from connections and requests ---------------------------------------------------------

  /** A queued request was aborted. */
  dequeued(req: H1Request): void {
    req.queued = false;
    this.#pending--;
    const q = this.#queue;
    for (let i = this.#queueHead; i < q.length; i++) {
      if (q[i] === req) {
        q[i] = null;
        break;
      }
    }
  }

  /** A connection finished its request. */
  released(conn: H1Connection): void {
    if (conn.closing || conn.socket.destroyed) {
      conn.destroy(null);
      return;
    }
    if (this.#ttl > 0 && Date.now() - conn.createdAt >= this.#ttl) {
      conn.destroy(null);
      return;
    }
    const next = this.#shift();
    if (next !== null) {
      conn.write(next);
      return;
    }
    if (this.#closed) {
      conn.destroy(null);
      return;
    }
    conn.idle();
    this.#idle.push(conn);
  }

  /** A connection's socket closed. */
  connectionClosed(conn: H1Connection): void {
    if (!this.#all.delete(conn)) return;
    this.#connected--;
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    this.emit('disconnect', this.#origin, [this], conn.error);
    this.#connectIfNeeded();
    this.#checkClosed();
  }

  // --- inside ------------------------------------------------------------------------------

  #takeIdle(): H1Connection | null {
    const idle = this.#idle;
    const now = this.#ttl > 0 ? Date.now() : 0;
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.usable(now, this.#ttl)) return c;
      c.destroy(null);
    }
    return null;
  }

  #shift(): H1Request | null {
    const q = this.#queue;
    while (this.#queueHead < q.length) {
      const r = q[this.#queueHead];
      q[this.#queueHead++] = null;
      if (r !== null && r !== undefined && !r.done) {
        r.queued = false;
        this.#pending--;
        this.#compactQueue();
        return r;
      }
    }
    this.#compactQueue();
    return null;
  }

  #compactQueue(): void {
    if (this.#queueHead === this.#queue.length) {
      // Already empty (the common case: a connection released with nothing waiting): no write
      // to the length, which is a runtime call in V8 even to the length the array has.
      if (this.#queueHead === 0) return;
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #connectIfNeeded(): void {
    while (!this.#destroyed && this.#pending > this.#connecting && this.#all.size < this.#limit) this.#connect();
  }

  #connect(): void {
    const conn = new H1Connection(this, this.keepAliveTimeout, this.#maxHeaderSize);
    this.#all.add(conn);
    this.#connecting++;
    this.#connector(
      {
        hostname: this.#hostname,
        host: this.#host,
        protocol: this.#protocol,
        port: this.#port,
        ...(this.#localAddress !== null ? { localAddress: this.#localAddress } : {}),
      },
      (err, socket) => {
        this.#connecting--;
        if (err !== null || socket === null) {
          this.#all.delete(conn);
          conn.parser.close();
          this.emit('connectionError', this.#origin, [this], err);
          // Envoy purges the pending requests when a connection cannot be made.
          this.#failQueue(err ?? new Error('connect failed'));
          this.#checkClosed();
          return;
        }
        if (this.#destroyed) {
          this.#all.delete(conn);
          conn.parser.close();
          socket.destroy();
          return;
        }
        conn.attach(socket);
        this.#connected++;
        this.emit('connect', this.#origin, [this]);
        this.released(conn);
      },
    );
  }

  #failQueue(err: Error): void {
    const q = this.#queue;
    const from = this.#queueHead;
    this.#queue = [];
    this.#queueHead = 0;
    this.#pending = 0;
    for (let i = from; i < q.length; i++) {
      const r = q[i];
      if (r === null || r === undefined) continue;
      r.queued = false;
      r.fail(err);
    }
  }

  #checkClosed(): void {
    if (!this.#closed || this.#closeWaiters.length === 0) return;
    if (this.#pending > 0 || this.#connecting > 0) return;
    for (const c of this.#all) {
      if (c.req !== null) return;
    }
    for (const c of this.#all) c.destroy(null);
    if (this.#all.size > 0) return;
    const waiters = this.#closeWaiters;
    this.#closeWaiters = [];
    for (const w of waiters) w();
  }

  /** Builds the request's head once; an error names what is wrong with it. */
  #request(opts: H1DispatchOptions, handler: Handler): H1Request | Error {
    const method = opts.method;
    const path = opts.path;
    if (typeof path !== 'string' || path === '' || INVALID_VALUE.test(path) || path.includes(' ')) return new errors.InvalidArgumentError('invalid request path');
    if (typeof method !== 'string' || !TOKEN.test(method)) return new errors.InvalidArgumentError('invalid request method');
    let head = `${method} ${path} HTTP/1.1\r\n`;
    let host = false;
    let contentLength: string | null = null;
    let close = false;
    const headers = opts.headers;
    if (headers != null) {
      for (let i = 0; i < headers.length; i += 2) {
        const name = headers[i]!;
        const value = headers[i + 1]!;
        if (!TOKEN.test(name)) return new errors.InvalidArgumentError(`invalid header name ${JSON.stringify(name)}`);
        if (INVALID_VALUE.test(value)) return new errors.InvalidArgumentError(`invalid ${name} header`);
        switch (name.length) {
          case 4:
            if (lower(name) === 'host') host = true;
            break;
          case 6:
            // Expect is answered by this proxy, never passed on (Envoy).
            if (lower(name) === 'expect') continue;
            break;
          case 7:
            if (lower(name) === 'upgrade') continue;
            break;
          case 10: {
            const n = lower(name);
            if (n === 'keep-alive') continue;
            if (n === 'connection') {
              if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) close = true;
              continue;
            }
            break;
          }
          case 14:
            if (lower(name) === 'content-length') {
              if (!/^\d+$/.test(value) || (contentLength !== null && contentLength !== value)) return new errors.InvalidArgumentError('invalid content-length header');
              contentLength = value;
              continue;
            }
            break;
          case 17:
            // Framing is this pool's to choose, from the body and content-length.
            if (lower(name) === 'transfer-encoding') continue;
            break;
        }
        head += `${name}: ${value}\r\n`;
      }
    }
    if (!host) head += `host: ${this.#host}\r\n`;
    if (close) head += 'connection: close\r\n';
    const body = (opts.body ?? null) as H1Request['body'];
    let kind = BODY_NONE;
    let chunked = false;
    let length = -1;
    if (body === null) {
      if (contentLength !== null) head += `content-length: ${contentLength}\r\n`;
      else if (method === 'POST' || method === 'PUT' || method === 'PATCH') head += 'content-length: 0\r\n';
    } else if (body instanceof Uint8Array) {
      if (contentLength !== null && Number(contentLength) !== body.length) return new errors.RequestContentLengthMismatchError('request body length differs from its content-length');
      head += `content-length: ${body.length}\r\n`;
      kind = body.length === 0 ? BODY_NONE : BODY_BUFFER;
    } else {
      kind = typeof (body as Readable).on === 'function' && typeof (body as Readable).pause === 'function' ? BODY_STREAM : BODY_ITERABLE;
      if (contentLength !== null) {
        head += `content-length: ${contentLength}\r\n`;
        length = Number(contentLength);
      } else {
        head += 'transfer-encoding: chunked\r\n';
        chunked = true;
      }
    }
    head += CRLF;
    return new H1Request(this, handler, method, head, body, kind, chunked, length, close);
  }
}

function failUnstarted(handler: Handler, err: Error): void {
  try {
    handler.onResponseError?.(null as unknown as Dispatcher.DispatchController, err);
  } catch {
    // nothing left to tell
  }
}

function addHeaders(into: Headers, list: string[]): void {
  for (let i = 0; i < list.length; i += 2) {
    const name = lower(list[i]!);
    const value = list[i + 1]!;
    const prev = into[name];
    if (prev === undefined) into[name] = value;
    else if (typeof prev === 'string') into[name] = [prev, value];
    else prev.push(value);
  }
}

/** Lower-cases a header name; most already are, and those cost one scan. */
function lower(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) return name.toLowerCase();
  }
  return name;
}

/** undici's SocketError, with the socket's addresses as undici gives them (TLS alerts are found by local port). */
function socketError(message: string, socket: Socket): Error {
  const Ctor = errors.SocketError as unknown as new (message: string, socket: object) => Error;
  return new Ctor(message, { localAddress: socket.localAddress, localPort: socket.localPort, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, bytesWritten: socket.bytesWritten, bytesRead: socket.bytesRead });
}

/** undici's HTTPParserError: `code` is llhttp's (HPE_*). */
function parserError(message: string, code: string): Error {
  const Ctor = errors.HTTPParserError as unknown as new (message: string, code: string) => Error;
  return new Ctor(message, code.startsWith('HPE_') ? code.slice(4) : code);
}
