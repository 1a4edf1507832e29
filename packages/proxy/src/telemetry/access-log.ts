import { closeSync, openSync, writeSync } from 'node:fs';
import type { AccessLogConfig } from '@remora/config';
import { formatResponseFlags } from './response-flags.ts';
import { compileAccessLogFormat, isoTime } from './access-log-format.ts';
import { compileRecordFilter } from './cel-attributes.ts';
import type { AccessLogRecord, RequestLogger } from './access-log-record.ts';

export type { AccessLogRecord, RequestLogger } from './access-log-record.ts';

export type AccessLogFormat = 'text' | 'json' | 'off';

/**
 * Access log on stdout. Lines are batched and written once per event-loop turn (or at
 * 64 KiB): stdout to a file or pipe is a synchronous write on Linux, and one write per
 * request would cost more than the request itself.
 */
export class AccessLog implements RequestLogger {
  readonly format: AccessLogFormat;
  /** Sees every record, whatever the format (the admin live view's window and ring); null: none. */
  tap: { record(r: AccessLogRecord): void } | null = null;
  readonly #write: (chunk: string) => void;
  #buffer = '';
  #scheduled = false;
  readonly #flush = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  constructor(format: AccessLogFormat, write: (chunk: string) => void = (c) => void process.stdout.write(c)) {
    this.format = format;
    this.#write = write;
  }

  log(r: AccessLogRecord): void {
    if (this.tap !== null) this.tap.record(r);
    if (this.format === 'off') return;
    this.append(this.format === 'json' ? formatJson(r) : formatText(r));
  }

  /** Adds a formatted line (a listener's own format) to what is written next. */
  append(line: string): void {
    this.#buffer += line;
    if (this.#buffer.length >= 65536) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  flush(): void {
    if (this.#buffer === '') return;
    const out = this.#buffer;
    this.#buffer = '';
    this.#write(out);
  }
}

/** Linux's PIPE_BUF: a write to a pipe up to this size is never interleaved with another writer's. */
const PIPE_BUF = 4096;

/**
 * Writes whole lines to `fd`, in pieces of at most PIPE_BUF bytes each ending at a line's end
 * (a longer line alone), so that several threads or processes writing the same pipe never
 * mix their lines. Returns what could not be written without blocking (EAGAIN: a non-blocking
 * pipe that is full), or null when all of it was.
 */
export function writeLinesSync(fd: number, chunk: string): string | null {
  const buf = Buffer.from(chunk, 'utf8');
  let start = 0;
  while (start < buf.length) {
    let end = buf.length;
    if (end - start > PIPE_BUF) {
      const nl = buf.lastIndexOf(0x0a, start + PIPE_BUF - 1);
      if (nl >= start) end = nl + 1;
      else {
        const next = buf.indexOf(0x0a, start + PIPE_BUF);
        end = next === -1 ? buf.length : next + 1;
      }
    }
    try {
      // A short write to a pipe happens only beyond PIPE_BUF: the rest of a long line follows.
      start += writeSync(fd, buf, start, end - start);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return buf.toString('utf8', start);
      throw err;
    }
  }
  return null;
}

const dash = (s: string | null): string => (s === null || s === '' ? '-' : s);

/**
 * Istio's default text format (Envoy's default plus response details, cluster, addresses
 * and route name), field for field:
 * [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
 * %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
 * "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
 * %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
 * "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
 * %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
 * %REQUESTED_SERVER_NAME% %ROUTE_NAME%
 */
export function formatText(r: AccessLogRecord): string {
  return (
    '[' + isoTime(r.startTime) + '] "' + r.method + ' ' + r.originalPath + ' ' + r.protocol + '" ' +
    r.responseCode + ' ' + formatResponseFlags(r.responseFlags) + ' ' + r.responseCodeDetails + ' - "' +
    dash(r.upstreamTransportFailureReason) + '" ' + r.bytesReceived + ' ' + r.bytesSent + ' ' +
    Math.round(r.durationMs) + ' ' + (r.upstreamServiceTimeMs < 0 ? '-' : Math.round(r.upstreamServiceTimeMs)) + ' "' +
    dash(r.xForwardedFor) + '" "' + dash(r.userAgent) + '" "' + dash(r.requestId) + '" "' + dash(r.authority) + '" "' +
    dash(r.upstreamHost) + '" ' + dash(r.upstreamCluster) + ' - ' + r.downstreamLocalAddress + ' ' +
    r.downstreamRemoteAddress + ' ' + dash(r.requestedServerName) + ' ' + dash(r.routeName) + '\n'
  );
}

/** Istio's JSON access log: the same fields under Istio's key names. */
export function formatJson(r: AccessLogRecord): string {
  return (
    JSON.stringify({
      start_time: isoTime(r.startTime),
      method: r.method,
      path: r.originalPath,
      protocol: r.protocol,
      response_code: r.responseCode,
      response_flags: formatResponseFlags(r.responseFlags),
      response_code_details: r.responseCodeDetails,
      connection_termination_details: null,
      upstream_transport_failure_reason: r.upstreamTransportFailureReason || null,
      bytes_received: r.bytesReceived,
      bytes_sent: r.bytesSent,
      duration: Math.round(r.durationMs),
      upstream_service_time: r.upstreamServiceTimeMs < 0 ? null : String(Math.round(r.upstreamServiceTimeMs)),
      x_forwarded_for: r.xForwardedFor,
      user_agent: r.userAgent,
      request_id: r.requestId,
      authority: r.authority,
      upstream_host: r.upstreamHost,
      upstream_cluster: r.upstreamCluster,
      upstream_local_address: null,
      downstream_local_address: r.downstreamLocalAddress,
      downstream_remote_address: r.downstreamRemoteAddress,
      requested_server_name: r.requestedServerName,
      route_name: r.routeName,
    }) + '\n'
  );
}

/**
 * The access logs listeners configure (Envoy's file loggers), each path opened once and kept
 * across configs: `/dev/stdout` is the proxy's access log stream, `/dev/stderr` its stderr,
 * any other path a file opened for appending. A listener's formats are compiled when its
 * config is; a path that cannot be opened fails that config (the running one stays).
 */
export class AccessLogFiles {
  readonly #stdout: (chunk: string) => void;
  readonly #sinks = new Map<string, AccessLog>();
  readonly #fds: number[] = [];

  constructor(stdout: (chunk: string) => void = (c) => void process.stdout.write(c)) {
    this.#stdout = stdout;
  }

  sink(path: string): AccessLog {
    let s = this.#sinks.get(path);
    if (s !== undefined) return s;
    if (path === '/dev/stdout') s = new AccessLog('text', this.#stdout);
    else if (path === '/dev/stderr') s = new AccessLog('text', (c) => void process.stderr.write(c));
    else {
      let fd: number;
      try {
        fd = openSync(path, 'a');
      } catch (err) {
        throw new Error(`access log ${path}: ${(err as Error).message}`);
      }
      this.#fds.push(fd);
      let failed = false;
      s = new AccessLog('text', (c) => {
        try {
          writeSync(fd, c);
        } catch (err) {
          // Envoy drops what it cannot write; say so once.
          if (!failed) process.stderr.write(`access log ${path}: ${(err as Error).message}; lines are dropped\n`);
          failed = true;
        }
      });
    }
    this.#sinks.set(path, s);
    return s;
  }

  /**
   * One listener's loggers as one: each line formatted by its compiled format, to its file,
   * when its CEL filter (if any) is true. No loggers: nothing is logged.
   */
  compile(configs: readonly AccessLogConfig[]): RequestLogger {
    if (configs.length === 0) return { log: () => {} };
    const formats = configs.map((c) => compileAccessLogFormat(c.format));
    const filters = configs.map((c) => (c.filter === undefined ? null : compileRecordFilter(c.filter)));
    const sinks = configs.map((c) => this.sink(c.path));
    if (formats.length === 1 && filters[0] === null) {
      const format = formats[0]!;
      const sink = sinks[0]!;
      return { log: (r) => sink.append(format(r)) };
    }
    return {
      log: (r) => {
        for (let i = 0; i < formats.length; i++) {
          const f = filters[i];
          if (f != null && !f(r)) continue;
          sinks[i]!.append(formats[i]!(r));
        }
      },
    };
  }

  flush(): void {
    for (const s of this.#sinks.values()) s.flush();
  }

  close(): void {
    this.flush();
    for (const fd of this.#fds) closeSync(fd);
    this.#fds.length = 0;
    this.#sinks.clear();
  }
}
