import { spawn } from 'node:child_process';

/**
 * Runs `openssl` without blocking the event loop (a server in this process may be the one it
 * talks to), with empty stdin; resolves with its exit code and stdout+stderr. Killed after 10 s.
 */
export function opensslAsync(args: readonly string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.end();
    const timer = setTimeout(() => child.kill(), 10_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}
