// The bundled demo mesh works end to end, as README's first command starts it: every check
// of `start.ts --check` (routing, split, canary through the sidecar, metrics, hot reload).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { CLI, REPO } from './helpers/remora.ts';

t.test('examples/coffee-shop passes its own end-to-end checks', async (t) => {
  const child = spawn(process.execPath, [join(REPO, 'examples/coffee-shop/start.ts'), '--check', '--port-base', 'auto'], {
    cwd: REPO,
    // The demo runs the proxy the tests run (sources or dist).
    env: { ...process.env, REMORA_CLI: CLI },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), 90_000);
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  clearTimeout(timer);
  t.equal(code, 0, `--check exits 0\n${out}`);
  t.match(out, /all \d+ checks passed/);
  t.notMatch(out, /\bFAIL\b/);
});
