import { closeSync, mkdirSync, openSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Ports for processes a test starts later are taken below the kernel's ephemeral range, at
 * random: a port the kernel handed out for `listen(0)` is also the next candidate for the
 * local end of any outgoing connection on the machine (the parallel tests make thousands),
 * which then holds it when the proxy comes to bind it (EADDRINUSE).
 */
const EPHEMERAL_LOW = ((): number => {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
})();
const PICK_LOW = Math.max(1024, EPHEMERAL_LOW - 12_000);

/**
 * Ports handed out, by every test process on the machine: a file per port, so that two test
 * files running at once never get the same port, which matters most for a port a test keeps
 * closed on purpose (a dead endpoint another file's proxy must not come to listen on). A
 * reservation lapses after 10 minutes.
 */
const RESERVED_DIR = join(tmpdir(), 'remora-test-ports');
const RESERVATION_MS = 10 * 60_000;

function reserve(port: number): boolean {
  const file = join(RESERVED_DIR, String(port));
  try {
    mkdirSync(RESERVED_DIR, { recursive: true });
    closeSync(openSync(file, 'wx'));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return true; // cannot reserve: the bind check alone decides
    try {
      if (Date.now() - statSync(file).mtimeMs < RESERVATION_MS) return false;
      const now = new Date();
      utimesSync(file, now, now);
      return true;
    } catch {
      return true;
    }
  }
}

/** A port free on 127.0.0.1 now, outside the ephemeral range, not handed to another test lately; 100 tries, then one from the kernel. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = PICK_LOW + Math.floor(Math.random() * (EPHEMERAL_LOW - PICK_LOW));
    if (reserve(port) && (await canListen(port))) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a failed `waitFor` reports beside its own message. */
export interface WaitForOptions {
  /**
   * The live output of a process under test (e.g. the `stderr` lines `collectLines` gathers):
   * read when the wait times out, so the error shows what the process said by then.
   */
  readonly output?: readonly string[];
  /** What `output` is, in the error (default "stderr"). */
  readonly outputName?: string;
  /** How many of the last lines of `output` the error carries (default 40). */
  readonly tailLines?: number;
}

/**
 * Thrown by a `waitFor` check when waiting longer cannot help (the process under test exited):
 * the wait ends at once, with the same report as a timeout.
 */
export class WaitAborted extends Error {
  override readonly name = 'WaitAborted';
}

/**
 * Polls `check` every 25 ms until it returns true or `timeoutMs` passes. A check that throws
 * counts as "not yet"; on timeout the error names `what`, carries the last error the check
 * threw (in the message and as `cause`), and the tail of `options.output` at that moment. A
 * check that throws `WaitAborted` ends the wait with that report at once.
 */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  options: WaitForOptions = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  let lastError: unknown = undefined;
  let threwAt = 0;
  for (;;) {
    attempts++;
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
      threwAt = attempts;
      if (err instanceof WaitAborted) throw waitForFailure(`gave up after ${attempts} checks waiting for ${what}`, attempts, err, attempts, options);
    }
    if (Date.now() > deadline) throw waitForFailure(`timed out after ${timeoutMs} ms (${attempts} checks) waiting for ${what}`, attempts, lastError, threwAt, options);
    await sleep(25);
  }
}

function waitForFailure(headline: string, attempts: number, lastError: unknown, threwAt: number, options: WaitForOptions): Error {
  let message = headline;
  if (threwAt > 0) {
    const text = lastError instanceof Error ? `${lastError.name}: ${lastError.message}` : String(lastError);
    const when = threwAt === attempts ? 'the last check threw' : `check ${threwAt} of ${attempts} threw (later ones returned false)`;
    message += `\n${when}: ${text}`;
  }
  const output = options.output;
  if (output !== undefined) {
    const name = options.outputName ?? 'stderr';
    const keep = options.tailLines ?? 40;
    const tail = output.slice(-keep);
    const shown = tail.length < output.length ? `last ${tail.length} of ${output.length} lines` : `${output.length} lines`;
    message += `\n--- ${name} (${shown}) ---\n${tail.join('\n')}\n--- end of ${name} ---`;
  }
  return threwAt > 0 ? new Error(message, { cause: lastError }) : new Error(message);
}

/** A `data` listener that appends complete lines of a stream to `into`. */
export function collectLines(into: string[]): (chunk: Buffer) => void {
  let partial = '';
  return (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    into.push(...lines);
  };
}
