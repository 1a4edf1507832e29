// Ports and readiness: free ports picked by the kernel, and a probe that polls a peer until it
// answers GET / with the upstream's 1 KiB body — the only proof that a proxy is really forwarding.
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { Child } from './children.ts';

export const BODY_BYTES = 1024;

/** What a peer is asked for: `GET /` with no extra headers, unless a scenario needs a route of its own. */
export interface RequestTarget {
  readonly path: string;
  /** Extra request headers; `host` replaces the default `127.0.0.1:<port>`. */
  readonly headers: Readonly<Record<string, string>>;
}

export const ROOT: RequestTarget = { path: '/', headers: {} };

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port from the kernel'));
      });
    });
  });
}

/** `count` distinct free ports. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  // Bounded: the kernel hands out distinct ephemeral ports, so this ends after `count` rounds
  // in practice; the cap is only a guard.
  for (let i = 0; ports.size < count && i < count * 10; i++) ports.add(await freePort());
  if (ports.size < count) throw new Error('could not find free ports');
  return [...ports];
}

export interface ProbeResult {
  readonly status: number;
  readonly bodyBytes: number;
  readonly server: string;
}

/** One GET of `target` (default `/`) on a fresh connection, bounded by `timeoutMs`. */
export function probe(port: number, timeoutMs: number, target: RequestTarget = ROOT): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: target.path, headers: target.headers, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bodyBytes: bytes, server: String(res.headers.server ?? '') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls GET `target` (default `/`) on `port` every 50 ms until it returns 200 with the 1 KiB
 * body, the child exits, or `timeoutMs` passes. Returns null when ready, else the reason it is not.
 */
export async function waitUntilForwarding(port: number, child: Child | null, timeoutMs: number, target: RequestTarget = ROOT): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child !== null && !child.isRunning()) {
      const info = child.exitInfo;
      const how = info?.signal ? `signal ${info.signal}` : `code ${info?.code}`;
      const tail = child.stderrTail();
      return `exited with ${how}${tail ? `; stderr:\n${indent(tail)}` : ''}`;
    }
    try {
      const result = await probe(port, Math.max(100, Math.min(2000, deadline - Date.now())), target);
      if (result.status === 200 && result.bodyBytes === BODY_BYTES) return null;
      last = `answered ${result.status} with ${result.bodyBytes} bytes (want 200 with ${BODY_BYTES})`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(50);
  }
  const tail = child?.stderrTail() ?? '';
  return `no correct answer on port ${port} within ${timeoutMs / 1000} s (last: ${last})${tail ? `; stderr:\n${indent(tail)}` : ''}`;
}

export function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}
