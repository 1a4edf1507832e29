import { connect } from 'node:net';

/** A response read off a raw socket: the status line, headers (names lower-cased) and body. */
export interface RawReply {
  /** Everything the server sent, as text. */
  readonly text: string;
  /** `HTTP/1.1 426 Upgrade Required`; '' when nothing came. */
  readonly statusLine: string;
  /** 0 when nothing came. */
  readonly status: number;
  readonly headers: Record<string, string>;
  /** The bytes after the head. */
  readonly body: string;
  /** The server closed the connection (rather than the wait running out). */
  readonly closedByServer: boolean;
}

/**
 * Writes `data` as is on a fresh TCP connection (so requests no client library would send,
 * such as HTTP/0.9 or HTTP/1.0 without Host, can be made), then reads until the server closes
 * or `waitMs` passes, whichever is first.
 */
export function rawRequest(port: number, data: string | Buffer, waitMs = 3_000): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    const chunks: Buffer[] = [];
    let closedByServer = false;
    const timer = setTimeout(() => s.destroy(), waitMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => (closedByServer = true));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(parseReply(Buffer.concat(chunks).toString('latin1'), closedByServer));
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the reply still counts as the server closing.
      if (err.code === 'ECONNRESET') closedByServer = true;
      else reject(err);
    });
  });
}

function parseReply(text: string, closedByServer: boolean): RawReply {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const lines = head.split('\r\n');
  const statusLine = lines[0] ?? '';
  const m = /^HTTP\/\d\.\d (\d{3})/.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
  }
  return { text, statusLine, status: m ? Number(m[1]) : 0, headers, body: end < 0 ? '' : text.slice(end + 4), closedByServer };
}
