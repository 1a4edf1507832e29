// Child processes of the harness: each in its own process group, so that stopping one stops
// everything it forked (nginx's worker, Remora's workers), and every group is killed when the
// harness exits for any reason — normal end, an exception, Ctrl-C or SIGTERM.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';

/** How a child ended: its exit code, or the signal that ended it. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Pin to this CPU with `taskset -c`; null leaves the affinity alone. */
  readonly cpu: number | null;
  /** Where stdout goes: a log file path, or null for /dev/null (never a pipe we would have to drain). */
  readonly stdoutFile: string | null;
  /** Where stderr goes: a log file path (read back when the child fails), or null for /dev/null. */
  readonly stderrFile: string | null;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

/** A running child: the leader of its own process group. */
export class Child {
  readonly name: string;
  readonly pid: number;
  readonly stderrFile: string | null;
  /** Resolves once the child has exited. */
  readonly exited: Promise<ExitInfo>;
  #exit: ExitInfo | null = null;

  constructor(name: string, pid: number, stderrFile: string | null, exited: Promise<ExitInfo>) {
    this.name = name;
    this.pid = pid;
    this.stderrFile = stderrFile;
    this.exited = exited.then((info) => {
      this.#exit = info;
      return info;
    });
  }

  get exitInfo(): ExitInfo | null {
    return this.#exit;
  }

  isRunning(): boolean {
    return this.#exit === null;
  }

  /** The last lines the child wrote to stderr, for error messages. */
  stderrTail(lines = 15): string {
    if (this.stderrFile === null || !existsSync(this.stderrFile)) return '';
    return readFileSync(this.stderrFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** SIGTERM to the whole group, SIGKILL after `graceMs`; resolves when the leader is gone. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.isRunning()) {
      signalGroup(this.pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(this.pid, 'SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    // Grandchildren that outlived the leader (none expected) go with the group.
    signalGroup(this.pid, 'SIGKILL');
    live.delete(this);
    writePidFile();
  }
}

const live = new Set<Child>();
let pidFile: string | null = null;
let handlersInstalled = false;

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function writePidFile(): void {
  if (pidFile !== null) writeFileSync(pidFile, [...live].map((c) => `${c.pid}\n`).join(''));
}

/** Kills every live child group at once, synchronously (usable from an `exit` handler). */
export function killAllChildren(): void {
  for (const child of live) signalGroup(child.pid, 'SIGKILL');
  live.clear();
  writePidFile();
}

/**
 * Installs the exit/signal handlers once, and kills groups left by a previous harness that was
 * itself killed with SIGKILL: their pids are in `file`, and we only touch one whose command
 * line still mentions `marker` (the bench's run directory), never a recycled pid.
 */
export function initChildren(file: string, marker: string): void {
  pidFile = file;
  if (existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const pid = Number(line);
      if (!Number.isInteger(pid) || pid <= 1) continue;
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        continue;
      }
      if (cmdline.includes(marker)) {
        process.stderr.write(`bench: killing process group ${pid} left by an earlier run: ${cmdline.trim()}\n`);
        signalGroup(pid, 'SIGKILL');
      }
    }
  }
  writePidFile();
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAllChildren);
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping every child\n`);
      killAllChildren();
      process.exit(code);
    });
  }
}

/** Starts `command args` as the leader of a new process group, optionally pinned to one CPU. */
export function spawnChild(name: string, command: string, args: readonly string[], options: SpawnOptions): Child {
  const argv = options.cpu === null ? [command, ...args] : ['taskset', '-c', String(options.cpu), command, ...args];
  const stdout = options.stdoutFile === null ? 'ignore' : openSync(options.stdoutFile, 'w');
  const stderr = options.stderrFile === null ? 'ignore' : openSync(options.stderrFile, 'w');
  const [file, ...rest] = argv as [string, ...string[]];
  const proc = spawn(file, rest, {
    // A new session and process group: the group id is the child's pid.
    detached: true,
    stdio: ['ignore', stdout, stderr],
    env: options.env ?? process.env,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  if (typeof stdout === 'number') closeSync(stdout);
  if (typeof stderr === 'number') closeSync(stderr);
  const exited = new Promise<ExitInfo>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', () => resolve({ code: 127, signal: null }));
  });
  if (proc.pid === undefined) {
    throw new Error(`could not start ${name} (${argv.join(' ')})`);
  }
  const child = new Child(name, proc.pid, options.stderrFile, exited);
  live.add(child);
  writePidFile();
  void child.exited.then(() => {
    if (!live.has(child)) return;
    // Reap the rest of the group too, in case the leader died and left workers behind.
    signalGroup(child.pid, 'SIGKILL');
    live.delete(child);
    writePidFile();
  });
  return child;
}
