import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Connection, type ListenerContext } from '../http/connection.ts';
import { Exchange } from '../http/exchange.ts';
import { ResponseFlag } from '../http/response-flags.ts';
import type { ListenerSnapshot } from '../runtime/snapshot.ts';
import type { AccessLogRecord } from '../telemetry/access-log.ts';

/** Envoy's default limit on request headers (max_request_headers_kb: 60). */
const MAX_HEADER_BYTES = 60 * 1024;
/** Envoy's default downstream idle timeout (1 h). */
const IDLE_TIMEOUT_MS = 3_600_000;

/**
 * An HTTP/1.1 listener on one address and port. Its snapshot is swapped by the runtime on
 * every config change; each request captures the snapshot current when it arrived.
 */
export class HttpListener {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  snapshot: ListenerSnapshot;
  readonly server: Server;
  readonly #ctx: ListenerContext;
  readonly #connections = new Map<Socket, Connection>();

  constructor(snapshot: ListenerSnapshot, ctx: ListenerContext) {
    this.name = snapshot.listener.name;
    this.address = snapshot.listener.address;
    this.port = snapshot.listener.port;
    this.snapshot = snapshot;
    this.#ctx = ctx;
    this.server = createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        keepAliveTimeout: IDLE_TIMEOUT_MS,
        // Bodies may stream for as long as they need; stalled headers are still cut off.
        requestTimeout: 0,
        headersTimeout: 60_000,
      },
      (req, res) => this.#onRequest(req, res),
    );
    this.server.on('connection', (socket: Socket) => {
      const c = new Connection(socket);
      this.#connections.set(socket, c);
      socket.once('close', () => {
        this.#connections.delete(socket);
        c.onClose();
      });
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.#onClientError(err, socket));
    this.server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      // CONNECT needs a route that allows it (Envoy's connect_matcher); there is none.
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    });
  }

  /** Binds the port; rejects with a message naming the listener when it cannot. */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new Error(`cannot listen on ${this.address}:${this.port} (listener ${this.name}): ${why}`));
      };
      this.server.once('error', onError);
      this.server.listen({ host: this.address, port: this.port, backlog: 4096 }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  get boundPort(): number {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : this.port;
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  /** Stops accepting; idle keep-alive connections close now, busy ones after their response. */
  stopAccepting(): void {
    this.server.close();
    this.server.closeIdleConnections();
  }

  /** Connections with a request still in flight. */
  busyConnections(): number {
    let n = 0;
    for (const c of this.#connections.values()) if (!c.idle) n++;
    return n;
  }

  closeIdle(): void {
    this.server.closeIdleConnections();
  }

  closeAll(): void {
    this.server.closeAllConnections();
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    let conn = this.#connections.get(req.socket);
    if (conn === undefined) {
      // Sockets handed over by other means than 'connection' (none today); track them anyway.
      conn = new Connection(req.socket);
      this.#connections.set(req.socket, conn);
    }
    const ex = new Exchange(this.#ctx, conn, this.snapshot, req, res);
    conn.add(ex);
    ex.start();
  }

  /** Requests Node's parser rejects: 431 for oversized headers, 400 for the rest (Envoy: DPE). */
  #onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
    const body = status === 400 ? 'Bad Request' : '';
    socket.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-length: ${body.length}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${body}`);
    const conn = this.#connections.get(socket);
    const record: AccessLogRecord = {
      startTime: Date.now(),
      method: '-',
      originalPath: '-',
      protocol: 'HTTP/1.1',
      responseCode: status,
      responseFlags: ResponseFlag.DPE,
      responseCodeDetails: `codec_error:${code || 'parse_error'}`,
      upstreamTransportFailureReason: '',
      bytesReceived: 0,
      bytesSent: body.length,
      durationMs: 0,
      upstreamServiceTimeMs: -1,
      xForwardedFor: null,
      userAgent: null,
      requestId: null,
      authority: null,
      upstreamHost: null,
      upstreamCluster: null,
      downstreamLocalAddress: conn?.localAddress ?? '-',
      downstreamRemoteAddress: conn?.remoteAddress ?? '-',
      requestedServerName: null,
      routeName: null,
    };
    this.#ctx.accessLog.log(record);
    this.snapshot.unroutedStats.record(status, 'DPE', '', 0, 0, body.length);
  }
}
