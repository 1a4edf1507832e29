import { request as httpRequest } from 'node:http';

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  json<T = Record<string, unknown>>(): T;
}

export interface RequestOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  /** Keep-alive agent or a fresh connection (default: fresh, so tests are independent). */
  readonly agent?: import('node:http').Agent | false;
  readonly timeoutMs?: number;
}

/** One HTTP/1.1 request with node:http; resolves with status, headers and the whole body. */
export function request(port: number, path: string, opts: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers ?? {},
        agent: opts.agent ?? false,
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString();
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: <T>() => JSON.parse(body) as T,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to :${port}${path} timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** GET with a Host header: the way most routing tests talk to a listener. */
export function get(port: number, path: string, host: string, headers: Record<string, string> = {}): Promise<Reply> {
  return request(port, path, { headers: { host, ...headers } });
}
