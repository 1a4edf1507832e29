// What run.ts and soak.ts share before any load: flags read from the command line or the
// environment, the tools checked, this process pinned, the upstream started.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initChildren } from './children.ts';
import { UsageError } from './errors.ts';
import { PEERS, startUpstream, type BenchPaths, type PeerName, type RunningPeer } from './peers.ts';
import { missingTools, pinSelf } from './report.ts';

const benchDir = dirname(dirname(fileURLToPath(import.meta.url)));

export const PATHS: BenchPaths = { repoRoot: dirname(benchDir), benchDir, runDir: join(benchDir, '.run') };

/** A number from `--flag`, else the environment variable, else the default; checked against `min`. */
export function numberOption(flag: string, value: string | undefined, envName: string, fallback: number, min: number): number {
  const raw = value ?? process.env[envName];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${flag} (or ${envName}) must be a number ≥ ${min}, got "${raw}"`);
  return n;
}

/**
 * One harness at a time: two would share the cores (and the second would take the first's
 * children for leftovers of a killed run). The lock is this process's pid, stale once that pid
 * no longer runs a harness.
 */
function takeLock(file: string): void {
  if (existsSync(file)) {
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        // Gone: the lock is stale.
      }
      if (/bench\/(run|soak)\.ts/.test(cmdline)) {
        throw new UsageError(`another bench is running (pid ${pid}: ${cmdline.trim()}); wait for it, or stop it`);
      }
    }
  }
  writeFileSync(file, `${process.pid}\n`);
}

export interface Pinning {
  /** Core of the proxy under test, or null with --no-pin. */
  readonly proxyCpu: number | null;
  /** Core of the load generator (this process) and the upstream, or null with --no-pin. */
  readonly loadCpu: number | null;
}

/** The pinning flags every harness takes (`parseArgs` options). */
export const PINNING_OPTIONS = {
  'proxy-cpu': { type: 'string' },
  'load-cpu': { type: 'string' },
  'no-pin': { type: 'boolean' },
} as const;

/** `--proxy-cpu`, `--load-cpu` (or their environment variables) and `--no-pin`, checked. */
export function pinningFrom(values: { readonly 'proxy-cpu'?: string | undefined; readonly 'load-cpu'?: string | undefined; readonly 'no-pin'?: boolean | undefined }): Pinning {
  const proxyCpu = numberOption('proxy-cpu', values['proxy-cpu'], 'BENCH_PROXY_CPU', 1, 0);
  const loadCpu = numberOption('load-cpu', values['load-cpu'], 'BENCH_LOAD_CPU', 0, 0);
  if (values['no-pin'] === true) return { proxyCpu: null, loadCpu: null };
  if (proxyCpu === loadCpu) throw new UsageError('--proxy-cpu and --load-cpu must differ');
  return { proxyCpu, loadCpu };
}

export interface Prepared {
  readonly upstream: RunningPeer;
}

/**
 * Checks the tools the chosen peers need, pins this process (the load generator) and starts the
 * upstream on the load core. Throws UsageError with the fix when something is missing.
 */
export async function prepare(peers: readonly PeerName[], pinning: Pinning): Promise<Prepared> {
  const needed = new Set<string>(['nginx']);
  if (pinning.proxyCpu !== null || pinning.loadCpu !== null) needed.add('taskset');
  for (const p of peers) for (const tool of PEERS.get(p)?.needs ?? []) needed.add(tool);
  const missing = missingTools([...needed]);
  if (missing.length > 0) {
    throw new UsageError(
      `missing ${missing.join(', ')} on PATH. Install them with:\n    apt-get update && apt-get install -y nginx-light haproxy util-linux\n` +
        '(only the binaries are used: the bench starts its own instances with configs under bench/.run/, never the system services)',
    );
  }
  const cores = availableParallelism();
  for (const cpu of [pinning.proxyCpu, pinning.loadCpu]) {
    if (cpu !== null && cpu >= cores) {
      throw new UsageError(`cannot pin to core ${cpu}: this process may use ${cores} core(s). Use --proxy-cpu/--load-cpu, or --no-pin to run unpinned (figures are then not per proxy core)`);
    }
  }
  mkdirSync(PATHS.runDir, { recursive: true });
  takeLock(join(PATHS.runDir, 'bench.lock'));
  initChildren(join(PATHS.runDir, 'children.pids'), PATHS.benchDir);
  if (pinning.loadCpu !== null) pinSelf(pinning.loadCpu);
  const upstream = await startUpstream(PATHS, pinning.loadCpu);
  return { upstream };
}
