import { connect, Socket } from 'node:net';
import { AttemptFailure, classifyUpstreamError, CONNECT_TIMEOUT_REASON, PER_TRY_TIMEOUT_REASON } from './connect-errors.ts';
import type { ClusterHost } from './upstream-host.ts';
import { NO_TRAILERS, type UpstreamRequest, type UpstreamRequestOwner } from './upstream-request.ts';

/** Envoy's default limit on response headers (max_response_headers_kb: 60). */
const MAX_RESPONSE_HEAD_BYTES = 60 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/;
const CHUNKED_LAST = /(^|,)\s*chunked\s*$/i;
const EMPTY = Buffer.alloc(0);

/** The transport failure reason of a response head over the limit (a `ProtocolError`). */
export const HEADERS_TOO_LARGE_REASON = 'headers_too_large';
/** The transport failure reason of a malformed response head (a `ProtocolError`). */
export const INVALID_RESPONSE_REASON = 'invalid_response';

/** Connecting (TCP, or TCP and TLS). */
const P_CONNECTING = 0;
/** Request head sent; reading the response head. */
const P_HEAD = 1;
/** A non-101 response: its body is passed on as framed, and ends the try. */
const P_BODY = 2;
/** 101 (2xx to a CONNECT): the connection belongs to the tunnel; this try reads no more of it. */
const P_TUNNEL = 3;

/** An HTTP/1.x response head as received. */
export interface Http1ResponseHead {
  readonly status: number;
  readonly reason: string | null;
  /** Flat `[name, value, …]`, as received (case, order and repeats kept). */
  readonly headers: string[];
  readonly connection: string | null;
  readonly upgrade: string | null;
  readonly contentLength: string | null;
  readonly transferEncoding: string | null;
}

/** The head a terminated CONNECT is answered with once its connection is up (Envoy's TcpUpstream synthesizes `:status 200`). */
const CONNECT_ESTABLISHED: Http1ResponseHead = Object.freeze({ status: 200, reason: 'OK', headers: [], connection: null, upgrade: null, contentLength: null, transferEncoding: null });

/** The owner of a tunnel try: the router's callbacks, plus what a byte stream of its own needs. */
export interface TunnelUpstreamOwner extends UpstreamRequestOwner<Http1ResponseHead, TunnelUpstreamRequest> {
  /** A `100 Continue` before the final head (its bytes as received): the client may be waiting for it. */
  onUpstreamContinue(r: TunnelUpstreamRequest, head: Buffer): void;
  /** The connection takes more of the client's bytes again (`'drain'`). */
  onUpstreamWritable(r: TunnelUpstreamRequest): void;
  /** The connection is closed (after a relayed non-101 response, the exchange may end). */
  onUpstreamClosed(r: TunnelUpstreamRequest): void;
}

/**
 * One try of an HTTP/1.1 Upgrade (WebSocket and the like) or CONNECT (forwarded as a request,
 * its 2xx taken as an upgrade's 101; or terminated here: `terminateConnect`) against one host, on a connection
 * of its own (an upgraded connection is never returned to a pool): it connects (over TLS when
 * the host is reached so), writes the request head byte for byte with the bytes the client
 * already sent, reads the response head (1xx before it: `100 Continue` passed on, others
 * dropped), and then either hands the connection over for the tunnel (101: `detach`) or
 * passes on the refusal's body as it is framed and ends there.
 *
 * The upstream side is a raw socket, not undici: undici's upgrade API writes its own
 * `Connection: upgrade` / `Upgrade` and refuses them as request headers, so the client's
 * headers (case, order, repeats, `Connection: keep-alive, Upgrade`) could not travel as sent.
 *
 * Keeps the host's active gauge honest: up when made, down once, when the try is cancelled
 * or released (for a tunnel, when it is over).
 */
export class TunnelUpstreamRequest implements UpstreamRequest {
  readonly owner: TunnelUpstreamOwner;
  readonly host: ClusterHost;
  readonly socket: Socket;
  readonly startedAt = performance.now();
  readonly #headRequest: boolean;
  /** A CONNECT the proxy terminates: no request head goes up, the connection is the tunnel. */
  readonly #terminate: boolean;
  /** A CONNECT forwarded as a request: a 2xx answer opens the tunnel, as a 101 does an upgrade's. */
  readonly #connectRequest: boolean;
  #phase = P_CONNECTING;
  #connected = false;
  #closed = false;
  #headBuf: Buffer | null = null;
  /** Bytes read past a 101 head: the tunnel's first, taken by `detach`. */
  #rest: Buffer = EMPTY;
  #perTryTimer: NodeJS.Timeout | null = null;
  #released = false;
  // A refusal's body framing (P_BODY): bytes left of a content-length body, or a chunked scanner; neither: until close.
  #bodyLeft = -1;
  #chunked: ChunkedBodyEnd | null = null;

