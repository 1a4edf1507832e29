// The peers run side by side against one upstream: how each is configured and started.
// Config templates live in bench/peers/ and bench/remora/; rendered copies go to bench/.run/.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnChild, type Child } from './children.ts';
import { UsageError } from './errors.ts';
import { BODY_BYTES, freePorts, waitUntilForwarding } from './net.ts';

export type PeerName = 'direct' | 'nginx' | 'haproxy' | 'minimal' | 'fastify' | 'remora';

/** Every peer, in the order of a round. */
export const PEER_NAMES: readonly PeerName[] = ['direct', 'nginx', 'haproxy', 'minimal', 'fastify', 'remora'];

export interface BenchPaths {
  readonly repoRoot: string;
  readonly benchDir: string;
  /** bench/.run: rendered configs, logs, pid files, last.json (gitignored). */
  readonly runDir: string;
}

export interface PeerContext {
  readonly paths: BenchPaths;
  readonly upstreamPort: number;
  /** The core the proxy is pinned to, or null when not pinning. */
  readonly proxyCpu: number | null;
  readonly readyTimeoutMs: number;
}

/** A started peer: where to send load, and the process tree to measure (null for `direct`). */
export interface RunningPeer {
  readonly port: number;
  readonly child: Child | null;
}

export type StartResult = { readonly ok: true; readonly peer: RunningPeer } | { readonly ok: false; readonly reason: string };

export interface PeerSpec {
  readonly name: PeerName;
  /** What the peer is, for tables and the README. */
  readonly label: string;
  /** A peer whose failure to start skips it instead of failing the bench (Remora, still being built). */
  readonly optional: boolean;
  /** Executables it needs on PATH. */
  readonly needs: readonly string[];
  start(ctx: PeerContext): Promise<StartResult>;
}

/** Fills `{{KEY}}` and `${KEY}` placeholders; a placeholder left unfilled is a bug in the harness. */
export function render(template: string, vars: Readonly<Record<string, string | number>>): string {
  const out = template.replace(/\{\{([A-Z_]+)\}\}|\$\{([A-Z_]+)\}/g, (whole, a: string | undefined, b: string | undefined) => {
    const key = (a ?? b) as string;
    const value = vars[key];
    if (value === undefined) throw new Error(`no value for placeholder ${whole}`);
    return String(value);
  });
  return out;
}

function renderFile(templatePath: string, outPath: string, vars: Readonly<Record<string, string | number>>): void {
  writeFileSync(outPath, render(readFileSync(templatePath, 'utf8'), vars));
}

/** A fresh, empty directory under bench/.run for one peer's rendered config and logs. */
function freshDir(paths: BenchPaths, name: string): string {
  const dir = join(paths.runDir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

async function started(child: Child, port: number, ctx: PeerContext): Promise<StartResult> {
  const problem = await waitUntilForwarding(port, child, ctx.readyTimeoutMs);
  if (problem === null) return { ok: true, peer: { port, child } };
  await child.stop();
  return { ok: false, reason: problem };
}

/** The upstream body: 1024 bytes of printable ASCII, safe inside an nginx string literal. */
export function upstreamBody(): string {
  const line = 'remora bench upstream body 0123456789abcdefghijklmnopqrstuvwxyz ';
  return line.repeat(Math.ceil(BODY_BYTES / line.length)).slice(0, BODY_BYTES);
}

/** Starts the shared upstream (nginx, pinned with the load generator). Fails loudly: nothing runs without it. */
export async function startUpstream(paths: BenchPaths, cpu: number | null): Promise<RunningPeer> {
  const [port] = (await freePorts(1)) as [number];
  const dir = freshDir(paths, 'upstream');
  const conf = join(dir, 'nginx.conf');
  renderFile(join(paths.benchDir, 'peers/nginx-upstream.conf'), conf, { PORT: port, PREFIX: dir, BODY: upstreamBody() });
  const child = spawnChild('upstream nginx', 'nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], {
    cpu,
    stdoutFile: null,
    stderrFile: join(dir, 'stderr.log'),
  });
  const problem = await waitUntilForwarding(port, child, 10_000);
  if (problem !== null) {
    await child.stop();
    const log = join(dir, 'error.log');
    const errorLog = existsSync(log) ? readFileSync(log, 'utf8').trim() : '';
    throw new Error(`the upstream nginx did not come up: ${problem}${errorLog ? `\n${errorLog}` : ''}`);
  }
  return { port, child };
}

function nodePeer(name: PeerName, label: string, script: string): PeerSpec {
  return {
    name,
    label,
    optional: false,
    needs: [],
    async start(ctx) {
      const [port] = (await freePorts(1)) as [number];
      const dir = freshDir(ctx.paths, name);
      const child = spawnChild(name, process.execPath, [join(ctx.paths.benchDir, script)], {
        cpu: ctx.proxyCpu,
        stdoutFile: null,
        stderrFile: join(dir, 'stderr.log'),
        env: { ...process.env, PORT: String(port), UPSTREAM: `http://127.0.0.1:${ctx.upstreamPort}` },
      });
      return started(child, port, ctx);
    },
  };
}

const direct: PeerSpec = {
  name: 'direct',
  label: 'direct (no proxy)',
  optional: false,
  needs: [],
  async start(ctx) {
    return { ok: true, peer: { port: ctx.upstreamPort, child: null } };
  },
};

const nginx: PeerSpec = {
  name: 'nginx',
  label: 'nginx',
  optional: false,
  needs: ['nginx'],
  async start(ctx) {
    const [port] = (await freePorts(1)) as [number];
    const dir = freshDir(ctx.paths, 'nginx');
    const conf = join(dir, 'nginx.conf');
    renderFile(join(ctx.paths.benchDir, 'peers/nginx-proxy.conf'), conf, { PORT: port, PREFIX: dir, UPSTREAM_PORT: ctx.upstreamPort });
    const child = spawnChild('nginx', 'nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], {
      cpu: ctx.proxyCpu,
      stdoutFile: null,
      stderrFile: join(dir, 'stderr.log'),
    });
    return started(child, port, ctx);
  },
};

