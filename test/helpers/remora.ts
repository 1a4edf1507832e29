import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseOptions, ProxyProcess, type Command } from '@remora/proxy';
import { collectLines, freePorts, WaitAborted, waitFor } from './net.ts';

/** `waitFor` bound to one proxy: a timeout carries the tail of that proxy's output. */
export type ProxyWaitFor = (what: string, check: () => Promise<boolean> | boolean, timeoutMs?: number) => Promise<void>;
import { request } from './http.ts';
import { FROM_SOURCE } from './source.ts';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export { FROM_SOURCE } from './source.ts';
/** The proxy package's entry point and its CLI, as the tests run them. */
export const PROXY_MAIN = join(REPO, FROM_SOURCE ? 'packages/proxy/src/index.ts' : 'packages/proxy/dist/index.js');
export const CLI = join(REPO, FROM_SOURCE ? 'packages/proxy/src/cli.ts' : 'packages/proxy/dist/cli.js');
/**
 * Istio's samples and goldens (shared/corpus): beside the repository, or one folder further up
 * when the checkout is a git worktree kept in a folder of worktrees.
 */
export const CORPUS =
  [resolve(REPO, '../shared/corpus'), resolve(REPO, '../../shared/corpus')].find((d) => existsSync(d)) ?? resolve(REPO, '../shared/corpus');

/** A temporary directory of YAML files, removed by `cleanup()`. */
export class MeshDir {
  readonly dir: string;
  constructor(files: Record<string, string> = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'remora-mesh-'));
    for (const [name, text] of Object.entries(files)) this.write(name, text);
  }
  write(name: string, text: string): string {
    const p = join(this.dir, name);
    writeFileSync(p, text);
    return p;
  }
  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface ProxyPorts {
  readonly admin: number;
  readonly health: number;
  readonly outbound: number;
  readonly inbound: number;
}

async function pickPorts(): Promise<ProxyPorts> {
  const [admin, health, outbound, inbound] = await freePorts(4);
  return { admin: admin!, health: health!, outbound: outbound!, inbound: inbound! };
}

/**
 * One event loop unless the test asks for workers (`--concurrency N`): the tests of single-loop
 * behaviour count exactly, and do not depend on the machine's cores (a gateway's default).
 */
export function oneLoopUnlessAsked(args: readonly string[]): string[] {
  return args.includes('--concurrency') ? [] : ['--concurrency', '1'];
}

function portArgs(kind: Command, p: ProxyPorts): string[] {
  const args = ['--admin-port', String(p.admin), '--health-port', String(p.health), '--prometheus-port', '0', '--bind', '127.0.0.1'];
  if (kind === 'sidecar') args.push('--outbound-port', String(p.outbound), '--inbound-port', String(p.inbound));
  return args;
}

/** A proxy running inside the test process: fast, and its state is inspectable. */
export interface InProcessRemora {
  readonly proxy: ProxyProcess;
  readonly ports: ProxyPorts;
  /** Access log lines so far. */
  readonly accessLog: string[];
  /** Remora's own log lines so far. */
  readonly log: string[];
  /** `waitFor` whose timeout error ends with the last lines of `log`. */
  readonly waitFor: ProxyWaitFor;
  stop(): Promise<void>;
}

export async function startRemora(
  kind: Command,
  configPaths: string[],
  extraArgs: string[] = [],
  options: {
    peerIdentity?: (socket: import('node:net').Socket) => { principal: string; namespace: string } | null;
    /** Where captured connections were going (a capture without iptables). */
    originalDestination?: (socket: import('node:net').Socket, listenerPort: number) => Promise<import('@remora/proxy').OriginalDestination | null>;
    /** The HTTP filters to serve with (e.g. `builtinFilters(null, clock)`: local rate-limit buckets on the test's clock). */
    filters?: import('@remora/filters').FilterRegistry;
  } = {},
): Promise<InProcessRemora> {
  const ports = await pickPorts();
  const args = [...configPaths.flatMap((p) => ['-c', p]), ...portArgs(kind, ports), ...oneLoopUnlessAsked(extraArgs), ...extraArgs];
  const opts = parseOptions(kind, args, {});
  if (opts === 'help') throw new Error('unexpected --help');
  const accessLog: string[] = [];
  const log: string[] = [];
  let exited = false;
  const proxy = await ProxyProcess.create(opts, () => void (exited = true), {
    accessLog: (chunk) => accessLog.push(...chunk.split('\n').filter((l) => l !== '')),
    log: (line) => log.push(line.trimEnd()),
    ...(options.peerIdentity ? { peerIdentity: options.peerIdentity } : {}),
    ...(options.originalDestination ? { originalDestination: options.originalDestination } : {}),
    ...(options.filters ? { filters: options.filters } : {}),
  });
  try {
    await proxy.start();
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${log.join('\n')}`);
  }
  return {
    proxy,
    ports,
    accessLog,
    log,
    waitFor: (what, check, timeoutMs) => waitFor(what, check, timeoutMs, { output: log, outputName: 'remora log' }),
    stop: async () => {
      if (!exited) await proxy.stop(0, 0);
    },
  };
}

/** A proxy as its own process through the CLI, as users run it. */
export interface SpawnedRemora {
  readonly child: ChildProcess;
  readonly ports: ProxyPorts;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** `waitFor` whose timeout error ends with the last lines of `stderr`. */
  readonly waitFor: ProxyWaitFor;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function spawnRemora(kind: Command, configPaths: string[], extraArgs: string[] = [], waitReady = true): Promise<SpawnedRemora> {
  const ports = await pickPorts();
  const args = [CLI, kind, ...configPaths.flatMap((p) => ['-c', p]), ...portArgs(kind, ports), ...oneLoopUnlessAsked(extraArgs), ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  child.stdout!.on('data', collectLines(stdout));
  child.stderr!.on('data', collectLines(stderr));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  if (waitReady) {
    // 'close', not 'exit': by then its stderr is read to the end, for the report.
    let closed = false;
    child.on('close', () => (closed = true));
    await waitFor(
      `remora ${kind} ready on admin port ${ports.admin}`,
      async () => {
        if (closed) throw new WaitAborted(`remora exited early (${child.exitCode ?? child.signalCode})`);
        return (await request(ports.admin, '/ready')).status === 200;
      },
      15_000,
      { output: stderr },
    );
  }
  return {
    child,
    ports,
    stdout,
    stderr,
    exited,
    waitFor: (what, check, timeoutMs) => waitFor(what, check, timeoutMs, { output: stderr }),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion (validate, --help) and returns its output. */
export function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => resolvePromise({ code, stdout, stderr }));
  });
}
