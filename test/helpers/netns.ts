/**
 * A "pod" for tests that need real packet capture: a network namespace joined to the root
 * namespace by a veth pair in a private /30, and processes started inside it (optionally as
 * another UID/GID, the way a sidecar runs as 1337). Everything is removed by `destroy()`, and
 * a namespace left by a run that died (its creator PID is gone) is removed by the next run.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { collectLines, sleep } from './net.ts';
import { SOURCE_NODE_OPTIONS } from './source.ts';

export interface RunResult {
  /** Exit code; null when the command could not start or was killed (see `stderr`). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (killed after `timeoutMs`), never throws. */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number | undefined; env?: NodeJS.ProcessEnv | undefined } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let settled = false;
    const done = (r: RunResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done({ code: null, stdout, stderr: `${stderr}\n${cmd} ${args.join(' ')}: timed out after ${timeoutMs}ms` });
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', (err) => done({ code: null, stdout, stderr: `${cmd}: ${err.message}` }));
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** Runs a command and returns its stdout; throws with the command and its stderr on failure. */
export async function runOk(cmd: string, args: readonly string[], opts: { timeoutMs?: number | undefined; env?: NodeJS.ProcessEnv | undefined } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Whether `p` settles within `ms` (the timer is cleared either way, so it holds nothing open). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A process started inside the namespace, its output collected line by line. */
export interface PodProcess {
  readonly child: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * The environment of processes in the pod: PATH and LANG only. Not the test's own: tap's
 * NODE_OPTIONS (loaders) and coverage settings must not follow into processes running as
 * another user.
 */
export const POD_ENV: NodeJS.ProcessEnv = {
  PATH: `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  LANG: 'C.UTF-8',
  // Node.js in the pod resolves @remora/* as the tests do (sources or dist).
  ...SOURCE_NODE_OPTIONS,
};

export interface PodExecOptions {
  /** Run as this UID/GID (supplementary groups dropped); default root. */
  readonly user?: { uid: number; gid: number };
  /** The whole environment of the command; default POD_ENV. */
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

const PREFIX = 'remora-pod';
const NAME_RE = new RegExp(`^${PREFIX}-(\\d+)-[0-9a-f]+$`);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function netnsPids(name: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', name], { timeoutMs: 5_000 });
  return r.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Kills what is left in a namespace (our own processes: only our tests run in it) and deletes it. */
async function removeNamespace(name: string): Promise<void> {
  for (const pid of await netnsPids(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 20; i++) {
    if ((await netnsPids(name)).length === 0) break;
    await sleep(50);
  }
  await run('ip', ['netns', 'del', name], { timeoutMs: 5_000 });
}

/** Removes namespaces of this helper whose creating process is gone (a run killed mid-test). */
export async function reapStaleNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 5_000 });
  const reaped: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const name = line.trim().split(/\s+/)[0] ?? '';
    const m = NAME_RE.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    await removeNamespace(name);
    reaped.push(name);
  }
  return reaped;
}

export class PodNetns {
  /** Namespace name: `remora-pod-<creator pid>-<random>`. */
  readonly name: string;
  /** veth end in the root namespace, and its peer inside the pod. */
  readonly hostIf: string;
  readonly podIf: string;
  /** Addresses in the /30: `10.213.<x>.1` root side, `10.213.<x>.2` pod side. */
  readonly hostIp: string;
  readonly podIp: string;
  readonly #processes = new Set<PodProcess>();
  #destroyed = false;
  readonly #onExit = (): void => this.#destroySync();

  private constructor(name: string, tag: string, x: number) {
    this.name = name;
    this.hostIf = `rmh${tag}`;
    this.podIf = `rmp${tag}`;
    this.hostIp = `10.213.${x}.1`;
    this.podIp = `10.213.${x}.2`;
  }

  /** Creates the namespace only (`ip netns add`); throws with ip's message when it cannot. */
  static async create(): Promise<PodNetns> {
    await reapStaleNamespaces();
    const tag = randomBytes(3).toString('hex');
    const inUse = await runOk('ip', ['-4', '-o', 'addr', 'show'], { timeoutMs: 5_000 });
    let x = randomInt(256);
    for (let i = 0; i < 64 && inUse.includes(`10.213.${x}.`); i++) x = randomInt(256);
    const pod = new PodNetns(`${PREFIX}-${process.pid}-${tag}`, tag, x);
    await runOk('ip', ['netns', 'add', pod.name], { timeoutMs: 5_000 });
    process.once('exit', pod.#onExit);
    return pod;
  }

  /**
   * The pod's network: `lo` up, a veth pair with the /30 addresses, and `routes` (CIDRs)
   * reachable on the link inside the pod. On-link routes, not a default route through the
   * root namespace: what the pod sends to them stays on the veth (it ARPs, nobody answers),
   * so nothing can leave the machine through the root namespace's forwarding.
   */
  async wire(routes: readonly string[] = []): Promise<void> {
    const ipn = (...args: string[]): Promise<string> => runOk('ip', ['-n', this.name, ...args], { timeoutMs: 5_000 });
    await runOk('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.podIf, 'netns', this.name], { timeoutMs: 5_000 });
    await runOk('ip', ['addr', 'add', `${this.hostIp}/30`, 'dev', this.hostIf], { timeoutMs: 5_000 });
    await runOk('ip', ['link', 'set', this.hostIf, 'up'], { timeoutMs: 5_000 });
    await ipn('link', 'set', 'lo', 'up');
    await ipn('addr', 'add', `${this.podIp}/30`, 'dev', this.podIf);
    await ipn('link', 'set', this.podIf, 'up');
    for (const cidr of routes) await ipn('route', 'add', cidr, 'dev', this.podIf);
  }

  /** `ip netns exec <ns> …` to completion, as `user` when given. */
  exec(command: readonly string[], opts: PodExecOptions = {}): Promise<RunResult> {
    return run('ip', this.argv(command, opts), { timeoutMs: opts.timeoutMs });
  }

  /** `ip netns exec <ns> …`, throwing on a non-zero exit; resolves with stdout. */
  execOk(command: readonly string[], opts: PodExecOptions = {}): Promise<string> {
    return runOk('ip', this.argv(command, opts), { timeoutMs: opts.timeoutMs });
  }

  /**
   * The arguments of `ip` that run `command` in the namespace: as `user` when given, with
   * exactly the environment `env` (default POD_ENV).
   */
  argv(command: readonly string[], opts: { user?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): string[] {
    // `ip netns exec` needs root (setns), so the UID/GID change happens after it: setpriv
    // (util-linux) sets both and drops supplementary groups. Then `env -i` replaces the
    // environment: tap's child_process hooks put NODE_OPTIONS (its loaders, which write
    // .tap/processinfo as the process's user on exit) into every spawned process's env, and
    // those must not follow into processes running as another user. ip, setpriv and env all
    // exec, so the process started is the command itself and signals reach it.
    const drop = opts.user ? ['setpriv', `--reuid=${opts.user.uid}`, `--regid=${opts.user.gid}`, '--clear-groups', '--'] : [];
    const env = Object.entries(opts.env ?? POD_ENV)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`);
    return ['netns', 'exec', this.name, ...drop, 'env', '-i', ...env, ...command];
  }

  /** Starts a long-running process in the namespace (stdin is a pipe: closing it is a hint to exit). */
  spawn(command: readonly string[], opts: PodExecOptions & { cwd?: string } = {}): PodProcess {
    const child = spawn('ip', this.argv(command, opts), { stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd });
    const stdout: string[] = [];
    const stderr: string[] = [];
    child.stdout!.on('data', collectLines(stdout));
    child.stderr!.on('data', collectLines(stderr));
    child.on('error', (err) => stderr.push(`spawn failed: ${err.message}`));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('close', (code, signal) => r({ code, signal })));
    const proc: PodProcess = {
      child,
      stdout,
      stderr,
      exited,
      stop: async (graceMs = 3_000) => {
        if (child.exitCode === null && child.signalCode === null) {
          child.stdin?.end();
          child.kill('SIGTERM');
          if (!(await within(exited, graceMs))) child.kill('SIGKILL');
        }
        await within(exited, 2_000);
        this.#processes.delete(proc);
      },
    };
    this.#processes.add(proc);
    return proc;
  }

  /** Stops every process started here, kills anything else left inside, deletes the namespace (the veth goes with it). */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    for (const p of [...this.#processes]) await p.stop();
    await removeNamespace(this.name);
    // The root end of the veth disappears with its peer; make sure even if the kernel lags.
    await run('ip', ['link', 'del', this.hostIf], { timeoutMs: 5_000 });
    this.#destroyed = true;
    process.removeListener('exit', this.#onExit);
  }

  /** Last resort on process exit (an uncaught error before teardown): synchronous cleanup. */
  #destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const p of this.#processes) p.child.kill('SIGKILL');
    try {
      const pids = execFileSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8', timeout: 5_000 });
      for (const pid of pids.split('\n').map(Number).filter((n) => n > 0)) process.kill(pid, 'SIGKILL');
      execFileSync('ip', ['netns', 'del', this.name], { timeout: 5_000, stdio: 'ignore' });
    } catch {
      // the next run's reapStaleNamespaces() gets it
    }
  }
}

/**
 * Why real network-namespace tests cannot run here, or false when they can: they need
 * Linux, root, `ip` (iproute2), `iptables` and `setpriv` (util-linux).
 */
export async function netnsPrerequisites(tools: readonly string[] = ['iptables']): Promise<string | false> {
  if (process.platform !== 'linux') return `needs Linux network namespaces (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return `needs root to create network namespaces and iptables rules (running as UID ${process.getuid?.()})`;
  const checks: Array<[string, string[], string]> = [
    ['ip', ['-V'], 'ip (iproute2) is not installed: apt-get install iproute2'],
    ['setpriv', ['--version'], 'setpriv (util-linux) is not installed'],
  ];
  if (tools.includes('iptables')) checks.push(['iptables', ['--version'], 'iptables is not installed: apt-get install iptables']);
  for (const [cmd, args, why] of checks) {
    const r = await run(cmd, args, { timeoutMs: 5_000 });
    if (r.code !== 0) return `${why} (${r.stderr.trim() || `exit ${r.code}`})`;
  }
  return false;
}
