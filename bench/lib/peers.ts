// The peers run side by side against one upstream: how each is configured and started.
// Config templates live in bench/peers/ and bench/remora/; rendered copies go to bench/.run/.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnChild, type Child } from './children.ts';
import { UsageError } from './errors.ts';
import { largeMesh } from '../../test/helpers/large-mesh.ts';
import { BODY_BYTES, freePorts, ROOT, waitUntilForwarding, type RequestTarget } from './net.ts';

export type PeerName = 'direct' | 'nginx' | 'haproxy' | 'minimal' | 'fastify' | 'remora' | 'remora-10k-first' | 'remora-10k-last';

/** Every peer, in the order of a round. */
export const PEER_NAMES: readonly PeerName[] = ['direct', 'nginx', 'haproxy', 'minimal', 'fastify', 'remora', 'remora-10k-first', 'remora-10k-last'];

/** The peers of a run without `--only`: the 10k-route scenarios are asked for by name (see README). */
export const DEFAULT_PEERS: readonly PeerName[] = ['direct', 'nginx', 'haproxy', 'minimal', 'fastify', 'remora'];

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
  /** Remora's `--concurrency` (1: one event loop; 0: one worker per core). */
  readonly remoraConcurrency: number;
}

/** A started peer: where to send load, and the process tree to measure (null for `direct`). */
export interface RunningPeer {
  readonly port: number;
  readonly child: Child | null;
  /** What to request (default `GET /`). */
  readonly target?: RequestTarget;
  /** How long the peer took to come up, when it is a figure of the scenario (the 10k-route Remora). */
  readonly startup?: Startup;
}

/** From spawn to the first correct answer, and where Remora says the time went (its `timings` log line). */
export interface Startup {
  readonly readyMs: number;
  /** null when the log line was not found. */
  readonly config: ConfigTimings | null;
}

export interface ConfigTimings {
  readonly routes: number;
  readonly readMs: number;
  readonly validateMs: number;
  readonly translateMs: number;
  readonly handoverMs: number;
  readonly compileMs: number;
}

const TIMINGS = /timings \((\d+) routes\): read (\d+) ms, validate (\d+) ms, translate (\d+) ms on the loader thread; handover (\d+) ms; compile and apply (\d+) ms/;