  /**
   * A try for a CONNECT the proxy terminates (a route's `connect_config`), as Envoy's
   * TcpUpstream: a TCP (or TLS) connection to the host and no request head; once it is up,
   * the owner hears a 200 head and the connection is the tunnel. `body`: the client's
   * tunnel bytes that came with its CONNECT head. No per-try timeout: Envoy starts it when
   * the request ends, which a CONNECT does not before its tunnel closes.
   */
  static terminateConnect(owner: TunnelUpstreamOwner, host: ClusterHost, body: Buffer, connectTimeoutMs: number): TunnelUpstreamRequest {
    return new TunnelUpstreamRequest(owner, host, 'CONNECT', '', null, body, connectTimeoutMs, 0);
  }

  /**
   * `headers`: the request's header list, flat `[name, value, …]` (null: no request head, a
   * terminated CONNECT); `body`: client bytes that came with the request head.
   */
  constructor(owner: TunnelUpstreamOwner, host: ClusterHost, method: string, path: string, headers: readonly string[] | null, body: Buffer, connectTimeoutMs: number, perTryTimeoutMs: number) {
    this.owner = owner;
    this.host = host;
    this.#headRequest = method === 'HEAD';
    this.#terminate = headers === null;
    this.#connectRequest = method === 'CONNECT' && headers !== null;
    const h = host.host;
    h.active++;
    h.requestsTotal++;
    // A TLS cluster (or auto mTLS endpoint) is reached over TLS here too; `connected` then means verified.
    const tls = h.tls;
    let failed: Error | null = null;
    let s: Socket;
    if (tls === null) s = connect({ host: h.address, port: h.port, allowHalfOpen: true, noDelay: true });
    else {
      const raw = tls.connectRaw(h.address, h.port);
      if (raw instanceof Error) {
        failed = raw;
        s = new Socket();
      } else s = raw;
    }
    this.socket = s;
    if (connectTimeoutMs > 0) s.setTimeout(connectTimeoutMs);
    if (perTryTimeoutMs > 0) this.#perTryTimer = setTimeout(() => this.#onPerTryTimeout(), perTryTimeoutMs);
    s.on(tls === null ? 'connect' : 'secureConnect', this.#onConnect);
    s.on('data', this.#onData);
    s.on('end', this.#onEnd);
    s.on('error', this.#onError);
    s.on('close', this.#onClose);
    s.on('drain', this.#onDrain);
    s.on('timeout', this.#onTimeout);
    if (failed !== null) {
      const err = failed;
      process.nextTick(() => s.destroy(err));
      return;
    }
    // Queued until connected, then sent together.
    if (headers !== null) s.write(requestHead(method, path, headers), 'latin1');
    if (body.length > 0) s.write(body);
  }

  /** The connection is made (and, over TLS, verified). */
  get connected(): boolean {
    return this.#connected;
  }

  get closed(): boolean {
    return this.#closed;
  }

  readonly #onConnect = (): void => {
    this.#connected = true;
    this.#phase = P_HEAD;
    this.socket.setTimeout(0);
    if (this.owner.isCurrent(this)) this.owner.onUpstreamRequestSent(this);
    // A terminated CONNECT has no response to wait for: the connection being up is the answer.
    if (this.#terminate && this.owner.isCurrent(this)) this.#onResponseHead(CONNECT_ESTABLISHED, EMPTY);
  };
  readonly #onData = (chunk: Buffer): void => {
    if (!this.owner.isCurrent(this)) return;
    if (this.#phase === P_HEAD) this.#onHeadBytes(chunk);
    else if (this.#phase === P_BODY) this.#onBody(chunk);
  };
  readonly #onEnd = (): void => {
    if (!this.owner.isCurrent(this)) return;
    if (this.#phase === P_HEAD) this.owner.onUpstreamFailed(this, AttemptFailure.Reset, '');
    else if (this.#phase === P_BODY) {
      // A body framed by length or chunks that stops short is a reset of the response; one delimited by the close is complete.
      if (this.#chunked !== null || this.#bodyLeft > 0) this.owner.onUpstreamFailed(this, AttemptFailure.Reset, '');
      else this.owner.onUpstreamEnd(this, NO_TRAILERS);
    }
  };
  readonly #onError = (err: Error): void => {
    if (!this.owner.isCurrent(this)) return;
    // TLS failures carry Envoy's TLS_error reason.
    const f = classifyUpstreamError(err, this.#connected, this.host.host.tls);
    this.owner.onUpstreamFailed(this, f.failure, f.reason);
  };
  readonly #onClose = (): void => {
    this.#closed = true;
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
    if (this.owner.isCurrent(this)) this.owner.onUpstreamClosed(this);
  };
  readonly #onDrain = (): void => {
    if (this.owner.isCurrent(this)) this.owner.onUpstreamWritable(this);
  };
  readonly #onTimeout = (): void => {
    if (!this.#connected && this.owner.isCurrent(this)) this.owner.onUpstreamFailed(this, AttemptFailure.ConnectFailure, CONNECT_TIMEOUT_REASON);
  };
  #onPerTryTimeout(): void {
    this.#perTryTimer = null;
    if (this.owner.isCurrent(this)) this.owner.onUpstreamFailed(this, AttemptFailure.PerTryTimeout, PER_TRY_TIMEOUT_REASON);
  }

  /** Bytes before the response head is complete: `100 Continue` is passed on, other 1xx dropped. */
  #onHeadBytes(chunk: Buffer): void {
    const prev = this.#headBuf;
    this.#headBuf = null;
    let buf = prev === null ? chunk : Buffer.concat([prev, chunk]);
    for (;;) {
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD_BYTES) {
          this.owner.onUpstreamFailed(this, AttemptFailure.ProtocolError, HEADERS_TOO_LARGE_REASON);
          return;
        }
        this.#headBuf = buf;
        return;
      }
      const parsed = parseResponseHead(buf.toString('latin1', 0, end));
      if (parsed === null) {
        this.owner.onUpstreamFailed(this, AttemptFailure.ProtocolError, INVALID_RESPONSE_REASON);
        return;
      }
      const rest = buf.subarray(end + HEAD_END.length);
      if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
        if (parsed.status === 100) this.owner.onUpstreamContinue(this, buf.subarray(0, end + HEAD_END.length));
        if (rest.length === 0) return;
        buf = rest;
        continue;
      }
      this.#onResponseHead(parsed, rest);
      return;
    }
  }

  #onResponseHead(head: Http1ResponseHead, rest: Buffer): void {
    const status = head.status;
    if (status === 101 || this.#terminate || (this.#connectRequest && status >= 200 && status < 300)) {
      this.#phase = P_TUNNEL;
      this.#rest = rest;
      if (this.owner.onUpstreamResponseHead(this, status, head)) this.#stopPerTryTimer();
      this.#rest = EMPTY;
      return;
    }
    this.#phase = P_BODY;
    this.#startBody(head);
    // Not used: retried or answered locally, and this try cancelled.
    if (!this.owner.onUpstreamResponseHead(this, status, head)) return;
    this.#stopPerTryTimer();
    if (this.#bodyLeft === 0) this.#complete();
    else if (rest.length > 0) this.#onBody(rest);
  }

  /** How the body of a non-101 response ends; the body is passed on as framed. */
  #startBody(head: Http1ResponseHead): void {
    const s = head.status;
    if (this.#headRequest || s === 204 || s === 304) {
      this.#bodyLeft = 0;
      return;
    }
    if (head.transferEncoding !== null) {
      if (CHUNKED_LAST.test(head.transferEncoding)) this.#chunked = new ChunkedBodyEnd();
      return; // any other coding: delimited by close
    }
    if (head.contentLength !== null) {
      const n = Number(head.contentLength);
      if (Number.isSafeInteger(n) && n >= 0) this.#bodyLeft = n;
    }
  }

  #onBody(chunk: Buffer): void {
    let part = chunk;
    let complete = false;
    if (this.#chunked !== null) {
      const end = this.#chunked.scan(chunk);
      if (end >= 0) {
        part = chunk.subarray(0, end);
        complete = true;
      }
    } else if (this.#bodyLeft >= 0) {
      if (chunk.length >= this.#bodyLeft) {
        part = chunk.subarray(0, this.#bodyLeft);
        complete = true;
      }
      this.#bodyLeft -= part.length;
    }
    const more = this.owner.onUpstreamData(this, part);
    if (complete) this.#complete();
    else if (!more) this.socket.pause();
  }

  /** The refusal's body is complete: the connection is done with (the upgrade did not happen). */
  #complete(): void {
    this.socket.destroy();
    this.owner.onUpstreamEnd(this, NO_TRAILERS);
  }

