// What the `remora proxy-config` tests share: istioctl's goldens, a stand-in admin API, and
// the command run as users run it.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import type { Test } from 'tap';
import { CORPUS, runCli } from './remora.ts';

export const GOLDENS = join(CORPUS, 'istio-goldens/proxy-config');
export const FULL_DUMP = join(GOLDENS, 'config_dump.json');
export const ROUTES_DUMP = join(GOLDENS, 'routes/configdump.json');
export const EDS_DUMP = join(GOLDENS, 'endpoint/configdump.json');
export const read = (p: string): string => readFileSync(p, 'utf8');

/** A plain HTTP server on 127.0.0.1 answering every GET with `body`; records what was asked. */
export async function dumpServer(t: Test, body: string, status = 200): Promise<{ addr: string; urls: string[] }> {
  const urls: string[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    urls.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { addr: `127.0.0.1:${(server.address() as { port: number }).port}`, urls };
}

/** A table's rows as cells (cells are separated by two or more spaces; empty cells vanish). */
export const rows = (table: string): string[][] =>
  table
    .trimEnd()
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s{2,}/));

/** Runs `remora proxy-config ARGS` and expects it to succeed. */
export async function pc(t: Test, ...args: string[]): Promise<string> {
  const r = await runCli(['proxy-config', ...args]);
  t.equal(r.code, 0, `proxy-config ${args.join(' ')}: exit 0 (${r.stderr.trim()})`);
  return r.stdout;
}