/** The first `timings` line of a Remora log (see packages/proxy/src/cli/proxy-process.ts). */
export function parseConfigTimings(log: string): ConfigTimings | null {
  const m = TIMINGS.exec(log);
  if (m === null) return null;
  const [routes, readMs, validateMs, translateMs, handoverMs, compileMs] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return { routes, readMs, validateMs, translateMs, handoverMs, compileMs };
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

async function started(child: Child, port: number, ctx: PeerContext, target: RequestTarget = ROOT): Promise<StartResult> {
  const problem = await waitUntilForwarding(port, child, ctx.readyTimeoutMs, target);
  if (problem === null) return { ok: true, peer: { port, child, target } };
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

/** Remora's command line, or null when it is not built. */
function remoraCli(ctx: PeerContext): string | null {
  const cli = join(ctx.paths.repoRoot, 'packages/proxy/dist/cli.js');
  return existsSync(cli) ? cli : null;
}

const NOT_BUILT = 'not built yet (packages/proxy/dist/cli.js is missing; run `pnpm build`)';

function spawnRemora(name: string, cli: string, dir: string, ports: { admin: number; health: number }, ctx: PeerContext): Child {
  // stdout carries the access log (on, as in the default chain): to /dev/null, not a pipe we must drain.
  return spawnChild(
    name,
    process.execPath,
    [cli, 'gateway', '-c', dir, '--admin-port', String(ports.admin), '--health-port', String(ports.health), '--concurrency', String(ctx.remoraConcurrency)],
    { cpu: ctx.proxyCpu, stdoutFile: null, stderrFile: join(ctx.paths.runDir, `${name}.stderr.log`) },
  );
}

const remora: PeerSpec = {
  name: 'remora',
  label: 'Remora',
  optional: true,
  needs: [],
  async start(ctx) {
    const cli = remoraCli(ctx);
    if (cli === null) return { ok: false, reason: NOT_BUILT };
    const [port, adminPort, healthPort] = (await freePorts(3)) as [number, number, number];
    const dir = freshDir(ctx.paths, 'remora');
    const vars = { LISTEN_PORT: port, UPSTREAM_PORT: ctx.upstreamPort };
    for (const file of ['gateway.yaml', 'virtual-service.yaml', 'service-entry.yaml']) {
      renderFile(join(ctx.paths.benchDir, 'remora', file), join(dir, file), vars);
    }
    return started(spawnRemora('remora', cli, dir, { admin: adminPort, health: healthPort }, ctx), port, ctx);
  },
};

/** The large route table: 1,000 VirtualServices × 10 routes, each route two Envoy routes (see test/helpers/large-mesh.ts). */
export const LARGE_TABLE = { virtualServices: 1_000, routesEach: 10 } as const;

/**
 * Remora with the bench gateway and service entry, but instead of the one catch-all
 * VirtualService the large route table, every route forwarding to the same upstream. `first`
 * asks for the first route of the first VirtualService's host (prefix `/r0/` with an
 * `x-variant` header); `last` for the last route of the last one's (exact `/r9`: the last of
 * 20,000 Envoy routes).
 */
function remoraLargeTable(which: 'first' | 'last'): PeerSpec {
  const name: PeerName = `remora-10k-${which}`;
  const { virtualServices, routesEach } = LARGE_TABLE;
  const target: RequestTarget =
    which === 'first'
      ? { path: '/r0/', headers: { host: 'vs-0.example', 'x-variant': 'v1' } }
      : { path: `/r${routesEach - 1}`, headers: { host: `vs-${virtualServices - 1}.example` } };
  return {
    name,
    label: `Remora, ${virtualServices * routesEach} routes, ${which} route`,
    optional: true,
    needs: [],
    async start(ctx) {
      const cli = remoraCli(ctx);
      if (cli === null) return { ok: false, reason: NOT_BUILT };
      const [port, adminPort, healthPort] = (await freePorts(3)) as [number, number, number];
      const dir = freshDir(ctx.paths, name);
      const vars = { LISTEN_PORT: port, UPSTREAM_PORT: ctx.upstreamPort };
      for (const file of ['gateway.yaml', 'service-entry.yaml']) renderFile(join(ctx.paths.benchDir, 'remora', file), join(dir, file), vars);
      const mesh = largeMesh(
        { port, virtualServices, routesEach, gateway: 'bench-gateway', destination: { host: 'upstream.bench.svc.cluster.local', port: 80 } },
        0,
      );
      for (const [file, text] of Object.entries(mesh)) writeFileSync(join(dir, file), text);
      const spawned = performance.now();
      const result = await started(spawnRemora(name, cli, dir, { admin: adminPort, health: healthPort }, ctx), port, ctx, target);
      if (!result.ok) return result;
      const readyMs = performance.now() - spawned;
      const log = join(ctx.paths.runDir, `${name}.stderr.log`);
      const config = existsSync(log) ? parseConfigTimings(readFileSync(log, 'utf8')) : null;
      return { ok: true, peer: { ...result.peer, startup: { readyMs, config } } };
    },
  };
}

export const PEERS: ReadonlyMap<PeerName, PeerSpec> = new Map(
  [direct, nginx, haproxy, minimal, fastify, remora, remoraLargeTable('first'), remoraLargeTable('last')].map((p) => [p.name, p]),
);

/** Parses `--only a,b`: known names, in round order. */
export function selectPeers(only: string | undefined, defaults: readonly PeerName[]): PeerName[] {
  if (only === undefined || only.trim() === '') return [...defaults];
  const asked = only.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = asked.filter((s) => !PEERS.has(s as PeerName));
  if (unknown.length > 0) throw new UsageError(`unknown peer ${unknown.join(', ')} (known: ${PEER_NAMES.join(', ')})`);
  return PEER_NAMES.filter((n) => asked.includes(n));
}
