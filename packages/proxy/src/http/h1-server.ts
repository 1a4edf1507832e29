/**
 * The downstream HTTP/1.1 codec (Envoy's `Http1::ServerConnectionImpl`): llhttp parses the
 * requests in native code (Node's own binding, as the upstream pool uses it), and responses
 * go to the socket as pre-built heads and raw bytes. It replaces node:http's server on the
 * request path: no `IncomingMessage`/`ServerResponse` streams per request, no header object,
 * a request without a body allocates its head and nothing else.
 *
 * What it keeps of node:http's server, because clients and the tests rely on it: keep-alive
 * and `Connection: close`, HTTP/1.0, pipelined requests answered in order, `Expect:
 * 100-continue` answered by the proxy, `Date` on every response, chunked framing when the
 * response has no length, header characters checked before they go out, the header and
 * request timeouts (408), idle connections closed after the idle timeout, and the
 * header-size limit (431). Upgrades and CONNECT leave the codec with the bytes read past
 * their head.
 */
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { consumeSocket, HTTP_METHODS, HTTPParser, pauseReading, resumeReading, unconsumeSocket } from '../upstream/http1-parser.ts';

/** What the codec needs from the listener it serves. */
export interface H1ServerHandler {
  /** A request's head is in (its body, if any, follows on `req.bodyStream()`). */
  onRequest(req: H1Request, res: H1Response): void;
  /** Whether an `Upgrade` request leaves HTTP (true) or is served as a plain request (false: h2c). */
  shouldUpgrade(req: H1Request): boolean;
  /** An upgrade or CONNECT request: the socket is the handler's now; `head` is what came after the request head. */
  onUpgrade(req: H1Request, socket: Socket, head: Buffer): void;
  /**
   * The codec cannot go on (a parse error `HPE_*`, `ERR_HTTP_REQUEST_TIMEOUT`, an expectation
   * it cannot meet): the handler answers on the socket and ends it, or destroys it.
   */
  onClientError(err: NodeJS.ErrnoException, socket: Socket): void;
}

export interface H1ServerOptions {
  /** Request head limit in bytes (431 beyond it). */
  readonly maxHeaderSize: number;
  /** A request's headers must be complete within this from its first byte; 0: no limit. */
  readonly headersTimeoutMs: number;
  /** A whole request within this from its first byte; 0: no limit. */
  readonly requestTimeoutMs: number;
  /** A connection with nothing in flight is closed after this. */
  readonly idleTimeoutMs: number;
}

/** Pipelined requests answered ahead of time: beyond this many, reading stops until the first is done. */
const MAX_PIPELINED = 16;

/** A response head and a first body chunk up to this size together go out as one buffer (one `write`, no `writev`). */
const COALESCE_BYTES = 8192;

const CRLF = '\r\n';
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';
const LAST_CHUNK = '0\r\n\r\n';
const EXPECTATION_FAILED = 'HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n';

/** `HTTP/1.1 NNN Reason\r\n` by status; node:http always answers with 1.1, and so does Envoy. */
const STATUS_LINES: string[] = [];
for (let code = 100; code < 600; code++) STATUS_LINES[code] = `HTTP/1.1 ${code} ${STATUS_CODES[code] ?? 'unknown'}\r\n`;

function statusLine(code: number): string {
  return STATUS_LINES[code] ?? `HTTP/1.1 ${code} unknown\r\n`;
}