  /** The response head is in: the per-try timeout no longer applies. */
  #stopPerTryTimer(): void {
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
    this.#perTryTimer = null;
  }

  resume(): void {
    this.socket.resume();
  }

  /**
   * After a 101: the connection goes to the tunnel's splice. This try's listeners come off it
   * (it stays counted until `release`); returns the tunnel bytes read with the 101.
   */
  detach(): Buffer {
    const s = this.socket;
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    s.off('drain', this.#onDrain);
    s.off('timeout', this.#onTimeout);
    s.setTimeout(0);
    const rest = this.#rest;
    this.#rest = EMPTY;
    return rest;
  }

  cancel(): void {
    this.socket.destroy();
    this.release();
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.host.host.active--;
    if (this.#perTryTimer !== null) clearTimeout(this.#perTryTimer);
  }
}

/** The request head, written as the client's header list says (case, order, repeats). */
function requestHead(method: string, path: string, h: readonly string[]): string {
  let s = `${method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i < h.length; i += 2) s += `${h[i]!}: ${h[i + 1]!}\r\n`;
  return s + '\r\n';
}

/** An HTTP/1.x response head (without its final CRLFCRLF); null when malformed. */
export function parseResponseHead(text: string): Http1ResponseHead | null {
  const lines = text.split('\r\n');
  const m = STATUS_LINE.exec(lines[0]!);
  if (m === null) return null;
  const headers: string[] = [];
  let connection: string | null = null;
  let upgrade: string | null = null;
  let contentLength: string | null = null;
  let transferEncoding: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // No name, a space before the colon, or obs-fold continuation lines: rejected, as Envoy's codec does.
    if (colon <= 0 || line.charCodeAt(colon - 1) === 32 || line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) return null;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    headers.push(name, value);
    switch (name.toLowerCase()) {
      case 'connection':
        connection = connection === null ? value : `${connection}, ${value}`;
        break;
      case 'upgrade':
        upgrade = value;
        break;
      case 'content-length':
        if (contentLength !== null && contentLength !== value) return null;
        contentLength = value;
        break;
      case 'transfer-encoding':
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
    }
  }
  return { status: Number(m[1]), reason: m[2] ?? null, headers, connection, upgrade, contentLength, transferEncoding };
}

const C_SIZE = 0;
const C_EXT = 1;
const C_DATA = 2;
const C_DATA_END = 3;
const C_TRAILER_START = 4;
const C_TRAILER_CR = 5;
const C_TRAILER_LINE = 6;

/**
 * Finds where a chunked body ends as its bytes pass by (they are relayed unchanged), so a
 * refused upgrade's response can end the client connection right after its last chunk.
 */
export class ChunkedBodyEnd {
  #state = C_SIZE;
  #size = 0;
  #left = 0;

  /** Index just past the end of the body within `b`, or -1 when it goes on. */
  scan(b: Buffer): number {
    let i = 0;
    while (i < b.length) {
      switch (this.#state) {
        case C_SIZE:
        case C_EXT: {
          const c = b[i++]!;
          if (c === 10 /* LF */) {
            if (this.#size === 0) this.#state = C_TRAILER_START;
            else {
              this.#left = this.#size;
              this.#size = 0;
              this.#state = C_DATA;
            }
          } else if (this.#state === C_SIZE) {
            const v = hexValue(c);
            if (v >= 0) this.#size = this.#size * 16 + v;
            else this.#state = C_EXT;
          }
          break;
        }
        case C_DATA: {
          const n = Math.min(this.#left, b.length - i);
          i += n;
          this.#left -= n;
          if (this.#left === 0) this.#state = C_DATA_END;
          break;
        }
        case C_DATA_END:
          if (b[i++] === 10) this.#state = C_SIZE;
          break;
        case C_TRAILER_START: {
          const c = b[i++]!;
          if (c === 10) return i;
          this.#state = c === 13 ? C_TRAILER_CR : C_TRAILER_LINE;
          break;
        }
        case C_TRAILER_CR:
          if (b[i++] === 10) return i;
          this.#state = C_TRAILER_LINE;
          break;
        case C_TRAILER_LINE:
          if (b[i++] === 10) this.#state = C_TRAILER_START;
      }
    }
    return -1;
  }
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}