const haproxy: PeerSpec = {
  name: 'haproxy',
  label: 'HAProxy',
  optional: false,
  needs: ['haproxy'],
  async start(ctx) {
    const [port] = (await freePorts(1)) as [number];
    const dir = freshDir(ctx.paths, 'haproxy');
    const conf = join(dir, 'haproxy.cfg');
    renderFile(join(ctx.paths.benchDir, 'peers/haproxy.cfg'), conf, { PORT: port, UPSTREAM_PORT: ctx.upstreamPort });
    // -db: stay in the foreground, no daemon, no master-worker.
    const child = spawnChild('haproxy', 'haproxy', ['-db', '-f', conf], {
      cpu: ctx.proxyCpu,
      stdoutFile: null,
      stderrFile: join(dir, 'stderr.log'),
    });
    return started(child, port, ctx);
  },
};

const minimal = nodePeer('minimal', 'minimal forwarder (node:http + undici)', 'peers/minimal-forwarder.ts');
const fastify = nodePeer('fastify', '@fastify/http-proxy', 'peers/fastify-proxy.ts');

const remora: PeerSpec = {
  name: 'remora',
  label: 'Remora',
  optional: true,
  needs: [],
  async start(ctx) {
    const cli = join(ctx.paths.repoRoot, 'packages/proxy/dist/cli.js');
    if (!existsSync(cli)) return { ok: false, reason: 'not built yet (packages/proxy/dist/cli.js is missing; run `pnpm build`)' };
    const [port, adminPort, healthPort] = (await freePorts(3)) as [number, number, number];
    const dir = freshDir(ctx.paths, 'remora');
    const vars = { LISTEN_PORT: port, UPSTREAM_PORT: ctx.upstreamPort };
    for (const file of ['gateway.yaml', 'virtual-service.yaml', 'service-entry.yaml']) {
      renderFile(join(ctx.paths.benchDir, 'remora', file), join(dir, file), vars);
    }
    // stdout carries the access log (on, as in the default chain): to /dev/null, not a pipe we must drain.
    const child = spawnChild(
      'remora',
      process.execPath,
      [cli, 'gateway', '-c', dir, '--admin-port', String(adminPort), '--health-port', String(healthPort)],
      { cpu: ctx.proxyCpu, stdoutFile: null, stderrFile: join(ctx.paths.runDir, 'remora.stderr.log') },
    );
    return started(child, port, ctx);
  },
};

export const PEERS: ReadonlyMap<PeerName, PeerSpec> = new Map([direct, nginx, haproxy, minimal, fastify, remora].map((p) => [p.name, p]));

/** Parses `--only a,b`: known names, in round order. */
export function selectPeers(only: string | undefined, defaults: readonly PeerName[]): PeerName[] {
  if (only === undefined || only.trim() === '') return [...defaults];
  const asked = only.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = asked.filter((s) => !PEERS.has(s as PeerName));
  if (unknown.length > 0) throw new UsageError(`unknown peer ${unknown.join(', ')} (known: ${PEER_NAMES.join(', ')})`);
  return PEER_NAMES.filter((n) => asked.includes(n));
}