/** `date: <IMF-fixdate>\r\n`, made once per second. */
let dateLine = '';
let dateSecond = -1;
function currentDateLine(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateLine = `date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

/** A request body as it arrives; reading it is what lets the connection read on (back-pressure). */
class H1Body extends Readable {
  readonly #conn: H1ServerConnection;
  /** The whole body arrived. */
  complete = false;

  constructor(conn: H1ServerConnection) {
    super();
    this.#conn = conn;
  }

  override _read(): void {
    this.#conn.resumeBody();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.complete) this.emit('aborted');
    // As node:http's request: the error reaches only a stream that listens for it.
    cb(this.listenerCount('error') > 0 ? err : null);
  }
}

/** One request as the codec parsed it: the request line and headers as sent, the body on demand. */
export class H1Request {
  readonly method: string;
  readonly url: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  /** Header names and values as sent, flat. */
  readonly rawHeaders: string[];
  readonly socket: Socket;
  /** The client lets the connection live on after this request. */
  readonly shouldKeepAlive: boolean;
  readonly #conn: H1ServerConnection;
  #body: H1Body | null = null;
  /** The whole request arrived (its body too). */
  complete = false;

  constructor(conn: H1ServerConnection, method: string, url: string, major: number, minor: number, rawHeaders: string[], keepAlive: boolean) {
    this.#conn = conn;
    this.socket = conn.socket;
    this.method = method;
    this.url = url;
    this.httpVersionMajor = major;
    this.httpVersionMinor = minor;
    this.rawHeaders = rawHeaders;
    this.shouldKeepAlive = keepAlive;
  }

  get httpVersion(): string {
    return this.httpVersionMajor === 1 && this.httpVersionMinor === 1 ? '1.1' : `${this.httpVersionMajor}.${this.httpVersionMinor}`;
  }

  /** The body as a stream (made on first use; empty and ended for a request without one). */
  bodyStream(): Readable {
    if (this.#body === null) {
      this.#body = new H1Body(this.#conn);
      if (this.complete) this.#endBody();
    }
    return this.#body;
  }

  /** A body chunk from the parser; false: the reader is behind. */
  pushBody(chunk: Buffer): boolean {
    return (this.#body ??= new H1Body(this.#conn)).push(chunk);
  }

  finish(): void {
    this.complete = true;
    if (this.#body !== null) this.#endBody();
  }

  #endBody(): void {
    const body = this.#body!;
    body.complete = true;
    body.push(null);
  }

  /** The client went away before the request was complete. */
  abort(): void {
    if (this.#body !== null && !this.complete && !this.#body.destroyed) this.#body.destroy(new Error('aborted'));
  }
}

/**
 * One response, written straight to the socket: the head once (framing decided from its
 * headers), then body chunks (chunked when it has no length), then the end. A response
 * behind another on a pipelined connection keeps its bytes until the ones before are done.
 */
export class H1Response {
  readonly #conn: H1ServerConnection;
  readonly #noBodyRequest: boolean;
  readonly #http10: boolean;
  /** The client keeps the connection (its request said so, and nothing since closes it). */
  #keepAlive: boolean;
  headersSent = false;
  finished = false;
  #chunked = false;
  #noBody = false;
  /** Output held while responses before this one are unfinished (pipelining). */
  held: (string | Buffer)[] | null = null;

  constructor(conn: H1ServerConnection, req: H1Request) {
    this.#conn = conn;
    this.#noBodyRequest = req.method === 'HEAD';
    this.#http10 = req.httpVersionMinor === 0;
    this.#keepAlive = req.shouldKeepAlive;
  }

  /** The connection stays open after this response. */
  get keepAlive(): boolean {
    return this.#keepAlive;
  }

  /** The head, from a flat name/value list; throws (writing nothing) when a header cannot be sent. */
  writeHead(status: number, headers: readonly string[]): void {
    let head = statusLine(status);
    let length = false;
    let chunked = false;
    let connection = false;
    let date = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      // node:http's own checks (ERR_INVALID_HTTP_TOKEN, ERR_INVALID_CHAR), before anything is written.
      validateHeaderName(name);
      validateHeaderValue(name, value);
      switch (name.length) {
        case 4:
          if (!date && name.toLowerCase() === 'date') date = true;
          break;
        case 10:
          if (name.toLowerCase() === 'connection') {
            connection = true;
            if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) this.#keepAlive = false;
          }
          break;
        case 14:
          if (name.toLowerCase() === 'content-length') length = true;
          break;
        case 17:
          if (name.toLowerCase() === 'transfer-encoding' && /chunked\s*$/i.test(value)) chunked = true;
          break;
      }
      head += `${name}: ${value}\r\n`;
    }
    this.#noBody = this.#noBodyRequest || status === 204 || status === 304 || (status >= 100 && status < 200);
    if (!this.#noBody && !length && !chunked) {
      // No length: chunked on HTTP/1.1; an HTTP/1.0 client reads to the close.
      if (this.#http10) this.#keepAlive = false;
      else {
        head += 'transfer-encoding: chunked\r\n';
        chunked = true;
      }
    }
    this.#chunked = chunked && !this.#noBody;
    if (this.#conn.closing) this.#keepAlive = false;
    if (!connection) {
      if (!this.#keepAlive) head += 'connection: close\r\n';
      else if (this.#http10) head += 'connection: keep-alive\r\n';
    }
    if (!date) head += currentDateLine();
    this.headersSent = true;
    this.#conn.write(this, head + CRLF, true);
  }

  /** A body chunk; false: the socket's buffer is full (wait for `onDrain`). */
  write(chunk: Buffer): boolean {
    if (this.#noBody || chunk.length === 0) return true;
    const conn = this.#conn;
    if (this.#chunked) {
      // Size line, data and CRLF in one system call.
      const socket = conn.socket;
      socket.cork();
      conn.write(this, `${chunk.length.toString(16)}\r\n`, false);
      conn.write(this, chunk, false);
      const more = conn.write(this, CRLF, false);
      socket.uncork();
      return more;
    }
    return conn.write(this, chunk, false);
  }

  /** The end of the response: the last chunk and trailers (chunked only, as node:http). */
  end(trailers: Readonly<Record<string, string | string[] | undefined>> | null): void {
    if (this.finished) return;
    if (this.#chunked) {
      if (trailers === null) this.#conn.write(this, LAST_CHUNK, false);
      else this.#conn.write(this, `0\r\n${trailerBlock(trailers)}\r\n`, false);
    }
    this.finished = true;
    this.#conn.responseDone(this);
  }

  /** Head, body and end at once (local replies, held responses). */
  whole(status: number, headers: readonly string[], body: Buffer | null, trailers: Readonly<Record<string, string | string[] | undefined>> | null): void {
    const socket = this.#conn.socket;
    socket.cork();
    try {
      this.writeHead(status, headers);
      if (body !== null) this.write(body);
      this.end(trailers);
    } finally {
      socket.uncork();
    }
  }

  /** Calls `fn` once the socket can take more. */
  onDrain(fn: () => void): void {
    this.#conn.socket.once('drain', fn);
  }

  /** Cuts the connection (a response that cannot be finished). */
  destroy(): void {
    this.#conn.socket.destroy();
  }
}

function trailerBlock(trailers: Readonly<Record<string, string | string[] | undefined>>): string {
  let out = '';
  for (const name in trailers) {
    const v = trailers[name];
    if (v === undefined) continue;
    validateHeaderName(name);
    for (const item of typeof v === 'string' ? [v] : v) {
      validateHeaderValue(name, item);
      out += `${name}: ${item}\r\n`;
    }
  }
  return out;
}

/**
 * The connections of one listener's HTTP/1 side: their timeouts are checked together,
 * a few times a second, instead of a timer per request.
 */
export class H1Server {
  readonly options: H1ServerOptions;
  readonly handler: H1ServerHandler;
  readonly connections = new Set<H1ServerConnection>();
  #sweep: NodeJS.Timeout | null = null;
  /** How often timeouts are checked; 0 when no timeout is set. */
  readonly #sweepMs: number;
  /** Every response from now on closes its connection (the listener stopped accepting). */
  closing = false;

  constructor(options: H1ServerOptions, handler: H1ServerHandler) {
    this.options = options;
    this.handler = handler;
    const set = [options.headersTimeoutMs, options.requestTimeoutMs, options.idleTimeoutMs].filter((ms) => ms > 0);
    this.#sweepMs = set.length === 0 ? 0 : Math.max(100, Math.min(1_000, Math.min(...set) / 4));
  }

  /** Serves a connection whose first bytes (`head`, possibly empty) are HTTP/1. */
  serve(socket: Socket, head: Buffer | null): void {
    const c = new H1ServerConnection(this, socket);
    this.connections.add(c);
    this.#startSweep();
    if (head !== null && head.length > 0) c.onData(head);
  }

  #startSweep(): void {
    if (this.#sweep !== null || this.#sweepMs === 0) return;
    this.#sweep = setInterval(() => this.#checkTimeouts(), this.#sweepMs);
    this.#sweep.unref();
  }

  #checkTimeouts(): void {
    const now = performance.now();
    const { headersTimeoutMs, requestTimeoutMs, idleTimeoutMs } = this.options;
    for (const c of this.connections) c.checkTimeouts(now, headersTimeoutMs, requestTimeoutMs, idleTimeoutMs);
  }

  /** Closes connections with nothing in flight; the others close after their response. */
  closeIdle(): void {
    this.closing = true;
    for (const c of [...this.connections]) if (c.idle) c.socket.destroy();
  }

  closeAll(): void {
    this.closing = true;
    for (const c of [...this.connections]) c.socket.destroy();
  }

  /** Stops the timeout checks (the listener is gone). */
  close(): void {
    this.closing = true;
    if (this.#sweep !== null) clearInterval(this.#sweep);
    this.#sweep = null;
  }
}

/** One downstream HTTP/1 connection: its parser, the request being read, the responses in order. */
export class H1ServerConnection {
  readonly server: H1Server;
  readonly socket: Socket;
  readonly #parser = new HTTPParser();
  /** Headers and URL of a request head longer than the parser hands over at once. */
  #headers: string[] | null = null;
  #url = '';
  /** The request whose body is being read; null between requests. */
  #reading: H1Request | null = null;
  /** Responses not finished yet, oldest (the one on the wire) first. */
  readonly #responses: H1Response[] = [];
  /** When the request being read began (performance.now()); 0 between requests. */
  #messageStart = 0;
  /** When the connection last had nothing in flight (performance.now()). */
  #idleSince = performance.now();
  #headersDone = false;
  /** Reading is paused for a request body's reader, or for pipelined responses to catch up. */
  #bodyPaused = false;
  #pipelinePaused = false;
  /** A request said it is the last (`Connection: close`, HTTP/1.0): nothing after it is read. */
  #lastRequest = false;
  /** The request being read is the last: once it is complete, nothing more is read. */
  #lastAfterThis = false;
  /** An upgrade or CONNECT took the socket; the codec is done with it. */
  #detached = false;
  #upgrade: H1Request | null = null;
  /**
   * The response head written last, not on the socket yet: it goes out with the first body
   * chunk (one buffer), before anything else written, or at the end of the tick.
   */
  #head: string | null = null;
  #headFlushScheduled = false;
  /** The parser reads the socket's handle itself (`consumeSocket`); false: it is fed `'data'` events. */
  #consumed = false;
  /** A request with `Upgrade` was served as a plain request (h2c): llhttp stops after it, the rest of that read is parsed on. */
  #plainUpgrade = false;

  constructor(server: H1Server, socket: Socket) {
    this.server = server;
    this.socket = socket;
    socket.setNoDelay(true);
    const p = this.#parser;
    p.initialize(HTTPParser.REQUEST, {}, server.options.maxHeaderSize);
    p[HTTPParser.kOnMessageBegin] = this.#onMessageBegin;
    p[HTTPParser.kOnHeaders] = this.#onHeaders;
    p[HTTPParser.kOnHeadersComplete] = this.#onHeadersComplete;
    p[HTTPParser.kOnBody] = this.#onBody;
    p[HTTPParser.kOnMessageComplete] = this.#onMessageComplete;
    p[HTTPParser.kOnExecute] = this.#onExecute;
    this.#consumed = consumeSocket(p, socket);
    if (!this.#consumed) socket.on('data', this.onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('end', this.#onEnd);
  }

  /** Nothing in flight: no request being read, no response unfinished. */
  get idle(): boolean {
    return this.#messageStart === 0 && this.#responses.length === 0;
  }

  get closing(): boolean {
    return this.server.closing;
  }

  readonly onData = (chunk: Buffer): void => {
    if (this.#detached || this.#lastRequest) return;
    this.#parsed(this.#parser.execute(chunk), chunk);
  };

  /** A read the parser took from the socket itself (consumed) is parsed. */
  readonly #onExecute = (r: number | Error): void => {
    this.#parsed(r, null);
  };

  /**
   * After a parse (`r`: bytes parsed, or the error) of `data` (null: the parser's own read):
   * a client error, an upgrade handed over with the bytes past its head, or the rest of the
   * read parsed on after a request llhttp stopped at (an `Upgrade` served as plain: h2c).
   */
  #parsed(r: number | Error, data: Buffer | null): void {
    if (this.#detached) return;
    if (typeof r !== 'number') {
      // Bytes after the last request (`Connection: close`, a refused expectation) are not read.
      if (!this.#lastRequest) this.#clientError(r as NodeJS.ErrnoException);
      return;
    }
    if (this.#upgrade !== null) {
      this.#handOver((data ?? this.#parser.getCurrentBuffer()).subarray(r));
      return;
    }
    if (this.#plainUpgrade) {
      this.#plainUpgrade = false;
      const read = data ?? this.#parser.getCurrentBuffer();
      if (r > 0 && r < read.length) this.onData(read.subarray(r));
    }
  }

  readonly #onMessageBegin = (): number => {
    this.#messageStart = performance.now();
    this.#headersDone = false;
    return 0;
  };

  readonly #onHeaders = (headers: string[], url: string): void => {
    if (this.#headersDone) return; // request trailers: not forwarded, as node:http's request path
    if (this.#headers === null) this.#headers = headers;
    else for (const h of headers) this.#headers.push(h);
    this.#url += url;
  };

  readonly #onHeadersComplete = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, _s: unknown, _m: unknown, upgrade: boolean, keepAlive: boolean): number => {
    this.#headersDone = true;
    let raw = headers;
    if (this.#headers !== null) {
      raw = headers === undefined ? this.#headers : this.#headers.concat(headers);
      this.#headers = null;
    }
    let target = url ?? '';
    if (this.#url !== '') {
      target = this.#url + target;
      this.#url = '';
    }
    const req = new H1Request(this, HTTP_METHODS[method] ?? 'GET', target, major, minor, raw ?? [], keepAlive);
    this.#lastAfterThis = !keepAlive;
    if (upgrade && (req.method === 'CONNECT' || this.server.handler.shouldUpgrade(req))) {
      // The rest of the connection is not HTTP: skip the body, hand over after `execute`.
      this.#upgrade = req;
      return 2;
    }
    if (upgrade) this.#plainUpgrade = true;
    if (minor === 1 && major === 1 && !this.#expectationMet(req)) return 1;
    this.#reading = req;
    const res = new H1Response(this, req);
    this.#responses.push(res);
    if (this.#responses.length > MAX_PIPELINED && !this.#pipelinePaused) {
      this.#pipelinePaused = true;
      pauseReading(this.socket, this.#consumed);
    }
    this.server.handler.onRequest(req, res);
    return 0;
  };

  /** `Expect: 100-continue` is answered here (Envoy's default); another expectation is a 417, as node:http answers it. */
  #expectationMet(req: H1Request): boolean {
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      if (name.length !== 6 || name.toLowerCase() !== 'expect') continue;
      if (raw[i + 1]!.trim().toLowerCase() === '100-continue') {
        if (this.#responses.length === 0) this.socket.write(CONTINUE, 'latin1');
        return true;
      }
      // Answered once the parser has returned; nothing after it is read.
      this.#lastRequest = true;
      queueMicrotask(() => this.#expectationFailed());
      return false;
    }
    return true;
  }

  #expectationFailed(): void {
    if (this.#detached) return;
    this.#detach();
    this.socket.on('error', this.#onError);
    this.socket.end(EXPECTATION_FAILED, 'latin1');
  }

  readonly #onBody = (chunk: Buffer): void => {
    const req = this.#reading;
    if (req === null) return;
    if (!req.pushBody(chunk) && !this.#bodyPaused) {
      this.#bodyPaused = true;
      pauseReading(this.socket, this.#consumed);
    }
  };

  readonly #onMessageComplete = (): void => {
    this.#messageStart = 0;
    if (this.#lastAfterThis) this.#lastRequest = true;
    const req = this.#reading;
    this.#reading = null;
    req?.finish();
  };

  /** The body's reader wants more. */
  resumeBody(): void {
    if (!this.#bodyPaused) return;
    this.#bodyPaused = false;
    if (!this.#pipelinePaused) resumeReading(this.socket, this.#consumed);
  }

  #handOver(rest: Buffer): void {
    const req = this.#upgrade!;
    this.#detach();
    this.server.handler.onUpgrade(req, this.socket, rest);
  }

  /** The codec lets go of the socket (upgrade, CONNECT, client error, close): its listeners go, the parser is freed. */
  #detach(): void {
    this.#detached = true;
    this.server.connections.delete(this);
    const s = this.socket;
    s.off('data', this.onData);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    s.off('end', this.#onEnd);
    if (this.#consumed) {
      this.#consumed = false;
      unconsumeSocket(this.#parser, s);
    }
    this.#parser.remove();
    this.#parser.free();
  }

  /** Writes a response's bytes in order: straight out for the first response, held for the ones behind it. */
  write(res: H1Response, data: string | Buffer, head: boolean): boolean {
    if (this.#responses[0] !== res) {
      (res.held ??= []).push(data);
      return true;
    }
    const s = this.socket;
    if (s.destroyed) return true;
    if (head && typeof data === 'string' && !s.writableCorked && this.#head === null) {
      // The head waits for body bytes written in the same tick: one write for all of them.
      this.#head = data;
      if (!this.#headFlushScheduled) {
        this.#headFlushScheduled = true;
        process.nextTick(flushHead, this);
      }
      return true;
    }
    const pending = this.#head;
    if (pending !== null) {
      this.#head = null;
      if (typeof data !== 'string' && data.length + pending.length <= COALESCE_BYTES) {
        const out = Buffer.allocUnsafe(pending.length + data.length);
        out.write(pending, 0, 'latin1');
        data.copy(out, pending.length);
        return s.write(out);
      }
      s.write(pending, 'latin1');
    }
    return typeof data === 'string' ? s.write(data, 'latin1') : s.write(data);
  }

  /** End of the tick: a head still held goes out (nothing followed it). */
  flushHead(): void {
    this.#headFlushScheduled = false;
    this.#sendHead();
  }

  /** The held head goes out (the tick ended, or the response ends without a body). */
  #sendHead(): void {
    const pending = this.#head;
    if (pending === null) return;
    this.#head = null;
    if (!this.socket.destroyed) this.socket.write(pending, 'latin1');
  }

  /** A response is complete: the next pipelined one goes out, or the connection closes if it was the last. */
  responseDone(res: H1Response): void {
    const queue = this.#responses;
    if (queue[0] !== res) return; // held: flushed when its turn comes
    if (this.#head !== null) this.#sendHead();
    for (;;) {
      const done = queue.shift()!;
      if (!done.keepAlive) {
        this.#lastRequest = true;
        this.socket.end();
        return;
      }
      const next = queue[0];
      if (next === undefined) break;
      const held = next.held;
      next.held = null;
      if (held !== null) for (const d of held) this.write(next, d, false);
      if (!next.finished) break;
    }
    if (this.#pipelinePaused && queue.length <= MAX_PIPELINED) {
      this.#pipelinePaused = false;
      if (!this.#bodyPaused) resumeReading(this.socket, this.#consumed);
    }
    if (queue.length === 0) this.#idleSince = performance.now();
    if (this.server.closing && this.idle) this.socket.end();
  }

  /** The idle timeout, and the header and request timeouts (408), checked by the server's sweep. */
  checkTimeouts(now: number, headersMs: number, requestMs: number, idleMs: number): void {
    if (this.#detached) return;
    const start = this.#messageStart;
    if (start === 0) {
      // Envoy's idle_timeout: no request in flight for that long (a socket timer would be re-armed on every read and write).
      if (idleMs > 0 && this.#responses.length === 0 && now - this.#idleSince >= idleMs) this.socket.destroy();
      return;
    }
    const late = (!this.#headersDone && headersMs > 0 && now - start >= headersMs) || (requestMs > 0 && now - start >= requestMs);
    if (!late) return;
    const err = new Error('request timeout') as NodeJS.ErrnoException;
    err.code = 'ERR_HTTP_REQUEST_TIMEOUT';
    const current = this.#responses[this.#responses.length - 1];
    // A response already under way cannot become a 408: the connection is cut (Envoy resets the stream).
    if (current !== undefined && current.headersSent) this.socket.destroy();
    else this.#clientError(err);
  }

  #clientError(err: NodeJS.ErrnoException): void {
    if (this.#detached) return;
    this.#detach();
    this.server.handler.onClientError(err, this.socket);
    // Whatever the handler answered, close after it; the exchanges in flight end on 'close'.
    this.socket.on('close', this.#onClose);
    this.socket.on('error', this.#onError);
    this.#reading?.abort();
  }

  readonly #onError = (): void => {
    this.socket.destroy();
  };

  readonly #onEnd = (): void => {
    // The client finished sending: answer what is in flight, then close (no half-open keep-alive).
    this.#lastRequest = true;
    if (this.idle) this.socket.end();
  };

  readonly #onClose = (): void => {
    this.#reading?.abort();
    this.#reading = null;
    if (!this.#detached) this.#detach();
  };
}

function flushHead(c: H1ServerConnection): void {
  c.flushHead();
}
